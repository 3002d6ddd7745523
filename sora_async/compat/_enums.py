"""The official enums, with ``sora_sdk``'s class names, member names and integer values.

Values come from the type stub shipped in the ``sora_sdk`` wheel
(``sora-sdk-reference.md`` §1.3). The core's enums already carry the official
member names and values, so each official name here is the core enum itself:
a value made by the facade goes to the core unchanged and compares equal to
the official SDK's. Where this library knows one more value than ``sora_sdk``
2025.4.0, the extra member is marked in the core enum (``RASPI_V4L2M2M`` came
with 2025.5.0; ``DATACHANNEL_CLOSED`` with the C++ SDK after 2025.6).
Only ``SoraLoggingSeverity`` has no core counterpart.
"""

from __future__ import annotations

import enum

from ..enums import (
    DegradationPreference,
    DisconnectCode,
    SignalingDirection,
    SignalingType,
    TrackState,
)
from ..hwaccel.types import VideoCodecImplementation, VideoCodecType
from ..transform import AudioFrameType, FrameDirection

SoraVideoCodecType = VideoCodecType
SoraVideoCodecImplementation = VideoCodecImplementation
SoraSignalingErrorCode = DisconnectCode
SoraSignalingType = SignalingType
SoraSignalingDirection = SignalingDirection
SoraDegradationPreference = DegradationPreference
SoraTrackState = TrackState
SoraTransformableFrameDirection = FrameDirection
SoraTransformableAudioFrameType = AudioFrameType


class SoraLoggingSeverity(enum.IntEnum):
    """Severity for :func:`enable_libwebrtc_log` and :func:`rtc_log`."""

    VERBOSE = 0
    INFO = 1
    WARNING = 2
    ERROR = 3
    NONE = 4
