"""Decoded audio out of a track: ``AudioSink`` (pull) and ``AudioStreamSink`` (10 ms frames).

Both mirror the official sinks (sora-sdk-reference.md §1.4): the track's
audio is resampled to ``output_frequency`` (-1: as received, 48 kHz for Opus)
and then remixed to ``output_channels`` (0: as received; to mono = average,
from mono = copies, as libwebrtc's ``RemixFrame``). Resampling is
libswresample through PyAV.

- :class:`AudioSink` buffers samples; ``await sink.read(frames, timeout)``
  returns them with the official ``read`` semantics, and ``read_nowait`` is
  the same without waiting, safe from any thread (e.g. a sounddevice output
  callback).
- :class:`AudioStreamSink` cuts the audio into 10 ms
  :class:`~sora_async.frames.AudioFrame` objects: ``async for frame in sink``
  and the ``frame`` event (``sink.on_frame = handler`` or ``sink.on("frame", handler)``).

Buffers are bounded (``max_buffer_ms``, ``capacity``): a reader that falls
behind loses the oldest audio, never memory. A background task drains the
track as soon as audio is decoded (aiortc's own queue is unbounded).

Example::

    sink = AudioSink(track, output_frequency=16000, output_channels=1)
    while True:
        ok, pcm = await sink.read(1600)      # 100 ms, int16 (1600, 1)
        if not ok and sink.ended:
            break
"""

# Waits take an explicit timeout and report it (False/None) instead of raising,
# like the official read(frames, timeout).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from typing import Any, Self

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError

from ._media import (
    Changed,
    FrameEmitter,
    PcmConverter,
    capture_timestamp_ms,
    running_loop,
    spawn,
)
from .frames import AudioFrame

logger = logging.getLogger("sora_async")


class _AudioPump:
    """Reads a track in a task and hands int16 PCM to ``_deliver``."""

    def __init__(self, track: Any, output_frequency: int, output_channels: int, owner: str):
        if not callable(getattr(track, "recv", None)):
            raise TypeError(f"{owner}: expected a track with recv(), got {type(track).__name__}")
        self._converter = PcmConverter(output_frequency, output_channels, owner=owner)
        loop = running_loop(owner)
        self.track = track
        self.output_frequency = output_frequency
        self.output_channels = output_channels
        self._owner = owner
        self._changed = Changed()
        self._done = False
        self._untap: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None
        tap = getattr(track, "_tap", None)
        if callable(tap):
            # A RemoteTrack hands each frame over as it is decoded: no task wake-up per
            # frame (with many connections in a process, that was a good part of the loop).
            loop.call_soon(self._start_tap, tap)
        else:
            self._task = spawn(loop, self._pump(), f"{owner} pump")

    def _start_tap(self, tap: Callable[..., Callable[[], None]]) -> None:
        if not self._done:  # not closed meanwhile
            # Tell the track what we convert to: its decoder then produces it where it
            # can (libopus decodes straight to 16 kHz mono, e.g.), and the converter
            # below has nothing left to do. -1/0 (as received) is Opus's 48 kHz stereo.
            rate = self.output_frequency if self.output_frequency != -1 else 48000
            channels = self.output_channels or 2
            self._untap = tap(self._tapped_frame, self._tapped_end, audio_format=(rate, channels))

    def _take(self, frame: Any) -> None:
        """Convert one frame from the track and deliver it (conversion errors raise)."""
        if not isinstance(frame, av.AudioFrame):
            logger.warning("%s: ignoring %s from the track", self._owner, type(frame).__name__)
            return
        pcm, rate = self._converter.convert(frame)
        if len(pcm):
            self._deliver(pcm, rate, capture_timestamp_ms(frame))

    def _tapped_frame(self, frame: Any) -> None:
        if self._done:
            return
        try:
            self._take(frame)
        except Exception:
            logger.exception("%s: converting the track's audio failed", self._owner)

    def _tapped_end(self) -> None:
        if not self._done:
            self._end()

    def _end(self) -> None:
        self._done = True
        self._changed.notify()
        self._track_ended()

    async def _pump(self) -> None:
        try:
            while True:
                self._take(await self.track.recv())
        except MediaStreamError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s: reading the track failed", self._owner)
        finally:
            self._end()

    def _deliver(self, pcm: np.ndarray, rate: int, ts_ms: int | None) -> None:
        raise NotImplementedError

    def _track_ended(self) -> None:
        pass

    async def close(self) -> None:
        """Stop reading the track (the track itself is not stopped)."""
        untap, self._untap = self._untap, None
        if untap is not None:
            untap()
        if self._task is None:
            self._tapped_end()
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._done = True
        self._changed.notify()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class AudioSink(_AudioPump):
    """Pull-style buffer of a track's audio (the official ``SoraAudioSink``).

    Args:
        track: a :class:`~sora_async.RemoteTrack`, an aiortc ``MediaStreamTrack``
            or anything with ``async recv()`` returning ``av.AudioFrame``.
        output_frequency: output rate in Hz, or -1 for the track's own.
        output_channels: output channels, or 0 for the track's own.
        max_buffer_ms: the most audio kept; older samples are dropped first.

    Must be created in a running event loop. ``sample_rate`` and ``channels``
    are None until the first audio arrived. If the track's format changes
    (only possible with -1/0), buffered audio of the old format is dropped.
    """

    def __init__(
        self,
        track: Any,
        output_frequency: int = -1,
        output_channels: int = 0,
        *,
        max_buffer_ms: int = 10_000,
    ) -> None:
        if isinstance(max_buffer_ms, bool) or not isinstance(max_buffer_ms, int | float):
            raise TypeError("AudioSink: max_buffer_ms must be a number")
        if max_buffer_ms < 10:
            raise ValueError("AudioSink: max_buffer_ms must be >= 10")
        self.max_buffer_ms = max_buffer_ms
        self._lock = threading.Lock()
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._buffered = 0  # samples per channel
        self.sample_rate: int | None = None
        self.channels: int | None = None
        self.samples_dropped = 0
        super().__init__(track, output_frequency, output_channels, "AudioSink")

    @property
    def ended(self) -> bool:
        """True once the track ended (or :meth:`close`) and the buffer is empty."""
        return self._done and self._buffered == 0

    @property
    def buffered(self) -> int:
        """Samples per channel buffered."""
        return self._buffered

    def _deliver(self, pcm: np.ndarray, rate: int, ts_ms: int | None) -> None:
        with self._lock:
            if (rate, pcm.shape[1]) != (self.sample_rate, self.channels):
                self.samples_dropped += self._buffered
                self._chunks.clear()
                self._buffered = 0
                self.sample_rate, self.channels = rate, int(pcm.shape[1])
            self._chunks.append(pcm)
            self._buffered += len(pcm)
            limit = int(self.max_buffer_ms * rate / 1000)
            while self._buffered > limit:
                excess = self._buffered - limit
                head = self._chunks[0]
                if len(head) <= excess:
                    self._chunks.popleft()
                    self._buffered -= len(head)
                    self.samples_dropped += len(head)
                else:
                    self._chunks[0] = head[excess:]
                    self._buffered -= excess
                    self.samples_dropped += excess
        self._changed.notify()

    async def read(self, frames: int = 0, timeout: float = 1.0) -> tuple[bool, np.ndarray | None]:
        """Read buffered audio, as the official ``SoraAudioSink.read``.

        - ``frames=0``: everything buffered, at once; ``(False, None)`` when empty.
        - ``frames>0``: wait up to ``timeout`` seconds until ``frames`` samples
          per channel are buffered and return exactly those as int16
          ``(frames, channels)``; ``(False, None)`` on timeout (nothing is
          consumed). Once the track ended, the read that finds fewer than
          ``frames`` left returns that tail (fewer rows, so no audio is lost)
          and :attr:`ended` becomes True; later reads return ``(False, None)``
          at once.
        """
        frames, timeout = _read_arguments(frames, timeout)
        if frames > 0:
            await self._changed.wait_for(lambda: self._buffered >= frames or self._done, timeout)
        return self.read_nowait(frames)

    def read_nowait(self, frames: int = 0) -> tuple[bool, np.ndarray | None]:
        """:meth:`read` without waiting; thread-safe."""
        frames, _ = _read_arguments(frames, 0.0)
        with self._lock:
            if self._buffered == 0 or self.channels is None:
                return False, None
            want = self._buffered if frames == 0 else frames
            if self._buffered < want:
                if not self._done:
                    return False, None
                # The track ended: hand out the tail rather than keep it forever
                # (a reader looping on read(n) until ``ended`` would spin).
                want = self._buffered
            parts: list[np.ndarray] = []
            got = 0
            while got < want:
                head = self._chunks.popleft()
                take = min(len(head), want - got)
                parts.append(head[:take])
                if take < len(head):
                    self._chunks.appendleft(head[take:])
                got += take
            self._buffered -= want
        out = parts[0].copy() if len(parts) == 1 else np.concatenate(parts)
        return True, out

    def __repr__(self) -> str:
        return (
            f"AudioSink(output_frequency={self.output_frequency}, "
            f"output_channels={self.output_channels}, buffered={self._buffered})"
        )


def _read_arguments(frames: Any, timeout: Any) -> tuple[int, float]:
    if isinstance(frames, bool) or not isinstance(frames, int | np.integer):
        raise TypeError("read: frames must be an int")
    if frames < 0:
        raise ValueError("read: frames must be >= 0")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError("read: timeout must be a number of seconds")
    if timeout < 0 or timeout != timeout:
        raise ValueError("read: timeout must be >= 0")
    return int(frames), float(timeout)


class AudioStreamSink(_AudioPump, FrameEmitter):
    """A track's audio as 10 ms :class:`~sora_async.frames.AudioFrame` objects
    (the official ``SoraAudioStreamSink``).

    Args:
        track, output_frequency, output_channels: as :class:`AudioSink`.
        capacity: frames kept for the iterator and for each busy coroutine
            handler (default 100 = 1 s); the oldest are dropped first.

    ``async for frame in sink`` ends with the track. Events: ``frame(AudioFrame)``
    for every 10 ms (plain handlers run on the event loop: keep them short),
    ``ended()``. ``frames_dropped`` counts frames the iterator never got.
    """

    def __init__(
        self,
        track: Any,
        output_frequency: int = -1,
        output_channels: int = 0,
        *,
        capacity: int = 100,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"AudioStreamSink: capacity must be an int >= 1, got {capacity!r}")
        FrameEmitter.__init__(self, backlog=capacity)
        self.capacity = capacity
        self._frames: collections.deque[AudioFrame] = collections.deque(maxlen=capacity)
        self._rest: np.ndarray | None = None
        self._rest_rate = 0
        self.frames_dropped = 0
        _AudioPump.__init__(self, track, output_frequency, output_channels, "AudioStreamSink")

    @property
    def ended(self) -> bool:
        """True once the track ended (or :meth:`close`) and every queued frame was taken."""
        return self._done and not self._frames

    def _deliver(self, pcm: np.ndarray, rate: int, ts_ms: int | None) -> None:
        rest = self._rest
        if (
            rest is not None
            and len(rest)
            and (rate, pcm.shape[1])
            == (
                self._rest_rate,
                rest.shape[1],
            )
        ):
            pcm = np.concatenate([rest, pcm])
            if ts_ms is not None:
                ts_ms -= len(rest) * 1000 // rate
        per_frame = rate // 100
        whole = len(pcm) - len(pcm) % per_frame
        listening = bool(self.listeners("frame"))
        for offset in range(0, whole, per_frame):
            chunk = np.array(pcm[offset : offset + per_frame])  # own copy: frames outlive pcm
            frame_ts = None if ts_ms is None else ts_ms + offset * 1000 // rate
            frame = AudioFrame._wrap(chunk, rate, frame_ts)
            if len(self._frames) == self.capacity:
                self.frames_dropped += 1
            self._frames.append(frame)
            if listening:
                self.emit("frame", frame)
        self._rest = pcm[whole:].copy()
        self._rest_rate = rate
        if whole:
            self._changed.notify()

    def _track_ended(self) -> None:
        self.emit("ended")

    def __aiter__(self) -> AudioStreamSink:
        return self

    async def __anext__(self) -> AudioFrame:
        frame = await self.get()
        if frame is None:
            raise StopAsyncIteration
        return frame

    async def get(self, timeout: float | None = None) -> AudioFrame | None:
        """The next 10 ms frame; None once the track ended or on timeout."""
        await self._changed.wait_for(lambda: bool(self._frames) or self._done, timeout)
        return self._frames.popleft() if self._frames else None

    def get_nowait(self) -> AudioFrame | None:
        """The next queued frame without waiting, or None."""
        return self._frames.popleft() if self._frames else None

    def __repr__(self) -> str:
        return (
            f"AudioStreamSink(output_frequency={self.output_frequency}, "
            f"output_channels={self.output_channels}, queued={len(self._frames)})"
        )
