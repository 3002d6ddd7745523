"""Sinks and frames: ``SoraAudioSink``, ``SoraAudioStreamSink``, ``SoraVideoSink``, ``SoraVAD``.

Each sink runs the core sink (:class:`~sora_async.AudioSink`,
:class:`~sora_async.AudioStreamSink`, :class:`~sora_async.VideoSink`) on its
track's event loop and calls its ``on_*`` callbacks on a thread of its own
(never the event loop, never the caller's), as the official sinks call them
from libwebrtc's threads:

- video: the newest frame wins when the callback is slower than the stream;
- audio stream: frames queue up to 5 s, then the oldest are dropped.

``SoraAudioSink.read(frames, timeout)`` waits on a condition variable, so it
holds nothing other threads need and Ctrl-C interrupts it.

A sink stops when it is garbage-collected (keep it referenced, as with the
official SDK) or when its track ends.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .._media import spawn
from ..audio_sink import AudioSink, AudioStreamSink
from ..frames import AudioFrame, VideoFrame
from ..vad import VAD
from ..video_sink import VideoSink
from ._runtime import Dispatcher, Runtime, call_user
from ._tracks import SoraMediaTrack, SoraTrackInterface

logger = logging.getLogger("sora_async.compat")

#: Audio frames (10 ms each) queued for a slow ``on_frame`` before the oldest are dropped.
_AUDIO_FRAME_BACKLOG = 500


def _remote_track(track: Any, owner: str) -> SoraMediaTrack:
    if isinstance(track, SoraMediaTrack):
        return track
    if isinstance(track, SoraTrackInterface):
        raise TypeError(
            f"{owner}: only remote tracks (the SoraMediaTrack of on_track) can be sunk here; "
            "a local source's media goes to the encoder"
        )
    raise TypeError(f"{owner}: expected a SoraMediaTrack, got {type(track).__name__}")


def _int(value: Any, name: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an int, got {value!r}")
    return int(value)


class _Callbacks:
    """Callbacks of one sink and the thread that runs them (created on first use).

    Shared by the compat sink (the application's object) and the core sink
    (referenced by the event loop), so that the application's object can be
    garbage-collected while the core sink still runs.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.callbacks: dict[str, Callable[..., Any] | None] = {}
        self._dispatcher: Dispatcher | None = None
        self._lock = threading.Lock()
        self.closed = False
        self.finished = False
        self.dropped = 0
        self._pending = 0
        self._latest: Any = None
        self._latest_scheduled = False

    def get(self, name: str) -> Callable[..., Any] | None:
        return self.callbacks.get(name)

    def set(self, name: str, callback: Callable[..., Any] | None) -> None:
        if callback is not None and not callable(callback):
            raise TypeError(f"{self.owner}.{name} must be callable, got {type(callback).__name__}")
        self.callbacks[name] = callback

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            if self.finished:
                return
            if self._dispatcher is None:
                self._dispatcher = Dispatcher(f"sora-compat-{self.owner}")
            dispatcher = self._dispatcher
        dispatcher.post(fn, *args)

    def call(self, name: str, *args: Any) -> None:
        """Call callback ``name`` on the sink thread (in order, never dropped)."""
        if self.callbacks.get(name) is not None:
            self._post(self._run, name, args)

    def call_bounded(self, name: str, *args: Any) -> None:
        """Like :meth:`call`, dropping when more than the backlog is waiting."""
        if self.callbacks.get(name) is None:
            return
        with self._lock:
            if self._pending >= _AUDIO_FRAME_BACKLOG:
                self.dropped += 1
                return
            self._pending += 1
        self._post(self._run_counted, name, args)

    def call_latest(self, name: str, arg: Any) -> None:
        """Call callback ``name`` with the newest ``arg`` only (older ones waiting are dropped)."""
        if self.callbacks.get(name) is None:
            return
        with self._lock:
            if self._latest is not None:
                self.dropped += 1
            self._latest = arg
            if self._latest_scheduled:
                return
            self._latest_scheduled = True
        self._post(self._run_latest, name)

    def _run(self, name: str, args: tuple[Any, ...]) -> None:
        callback = self.callbacks.get(name)
        if callback is not None and not self.closed:
            call_user(f"{self.owner}.{name}", callback, *args)

    def _run_counted(self, name: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._pending -= 1
        self._run(name, args)

    def _run_latest(self, name: str) -> None:
        with self._lock:
            arg, self._latest = self._latest, None
            self._latest_scheduled = False
        if arg is not None:
            self._run(name, (arg,))

    def finish(self) -> None:
        """The track ended: run the calls already queued, then end the thread."""
        with self._lock:
            self.finished = True
            dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None:
            dispatcher.close()

    def close(self) -> None:
        """The sink is gone: drop what is queued and end the thread."""
        self.closed = True
        with self._lock:
            self._latest = None
        self.finish()


class _SinkBase:
    _runtime: Runtime | None
    _core: Any
    _callbacks: _Callbacks

    def _start(self, track: SoraMediaTrack, factory: Callable[[], Any]) -> None:
        runtime = track._runtime
        self._runtime = runtime
        self._core = None
        if runtime.running:
            try:
                self._core = runtime.call(factory)
            except RuntimeError:
                if runtime.running:
                    raise
        if self._core is None:
            logger.info("%s: the track's connection has ended; the sink stays empty", type(self))

    def _close(self) -> None:
        callbacks = getattr(self, "_callbacks", None)
        if callbacks is not None:
            callbacks.close()
        core, self._core = getattr(self, "_core", None), None
        runtime = getattr(self, "_runtime", None)
        if core is not None and runtime is not None:
            loop = runtime.loop
            runtime.call_soon(lambda: spawn(loop, core.close(), "compat sink close"))

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._close()


# -- audio (pull) ------------------------------------------------------------------------


class _ObservedAudioSink(AudioSink):
    """The core sink, also telling the compat sink about new audio and the end."""

    def __init__(self, *args: Any, observer: Callable[[np.ndarray | None, int], None]) -> None:
        self._observer = observer
        super().__init__(*args)

    def _deliver(self, pcm: np.ndarray, rate: int, ts_ms: int | None) -> None:
        super()._deliver(pcm, rate, ts_ms)
        self._observer(pcm, rate)

    def _track_ended(self) -> None:
        super()._track_ended()
        self._observer(None, 0)


class _AudioState:
    """What ``read()`` waits on, fed from the event loop."""

    def __init__(self, callbacks: _Callbacks, enabled: Callable[[], bool]) -> None:
        self.condition = threading.Condition()
        self.ended = False
        self.callbacks = callbacks
        self.enabled = enabled
        self.format: tuple[int, int] | None = None

    def observe(self, pcm: np.ndarray | None, rate: int) -> None:
        with self.condition:
            if pcm is None:
                self.ended = True
            self.condition.notify_all()
        if pcm is None:
            self.callbacks.finish()
        if pcm is not None and self.enabled():
            channels = int(pcm.shape[1])
            if self.format != (rate, channels):
                self.format = (rate, channels)
                self.callbacks.call("on_format", rate, channels)
            self.callbacks.call("on_data", pcm)


class SoraAudioSinkImpl(_SinkBase):
    """Pull-style buffer of a remote track's audio.

    Args:
        track: the ``SoraMediaTrack`` of ``on_track``.
        output_frequency: output rate in Hz, or -1 for the track's own (48 kHz).
        output_channels: output channels, or 0 for the track's own.

    Example::

        sink = SoraAudioSink(track, 16000, 1)
        ok, pcm = sink.read(1600, timeout=1.0)   # 100 ms, int16 (1600, 1)
    """

    def __init__(
        self, track: SoraTrackInterface, output_frequency: int = -1, output_channels: int = 0
    ) -> None:
        owner = type(self).__name__
        remote = _remote_track(track, owner)
        frequency = _int(output_frequency, "output_frequency", owner)
        channels = _int(output_channels, "output_channels", owner)
        self._callbacks = _Callbacks(owner)
        self._state = _AudioState(self._callbacks, lambda: remote.enabled)
        self._track = remote
        core_track = remote._track
        observe = self._state.observe
        self._start(
            remote,
            lambda: _ObservedAudioSink(core_track, frequency, channels, observer=observe),
        )

    def read(self, frames: int = 0, timeout: float = 1) -> tuple[bool, np.ndarray | None]:
        """Take audio from the buffer: ``(True, int16 (n, channels))`` or ``(False, None)``.

        - ``frames=0``: everything buffered, without waiting;
        - ``frames>0``: wait up to ``timeout`` seconds for exactly ``frames``
          samples per channel; ``(False, None)`` on timeout (nothing taken).

        Blocks only this thread; Ctrl-C interrupts it.
        """
        frames = _int(frames, "frames", "read")
        if frames < 0:
            raise ValueError("read: frames must be >= 0")
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
            raise TypeError("read: timeout must be a number of seconds")
        timeout = float(timeout)
        if not timeout >= 0:
            raise ValueError("read: timeout must be >= 0")
        sink: AudioSink | None = self._core
        if sink is None:  # the connection ended before the sink was made
            return False, None
        if frames > 0:
            state = self._state
            deadline = time.monotonic() + timeout
            with state.condition:
                while sink.buffered < frames and not state.ended:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    state.condition.wait(remaining)
        return sink.read_nowait(frames)

    @property
    def on_data(self) -> Callable[[np.ndarray], None] | None:
        """(Deprecated in the official SDK) called with each int16 ``(n, channels)`` chunk."""
        return self._callbacks.get("on_data")

    @on_data.setter
    def on_data(self, callback: Callable[[np.ndarray], None] | None) -> None:
        self._callbacks.set("on_data", callback)

    @property
    def on_format(self) -> Callable[[int, int], None] | None:
        """(Deprecated in the official SDK) called with ``(sample_rate, channels)`` when known."""
        return self._callbacks.get("on_format")

    @on_format.setter
    def on_format(self, callback: Callable[[int, int], None] | None) -> None:
        self._callbacks.set("on_format", callback)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._close()


class SoraAudioSink(SoraAudioSinkImpl):
    """``SoraAudioSinkImpl`` with every argument required (the official wrapper)."""

    def __init__(
        self, track: SoraTrackInterface, output_frequency: int, output_channels: int
    ) -> None:
        super().__init__(track, output_frequency, output_channels)


# -- audio (10 ms frames) ------------------------------------------------------------------


class SoraAudioFrame(AudioFrame):
    """10 ms of int16 audio: ``data()``, ``samples_per_channel``, ``num_channels``,
    ``sample_rate_hz``, ``absolute_capture_timestamp_ms``; picklable."""

    __slots__ = ()

    @classmethod
    def _of(cls, frame: AudioFrame) -> SoraAudioFrame:
        return cls._wrap(frame.data(), frame.sample_rate_hz, frame.absolute_capture_timestamp_ms)  # type: ignore[return-value]


class SoraAudioStreamSinkImpl(_SinkBase):
    """A remote track's audio as 10 ms :class:`SoraAudioFrame` objects, pushed to ``on_frame``.

    Example::

        sink = SoraAudioStreamSink(track, 24000, 1)
        sink.on_frame = lambda frame: print(vad.analyze(frame))
    """

    def __init__(
        self, track: SoraTrackInterface, output_frequency: int = -1, output_channels: int = 0
    ) -> None:
        owner = type(self).__name__
        remote = _remote_track(track, owner)
        frequency = _int(output_frequency, "output_frequency", owner)
        channels = _int(output_channels, "output_channels", owner)
        callbacks = self._callbacks = _Callbacks(owner)
        self._track = remote
        core_track = remote._track

        def on_frame(frame: AudioFrame) -> None:
            if remote.enabled:
                callbacks.call_bounded("on_frame", SoraAudioFrame._of(frame))

        def create() -> AudioStreamSink:
            sink = AudioStreamSink(core_track, frequency, channels)
            sink.on("frame", on_frame)
            sink.on("ended", callbacks.finish)
            return sink

        self._start(remote, create)

    @property
    def on_frame(self) -> Callable[[SoraAudioFrame], None] | None:
        """Called with each 10 ms :class:`SoraAudioFrame`, on this sink's thread."""
        return self._callbacks.get("on_frame")

    @on_frame.setter
    def on_frame(self, callback: Callable[[SoraAudioFrame], None] | None) -> None:
        self._callbacks.set("on_frame", callback)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._close()


class SoraAudioStreamSink(SoraAudioStreamSinkImpl):
    """``SoraAudioStreamSinkImpl`` with every argument required (the official wrapper)."""

    def __init__(
        self, track: SoraTrackInterface, output_frequency: int, output_channels: int
    ) -> None:
        super().__init__(track, output_frequency, output_channels)


# -- video --------------------------------------------------------------------------------


class SoraVideoFrame:
    """One decoded video frame; ``data()`` is BGR uint8 ``(height, width, 3)``."""

    __slots__ = ("_frame",)
    _frame: VideoFrame

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("SoraVideoFrame: no constructor defined!")

    @classmethod
    def _of(cls, frame: VideoFrame) -> SoraVideoFrame:
        self = cls.__new__(cls)
        self._frame = frame
        return self

    def data(self) -> np.ndarray:
        """BGR ``(height, width, 3)`` uint8 (converted once, then cached)."""
        return self._frame.data()

    @property
    def width(self) -> int:
        return self._frame.width

    @property
    def height(self) -> int:
        return self._frame.height

    def __repr__(self) -> str:
        return f"<SoraVideoFrame {self.width}x{self.height}>"


class SoraVideoSinkImpl(_SinkBase):
    """A remote video track's decoded frames, pushed to ``on_frame`` on this sink's thread.

    When the callback is slower than the stream, only the newest frame waits.

    Example::

        sink = SoraVideoSink(track)
        sink.on_frame = lambda frame: frames.put(frame.data())
    """

    def __init__(self, track: SoraTrackInterface, /) -> None:
        owner = type(self).__name__
        remote = _remote_track(track, owner)
        callbacks = self._callbacks = _Callbacks(owner)
        self._track = remote
        core_track = remote._track

        def on_frame(frame: VideoFrame) -> None:
            if remote.enabled:
                callbacks.call_latest("on_frame", SoraVideoFrame._of(frame))

        def create() -> VideoSink:
            sink = VideoSink(core_track)
            sink.on("frame", on_frame)
            sink.on("ended", callbacks.finish)
            return sink

        self._start(remote, create)

    @property
    def on_frame(self) -> Callable[[SoraVideoFrame], None] | None:
        """Called with each decoded :class:`SoraVideoFrame`."""
        return self._callbacks.get("on_frame")

    @on_frame.setter
    def on_frame(self, callback: Callable[[SoraVideoFrame], None] | None) -> None:
        self._callbacks.set("on_frame", callback)

    @property
    def frames_dropped(self) -> int:
        """Frames the callback never saw because a newer one replaced them."""
        return self._callbacks.dropped

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._close()


class SoraVideoSink(SoraVideoSinkImpl):
    """``SoraVideoSinkImpl`` (the official wrapper)."""

    def __init__(self, track: SoraTrackInterface) -> None:
        super().__init__(track)


class SoraVAD(VAD):
    """Voice probability of audio frames: ``analyze(frame) -> float`` in [0, 1].

    As with the official examples, ``> 0.95`` means voice. Feed one stream's
    frames in order (it keeps state).
    """

    def analyze(self, frame: Any) -> float:
        """The voice probability after ``frame`` (a :class:`SoraAudioFrame`)."""
        return super().analyze(frame)
