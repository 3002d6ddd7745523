"""What the signaling state machine asks its driver to do.

:class:`~sora_async.signaling.machine.SignalingProtocol` never performs I/O;
every input returns nothing and leaves a list of these small frozen records to
be drained with ``actions_to_perform()``. The asyncio driver
(:mod:`sora_async.connection`) performs them in order and reports outcomes back
as inputs (``websocket_opened``, ``offer_applied``, ``timer_fired``...).

WebSockets are named by an ``attempt`` number chosen by the machine, because
several may be in flight at once (racing URLs, redirect).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Timer(enum.StrEnum):
    """Timers the machine starts; the driver calls ``timer_fired(timer)`` on expiry."""

    #: Overall ``connect()`` deadline (``connect_timeout``).
    CONNECT = "connect"
    #: WebSocket opening deadline, initial race and redirect (``websocket_connection_timeout``).
    WEBSOCKET_CONNECTION = "websocket_connection"
    #: Waiting for Sora to close the WebSocket after ``disconnect`` (``websocket_close_timeout``).
    WEBSOCKET_CLOSE = "websocket_close"
    #: Waiting for Sora to close the DataChannels (``disconnect_wait_timeout``).
    DISCONNECT_WAIT = "disconnect_wait"
    #: Grace period after a transport (the peer connection, a DataChannel while
    #: the WebSocket is still up) closed without explanation, so that the
    #: WebSocket close frame that explains why can arrive first.
    TRANSPORT_CLOSED = "transport_closed"


@dataclass(frozen=True)
class OpenWebSocket:
    """Open a signaling WebSocket to ``url``; report ``websocket_opened/failed(attempt)``."""

    attempt: int
    url: str


@dataclass(frozen=True)
class SendWebSocket:
    """Send one text frame on the WebSocket of ``attempt`` (in order)."""

    attempt: int
    #: Not in ``repr()``: the ``connect`` message carries ``metadata`` secrets.
    text: str = field(repr=False)


@dataclass(frozen=True)
class CloseWebSocket:
    """Close (or stop opening) the WebSocket of ``attempt`` with a close handshake."""

    attempt: int
    code: int = 1000
    reason: str = ""


@dataclass(frozen=True)
class AbortWebSocket:
    """Drop the WebSocket of ``attempt`` without a close handshake (a wait timed out)."""

    attempt: int


@dataclass(frozen=True)
class SendDataChannel:
    """Send ``payload`` on the DataChannel ``label``; it is already framed (zlib if compressed)."""

    label: str
    payload: bytes = field(repr=False)


@dataclass(frozen=True)
class ApplyOffer:
    """Create the peer connection from ``offer["config"]``, apply ``sdp``, attach
    the local tracks to ``offer["mid"]``, answer; report ``offer_applied(answer_sdp)``
    or ``offer_failed(error)``."""

    sdp: str = field(repr=False)
    #: Not in ``repr()``: ``config.iceServers`` carries TURN credentials.
    offer: Mapping[str, Any] = field(hash=False, compare=True, repr=False)


@dataclass(frozen=True)
class ApplyReoffer:
    """Apply a re-offer ``sdp`` and answer; report ``reoffer_applied/failed``."""

    sdp: str = field(repr=False)


@dataclass(frozen=True)
class CollectStats:
    """Collect W3C stats; report ``stats_collected(request_id, reports)``."""

    request_id: int


@dataclass(frozen=True)
class StartTimer:
    """(Re)start ``timer``; report ``timer_fired(timer)`` after ``seconds``."""

    timer: Timer
    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    """Cancel ``timer`` if it is running."""

    timer: Timer


@dataclass(frozen=True)
class ClosePeerConnection:
    """Close the peer connection (and with it every DataChannel), if there is one."""


@dataclass(frozen=True)
class Emit:
    """Emit the public event ``event`` with ``args`` (see :class:`sora_async.Connection`)."""

    event: str
    #: Not in ``repr()``: event arguments include the ``connect`` message.
    args: tuple[Any, ...] = field(default=(), repr=False)


Action = (
    OpenWebSocket
    | SendWebSocket
    | CloseWebSocket
    | AbortWebSocket
    | SendDataChannel
    | ApplyOffer
    | ApplyReoffer
    | CollectStats
    | StartTimer
    | CancelTimer
    | ClosePeerConnection
    | Emit
)
