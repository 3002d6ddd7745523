"""``VideoSink``: decoded video frames out of a track (the official ``SoraVideoSink``).

``async for frame in VideoSink(track)`` yields :class:`~sora_async.frames.VideoFrame`
objects; the ``frame`` event (``sink.on("frame", handler)`` or the official-style
``sink.on_frame = handler``) delivers them to callbacks, which may be
coroutines.

A background task drains the track as fast as frames are decoded (aiortc's
own receive queue is unbounded, aiortc-notes.md §A.7) into a bounded queue of
``capacity`` frames: when the consumer is behind, the oldest frame is
dropped, so a slow consumer sees the newest picture and never grows memory
or latency. A coroutine handler still busy with a frame gets only the newest
one when it is done.

Colour conversion happens only when asked: ``frame.data()`` converts on first
call (and caches); ``VideoSink(track, format="bgr24")`` converts each frame the
consumer gets in a worker thread before handing it over, so ``data()`` is
then free on the event loop. On a :class:`~sora_async.RemoteTrack` that
conversion runs in the decode job itself, right after decoding (one hand-over
from the codec thread per frame instead of two).

Example::

    @conn.on("track")
    def on_track(track):
        if track.kind == "video":
            asyncio.create_task(show(track))

    async def show(track):
        async with VideoSink(track, format="bgr24") as sink:
            async for frame in sink:
                cv2.imshow("remote", frame.data())
"""

# Waits take an explicit timeout and report it (False/None) instead of raising,
# like the official read(frames, timeout).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError

from ._media import Changed, FrameEmitter, running_loop, spawn
from .frames import VideoFrame
from .rtc._workers import CodecJobs

logger = logging.getLogger("sora_async")


class VideoSink(FrameEmitter):
    """Frames of a remote (or any) video track.

    Args:
        track: a :class:`~sora_async.RemoteTrack`, an aiortc ``MediaStreamTrack``
            or anything with ``async recv()`` returning ``av.VideoFrame``;
            it ends when ``recv()`` raises ``MediaStreamError``.
        capacity: frames kept for the iterator (>= 1); the oldest goes first.
        format: a pixel format ("bgr24", "rgb24", "gray", ...) to convert each
            delivered frame to in a worker thread, or None (lazy).

    Must be created in a running event loop. Events: ``frame(VideoFrame)``,
    ``ended()``. Counters: ``frames_received``, ``frames_dropped``
    (never delivered to the iterator).
    """

    def __init__(self, track: Any, capacity: int = 1, *, format: str | None = None) -> None:
        if not callable(getattr(track, "recv", None)):
            raise TypeError(f"VideoSink: expected a track with recv(), got {type(track).__name__}")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"VideoSink: capacity must be an int >= 1, got {capacity!r}")
        if format is not None and not isinstance(format, str):
            raise TypeError("VideoSink: format must be a pixel format name or None")
        loop = running_loop("VideoSink")
        super().__init__(backlog=1)
        self.track = track
        self.capacity = capacity
        self.format = format
        self._queue: collections.deque[VideoFrame] = collections.deque(maxlen=capacity)
        self._changed = Changed()
        self._ended = False
        self.frames_received = 0
        self.frames_dropped = 0
        self._dispatch_pending: VideoFrame | None = None
        self._dispatch_wake = asyncio.Event()
        # Conversions run on the codec pool: cheaper per frame on the event loop than
        # run_in_executor (no concurrent.futures.Future, completions woken in batches).
        self._jobs = CodecJobs()
        self._untap: Callable[[], None] | None = None
        self._pump_task: asyncio.Task[None] | None = None
        tap = getattr(track, "_tap", None)
        if callable(tap):
            # A RemoteTrack hands each frame over as it is decoded: no task wake-up per frame.
            loop.call_soon(self._start_tap, tap)
        else:
            self._pump_task = spawn(loop, self._pump(), "VideoSink pump")
        self._dispatch_task = spawn(loop, self._dispatch(), "VideoSink dispatch")

    @property
    def ended(self) -> bool:
        """True once the track ended (or :meth:`close`) and every queued frame was taken."""
        return self._ended and not self._queue

    def _start_tap(self, tap: Callable[..., Callable[[], None]]) -> None:
        if not self._ended:  # not closed meanwhile
            # With a format, the conversion runs in the decode job itself (_convert), so
            # a frame crosses from the codec thread to the loop once, ready: one codec
            # pool round trip per frame less than converting in a job of our own.
            prepare = self._convert if self.format is not None else None
            self._untap = tap(self._take, self._track_done, prepare=prepare)

    def _convert(self, frame: av.VideoFrame) -> VideoFrame | av.VideoFrame:
        """On the codec thread, right after decoding: wrap and convert to ``format``."""
        if not isinstance(frame, av.VideoFrame) or frame.width == 0 or frame.height == 0:
            return frame  # _take skips or rejects it
        wrapped = VideoFrame(frame)
        assert self.format is not None
        try:
            wrapped.to_ndarray(self.format)  # cached in the wrapper
        except Exception:
            return frame  # converted again in get(), which reports the error to the reader
        return wrapped

    def _take(self, frame: Any) -> None:
        if self._ended:
            return
        if isinstance(frame, VideoFrame):  # prepared by _convert
            wrapped = frame
        else:
            if not isinstance(frame, av.VideoFrame):
                logger.warning("VideoSink: ignoring %s from the track", type(frame).__name__)
                return
            if frame.width == 0 or frame.height == 0:
                return  # as the official sink: 0x0 frames are skipped
            wrapped = VideoFrame(frame)
        self.frames_received += 1
        if len(self._queue) == self.capacity:
            self.frames_dropped += 1
        self._queue.append(wrapped)
        self._changed.notify()
        if self.listeners("frame"):
            self._dispatch_pending = wrapped
            self._dispatch_wake.set()

    def _track_done(self) -> None:
        self._ended = True
        self._changed.notify()
        self._dispatch_wake.set()

    async def _pump(self) -> None:
        try:
            while True:
                self._take(await self.track.recv())
        except MediaStreamError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("VideoSink: reading the track failed")
        finally:
            self._track_done()

    async def _dispatch(self) -> None:
        # Handlers get the newest frame; conversion (if asked) runs off the loop.
        while True:
            await self._dispatch_wake.wait()
            self._dispatch_wake.clear()
            frame, self._dispatch_pending = self._dispatch_pending, None
            if frame is not None:
                await self._prepare(frame)
                self.emit("frame", frame)
            if self._ended and self._dispatch_pending is None:
                self.emit("ended")
                return

    async def _prepare(self, frame: VideoFrame) -> None:
        # Frames of a RemoteTrack come converted (_convert); others convert here, once.
        if self.format is not None and self.format not in frame._cache:
            await self._jobs.run(frame.to_ndarray, self.format)

    # -- iteration ------------------------------------------------------------------------

    def __aiter__(self) -> VideoSink:
        return self

    async def __anext__(self) -> VideoFrame:
        frame = await self.get()
        if frame is None:
            raise StopAsyncIteration
        return frame

    async def get(self, timeout: float | None = None) -> VideoFrame | None:
        """The next frame (the oldest queued one); None once the track ended or on timeout."""
        await self._changed.wait_for(lambda: bool(self._queue) or self._ended, timeout)
        if not self._queue:
            return None
        frame = self._queue.popleft()
        await self._prepare(frame)
        return frame

    def get_nowait(self) -> VideoFrame | None:
        """The oldest queued frame without waiting (None if none); no conversion."""
        return self._queue.popleft() if self._queue else None

    async def close(self) -> None:
        """Stop reading the track (the track itself is not stopped)."""
        untap, self._untap = self._untap, None
        if untap is not None:
            untap()
        tasks = [t for t in (self._pump_task, self._dispatch_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._ended = True
        self._changed.notify()

    async def __aenter__(self) -> VideoSink:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (
            f"VideoSink(capacity={self.capacity}, received={self.frames_received}, "
            f"dropped={self.frames_dropped}, ended={self._ended})"
        )
