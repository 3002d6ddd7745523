"""How often a connection's periodic RTCP work runs. A timer wake-up is a pass of
the event loop and, on an idle loop, a thread wake-up (24-84 µs of CPU on the
benchmark machine), so only what needs a short period has one: transport-cc
NACK repeats every 50 ms for a connection that receives video (transport-cc feedback
every 100 ms), feedback every 250 ms for audio only (libwebrtc's interval at Opus
rates), a connection that only sends wakes for its sender
reports, and padding runs no timer while there is nothing to pad."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import numpy as np

from sora_async import AudioSource, Connection, VideoSource
from sora_async.devserver import DevServer
from sora_async.rtc import peer as peer_module
from tests.rtc_support import of_type, wait_stats


def _is_transport_feedback(data: bytes) -> bool:
    return len(data) >= 2 and data[1] == 205 and data[0] & 0x1F == 15


async def _feed(video: VideoSource, audio: AudioSource) -> None:
    frame = np.zeros((240, 320, 3), np.uint8)
    silence = np.zeros((480, 1), np.int16)
    n = 0
    while True:
        if n % 3 == 0:
            frame[:, :, 1] = n % 256
            video.write(frame)
        audio.write(silence)
        n += 1
        await asyncio.sleep(0.01)


class Watch:
    """What one connection's peer sends (transport-cc feedback, with times), how often
    its RTCP loop wakes, and how often its padding budget is asked for."""

    def __init__(self, conn: Connection) -> None:
        peer: Any = conn._peer
        assert peer is not None
        self.feedback: list[float] = []
        self.ticks = 0
        self.padding_checks = 0
        send_packet, tick_interval = peer._send_packet, peer._tick_interval
        padding_due = peer.congestion.padding_due

        async def _send_packet(data: bytes, *args: Any, **kwargs: Any) -> Any:
            if _is_transport_feedback(data):
                self.feedback.append(time.monotonic())
            return await send_packet(data, *args, **kwargs)

        def _tick_interval() -> float:
            self.ticks += 1
            return tick_interval()

        def _padding_due() -> int:
            self.padding_checks += 1
            return padding_due()

        peer._send_packet = _send_packet
        peer._tick_interval = _tick_interval
        peer.congestion.padding_due = _padding_due

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.feedback, self.feedback[1:], strict=False)]


async def test_rtcp_ticks_follow_what_a_connection_receives() -> None:
    async with DevServer(transport_cc=True) as server:
        video, audio = VideoSource(), AudioSource(1, 48000)
        url, channel = server.signaling_url, "rtcp-cadence"
        sender = Connection(
            url, "sendonly", channel, audio=True, video=True,
            video_source=video, audio_source=audio,
        )  # fmt: skip
        video_rx = Connection(url, "recvonly", channel, audio=True, video=True)
        audio_rx = Connection(url, "recvonly", channel, audio=True, video=False)
        feeder = asyncio.ensure_future(_feed(video, audio))
        try:
            async with asyncio.timeout(40):
                for conn in (sender, video_rx, audio_rx):
                    await conn.connect()
                for conn, kinds in ((video_rx, {"audio", "video"}), (audio_rx, {"audio"})):
                    await wait_stats(
                        conn,
                        lambda s, kinds=kinds: {
                            r.get("kind") for r in of_type(s, "inbound-rtp")
                            if r.get("packetsReceived")
                        } == kinds,
                    )  # fmt: skip
                watches = [Watch(conn) for conn in (sender, video_rx, audio_rx)]
                started = time.monotonic()
                # the window over which the rates are counted (not a synchronisation)
                await asyncio.sleep(3.0)
                elapsed = time.monotonic() - started
        finally:
            feeder.cancel()
            for conn in (sender, video_rx, audio_rx):
                async with asyncio.timeout(10):
                    await conn.disconnect()
            video.stop()
            audio.stop()
    send, video_watch, audio_watch = watches
    # a receiver of video: ticks every 50 ms (NACK repeats), feedback every 100 ms
    assert 0.09 <= statistics.median(video_watch.gaps()) <= 0.13, video_watch.gaps()
    assert video_watch.ticks >= 0.8 * elapsed / peer_module.TICK_INTERVAL
    # audio only: feedback every 250 ms, libwebrtc's interval at Opus rates
    assert 0.22 <= statistics.median(audio_watch.gaps()) <= 0.3, audio_watch.gaps()
    assert audio_watch.ticks <= 1.3 * elapsed / peer_module.AUDIO_TICK_INTERVAL
    # sending only: no feedback to send, about 4 wake-ups a second instead of 20
    assert send.feedback == []
    assert send.ticks <= 1.3 * elapsed / peer_module.SEND_TICK_INTERVAL
    # nothing to pad (no simulcast): the padding loop asked for no budget at all
    assert send.padding_checks == 0
