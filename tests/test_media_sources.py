"""``VideoSource`` and ``AudioSource`` on their own: what the encoder pulls from them.

The encoder side is played by the test calling ``recv()`` as aiortc's
``RTCRtpSender`` does; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from sora_async import AudioSource, TrackState, VideoFrame, VideoSource
from tests.media_helpers import peak_frequency, tone

BLUE = (255, 0, 0)


def solid(width: int, height: int, bgr: tuple[int, int, int]) -> np.ndarray:
    image = np.empty((height, width, 3), np.uint8)
    image[:] = bgr
    return image


def bgr_of(frame: av.VideoFrame) -> np.ndarray:
    return VideoFrame(frame).data()


async def recv(track: MediaStreamTrack) -> Any:
    async with asyncio.timeout(2):
        return await track.recv()


# -- VideoSource -----------------------------------------------------------------------------


async def test_video_source_is_a_track_with_the_official_attributes() -> None:
    source = VideoSource()
    assert isinstance(source, MediaStreamTrack)
    assert source.kind == "video" and source.id and source.stream_id
    assert source.enabled and source.state is TrackState.LIVE
    assert source.set_enabled(False) is True and not source.enabled
    source.stop()
    assert source.state is TrackState.ENDED


async def test_a_written_bgr_frame_reaches_the_encoder_as_i420_of_the_same_colour() -> None:
    source = VideoSource()
    source.write(solid(64, 48, (0, 0, 255)))  # red
    frame = await recv(source)
    assert isinstance(frame, av.VideoFrame)
    assert (frame.format.name, frame.width, frame.height) == ("yuv420p", 64, 48)
    b, g, r = bgr_of(frame)[24, 32]
    assert r > 240 and g < 15 and b < 15


async def test_video_pts_follow_the_capture_timestamps_at_90khz() -> None:
    source = VideoSource()
    pts = []
    for ts in (100.0, 100.0 + 1 / 30, 100_066_667):
        source.write(solid(32, 32, BLUE), timestamp=ts)
        pts.append((await recv(source)).pts)
    # float seconds, then int microseconds (the official overloads): 0, 1/30 s, 2/30 s
    assert pts[:2] == [0, 3000]
    assert abs(pts[2] - 6000) <= 1


async def test_video_pts_without_timestamps_use_the_write_time_and_always_increase() -> None:
    source = VideoSource()
    source.write(solid(32, 32, BLUE))
    first = (await recv(source)).pts
    await asyncio.sleep(0.1)
    source.write(solid(32, 32, BLUE))
    second = (await recv(source)).pts
    assert 0.08 * 90000 < second - first < 0.5 * 90000
    source.write(solid(32, 32, BLUE), timestamp=0.0)  # a clock step back
    assert (await recv(source)).pts > second


async def test_the_newest_frame_wins_when_the_encoder_is_behind() -> None:
    source = VideoSource()
    for n in range(5):
        source.write(solid(32, 32, (n * 50, 0, 0)))
    frame = await recv(source)
    assert bgr_of(frame)[16, 16][0] in range(190, 210)
    assert (source.frames_written, source.frames_dropped) == (5, 4)
    waiting = asyncio.create_task(source.recv())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # nothing new: the encoder waits, no repeat
    source.write(solid(32, 32, BLUE))
    assert isinstance(await asyncio.wait_for(waiting, 2), av.VideoFrame)


async def test_send_waits_until_the_encoder_took_the_frame() -> None:
    source = VideoSource()
    sending = asyncio.create_task(source.send(solid(32, 32, BLUE)))
    await asyncio.sleep(0.05)
    assert not sending.done()
    await recv(source)
    assert await asyncio.wait_for(sending, 2) is True
    assert await source.send(solid(32, 32, BLUE), timeout=0.05) is False  # nobody takes it


async def test_size_changes_go_through() -> None:
    source = VideoSource()
    sizes = []
    for w, h in [(320, 240), (160, 120), (330, 186)]:
        source.write(solid(w, h, BLUE))
        frame = await recv(source)
        sizes.append((frame.width, frame.height))
    assert sizes == [(320, 240), (160, 120), (330, 186)]


async def test_a_disabled_video_source_sends_black_frames_of_the_same_size() -> None:
    source = VideoSource()
    source.set_enabled(False)
    source.write(solid(64, 48, (255, 255, 255)))
    frame = await recv(source)
    y, u, v = VideoFrame(frame).planes()
    assert (frame.width, frame.height) == (64, 48)
    assert y.max() == 0 and set(np.unique(u)) == {128} and set(np.unique(v)) == {128}
    source.enabled = True
    source.write(solid(64, 48, (255, 255, 255)))
    assert VideoFrame(await recv(source)).planes()[0].min() > 200


async def test_av_video_frames_are_accepted_in_any_format() -> None:
    source = VideoSource()
    rgb = av.VideoFrame.from_ndarray(solid(40, 30, (10, 20, 200)), format="rgb24")
    source.write(rgb)
    frame = await recv(source)
    assert frame.format.name == "yuv420p" and (frame.width, frame.height) == (40, 30)


async def test_non_contiguous_arrays_are_copied_into_a_contiguous_frame() -> None:
    source = VideoSource()
    wide = solid(128, 48, (0, 0, 0))
    wide[:, ::2] = (0, 255, 0)
    view = wide[:, ::2]  # every other column: green, not contiguous
    assert not view.flags.c_contiguous
    source.write(view)
    wide[:] = 0  # the source kept its own copy
    b, g, r = bgr_of(await recv(source))[20, 20]
    assert g > 240 and b < 15 and r < 15


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ([[0, 0, 0]], TypeError),
        (np.zeros((48, 64, 3), np.float32), TypeError),
        (np.zeros((48, 64), np.uint8), ValueError),
        (np.zeros((48, 64, 4), np.uint8), ValueError),
        (np.zeros((0, 64, 3), np.uint8), ValueError),
    ],
)
async def test_bad_video_input_raises_a_clear_error(bad: object, error: type[Exception]) -> None:
    source = VideoSource()
    with pytest.raises(error, match="VideoSource"):
        source.write(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        source.write(solid(8, 8, BLUE), timestamp="now")  # type: ignore[arg-type]


async def test_a_stopped_video_source_refuses_writes_and_ends_the_encoder() -> None:
    source = VideoSource()
    waiting = asyncio.create_task(source.recv())
    await asyncio.sleep(0.01)
    source.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(waiting, 2)
    with pytest.raises(RuntimeError, match="stopped"):
        source.write(solid(8, 8, BLUE))


async def test_video_write_is_thread_safe_and_never_blocks() -> None:
    source = VideoSource()
    image = solid(1920, 1080, BLUE)

    def capture(count: int) -> None:
        for _ in range(count):
            source.write(image)

    # Nobody consumes: writers never wait for a consumer, each write replaces the
    # pending frame (counted as dropped). A blocking write would hang the join.
    threads = [threading.Thread(target=capture, args=(20,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert source.frames_written == 80
    assert source.frames_dropped == 79 and source._pending is not None

    # With a consumer (the engine's: no await after it takes a frame, so a wait cut
    # short took nothing): every frame is received or dropped, none lost or doubled.
    threads = [threading.Thread(target=capture, args=(20,)) for _ in range(4)]
    for t in threads:
        t.start()
    received = 0
    async with asyncio.timeout(30):
        while any(t.is_alive() for t in threads) or source._pending is not None:
            try:
                await asyncio.wait_for(source._recv_unconverted(), 0.2)
            except TimeoutError:
                continue  # the writers may all have finished meanwhile
            received += 1
    for t in threads:
        t.join(5)
    assert source.frames_written == 160
    assert received + source.frames_dropped + (source._pending is not None) == 160


# -- AudioSource -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((0, 16000), ValueError),
        ((9, 16000), ValueError),
        ((1, 100), ValueError),
        ((1, 500_000), ValueError),
        ((1.0, 16000), TypeError),
        ((1, "16000"), TypeError),
    ],
)
def test_invalid_audio_source_parameters_raise(args: tuple[object, object], error: type) -> None:
    with pytest.raises(error):
        AudioSource(*args)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AudioSource(1, 16000, queue_ms=0)


async def test_audio_source_is_a_track_with_the_official_attributes() -> None:
    source = AudioSource(2, 48000)
    assert source.kind == "audio" and source.id and source.stream_id
    assert source.state is TrackState.LIVE and source.enabled
    source.stop()
    assert source.state is TrackState.ENDED


def test_any_chunk_size_is_cut_into_10ms_chunks_and_a_partial_waits() -> None:
    source = AudioSource(1, 16000)
    source.write(np.zeros((240, 1), np.int16))  # 15 ms: 10 queued, 5 pending
    assert source.queued_ms == 10
    source.write(np.zeros(80, np.int16))  # + 5 ms (mono may be 1-D): continuous
    assert source.queued_ms == 20
    source.write(np.zeros((1, 1), np.int16))
    assert source.queued_ms == 20


@pytest.mark.parametrize(
    ("offset_ms", "joined"),
    [(15.0, True), (16.5, True), (13.5, True), (17.5, False), (30.0, False), (0.0, False)],
)
def test_partial_chunks_join_only_continuous_timestamps(offset_ms: float, joined: bool) -> None:
    """The official rule: within ±2 ms of where the previous write ended, else dropped."""
    source = AudioSource(1, 16000)
    source.write(np.zeros((240, 1), np.int16), timestamp=1000.0)  # 15 ms from t=1000
    source.write(np.zeros((80, 1), np.int16), timestamp=1000.0 + offset_ms / 1000)
    assert source.queued_ms == (20 if joined else 10)
    assert source.samples_dropped == (0 if joined else 80)


async def test_recv_is_paced_in_real_time_and_fills_gaps_with_silence() -> None:
    source = AudioSource(1, 48000)
    source.write(tone(440, 48000, 0, 960).reshape(-1, 1))  # 20 ms
    frames = []
    t0 = time.monotonic()
    for _ in range(11):
        frames.append(await recv(source))
    elapsed = time.monotonic() - t0
    assert 0.18 <= elapsed < 0.4  # 10 intervals of 20 ms
    assert all(f.sample_rate == 48000 and f.format.name == "s16" for f in frames)
    assert all(f.layout.name == "mono" and f.samples == 960 for f in frames)
    assert [f.pts for f in frames] == [960 * i for i in range(11)]
    assert np.abs(frames[0].to_ndarray()).max() > 7000
    assert all(np.abs(f.to_ndarray()).max() == 0 for f in frames[1:])


@pytest.mark.parametrize(("rate", "frequency"), [(16000, 440.0), (44100, 1000.0), (8000, 300.0)])
async def test_audio_is_resampled_to_48khz_keeping_its_frequency(
    rate: int, frequency: float
) -> None:
    source = AudioSource(1, rate, queue_ms=1000)
    source._last_recv = time.monotonic()  # as if consumed: keep the whole second
    source.write(tone(frequency, rate, 0, rate // 2).reshape(-1, 1))
    out = np.concatenate([(await recv(source)).to_ndarray().ravel() for _ in range(20)])
    assert abs(peak_frequency(out[960:], 48000) - frequency) < frequency * 0.01


async def test_stereo_stays_stereo_and_more_channels_are_sent_as_stereo() -> None:
    source = AudioSource(2, 32000, queue_ms=1000)
    source._last_recv = time.monotonic()
    left, right = tone(440, 32000, 0, 16000), tone(1500, 32000, 0, 16000)
    source.write(np.stack([left, right], axis=1))
    frames = [await recv(source) for _ in range(15)]
    assert {f.layout.name for f in frames} == {"stereo"}
    pcm = np.concatenate([f.to_ndarray().reshape(-1, 2) for f in frames])[960:]
    assert abs(peak_frequency(pcm[:, 0], 48000) - 440) < 5
    assert abs(peak_frequency(pcm[:, 1], 48000) - 1500) < 10
    six = AudioSource(6, 48000)
    six.write(np.zeros((480, 6), np.int16))
    assert (await recv(six)).layout.name == "stereo"


async def test_send_waits_while_more_than_queue_ms_is_queued() -> None:
    source = AudioSource(1, 16000, queue_ms=200)
    assert await source.send(np.zeros((16000, 1), np.int16), timeout=0.2) is False  # nobody plays
    assert source.queued_ms == 1000  # send never drops
    source.clear()

    async def encoder() -> None:
        while True:
            await source.recv()

    pulling = asyncio.create_task(encoder())
    try:
        t0 = time.monotonic()
        assert await source.send(np.zeros((16000, 1), np.int16), timeout=5) is True
        waited = time.monotonic() - t0
        assert 0.7 < waited < 1.3  # 1 s queued, returns at 200 ms left
        assert source.queued_ms <= 200
        assert await source.wait_for_playout(timeout=2) is True
        assert source.queued_ms == 0
    finally:
        pulling.cancel()


async def test_write_without_a_consumer_keeps_only_the_newest_queue_ms() -> None:
    source = AudioSource(1, 16000, queue_ms=100)
    source.write(np.arange(16000, dtype=np.int16).reshape(-1, 1) % 1000)
    assert source.queued_ms == 100
    assert source.samples_dropped == 16000 - 1600
    assert await source.wait_for_playout(timeout=0.05) is False


async def test_a_capture_started_before_the_sender_leaves_no_standing_delay() -> None:
    """A real-time writer running before anything consumes the track (capture started
    before connecting): the sender's first frame is the newest audio, not audio
    queued up to ``queue_ms`` earlier that would delay every later frame."""
    source = AudioSource(1, 48000)  # queue_ms=200
    written: list[float] = []
    for i in range(30):  # 300 ms of 10 ms chunks in real time, chunk i at level i + 1
        source.write(np.full((480, 1), i + 1, np.int16))
        written.append(time.monotonic())
        await asyncio.sleep(0.01)
    started = time.monotonic()
    first = int((await recv(source)).to_ndarray().ravel()[0]) - 1  # its first chunk
    # Chunks written more than 40 ms before the sender started are dropped, newer ones
    # kept (judged with 5 ms to spare either way, whatever the machine's timing). The
    # old rule kept the newest 200 ms: chunk 10 would have come first.
    ages = [started - t for t in written]
    assert all(age > 0.035 for age in ages[:first]), (first, ages)
    assert ages[first] < 0.045, (first, ages)
    assert source.samples_dropped == 480 * first


async def test_a_stall_of_the_event_loop_leaves_no_standing_delay() -> None:
    """A capture thread keeps writing in real time while the event loop is blocked for
    0.3 s: the sender starts again after it, so what was written more than 40 ms
    before is dropped, and the audio is again ~10 ms behind the writes instead of
    150 ms (the newest queue_ms less the 40 ms sent early) for the rest of the call."""
    source = AudioSource(1, 48000)
    chunks = 150
    written: list[float] = []

    def capture() -> None:
        t0 = time.monotonic()
        for i in range(chunks):  # chunk i at level i + 1, every 10 ms
            source.write(np.full((480, 1), i + 1, np.int16))
            written.append(time.monotonic())
            time.sleep(max(0.0, t0 + (i + 1) * 0.01 - time.monotonic()))

    thread = threading.Thread(target=capture)
    thread.start()
    got: list[tuple[float, int]] = []
    try:
        while len(got) < 60:
            first = int((await recv(source)).to_ndarray().ravel()[0])
            if first:
                got.append((time.monotonic(), first))
            if len(got) == 15:
                time.sleep(0.3)  # noqa: ASYNC251 - blocking code on the event loop, on purpose
    finally:
        thread.join(5)
    stall_end = got[15][0] + 0.3
    after = sorted(when - written[level - 1] for when, level in got[16:] if when > stall_end)
    # The median: a frame late on a busy machine is not a standing delay.
    assert after and after[len(after) // 2] < 0.05, after
    assert source.samples_dropped >= 480 * 15  # at least 150 ms of the stale audio


async def test_send_keeps_its_audio_when_the_sender_starts_late() -> None:
    source = AudioSource(1, 48000, queue_ms=1000)
    assert await source.send(np.full((960 * 3, 1), 700, np.int16), timeout=0.5) is True
    await asyncio.sleep(0.1)  # older than the 40 ms a write() backlog may be
    levels = [int(np.abs((await recv(source)).to_ndarray()).max()) for _ in range(3)]
    assert levels == [700, 700, 700] and source.samples_dropped == 0


async def test_a_short_tail_goes_out_padded_once_nothing_more_arrives() -> None:
    source = AudioSource(1, 48000)
    source.write(np.full((480 * 3, 1), 1000, np.int16))  # 30 ms
    levels = [int(np.abs((await recv(source)).to_ndarray()).max()) for _ in range(4)]
    # 20 ms; then 10 ms < one frame: one frame of patience; then the tail + silence
    assert levels == [1000, 0, 1000, 0]
    assert await source.wait_for_playout(timeout=0.1) is True


async def test_clear_drops_everything_queued() -> None:
    source = AudioSource(1, 16000)
    source.write(np.ones((1000, 1), np.int16))
    source.clear()
    assert source.queued_ms == 0
    assert np.abs((await recv(source)).to_ndarray()).max() == 0


async def test_a_disabled_audio_source_sends_silence_and_keeps_the_clock() -> None:
    source = AudioSource(1, 48000)
    source.write(np.full((960 * 2, 1), 5000, np.int16))
    source.set_enabled(False)
    frame = await recv(source)
    assert np.abs(frame.to_ndarray()).max() == 0 and frame.samples == 960
    assert source.queued_ms == 20  # consumed as it would have been played


async def test_audio_capture_timestamps_ride_on_the_frames() -> None:
    source = AudioSource(1, 48000)
    source.write(np.zeros((960, 1), np.int16), timestamp=1700000000.5)
    frame = await recv(source)
    assert frame.opaque == {"absolute_capture_timestamp_ms": 1700000000500}


async def test_float_audio_is_scaled_and_clipped() -> None:
    source = AudioSource(1, 48000)
    source.write(np.array([0.5, -2.0, 1.0] * 320, np.float32).reshape(-1, 1))
    values = (await recv(source)).to_ndarray().ravel()[:3]
    assert list(values) == [16384, -32768, 32767]


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ([0, 0], TypeError),
        (np.zeros((160, 1), np.int32), TypeError),
        (np.zeros((160, 2), np.int16), ValueError),
        (np.zeros((160, 1, 1), np.int16), ValueError),
        (np.full((160, 1), np.nan, np.float32), ValueError),
    ],
)
def test_bad_audio_input_raises_a_clear_error(bad: object, error: type[Exception]) -> None:
    source = AudioSource(1, 16000)
    with pytest.raises(error, match="AudioSource"):
        source.write(bad)  # type: ignore[arg-type]


async def test_non_contiguous_audio_is_accepted_and_writes_after_stop_raise() -> None:
    source = AudioSource(1, 48000)
    stereo = np.stack([tone(440, 48000, 0, 960), np.zeros(960, np.int16)], axis=1)
    source.write(stereo[:, :1])  # a column view: not contiguous
    assert source.queued_ms == 20
    source.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        source.write(np.zeros((160, 1), np.int16))
    with pytest.raises(MediaStreamError):
        await recv(source)


async def test_audio_write_from_threads_while_the_encoder_pulls() -> None:
    source = AudioSource(1, 16000, queue_ms=10_000)
    source._last_recv = time.monotonic()

    def capture() -> None:
        for i in range(50):
            source.write(tone(440, 16000, i * 160, 160).reshape(-1, 1))

    threads = [threading.Thread(target=capture) for _ in range(4)]
    for t in threads:
        t.start()
    pulled = 0
    while any(t.is_alive() for t in threads) or source.queued_ms:
        await recv(source)
        pulled += 1
        if pulled > 200:
            break
    for t in threads:
        t.join(5)
    assert source.queued_ms == 0 and source.samples_dropped == 0
