"""Probe worker: really opens encoders/decoders, in a child process.

Run as a *script* (``python path/to/_probe_worker.py``), not as
``-m sora_async...``, so it imports nothing from the package: a probe must
work even when the rest of ``sora_async`` cannot be imported, and a driver
that crashes or hangs (NVDEC, QSV, AMF runtimes) takes down only this child.

Input on stdin (JSON)::

    {"width": 320, "height": 240,
     "probes": [{"key": "...", "role": "encoder", "codec": "H264",
                 "pyav_name": "h264_nvenc", "hwaccel": null, "pix_fmt": "yuv420p",
                 "engine": "pyav", "openh264": null}, ...]}

Output on stdout: one JSON object per probe and line, as each finishes
(``{"key": ..., "ok": bool, "error": str|null, "detail": {...}}``), so the
parent keeps the results that came out before a crash.
"""

from __future__ import annotations

import ctypes
import fractions
import json
import sys
from typing import Any

_SAMPLE_ENCODERS = {
    "VP8": ("libvpx", {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}),
    "VP9": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}),
    "AV1": ("libsvtav1", {"preset": "12", "svtav1-params": "pred-struct=1:rc=2"}),
    "H264": ("libx264", {"preset": "ultrafast", "tune": "zerolatency"}),
    "H265": (
        "libx265",
        {"preset": "ultrafast", "tune": "zerolatency", "x265-params": "log-level=error"},
    ),
}


def _test_frame(av: Any, width: int, height: int, pix_fmt: str) -> Any:
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width]
    luma = ((xx + yy) % 256).astype(np.uint8)
    chroma = np.full((height // 2, width), 128, dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(np.concatenate([luma, chroma]), format="yuv420p")
    if pix_fmt != "yuv420p":
        frame = frame.reformat(format=pix_fmt)
    frame.pts = 0
    frame.time_base = fractions.Fraction(1, 30)
    return frame


def _open_encoder(
    av: Any, name: str, width: int, height: int, pix_fmt: str, options: dict[str, str]
) -> Any:
    ctx = av.CodecContext.create(name, "w")
    ctx.width = width
    ctx.height = height
    ctx.pix_fmt = pix_fmt
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.framerate = fractions.Fraction(30, 1)
    ctx.bit_rate = 300_000
    ctx.max_b_frames = 0
    ctx.options = options
    ctx.open()
    return ctx


def _encode_one(av: Any, ctx: Any, frame: Any) -> list[Any]:
    packets = list(ctx.encode(frame))
    packets += list(ctx.encode(None))
    return packets


_samples: dict[str, bytes] = {}


def _sample(av: Any, codec: str, width: int, height: int) -> bytes:
    if codec not in _samples:
        name, options = _SAMPLE_ENCODERS[codec]
        ctx = _open_encoder(av, name, width, height, "yuv420p", options)
        packets = _encode_one(av, ctx, _test_frame(av, width, height, "yuv420p"))
        if not packets:
            raise RuntimeError(f"no sample {codec} bitstream from {name}")
        _samples[codec] = bytes(packets[0])
    return _samples[codec]


def probe_encoder(av: Any, spec: dict[str, Any], width: int, height: int) -> dict[str, Any]:
    pix_fmt = spec.get("pix_fmt") or "yuv420p"
    ctx = _open_encoder(av, spec["pyav_name"], width, height, pix_fmt, {})
    packets = _encode_one(av, ctx, _test_frame(av, width, height, pix_fmt))
    if not packets:
        raise RuntimeError("the encoder produced no packet")
    return {"bytes": sum(p.size for p in packets)}


def probe_decoder(av: Any, spec: dict[str, Any], width: int, height: int) -> dict[str, Any]:
    from av.codec.hwaccel import HWAccel

    data = _sample(av, spec["codec"], width, height)
    hwaccel = (
        HWAccel(spec["hwaccel"], allow_software_fallback=False) if spec.get("hwaccel") else None
    )
    ctx = av.CodecContext.create(spec["pyav_name"], "r", hwaccel=hwaccel)
    ctx.open()
    frames = list(ctx.decode(av.Packet(data)))
    frames += list(ctx.decode(None))
    if not frames:
        raise RuntimeError("the decoder produced no frame")
    if (frames[0].width, frames[0].height) != (width, height):
        raise RuntimeError(f"decoded {frames[0].width}x{frames[0].height}, not {width}x{height}")
    if hwaccel is not None and not getattr(ctx, "is_hwaccel", False):
        raise RuntimeError("decoded in software, not through the hardware device")
    return {"format": frames[0].format.name}


class _OpenH264Version(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint) for n in ("major", "minor", "revision", "reserved")]


def probe_openh264(spec: dict[str, Any], width: int = 320, height: int = 240) -> dict[str, Any]:
    """A tiny encode (encoder) or decode (decoder) through our ctypes binding.

    The binding is the one exception to "nothing from the package": when it
    cannot be imported, the library is only loaded, version-checked and an
    encoder/decoder object created and destroyed.
    """
    path = spec.get("openh264")
    if not path:
        raise RuntimeError("no libopenh264 path given")
    try:
        from sora_async.codecs import openh264 as binding
    except Exception:
        return _probe_openh264_objects(path, spec["role"])
    import av

    frame = _test_frame(av, width, height, "yuv420p")
    detail: dict[str, Any]
    if spec["role"] == "encoder":
        encoder = binding.OpenH264Encoder(path)
        encoded = encoder.encode(frame, force_keyframe=True)
        encoder.close()
        if not encoded or not encoded[0].is_keyframe:
            raise RuntimeError("the encoder produced no key frame")
        detail = {"bytes": len(encoded[0].data)}
    else:
        # An x264 sample, so that the decoder probe does not depend on the encoder.
        from sora_async.codecs.base import EncodedFrame

        sample = EncodedFrame(data=_sample(av, "H264", width, height), timestamp=0, codec="H264")
        decoder = binding.OpenH264Decoder(path)
        frames = decoder.decode(sample)
        decoder.close()
        if not frames or (frames[0].width, frames[0].height) != (width, height):
            raise RuntimeError("the decoder produced no frame of the sample's size")
        detail = {"format": frames[0].format.name}
    library = binding.OpenH264Library.load(path)
    return {"version": library.version_string, **detail}


def _probe_openh264_objects(path: str, role: str) -> dict[str, Any]:
    lib = ctypes.CDLL(path)
    version = _OpenH264Version()
    lib.WelsGetCodecVersionEx.argtypes = [ctypes.POINTER(_OpenH264Version)]
    lib.WelsGetCodecVersionEx(ctypes.byref(version))
    if version.major != 2:
        raise RuntimeError(f"OpenH264 {version.major}.{version.minor} is not supported (need 2.x)")
    handle = ctypes.c_void_p()
    if role == "encoder":
        if lib.WelsCreateSVCEncoder(ctypes.byref(handle)) != 0 or not handle:
            raise RuntimeError("WelsCreateSVCEncoder failed")
        lib.WelsDestroySVCEncoder.argtypes = [ctypes.c_void_p]
        lib.WelsDestroySVCEncoder(handle)
    else:
        if lib.WelsCreateDecoder(ctypes.byref(handle)) != 0 or not handle:
            raise RuntimeError("WelsCreateDecoder failed")
        lib.WelsDestroyDecoder.argtypes = [ctypes.c_void_p]
        lib.WelsDestroyDecoder(handle)
    return {"version": f"{version.major}.{version.minor}.{version.revision}"}


def main() -> None:
    request = json.loads(sys.stdin.read())
    width = int(request.get("width", 320))
    height = int(request.get("height", 240))
    av: Any = None
    for spec in request["probes"]:
        result: dict[str, Any] = {"key": spec["key"], "ok": False, "error": None, "detail": {}}
        try:
            if spec.get("engine") == "openh264":
                result["detail"] = probe_openh264(spec, width, height)
            else:
                if av is None:
                    import av as av_module

                    av_module.logging.set_level(av_module.logging.PANIC)
                    av = av_module
                if spec["role"] == "encoder":
                    result["detail"] = probe_encoder(av, spec, width, height)
                else:
                    result["detail"] = probe_decoder(av, spec, width, height)
            result["ok"] = True
        except BaseException as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
