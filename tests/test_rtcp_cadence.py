"""How often a connection's periodic RTCP work runs. A timer wake-up is a pass of
the event loop and, on an idle loop, a thread wake-up (24-84 µs of CPU on the
benchmark machine, and cold caches after it), so only what needs a short period has
one: the 50 ms tick only while a NACK is to be repeated or a key frame asked for again,
transport-cc feedback every 100 ms with the packets of a connection that receives
video, every 250 ms for audio only (libwebrtc's interval at Opus rates), a connection
that only sends wakes for its sender reports, and padding runs no timer while there
is nothing to pad."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import numpy as np

from sora_async import AudioSource, Connection, VideoSource
from sora_async.devserver import DevServer
from sora_async.rtc import peer as peer_module
from tests.rtc_support import PatternTrack, Tracks, frames, of_type, wait_stats


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
    # a receiver of video: feedback every 100 ms, sent with the packets; with nothing to
    # repair (loopback), its timer ticks every 250 ms, not every 50 ms
    assert 0.09 <= statistics.median(video_watch.gaps()) <= 0.13, video_watch.gaps()
    assert video_watch.ticks <= 1.3 * elapsed / peer_module.RELAXED_TICK_INTERVAL
    # audio only: feedback every 250 ms, libwebrtc's interval at Opus rates
    assert 0.22 <= statistics.median(audio_watch.gaps()) <= 0.3, audio_watch.gaps()
    assert audio_watch.ticks <= 1.3 * elapsed / peer_module.AUDIO_TICK_INTERVAL
    # sending only: no feedback to send, about 4 wake-ups a second instead of 20
    assert send.feedback == []
    assert send.ticks <= 1.3 * elapsed / peer_module.SEND_TICK_INTERVAL
    # nothing to pad (no simulcast): the padding loop asked for no budget at all
    assert send.padding_checks == 0


async def test_a_lost_packet_brings_the_50_ms_tick_back_until_it_is_repaired() -> None:
    async with DevServer(transport_cc=True) as server:
        url, channel = server.signaling_url, "rtcp-repair"
        receiver = Connection(url, "recvonly", channel, audio=False, video=True)
        tracks = Tracks(receiver)
        sender = Connection(
            url, "sendonly", channel, audio=False, video=True, video_codec_type="VP8",
            video_source=PatternTrack(320, 240, fps=30),
        )  # fmt: skip
        async with asyncio.timeout(40), receiver, sender:
            track = await tracks.wait(lambda t: t.kind == "video")
            await frames(track, 5)
            drain = asyncio.ensure_future(frames(track, 10_000, within=60))
            peer: Any = receiver._peer
            (video,) = peer.receivers
            rtx_pts = set(video._rtx)  # the dev server may resend on RTX or as it was
            ticks: list[tuple[float, float]] = []
            ticked = asyncio.Event()
            tick_interval = peer._tick_interval

            def _tick_interval() -> float:
                value: float = tick_interval()
                ticks.append((time.monotonic(), value))
                ticked.set()
                return value

            async def tick_where(predicate: Any) -> None:
                async with asyncio.timeout(5):
                    while not predicate():
                        ticked.clear()
                        await ticked.wait()

            peer._tick_interval = _tick_interval
            try:
                await tick_where(lambda: len(ticks) >= 2)
                assert [v for _, v in ticks] == [peer_module.RELAXED_TICK_INTERVAL] * len(ticks)
                # One video packet is lost, and so is every resending of it for 150 ms
                # (as it was, or on RTX): the first NACK's answer never arrives, so the
                # NACK must be repeated, which only the 50 ms tick does.
                lost: list[tuple[float, bytes]] = []  # (when, SSRC and sequence number)
                rtx_lost = 0

                def lossy(datagram: bytes) -> bool:
                    nonlocal rtx_lost
                    if not (128 <= datagram[0] < 192) or 192 <= datagram[1] <= 223:
                        return True  # DTLS, SRTCP
                    rtx = datagram[1] & 0x7F in rtx_pts
                    key = datagram[8:12] + datagram[2:4]  # SRTP leaves the header clear
                    now = time.monotonic()
                    if not lost:
                        if rtx:
                            return True
                        lost.append((now, key))
                        return False
                    if (rtx or key == lost[0][1]) and now - lost[0][0] < 0.15:
                        rtx_lost += 1
                        return False
                    return True

                (before,) = of_type(await receiver.get_stats(), "inbound-rtp", "video")
                peer.transport.set_receive_filter(lossy)
                await tick_where(lambda: any(v == peer_module.TICK_INTERVAL for _, v in ticks))
                repaired = await wait_stats(
                    receiver,
                    lambda s: (
                        of_type(s, "inbound-rtp", "video")[0]["packetsLost"] == 0 and rtx_lost > 0
                    ),
                )
                peer.transport.set_receive_filter(None)
                (after,) = of_type(repaired, "inbound-rtp", "video")
                assert after["nackCount"] - before["nackCount"] >= 2  # the first, a repeat
                assert after["pliCount"] == before["pliCount"]  # repaired by NACK alone
                short = [t for t, v in ticks if v == peer_module.TICK_INTERVAL]
                # the packet after the gap woke the loop (not the end of a 250 ms sleep)
                assert short[0] - lost[0][0] < 0.15, (short[0] - lost[0][0], ticks)
                # and once repaired, back to the relaxed tick
                await tick_where(lambda: ticks[-1][1] == peer_module.RELAXED_TICK_INTERVAL)
            finally:
                drain.cancel()
                peer.transport.set_receive_filter(None)
