"""Sans-I/O Sora signaling: the protocol object, its states and its actions.

See :class:`~sora_async.signaling.machine.SignalingProtocol`. Nothing in this
package performs I/O or imports asyncio or aiortc.
"""

from .actions import (
    AbortWebSocket,
    Action,
    ApplyOffer,
    ApplyReoffer,
    CancelTimer,
    ClosePeerConnection,
    CloseWebSocket,
    CollectStats,
    Emit,
    OpenWebSocket,
    SendDataChannel,
    SendWebSocket,
    StartTimer,
    Timer,
)
from .machine import SignalingConfig, SignalingProtocol
from .messages import DataChannelSpec
from .states import TRANSITIONS, SignalingStateError, State

__all__ = [
    "TRANSITIONS",
    "AbortWebSocket",
    "Action",
    "ApplyOffer",
    "ApplyReoffer",
    "CancelTimer",
    "ClosePeerConnection",
    "CloseWebSocket",
    "CollectStats",
    "DataChannelSpec",
    "Emit",
    "OpenWebSocket",
    "SendDataChannel",
    "SendWebSocket",
    "SignalingConfig",
    "SignalingProtocol",
    "SignalingStateError",
    "StartTimer",
    "State",
    "Timer",
]
