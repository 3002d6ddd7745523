"""Codec implementations (software, OpenH264, NVIDIA, Intel, AMD, Raspberry Pi) and probing.

- :mod:`.types`: ``VideoCodecType`` and ``VideoCodecImplementation`` with the
  official ``sora_sdk`` names and values;
- :mod:`.backends`: implementation × codec × role → FFmpeg codec (PyAV) table;
- :mod:`.probe`: opening backends in a child process, with a timeout, cached;
- :mod:`.capability`: ``get_video_codec_capability()``,
  ``VideoCodecPreference`` and ``create_video_codec_preference_from_implementation()``
  shaped like the official SDK.

Example::

    from sora_async.hwaccel import (
        VideoCodecImplementation as Impl, get_video_codec_capability,
        create_video_codec_preference_from_implementation, VideoCodecPreference)

    capability = get_video_codec_capability()
    preference = VideoCodecPreference.default()
    # NVDEC for whatever the GPU decodes, software for the rest:
    preference.merge(create_video_codec_preference_from_implementation(
        capability, Impl.NVIDIA_VIDEO_CODEC_SDK))
"""

from __future__ import annotations

from .backends import BACKENDS, Backend, backends_for, implementations_for
from .capability import (
    CapabilityCodec,
    CapabilityEngine,
    CapabilityParameters,
    PreferenceCodec,
    PreferenceParameters,
    VideoCodecCapability,
    VideoCodecPreference,
    build_capability,
    create_video_codec_preference_from_implementation,
    get_video_codec_capability,
    implementation_available,
)
from .probe import ProbeResult, clear_probe_cache, probe_backends, set_prober
from .types import VideoCodecImplementation, VideoCodecType

__all__ = [
    "BACKENDS",
    "Backend",
    "CapabilityCodec",
    "CapabilityEngine",
    "CapabilityParameters",
    "PreferenceCodec",
    "PreferenceParameters",
    "ProbeResult",
    "VideoCodecCapability",
    "VideoCodecImplementation",
    "VideoCodecPreference",
    "VideoCodecType",
    "backends_for",
    "build_capability",
    "clear_probe_cache",
    "create_video_codec_preference_from_implementation",
    "get_video_codec_capability",
    "implementation_available",
    "implementations_for",
    "probe_backends",
    "set_prober",
]
