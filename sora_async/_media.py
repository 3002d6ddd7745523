"""Plumbing shared by the media sources, sinks and the VAD (private).

- :class:`Changed`: wake asyncio waiters from any thread (``write()`` runs on
  capture threads, ``recv()``/``send()`` on the event loop).
- :class:`LocalTrack`: the track attributes of the official
  ``SoraTrackInterface`` (``kind``, ``id``, ``stream_id``, ``enabled``,
  ``set_enabled``, ``state``) on top of aiortc's ``MediaStreamTrack``.
- :class:`FrameEmitter`: an :class:`~sora_async.emitter.Emitter` whose coroutine
  handlers never pile up: at most one running task per handler plus a bounded
  backlog, so a slow ``on_frame`` handler cannot grow memory.
- PCM helpers: int16 validation, channel remixing (as libwebrtc's
  ``RemixFrame``) and a resampler over PyAV's libswresample.
"""

# Waits take an explicit timeout and report it (False/None) instead of raising,
# like the official read(frames, timeout).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from .emitter import Emitter
from .enums import TrackState

logger = logging.getLogger("sora_async")


class Changed:
    """Something changed: wake every coroutine waiting for a condition.

    ``notify()`` may be called from any thread; waiters may sit in any event
    loop. A waiter re-checks its predicate after each wake-up.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: list[asyncio.Future[None]] = []

    def notify(self) -> None:
        if not self._waiters:
            # Nobody waits (the common case per audio packet): no lock. Safe without
            # it: a waiter registers first and then re-checks its predicate.
            return
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for fut in waiters:
            loop = fut.get_loop()
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                wake(fut)
            else:
                with contextlib.suppress(RuntimeError):  # that loop is closed
                    loop.call_soon_threadsafe(wake, fut)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until ``predicate()`` is true; False if ``timeout`` seconds passed first."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not predicate():
            if deadline is not None and deadline <= loop.time():
                return predicate()
            fut: asyncio.Future[None] = loop.create_future()
            with self._lock:
                self._waiters.append(fut)
            if predicate():  # changed between the check and the registration
                self._forget(fut)
                return True
            # A plain timer on the future, not asyncio.wait_for: that costs a second
            # future, a done callback and (3.11) a cancellation round on every wake-up,
            # and media waits (a source's pacing, a sink's read) wake 50-100 times a second.
            timer = None if deadline is None else loop.call_at(deadline, wake, fut)
            try:
                await fut
            finally:
                if timer is not None:
                    timer.cancel()
                if fut in self._waiters:  # timed out or cancelled: notify() did not take it
                    self._forget(fut)
        return True

    def _forget(self, fut: asyncio.Future[None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._waiters.remove(fut)


def wake(fut: asyncio.Future[None]) -> None:
    """Resolve a waiter future unless it is already done (a timer or a notify may
    come after a cancellation or the other one)."""
    if not fut.done():
        fut.set_result(None)


class LocalTrack(MediaStreamTrack):
    """A local track that the connection sends; the official ``SoraTrackInterface``.

    ``stop()`` (or ``close()``) ends it for good: ``recv()`` then raises
    ``MediaStreamError`` and writes raise ``RuntimeError``.
    """

    def __init__(self, stream_id: str | None = None) -> None:
        super().__init__()
        self.stream_id: str = stream_id or uuid.uuid4().hex
        self._enabled = True
        self._ended = False
        self._changed = Changed()
        #: what ``recv()``'s paced wait sleeps on: notified by :meth:`stop` and by a source
        #: when what that wait is for is there (a whole audio frame), not on every write
        self._paced = Changed()

    @property
    def enabled(self) -> bool:
        """False while disabled: video sends black frames, audio silence (as libwebrtc)."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self.set_enabled(value)

    def set_enabled(self, enable: bool) -> bool:
        """Enable or disable the track (``SoraTrackInterface.set_enabled``); returns True."""
        self._enabled = bool(enable)
        return True

    @property
    def state(self) -> TrackState:
        """``TrackState.LIVE`` until :meth:`stop`."""
        return TrackState.ENDED if self._ended else TrackState.LIVE

    def stop(self) -> None:
        """End the track: pending and future ``recv()``/``send()`` return, writes raise."""
        self._ended = True
        super().stop()
        self._changed.notify()
        self._paced.notify()

    def close(self) -> None:
        """Same as :meth:`stop`."""
        self.stop()

    def _check_open(self) -> None:
        if self._ended:
            raise RuntimeError(f"{type(self).__name__} is stopped; create a new one")


class FrameEmitter(Emitter):
    """Emitter for ``frame`` events with bounded per-handler backlogs.

    A plain handler is called for each frame (it runs on the event loop: keep
    it short). A coroutine handler runs as one task at a time; frames arriving
    while it runs wait in a backlog of ``backlog`` entries, the oldest dropped
    first (``backlog=1``: only the newest frame waits).
    """

    def __init__(self, backlog: int) -> None:
        super().__init__()
        self._backlog = backlog
        self._busy: dict[Callable[..., Any], collections.deque[tuple[Any, ...]]] = {}
        self._on_frame: Callable[..., Any] | None = None
        #: Frames a busy coroutine handler never saw.
        self.handler_dropped = 0

    @property
    def on_frame(self) -> Callable[..., Any] | None:
        """The official-style callback: ``sink.on_frame = handler`` (same as ``on("frame")``)."""
        return self._on_frame

    @on_frame.setter
    def on_frame(self, handler: Callable[..., Any] | None) -> None:
        if self._on_frame is not None:
            with contextlib.suppress(KeyError):
                self.remove_listener("frame", self._on_frame)
        self._on_frame = handler
        if handler is not None:
            self.on("frame", handler)

    def _emit_run(
        self, f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        backlog = self._busy.get(f)
        if backlog is not None:
            if len(backlog) == backlog.maxlen:
                self.handler_dropped += 1
            backlog.append(args)
            return
        self._start(f, args)

    def _start(self, f: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            result = f(*args)
        except Exception:
            logger.exception("frame handler %r raised; ignored", f)
            return
        if asyncio.iscoroutine(result):
            self._busy[f] = collections.deque(maxlen=self._backlog)
            task = asyncio.ensure_future(result)
            self._waiting.add(task)
            task.add_done_callback(lambda done: self._finished(f, done))

    def _finished(self, f: Callable[..., Any], task: asyncio.Future[Any]) -> None:
        self._handler_done(f, task)
        backlog = self._busy.pop(f, None)
        if backlog:
            args = backlog.popleft()
            self._start(f, args)
            if f in self._busy:
                self._busy[f].extend(backlog)


#: Strong references to the sinks' background tasks: the event loop keeps only
#: weak ones, and a sink nobody references must keep reading its track.
_TASKS: set[asyncio.Task[None]] = set()


def spawn(loop: asyncio.AbstractEventLoop, coro: Any, name: str) -> asyncio.Task[None]:
    task = loop.create_task(coro, name=name)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return task


def running_loop(owner: str) -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            f"{owner} must be created inside a running event loop (e.g. in a 'track' handler)"
        ) from None


# -- PCM -------------------------------------------------------------------------------


def as_pcm(data: Any, channels: int, *, owner: str) -> np.ndarray:
    """``data`` as a C-contiguous int16 ndarray of shape (samples, channels), copied.

    Accepted: int16 (samples, channels); for mono also (samples,); float32/float64
    in [-1, 1] (scaled by 32767 and clipped; NaN raises ``ValueError``).
    """
    if not isinstance(data, np.ndarray):
        raise TypeError(f"{owner}: expected a numpy.ndarray, got {type(data).__name__}")
    if data.ndim == 1 and channels == 1:
        data = data.reshape(-1, 1)
    if data.ndim != 2 or data.shape[1] != channels:
        raise ValueError(f"{owner}: expected shape (samples, {channels}), got {tuple(data.shape)}")
    if data.dtype == np.int16:
        return np.array(data, dtype=np.int16, order="C", copy=True)
    if data.dtype in (np.float32, np.float64):
        if np.isnan(data).any():
            raise ValueError(f"{owner}: float audio contains NaN")
        scaled = np.clip(np.rint(data * 32767.0), -32768, 32767)
        return np.ascontiguousarray(scaled, dtype=np.int16)
    raise TypeError(f"{owner}: expected int16 (or float32/float64 in [-1, 1]), got {data.dtype}")


def remix(pcm: np.ndarray, channels: int) -> np.ndarray:
    """int16 (samples, n) to (samples, ``channels``) as libwebrtc's ``RemixFrame``:
    to mono = average of the channels, from mono = copies, otherwise the first
    channels (fewer) or the channels repeated in turn (more)."""
    have = pcm.shape[1]
    if have == channels:
        return pcm
    if channels == 1:
        if have == 2:  # the same as the float mean below, rounded half to even, in ints
            total = pcm[:, 0:1].astype(np.int32)
            total += pcm[:, 1:2]
            half = total >> 1
            half += total & half & 1
            return half.astype(np.int16)
        mono: np.ndarray = np.rint(pcm.mean(axis=1, keepdims=True)).astype(np.int16)
        return mono
    if have == 1:
        return np.repeat(pcm, channels, axis=1)
    if channels < have:
        return np.ascontiguousarray(pcm[:, :channels])
    return np.ascontiguousarray(pcm[:, [i % have for i in range(channels)]])


#: FFmpeg's default layout for each channel count.
_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def layout_name(channels: int) -> str:
    return _LAYOUTS[channels]


class Resampler:
    """int16 (samples, channels) at one rate to another, keeping filter state
    between calls (libswresample through PyAV). Output sizes vary slightly."""

    def __init__(self, in_rate: int, out_rate: int, channels: int) -> None:
        self.in_rate, self.out_rate, self.channels = in_rate, out_rate, channels
        self._layout = layout_name(channels)
        self._resampler = av.AudioResampler(format="s16", layout=self._layout, rate=out_rate)

    def resample(self, pcm: np.ndarray) -> np.ndarray:
        if self.in_rate == self.out_rate:
            return pcm
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout=self._layout)
        frame.sample_rate = self.in_rate
        return self._run(frame)

    def resample_frame(self, frame: av.AudioFrame) -> np.ndarray:
        """Like :meth:`resample`, from a packed ``s16`` frame of this resampler's rate
        and layout (a decoder's output) without copying it to an ndarray first."""
        if self.in_rate == self.out_rate:
            return audio_frame_pcm(frame)
        return self._run(frame)

    def _run(self, frame: av.AudioFrame) -> np.ndarray:
        out = [f.to_ndarray().reshape(-1, self.channels) for f in self._resampler.resample(frame)]
        if not out:
            return np.zeros((0, self.channels), np.int16)
        return out[0] if len(out) == 1 else np.concatenate(out)


def audio_frame_pcm(frame: av.AudioFrame) -> np.ndarray:
    """A decoded ``av.AudioFrame`` as int16 (samples, channels), a copy."""
    channels = len(frame.layout.channels)
    if frame.format.name == "s16":
        # Packed s16 is one plane: read it directly (PyAV's to_ndarray goes through
        # np.vstack, 3 µs against 1 µs, per 10-20 ms of audio).
        count = frame.samples * channels
        pcm: np.ndarray = np.frombuffer(memoryview(frame.planes[0]), np.int16, count).copy()
        return pcm.reshape(-1, channels)
    converted = av.AudioResampler(format="s16", layout=frame.layout.name, rate=frame.sample_rate)
    parts = [f.to_ndarray().reshape(-1, channels) for f in converted.resample(frame)]
    parts += [f.to_ndarray().reshape(-1, channels) for f in converted.resample(None)]
    return np.concatenate(parts) if parts else np.zeros((0, channels), np.int16)


class PcmConverter:
    """Decoded audio frames to int16 at ``output_frequency``/``output_channels``
    (-1 / 0: keep the track's), the official sinks' resample-then-remix order."""

    def __init__(self, output_frequency: int, output_channels: int, *, owner: str) -> None:
        if not isinstance(output_frequency, int) or isinstance(output_frequency, bool):
            raise TypeError(f"{owner}: output_frequency must be an int")
        if not isinstance(output_channels, int) or isinstance(output_channels, bool):
            raise TypeError(f"{owner}: output_channels must be an int")
        if output_frequency != -1 and not 8000 <= output_frequency <= 192000:
            raise ValueError(f"{owner}: output_frequency must be -1 or 8000..192000")
        if not 0 <= output_channels <= 8:
            raise ValueError(f"{owner}: output_channels must be 0 (as received) or 1..8")
        self.output_frequency = output_frequency
        self.output_channels = output_channels
        self._resampler: Resampler | None = None

    def convert(self, frame: av.AudioFrame) -> tuple[np.ndarray, int]:
        """(int16 (samples, channels), sample rate)."""
        rate = int(frame.sample_rate)
        if self.output_frequency != -1 and rate != self.output_frequency:
            channels = len(frame.layout.channels)
            r = self._resampler
            if r is None or r.in_rate != rate or r.channels != channels:
                r = self._resampler = Resampler(rate, self.output_frequency, channels)
            if frame.format.name == "s16" and frame.layout.name == r._layout:
                pcm = r.resample_frame(frame)  # a decoder's frame: no copy on the way in
            else:
                pcm = r.resample(audio_frame_pcm(frame))
            rate = self.output_frequency
        else:
            pcm = audio_frame_pcm(frame)
        if self.output_channels:
            pcm = remix(pcm, self.output_channels)
        return pcm, rate


def capture_timestamp_ms(frame: Any) -> int | None:
    """The absolute capture time (ms) a frame carries in ``frame.opaque``, if any.

    The media engine puts RTP abs-capture-time there (``{"absolute_capture_timestamp_ms":
    int}``); the local sources put the write() time there for the engine to send.
    """
    opaque = getattr(frame, "opaque", None)
    if isinstance(opaque, dict):
        value = opaque.get("absolute_capture_timestamp_ms")
        if isinstance(value, int):
            return value
    return None


def wall_ms() -> int:
    return int(time.time() * 1000)
