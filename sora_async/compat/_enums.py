"""The official enums, with ``sora_sdk``'s class names, member names and integer values.

Values come from the type stub shipped in the ``sora_sdk`` wheel
(``sora-sdk-reference.md`` §1.3). Where this library knows one more value
than ``sora_sdk`` 2025.4.0, the extra member is marked (``RASPI_V4L2M2M``
came with 2025.5.0; ``DATACHANNEL_CLOSED`` with the C++ SDK after 2025.6).
The codec enums are the ones of :mod:`sora_async.hwaccel` under their
official names, so preferences made here go to the core unchanged.
"""

from __future__ import annotations

import enum

from ..hwaccel.types import VideoCodecImplementation, VideoCodecType

SoraVideoCodecType = VideoCodecType
SoraVideoCodecImplementation = VideoCodecImplementation


class SoraSignalingErrorCode(enum.IntEnum):
    """Why a connection ended (the ``error_code`` of ``on_disconnect``)."""

    CLOSE_SUCCEEDED = 0
    CLOSE_FAILED = 1
    INTERNAL_ERROR = 2
    INVALID_PARAMETER = 3
    WEBSOCKET_HANDSHAKE_FAILED = 4
    WEBSOCKET_ONCLOSE = 5
    WEBSOCKET_ONERROR = 6
    PEER_CONNECTION_STATE_FAILED = 7
    ICE_FAILED = 8
    #: Not in ``sora_sdk`` 2025.4.0: an offered DataChannel closed while connected.
    DATACHANNEL_CLOSED = 9


class SoraSignalingType(enum.IntEnum):
    """The transport a signaling message travelled on."""

    WEBSOCKET = 0
    DATACHANNEL = 1


class SoraSignalingDirection(enum.IntEnum):
    """Whether a signaling message was sent or received."""

    SENT = 0
    RECEIVED = 1


class SoraDegradationPreference(enum.IntEnum):
    """What the video sender gives up first under pressure."""

    DISABLED = 0
    MAINTAIN_FRAMERATE = 1
    MAINTAIN_RESOLUTION = 2
    BALANCED = 3


class SoraTrackState(enum.IntEnum):
    """State of a track."""

    LIVE = 0
    ENDED = 1


class SoraLoggingSeverity(enum.IntEnum):
    """Severity for :func:`enable_libwebrtc_log` and :func:`rtc_log`."""

    VERBOSE = 0
    INFO = 1
    WARNING = 2
    ERROR = 3
    NONE = 4


class SoraTransformableFrameDirection(enum.IntEnum):
    """Which side of the pipeline an encoded frame is on."""

    UNKNOWN = 0
    RECEIVER = 1
    SENDER = 2


class SoraTransformableAudioFrameType(enum.IntEnum):
    """What an encoded audio frame carries."""

    EMPTY = 0
    SPEECH = 1
    CN = 2
