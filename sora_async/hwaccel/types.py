"""Codec type and implementation enums, with the official ``sora_sdk`` names and values.

``VideoCodecType`` and ``VideoCodecImplementation`` mirror ``SoraVideoCodecType``
and ``SoraVideoCodecImplementation`` (``sora-sdk-reference.md`` §1.3): same
member names, same integer values, so ``int(ours) == int(theirs)`` and objects
can be converted in both directions. ``json_name`` is the string the official
``to_json()`` writes (``"internal"``, ``"nvidia_video_codec_sdk"``, ...), read
from the ``sora_sdk`` 2025.4.0 wheel.

This module imports nothing heavy, so the codec registry, the capability
probe and the client core can all depend on it.
"""

from __future__ import annotations

import enum


class VideoCodecType(enum.IntEnum):
    """A video codec Sora can negotiate (``SoraVideoCodecType``).

    The member name is the Sora ``video.codec_type`` string::

        >>> VideoCodecType["VP9"].value
        2
    """

    VP8 = 1
    VP9 = 2
    AV1 = 3
    H264 = 4
    H265 = 5

    @classmethod
    def parse(cls, value: VideoCodecType | int | str) -> VideoCodecType:
        """Accept a member, its value, or a Sora/MIME name (``"h264"``, ``"video/H265"``).

        Raises ``ValueError`` for anything else.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(int(value))
        if isinstance(value, str):
            name = value.strip().upper()
            if name.startswith("VIDEO/"):
                name = name[len("VIDEO/") :]
            name = {"HEVC": "H265", "AVC": "H264", "AV1X": "AV1"}.get(name, name)
            if name in cls.__members__:
                return cls[name]
        # Objects of the official enum carry ``value``/``name``.
        name_attr = getattr(value, "name", None)
        if isinstance(name_attr, str) and name_attr in cls.__members__:
            return cls[name_attr]
        raise ValueError(f"unknown video codec type: {value!r}")


class VideoCodecImplementation(enum.IntEnum):
    """Who encodes or decodes a codec (``SoraVideoCodecImplementation``).

    ``INTERNAL`` is the software codecs (libvpx, SVT-AV1/dav1d, x264/x265 and
    FFmpeg's decoders); on macOS it also covers VideoToolbox for H.264/H.265,
    as the official SDK does.
    """

    INTERNAL = 0
    CISCO_OPENH264 = 1
    INTEL_VPL = 2
    NVIDIA_VIDEO_CODEC_SDK = 3
    AMD_AMF = 4
    #: Added in ``sora_sdk`` 2025.5.0.
    RASPI_V4L2M2M = 5

    @property
    def json_name(self) -> str:
        """The lower-case name the official ``to_json()`` uses (``"intel_vpl"``)."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: VideoCodecImplementation | int | str) -> VideoCodecImplementation:
        """Accept a member, its value, its name or its JSON name; ``ValueError`` otherwise."""
        if isinstance(value, cls):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(int(value))
        if isinstance(value, str):
            name = value.strip().upper()
            if name in cls.__members__:
                return cls[name]
        name_attr = getattr(value, "name", None)
        if isinstance(name_attr, str) and name_attr in cls.__members__:
            return cls[name_attr]
        raise ValueError(f"unknown video codec implementation: {value!r}")


#: Order in which the official ``get_video_codec_capability()`` lists codecs
#: of an engine (observed with ``sora_sdk`` 2025.4.0).
CAPABILITY_CODEC_ORDER: tuple[VideoCodecType, ...] = (
    VideoCodecType.VP8,
    VideoCodecType.VP9,
    VideoCodecType.H264,
    VideoCodecType.H265,
    VideoCodecType.AV1,
)

#: The official OpenH264 engine lists H264 last (observed with 2025.4.0).
OPENH264_CODEC_ORDER: tuple[VideoCodecType, ...] = (
    VideoCodecType.VP8,
    VideoCodecType.VP9,
    VideoCodecType.H265,
    VideoCodecType.AV1,
    VideoCodecType.H264,
)
