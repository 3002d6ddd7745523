"""The one place that reaches under PyAV: ``av_opt_set`` on an open ``AVCodecContext``.

Why: libx264 changes its bit rate in place when ``AVCodecContext.rc_max_rate``
and ``rc_buffer_size`` change between frames (FFmpeg ``libx264.c``
``reconfig_encoder`` → ``x264_encoder_reconfig``; x264 only re-targets the rate
when VBV is on). PyAV 18 exposes ``bit_rate`` as writable but ``max_bit_rate``
read-only and ``rc_buffer_size`` not at all, so without this seam every
bandwidth-estimator step would re-create the encoder and cost a key frame.

Measured here (320x240, 30 fps, libx264 zerolatency, VBV 1 s): 600→150 kbps
takes effect on the next frame; 150→600 kbps reaches ~80 % within 2 s. Setting
only ``bit_rate`` changed nothing for libx264, libx265, libvpx, libvpx-vp9 or
libsvtav1 (identical output sizes to a run without the change).

How: PyAV's ``CodecContext`` is a Cython extension type whose first C field
after the object header and the Cython vtable pointer is ``AVCodecContext
*ptr`` (``av/codec/context.pxd``). We read that pointer only on PyAV versions
this layout was checked on, then *verify* it: ``av_opt_get_int(ptr, "b")``
must equal ``ctx.bit_rate`` and ``av_opt_get_int(ptr, "g")`` must equal
``ctx.gop_size``. Anything unexpected disables the seam and the encoder falls
back to re-creating itself. ``tests/test_codecs_pyav.py`` covers the seam.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
from typing import Any

import av

logger = logging.getLogger("sora_async.codecs")

#: PyAV major versions whose ``CodecContext`` layout was checked.
_CHECKED_PYAV_MAJORS = frozenset({18})

_avutil: Any = None
_avutil_loaded = False


def _load_avutil() -> Any:
    global _avutil, _avutil_loaded
    if _avutil_loaded:
        return _avutil
    _avutil_loaded = True
    libs_dir = os.path.join(os.path.dirname(os.path.dirname(av.__file__)), "av.libs")
    candidates = sorted(glob.glob(os.path.join(libs_dir, "libavutil*.so*")))
    try:
        lib = ctypes.CDLL(candidates[0]) if candidates else ctypes.CDLL("libavutil.so")
        lib.av_opt_get_int.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int64),
        ]
        lib.av_opt_get_int.restype = ctypes.c_int
        lib.av_opt_set_int.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int64,
            ctypes.c_int,
        ]
        lib.av_opt_set_int.restype = ctypes.c_int
        _avutil = lib
    except (OSError, AttributeError) as exc:  # pragma: no cover - platform dependent
        logger.debug("libavutil not loadable for the encoder seam: %s", exc)
        _avutil = None
    return _avutil


def _pyav_major() -> int:
    try:
        return int(str(av.__version__).split(".")[0])
    except ValueError:  # pragma: no cover
        return -1


def codec_context_pointer(ctx: Any) -> int | None:
    """Address of the ``AVCodecContext`` behind an open PyAV context, verified, or None."""
    if _pyav_major() not in _CHECKED_PYAV_MAJORS or not getattr(ctx, "is_open", False):
        return None
    lib = _load_avutil()
    if lib is None:
        return None
    offset = object.__basicsize__ + ctypes.sizeof(ctypes.c_void_p)
    pointer = ctypes.c_void_p.from_address(id(ctx) + offset).value
    if not pointer:
        return None
    value = ctypes.c_int64()
    for option, expected in (("b", ctx.bit_rate or 0), ("g", ctx.gop_size)):
        if lib.av_opt_get_int(pointer, option.encode(), 0, ctypes.byref(value)) < 0:
            return None
        if value.value != expected:
            return None
    return int(pointer)


def set_codec_context_options(ctx: Any, options: dict[str, int]) -> bool:
    """``av_opt_set_int`` each option on the open context; False if the seam is unusable."""
    pointer = codec_context_pointer(ctx)
    if pointer is None:
        return False
    lib = _load_avutil()
    for name, value in options.items():
        if lib.av_opt_set_int(pointer, name.encode(), int(value), 0) < 0:
            logger.debug("av_opt_set_int(%s=%s) failed", name, value)
            return False
    return True
