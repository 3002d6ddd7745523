"""States of a Sora signaling session and the transitions between them, as data.

The table follows ``sora-protocol.md`` Appendix B. It lists, for every state,
which inputs are legal there and which states each input may lead to; an input
that is not listed raises :class:`SignalingStateError` (as h11 does for an
event in the wrong state), and a transition that the table does not allow is a
bug in the machine and raises too. Inputs listed with their own state as the
only target are accepted and ignored (a stale WebSocket attempt, a late
DataChannel event after the session ended...).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final


class State(enum.IntEnum):
    """Where a connection is in its life."""

    #: Created, ``connect()`` not called yet.
    INIT = 0
    #: WebSockets to every signaling URL are being opened; the first one wins.
    CONNECTING = 1
    #: ``connect`` sent; waiting for ``offer`` (or ``redirect``).
    SIGNALING = 2
    #: ``redirect`` received; opening a WebSocket to ``location``.
    REDIRECTING = 3
    #: ``offer`` received; waiting for the peer connection to connect and for
    #: the client's own ``connection.created`` notify.
    NEGOTIATING = 4
    #: Connected; signaling runs on the WebSocket.
    CONNECTED_WS = 5
    #: Connected; signaling moved to the DataChannels (``switched``).
    CONNECTED_DC = 6
    #: Leaving: waiting for Sora to close the WebSocket and/or DataChannels.
    CLOSING = 7
    #: Ended; the ``disconnect`` event has fired (exactly once).
    CLOSED = 8


class SignalingStateError(RuntimeError):
    """An input arrived in a state where it cannot happen (a driver bug)."""


S = State

#: Every input method of the machine.
INPUTS: Final = (
    "start",
    "websocket_opened",
    "websocket_failed",
    "websocket_message",
    "websocket_closed",
    "offer_applied",
    "offer_failed",
    "reoffer_applied",
    "reoffer_failed",
    "peer_connection_state",
    "data_channel_opened",
    "data_channel_message",
    "data_channel_closed",
    "stats_collected",
    "timer_fired",
    "disconnect",
)


def _to(*states: State) -> frozenset[State]:
    return frozenset(states)


# Inputs that a connected session handles the same way whether signaling runs
# on the WebSocket or on the DataChannels; ``connected`` is the state itself.
def _connected(connected: State) -> dict[str, frozenset[State]]:
    return {
        "websocket_opened": _to(connected),  # a losing attempt, closed at once
        "websocket_failed": _to(connected),
        "reoffer_applied": _to(connected),
        "reoffer_failed": _to(S.CLOSING, S.CLOSED),
        "peer_connection_state": _to(connected, S.CLOSED),
        "data_channel_opened": _to(connected),
        # DC "close"; an unusable message from Sora (CLOSING, or CLOSED without a transport)
        "data_channel_message": _to(connected, S.CLOSING, S.CLOSED),
        "data_channel_closed": _to(connected, S.CLOSED),
        "stats_collected": _to(connected),
        "timer_fired": _to(connected, S.CLOSED),
        "disconnect": _to(S.CLOSING, S.CLOSED),
    }


TRANSITIONS: Final[Mapping[State, Mapping[str, frozenset[State]]]] = {
    S.INIT: {
        "start": _to(S.CONNECTING),
        "disconnect": _to(S.CLOSED),
    },
    S.CONNECTING: {
        "websocket_opened": _to(S.SIGNALING, S.CONNECTING),
        "websocket_failed": _to(S.CONNECTING, S.CLOSED),  # CLOSED when all failed
        "timer_fired": _to(S.CONNECTING, S.CLOSED),
        "disconnect": _to(S.CLOSED),
    },
    S.SIGNALING: {
        "websocket_opened": _to(S.SIGNALING),
        "websocket_failed": _to(S.SIGNALING),
        # redirect / offer / a bad redirect location or offer
        "websocket_message": _to(S.SIGNALING, S.REDIRECTING, S.NEGOTIATING, S.CLOSED),
        "websocket_closed": _to(S.SIGNALING, S.CLOSED),
        "timer_fired": _to(S.SIGNALING, S.CLOSED),
        "disconnect": _to(S.CLOSING),
    },
    S.REDIRECTING: {
        "websocket_opened": _to(S.REDIRECTING, S.SIGNALING),
        "websocket_failed": _to(S.REDIRECTING, S.CLOSED),
        "websocket_message": _to(S.REDIRECTING),  # late frames of the old WebSocket
        "websocket_closed": _to(S.REDIRECTING),
        "timer_fired": _to(S.REDIRECTING, S.CLOSED),
        "disconnect": _to(S.CLOSED),
    },
    S.NEGOTIATING: {
        **_connected(S.NEGOTIATING),
        # own connection.created (WS) completes "connected"; "switched" stays here;
        # an unusable message from Sora starts the disconnect sequence
        "websocket_message": _to(
            S.NEGOTIATING, S.CONNECTED_WS, S.CONNECTED_DC, S.CLOSING, S.CLOSED
        ),
        "websocket_closed": _to(S.NEGOTIATING, S.CLOSING, S.CLOSED),
        "offer_applied": _to(S.NEGOTIATING),
        "offer_failed": _to(S.CLOSING, S.CLOSED),
        "peer_connection_state": _to(S.NEGOTIATING, S.CONNECTED_WS, S.CONNECTED_DC, S.CLOSED),
        "data_channel_message": _to(
            S.NEGOTIATING, S.CONNECTED_WS, S.CONNECTED_DC, S.CLOSING, S.CLOSED
        ),
        "data_channel_closed": _to(S.NEGOTIATING, S.CLOSED),
    },
    S.CONNECTED_WS: {
        **_connected(S.CONNECTED_WS),
        # "switched"; an unusable message from Sora
        "websocket_message": _to(S.CONNECTED_WS, S.CONNECTED_DC, S.CLOSING, S.CLOSED),
        "websocket_closed": _to(S.CONNECTED_WS, S.CLOSED),
    },
    S.CONNECTED_DC: {
        **_connected(S.CONNECTED_DC),
        # ping keeps coming if the WS stays; an unusable message from Sora
        "websocket_message": _to(S.CONNECTED_DC, S.CLOSING, S.CLOSED),
        # ignored (ignore_disconnect_websocket) / reported over DC / server close 1000
        "websocket_closed": _to(S.CONNECTED_DC, S.CLOSING, S.CLOSED),
    },
    S.CLOSING: {
        **{name: _to(S.CLOSING) for name in INPUTS if name != "start"},
        "websocket_closed": _to(S.CLOSING, S.CLOSED),
        "data_channel_closed": _to(S.CLOSING, S.CLOSED),
        "timer_fired": _to(S.CLOSING, S.CLOSED),
        # the DataChannels die with a failed peer connection: nothing left to wait for
        "peer_connection_state": _to(S.CLOSING, S.CLOSED),
    },
    S.CLOSED: {name: _to(S.CLOSED) for name in INPUTS if name != "start"},
}


def allowed_targets(state: State, input_name: str) -> frozenset[State]:
    """States ``input_name`` may lead to from ``state``; raises if it is illegal there."""
    targets = TRANSITIONS[state].get(input_name)
    if targets is None:
        raise SignalingStateError(f"{input_name}() is not allowed in state {state.name}")
    return targets
