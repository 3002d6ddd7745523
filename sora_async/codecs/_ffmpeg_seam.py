"""The one place that reaches under PyAV: ``av_opt_set`` on an open ``AVCodecContext``,
and ``vpx_codec_enc_config_set`` / ``vpx_codec_control`` on the libvpx encoder under
it (see the libvpx sections below; the same verification guards both).

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


# --- libvpx: the bit rate in place ---------------------------------------------------
#
# FFmpeg's libvpxenc applies a new ``bit_rate`` only at ``avcodec_open2`` (measured
# with FFmpeg 8 / libavcodec 62: setting ``b``/``maxrate`` between frames changes
# nothing), so every estimator step re-created the encoder and cost a key frame.
# libvpx itself re-targets in place (``vpx_codec_enc_config_set``, what libwebrtc's
# LibvpxVp8Encoder::SetRates calls). The encoder's ``vpx_codec_ctx_t`` sits in
# FFmpeg's private context (``VPxContext``: ``AVClass *class`` then ``struct
# vpx_codec_ctx encoder``); its ``config.enc`` points at libvpx's own copy of the
# configuration (``vp8e_init``/``encoder_init`` copy it in). Every step is verified
# before anything is written: the private class's name, the encoder's interface
# pointer against ``vpx_codec_vp8_cx()``/``vpx_codec_vp9_cx()`` of the libvpx that
# PyAV ships, and the configuration's size, time base, lag, rate-control mode and
# current target against what was opened; anything unexpected answers False and the
# encoder is re-created as before.

#: AVCodecContext: av_class, log_level_offset, codec_type, codec, codec_id, codec_tag,
#: then ``void *priv_data`` (libavcodec/avcodec.h, unchanged since FFmpeg 4).
_PRIV_DATA_OFFSET = 32
#: VPxContext: ``AVClass *class`` then ``struct vpx_codec_ctx encoder``.
_VPX_ENCODER_OFFSET = 8
#: vpx_codec_ctx_t: name, iface, err, err_detail, init_flags, then ``config``.
_VPX_IFACE_OFFSET = 8
_VPX_CONFIG_OFFSET = 40
#: vpx_codec_enc_cfg_t fields (vpx_encoder.h, 64-bit layout).
_CFG_W, _CFG_H, _CFG_TB_NUM, _CFG_TB_DEN = 12, 16, 28, 32
_CFG_LAG, _CFG_END_USAGE, _CFG_TARGET = 44, 72, 112
_VPX_CBR = 1
_VPX_ENCODERS = {
    "libvpx": (b"libvpx-vp8 encoder", "vpx_codec_vp8_cx"),
    "libvpx-vp9": (b"libvpx-vp9 encoder", "vpx_codec_vp9_cx"),
}

_libvpx: Any = None
_libvpx_loaded = False


def _load_libvpx() -> Any:
    global _libvpx, _libvpx_loaded
    if _libvpx_loaded:
        return _libvpx
    _libvpx_loaded = True
    libs_dir = os.path.join(os.path.dirname(os.path.dirname(av.__file__)), "av.libs")
    candidates = sorted(glob.glob(os.path.join(libs_dir, "libvpx*.so*")))
    if not candidates:
        return None
    try:
        lib = ctypes.CDLL(candidates[0])
        for name in ("vpx_codec_vp8_cx", "vpx_codec_vp9_cx"):
            getattr(lib, name).restype = ctypes.c_void_p
            getattr(lib, name).argtypes = []
        lib.vpx_codec_enc_config_set.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.vpx_codec_enc_config_set.restype = ctypes.c_int
        # vpx_codec_control() is a macro over the variadic vpx_codec_control_();
        # every control used here takes one int.
        lib.vpx_codec_control_.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.vpx_codec_control_.restype = ctypes.c_int
        _libvpx = lib
    except (OSError, AttributeError) as exc:  # pragma: no cover - platform dependent
        logger.debug("libvpx not loadable for the encoder seam: %s", exc)
    return _libvpx


def _u32(address: int) -> int:
    return int(ctypes.c_uint32.from_address(address).value)


def _pointer(address: int) -> int:
    return int(ctypes.c_void_p.from_address(address).value or 0)


def _verified_libvpx(ctx: Any, encoder_name: str) -> tuple[Any, int, int] | None:
    """``(libvpx, vpx_codec_ctx_t address, its config address)`` of an open FFmpeg
    ``libvpx``/``libvpx-vp9`` encoder, each step verified (module comment), or None."""
    expected = _VPX_ENCODERS.get(encoder_name)
    lib = _load_libvpx()
    if expected is None or lib is None or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    pointer = codec_context_pointer(ctx)
    if pointer is None:
        return None
    class_name, iface_function = expected
    priv = _pointer(pointer + _PRIV_DATA_OFFSET)
    av_class = _pointer(priv) if priv else 0
    if not av_class or ctypes.c_char_p.from_address(av_class).value != class_name:
        return None
    encoder = priv + _VPX_ENCODER_OFFSET
    if _pointer(encoder + _VPX_IFACE_OFFSET) != getattr(lib, iface_function)():
        return None
    config = _pointer(encoder + _VPX_CONFIG_OFFSET)
    if not config:
        return None
    time_base = ctx.time_base
    checks = (
        (_CFG_W, ctx.width),
        (_CFG_H, ctx.height),
        (_CFG_TB_NUM, time_base.numerator),
        (_CFG_TB_DEN, time_base.denominator),
        (_CFG_LAG, 0),
        (_CFG_END_USAGE, _VPX_CBR),
    )
    if any(_u32(config + offset) != value for offset, value in checks):
        return None
    return lib, encoder, config


def set_libvpx_bitrate(ctx: Any, encoder_name: str, bitrate: int) -> bool:
    """Re-target an open FFmpeg ``libvpx``/``libvpx-vp9`` encoder to ``bitrate`` (bps)
    in place; False (nothing changed) if the seam cannot be verified here."""
    verified = _verified_libvpx(ctx, encoder_name)
    if verified is None:
        return False
    lib, encoder, config = verified
    current = (int(ctx.bit_rate) + 500) // 1000
    if _u32(config + _CFG_TARGET) != current:
        return False
    kbps = max(1, (int(bitrate) + 500) // 1000)
    ctypes.c_uint32.from_address(config + _CFG_TARGET).value = kbps
    if lib.vpx_codec_enc_config_set(encoder, config) != 0:
        ctypes.c_uint32.from_address(config + _CFG_TARGET).value = current
        return False
    # keep FFmpeg's view in step (and the next verification of this seam)
    ctx.bit_rate = kbps * 1000
    return True


# --- libvpx: controls FFmpeg has no option for -------------------------------------
#
# ``vpx_codec_control`` ids (vpx/vp8cx.h, ``enum vp8e_enc_control_id``; part of the
# libvpx ABI, unchanged since they were added).
#: speed; FFmpeg caps ``cpu-used`` at 8 for VP9, libvpx takes -9..9 (VP8 -16..16).
VP8E_SET_CPUUSED = 13


def libvpx_control(ctx: Any, encoder_name: str, control_id: int, value: int) -> bool:
    """``vpx_codec_control(encoder, control_id, value)`` on an open FFmpeg
    ``libvpx``/``libvpx-vp9`` encoder; False if the seam cannot be verified here or
    libvpx refused the control (then nothing changed)."""
    verified = _verified_libvpx(ctx, encoder_name)
    if verified is None:
        return False
    lib, encoder, _ = verified
    return bool(lib.vpx_codec_control_(encoder, int(control_id), int(value)) == 0)
