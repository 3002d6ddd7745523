"""Which FFmpeg codec (through PyAV) implements each implementation × codec × role.

The table is data only; how an encoder is configured (low-latency options)
is the codec layer's business (``sora_async/codecs/hardware.py`` and the codec
modules). Order matters: for one implementation, codec and role the first
backend that works is used.

What the PyAV 18.1 Linux wheel has (``aiortc-notes.md`` A.1, re-checked here):

- encoders ``h264_nvenc``/``hevc_nvenc``/``av1_nvenc``, ``*_qsv`` (H.264, H.265,
  AV1, VP9), ``h264_amf``/``hevc_amf``/``av1_amf``, ``h264_v4l2m2m``/``hevc_v4l2m2m``;
- decoders ``*_cuvid`` (H.264, H.265, VP8, VP9, AV1), ``*_qsv``, ``*_amf``,
  ``*_v4l2m2m``, and ``hwaccel`` device types ``cuda``, ``qsv``, ``drm``, ``amf``;
- no ``*_vaapi`` codecs and no ``vaapi`` device (VAAPI entries below probe as
  unavailable there, but are kept for FFmpeg builds that have them), no
  ``*_videotoolbox`` (macOS wheels only), no ``libopenh264``, no libaom/rav1e.

NVIDIA: datacenter Hopper GPUs (H100/H200) have NVDEC but no NVENC, so the
NVIDIA encoders must be probed, never assumed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

from .types import VideoCodecImplementation, VideoCodecType

Role = Literal["encoder", "decoder"]
Engine = Literal["pyav", "openh264"]

_I = VideoCodecImplementation
_T = VideoCodecType


@dataclass(frozen=True)
class Backend:
    """One way to encode or decode one codec.

    ``pyav_name`` is the FFmpeg codec name given to ``av.CodecContext.create``;
    ``hwaccel`` is an FFmpeg hardware device type used with that (native)
    decoder (``HWAccel("cuda")``). ``implementation_name`` is what stats
    report (``encoderImplementation``/``decoderImplementation``).
    ``platforms`` lists ``sys.platform`` values it applies to (empty: all).
    """

    implementation: VideoCodecImplementation
    codec: VideoCodecType
    role: Role
    pyav_name: str
    implementation_name: str
    hwaccel: str | None = None
    platforms: tuple[str, ...] = ()
    engine: Engine = "pyav"

    @property
    def key(self) -> str:
        """Stable identifier, e.g. ``"nvidia_video_codec_sdk:H264:decoder:h264+cuda"``."""
        accel = f"+{self.hwaccel}" if self.hwaccel else ""
        return (
            f"{self.implementation.json_name}:{self.codec.name}:{self.role}:{self.pyav_name}{accel}"
        )

    @property
    def is_hardware(self) -> bool:
        """True unless this is a software codec (INTERNAL on CPU, OpenH264)."""
        if self.hwaccel is not None or self.pyav_name.endswith("_videotoolbox"):
            return True
        return self.implementation not in (_I.INTERNAL, _I.CISCO_OPENH264)

    def applies_to(self, platform: str | None = None) -> bool:
        """Whether the backend exists on ``platform`` (default: this one)."""
        platform = sys.platform if platform is None else platform
        return not self.platforms or platform in self.platforms


def _enc(
    impl: VideoCodecImplementation,
    codec: VideoCodecType,
    name: str,
    label: str,
    platforms: tuple[str, ...] = (),
    engine: Engine = "pyav",
) -> Backend:
    return Backend(impl, codec, "encoder", name, label, platforms=platforms, engine=engine)


def _dec(
    impl: VideoCodecImplementation,
    codec: VideoCodecType,
    name: str,
    label: str,
    hwaccel: str | None = None,
    platforms: tuple[str, ...] = (),
    engine: Engine = "pyav",
) -> Backend:
    return Backend(impl, codec, "decoder", name, label, hwaccel, platforms, engine)


_LINUX = ("linux",)
_MAC = ("darwin",)

#: Every known backend, in preference order within (implementation, codec, role).
BACKENDS: tuple[Backend, ...] = (
    # --- INTERNAL: software; VideoToolbox first on macOS for H.264/H.265 (as the official SDK).
    _enc(_I.INTERNAL, _T.VP8, "libvpx", "libvpx"),
    _enc(_I.INTERNAL, _T.VP9, "libvpx-vp9", "libvpx"),
    _enc(_I.INTERNAL, _T.AV1, "libsvtav1", "SVT-AV1"),
    _enc(_I.INTERNAL, _T.H264, "h264_videotoolbox", "VideoToolbox", platforms=_MAC),
    _enc(_I.INTERNAL, _T.H264, "libx264", "x264"),
    _enc(_I.INTERNAL, _T.H265, "hevc_videotoolbox", "VideoToolbox", platforms=_MAC),
    _enc(_I.INTERNAL, _T.H265, "libx265", "x265"),
    # FFmpeg's own VP8 decoder is the fastest here (0.47 ms vs libvpx 0.54 ms/frame at 320x240).
    _dec(_I.INTERNAL, _T.VP8, "vp8", "FFmpeg"),
    _dec(_I.INTERNAL, _T.VP8, "libvpx", "libvpx"),
    _dec(_I.INTERNAL, _T.VP9, "vp9", "FFmpeg"),
    _dec(_I.INTERNAL, _T.VP9, "libvpx-vp9", "libvpx"),
    # The native "av1" decoder needs a hardware accelerator; dav1d is the software path.
    _dec(_I.INTERNAL, _T.AV1, "libdav1d", "dav1d"),
    _dec(_I.INTERNAL, _T.H264, "h264", "VideoToolbox", hwaccel="videotoolbox", platforms=_MAC),
    _dec(_I.INTERNAL, _T.H264, "h264", "FFmpeg"),
    _dec(_I.INTERNAL, _T.H265, "hevc", "VideoToolbox", hwaccel="videotoolbox", platforms=_MAC),
    _dec(_I.INTERNAL, _T.H265, "hevc", "FFmpeg"),
    # --- CISCO_OPENH264: the user's libopenh264 through ctypes (not in the PyAV wheel).
    _enc(_I.CISCO_OPENH264, _T.H264, "openh264", "OpenH264", engine="openh264"),
    _dec(_I.CISCO_OPENH264, _T.H264, "openh264", "OpenH264", engine="openh264"),
    # --- NVIDIA: NVENC encoders; NVDEC through hwaccel=cuda (no frame delay) then *_cuvid.
    _enc(_I.NVIDIA_VIDEO_CODEC_SDK, _T.H264, "h264_nvenc", "NvCodec"),
    _enc(_I.NVIDIA_VIDEO_CODEC_SDK, _T.H265, "hevc_nvenc", "NvCodec"),
    _enc(_I.NVIDIA_VIDEO_CODEC_SDK, _T.AV1, "av1_nvenc", "NvCodec"),
    _dec(_I.NVIDIA_VIDEO_CODEC_SDK, _T.VP8, "vp8", "NvCodec", hwaccel="cuda"),
    _dec(_I.NVIDIA_VIDEO_CODEC_SDK, _T.VP8, "vp8_cuvid", "NvCodec"),
    _dec(_I.NVIDIA_VIDEO_CODEC_SDK, _T.VP9, "vp9", "NvCodec", hwaccel="cuda"),
    _dec(_I.NVIDIA_VIDEO_CODEC_SDK, _T.VP9, "vp9_cuvid", "NvCodec"),
    _dec(_I.NVIDIA_VIDEO_CODEC_SDK, _T.AV1, "av1", "NvCodec", hwaccel="cuda"),
    _dec(_I.NVIDIA_VIDEO_CODEC_SDK, _T.AV1, "av1_cuvid", "NvCodec"),
    _dec(_I.NVIDIA_VIDEO_CODEC_SDK, _T.H264, "h264", "NvCodec", hwaccel="cuda"),
    _dec(_I.NVIDIA_VIDEO_CODEC_SDK, _T.H264, "h264_cuvid", "NvCodec"),
    _dec(_I.NVIDIA_VIDEO_CODEC_SDK, _T.H265, "hevc", "NvCodec", hwaccel="cuda"),
    _dec(_I.NVIDIA_VIDEO_CODEC_SDK, _T.H265, "hevc_cuvid", "NvCodec"),
    # --- INTEL_VPL: oneVPL/QSV, VAAPI as the Linux fallback.
    _enc(_I.INTEL_VPL, _T.VP9, "vp9_qsv", "IntelVPL"),
    _enc(_I.INTEL_VPL, _T.AV1, "av1_qsv", "IntelVPL"),
    _enc(_I.INTEL_VPL, _T.AV1, "av1_vaapi", "VAAPI", platforms=_LINUX),
    _enc(_I.INTEL_VPL, _T.H264, "h264_qsv", "IntelVPL"),
    _enc(_I.INTEL_VPL, _T.H264, "h264_vaapi", "VAAPI", platforms=_LINUX),
    _enc(_I.INTEL_VPL, _T.H265, "hevc_qsv", "IntelVPL"),
    _enc(_I.INTEL_VPL, _T.H265, "hevc_vaapi", "VAAPI", platforms=_LINUX),
    _dec(_I.INTEL_VPL, _T.VP8, "vp8_qsv", "IntelVPL"),
    _dec(_I.INTEL_VPL, _T.VP9, "vp9_qsv", "IntelVPL"),
    _dec(_I.INTEL_VPL, _T.VP9, "vp9", "VAAPI", hwaccel="vaapi", platforms=_LINUX),
    _dec(_I.INTEL_VPL, _T.AV1, "av1_qsv", "IntelVPL"),
    _dec(_I.INTEL_VPL, _T.AV1, "av1", "VAAPI", hwaccel="vaapi", platforms=_LINUX),
    _dec(_I.INTEL_VPL, _T.H264, "h264_qsv", "IntelVPL"),
    _dec(_I.INTEL_VPL, _T.H264, "h264", "VAAPI", hwaccel="vaapi", platforms=_LINUX),
    _dec(_I.INTEL_VPL, _T.H265, "hevc_qsv", "IntelVPL"),
    _dec(_I.INTEL_VPL, _T.H265, "hevc", "VAAPI", hwaccel="vaapi", platforms=_LINUX),
    # --- AMD_AMF
    _enc(_I.AMD_AMF, _T.H264, "h264_amf", "AMF"),
    _enc(_I.AMD_AMF, _T.H265, "hevc_amf", "AMF"),
    _enc(_I.AMD_AMF, _T.AV1, "av1_amf", "AMF"),
    _dec(_I.AMD_AMF, _T.VP9, "vp9_amf", "AMF"),
    _dec(_I.AMD_AMF, _T.AV1, "av1_amf", "AMF"),
    _dec(_I.AMD_AMF, _T.H264, "h264_amf", "AMF"),
    _dec(_I.AMD_AMF, _T.H265, "hevc_amf", "AMF"),
    # --- RASPI_V4L2M2M: the Raspberry Pi 4 H.264 block (the official SDK offers H.264 only).
    _enc(_I.RASPI_V4L2M2M, _T.H264, "h264_v4l2m2m", "V4L2M2M", platforms=_LINUX),
    _dec(_I.RASPI_V4L2M2M, _T.H264, "h264_v4l2m2m", "V4L2M2M", platforms=_LINUX),
)


def backends_for(
    implementation: VideoCodecImplementation | int | str,
    codec: VideoCodecType | int | str,
    role: Role,
    platform: str | None = None,
) -> list[Backend]:
    """Backends for one implementation × codec × role on ``platform``, best first.

    Example::

        >>> [b.pyav_name for b in backends_for("NVIDIA_VIDEO_CODEC_SDK", "H264", "decoder")]
        ['h264', 'h264_cuvid']
    """
    impl = VideoCodecImplementation.parse(implementation)
    codec_type = VideoCodecType.parse(codec)
    return [
        backend
        for backend in BACKENDS
        if backend.implementation is impl
        and backend.codec is codec_type
        and backend.role == role
        and backend.applies_to(platform)
    ]


def implementations_for(
    codec: VideoCodecType | int | str, role: Role
) -> list[VideoCodecImplementation]:
    """Implementations that have at least one backend for ``codec`` and ``role`` here."""
    codec_type = VideoCodecType.parse(codec)
    seen: list[VideoCodecImplementation] = []
    for backend in BACKENDS:
        if (
            backend.codec is codec_type
            and backend.role == role
            and backend.applies_to()
            and backend.implementation not in seen
        ):
            seen.append(backend.implementation)
    return seen
