"""The pacer's queue: a frame being paced does not hold its sender up.

libwebrtc's encoder hands packets to the pacer's queue and goes on to the next
frame. When sora_async's send loop awaited each packet's slot, a frame that took
longer to pace than a frame interval (a key frame, a 720p frame) kept the next
source frames from the encoder, and they were dropped.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sora_async import Connection
from sora_async.codecs.base import EncodedFrame
from sora_async.devserver import DevServer
from sora_async.rtc.pacer import BURST_WINDOW, PacedQueue
from tests.rtc_support import PatternTrack, of_type, wait_stats


async def test_queue_sends_in_order_at_the_slots_in_bursts() -> None:
    sent: list[tuple[bytes, float]] = []
    done = asyncio.Event()

    def send(data: bytes) -> None:
        sent.append((data, time.monotonic()))
        if len(sent) == 4:
            done.set()

    queue = PacedQueue(send)
    start = time.monotonic()
    # the second is due within the burst window of the first: same wake-up
    for index, delay in enumerate((0.05, 0.05 + BURST_WINDOW / 2, 0.1, 0.0)):
        queue.push(delay, bytes([index]))
    assert len(queue) == 4 and not sent  # nobody waited
    async with asyncio.timeout(5):
        await done.wait()
    assert [data for data, _ in sent] == [b"\0", b"\1", b"\2", b"\3"]  # first in, first out
    times = [at - start for _, at in sent]
    assert times[0] >= 0.05 - 0.001 and times[1] - times[0] < 0.002
    assert times[2] >= 0.1 - BURST_WINDOW - 0.001
    assert 0 <= times[3] - times[2] < 0.002  # due at once, but behind the others
    assert len(queue) == 0


async def test_queue_close_drops_what_waits_and_what_comes() -> None:
    sent: list[bytes] = []
    arrived = asyncio.Event()

    def send(data: bytes) -> None:
        sent.append(data)
        arrived.set()

    queue = PacedQueue(send)
    queue.push(0.0, b"x")
    async with asyncio.timeout(5):
        await arrived.wait()
    queue.push(0.02, b"y")
    queue.close()
    queue.push(0.0, b"z")  # after close: dropped, not sent
    await asyncio.sleep(0.06)  # past both slots: the cancelled timer must not fire
    assert sent == [b"x"] and len(queue) == 0


async def test_a_frame_being_paced_does_not_hold_its_sender_up() -> None:
    """A 120 kB frame (a 720p key frame) takes ~0.5 s to pace out; handing it over
    (what a sender's layer loop awaits per frame) returns at once and the queue
    sends it."""
    async with DevServer() as server:
        sender = Connection(
            server.signaling_url,
            "sendonly",
            "paced-queue",
            video_codec_type="VP8",
            video_bit_rate=500,
            audio=False,
            video_source=PatternTrack(320, 240, fps=15),
        )
        async with asyncio.timeout(30), sender:
            peer = sender._peer
            assert peer is not None
            stats = await wait_stats(sender, lambda s: _encoded(s)["framesEncoded"] >= 1)
            rtp_sender = peer.senders[0]
            (layer,) = rtp_sender.layers
            packets = _encoded(stats)["packetsSent"]
            frame = EncodedFrame(
                data=bytes(120_000), timestamp=90_000 * 60, codec="VP8", is_keyframe=True
            )
            started = time.monotonic()
            await rtp_sender._packetize(frame, layer)
            took = time.monotonic() - started
            queued = len(peer._paced)
            # at a pacing rate of 2.5 x 500 kbit/s at most, or 0.5 s of queue
            assert took < 0.2, took
            assert queued > 50, queued
            await wait_stats(
                sender,
                lambda s: _encoded(s)["packetsSent"] > packets + 100 and not len(peer._paced),
            )
            assert time.monotonic() - started > 0.2  # it was paced, not burst


def _encoded(stats: list[dict[str, Any]]) -> dict[str, Any]:
    (outbound,) = of_type(stats, "outbound-rtp", "video")
    return outbound
