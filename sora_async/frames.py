"""Decoded frames as the sinks deliver them: :class:`VideoFrame` and :class:`AudioFrame`.

They mirror the official ``SoraVideoFrame`` and ``SoraAudioFrame``
(sora-sdk-reference.md §1.4, "Sinks and frames"):

- ``VideoFrame.data()`` is BGR ``(height, width, 3)`` uint8. Unlike the official
  frame (converted once in its constructor), the conversion is lazy: it runs
  on the first call, in the calling thread, and is cached, so frames a
  consumer never looks at cost nothing. ``VideoSink(track, format="bgr24")``
  does it ahead of time in a worker thread instead.
- ``AudioFrame`` is 10 ms of int16 audio and pickles (to hand it to a process
  pool, as the official header suggests).

Example::

    async for frame in VideoSink(track):
        bgr = frame.data()              # (480, 640, 3) uint8
        y, u, v = frame.planes()        # I420
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fractions
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

logger = logging.getLogger("sora_async.frames")

_VIDEO_TIME_BASE = fractions.Fraction(1, 90000)

_reformatters = threading.local()

# --- BGR -> I420 through libyuv, where the system has it ----------------------------
#
# libswscale's bgr24 -> yuv420p (its unscaled ``rgb24toyv12`` path, the fastest it has
# for this pair; the interpolation flags do not change it and ACCURATE_RND is slower)
# is scalar C: ~8 M instructions per 640x480 frame under callgrind, 0.6-0.8 ms at VGA
# and 2.0-2.5 ms at 720p on the bench machine, 20 % of the VP8 encoder thread at 720p.
# libyuv's ``RGB24ToI420`` (libyuv's "RGB24" is B, G, R in memory, FFmpeg's bgr24) is
# the conversion the official client runs on the same ndarray (``libyuv::ConvertToI420``
# with ``FOURCC_24BG`` in sora-python-sdk's SoraVideoSource): 0.11 ms at VGA and 0.23 ms
# at 720p here, BT.601 limited range like libswscale's, every sample within 1 of it.
# PyAV does not ship libyuv; the system's (Debian/Ubuntu ``libyuv0``) is used when
# present, libswscale otherwise. ``SORA_ASYNC_LIBYUV=0`` turns it off.

_LibyuvConvert = Callable[..., int]
#: libyuv's converters by (target, source) pixel format; None until looked up, then
#: empty where the system has no libyuv (or it is turned off).
_libyuv_functions: dict[tuple[str, str], _LibyuvConvert] | None = None
_libyuv_lock = threading.Lock()

# --- I420 -> BGR through libyuv (the receive side) ------------------------------------
#
# ``VideoFrame.data()`` and ``VideoSink(format="bgr24")`` turn every decoded yuv420p
# frame into bgr24. libswscale's unscaled yuv420p -> bgr24 (its x86 SIMD ``yuv2rgb``)
# costs 0.096 ms at VGA and 0.280 ms at 720p per frame on the bench machine; libyuv's
# ``I420ToRGB24`` (what libwebrtc converts with) 0.082 and 0.227 ms (process_time,
# medians of 7 interleaved runs, output frame allocation included). At odd sizes
# libswscale leaves its fast path for the generic scaler: 1.0 ms at 641x361 against
# libyuv's 0.074 ms, and it filters chroma there (samples up to 100+ apart from point
# sampling at sharp chroma edges, within 4 on smooth content); libyuv point-samples at
# every size, as libswscale's fast path does at even sizes: on decoded VP8 frames every
# sample is within 3 of libswscale there and within 2 of the BT.601 formula. libyuv's
# ``I420ToRGB24`` is BT.601 limited range only, so it is used only for frames tagged
# that way or untagged (what the VP8/VP9/H.264 decoders give for WebRTC streams);
# anything else, and any scaling, stays with libswscale. rgb24 goes the same way
# (``I420ToRAW``), so that ``to_ndarray("rgb24")`` is exactly ``data()`` reversed.

# AVColorSpace values libyuv's BT.601 constants match (libswscale treats an
# unspecified colour space as BT.601 too): UNSPECIFIED, BT470BG, SMPTE170M.
_BT601_COLORSPACES = frozenset({2, 5, 6})
# AVColorRange values for limited ("MPEG", 16-235) range: UNSPECIFIED and MPEG.
_LIMITED_RANGES = frozenset({0, 1})


def _libyuv() -> dict[tuple[str, str], _LibyuvConvert]:
    """The system's libyuv converters, loaded on first use."""
    global _libyuv_functions
    functions = _libyuv_functions
    if functions is not None:
        return functions
    with _libyuv_lock:
        if _libyuv_functions is None:
            found: dict[tuple[str, str], Any] = {}  # ctypes functions
            if os.environ.get("SORA_ASYNC_LIBYUV", "1") != "0":
                for name in (ctypes.util.find_library("yuv"), "libyuv.so.0", "libyuv.so"):
                    if not name:
                        continue
                    try:
                        library = ctypes.CDLL(name)
                        # libyuv names packed formats by little-endian words: its
                        # "RGB24" is B, G, R in memory (FFmpeg's bgr24), "RAW" R, G, B.
                        found = {
                            ("yuv420p", "bgr24"): library.RGB24ToI420,
                            ("bgr24", "yuv420p"): library.I420ToRGB24,
                            ("rgb24", "yuv420p"): library.I420ToRAW,
                        }
                    except (OSError, AttributeError):
                        continue
                    pointer, integer = ctypes.c_void_p, ctypes.c_int
                    # (pointer, stride) per source plane, then per target plane, then
                    # width, height: four pairs in both directions.
                    for function in found.values():
                        function.argtypes = [
                            pointer, integer, pointer, integer, pointer, integer, pointer,
                            integer, integer, integer,
                        ]  # fmt: skip
                        function.restype = integer
                    logger.debug("BGR <-> I420 with libyuv (%s)", name)
                    break
            _libyuv_functions = found
        return _libyuv_functions


def libyuv_available() -> bool:
    """True when BGR <-> I420 conversions go through the system's libyuv."""
    return bool(_libyuv())


def bgr24_to_i420(frame: av.VideoFrame) -> av.VideoFrame | None:
    """A ``bgr24`` frame as a new ``yuv420p`` frame of the same size through libyuv,
    or None when libyuv is not available (or refused the frame).

    The new frame keeps ``pts`` and ``time_base``, as ``VideoFrame.reformat`` does.
    ctypes releases the GIL for the call.
    """
    convert = _libyuv().get(("yuv420p", frame.format.name))
    if convert is None:
        return None
    return _libyuv_convert_frame(convert, frame, "yuv420p")


def i420_to_bgr24(frame: av.VideoFrame, format: str = "bgr24") -> av.VideoFrame | None:
    """A ``yuv420p`` frame as a new ``bgr24`` (or, with ``format="rgb24"``, ``rgb24``)
    frame of the same size through libyuv, or None when libyuv is not available, the
    format is another, or the frame is not BT.601 limited range (libyuv's constants;
    an untagged frame counts as BT.601, as for libswscale).

    The new frame keeps ``pts`` and ``time_base``, as ``VideoFrame.reformat`` does.
    ctypes releases the GIL for the call.
    """
    convert = _libyuv().get((format, "yuv420p"))
    if (
        convert is None
        or frame.format.name != "yuv420p"
        or frame.colorspace not in _BT601_COLORSPACES
        or frame.color_range not in _LIMITED_RANGES
    ):
        return None
    return _libyuv_convert_frame(convert, frame, format)


class _PackedBuffers:
    """Reused ``(height, width, 3)`` uint8 buffers for libyuv's packed (bgr24, rgb24)
    output frames of 512 KiB and more (640x480 and up).

    A new 2.7 MB frame per decoded 720p frame came from pages the allocator had given
    back to the kernel: ~120 page faults, each zeroing a page, in libyuv's writes per
    frame (2300-3500 a second for one 720p/30 receiver), and the conversion took 0.8-0.95
    ms instead of 0.5-0.7 ms (paced at 30 fps, the consumer holding two frames; at
    640x480 0.42-0.49 against 0.36-0.40 ms). libwebrtc takes its frame buffers from a
    pool too.

    A buffer is lent as a view, and comes back when that view is freed: the frame made
    on it and every array of that frame (``to_ndarray``, ``VideoFrame.data()``) keep the
    view, however long a consumer holds them, so reuse never changes what a consumer
    holds. (A reference count would say the same today, but what ``sys.getrefcount``
    counts changes between Python versions.)
    """

    #: Smaller frames keep their own allocation (no page faults measured for them).
    MIN_BYTES = 1 << 19
    #: Free buffers kept per size (fewer where they would pass KEEP_BYTES, at least 2),
    #: and sizes kept (the oldest size is forgotten first).
    KEEP = 6
    KEEP_BYTES = 32 << 20
    SIZES = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: dict[tuple[int, int], list[np.ndarray]] = {}

    def take(self, height: int, width: int) -> np.ndarray | None:
        """A buffer of that size to write a frame into (a free one or a new one), None
        below :attr:`MIN_BYTES`."""
        if height * width * 3 < self.MIN_BYTES:
            return None
        key = (height, width)
        with self._lock:
            free = self._free.get(key)
            if free is None:
                if len(self._free) >= self.SIZES:
                    del self._free[next(iter(self._free))]
                free = self._free[key] = []
            buffer = free.pop() if free else np.empty((height, width, 3), np.uint8)
        lent = buffer.view()
        weakref.finalize(lent, self._give_back, key, buffer).atexit = False
        return lent

    def _give_back(self, key: tuple[int, int], buffer: np.ndarray) -> None:
        # Runs in whichever thread drops the last reference to the lent view.
        with self._lock:
            free = self._free.get(key)
            if free is not None and len(free) < max(
                2, min(self.KEEP, self.KEEP_BYTES // buffer.nbytes)
            ):
                free.append(buffer)


_packed_buffers = _PackedBuffers()


def _libyuv_convert_frame(
    convert: Callable[..., int], frame: av.VideoFrame, format: str
) -> av.VideoFrame | None:
    """``frame`` converted into a new frame of ``format`` and the same size by a libyuv
    function taking (pointer, stride) per source plane, then per target plane, then
    width and height; ``pts`` and ``time_base`` kept. None if libyuv refused."""
    buffer = None if format == "yuv420p" else _packed_buffers.take(frame.height, frame.width)
    if buffer is None:
        out = av.VideoFrame(width=frame.width, height=frame.height, format=format)
    else:
        out = av.VideoFrame.from_numpy_buffer(buffer, format=format)
    arguments: list[int] = []
    for plane in (*frame.planes, *out.planes):
        arguments += (plane.buffer_ptr, plane.line_size)
    if convert(*arguments, frame.width, frame.height) != 0:  # pragma: no cover
        return None  # libyuv refuses only bad arguments
    out.pts = frame.pts
    if frame.time_base is not None:
        out.time_base = frame.time_base
    return out


_LIBYUV_KWARGS = frozenset({"format", "width", "height", "threads", "interpolation"})


def reformat_with(
    reformatter: VideoReformatter, frame: av.VideoFrame, **kwargs: Any
) -> av.VideoFrame:
    """``reformatter.reformat(frame, **kwargs)``, except that a bgr24 -> yuv420p or
    yuv420p -> bgr24/rgb24 conversion with no scaling goes through libyuv where
    available (see above)."""
    # rgb24 goes through libyuv too, so that ``to_ndarray("rgb24")`` stays the exact
    # channel reverse of ``data()``
    target = kwargs.get("format")
    if (
        (target, frame.format.name) in _libyuv()
        and kwargs.get("width") in (None, frame.width)
        and kwargs.get("height") in (None, frame.height)
        and kwargs.keys() <= _LIBYUV_KWARGS
    ):
        converted = (
            bgr24_to_i420(frame) if target == "yuv420p" else i420_to_bgr24(frame, str(target))
        )
        if converted is not None:
            return converted
    return reformatter.reformat(frame, **kwargs)


def reformat_video(frame: av.VideoFrame, **kwargs: Any) -> av.VideoFrame:
    """``frame.reformat(**kwargs)`` through a libswscale context kept per thread.

    ``av.VideoFrame.reformat`` builds a new ``SwsContext`` (and its slice
    threads) for every frame object, which costs more than the conversion
    itself at VGA; a ``VideoReformatter`` reuses its context while the source
    and target stay the same. One per thread, because a context must not be
    used by two threads at once. Single-threaded unless ``threads`` is given:
    slice threads cost more in wake-ups than they save at camera sizes, and
    the callers already run on worker threads (libwebrtc's libyuv does the
    same). Returns ``frame`` itself when nothing changes. BGR <-> I420 without
    scaling goes through libyuv where the system has it (:func:`reformat_with`).
    """
    reformatter: VideoReformatter | None = getattr(_reformatters, "value", None)
    if reformatter is None:
        reformatter = _reformatters.value = VideoReformatter()
    kwargs.setdefault("threads", 1)
    return reformat_with(reformatter, frame, **kwargs)


class VideoFrame:
    """One decoded video frame.

    Args:
        frame: the decoded ``av.VideoFrame`` (any pixel format; decoders give yuv420p).

    Attributes ``width``/``height`` are in pixels; ``timestamp`` is the frame's
    presentation time in seconds on the stream's clock (RTP timestamp based,
    starting near 0), or None when the frame has none. ``frame`` is the
    underlying ``av.VideoFrame``.
    """

    __slots__ = ("_cache", "_lock", "frame")

    def __init__(self, frame: av.VideoFrame) -> None:
        if not isinstance(frame, av.VideoFrame):
            raise TypeError(f"VideoFrame wraps an av.VideoFrame, not {type(frame).__name__}")
        self.frame = frame
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_ndarray(cls, bgr: np.ndarray, timestamp: float | None = None) -> VideoFrame:
        """A frame from a BGR (H, W, 3) uint8 array (tests, loopback)."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
        frame = reformat_video(frame, format="yuv420p")
        if timestamp is not None:
            frame.pts = round(timestamp * 90000)
            frame.time_base = _VIDEO_TIME_BASE
        return cls(frame)

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.frame.width)

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.frame.height)

    @property
    def timestamp(self) -> float | None:
        """Presentation time in seconds (``pts * time_base``), or None."""
        if self.frame.pts is None or self.frame.time_base is None:
            return None
        return float(self.frame.pts * self.frame.time_base)

    def data(self) -> np.ndarray:
        """BGR (height, width, 3) uint8, converted on first call and cached.

        The array is the frame's own (no copy per call): modifying it modifies
        what later calls return.
        """
        return self.to_ndarray("bgr24")

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """I420 planes ``(Y (H, W), U (ceil(H/2), ceil(W/2)), V (same))``, uint8, cached."""
        with self._lock:
            cached = self._cache.get("planes")
            if cached is None:
                frame = self.frame
                if frame.format.name != "yuv420p":
                    frame = reformat_video(frame, format="yuv420p")
                cached = tuple(
                    np.frombuffer(memoryview(plane), np.uint8)
                    .reshape(plane.height, plane.line_size)[:, : plane.width]
                    .copy()
                    for plane in frame.planes
                )
                self._cache["planes"] = cached
        return cached

    def to_ndarray(self, format: str = "bgr24") -> np.ndarray:
        """The frame as an ndarray in any PyAV/FFmpeg pixel ``format`` ("bgr24",
        "rgb24", "gray", "yuv420p", ...), converted once and cached (libswscale,
        or the system's libyuv for yuv420p to bgr24/rgb24 where it has it)."""
        with self._lock:
            cached = self._cache.get(format)
            if cached is None:
                # A view of the converted frame's buffer (no copy).
                cached = reformat_video(self.frame, format=format).to_ndarray()
                self._cache[format] = cached
        return cached

    def __reduce__(self) -> tuple[Any, ...]:
        y, u, v = self.planes()
        return (_video_frame_from_planes, (y, u, v, self.frame.pts, self.timestamp))

    def __repr__(self) -> str:
        return f"VideoFrame({self.width}x{self.height}, timestamp={self.timestamp})"


def _video_frame_from_planes(
    y: np.ndarray, u: np.ndarray, v: np.ndarray, pts: int | None, timestamp: float | None
) -> VideoFrame:
    height, width = y.shape
    frame = av.VideoFrame(width=width, height=height, format="yuv420p")
    for plane, values in zip(frame.planes, (y, u, v), strict=True):
        rows = np.zeros((plane.height, plane.line_size), np.uint8)
        rows[:, : plane.width] = values
        plane.update(rows.tobytes())
    if timestamp is not None:
        frame.pts = round(timestamp * 90000) if pts is None else pts
        frame.time_base = _VIDEO_TIME_BASE
    return VideoFrame(frame)


class AudioFrame:
    """10 ms of int16 audio, as the official ``SoraAudioFrame``.

    Args:
        data: int16 (samples_per_channel, num_channels) (copied, read-only after).
        sample_rate_hz: samples per second per channel.
        absolute_capture_timestamp_ms: the sender's capture time (epoch ms)
            when the stream carries one, else None.

    Picklable (``pickle.dumps(frame)``) so that frames can go to another process.

    Example::

        frame = AudioFrame(np.zeros((160, 1), np.int16), 16000)
        frame.samples_per_channel, frame.num_channels  # (160, 1)
    """

    __slots__ = ("_absolute_capture_timestamp_ms", "_data", "_sample_rate_hz")

    def __init__(
        self,
        data: np.ndarray,
        sample_rate_hz: int,
        absolute_capture_timestamp_ms: int | None = None,
    ) -> None:
        if not isinstance(data, np.ndarray) or data.dtype != np.int16:
            raise TypeError("AudioFrame data must be an int16 numpy.ndarray")
        if data.ndim != 2:
            raise ValueError(f"AudioFrame data must be (samples, channels), got {data.shape}")
        if int(sample_rate_hz) <= 0:
            raise ValueError("sample_rate_hz must be positive")
        array = np.array(data, dtype=np.int16, order="C", copy=True)
        array.flags.writeable = False
        self._data = array
        self._sample_rate_hz = int(sample_rate_hz)
        self._absolute_capture_timestamp_ms = (
            None if absolute_capture_timestamp_ms is None else int(absolute_capture_timestamp_ms)
        )

    @classmethod
    def _wrap(cls, data: np.ndarray, sample_rate_hz: int, ts: int | None) -> AudioFrame:
        """No-copy constructor for data the caller owns exclusively."""
        frame = cls.__new__(cls)
        data.flags.writeable = False
        frame._data = data
        frame._sample_rate_hz = sample_rate_hz
        frame._absolute_capture_timestamp_ms = ts
        return frame

    def data(self) -> np.ndarray:
        """int16 (samples_per_channel, num_channels), read-only (copy it to modify)."""
        return self._data

    @property
    def samples_per_channel(self) -> int:
        """Samples per channel in this frame (480 for 10 ms at 48 kHz)."""
        return int(self._data.shape[0])

    @property
    def num_channels(self) -> int:
        """Number of interleaved channels."""
        return int(self._data.shape[1])

    @property
    def sample_rate_hz(self) -> int:
        """Sample rate in Hz."""
        return self._sample_rate_hz

    @property
    def absolute_capture_timestamp_ms(self) -> int | None:
        """Capture time on the sender (ms since the epoch) where it was carried, else None."""
        return self._absolute_capture_timestamp_ms

    def __getstate__(self) -> tuple[bytes, int, int, int, int | None]:
        return (
            self._data.tobytes(),
            self.samples_per_channel,
            self.num_channels,
            self._sample_rate_hz,
            self._absolute_capture_timestamp_ms,
        )

    def __setstate__(self, state: tuple[bytes, int, int, int, int | None]) -> None:
        raw, samples, channels, rate, ts = state
        data = np.frombuffer(raw, np.int16).reshape(samples, channels).copy()
        data.flags.writeable = False
        self._data = data
        self._sample_rate_hz = rate
        self._absolute_capture_timestamp_ms = ts

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AudioFrame):
            return NotImplemented
        return (
            self._sample_rate_hz == other._sample_rate_hz
            and self._absolute_capture_timestamp_ms == other._absolute_capture_timestamp_ms
            and np.array_equal(self._data, other._data)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"AudioFrame(samples_per_channel={self.samples_per_channel}, "
            f"num_channels={self.num_channels}, sample_rate_hz={self._sample_rate_hz}, "
            f"absolute_capture_timestamp_ms={self._absolute_capture_timestamp_ms})"
        )
