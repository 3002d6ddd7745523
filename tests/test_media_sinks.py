"""``VideoSink``, ``AudioSink``, ``AudioStreamSink`` and the frames they deliver,
fed by scripted tracks that behave as a ``RemoteTrack`` does (``recv()`` returns
decoded av frames, then raises ``MediaStreamError``)."""

from __future__ import annotations

import asyncio
import fractions
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from sora_async import AudioFrame, AudioSink, AudioStreamSink, VideoFrame, VideoSink
from tests.media_helpers import pattern, peak_frequency, read_counter, rss_bytes, tone


class ScriptedTrack:
    """``recv()`` returns ``make(n)`` for n = 0..count-1 (every ``interval`` s), then ends."""

    def __init__(
        self, kind: str, make: Callable[[int], av.frame.Frame], count: int, interval: float = 0.0
    ) -> None:
        self.kind, self.make, self.count, self.interval = kind, make, count, interval
        self.served = 0

    async def recv(self) -> av.frame.Frame:
        if self.served >= self.count:
            raise MediaStreamError
        if self.interval:
            await asyncio.sleep(self.interval)
        else:
            await asyncio.sleep(0)
        frame = self.make(self.served)
        self.served += 1
        return frame


def video(n: int, width: int = 160, height: int = 120) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(pattern(width, height, n), format="bgr24")
    frame = frame.reformat(format="yuv420p")
    frame.pts, frame.time_base = n * 3000, fractions.Fraction(1, 90000)
    return frame


def opus_like(n: int, frequency: float = 440.0, samples: int = 960) -> av.AudioFrame:
    """What aiortc's Opus decoder yields: 20 ms of packed s16 stereo at 48 kHz."""
    mono = tone(frequency, 48000, n * samples, samples)
    frame = av.AudioFrame.from_ndarray(
        np.stack([mono, mono], axis=1).reshape(1, -1), format="s16", layout="stereo"
    )
    frame.sample_rate, frame.pts = 48000, n * samples
    frame.time_base = fractions.Fraction(1, 48000)
    return frame


async def track_done(sink: Any) -> None:
    """Wait (bounded) until the sink has read its track to the end."""
    flag = "_ended" if isinstance(sink, VideoSink) else "_done"
    assert await sink._changed.wait_for(lambda: getattr(sink, flag), 5)


async def collect(sink: object, limit: int = 10_000) -> list:
    out = []
    async with asyncio.timeout(10):
        async for item in sink:  # type: ignore[attr-defined]
            out.append(item)
            if len(out) >= limit:
                break
    return out


# -- frames ------------------------------------------------------------------------------------


def test_video_frame_gives_bgr_i420_and_other_formats() -> None:
    frame = VideoFrame(video(7, 160, 120))
    bgr = frame.data()
    assert bgr.shape == (120, 160, 3) and bgr.dtype == np.uint8
    assert read_counter(bgr) == 7
    assert frame.data() is bgr  # converted once, cached
    y, u, v = frame.planes()
    assert (y.shape, u.shape, v.shape) == ((120, 160), (60, 80), (60, 80))
    assert read_counter(y) == 7
    assert frame.to_ndarray("gray").shape == (120, 160)
    assert frame.to_ndarray("rgb24")[..., ::-1].tolist() == bgr.tolist()
    assert (frame.width, frame.height) == (160, 120)
    assert frame.timestamp == pytest.approx(7 / 30)


def test_video_frames_of_odd_size_and_pickling() -> None:
    frame = VideoFrame.from_ndarray(pattern(161, 99, 3), timestamp=1.5)
    y, u, _v = frame.planes()
    assert (y.shape, u.shape) == ((99, 161), (50, 81))
    copy = pickle.loads(pickle.dumps(frame))
    assert (copy.width, copy.height, copy.timestamp) == (161, 99, 1.5)
    assert np.array_equal(copy.planes()[0], y)
    with pytest.raises(TypeError):
        VideoFrame(np.zeros((4, 4, 3), np.uint8))  # type: ignore[arg-type]


def test_audio_frame_is_read_only_and_pickles() -> None:
    data = np.arange(320, dtype=np.int16).reshape(160, 2)
    frame = AudioFrame(data, 16000, absolute_capture_timestamp_ms=1234)
    data[:] = 0  # the frame has its own copy
    assert (frame.samples_per_channel, frame.num_channels, frame.sample_rate_hz) == (160, 2, 16000)
    assert frame.absolute_capture_timestamp_ms == 1234 and frame.data()[1, 1] == 3
    with pytest.raises(ValueError):
        frame.data()[0, 0] = 1
    copy = pickle.loads(pickle.dumps(frame))
    assert copy == frame and copy.data().dtype == np.int16 and copy.data().shape == (160, 2)
    with pytest.raises(TypeError):
        AudioFrame(np.zeros((160, 1), np.float32), 16000)
    with pytest.raises(ValueError):
        AudioFrame(np.zeros(160, np.int16), 16000)


# -- VideoSink ---------------------------------------------------------------------------------


async def test_video_sink_iterates_frames_and_stops_at_track_end() -> None:
    track = ScriptedTrack("video", video, 5, interval=0.01)
    sink = VideoSink(track, capacity=10)
    frames = await collect(sink)
    assert [read_counter(f.data()) for f in frames] == [0, 1, 2, 3, 4]
    assert sink.ended and sink.frames_dropped == 0


async def test_a_slow_video_consumer_gets_the_newest_frame() -> None:
    track = ScriptedTrack("video", video, 50)
    sink = VideoSink(track)  # capacity 1: latest wins
    await track_done(sink)
    frames = await collect(sink)
    assert [read_counter(f.data()) for f in frames] == [49]
    assert (sink.frames_received, sink.frames_dropped) == (50, 49)
    deeper = VideoSink(ScriptedTrack("video", video, 50), capacity=3)
    await track_done(deeper)
    assert [read_counter(f.data()) for f in await collect(deeper)] == [47, 48, 49]


async def test_video_sink_on_frame_handlers_sync_coroutine_and_official_style() -> None:
    track = ScriptedTrack("video", video, 20, interval=0.01)
    sink = VideoSink(track, capacity=100)
    seen: list[int] = []
    slow_seen: list[int] = []
    running = 0
    most_running = 0
    ended = asyncio.Event()

    async def slow(frame: VideoFrame) -> None:
        nonlocal running, most_running
        running += 1
        most_running = max(most_running, running)
        await asyncio.sleep(0.05)
        slow_seen.append(read_counter(frame.data()))
        running -= 1

    sink.on_frame = lambda frame: seen.append(read_counter(frame.data()))
    sink.on("frame", slow)
    sink.on("ended", ended.set)
    await asyncio.wait_for(ended.wait(), 5)
    await asyncio.wait_for(sink.wait_for_handlers(), 5)
    assert seen == list(range(20))
    assert most_running == 1 and sink.handler_dropped > 0
    assert slow_seen == sorted(slow_seen) and slow_seen[-1] == 19  # the newest always arrives


async def test_video_sink_format_converts_off_the_loop_before_delivery() -> None:
    converted_in: set[str] = set()
    original = VideoFrame.to_ndarray

    def spy(self: VideoFrame, format: str = "bgr24") -> np.ndarray:
        converted_in.add(threading.current_thread().name)
        return original(self, format)

    VideoFrame.to_ndarray = spy  # type: ignore[method-assign]
    try:
        sink = VideoSink(ScriptedTrack("video", video, 3, interval=0.01), 10, format="bgr24")
        frames = await collect(sink)
    finally:
        VideoFrame.to_ndarray = original  # type: ignore[method-assign]
    assert len(frames) == 3 and all("bgr24" in f._cache for f in frames)
    assert threading.main_thread().name not in converted_in


async def test_video_sink_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError):
        VideoSink(object())
    with pytest.raises(ValueError):
        VideoSink(ScriptedTrack("video", video, 1), capacity=0)


def test_sinks_need_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="running event loop"):
        VideoSink(ScriptedTrack("video", video, 1))
    with pytest.raises(RuntimeError, match="running event loop"):
        AudioSink(ScriptedTrack("audio", opus_like, 1))


async def test_a_slow_video_consumer_does_not_grow_memory() -> None:
    """640x480 frames as fast as they come, a consumer taking one per 0.2 s."""
    made = [video(n, 640, 480) for n in range(8)]
    track = ScriptedTrack("video", lambda n: made[n % 8], 100_000, interval=0.002)
    sink = VideoSink(track)
    before = rss_bytes()
    async with asyncio.timeout(10):
        for _ in range(5):
            frame = await sink.get()
            assert frame is not None
            frame.data()
            await asyncio.sleep(0.2)
    grown = rss_bytes() - before
    await sink.close()
    assert track.served > 200  # the track was drained all along
    assert grown < 20 * 1024 * 1024


# -- AudioSink ---------------------------------------------------------------------------------


async def test_audio_sink_read_all_and_read_exact_as_the_official_sink() -> None:
    sink = AudioSink(ScriptedTrack("audio", opus_like, 10, interval=0.005))
    assert sink.read_nowait() == (False, None)
    ok, pcm = await sink.read(4800, timeout=2)  # 100 ms native: 48 kHz stereo
    assert ok and pcm is not None and pcm.shape == (4800, 2) and pcm.dtype == np.int16
    await track_done(sink)
    ok, rest = await sink.read()  # 0: everything buffered
    assert ok and rest is not None and rest.shape == (4800, 2)
    assert await sink.read() == (False, None)
    assert sink.ended


class StallingTrack(ScriptedTrack):
    """A live track that delivers ``count`` frames, then nothing (it never ends)."""

    async def recv(self) -> av.frame.Frame:
        if self.served >= self.count:
            await asyncio.Event().wait()
        return await super().recv()


async def test_audio_sink_times_out_without_consuming() -> None:
    sink = AudioSink(StallingTrack("audio", opus_like, 2))
    assert await sink._changed.wait_for(lambda: sink.buffered == 1920, 5)
    t0 = time.monotonic()
    assert await sink.read(48000, timeout=0.2) == (False, None)
    assert 0.15 <= time.monotonic() - t0 < 0.5
    assert sink.buffered == 1920  # both frames still there
    assert (await sink.read(1920, timeout=0.1))[0] is True
    await sink.close()


async def test_audio_sink_hands_out_the_tail_when_the_track_ends() -> None:
    # A reader looping on read(n) until ``ended`` must terminate and lose nothing.
    sink = AudioSink(ScriptedTrack("audio", opus_like, 3))
    await track_done(sink)
    ok, pcm = await sink.read(1920, timeout=1)
    assert ok and pcm is not None and pcm.shape == (1920, 2)
    assert not sink.ended
    ok, tail = await sink.read(1920, timeout=1)
    assert ok and tail is not None and tail.shape == (960, 2)
    assert sink.ended
    t0 = time.monotonic()
    assert await sink.read(1920, timeout=1) == (False, None)
    assert time.monotonic() - t0 < 0.1  # at once, not after the timeout


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (24000, 2), (44100, 1), (48000, 1)])
async def test_audio_sink_resamples_and_remixes(rate: int, channels: int) -> None:
    sink = AudioSink(ScriptedTrack("audio", opus_like, 50), rate, channels)
    ok, pcm = await sink.read(rate // 2, timeout=3)
    assert ok and pcm is not None and pcm.shape == (rate // 2, channels)
    assert abs(peak_frequency(pcm[:, 0], rate) - 440) < 3
    assert np.abs(pcm).max() > 7000  # stereo -> mono is the average, not a sum or a loss


async def test_audio_sink_downmix_averages_the_channels() -> None:
    def lr(n: int) -> av.AudioFrame:
        pcm = np.tile(np.array([[1000, 3000]], np.int16), (960, 1))
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 48000
        return frame

    sink = AudioSink(ScriptedTrack("audio", lr, 2), output_channels=1)
    ok, pcm = await sink.read(960, timeout=2)
    assert ok and pcm is not None and set(pcm.ravel()) == {2000}


async def test_audio_sink_read_nowait_from_another_thread() -> None:
    sink = AudioSink(ScriptedTrack("audio", opus_like, 30, interval=0.002), 16000, 1)
    got: list[int] = []

    def callback_thread() -> None:  # e.g. a sounddevice output callback
        deadline = time.monotonic() + 5
        while sum(got) < 8000 and time.monotonic() < deadline:
            ok, pcm = sink.read_nowait(160)
            if ok and pcm is not None:
                got.append(len(pcm))
            else:
                time.sleep(0.002)

    await asyncio.wait_for(asyncio.to_thread(callback_thread), 10)
    assert sum(got) == 8000


async def test_audio_sink_buffer_is_bounded() -> None:
    sink = AudioSink(ScriptedTrack("audio", opus_like, 100), max_buffer_ms=100)
    await track_done(sink)
    assert sink.buffered == 4800 and sink.samples_dropped == 100 * 960 - 4800


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"output_frequency": 100}, ValueError),
        ({"output_frequency": 16000.0}, TypeError),
        ({"output_channels": 9}, ValueError),
        ({"output_channels": -1}, ValueError),
    ],
)
async def test_audio_sinks_reject_bad_output_parameters(kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        AudioSink(ScriptedTrack("audio", opus_like, 1), **kwargs)
    with pytest.raises(error):
        AudioStreamSink(ScriptedTrack("audio", opus_like, 1), **kwargs)


async def test_audio_sink_read_arguments_are_checked() -> None:
    sink = AudioSink(ScriptedTrack("audio", opus_like, 1))
    with pytest.raises(ValueError):
        await sink.read(-1)
    with pytest.raises(ValueError):
        await sink.read(10, timeout=-1)
    with pytest.raises(TypeError):
        sink.read_nowait(1.5)  # type: ignore[arg-type]


# -- AudioStreamSink ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "channels", "shape"), [(-1, 0, (480, 2)), (24000, 2, (240, 2)), (16000, 1, (160, 1))]
)
async def test_audio_stream_sink_yields_10ms_frames(
    rate: int, channels: int, shape: tuple[int, int]
) -> None:
    sink = AudioStreamSink(ScriptedTrack("audio", opus_like, 30), rate, channels)
    frames = await collect(sink)
    assert len(frames) >= 58 and {f.data().shape for f in frames} == {shape}
    out_rate = 48000 if rate == -1 else rate
    assert {f.sample_rate_hz for f in frames} == {out_rate}
    pcm = np.concatenate([f.data() for f in frames])
    assert abs(peak_frequency(pcm[:, 0], out_rate) - 440) < 3


async def test_audio_stream_sink_on_frame_every_10ms_and_capture_timestamps() -> None:
    def stamped(n: int) -> av.AudioFrame:
        frame = opus_like(n)
        frame.opaque = {"absolute_capture_timestamp_ms": 1_000_000 + 20 * n}
        return frame

    sink = AudioStreamSink(ScriptedTrack("audio", stamped, 5, interval=0.005))
    seen: list[AudioFrame] = []
    sink.on_frame = seen.append
    frames = await collect(sink)
    assert len(seen) == len(frames) == 10
    assert [f.absolute_capture_timestamp_ms for f in seen] == [
        1_000_000 + 10 * i for i in range(10)
    ]
    assert pickle.loads(pickle.dumps(seen[3])) == seen[3]


async def test_audio_stream_sink_queue_is_bounded() -> None:
    sink = AudioStreamSink(ScriptedTrack("audio", opus_like, 200), capacity=50)
    await track_done(sink)
    frames = await collect(sink)
    assert len(frames) == 50 and sink.frames_dropped == 400 - 50
