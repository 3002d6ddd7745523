"""Encoded transform: ``SoraAudioFrameTransformer``, ``SoraVideoFrameTransformer`` and their frames.

The official style: set ``transformer.on_transform = callback``; the callback
gets each encoded frame (a ``SoraTransformable*Frame``) on the transformer's
own thread, may change its bytes with ``set_data``, and hands it back with
``transformer.enqueue(frame)`` (possibly later, from any thread). A frame
never enqueued stops that stream, as in the official SDK;
``start_short_circuiting()`` lets frames bypass the callback from then on.

This runs on the core's encoded-frame hook: an ``async`` callable that gets
the core's :class:`~sora_async.codecs.base.EncodedFrame` and returns it (or
None to drop it). The receive side uses ``RemoteTrack.set_frame_transformer``
and the send side the ``audio_frame_transformer``/``video_frame_transformer``
keywords of :class:`sora_async.Connection`; where the core in use has no such
hook (the encoded-transform issue 7 is not finished),
:func:`receive_transform_supported` / :func:`send_transform_supported` say so
and the compat layer raises ``NotImplementedError`` where frames would flow.
The core awaits one frame at a time, so a callback that holds several frames
before enqueueing them stalls the stream (the official SDK allows that).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ._enums import SoraTransformableAudioFrameType, SoraTransformableFrameDirection
from ._runtime import Dispatcher, call_user

logger = logging.getLogger("sora_async.compat")

_AUDIO_CODECS = {"OPUS": "audio/opus"}


class SoraTransformableFrame:
    """An encoded frame in flight: its bytes and RTP facts.

    ``get_data()`` is a read-only uint8 view of the bytes; ``set_data(array)``
    replaces them. ``mine_type`` (sic, the official name) and ``mime_type``
    give the codec's MIME type (``"video/VP8"``, ``"audio/opus"``).
    """

    __slots__ = ("_direction", "_done", "_encoded", "_loop")
    _direction: SoraTransformableFrameDirection
    _done: Any
    _encoded: Any
    _loop: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"{type(self).__name__}: no constructor defined!")

    @classmethod
    def _of(
        cls, encoded: Any, direction: SoraTransformableFrameDirection, loop: Any, done: Any
    ) -> Any:
        self = cls.__new__(cls)
        self._encoded = encoded
        self._direction = direction
        self._loop = loop
        self._done = done
        return self

    def get_data(self) -> np.ndarray:
        """The encoded bytes, read-only uint8 ``(n,)``."""
        return np.frombuffer(self._encoded.data, dtype=np.uint8)

    def set_data(self, data: Any, /) -> None:
        """Replace the encoded bytes (a uint8 ndarray, or bytes-like)."""
        if isinstance(data, np.ndarray):
            if data.dtype != np.uint8 or data.ndim != 1:
                raise TypeError("set_data: expected a 1-D uint8 ndarray")
            self._encoded.data = data.tobytes()
        elif isinstance(data, bytes | bytearray | memoryview):
            self._encoded.data = bytes(data)
        else:
            raise TypeError(f"set_data: expected a uint8 ndarray, got {type(data).__name__}")

    @property
    def payload_type(self) -> int:
        return int(self._encoded.payload_type or 0)

    @property
    def ssrc(self) -> int:
        return int(self._encoded.ssrc or 0)

    @property
    def rtp_timestamp(self) -> int:
        return int(self._encoded.timestamp)

    @rtp_timestamp.setter
    def rtp_timestamp(self, value: int, /) -> None:
        self._encoded.timestamp = int(value) & 0xFFFFFFFF

    @property
    def direction(self) -> SoraTransformableFrameDirection:
        return self._direction

    @property
    def mime_type(self) -> str:
        codec = str(self._encoded.codec)
        return _AUDIO_CODECS.get(codec.upper(), f"video/{codec}")

    @property
    def mine_type(self) -> str:
        """The official (misspelt) name of :attr:`mime_type`."""
        return self.mime_type

    @property
    def rid(self) -> str | None:
        """The simulcast layer's rid, when the frame belongs to one (not official)."""
        rid = self._encoded.codec_specific.get("rid")
        return str(rid) if rid else None


class SoraTransformableAudioFrame(SoraTransformableFrame):
    """An encoded audio frame (one Opus packet)."""

    __slots__ = ()

    @property
    def contributing_sources(self) -> np.ndarray:
        return np.zeros(0, dtype=np.uint32)

    @property
    def sequence_number(self) -> int | None:
        return None

    @property
    def absolute_capture_timestamp(self) -> int | None:
        value = self._encoded.codec_specific.get("absolute_capture_timestamp")
        return int(value) if value is not None else None

    @property
    def type(self) -> SoraTransformableAudioFrameType:
        if not self._encoded.data:
            return SoraTransformableAudioFrameType.EMPTY
        return SoraTransformableAudioFrameType.SPEECH

    @property
    def audio_level(self) -> int | None:
        level = self._encoded.audio_level
        return int(level) if level is not None else None

    @property
    def receive_time(self) -> int | None:
        value = self._encoded.codec_specific.get("receive_time")
        return int(value) if value is not None else None


class SoraTransformableVideoFrame(SoraTransformableFrame):
    """An encoded video frame."""

    __slots__ = ()

    @property
    def is_key_frame(self) -> bool:
        return bool(self._encoded.is_keyframe)

    @property
    def frame_id(self) -> int | None:
        value = self._encoded.frame_id
        return int(value) if value is not None else None

    @property
    def frame_dependencies(self) -> np.ndarray:
        array = np.array(self._encoded.frame_dependencies, dtype=np.int64)
        array.flags.writeable = False
        return array

    @property
    def width(self) -> int:
        return int(self._encoded.width)

    @property
    def height(self) -> int:
        return int(self._encoded.height)

    @property
    def spatial_index(self) -> int:
        return int(self._encoded.spatial_index)

    @property
    def temporal_index(self) -> int:
        return int(self._encoded.temporal_index)

    @property
    def contributing_sources(self) -> np.ndarray:
        return np.zeros(0, dtype=np.uint32)


class SoraFrameTransformer:
    """Base of the transformers: ``enqueue(frame)`` and ``start_short_circuiting()``."""

    _frame_class: type[SoraTransformableFrame] = SoraTransformableFrame
    _kind = ""

    def __init__(self) -> None:
        if type(self) is SoraFrameTransformer:
            raise TypeError("SoraFrameTransformer: no constructor defined!")
        self._on_transform: Callable[..., Any] | None = None
        self._short_circuit = False
        self._lock = threading.Lock()
        self._dispatcher: Dispatcher | None = None
        self._waiting: set[asyncio.Future[Any]] = set()

    @property
    def on_transform(self) -> Callable[..., Any] | None:
        """Called with each encoded frame; hand it back with :meth:`enqueue`."""
        return self._on_transform

    @on_transform.setter
    def on_transform(self, callback: Callable[..., Any] | None) -> None:
        if callback is not None and not callable(callback):
            raise TypeError(f"on_transform must be callable, got {type(callback).__name__}")
        self._on_transform = callback

    def enqueue(self, frame: SoraTransformableFrame, /) -> None:
        """Give ``frame`` back to the media pipeline (from any thread).

        A frame enqueued twice, or after its connection ended, is ignored.
        """
        if not isinstance(frame, SoraTransformableFrame):
            raise TypeError(f"enqueue: expected a transformable frame, got {type(frame).__name__}")
        done, frame._done = frame._done, None
        if done is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone: dropped quietly
            frame._loop.call_soon_threadsafe(_resolve, done, frame._encoded)

    def start_short_circuiting(self) -> None:
        """Let frames bypass ``on_transform`` from now on (frames waiting go on unchanged)."""
        self._short_circuit = True
        with self._lock:
            waiting = list(self._waiting)
        for future in waiting:
            with contextlib.suppress(RuntimeError):
                future.get_loop().call_soon_threadsafe(_resolve, future, _UNCHANGED)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            dispatcher, self._dispatcher = self._dispatcher, None
            if dispatcher is not None:
                dispatcher.close()

    # -- the core hook -----------------------------------------------------------------

    async def __call__(self, encoded: Any) -> Any:
        """The send-side hook (``Connection(audio_frame_transformer=...)``)."""
        return await self._transform(encoded, SoraTransformableFrameDirection.SENDER)

    def _receiver_hook(self, kind: str) -> Callable[[Any], Any]:
        if self._kind and kind != self._kind:
            raise TypeError(f"a {type(self).__name__} cannot transform a {kind} track")
        receiver = SoraTransformableFrameDirection.RECEIVER
        return functools.partial(self._transform, direction=receiver)

    async def _transform(self, encoded: Any, direction: SoraTransformableFrameDirection) -> Any:
        callback = self._on_transform
        if self._short_circuit or callback is None:
            return encoded
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        frame = self._frame_class._of(encoded, direction, loop, done)
        with self._lock:
            self._waiting.add(done)
            if self._dispatcher is None:
                self._dispatcher = Dispatcher(f"sora-compat-{type(self).__name__}")
            dispatcher = self._dispatcher
        dispatcher.post(call_user, "on_transform", callback, frame)
        try:
            result = await done
        finally:
            with self._lock:
                self._waiting.discard(done)
        return encoded if result is _UNCHANGED else result


_UNCHANGED: Any = object()


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class SoraAudioFrameTransformer(SoraFrameTransformer):
    """Encoded-transform of audio frames (``on_transform(SoraTransformableAudioFrame)``)."""

    _frame_class = SoraTransformableAudioFrame
    _kind = "audio"

    def __init__(self) -> None:
        super().__init__()

    def __del__(self) -> None:
        super().__del__()


class SoraVideoFrameTransformer(SoraFrameTransformer):
    """Encoded-transform of video frames (``on_transform(SoraTransformableVideoFrame)``)."""

    _frame_class = SoraTransformableVideoFrame
    _kind = "video"

    def __init__(self) -> None:
        super().__init__()

    def __del__(self) -> None:
        super().__del__()


# -- what the core supports -----------------------------------------------------------------


def receive_transform_supported(core_track: Any) -> bool:
    """Whether the core's remote track takes an encoded-frame hook."""
    return callable(getattr(core_track, "set_frame_transformer", None))


@functools.cache
def send_transform_supported() -> bool:
    """Whether :class:`sora_async.Connection` hands ``*_frame_transformer`` to its senders.

    Probed once: the keyword must reach the media engine's options as a hook.
    """
    try:
        from ..options import ConnectionOptions
        from ..rtc import RtcOptions  # type: ignore[attr-defined,unused-ignore]

        async def probe(frame: Any) -> Any:
            return frame

        options = ConnectionOptions.from_arguments(
            ["ws://127.0.0.1:9/signaling"],
            "sendonly",
            "probe",
            audio_frame_transformer=probe,
            video_frame_transformer=probe,
        )
        rtc = RtcOptions.from_connection_options(options)
    except Exception:
        return False
    return (
        getattr(rtc, "audio_transform", None) is not None
        and getattr(rtc, "video_transform", None) is not None
    )
