"""Media I/O against the dev server, with the official ``sora_sdk`` client at the other end.

- ``sora_async`` sendonly (``VideoSource`` + ``AudioSource``) -> ``sora_sdk`` recvonly;
- ``sora_sdk`` sendonly -> ``sora_async`` recvonly (``VideoSink``, ``AudioSink``,
  ``AudioStreamSink``).

The official side runs ``tests/media_official_runner.py`` (the shared runner
plus a frame counter painted into / read from the pixels). Video is VP8 at
640x480@30: it must arrive at that size, at >= 25 fps, and no frame older
than 300 ms may be delivered after a newer one. A 440 Hz tone must arrive as
440 Hz at the requested rate and channel count.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sora_async import (
    AudioSink,
    AudioSource,
    AudioStreamSink,
    Connection,
    RemoteTrack,
    VideoSink,
    VideoSource,
)
from sora_async.devserver import DevServer
from tests.media_helpers import pattern, peak_frequency, read_counter, stale_deliveries, tone
from tests.official import harness

pytestmark = pytest.mark.official

RUNNER = Path(__file__).resolve().parent / "media_official_runner.py"
FPS = 30
_channels = itertools.count(1)


def channel(name: str) -> str:
    return f"media-{name}-{next(_channels)}"


@pytest.fixture(autouse=True)
def counter_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "RUNNER", RUNNER)


@contextlib.asynccontextmanager
async def dev_server() -> AsyncIterator[DevServer]:
    async with asyncio.timeout(15):
        server = DevServer(port=0)
        await server.__aenter__()
    try:
        yield server
    finally:
        async with asyncio.timeout(15):
            await server.__aexit__(None, None, None)


async def feed_video(source: VideoSource, width: int, height: int, fps: int = FPS) -> None:
    """The moving counter pattern, paced at ``fps``, written as a capture thread would."""
    start = time.monotonic()
    for n in itertools.count():
        source.write(pattern(width, height, n))
        await asyncio.sleep(max(0.0, start + (n + 1) / fps - time.monotonic()))


async def feed_tone(source: AudioSource, frequency: float = 440.0) -> None:
    """A tone in 20 ms chunks through ``send()`` (back-pressure paces it)."""
    rate, step = source.sample_rate, source.sample_rate // 50
    for n in itertools.count():
        await source.send(tone(frequency, rate, n * step, step).reshape(-1, 1))


async def test_sora_async_sends_640x480_video_and_a_tone_to_sora_sdk(official_client: Any) -> None:
    ch = channel("up")
    async with dev_server() as server:
        receiver = official_client(
            signaling_urls=[server.signaling_url],
            role="recvonly",
            channel_id=ch,
            video_codec_type="VP8",
            video_counter=True,
            audio_sink={"sample_rate": 16000, "channels": 1, "window": 0.5},
        )
        await receiver.start()
        await receiver.connect()
        video, audio = VideoSource(), AudioSource(1, 16000)
        sender = Connection(
            server.signaling_url,
            role="sendonly",
            channel_id=ch,
            video_codec_type="VP8",
            video_bit_rate=1500,
            audio_source=audio,
            video_source=video,
        )
        feeders = [
            asyncio.create_task(feed_video(video, 640, 480)),
            asyncio.create_task(feed_tone(audio)),
        ]
        try:
            # the waits below add up to 26 s on their own; the rest is connect and
            # disconnect, which a loaded machine stretches (a 30 s budget ran out once)
            async with asyncio.timeout(45), sender:
                first = await receiver.wait_for("video_counter", timeout=15)
                # Let the first second (key frame, bandwidth ramp-up) pass, then measure 5 s.
                await asyncio.sleep(1.0)
                mark = receiver.mark()
                await asyncio.sleep(5.0)
                window = [e for e in receiver.events("video_counter") if e["seq"] >= mark]
                level = await receiver.wait_for(
                    "audio_level", lambda e: e["rms"] and e["rms"] > 0.05, timeout=5, start=mark
                )
        finally:
            for task in feeders:
                task.cancel()
            await asyncio.gather(*feeders, return_exceptions=True)
        assert first["width"] == 640 and first["height"] == 480
        assert {(e["width"], e["height"]) for e in window} == {(640, 480)}
        fps = (len(window) - 1) / (window[-1]["t"] - window[0]["t"])
        counters = [e["count"] for e in receiver.events("video_counter")]
        print(f"\nsora_async -> sora_sdk: {fps:.1f} fps at 640x480, tone {level['freq']:.1f} Hz")
        assert fps >= 25
        assert stale_deliveries(counters, FPS, 0.3) == []
        assert abs(level["freq"] - 440) < 440 * 0.02
        assert level["sample_rate"] == 16000
        await receiver.disconnect()


async def test_sora_sdk_sends_640x480_video_and_a_tone_to_sora_async(official_client: Any) -> None:
    ch = channel("down")
    async with dev_server() as server:
        receiver = Connection(
            server.signaling_url, role="recvonly", channel_id=ch, video_codec_type="VP8"
        )
        sinks: dict[str, Any] = {}
        both = asyncio.Event()

        def on_track(track: RemoteTrack) -> None:
            if track.kind == "video":
                sinks["video"] = VideoSink(track)
            else:
                sinks["audio"] = AudioSink(track, output_frequency=16000, output_channels=1)
            if len(sinks) == 2:
                both.set()

        receiver.on("track", on_track)
        async with asyncio.timeout(40), receiver:
            sender = official_client(
                signaling_urls=[server.signaling_url],
                role="sendonly",
                channel_id=ch,
                video_codec_type="VP8",
                video_bit_rate=1500,
                fake_video={"width": 640, "height": 480, "fps": FPS, "counter": True},
                fake_audio={"frequency": 440.0, "sample_rate": 48000},
            )
            await sender.start()
            await sender.connect()
            await asyncio.wait_for(both.wait(), 15)
            video: VideoSink = sinks["video"]
            audio: AudioSink = sinks["audio"]
            # Skip the bandwidth ramp-up: wait for full-size frames, then measure 5 s.
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                frame = await video.get(timeout=5)
                assert frame is not None
                if (frame.width, frame.height) == (640, 480):
                    break
            await asyncio.sleep(1.0)
            counters: list[int] = []
            sizes: set[tuple[int, int]] = set()
            start = time.monotonic()
            while time.monotonic() - start < 5.0:
                frame = await video.get(timeout=2)
                assert frame is not None
                sizes.add((frame.width, frame.height))
                counters.append(read_counter(frame.planes()[0]))
            elapsed = time.monotonic() - start
            audio.read_nowait()  # drop what piled up while we looked at video
            ok, pcm = await audio.read(8000, timeout=3)
            await sender.disconnect()
        fps = len(counters) / elapsed
        frequency = peak_frequency(pcm[:, 0], 16000) if pcm is not None else 0.0
        print(
            f"\nsora_sdk -> sora_async: {fps:.1f} fps at {sorted(sizes)}, tone {frequency:.1f} Hz"
        )
        assert sizes == {(640, 480)}
        assert fps >= 25
        assert stale_deliveries(counters, FPS, 0.3) == []
        assert ok and pcm is not None and pcm.shape == (8000, 1) and pcm.dtype == np.int16
        assert abs(frequency - 440) < 440 * 0.02


async def test_sora_sdk_tone_as_10ms_frames_at_24khz_stereo(official_client: Any) -> None:
    ch = channel("stream")
    async with dev_server() as server:
        receiver = Connection(server.signaling_url, role="recvonly", channel_id=ch)
        frames: list[Any] = []
        sinks: list[AudioStreamSink] = []
        enough = asyncio.Event()

        def on_track(track: RemoteTrack) -> None:
            if track.kind != "audio":
                return
            sink = AudioStreamSink(track, output_frequency=24000, output_channels=2)
            sinks.append(sink)

            def on_frame(frame: Any) -> None:
                frames.append(frame)
                if len(frames) >= 150:
                    enough.set()

            sink.on_frame = on_frame

        receiver.on("track", on_track)
        async with asyncio.timeout(30), receiver:
            sender = official_client(
                signaling_urls=[server.signaling_url],
                role="sendonly",
                channel_id=ch,
                video=False,
                fake_audio={"frequency": 440.0, "sample_rate": 48000},
            )
            await sender.start()
            await sender.connect()
            await asyncio.wait_for(enough.wait(), 15)
            await sender.disconnect()
        assert {(f.samples_per_channel, f.num_channels, f.sample_rate_hz) for f in frames} == {
            (240, 2, 24000)
        }
        pcm = np.concatenate([f.data() for f in frames[-100:]])
        frequency = peak_frequency(pcm[:, 1], 24000)
        print(f"\nsora_sdk -> AudioStreamSink(24000, 2): tone {frequency:.1f} Hz")
        assert abs(frequency - 440) < 440 * 0.02
