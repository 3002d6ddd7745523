"""WebRTC Encoded Transform: rewrite encoded audio/video frames on send and receive (issue 7).

Send side: after encoding, before packetizing. Receive side: after
depacketizing, before decoding. Pass transformers to
:class:`~sora_async.Connection` (``audio_frame_transformer=`` /
``video_frame_transformer=``) for what this client sends, and set one on a
remote track (``track.set_frame_transformer(t)``) for what it receives.

Three ways to transform, pick one per transformer:

- a coroutine: ``VideoFrameTransformer(transform)`` where
  ``async def transform(frame) -> frame | None`` (None drops the frame);
- the asyncio stream: ``async for frame in transformer: ...; await transformer.put(frame)``
  (``transformer.drop(frame)`` drops it);
- the official ``sora_sdk`` style: ``transformer.on_transform = callback``; the
  callback runs on the event loop with each frame and hands it back with
  ``transformer.enqueue(frame)``, possibly later and from any thread.

``start_short_circuiting()`` lets frames bypass the transformer from then on.
A transformer with none of the three set passes frames through unchanged.

Example (append ``b"sora"`` on send, strip it on receive)::

    async def mark(frame):
        frame.set_data(bytes(frame.get_data()) + b"sora")
        return frame

    async def strip(frame):
        data = bytes(frame.get_data())
        frame.set_data(data[:-4] if data.endswith(b"sora") else data)
        return frame

    conn = Connection(url, "sendrecv", "room", video_source=camera,
                      video_frame_transformer=VideoFrameTransformer(mark))
    conn.on("track", lambda track: track.set_frame_transformer(strip))

Semantics (as libwebrtc's frame-transformer delegates): each stream (an
m-section's simulcast layer on send, a remote track on receive) hands its
frames to the transformer as they come, without waiting for the previous ones,
and forwards the results strictly in the order it handed them over, whatever
order they come back in. So a transformer may hold frame N until N+1 arrives
(``enqueue`` later, from any thread). A coroutine returning None drops its
frame; the next ones flow on. At most :data:`VIDEO_WINDOW` video /
:data:`AUDIO_WINDOW` audio frames of a stream are in flight: beyond that new
frames are dropped (counted; on video receive in the inbound-rtp
``framesDropped``) and, for video, every frame until the next key frame, which
is requested as soon as there is room again, so video recovers cleanly. So a
frame never handed back stops that stream only (as in the official SDK) with
bounded memory; the rest of the connection runs on, and disconnecting releases
it. A frame handed back after its stream or connection ended is dropped quietly.

Frame facts follow libwebrtc as ``sora_sdk`` shows them: audio
``sequence_number`` is the RTP sequence number on receive and None on send
(``sora_sdk`` 2025.4.0 measured; libwebrtc packetizes after the transform);
``absolute_capture_timestamp`` is the capture time in ms on send (the
monotonic clock libwebrtc's ``rtc::TimeMillis`` uses) and None on receive;
``receive_time`` is the arrival time in µs on that same monotonic clock
(receive only); the receive-side audio ``type`` is SPEECH when the RFC 6464
audio level says voice, else CN; ``contributing_sources`` are the RTP CSRCs
(Sora sets none); video ``frame_id`` is None on receive (no generic frame
descriptor through Sora).

AV1: the RTP format carries OBUs, not a byte string (libwebrtc's packetizer
drops a frame whose bytes do not parse as OBUs). So on send, bytes a transform
added that are not well-formed OBUs travel in one OBU of the reserved type
:data:`AV1_OPAQUE_OBU` (14, header byte ``0x72``) placed before the frame's
first frame (header) OBU; decoders skip reserved OBUs (AV1 §6.2.1), and the dev
server and ``sora_sdk`` pass it on: a ``sora_sdk`` receiver without a
transformer decodes such frames, one with a transformer sees the OBU
(``0x72 <leb128 size> <bytes>``) and can strip it whole. (After the frame OBU
instead, a ``sora_sdk`` receiver without a transformer decodes only the first
frame: measured with 2025.4.0.) On receive, that OBU (before the frame, or at the end as a
``sora_sdk`` transform appending it there sends it) is taken out and its bytes
put back at the end before the receiving transform sees the frame. A
``sora_sdk`` transform that appends raw bytes to AV1 frames sends nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from .codecs.base import EncodedFrame, MalformedPayloadError
from .codecs.bitstream import leb128_decode, leb128_encode

logger = logging.getLogger("sora_async.transform")

_MIME = {"OPUS": "audio/opus"}

_F = TypeVar("_F", bound="TransformableFrame")


class FrameDirection(enum.IntEnum):
    """Which side a frame is on (the official ``SoraTransformableFrameDirection``)."""

    UNKNOWN = 0
    RECEIVER = 1
    SENDER = 2


class AudioFrameType(enum.IntEnum):
    """The official ``SoraTransformableAudioFrameType``."""

    EMPTY = 0
    SPEECH = 1
    CN = 2


class TransformableFrame:
    """An encoded frame in flight: its bytes and RTP facts (built by the engine, not by users).

    ``get_data()`` is a read-only uint8 view of the bytes; ``set_data(array or
    bytes)`` replaces them. ``rid`` is the simulcast layer's rid, if any.
    """

    __slots__ = ("_direction", "_done", "_encoded", "_loop")
    _encoded: EncodedFrame
    _direction: FrameDirection
    _done: asyncio.Future[Any] | None
    _loop: asyncio.AbstractEventLoop | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"{type(self).__name__}: frames come from the engine, not constructed")

    @classmethod
    def _wrap(cls: type[_F], encoded: EncodedFrame, direction: FrameDirection) -> _F:
        self = cls.__new__(cls)
        self._encoded = encoded
        self._direction = direction
        self._done = None
        self._loop = None
        return self

    @property
    def encoded(self) -> EncodedFrame:
        """The engine's :class:`~sora_async.codecs.base.EncodedFrame` (all metadata)."""
        return self._encoded

    def get_data(self) -> np.ndarray:
        """The encoded bytes as a read-only uint8 ``(n,)`` view."""
        return np.frombuffer(self._encoded.data, dtype=np.uint8)

    def set_data(self, data: Any, /) -> None:
        """Replace the encoded bytes: a 1-D uint8 ndarray or bytes-like."""
        if isinstance(data, np.ndarray):
            if data.dtype != np.uint8 or data.ndim != 1:
                raise TypeError("set_data: expected a 1-D uint8 ndarray")
            self._encoded.data = data.tobytes()
        elif isinstance(data, bytes | bytearray | memoryview):
            self._encoded.data = bytes(data)
        else:
            raise TypeError(
                f"set_data: expected a uint8 ndarray or bytes, got {type(data).__name__}"
            )

    @property
    def kind(self) -> str:
        """ "audio" or "video"."""
        return self._encoded.kind

    @property
    def payload_type(self) -> int:
        """The RTP payload type of the frame's codec."""
        return int(self._encoded.payload_type or 0)

    @property
    def ssrc(self) -> int:
        """The RTP SSRC of the stream (of the simulcast layer on send)."""
        return int(self._encoded.ssrc or 0)

    @property
    def rtp_timestamp(self) -> int:
        """The RTP timestamp (90 kHz video, 48 kHz Opus); settable."""
        return int(self._encoded.timestamp)

    @rtp_timestamp.setter
    def rtp_timestamp(self, value: int, /) -> None:
        self._encoded.timestamp = int(value) & 0xFFFFFFFF

    @property
    def direction(self) -> Any:
        """:class:`FrameDirection`: SENDER or RECEIVER."""
        return self._direction

    @property
    def mime_type(self) -> str:
        """The codec's MIME type ("video/VP8", "audio/opus")."""
        codec = str(self._encoded.codec)
        return _MIME.get(codec.upper(), f"video/{codec}")

    @property
    def mine_type(self) -> str:
        """The official (misspelt, ``sora_sdk`` <= 2025.5) name of :attr:`mime_type`."""
        return self.mime_type

    @property
    def rid(self) -> str | None:
        """The simulcast layer's rid (``r0``/``r1``/``r2``), None outside simulcast."""
        rid = self._encoded.codec_specific.get("rid")
        return str(rid) if rid else None

    def __repr__(self) -> str:
        rid = f" rid={self.rid}" if self.rid else ""
        return (
            f"<{type(self).__name__} {self.mime_type} {self._direction.name}{rid} "
            f"ts={self.rtp_timestamp} {len(self._encoded.data)} bytes>"
        )


class TransformableAudioFrame(TransformableFrame):
    """An encoded audio frame (one Opus packet)."""

    __slots__ = ()

    @property
    def contributing_sources(self) -> np.ndarray:
        """The RTP CSRCs on receive (uint32 ndarray; empty on send, and Sora sets none)."""
        return _csrcs(self._encoded)

    @property
    def sequence_number(self) -> int | None:
        """The RTP sequence number of the frame's packet on receive; None on send (as
        libwebrtc: the frame is not packetized yet)."""
        value = self._encoded.codec_specific.get("sequence_number")
        return int(value) if value is not None else None

    @property
    def absolute_capture_timestamp(self) -> int | None:
        """Send side: the capture time in ms on the monotonic clock libwebrtc's
        ``rtc::TimeMillis`` uses (``time.monotonic_ns() // 1_000_000``; here taken as
        the frame leaves the encoder, within a few ms of capture). None on receive.
        (``sora_sdk`` 2025.4.0 gives 2**64 - 1 on send: its sources set no capture time.)"""
        value = self._encoded.codec_specific.get("absolute_capture_timestamp")
        return int(value) if value is not None else None

    @property
    def type(self) -> Any:
        """:class:`AudioFrameType`. Send: SPEECH, or EMPTY for no bytes. Receive (as
        libwebrtc): SPEECH when the RFC 6464 audio level's voice flag is set, else CN."""
        if self._direction is FrameDirection.RECEIVER:
            voice = self._encoded.codec_specific.get("voice_activity")
            return AudioFrameType.SPEECH if voice else AudioFrameType.CN
        return AudioFrameType.SPEECH if self._encoded.data else AudioFrameType.EMPTY

    @property
    def audio_level(self) -> int | None:
        """RFC 6464 level 0 (loud)..127 (silence), when known."""
        level = self._encoded.audio_level
        return int(level) if level is not None else None

    @property
    def receive_time(self) -> int | None:
        """Arrival time in µs on the monotonic clock (``time.monotonic_ns() // 1000``, the
        clock libwebrtc uses); receive side only."""
        value = self._encoded.codec_specific.get("receive_time")
        return int(value) if value is not None else None


class TransformableVideoFrame(TransformableFrame):
    """An encoded video frame."""

    __slots__ = ()

    @property
    def is_key_frame(self) -> bool:
        """True for a key frame."""
        return bool(self._encoded.is_keyframe)

    @property
    def frame_id(self) -> int | None:
        """Send side: the picture id (VP8/VP9) or a running frame number. None on
        receive, as libwebrtc without a generic frame descriptor (Sora forwards none);
        ``frame.encoded.frame_id`` has the depacketized picture id."""
        if self._direction is FrameDirection.RECEIVER:
            return None
        value = self._encoded.frame_id
        return int(value) if value is not None else None

    @property
    def frame_dependencies(self) -> np.ndarray:
        """``frame_id`` values this frame references (read-only int64 ndarray; empty on
        receive, like :attr:`frame_id`)."""
        if self._direction is FrameDirection.RECEIVER:
            values: tuple[int, ...] = ()
        else:
            values = self._encoded.frame_dependencies
        array = np.array(values, dtype=np.int64)
        array.flags.writeable = False
        return array

    @property
    def width(self) -> int:
        """Encoded width in pixels (0 when the codec does not say)."""
        return int(self._encoded.width)

    @property
    def height(self) -> int:
        """Encoded height in pixels (0 when the codec does not say)."""
        return int(self._encoded.height)

    @property
    def spatial_index(self) -> int:
        """Spatial layer index (SVC), 0 otherwise."""
        return int(self._encoded.spatial_index)

    @property
    def temporal_index(self) -> int:
        """Temporal layer index, 0 otherwise."""
        return int(self._encoded.temporal_index)

    @property
    def contributing_sources(self) -> np.ndarray:
        """The RTP CSRCs on receive (uint32 ndarray; empty on send, and Sora sets none)."""
        return _csrcs(self._encoded)


def _csrcs(encoded: EncodedFrame) -> np.ndarray:
    return np.array(encoded.codec_specific.get("csrcs", ()), dtype=np.uint32)


TransformFunction = Callable[[Any], Awaitable[Any]]

#: A frame handed back unchanged by ``start_short_circuiting()`` while it waited.
_UNCHANGED: Any = object()
#: A frame dropped (``drop()``, or None from a transform function).
_DROPPED: Any = object()


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


# -- AV1: bytes that are not OBUs -------------------------------------------------------------
#
# The AV1 RTP format carries OBUs, not a byte string: the packetizer parses the
# temporal unit, drops the temporal delimiter and strips size fields, and the
# depacketizer rebuilds them (libwebrtc's packetizer drops a frame whose bytes do
# not parse as OBUs). Bytes a transform appends (a trailer, a tag, a cipher text)
# are not OBUs and could not be packetized. So on the send side the part of a
# transformed AV1 frame that is no longer well-formed OBUs goes into one OBU of a
# reserved type (decoders skip reserved OBUs, AV1 §6.2.1), placed before the
# first frame (header) OBU: after the sequence header, so key frames are still
# recognised by the SFU and the receiver, and not after the frame, where
# sora_sdk's decoder stops after the first frame (measured; the data after a
# shown frame presumably starts the next temporal unit). The receive side takes that OBU out (also
# one at the end, as a sender that appends it there sends it) and puts its bytes
# back at the end before the receiving transform sees the frame.

#: The reserved OBU type that carries non-OBU bytes (AV1 §6.2.2: 9-14 are reserved).
AV1_OPAQUE_OBU = 14
_AV1_HEADER = bytes([AV1_OPAQUE_OBU << 3 | 0x02])
#: OBU_FRAME_HEADER, OBU_TILE_GROUP, OBU_FRAME: the opaque OBU goes before the first.
_AV1_FRAME_OBUS = (3, 4, 6)


def _av1_obus(data: bytes) -> list[tuple[int, int, int]] | None:
    """``(start, payload start, end)`` of each low-overhead OBU, None if ``data`` is not
    entirely OBUs with size fields."""
    out = []
    pos = 0
    while pos < len(data):
        first = data[pos]
        if first & 0x80 or not first & 0x02:
            return None
        try:
            size, start = leb128_decode(data, pos + (2 if first & 0x04 else 1))
        except MalformedPayloadError:
            return None
        if start + size > len(data):
            return None
        out.append((pos, start, start + size))
        pos = start + size
    return out


def _av1_obu_prefix(data: bytes) -> int:
    """Length of the leading well-formed low-overhead OBUs (size field, no reserved bits)."""
    pos = 0
    while pos < len(data):
        first = data[pos]
        obu_type = (first >> 3) & 0x0F
        if first & 0x81 or not first & 0x02 or obu_type in (0, 9, 10, 11, 12, 13, 14):
            return pos
        end = pos + (2 if first & 0x04 else 1)
        try:
            size, end = leb128_decode(data, end)
        except MalformedPayloadError:
            return pos
        if end + size > len(data):
            return pos
        pos = end + size
    return pos


def av1_wrap_opaque(data: bytes) -> bytes:
    """Send side: put what is not OBUs at the end of ``data`` into one opaque OBU, placed
    before the first frame (header) OBU."""
    prefix = _av1_obu_prefix(data)
    if prefix == len(data):
        return data
    head, tail = data[:prefix], data[prefix:]
    opaque = _AV1_HEADER + leb128_encode(len(tail)) + tail
    for start, _, _ in _av1_obus(head) or ():
        if (head[start] >> 3) & 0x0F in _AV1_FRAME_OBUS:
            return head[:start] + opaque + head[start:]
    return head + opaque


def av1_unwrap_opaque(data: bytes) -> bytes:
    """Receive side: the inverse of :func:`av1_wrap_opaque` (the opaque OBU's bytes go
    back to the end; one already at the end works too)."""
    if _AV1_HEADER[0] not in data:
        return data
    for start, payload, end in _av1_obus(data) or ():
        if data[start] == _AV1_HEADER[0]:
            return data[:start] + data[end:] + data[payload:end]
    return data


class FrameTransformer:
    """Base of :class:`AudioFrameTransformer` and :class:`VideoFrameTransformer`.

    One transformer may serve several streams (simulcast layers, several
    tracks); frames from different streams may then interleave, each
    stream's own frames stay in order.
    """

    _kind: ClassVar[str] = ""
    _frame_class: ClassVar[type[TransformableFrame]] = TransformableFrame

    def __init__(self, transform: TransformFunction | None = None) -> None:
        if type(self) is FrameTransformer:
            raise TypeError("use AudioFrameTransformer or VideoFrameTransformer")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be an async callable, got {type(transform).__name__}")
        self._function = transform
        self._on_transform: Callable[..., Any] | None = None
        self._short_circuit = False
        self._iterating = False
        self._lock = threading.Lock()
        self._waiting: set[asyncio.Future[Any]] = set()
        self._ready: collections.deque[TransformableFrame] = collections.deque()
        self._ready_event: asyncio.Event | None = None

    # -- the official style -----------------------------------------------------------

    @property
    def on_transform(self) -> Callable[..., Any] | None:
        """Called with each frame; hand it back with :meth:`enqueue` (possibly later)."""
        return self._on_transform

    @on_transform.setter
    def on_transform(self, callback: Callable[..., Any] | None) -> None:
        if callback is not None and not callable(callback):
            raise TypeError(f"on_transform must be callable, got {type(callback).__name__}")
        self._on_transform = callback

    def enqueue(self, frame: TransformableFrame, /) -> None:
        """Hand ``frame`` back to the pipeline (from any thread).

        A frame handed back twice, or after its stream or connection ended, is
        ignored.
        """
        self._hand_back(frame, frame)

    def start_short_circuiting(self) -> None:
        """Frames bypass the transformer from now on; frames waiting go on unchanged."""
        self._short_circuit = True
        with self._lock:
            waiting = list(self._waiting)
        for future in waiting:
            with contextlib.suppress(RuntimeError):
                future.get_loop().call_soon_threadsafe(_resolve, future, _UNCHANGED)

    @property
    def short_circuiting(self) -> bool:
        """True once :meth:`start_short_circuiting` was called."""
        return self._short_circuit

    # -- the asyncio style --------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Any]:
        self._iterating = True
        return self._frames()

    async def _frames(self) -> AsyncIterator[Any]:
        while True:
            while self._ready:
                frame = self._ready.popleft()
                if frame._done is not None and not frame._done.done():
                    yield frame
            event = self._event()
            event.clear()
            if not self._ready:
                await event.wait()

    async def put(self, frame: TransformableFrame, /) -> None:
        """Hand ``frame`` back (the asyncio counterpart of :meth:`enqueue`)."""
        self._hand_back(frame, frame)

    def drop(self, frame: TransformableFrame, /) -> None:
        """Drop ``frame``: it is not sent (send side) or not decoded (receive side)."""
        self._hand_back(frame, _DROPPED)

    # -- the engine hooks ---------------------------------------------------------------

    async def __call__(self, encoded: EncodedFrame) -> EncodedFrame | None:
        """The send-side hook (what ``Connection(*_frame_transformer=...)`` installs)."""
        return await self._transform(encoded, FrameDirection.SENDER)

    def receive_hook(self, kind: str) -> Callable[[EncodedFrame], Awaitable[EncodedFrame | None]]:
        """The receive-side hook for a track of ``kind`` (``RemoteTrack.set_frame_transformer``)."""
        if self._kind and kind != self._kind:
            raise TypeError(f"a {type(self).__name__} cannot transform a {kind} track")
        return functools.partial(self._transform, direction=FrameDirection.RECEIVER)

    def _make_frame(self, encoded: EncodedFrame, direction: FrameDirection) -> TransformableFrame:
        """The frame object given to the user (the compat layer gives its own classes)."""
        return self._frame_class._wrap(encoded, direction)

    def _dispatch(self, callback: Callable[..., Any], frame: TransformableFrame) -> None:
        """Run the official-style callback (here: on the event loop, at once)."""
        try:
            callback(frame)
        except Exception:
            logger.exception("on_transform raised; the frame is dropped")
            self.drop(frame)

    async def _transform(
        self, encoded: EncodedFrame, direction: FrameDirection
    ) -> EncodedFrame | None:
        if self._short_circuit:
            return encoded
        av1 = encoded.codec.upper() == "AV1"
        if av1 and direction is FrameDirection.RECEIVER:
            encoded.data = av1_unwrap_opaque(encoded.data)
        result = await self._run(encoded, direction)
        if av1 and result is not None and direction is FrameDirection.SENDER:
            result.data = av1_wrap_opaque(result.data)
        return result

    async def _run(self, encoded: EncodedFrame, direction: FrameDirection) -> EncodedFrame | None:
        function = self._function
        if function is not None:
            result = await function(self._make_frame(encoded, direction))
            if result is None:
                return None
            if isinstance(result, TransformableFrame):
                return result._encoded
            if isinstance(result, EncodedFrame):
                return result
            raise TypeError(f"transform returned {type(result).__name__}, not a frame or None")
        callback = self._on_transform
        if callback is None and not self._iterating:
            return encoded
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        frame = self._make_frame(encoded, direction)
        frame._done, frame._loop = done, loop
        with self._lock:
            self._waiting.add(done)
        try:
            if callback is not None:
                self._dispatch(callback, frame)
            else:
                self._ready.append(frame)
                self._event().set()
            result = await done
        finally:
            with self._lock:
                self._waiting.discard(done)
            frame._done = None
            if not done.done():
                done.cancel()
            with contextlib.suppress(ValueError):
                self._ready.remove(frame)
        if result is _DROPPED:
            return None
        if result is _UNCHANGED:
            return encoded
        return result._encoded if isinstance(result, TransformableFrame) else encoded

    def _hand_back(self, frame: TransformableFrame, value: Any) -> None:
        if not isinstance(frame, TransformableFrame):
            raise TypeError(f"expected a transformable frame, got {type(frame).__name__}")
        done, frame._done = frame._done, None
        loop = frame._loop
        if done is None or loop is None:
            return  # handed back already, or its stream ended: dropped quietly
        with contextlib.suppress(RuntimeError):  # the loop is closed: dropped quietly
            loop.call_soon_threadsafe(_resolve, done, value)

    def _event(self) -> asyncio.Event:
        if self._ready_event is None:
            self._ready_event = asyncio.Event()
        return self._ready_event

    def __repr__(self) -> str:
        if self._short_circuit:
            mode = "short-circuiting"
        elif self._function is not None:
            mode = "function"
        elif self._on_transform is not None:
            mode = "on_transform"
        elif self._iterating:
            mode = "iterator"
        else:
            mode = "pass-through"
        return f"<{type(self).__name__} {mode}>"


class AudioFrameTransformer(FrameTransformer):
    """Encoded transform of audio (Opus) frames; frames are :class:`TransformableAudioFrame`."""

    _kind = "audio"
    _frame_class = TransformableAudioFrame


class VideoFrameTransformer(FrameTransformer):
    """Encoded transform of video frames; frames are :class:`TransformableVideoFrame`."""

    _kind = "video"
    _frame_class = TransformableVideoFrame


#: Frames of one stream in the transformer at once (handed over, not yet forwarded):
#: 1 s of 30 fps video, 1 s of 20 ms audio frames.
VIDEO_WINDOW = 30
AUDIO_WINDOW = 50

_Context = TypeVar("_Context")


async def _unchanged(frame: EncodedFrame) -> EncodedFrame:
    return frame


class TransformPipeline(Generic[_Context]):
    """One stream's frames through an encoded-frame hook, in order (the engine's side).

    :meth:`submit` starts ``hook(frame)`` at once and returns (it never waits),
    so the transformer gets frames as they come; a task collects the results in
    submission order and awaits ``forward(frame, context)`` for each one not
    dropped (a hook returning None, or raising, drops its frame). At most
    ``window`` frames are in flight; beyond that :meth:`submit` drops the new
    frame and returns False, and a video pipeline then drops every frame until
    a key frame, with :attr:`wants_keyframe` True while there is room again
    (the caller asks its encoder or the sender for one). A hook that never
    returns so stops this stream only, with bounded memory.
    """

    def __init__(
        self,
        kind: str,
        forward: Callable[[EncodedFrame, _Context], Awaitable[None]],
        *,
        window: int | None = None,
        name: str = "",
    ) -> None:
        self.kind = kind
        self.window = window or (VIDEO_WINDOW if kind == "video" else AUDIO_WINDOW)
        self.name = name
        self._forward = forward
        self._pending: collections.deque[tuple[asyncio.Future[Any], _Context]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._gap = False
        #: frames dropped here: window full, or waiting for a key frame after that
        self.dropped = 0
        #: frames the hook dropped (None) or failed on
        self.discarded = 0
        self.forwarded = 0

    @property
    def in_flight(self) -> int:
        """Frames handed to the hook and not forwarded or dropped yet."""
        return len(self._pending)

    @property
    def wants_keyframe(self) -> bool:
        """Video dropped frames and has room again: the next frame should be a key frame."""
        return self._gap and len(self._pending) < self.window

    def submit(
        self,
        hook: Callable[[EncodedFrame], Awaitable[EncodedFrame | None]] | None,
        frame: EncodedFrame,
        context: _Context,
    ) -> bool:
        """Hand ``frame`` to ``hook`` (None: unchanged, behind those in flight); False if
        dropped (window full, waiting for a key frame, or closed)."""
        if self._closed:
            return False
        full = len(self._pending) >= self.window
        if self._gap:
            if full or not frame.is_keyframe:
                self.dropped += 1
                return False
            self._gap = False
        elif full:
            self.dropped += 1
            if self.kind == "video":
                self._gap = True
            return False
        future = asyncio.ensure_future((hook or _unchanged)(frame))
        self._pending.append((future, context))
        if self._task is None:
            self._task = asyncio.ensure_future(self._collect())
        self._wakeup.set()
        return True

    async def _collect(self) -> None:
        pending = self._pending
        while True:
            while not pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            future, context = pending[0]
            try:
                result = await future
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed or (task is not None and task.cancelling()):
                    raise
                result = None  # the hook's own task was cancelled: the frame is dropped
            except Exception:
                logger.exception("%s: frame transform failed; the frame is dropped", self.name)
                result = None
            try:
                if result is None:
                    self.discarded += 1
                else:
                    self.forwarded += 1
                    await self._forward(result, context)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s: forwarding a transformed frame failed", self.name)
            finally:
                if pending and pending[0][0] is future:
                    pending.popleft()

    async def close(self) -> None:
        """Stop: frames in flight are dropped (handed back later: dropped quietly)."""
        self._closed = True
        task, self._task = self._task, None
        futures = [future for future, _ in self._pending]
        self._pending.clear()
        for future in futures:
            future.cancel()
        if task is not None:
            task.cancel()
            futures.append(task)
        if futures:
            await asyncio.wait(futures, timeout=1.0)


def as_transformer(
    value: Any, kind: str, name: str = "frame transformer"
) -> FrameTransformer | None:
    """``value`` as a transformer of ``kind``: a transformer of that kind is kept, an
    async callable is wrapped (it gets :class:`TransformableFrame` objects), None stays None.

    Raises ``TypeError`` for anything else or a transformer of the other kind.
    """
    if value is None:
        return None
    if isinstance(value, FrameTransformer):
        if value._kind != kind:
            raise TypeError(f"{name}: a {type(value).__name__} cannot transform {kind}")
        return value
    if callable(value):
        cls = AudioFrameTransformer if kind == "audio" else VideoFrameTransformer
        return cls(value)
    raise TypeError(
        f"{name}: expected an {'Audio' if kind == 'audio' else 'Video'}FrameTransformer or an "
        f"async callable, got {type(value).__name__}"
    )


def send_hook(value: Any, kind: str) -> TransformFunction | None:
    """The engine's send-side hook for ``Connection(<kind>_frame_transformer=value)``."""
    return as_transformer(value, kind)


def receive_hook(value: Any, kind: str) -> TransformFunction | None:
    """The engine's receive-side hook for ``track.set_frame_transformer(value)``."""
    transformer = as_transformer(value, kind, "set_frame_transformer")
    return transformer.receive_hook(kind) if transformer is not None else None


__all__ = [
    "AUDIO_WINDOW",
    "VIDEO_WINDOW",
    "AudioFrameTransformer",
    "AudioFrameType",
    "FrameDirection",
    "FrameTransformer",
    "TransformPipeline",
    "TransformableAudioFrame",
    "TransformableFrame",
    "TransformableVideoFrame",
    "VideoFrameTransformer",
    "as_transformer",
]
