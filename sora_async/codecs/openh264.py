"""Cisco OpenH264 (``CISCO_OPENH264``) through ctypes: H.264 encode and decode.

The PyAV wheel has no ``libopenh264`` encoder (checked: ``av.codecs_available``
of PyAV 18.1 lists none), and Cisco's binary may not be redistributed, so as
in the official SDK the user passes the path of a library they downloaded
(``openh264=``); Debian's ``libopenh264-7`` (2.3.1) has the same API.

The C API (``codec_api.h``) is C++-style: ``WelsCreateSVCEncoder`` returns a
pointer to an object whose first word points to a function table. Only
entries whose position has never moved are used: encoder ``Initialize`` (0),
``Uninitialize`` (3), ``EncodeFrame`` (4), ``ForceIntraFrame`` (6),
``SetOption`` (7); decoder ``Initialize`` (0), ``Uninitialize`` (1),
``DecodeFrameNoDelay`` (3). (OpenH264 2.4+ inserted decoder entries before
``SetOption``, which is therefore never called.)

``SLayerBSInfo`` grew a ``float rPsnr[3]`` in newer releases, changing the
layout of the per-frame layer array; the reader finds the right layout by
checking that layer buffers are contiguous before following any pointer.

OpenH264 encodes Constrained Baseline only and changes its bit rate in place
(``ENCODER_OPTION_BITRATE``).

The official ``sora_sdk`` 2025.4.0 is compiled against the 2.6 headers (its
log says "OpenH264 version is 2.6", from the compile-time macros) and reads
``SLayerBSInfo`` with the 2.6 layout: given Debian's 2.3.1 its *decoder*
works (``sora_async`` → ``sora_sdk`` H.264 passes) but its *encoder* sends
no decodable frame or crashes with SIGSEGV (``tests/test_openh264_media.py``).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any, ClassVar

import av
import numpy as np
from av.video.frame import VideoFrame

from .base import (
    VIDEO_CLOCK_RATE,
    CodecUnavailableError,
    DecodeError,
    Decoder,
    EncodedFrame,
    Encoder,
)
from .pyav import EncoderSettings, rtp_timestamp_of

logger = logging.getLogger("sora_async.codecs")

CODEC = "H264"
#: Oldest release whose ABI this module was checked against (Debian bookworm's 2.3.1).
MIN_VERSION = (2, 0, 0)

# codec_app_def.h / codec_def.h constants.
_CAMERA_VIDEO_REAL_TIME = 0
_RC_BITRATE_MODE = 1
_VIDEO_FORMAT_I420 = 23
_ENCODER_OPTION_DATAFORMAT = 0
_ENCODER_OPTION_IDR_INTERVAL = 1
_ENCODER_OPTION_BITRATE = 5
_ENCODER_OPTION_MAX_BITRATE = 6
_ENCODER_OPTION_RC_FRAME_SKIP = 9
_ENCODER_OPTION_TRACE_LEVEL = 25
_SPATIAL_LAYER_ALL = 4
_WELS_LOG_ERROR = 1
_FRAME_TYPE_INVALID = 0
_FRAME_TYPE_IDR = 1
_FRAME_TYPE_SKIP = 4
_MAX_LAYERS = 128
_LAYER_STRIDES = (40, 56)  # sizeof(SLayerBSInfo) without / with rPsnr[3]
_FRAME_BS_INFO_SIZE = 8 + _MAX_LAYERS * 56 + 16


class OpenH264Error(CodecUnavailableError):
    """The OpenH264 library cannot be used (missing file, wrong library, too old)."""


class _Version(ctypes.Structure):
    _fields_ = [
        ("major", ctypes.c_uint),
        ("minor", ctypes.c_uint),
        ("revision", ctypes.c_uint),
        ("reserved", ctypes.c_uint),
    ]


class _EncParamBase(ctypes.Structure):
    _fields_ = [
        ("iUsageType", ctypes.c_int),
        ("iPicWidth", ctypes.c_int),
        ("iPicHeight", ctypes.c_int),
        ("iTargetBitrate", ctypes.c_int),
        ("iRCMode", ctypes.c_int),
        ("fMaxFrameRate", ctypes.c_float),
    ]


class _SourcePicture(ctypes.Structure):
    # Newer releases append three bools (bPsnrY/U/V); the padding keeps them zero.
    _fields_ = [
        ("iColorFormat", ctypes.c_int),
        ("iStride", ctypes.c_int * 4),
        ("pData", ctypes.c_void_p * 4),
        ("iPicWidth", ctypes.c_int),
        ("iPicHeight", ctypes.c_int),
        ("uiTimeStamp", ctypes.c_longlong),
        ("_psnr_flags", ctypes.c_ubyte * 8),
    ]


class _BitrateInfo(ctypes.Structure):
    _fields_ = [("iLayer", ctypes.c_int), ("iBitrate", ctypes.c_int)]


class _VideoProperty(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint), ("eVideoBsType", ctypes.c_int)]


class _DecodingParam(ctypes.Structure):
    _fields_ = [
        ("pFileNameRestructed", ctypes.c_char_p),
        ("uiCpuLoad", ctypes.c_uint),
        ("uiTargetDqLayer", ctypes.c_ubyte),
        ("eEcActiveIdc", ctypes.c_int),
        ("bParseOnly", ctypes.c_bool),
        ("sVideoProperty", _VideoProperty),
    ]


class _SysMemBuffer(ctypes.Structure):
    _fields_ = [
        ("iWidth", ctypes.c_int),
        ("iHeight", ctypes.c_int),
        ("iFormat", ctypes.c_int),
        ("iStride", ctypes.c_int * 2),
    ]


class _BufferInfo(ctypes.Structure):
    _fields_ = [
        ("iBufferStatus", ctypes.c_int),
        ("uiInBsTimeStamp", ctypes.c_ulonglong),
        ("uiOutYuvTimeStamp", ctypes.c_ulonglong),
        ("sSystemBuffer", _SysMemBuffer),
        ("pDst", ctypes.c_void_p * 3),
    ]


_P = ctypes.c_void_p
_ENC_INITIALIZE = (0, ctypes.CFUNCTYPE(ctypes.c_int, _P, ctypes.POINTER(_EncParamBase)))
_ENC_UNINITIALIZE = (3, ctypes.CFUNCTYPE(ctypes.c_int, _P))
_ENC_ENCODE_FRAME = (4, ctypes.CFUNCTYPE(ctypes.c_int, _P, ctypes.POINTER(_SourcePicture), _P))
_ENC_FORCE_INTRA = (6, ctypes.CFUNCTYPE(ctypes.c_int, _P, ctypes.c_bool))
_ENC_SET_OPTION = (7, ctypes.CFUNCTYPE(ctypes.c_int, _P, ctypes.c_int, _P))
_DEC_INITIALIZE = (0, ctypes.CFUNCTYPE(ctypes.c_long, _P, ctypes.POINTER(_DecodingParam)))
_DEC_UNINITIALIZE = (1, ctypes.CFUNCTYPE(ctypes.c_long, _P))
_DEC_DECODE_NO_DELAY = (
    3,
    ctypes.CFUNCTYPE(
        ctypes.c_int,
        _P,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.POINTER(_P * 3),
        ctypes.POINTER(_BufferInfo),
    ),
)


def _method(obj: int, entry: tuple[int, Any]) -> Any:
    """Function ``entry`` = (index, prototype) from the object's function table."""
    index, prototype = entry
    table = ctypes.c_void_p.from_address(obj).value
    if not table:
        raise OpenH264Error("OpenH264 object without a function table")
    address = ctypes.c_void_p.from_address(table + index * ctypes.sizeof(ctypes.c_void_p)).value
    return prototype(address)


class OpenH264Library:
    """A loaded ``libopenh264``, checked for the symbols and version this module needs."""

    _cache: ClassVar[dict[str, OpenH264Library]] = {}
    _lock = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.lib = ctypes.CDLL(path)
        except OSError as exc:
            raise OpenH264Error(f"cannot load OpenH264 library {path!r}: {exc}") from exc
        for symbol in (
            "WelsCreateSVCEncoder",
            "WelsDestroySVCEncoder",
            "WelsCreateDecoder",
            "WelsDestroyDecoder",
            "WelsGetCodecVersionEx",
        ):
            if not hasattr(self.lib, symbol):
                raise OpenH264Error(f"{path!r} is not an OpenH264 library (no {symbol})")
        version = _Version()
        self.lib.WelsGetCodecVersionEx.argtypes = [ctypes.POINTER(_Version)]
        self.lib.WelsGetCodecVersionEx.restype = None
        self.lib.WelsGetCodecVersionEx(ctypes.byref(version))
        self.version = (version.major, version.minor, version.revision)
        if self.version < MIN_VERSION or version.major > 2:
            raise OpenH264Error(
                f"OpenH264 {self.version_string} at {path!r} is not supported (need 2.x)"
            )
        self.lib.WelsCreateSVCEncoder.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        self.lib.WelsCreateSVCEncoder.restype = ctypes.c_int
        self.lib.WelsDestroySVCEncoder.argtypes = [ctypes.c_void_p]
        self.lib.WelsDestroySVCEncoder.restype = None
        self.lib.WelsCreateDecoder.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        self.lib.WelsCreateDecoder.restype = ctypes.c_long
        self.lib.WelsDestroyDecoder.argtypes = [ctypes.c_void_p]
        self.lib.WelsDestroyDecoder.restype = None

    @property
    def version_string(self) -> str:
        return ".".join(str(v) for v in self.version)

    @classmethod
    def load(cls, path: str) -> OpenH264Library:
        """The library at ``path`` (loaded once per path); raises :class:`OpenH264Error`."""
        with cls._lock:
            if path not in cls._cache:
                cls._cache[path] = cls(path)
            return cls._cache[path]


def _read_frame(info: ctypes.Array[ctypes.c_char], strides: tuple[int, ...]) -> tuple[bytes, int]:
    """Bitstream and ``eFrameType`` of an ``SFrameBSInfo``; the layout is found at run time.

    For each candidate ``SLayerBSInfo`` size the layers must sit back to back
    in one buffer (OpenH264 writes them so) and add up to ``iFrameSizeInBytes``;
    a pointer is only followed once the layout passed those checks so far.
    """
    base = ctypes.addressof(info)
    layer_count = ctypes.c_int.from_address(base).value
    if not 0 <= layer_count <= _MAX_LAYERS:
        raise OpenH264Error("OpenH264 returned an invalid layer count")
    for stride in strides:
        tail = base + 8 + _MAX_LAYERS * stride
        frame_type = ctypes.c_int.from_address(tail).value
        frame_size = ctypes.c_int.from_address(tail + 4).value
        if not 0 <= frame_size <= 1 << 28:
            continue
        chunks: list[bytes] = []
        expected: int | None = None
        total = 0
        for index in range(layer_count):
            layer = base + 8 + index * stride
            nal_count = ctypes.c_int.from_address(layer + 16).value
            lengths_ptr = ctypes.c_void_p.from_address(layer + 24).value
            buf_ptr = ctypes.c_void_p.from_address(layer + 32).value
            if not 0 <= nal_count <= _MAX_LAYERS or (nal_count and not (lengths_ptr and buf_ptr)):
                break
            if not nal_count or not lengths_ptr or not buf_ptr:
                continue
            if expected is not None and buf_ptr != expected:
                break
            size = sum((ctypes.c_int * nal_count).from_address(lengths_ptr))
            if not 0 <= size <= frame_size - total:
                break
            chunks.append(ctypes.string_at(buf_ptr, size))
            total += size
            expected = buf_ptr + size
        else:
            if total == frame_size:
                return b"".join(chunks), frame_type
    raise OpenH264Error("unrecognised OpenH264 SFrameBSInfo layout")


class OpenH264Encoder(Encoder):
    """H.264 Constrained Baseline encoder on Cisco's OpenH264 (``implementation_name`` "OpenH264").

    Example::

        encoder = OpenH264Encoder("/usr/lib/x86_64-linux-gnu/libopenh264.so.7")
        [encoded] = encoder.encode(frame)
    """

    codec = CODEC

    def __init__(self, path: str, settings: EncoderSettings | None = None) -> None:
        self._library = OpenH264Library.load(path)
        self._settings = settings or EncoderSettings()
        self._target_bitrate = self._settings.clamp(self._settings.bitrate)
        self._encoder: int | None = None
        self._size = (0, 0)
        self._applied_bitrate = 0
        self._frame_index = 0
        self._info = ctypes.create_string_buffer(_FRAME_BS_INFO_SIZE)
        self.in_place_bitrate_updates = 0
        self.reopen_count = 0

    @property
    def implementation_name(self) -> str:
        return "OpenH264"

    @property
    def library_version(self) -> str:
        return self._library.version_string

    @property
    def target_bitrate(self) -> int:
        return self._target_bitrate

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        self._target_bitrate = self._settings.clamp(bitrate)

    def _set_option(self, option: int, value: ctypes._CData) -> None:
        assert self._encoder is not None
        rc = _method(self._encoder, _ENC_SET_OPTION)(self._encoder, option, ctypes.addressof(value))
        if rc != 0:
            logger.debug("OpenH264 SetOption(%d) returned %d", option, rc)

    def _open(self, width: int, height: int) -> None:
        handle = ctypes.c_void_p()
        if self._library.lib.WelsCreateSVCEncoder(ctypes.byref(handle)) != 0 or not handle.value:
            raise OpenH264Error("WelsCreateSVCEncoder failed")
        self._encoder = handle.value
        param = _EncParamBase(
            iUsageType=_CAMERA_VIDEO_REAL_TIME,
            iPicWidth=width,
            iPicHeight=height,
            iTargetBitrate=self._target_bitrate,
            iRCMode=_RC_BITRATE_MODE,
            fMaxFrameRate=float(self._settings.framerate),
        )
        # Before Initialize too, or it logs a profile warning on every open.
        self._set_option(_ENCODER_OPTION_TRACE_LEVEL, ctypes.c_int(_WELS_LOG_ERROR))
        rc = _method(self._encoder, _ENC_INITIALIZE)(self._encoder, ctypes.byref(param))
        if rc != 0:
            self.close()
            raise OpenH264Error(f"OpenH264 Initialize failed ({rc}) for {width}x{height}")
        self._set_option(_ENCODER_OPTION_TRACE_LEVEL, ctypes.c_int(_WELS_LOG_ERROR))
        self._set_option(_ENCODER_OPTION_DATAFORMAT, ctypes.c_int(_VIDEO_FORMAT_I420))
        self._set_option(
            _ENCODER_OPTION_IDR_INTERVAL, ctypes.c_int(self._settings.keyframe_interval)
        )
        # Never skip frames: one frame in, one frame out.
        self._set_option(_ENCODER_OPTION_RC_FRAME_SKIP, ctypes.c_bool(False))
        self._size = (width, height)
        self._applied_bitrate = self._target_bitrate

    def _apply_bitrate(self) -> None:
        bitrate = self._target_bitrate
        self._set_option(_ENCODER_OPTION_BITRATE, _BitrateInfo(_SPATIAL_LAYER_ALL, bitrate))
        self._set_option(_ENCODER_OPTION_MAX_BITRATE, _BitrateInfo(_SPATIAL_LAYER_ALL, bitrate))
        self._applied_bitrate = bitrate
        self.in_place_bitrate_updates += 1

    def encode(self, frame: av.frame.Frame, force_keyframe: bool = False) -> list[EncodedFrame]:
        if not isinstance(frame, VideoFrame):
            raise TypeError(f"OpenH264 encoder takes av.VideoFrame, not {type(frame).__name__}")
        rtp_ts = rtp_timestamp_of(
            frame,
            VIDEO_CLOCK_RATE,
            self._frame_index * VIDEO_CLOCK_RATE // self._settings.framerate,
        )
        width, height = frame.width & ~1, frame.height & ~1
        if self._encoder is not None and (width, height) != self._size:
            self.close()
            self.reopen_count += 1
        if self._encoder is None:
            self._open(width, height)
        elif self._target_bitrate != self._applied_bitrate:
            self._apply_bitrate()
        assert self._encoder is not None
        source = frame if frame.format.name == "yuv420p" else frame.reformat(format="yuv420p")
        planes = [np.ascontiguousarray(np.asarray(p)) for p in _plane_views(source, width, height)]
        picture = _SourcePicture(
            iColorFormat=_VIDEO_FORMAT_I420, iPicWidth=width, iPicHeight=height
        )
        for i, plane in enumerate(planes):
            picture.iStride[i] = plane.strides[0]
            picture.pData[i] = plane.ctypes.data
        picture.uiTimeStamp = rtp_ts * 1000 // VIDEO_CLOCK_RATE
        if force_keyframe:
            _method(self._encoder, _ENC_FORCE_INTRA)(self._encoder, True)
        ctypes.memset(self._info, 0, len(self._info))
        rc = _method(self._encoder, _ENC_ENCODE_FRAME)(
            self._encoder, ctypes.byref(picture), ctypes.addressof(self._info)
        )
        self._frame_index += 1
        if rc != 0:
            raise OpenH264Error(f"OpenH264 EncodeFrame failed ({rc})")
        data, frame_type = _read_frame(self._info, self._layer_strides())
        if not data or frame_type in (_FRAME_TYPE_INVALID, _FRAME_TYPE_SKIP):
            return []
        return [
            EncodedFrame(
                data=data,
                timestamp=rtp_ts,
                codec=CODEC,
                is_keyframe=frame_type == _FRAME_TYPE_IDR,
                width=width,
                height=height,
                frame_id=self._frame_index - 1,
            )
        ]

    def _layer_strides(self) -> tuple[int, ...]:
        # SLayerBSInfo is 40 bytes in 2.3.1 and 56 once rPsnr[3] is there
        # (2.6.0 has it); try the likelier one first.
        return _LAYER_STRIDES if self._library.version < (2, 4, 0) else _LAYER_STRIDES[::-1]

    def close(self) -> None:
        if self._encoder is not None:
            encoder, self._encoder = self._encoder, None
            _method(encoder, _ENC_UNINITIALIZE)(encoder)
            self._library.lib.WelsDestroySVCEncoder(encoder)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _plane_views(frame: VideoFrame, width: int, height: int) -> list[np.ndarray]:
    """Y, U, V of a yuv420p frame as 2-D arrays cropped to ``width`` x ``height``."""
    views = []
    for index, plane in enumerate(frame.planes):
        w, h = (width, height) if index == 0 else (width // 2, height // 2)
        array = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)
        views.append(array[:h, :w])
    return views


class OpenH264Decoder(Decoder):
    """H.264 decoder on Cisco's OpenH264 (``DecodeFrameNoDelay``: no output delay)."""

    codec = CODEC

    def __init__(self, path: str) -> None:
        self._library = OpenH264Library.load(path)
        handle = ctypes.c_void_p()
        if self._library.lib.WelsCreateDecoder(ctypes.byref(handle)) != 0 or not handle.value:
            raise OpenH264Error("WelsCreateDecoder failed")
        self._decoder: int | None = handle.value
        param = _DecodingParam()
        param.uiTargetDqLayer = 0xFF
        param.eEcActiveIdc = 0  # ERROR_CON_DISABLE: report errors, do not conceal
        param.sVideoProperty.size = ctypes.sizeof(_VideoProperty)
        param.sVideoProperty.eVideoBsType = 0  # VIDEO_BITSTREAM_AVC
        rc = _method(self._decoder, _DEC_INITIALIZE)(self._decoder, ctypes.byref(param))
        if rc != 0:
            self.close()
            raise OpenH264Error(f"OpenH264 decoder Initialize failed ({rc})")

    @property
    def implementation_name(self) -> str:
        return "OpenH264"

    def decode(self, frame: EncodedFrame) -> list[VideoFrame]:
        if self._decoder is None:
            raise DecodeError("OpenH264 decoder is closed")
        planes = (ctypes.c_void_p * 3)()
        info = _BufferInfo()
        state = _method(self._decoder, _DEC_DECODE_NO_DELAY)(
            self._decoder, frame.data, len(frame.data), ctypes.byref(planes), ctypes.byref(info)
        )
        if state != 0 and info.iBufferStatus != 1:
            raise DecodeError(f"OpenH264 DecodeFrameNoDelay failed (state 0x{state:x})")
        if info.iBufferStatus != 1:
            return []
        buffer = info.sSystemBuffer
        width, height = buffer.iWidth, buffer.iHeight
        luma_stride, chroma_stride = buffer.iStride[0], buffer.iStride[1]
        if width <= 0 or height <= 0 or not all(info.pDst):
            raise DecodeError("OpenH264 returned an empty picture")
        y = _copy_plane(info.pDst[0], luma_stride, width, height)
        u = _copy_plane(info.pDst[1], chroma_stride, width // 2, height // 2)
        v = _copy_plane(info.pDst[2], chroma_stride, width // 2, height // 2)
        packed = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(height * 3 // 2, width)
        out = VideoFrame.from_ndarray(packed, format="yuv420p")
        out.pts = frame.timestamp
        return [out]

    def close(self) -> None:
        if self._decoder is not None:
            decoder, self._decoder = self._decoder, None
            _method(decoder, _DEC_UNINITIALIZE)(decoder)
            self._library.lib.WelsDestroyDecoder(decoder)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _copy_plane(address: int, stride: int, width: int, height: int) -> np.ndarray:
    raw = ctypes.string_at(address, stride * height)
    return np.frombuffer(raw, dtype=np.uint8).reshape(height, stride)[:, :width]
