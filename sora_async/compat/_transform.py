"""Encoded transform: ``SoraAudioFrameTransformer``, ``SoraVideoFrameTransformer`` and their frames.

The official style: set ``transformer.on_transform = callback``; the callback
gets each encoded frame (a ``SoraTransformable*Frame``) on the transformer's
own thread, may change its bytes with ``set_data``, and hands it back with
``transformer.enqueue(frame)`` (possibly later, from any thread). A frame
never enqueued stops that stream, as in the official SDK;
``start_short_circuiting()`` lets frames bypass the callback from then on.

These classes are the core's :mod:`sora_async.transform` classes (issue 7)
with the official enums and the official threading (callbacks on a
dispatcher thread, never on the event loop). The send side goes through the
``audio_frame_transformer``/``video_frame_transformer`` keywords of
:class:`sora_async.Connection`, the receive side through
``RemoteTrack.set_frame_transformer``. As in libwebrtc, frames are handed over
as they come and go on in the order they were handed over, so a callback may
hold frames and enqueue them later, in any order; a stream keeps at most 30
video / 50 audio frames in flight (beyond that new frames are dropped), so a
frame never enqueued stops that stream only.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..transform import (
    FrameTransformer,
    TransformableAudioFrame,
    TransformableFrame,
    TransformableVideoFrame,
)
from ._enums import SoraTransformableAudioFrameType, SoraTransformableFrameDirection
from ._runtime import Dispatcher, call_user

logger = logging.getLogger("sora_async.compat")


class SoraTransformableFrame(TransformableFrame):
    """An encoded frame in flight: its bytes and RTP facts.

    ``get_data()`` is a read-only uint8 view of the bytes; ``set_data(array)``
    replaces them. ``mine_type`` (sic, the official name) and ``mime_type``
    give the codec's MIME type (``"video/VP8"``, ``"audio/opus"``).
    """

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"{type(self).__name__}: no constructor defined!")

    @property
    def direction(self) -> SoraTransformableFrameDirection:
        return SoraTransformableFrameDirection(int(self._direction))


class SoraTransformableAudioFrame(SoraTransformableFrame, TransformableAudioFrame):
    """An encoded audio frame (one Opus packet)."""

    __slots__ = ()

    @property
    def type(self) -> SoraTransformableAudioFrameType:
        return SoraTransformableAudioFrameType(int(super().type))


class SoraTransformableVideoFrame(SoraTransformableFrame, TransformableVideoFrame):
    """An encoded video frame."""

    __slots__ = ()


class SoraFrameTransformer(FrameTransformer):
    """Base of the transformers: ``enqueue(frame)`` and ``start_short_circuiting()``."""

    _frame_class = SoraTransformableFrame

    def __init__(self) -> None:
        if type(self) is SoraFrameTransformer:
            raise TypeError("SoraFrameTransformer: no constructor defined!")
        super().__init__()
        self._dispatcher: Dispatcher | None = None
        self._dispatcher_lock = threading.Lock()

    def enqueue(self, frame: SoraTransformableFrame, /) -> None:  # type: ignore[override]
        """Give ``frame`` back to the media pipeline (from any thread).

        A frame enqueued twice, or after its connection ended, is ignored.
        """
        if not isinstance(frame, TransformableFrame):
            raise TypeError(f"enqueue: expected a transformable frame, got {type(frame).__name__}")
        super().enqueue(frame)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            dispatcher, self._dispatcher = self._dispatcher, None
            if dispatcher is not None:
                dispatcher.close()

    # -- the core hook -----------------------------------------------------------------

    def _dispatch(self, callback: Callable[..., Any], frame: TransformableFrame) -> None:
        """Official threading: ``on_transform`` runs on the transformer's own thread."""
        with self._dispatcher_lock:
            if self._dispatcher is None:
                self._dispatcher = Dispatcher(f"sora-compat-{type(self).__name__}")
            dispatcher = self._dispatcher
        dispatcher.post(call_user, "on_transform", callback, frame)

    def _receiver_hook(self, kind: str) -> Callable[[Any], Any]:
        return self.receive_hook(kind)


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
