"""Enumerations shared by the client, the dev server and the compat layer.

Member names and integer values follow the official ``sora_sdk`` module
(``SoraSignalingErrorCode`` and friends, see ``sora-sdk-reference.md`` §1.3),
so values can be compared across the two implementations.
"""

from __future__ import annotations

import enum


class DisconnectCode(enum.IntEnum):
    """Why a connection ended; the official ``SoraSignalingErrorCode`` plus one.

    ``DATACHANNEL_CLOSED`` was added to the C++ SDK after 2025.6 (issue 0070)
    for "an offered DataChannel closed while connected".
    """

    CLOSE_SUCCEEDED = 0
    CLOSE_FAILED = 1
    INTERNAL_ERROR = 2
    INVALID_PARAMETER = 3
    WEBSOCKET_HANDSHAKE_FAILED = 4
    WEBSOCKET_ONCLOSE = 5
    WEBSOCKET_ONERROR = 6
    PEER_CONNECTION_STATE_FAILED = 7
    ICE_FAILED = 8
    DATACHANNEL_CLOSED = 9


class SignalingType(enum.IntEnum):
    """Transport a signaling message travelled on (``SoraSignalingType``)."""

    WEBSOCKET = 0
    DATACHANNEL = 1


class SignalingDirection(enum.IntEnum):
    """Whether a signaling message was sent or received (``SoraSignalingDirection``)."""

    SENT = 0
    RECEIVED = 1


class TrackState(enum.IntEnum):
    """State of a media track (``SoraTrackState``)."""

    LIVE = 0
    ENDED = 1


class DegradationPreference(enum.IntEnum):
    """What the video sender gives up first under pressure (``SoraDegradationPreference``)."""

    DISABLED = 0
    MAINTAIN_FRAMERATE = 1
    MAINTAIN_RESOLUTION = 2
    BALANCED = 3


class Role(enum.StrEnum):
    """Sora connection role."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"

    @property
    def sends(self) -> bool:
        """Whether this role sends media (sendrecv, sendonly)."""
        return self is not Role.RECVONLY

    @property
    def receives(self) -> bool:
        """Whether this role receives media (sendrecv, recvonly)."""
        return self is not Role.SENDONLY


#: DataChannel labels managed by Sora itself (everything else must start with ``#``).
SORA_MANAGED_LABELS = frozenset({"signaling", "notify", "push", "stats", "rpc", "e2ee"})
