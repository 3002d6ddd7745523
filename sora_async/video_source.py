"""``VideoSource``: numpy/PyAV frames in, a video track out (the official ``SoraVideoSource``).

A ``VideoSource`` is an aiortc ``MediaStreamTrack``: pass it as
``Connection(video_source=...)``. Frames come in with :meth:`VideoSource.write`
(from any thread, never blocks) or ``await`` :meth:`VideoSource.send` (waits
until the encoder took the frame); the encoder pulls them with ``recv()``.

It keeps one frame: when the encoder is behind, the newest frame wins and the
older one is dropped, so latency never builds up (the official source queues
every frame on a thread instead). Frames are timestamped at capture: ``write()``
stamps the frame with the monotonic clock (or the ``timestamp`` given), and
the RTP timestamp follows that time at 90 kHz, as libwebrtc does with
``timestamp_us``. BGR is converted to I420 once per frame that the encoder
actually takes, in a worker thread: by libyuv where the system has it (as the
official client; 7-9x faster than libswscale here), else by libswscale.

Example::

    source = VideoSource()
    async with Connection(url, "sendonly", "ch", video_source=source, audio=False) as conn:
        while True:
            ok, bgr = camera.read()          # OpenCV: (480, 640, 3) uint8 BGR
            await source.send(bgr)
"""

# Waits take an explicit timeout and report it (False/None) instead of raising,
# like the official read(frames, timeout).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import fractions
import threading
import time
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError

from ._media import LocalTrack
from .frames import reformat_video

VIDEO_CLOCK_RATE = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)


class VideoSource(LocalTrack):
    """A local video track fed with BGR ndarrays or ``av.VideoFrame``s.

    Args:
        stream_id: the local stream id (random by default); Sora assigns the
            stream id other clients see (the connection id).

    Attributes: ``kind`` ("video"), ``id``, ``stream_id``, ``enabled``,
    ``set_enabled(bool)``, ``state``; ``frames_written``, ``frames_sent`` and
    ``frames_dropped`` (replaced by a newer frame before the encoder took them).

    One source feeds one connection at a time (the encoder pulls frames); it
    survives the connection, so the same source can feed the next one.
    """

    kind = "video"

    def __init__(self, stream_id: str | None = None) -> None:
        super().__init__(stream_id)
        self._lock = threading.Lock()
        # (image, capture time in seconds, sequence number)
        self._pending: tuple[np.ndarray | av.VideoFrame, float, int] | None = None
        self._written = 0
        self._taken = 0
        self._origin: float | None = None
        self._last_pts = -1
        self.frames_written = 0
        self.frames_sent = 0
        self.frames_dropped = 0

    # -- producer side -------------------------------------------------------------------

    def write(
        self, frame: np.ndarray | av.VideoFrame, timestamp: float | int | None = None
    ) -> None:
        """Queue ``frame``, replacing a frame the encoder has not taken yet.

        Args:
            frame: BGR uint8 ndarray (height, width, 3) (copied; a non-contiguous
                array is made contiguous by that copy), or an ``av.VideoFrame``
                of any format (not copied: do not modify it afterwards).
            timestamp: capture time: ``float`` seconds or ``int`` microseconds
                (the official ``on_captured`` overloads) on any one clock, e.g.
                ``time.time()``; None = now (monotonic). Only differences
                matter: they become the RTP timestamps.

        Thread-safe and never blocks. Raises ``TypeError``/``ValueError`` for a
        bad frame and ``RuntimeError`` once the source is stopped.
        """
        self._put(frame, timestamp)

    async def send(
        self,
        frame: np.ndarray | av.VideoFrame,
        timestamp: float | int | None = None,
        *,
        timeout: float | None = None,
    ) -> bool:
        """:meth:`write`, then wait until the encoder took this frame or a newer one.

        A producer loop of ``await source.send(...)`` thus runs at the pace of
        the encoder (and waits while nothing is connected). Returns False if
        ``timeout`` seconds passed first or the source was stopped.
        """
        seq = self._put(frame, timestamp)
        taken = await self._changed.wait_for(
            lambda: (
                self._taken >= seq
                or self._ended
                or (self._pending is not None and self._pending[2] > seq)
            ),
            timeout,
        )
        return taken and not self._ended

    def _put(self, frame: Any, timestamp: float | int | None) -> int:
        self._check_open()
        image = _validated(frame)
        captured = _seconds(timestamp)
        with self._lock:
            self._written += 1
            self.frames_written += 1
            if self._pending is not None:
                self.frames_dropped += 1
            self._pending = (image, captured, self._written)
            seq = self._written
        self._changed.notify()
        return seq

    # -- encoder side ---------------------------------------------------------------------

    async def recv(self) -> av.VideoFrame:
        """The newest frame written since the last call, as yuv420p with a 90 kHz pts."""
        image, captured, enabled = await self._take()
        loop = asyncio.get_running_loop()
        frame = await loop.run_in_executor(None, _to_i420, image, enabled)
        return self._stamp(frame, captured)

    async def _recv_unconverted(self) -> av.VideoFrame:
        """:meth:`recv` without the conversion to I420, for the engine's sender.

        A written ndarray comes back as a ``bgr24`` frame over our own copy (no
        further copy); the sender converts it on the codec pool, together with
        its scaling, in one libswscale pass right before encoding. This saves
        a thread hop and a frame-sized pass per frame.
        """
        image, captured, enabled = await self._take()
        if not enabled:
            frame = _to_i420(image, enabled)
        elif isinstance(image, av.VideoFrame):
            frame = image
        else:
            frame = av.VideoFrame.from_numpy_buffer(image, format="bgr24")
        return self._stamp(frame, captured)

    async def _take(self) -> tuple[np.ndarray | av.VideoFrame, float, bool]:
        await self._changed.wait_for(lambda: self._pending is not None or self._ended)
        with self._lock:
            pending, self._pending = self._pending, None
            if pending is not None:
                self._taken = pending[2]
        if self._ended or pending is None:
            raise MediaStreamError
        self._changed.notify()
        image, captured, _seq = pending
        return image, captured, self._enabled

    def _stamp(self, frame: av.VideoFrame, captured: float) -> av.VideoFrame:
        frame.pts = self._pts(captured)
        frame.time_base = VIDEO_TIME_BASE
        self.frames_sent += 1
        return frame

    def _pts(self, captured: float) -> int:
        if self._origin is None:
            self._origin = captured
        pts = round((captured - self._origin) * VIDEO_CLOCK_RATE)
        # Encoders need strictly increasing timestamps (a clock step back, or
        # two frames stamped alike).
        if pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts


def _seconds(timestamp: float | int | None) -> float:
    if timestamp is None:
        return time.monotonic()
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise TypeError("timestamp must be float seconds, int microseconds or None")
    if isinstance(timestamp, int):
        return timestamp / 1_000_000
    if timestamp != timestamp or timestamp in (float("inf"), float("-inf")):
        raise ValueError("timestamp must be finite")
    return float(timestamp)


def _validated(frame: Any) -> np.ndarray | av.VideoFrame:
    if isinstance(frame, av.VideoFrame):
        if frame.width < 1 or frame.height < 1:
            raise ValueError("VideoSource: empty av.VideoFrame")
        return frame
    if not isinstance(frame, np.ndarray):
        raise TypeError(
            "VideoSource: expected a BGR numpy.ndarray or av.VideoFrame, "
            f"got {type(frame).__name__}"
        )
    if frame.dtype != np.uint8:
        raise TypeError(f"VideoSource: expected uint8 BGR pixels, got {frame.dtype}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 2 or frame.shape[1] < 2:
        raise ValueError(
            f"VideoSource: expected shape (height, width, 3) with height, width >= 2, "
            f"got {tuple(frame.shape)}"
        )
    # One copy: the caller may reuse its buffer (cv2.VideoCapture.read does).
    return np.array(frame, dtype=np.uint8, order="C", copy=True)


def _to_i420(image: np.ndarray | av.VideoFrame, enabled: bool) -> av.VideoFrame:
    if isinstance(image, av.VideoFrame):
        width, height = image.width, image.height
    else:
        height, width = image.shape[:2]
    if not enabled:
        # A disabled track sends black frames of the same size (libwebrtc's
        # VideoBroadcaster: I420Buffer::SetBlack, Y=0 U=V=128).
        black = av.VideoFrame(width=width, height=height, format="yuv420p")
        for plane, value in zip(black.planes, (0, 128, 128), strict=True):
            plane.update(bytes([value]) * plane.buffer_size)
        return black
    if isinstance(image, av.VideoFrame):
        if image.format.name == "yuv420p":
            return image
        return reformat_video(image, format="yuv420p")
    # ``image`` is our own copy (``_validated``): wrap it without another copy,
    # then one libswscale pass BGR -> I420 on this thread's cached context.
    return reformat_video(av.VideoFrame.from_numpy_buffer(image, format="bgr24"), format="yuv420p")
