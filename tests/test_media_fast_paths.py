"""The CPU-saving paths of the media engine (issue 10) keep what they replaced.

- :class:`~sora_async.rtc._workers.CodecPool` / ``CodecJobs``: results,
  exceptions, ordering, cancellation and teardown drain, a bounded thread
  count (``SORA_ASYNC_CODEC_THREADS``), and ``inline`` jobs on the loop thread.
- ``reformat_video``: the per-thread libswscale context gives the same pixels
  as ``av.VideoFrame.reformat``.
- ``VideoSource`` → ``RtpSender``: the BGR → I420 conversion moved into the
  sender layer (one pass with the layer's scaling) gives the encoder the same
  I420 picture as ``VideoSource.recv()`` does.

Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from typing import Any

import av
import numpy as np
import pytest

from sora_async import VideoSource
from sora_async.codecs import EncoderSettings, create_encoder
from sora_async.codecs.base import EncodedFrame
from sora_async.frames import VideoFrame, libyuv_available, reformat_video
from sora_async.rtc._workers import CodecJobs, CodecPool, codec_pool, settle
from sora_async.rtc.sdp import NegotiatedCodec
from sora_async.rtc.sender import EncodingParameters, RtpSender, SendLayer
from tests.rtc_support import vp8_codec

VP8 = vp8_codec(("nack", "nack pli"))


def gradient(width: int, height: int, shift: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), np.uint8)
    image[:, :, 0] = (x * 255 // max(1, width - 1) + shift) & 0xFF
    image[:, :, 1] = (y * 255 // max(1, height - 1)) & 0xFF
    image[:, :, 2] = 200
    return image


# -- the codec pool ----------------------------------------------------------------------


async def test_codec_jobs_run_on_pool_threads_and_return_results_in_order() -> None:
    main = threading.get_ident()
    jobs = CodecJobs()
    async with asyncio.timeout(10):
        results = [await jobs.run(lambda i=i: (i, threading.get_ident())) for i in range(20)]
    assert [value for value, _ in results] == list(range(20))
    assert all(thread != main for _, thread in results)


async def test_codec_job_exceptions_reach_the_awaiting_coroutine() -> None:
    def fail() -> None:
        raise ValueError("broken frame")

    def stop() -> None:
        raise StopIteration

    jobs = CodecJobs()
    async with asyncio.timeout(10):
        with pytest.raises(ValueError, match="broken frame"):
            await jobs.run(fail)
        with pytest.raises(RuntimeError):  # futures cannot carry StopIteration
            await jobs.run(stop)
        assert await jobs.run(lambda: 7) == 7  # still usable


async def test_many_receivers_at_once_all_get_their_results_from_a_bounded_pool() -> None:
    pool = CodecPool(max_workers=3)
    loop = asyncio.get_running_loop()
    owners = [CodecJobs() for _ in range(60)]
    futures: list[asyncio.Future[Any]] = []
    for index, jobs in enumerate(owners):
        future: asyncio.Future[Any] = loop.create_future()
        jobs._running += 1
        done = functools.partial(settle, future)
        pool.submit(lambda i=index: (time.sleep(0.001), i)[1], (), done, jobs, loop)
        futures.append(future)
    async with asyncio.timeout(10):
        results = await asyncio.gather(*futures)
    assert results == list(range(60))
    assert 1 <= pool.threads <= 3
    assert all(jobs._running == 0 for jobs in owners)


def test_codec_thread_settings_from_the_environment() -> None:
    from sora_async.rtc._workers import _codec_threads

    assert _codec_threads(2, None) == 4  # two per core, at least 4
    assert _codec_threads(4, None) == 8
    assert _codec_threads(64, None) == 16
    assert _codec_threads(None, None) == 4
    assert _codec_threads(2, "3") == 3
    assert _codec_threads(2, "0") == 1
    assert _codec_threads(2, "many") == 4  # not a number: the default, with a warning


async def test_drain_waits_for_a_job_whose_waiter_was_cancelled() -> None:
    started = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    def slow() -> None:
        started.set()
        release.wait(5)
        finished.set()

    jobs = CodecJobs()
    async with asyncio.timeout(10):
        task = asyncio.create_task(jobs.run(slow))
        assert await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        drain = asyncio.create_task(jobs.drain())
        _, pending = await asyncio.wait({drain}, timeout=0.05)
        assert drain in pending  # the job still runs: the codec must not be closed
        release.set()
        await drain
    assert finished.is_set()
    assert jobs._running == 0


async def test_inline_jobs_run_on_the_loop_thread() -> None:
    jobs = CodecJobs(inline=True)
    async with asyncio.timeout(5):
        assert await jobs.run(threading.get_ident) == threading.get_ident()
        await jobs.drain()


async def test_jobs_of_two_event_loops_come_back_to_their_own_loop() -> None:
    def in_other_loop() -> int:
        async def job() -> int:
            return await CodecJobs().run(lambda: 41) + 1

        return asyncio.run(job())

    async with asyncio.timeout(10):
        other = asyncio.get_running_loop().run_in_executor(None, in_other_loop)
        mine = await CodecJobs().run(lambda: 1)
        assert (await other, mine) == (42, 1)
    assert codec_pool().threads <= codec_pool().max_workers


# -- conversion ----------------------------------------------------------------------------


def _same_conversion(ours: np.ndarray, pyav: np.ndarray) -> bool:
    """Equal to PyAV's libswscale BGR -> I420, or within 1 where libyuv does it (its
    rounding differs by at most 1 per sample: ``tests/test_frames_libyuv.py``)."""
    tolerance = 1 if libyuv_available() else 0
    return ours.shape == pyav.shape and int(np.abs(ours.astype(int) - pyav).max()) <= tolerance


def test_reformat_video_matches_pyav_and_reuses_one_context_per_thread() -> None:
    image = gradient(322, 242)
    frame = av.VideoFrame.from_ndarray(image, format="bgr24")
    mine = reformat_video(frame, format="yuv420p")
    theirs = frame.reformat(format="yuv420p")
    assert _same_conversion(mine.to_ndarray(), theirs.to_ndarray())
    scaled = reformat_video(mine, width=160, height=120, format="bgr24")
    assert scaled.to_ndarray().shape == (120, 160, 3)
    assert np.array_equal(
        scaled.to_ndarray(), mine.reformat(width=160, height=120, format="bgr24").to_ndarray()
    )
    assert reformat_video(mine, format="yuv420p") is mine  # nothing to do


def test_video_frame_data_is_the_pyav_conversion_and_is_cached() -> None:
    yuv = av.VideoFrame.from_ndarray(gradient(64, 48), format="bgr24").reformat(format="yuv420p")
    frame = VideoFrame(yuv)
    # libyuv (where the system has it) rounds differently from libswscale: within 3
    difference = frame.data().astype(int) - yuv.to_ndarray(format="bgr24").astype(int)
    assert np.abs(difference).max() <= 3
    assert frame.data() is frame.data()
    assert np.array_equal(frame.to_ndarray("gray"), yuv.to_ndarray(format="gray"))


async def test_unconverted_source_frames_wrap_the_written_copy() -> None:
    source = VideoSource()
    image = gradient(64, 48)
    source.write(image, timestamp=1.0)
    async with asyncio.timeout(5):
        frame = await source._recv_unconverted()
    assert frame.format.name == "bgr24" and (frame.width, frame.height) == (64, 48)
    assert np.array_equal(frame.to_ndarray(), image)
    assert frame.pts == 0 and source.frames_sent == 1
    image[:] = 0  # the caller's buffer is not the frame's
    assert frame.to_ndarray().any()
    source.set_enabled(False)
    source.write(gradient(64, 48), timestamp=1.1)
    async with asyncio.timeout(5):
        black = await source._recv_unconverted()
    assert black.format.name == "yuv420p" and black.pts == 9000
    assert not black.to_ndarray(format="gray").any()
    source.stop()


class RecordingEncoder:
    """A real VP8 encoder that keeps the frames it was given."""

    def __init__(self, layer: SendLayer) -> None:
        self.inner = create_encoder("VP8", settings=EncoderSettings(bitrate=layer.target_bitrate))
        self.frames: list[av.VideoFrame] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("inner", "frames"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)

    def encode(self, frame: av.frame.Frame, force_keyframe: bool = False) -> list[EncodedFrame]:
        assert isinstance(frame, av.VideoFrame)
        self.frames.append(frame)
        return list(self.inner.encode(frame, force_keyframe))


async def test_a_video_source_reaches_each_simulcast_encoder_as_i420_in_one_pass() -> None:
    encoders: list[RecordingEncoder] = []

    def factory(codec: NegotiatedCodec, layer: SendLayer) -> Any:
        encoder = RecordingEncoder(layer)
        encoders.append(encoder)
        return encoder

    sent: list[bytes] = []

    async def send(data: bytes) -> bool:
        sent.append(data)
        return True

    source = VideoSource()
    sender = RtpSender(
        kind="video",
        mid="1",
        source=source,
        codec=VP8,
        extensions=[],
        encodings=[
            EncodingParameters(rid="r0", scale_resolution_down_by=2),
            EncodingParameters(rid="r1"),
        ],
        send=send,
        cname="cname",
        encoder_factory=factory,
        taken_ssrcs=set(),
        max_bitrate=1_000_000,
    )
    sender.start()
    image = gradient(320, 240, shift=9)
    try:
        async with asyncio.timeout(20):
            while not (len(encoders) == 2 and all(e.frames for e in encoders)):
                await source.send(image, timeout=1)
                await asyncio.sleep(0.01)
    finally:
        await sender.stop()
        source.stop()
    half, full = encoders
    expected = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
    got = full.frames[0]
    assert got.format.name == "yuv420p" and (got.width, got.height) == (320, 240)
    assert _same_conversion(got.to_ndarray(), expected.to_ndarray())
    small = half.frames[0]
    assert small.format.name == "yuv420p" and (small.width, small.height) == (160, 120)
    reference = expected.reformat(width=160, height=120).to_ndarray(format="bgr24")
    difference = np.abs(small.to_ndarray(format="bgr24").astype(int) - reference.astype(int))
    assert difference.mean() < 4  # one-pass scale+convert: the same picture
    assert sent  # and it went out as RTP


# -- uvloop, opt-in ------------------------------------------------------------------------


def test_run_uses_uvloop_only_when_asked_or_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from sora_async import runner

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    policy = asyncio.get_event_loop_policy()
    assert runner.run(loop_module(), uvloop=False).startswith("asyncio")
    monkeypatch.setenv(runner.ENV_UVLOOP, "0")
    assert runner.run(loop_module()).startswith("asyncio")
    monkeypatch.delenv(runner.ENV_UVLOOP)
    if runner.uvloop_available():
        assert runner.run(loop_module()).startswith("uvloop")
        assert runner.run(loop_module(), uvloop=True).startswith("uvloop")
    else:
        assert runner.run(loop_module()).startswith("asyncio")
        with pytest.raises(ImportError):
            runner.run(loop_module(), uvloop=True)
    assert asyncio.get_event_loop_policy() is policy  # no global change


def test_the_engine_runs_on_uvloop() -> None:
    pytest.importorskip("uvloop")
    from sora_async import runner

    async def jobs_and_sources() -> tuple[int, tuple[int, int]]:
        source = VideoSource()
        source.write(gradient(32, 24))
        async with asyncio.timeout(5):
            frame = await source.recv()
            value = await CodecJobs().run(lambda: 5)
        source.stop()
        return value, (frame.width, frame.height)

    assert runner.run(jobs_and_sources(), uvloop=True) == (5, (32, 24))


# -- socket buffers ----------------------------------------------------------------------------


def _rmem_max() -> int | None:
    try:
        with open("/proc/sys/net/core/rmem_max") as limit:
            return int(limit.read())
    except OSError:
        return None  # not Linux: the kernel's cap is unknown


async def test_gathered_sockets_get_a_larger_receive_buffer() -> None:
    import socket

    from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport

    from sora_async import _aiortc_seam as seam

    gatherer = RTCIceGatherer()
    ice = RTCIceTransport(gatherer)
    try:
        async with asyncio.timeout(10):
            await seam.gather(gatherer, addresses=["127.0.0.1"])
        sockets = [p.transport.get_extra_info("socket") for p in ice._connection._protocols]
        assert sockets
        before = [s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) for s in sockets]
        size = max(before) + 65536
        assert seam.enlarge_receive_buffers(ice, size) == len(sockets)
        after = [s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) for s in sockets]
        limit = _rmem_max()
        if limit is not None and limit >= size:
            assert all(value >= size for value in after)  # Linux reports double
        assert seam.enlarge_receive_buffers(ice, 4096) == 0  # never shrinks
    finally:
        async with asyncio.timeout(10):
            await ice.stop()
