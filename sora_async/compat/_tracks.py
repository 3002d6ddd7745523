"""Tracks and sources: ``SoraTrackInterface``, ``SoraMediaTrack`` and the two sources.

Sources wrap the core's :class:`~sora_async.AudioSource` /
:class:`~sora_async.VideoSource` (``.track``), which accept writes from any
thread and never block. ``on_data`` / ``on_captured`` take every official
overload, including the raw-pointer form of ``on_data`` (the address of
``samples_per_channel * channels`` int16 samples, read with ``ctypes``).
"""

from __future__ import annotations

import ctypes
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np

from ..audio_source import AudioSource
from ..video_source import VideoSource
from ._enums import SoraTrackState

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._transform import SoraFrameTransformer

_MISSING: Any = object()


def _no_constructor(cls: type) -> TypeError:
    return TypeError(f"{cls.__module__}.{cls.__qualname__}: no constructor defined!")


class SoraTrackInterface:
    """What every track has: ``kind``, ``id``, ``enabled``, ``state``, ``set_enabled()``.

    Not constructible: tracks come from ``Sora.create_audio_source()``,
    ``Sora.create_video_source()`` and ``on_track``.
    """

    _track: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise _no_constructor(type(self))

    @property
    def track(self) -> Any:
        """The core track behind this one (an aiortc ``MediaStreamTrack``)."""
        return self._track

    @property
    def kind(self) -> str:
        """``"audio"`` or ``"video"``."""
        return str(self._track.kind)

    @property
    def id(self) -> str:
        """The track id."""
        return str(self._track.id)

    @property
    def enabled(self) -> bool:
        """False after ``set_enabled(False)``."""
        return bool(getattr(self._track, "enabled", True))

    @property
    def state(self) -> SoraTrackState:
        """``LIVE`` or ``ENDED``."""
        state = getattr(self._track, "state", None)
        if state is None:
            return SoraTrackState.LIVE if self._track.readyState == "live" else SoraTrackState.ENDED
        return SoraTrackState(int(state))

    def set_enabled(self, enable: bool) -> bool:
        """Enable or disable the track (a disabled local track sends black
        frames / silence); returns True."""
        self._track.set_enabled(bool(enable))
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} kind={self.kind!r} id={self.id!r}>"


class SoraMediaTrack(SoraTrackInterface):
    """A remote track, as passed to ``on_track``.

    ``stream_id`` is the sending connection's id. Give it to
    ``SoraVideoSink`` / ``SoraAudioSink`` / ``SoraAudioStreamSink`` to get its
    media, and keep that sink referenced.
    """

    _runtime: Runtime
    _enabled: bool

    @classmethod
    def _create(cls, track: Any, runtime: Runtime) -> SoraMediaTrack:
        self = cls.__new__(cls)
        self._track = track
        self._runtime = runtime
        self._enabled = True
        return self

    @property
    def stream_id(self) -> str:
        """The stream id Sora gave this track: the sending connection's ``connection_id``."""
        return str(self._track.stream_id or "")

    @property
    def enabled(self) -> bool:
        return bool(getattr(self._track, "enabled", self._enabled))

    def set_enabled(self, enable: bool) -> bool:
        """While disabled, no media is delivered to this track's sinks; returns True."""
        self._enabled = bool(enable)
        setter = getattr(self._track, "set_enabled", None)
        if setter is not None:
            self._runtime.call_soon(setter, self._enabled)
        return True

    def set_frame_transformer(self, transformer: SoraFrameTransformer, /) -> None:
        """Run ``transformer`` on every encoded frame of this track before it is decoded.

        Raises ``NotImplementedError`` when the core media engine has no
        receive-side encoded-frame hook (``sora_async`` issue 7).
        """
        from ._transform import SoraFrameTransformer, receive_transform_supported

        if not isinstance(transformer, SoraFrameTransformer):
            raise TypeError(
                "set_frame_transformer: expected a SoraAudioFrameTransformer or "
                f"SoraVideoFrameTransformer, got {type(transformer).__name__}"
            )
        if not receive_transform_supported(self._track):
            raise NotImplementedError(
                "SoraMediaTrack.set_frame_transformer: this sora_async core has no receive-side "
                "encoded-frame hook (RemoteTrack.set_frame_transformer, issue 7)"
            )
        transformer._receiver_hook(self.kind)  # TypeError for the other kind, here
        self._runtime.call(lambda: self._track.set_frame_transformer(transformer))


class SoraAudioSource(SoraTrackInterface):
    """A local audio track fed with int16 PCM (``Sora.create_audio_source(channels, sample_rate)``).

    Example::

        source = sora.create_audio_source(1, 16000)
        source.on_data(np.zeros((160, 1), np.int16))      # 10 ms of silence
    """

    _track: AudioSource

    @classmethod
    def _create(cls, channels: int, sample_rate: int) -> SoraAudioSource:
        self = cls.__new__(cls)
        self._track = AudioSource(channels, sample_rate)
        return self

    @property
    def channels(self) -> int:
        return self._track.channels

    @property
    def sample_rate(self) -> int:
        return self._track.sample_rate

    def on_data(
        self,
        data: Any = _MISSING,
        samples_per_channel: Any = _MISSING,
        timestamp: float | None = None,
        *,
        ndarray: Any = _MISSING,
    ) -> None:
        """Queue audio; thread-safe and non-blocking. The official overloads:

        - ``on_data(ndarray)`` / ``on_data(ndarray, timestamp)``: int16
          ``(samples_per_channel, channels)``;
        - ``on_data(data, samples_per_channel)`` / ``on_data(data,
          samples_per_channel, timestamp)``: ``data`` is the address (int) of
          ``samples_per_channel * channels`` interleaved int16 samples, copied
          at once.

        ``timestamp``: capture time in epoch seconds (``time.time()``). Audio
        is cut into 10 ms chunks; a partial chunk waits for the next call and
        is joined to it when the two are continuous (±2 ms).
        """
        if ndarray is not _MISSING:
            if data is not _MISSING:
                raise TypeError("on_data: give either data or ndarray, not both")
            if samples_per_channel is not _MISSING:
                # on_data(ndarray=a, <timestamp as second positional>) is not an overload
                raise TypeError("on_data(ndarray=...): the second argument is timestamp")
            pcm, ts = ndarray, timestamp
        elif data is _MISSING:
            raise TypeError("on_data() missing its data (an int16 ndarray or a raw address)")
        elif isinstance(data, np.ndarray):
            pcm = data
            if samples_per_channel is not _MISSING:
                if timestamp is not None:
                    raise TypeError("on_data(ndarray, timestamp) takes two arguments")
                ts = samples_per_channel
            else:
                ts = timestamp
        elif isinstance(data, numbers.Integral) and not isinstance(data, bool):
            if samples_per_channel is _MISSING:
                raise TypeError("on_data(data: int, samples_per_channel: int[, timestamp])")
            pcm = self._from_address(int(data), samples_per_channel)
            ts = timestamp
        else:
            raise TypeError(
                f"on_data: expected an int16 numpy.ndarray or a raw address, got "
                f"{type(data).__name__}"
            )
        if ts is not None:
            if isinstance(ts, bool) or not isinstance(ts, numbers.Real):
                raise TypeError(f"on_data: timestamp must be float seconds, got {ts!r}")
            ts = float(ts)
        if isinstance(pcm, np.ndarray) and pcm.dtype != np.int16:
            raise TypeError(f"on_data: expected int16 samples, got {pcm.dtype}")
        self._track.write(pcm, ts)

    def _from_address(self, address: int, samples_per_channel: Any) -> np.ndarray:
        if isinstance(samples_per_channel, bool) or not isinstance(
            samples_per_channel, numbers.Integral
        ):
            raise TypeError("on_data: samples_per_channel must be an int")
        samples = int(samples_per_channel)
        if samples < 0:
            raise ValueError("on_data: samples_per_channel must be >= 0")
        if address == 0:
            raise ValueError("on_data: data is a null pointer")
        channels = self._track.channels
        raw = ctypes.string_at(address, samples * channels * 2)
        return np.frombuffer(raw, dtype=np.int16).reshape(samples, channels)


class SoraVideoSource(SoraTrackInterface):
    """A local video track fed with BGR frames (``Sora.create_video_source()``).

    Example::

        source = sora.create_video_source()
        source.on_captured(np.zeros((240, 320, 3), np.uint8))
    """

    _track: VideoSource

    @classmethod
    def _create(cls) -> SoraVideoSource:
        self = cls.__new__(cls)
        self._track = VideoSource()
        return self

    def on_captured(
        self,
        ndarray: np.ndarray,
        timestamp: float | int | None = None,
        timestamp_us: int | None = None,
    ) -> None:
        """Queue a BGR uint8 ``(height, width, 3)`` frame; thread-safe, never blocks.

        Overloads: ``on_captured(ndarray)`` (stamped now),
        ``on_captured(ndarray, timestamp: float)`` (seconds) and
        ``on_captured(ndarray, timestamp_us: int)`` (microseconds).
        If the encoder is behind, the newest frame wins.
        """
        if timestamp is not None and timestamp_us is not None:
            raise TypeError("on_captured: give timestamp or timestamp_us, not both")
        stamp: float | int | None
        if timestamp_us is not None:
            if isinstance(timestamp_us, bool) or not isinstance(timestamp_us, numbers.Integral):
                raise TypeError("on_captured: timestamp_us must be an int")
            stamp = int(timestamp_us)
        elif timestamp is None:
            stamp = None
        elif isinstance(timestamp, bool) or not isinstance(timestamp, numbers.Real):
            raise TypeError(f"on_captured: timestamp must be float seconds, got {timestamp!r}")
        elif isinstance(timestamp, numbers.Integral):
            stamp = int(timestamp)  # the int overload: microseconds
        else:
            stamp = float(timestamp)
        self._track.write(ndarray, stamp)
