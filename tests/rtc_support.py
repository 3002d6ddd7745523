"""Small media sources and helpers shared by the ``test_rtc_*`` scenarios.

Sources are aiortc ``MediaStreamTrack`` objects paced in real time, kept small
(320x240 or less, 15 fps) because these tests share two CPU cores.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Awaitable, Callable
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from sora_async import Connection, RemoteTrack

TONE_HZ = 440.0


class PatternTrack(MediaStreamTrack):
    """A moving bar, ``width`` x ``height`` at ``fps``, paced in real time."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: int = 15) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._start: float | None = None
        self.index = 0

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self.index / self.fps - time.monotonic()))
        image = np.zeros((self.height, self.width, 3), np.uint8)
        x = (self.index * 6) % self.width
        image[:, x : x + max(8, self.width // 10)] = (0, 160, 255)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = self.index * 90000 // self.fps
        frame.time_base = fractions.Fraction(1, 90000)
        self.index += 1
        return frame


class ToneTrack(MediaStreamTrack):
    """A 440 Hz tone in 20 ms frames, 48 kHz mono, paced in real time."""

    kind = "audio"

    def __init__(self, frequency: float = TONE_HZ) -> None:
        super().__init__()
        self.frequency = frequency
        self._start: float | None = None
        self._samples = 0

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self._samples / 48000 - time.monotonic()))
        t = (np.arange(960) + self._samples) / 48000
        pcm = (np.sin(2 * np.pi * self.frequency * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts, frame.time_base = self._samples, fractions.Fraction(1, 48000)
        self._samples += 960
        return frame


def dominant_frequency(frames: list[av.AudioFrame]) -> float:
    """The FFT peak of the first channel of ``frames`` (decoded 48 kHz audio)."""
    chunks = []
    for frame in frames:
        channels = len(frame.layout.channels)
        chunks.append(frame.to_ndarray().reshape(-1, channels)[:, 0])
    samples = np.concatenate(chunks).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / 48000)[int(np.argmax(spectrum))])


class Tracks:
    """Remote tracks a connection receives, with a bounded wait for one."""

    def __init__(self, conn: Connection) -> None:
        self.tracks: list[RemoteTrack] = []
        self._changed = asyncio.Event()
        conn.on("track", self._add)

    def _add(self, track: RemoteTrack) -> None:
        self.tracks.append(track)
        self._changed.set()

    async def wait(
        self, predicate: Callable[[RemoteTrack], bool], within: float = 15
    ) -> RemoteTrack:
        async with asyncio.timeout(within):
            while True:
                for track in self.tracks:
                    if predicate(track):
                        return track
                self._changed.clear()
                await self._changed.wait()


async def frames(track: RemoteTrack, count: int, within: float = 15) -> list[Any]:
    """The next ``count`` decoded frames of ``track``."""
    async with asyncio.timeout(within):
        return [await track.recv() for _ in range(count)]


async def wait_stats(
    conn: Connection,
    condition: Callable[[list[dict[str, Any]]], bool],
    within: float = 15,
) -> list[dict[str, Any]]:
    """Poll ``get_stats()`` until ``condition`` holds (stats have no events to wait on)."""
    stats: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(within):
            while True:
                stats = await conn.get_stats()
                if condition(stats):
                    return stats
                await asyncio.sleep(0.2)
    except TimeoutError:
        rtp = [s for s in stats if "rtp" in s.get("type", "")]
        raise AssertionError(f"stats condition not reached in {within} s: {rtp}") from None


def of_type(
    stats: list[dict[str, Any]], type_: str, kind: str | None = None
) -> list[dict[str, Any]]:
    return [s for s in stats if s["type"] == type_ and (kind is None or s.get("kind") == kind)]


async def bounded(awaitable: Awaitable[Any], within: float = 15) -> Any:
    async with asyncio.timeout(within):
        return await awaitable


def vp8_codec(feedback: tuple[str, ...] = ("goog-remb", "ccm fir", "nack", "nack pli")) -> Any:
    """A negotiated VP8 (PT 96, RTX 97) for tests that drive senders and receivers directly."""
    from sora_async.rtc.sdp import NegotiatedCodec

    return NegotiatedCodec(
        payload_type=96,
        name="VP8",
        kind="video",
        rtpmap="VP8/90000",
        clock_rate=90000,
        channels=None,
        fmtp={},
        fmtp_line=None,
        feedback=list(feedback),
        rtx_payload_type=97,
    )


def opus_codec() -> Any:
    """A negotiated Opus (PT 111, stereo, no feedback), as :func:`vp8_codec`."""
    from sora_async.rtc.sdp import NegotiatedCodec

    return NegotiatedCodec(
        payload_type=111,
        name="OPUS",
        kind="audio",
        rtpmap="opus/48000/2",
        clock_rate=48000,
        channels=2,
        fmtp={},
        fmtp_line=None,
        feedback=[],
    )


class QueueSource(MediaStreamTrack):
    """A video source the test feeds frame by frame."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[av.VideoFrame] = asyncio.Queue()

    async def recv(self) -> av.VideoFrame:
        return await self.queue.get()


class DropEveryRecord:
    """A transport receive filter that drops every ``period``-th DTLS application-data
    record (SCTP) and lets everything else through; counts what it dropped."""

    def __init__(self, period: int) -> None:
        self.period = period
        self.seen = 0
        self.dropped = 0

    def __call__(self, datagram: bytes) -> bool:
        if datagram[0] != 23:  # DTLS application data (RFC 7983): SCTP only
            return True
        self.seen += 1
        if self.seen % self.period:
            return True
        self.dropped += 1
        return False


async def no_rtcp(data: bytes) -> bool:
    """A receiver's ``send_rtcp`` that sends nothing."""
    return True


def receiver_for(
    kind: str,
    send_rtcp: Callable[[bytes], Awaitable[bool]] = no_rtcp,
    *,
    mid: str = "0",
    queue_size: int | None = None,
) -> tuple[Any, RemoteTrack]:
    """An ``RtpReceiver`` of Opus (audio) or VP8 (video) feeding a new track."""
    from sora_async.codecs import create_decoder
    from sora_async.rtc.receiver import RtpReceiver

    codec = opus_codec() if kind == "audio" else vp8_codec()
    track = RemoteTrack(kind, track_id=kind, stream_id="s", mid=mid, queue_size=queue_size)
    receiver = RtpReceiver(
        kind=kind,
        mid=mid,
        codecs=[codec],
        track=track,
        send_rtcp=send_rtcp,
        rtcp_ssrc=7,
        decoder_factory=lambda c: create_decoder(c.name),
    )
    return receiver, track
