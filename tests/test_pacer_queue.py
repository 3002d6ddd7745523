"""The pacer's queue: a paced frame does not hold its sender up.

libwebrtc's encoder hands packets to the pacer's queue and goes on to the next
frame. When sora_async's send loop awaited each packet's slot, a frame that took
longer to pace than a frame interval (a key frame, a 720p frame) kept the next
source frames from the encoder, and they were dropped.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from sora_async import Connection
from sora_async.devserver import DevServer
from sora_async.rtc.pacer import BURST_WINDOW, PacedQueue
from tests.rtc_support import of_type, wait_stats


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


async def test_queue_clear_drops_what_waits() -> None:
    sent: list[bytes] = []
    arrived = asyncio.Event()

    def send(data: bytes) -> None:
        sent.append(data)
        arrived.set()

    queue = PacedQueue(send)
    queue.push(0.02, b"x")
    queue.clear()
    await asyncio.sleep(0.06)  # past the slot: the cancelled timer must not fire
    assert sent == [] and len(queue) == 0
    queue.push(0.0, b"y")  # usable again
    async with asyncio.timeout(5):
        await arrived.wait()
    assert sent == [b"y"]


class NoiseTrack(MediaStreamTrack):
    """640x480 noise (the same image every frame, a moving bar on it) at 30 fps:
    its key frame is tens of kB, far longer to pace than a frame interval."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.image = np.random.default_rng(7).integers(0, 256, (480, 640, 3), np.uint8)
        self.index = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self.index / 30 - time.monotonic()))
        image = self.image.copy()
        x = (self.index * 8) % 600
        image[:, x : x + 40] = 255
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = self.index * 3000, fractions.Fraction(1, 90000)
        self.index += 1
        return frame


async def test_a_key_frame_being_paced_does_not_hold_the_encoder_up() -> None:
    """A receiver joins mid-stream: the dev server asks for a key frame (PLI), the
    sender's frames keep reaching the encoder while it is paced, and the receiver
    decodes full-size frames."""
    async with DevServer() as server:
        sender = Connection(
            server.signaling_url,
            "sendonly",
            "paced-queue",
            video_codec_type="VP8",
            video_bit_rate=1000,
            audio=False,
            video_source=NoiseTrack(),
        )
        receiver = Connection(server.signaling_url, "recvonly", "paced-queue", audio=False)
        tracks: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
        receiver.on("track", tracks.put_nowait)
        async with asyncio.timeout(40), sender:
            peer = sender._peer
            assert peer is not None
            (outbound,) = of_type(
                await wait_stats(sender, lambda s: _encoded(s)["framesEncoded"] >= 30),
                "outbound-rtp",
                "video",
            )
            pump = peer.senders[0]
            before = (pump.source_frames, outbound["framesEncoded"], pump.layers[0].frames_dropped)
            delay_before = peer.congestion.pacer.total_delay
            async with receiver:
                track = await tracks.get()
                frame = await track.recv()
                assert (frame.width, frame.height) == (640, 480)
                outbound = _encoded(
                    await wait_stats(sender, lambda s: _encoded(s)["keyFramesEncoded"] >= 2)
                )
                # a second of frames after the new key frame
                encoded = outbound["framesEncoded"] + 30
                outbound = _encoded(
                    await wait_stats(sender, lambda s: _encoded(s)["framesEncoded"] >= encoded)
                )
            after = (pump.source_frames, outbound["framesEncoded"], pump.layers[0].frames_dropped)
        # the key frame's packets waited for their slots for several frame intervals ...
        assert peer.congestion.pacer.total_delay - delay_before > 0.1
        # ... and every source frame of the while still reached the encoder (one may be
        # in flight at each end)
        assert after[2] == before[2]
        assert after[1] - before[1] >= after[0] - before[0] - 2, (before, after)


def _encoded(stats: list[dict[str, Any]]) -> dict[str, Any]:
    (outbound,) = of_type(stats, "outbound-rtp", "video")
    return outbound
