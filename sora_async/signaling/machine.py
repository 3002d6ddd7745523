"""The Sora signaling state machine, with no I/O (websockets/h11 style).

:class:`SignalingProtocol` holds everything a Sora client session knows: which
WebSocket won the race, the offer, which DataChannels are open, whether
signaling switched to DataChannels, which re-offer is being answered, how the
session is ending. Inputs are method calls (``websocket_message(attempt, text)``,
``data_channel_closed(label)``, ``timer_fired(timer)``, ``disconnect()``...);
outputs are :mod:`~sora_async.signaling.actions` drained with
:meth:`SignalingProtocol.actions_to_perform`. Nothing here touches a socket,
asyncio or aiortc, so a whole session can be replayed from JSON in a unit test.

The states and the transitions each input may cause are the table in
:mod:`~sora_async.signaling.states`; section numbers below refer to
``sora-protocol.md``.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..enums import DisconnectCode, SignalingDirection, SignalingType
from . import messages as m
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
from .states import SignalingStateError, State, allowed_targets

logger = logging.getLogger("sora_async.signaling")

#: States in which the session has a peer connection and is not ending.
_LIVE = frozenset({State.NEGOTIATING, State.CONNECTED_WS, State.CONNECTED_DC})

#: How long a transport may be gone before its closing alone ends the session.
#: Long enough for a WebSocket close frame sent at the same moment to arrive.
TRANSPORT_CLOSED_GRACE = 1.0


@dataclass(frozen=True)
class SignalingConfig:
    """What the machine needs to know about the connection it runs.

    ``connect_message`` is the complete ``connect`` message (built and
    validated by :mod:`sora_async.options`); timeouts are in seconds and keep
    the names and defaults of the official SDK (``sora-protocol.md`` §5.10).
    """

    signaling_urls: Sequence[str]
    connect_message: Mapping[str, Any]
    connect_timeout: float = 30.0
    websocket_connection_timeout: float = 30.0
    websocket_close_timeout: float = 3.0
    disconnect_wait_timeout: float = 5.0


class _CloseMode(enum.Enum):
    """The ways a session can be ending while in ``CLOSING`` (§5.8, §5.9, §3.9)."""

    #: ``disconnect`` sent on the WebSocket; wait for Sora to close it.
    WEBSOCKET = "websocket"
    #: ``disconnect`` sent on DC ``signaling``; wait for the DCs and the WebSocket.
    HYBRID = "hybrid"
    #: ``disconnect`` sent on DC ``signaling``, no WebSocket; wait for the DCs.
    DATACHANNEL = "datachannel"
    #: Sora sent ``{"type":"close"}`` on DC ``signaling``; wait for the DCs.
    SERVER_CLOSE = "server_close"
    #: The WebSocket died after ``switched`` (ignore=false); ``disconnect``
    #: with WEBSOCKET-ONCLOSE/ONERROR sent on DC; wait for the DCs.
    WEBSOCKET_LOST = "websocket_lost"


@dataclass
class _Closing:
    mode: _CloseMode
    #: (code, root message) replacing the result, e.g. ICE_FAILED after an SDP error.
    forced: tuple[DisconnectCode, str] | None = None
    #: WebSocket close seen while closing: (code or None for no close frame, reason).
    websocket_result: tuple[int | None, str] | None = None
    #: ``close`` message code/reason, or the lost WebSocket's code/reason.
    detail: tuple[Any, Any] = (None, None)
    #: What the client itself found wrong with the lost WebSocket, if anything.
    error: str | None = None


@dataclass
class _Reoffer:
    sdp: str
    answer_type: str  # "re-answer", or "update" for the legacy "update"
    transport: SignalingType


@dataclass
class _Session:
    """Everything that ``redirect`` throws away (§5.3)."""

    offer: dict[str, Any] | None = None
    data_channels: dict[str, m.DataChannelSpec] = field(default_factory=dict)
    open_labels: set[str] = field(default_factory=set)
    switched: bool = False
    ignore_disconnect_websocket: bool = False
    answered: bool = False
    peer_connection_connected: bool = False
    peer_connection_failed: bool = False
    own_connection_created: bool = False
    reoffers: deque[_Reoffer] = field(default_factory=deque)
    reoffer_in_flight: _Reoffer | None = None


class SignalingProtocol:
    """Sans-I/O Sora client signaling (one connection, single use).

    Example (what a transcript test does)::

        proto = SignalingProtocol(SignalingConfig(["wss://sora/signaling"], connect))
        proto.start()
        [open_ws] = [a for a in proto.actions_to_perform() if isinstance(a, OpenWebSocket)]
        proto.websocket_opened(open_ws.attempt)
        proto.actions_to_perform()
        # -> [CancelTimer(...), SendWebSocket(0, '{"type":"connect",...}'), Emit(...)]
    """

    def __init__(self, config: SignalingConfig) -> None:
        if not config.signaling_urls:
            raise ValueError("signaling_urls must not be empty")
        self._config = config
        self._state = State.INIT
        self._actions: list[Action] = []
        self._input: str | None = None
        self._next_attempt = 0
        # attempt -> url of WebSockets still opening
        self._pending_attempts: dict[int, str] = {}
        # attempts we asked to close; their later events are not news
        self._closing_attempts: set[int] = set()
        self._websocket_attempt: int | None = None
        self._websocket_open = False
        self._selected_url: str | None = None
        self._connected_url: str | None = None
        self._redirected = False
        self._timers: set[Timer] = set()
        self._next_request = 0
        self._stats_requests: dict[int, str] = {}  # request id -> "pong" | "stats"
        self._closing: _Closing | None = None
        self._pending_termination: tuple[DisconnectCode, str] | None = None
        self._disconnect: tuple[DisconnectCode, str] | None = None
        self._session = _Session()

    # -- what the driver and the Connection read ----------------------------

    @property
    def state(self) -> State:
        """The current :class:`~sora_async.signaling.states.State`."""
        return self._state

    @property
    def offer(self) -> dict[str, Any] | None:
        """The ``offer`` message as received, or None before it."""
        return self._session.offer

    def _offer_str(self, key: str) -> str | None:
        offer = self._session.offer
        value = offer.get(key) if offer else None
        return value if isinstance(value, str) else None

    @property
    def connection_id(self) -> str | None:
        """``offer["connection_id"]``."""
        return self._offer_str("connection_id")

    @property
    def client_id(self) -> str | None:
        """``offer["client_id"]``."""
        return self._offer_str("client_id")

    @property
    def bundle_id(self) -> str | None:
        """``offer["bundle_id"]``."""
        return self._offer_str("bundle_id")

    @property
    def session_id(self) -> str | None:
        """``offer["session_id"]`` (Sora 2023.2.0 and later)."""
        return self._offer_str("session_id")

    @property
    def switched(self) -> bool:
        """True once ``switched`` arrived: signaling runs on the DataChannels."""
        return self._session.switched

    @property
    def ignore_disconnect_websocket(self) -> bool:
        """The effective value carried by ``switched`` (§3.7)."""
        return self._session.ignore_disconnect_websocket

    @property
    def data_channels(self) -> Mapping[str, m.DataChannelSpec]:
        """``label -> DataChannelSpec`` from the offer."""
        return self._session.data_channels

    @property
    def open_labels(self) -> frozenset[str]:
        """Offered labels whose DataChannel is open."""
        return frozenset(self._session.open_labels)

    @property
    def selected_url(self) -> str | None:
        """The signaling URL whose WebSocket answered first (§5.2)."""
        return self._selected_url

    @property
    def connected_url(self) -> str | None:
        """The URL signaling finally ran on (after redirects)."""
        return self._connected_url

    @property
    def disconnect_code(self) -> DisconnectCode | None:
        """How the session ended, once ``CLOSED``."""
        return self._disconnect[0] if self._disconnect else None

    @property
    def disconnect_message(self) -> str | None:
        """The message that came with :attr:`disconnect_code`."""
        return self._disconnect[1] if self._disconnect else None

    def actions_to_perform(self) -> list[Action]:
        """Return and forget the actions produced since the last call, in order."""
        actions, self._actions = self._actions, []
        return actions

    # -- inputs: the session --------------------------------------------------

    def start(self) -> None:
        """Begin: open a WebSocket to every signaling URL at once (§5.2)."""
        with self._handling("start"):
            self._state = State.CONNECTING
            self._start_timer(Timer.CONNECT, self._config.connect_timeout)
            self._start_timer(Timer.WEBSOCKET_CONNECTION, self._config.websocket_connection_timeout)
            for url in self._config.signaling_urls:
                self._open_websocket(url)

    def disconnect(self) -> None:
        """The user asked to leave; the mode depends on where signaling runs (§5.8)."""
        with self._handling("disconnect"):
            if self._state in (State.INIT, State.CONNECTING, State.REDIRECTING):
                # Nothing to say to Sora yet (C++ Disconnect, CPP issue 0028).
                self._finish(DisconnectCode.CLOSE_SUCCEEDED, m.CLOSE_IN_CONNECTING)
            elif self._state in (State.SIGNALING, *_LIVE):
                self._begin_disconnect()

    def timer_fired(self, timer: Timer) -> None:
        """A timer started with :class:`StartTimer` expired."""
        with self._handling("timer_fired"):
            if timer not in self._timers:
                return  # cancelled while the driver was firing it
            self._timers.discard(timer)
            if timer is Timer.CONNECT:
                if self._state in (
                    State.CONNECTING,
                    State.SIGNALING,
                    State.REDIRECTING,
                    State.NEGOTIATING,
                ):
                    self._finish(DisconnectCode.INTERNAL_ERROR, m.CONNECTION_TIMEOUT)
            elif timer is Timer.WEBSOCKET_CONNECTION:
                if self._state is State.CONNECTING:
                    self._finish(DisconnectCode.INTERNAL_ERROR, m.CONNECTION_TIMEOUT)
                elif self._state is State.REDIRECTING:
                    self._finish(DisconnectCode.INTERNAL_ERROR, m.CONNECTION_TIMEOUT_IN_REDIRECTION)
            elif timer is Timer.TRANSPORT_CLOSED:
                if self._state in _LIVE and self._pending_termination:
                    self._finish(*self._pending_termination)
            elif self._state is State.CLOSING:
                self._closing_timed_out(timer)

    # -- inputs: WebSockets ---------------------------------------------------

    def websocket_opened(self, attempt: int) -> None:
        """The WebSocket of ``attempt`` completed its handshake."""
        with self._handling("websocket_opened"):
            url = self._pending_attempts.pop(attempt, None)
            if url is None:
                return  # an attempt we already asked to close
            if self._state in (State.CONNECTING, State.REDIRECTING):
                self._select_websocket(attempt, url)
            else:
                self._close_attempt(attempt)  # lost the race

    def websocket_failed(self, attempt: int, error: str) -> None:
        """The WebSocket of ``attempt`` could not be opened (``error`` describes why)."""
        with self._handling("websocket_failed"):
            url = self._pending_attempts.pop(attempt, None)
            if url is None:
                return
            logger.debug("signaling WebSocket %s failed: %s", url, error)
            if self._state is State.CONNECTING and not self._pending_attempts:
                self._finish(
                    DisconnectCode.WEBSOCKET_HANDSHAKE_FAILED, m.handshake_failed(error, url)
                )
            elif self._state is State.REDIRECTING:
                self._finish(
                    DisconnectCode.WEBSOCKET_HANDSHAKE_FAILED,
                    m.handshake_failed_in_redirecting(error, url),
                )

    def websocket_message(self, attempt: int, text: str | bytes) -> None:
        """A frame arrived on the WebSocket of ``attempt`` (``bytes``: a binary frame).

        A frame that is not a JSON object with a string ``type`` (or a binary
        frame: Sora only sends text) ends the session with ``INTERNAL_ERROR``
        naming the problem; unknown types and keys are ignored (§10 item 10).
        """
        with self._handling("websocket_message"):
            if attempt != self._websocket_attempt or not self._websocket_open:
                return
            if self._state is not State.SIGNALING and self._state not in _LIVE:
                return
            if isinstance(text, bytes | bytearray | memoryview):
                self._violation(m.invalid_websocket_message("binary frame (Sora sends text)"))
                return
            try:
                message = m.loads(text)
            except m.MessageError as exc:
                self._violation(m.invalid_websocket_message(str(exc)))
                return
            kind = message["type"]
            logger.debug("received %s on WebSocket", kind)
            if self._state is State.SIGNALING:
                # Before the peer connection exists only these two matter (CPP OnRead).
                if kind == "redirect":
                    self._on_redirect(message)
                elif kind == "offer":
                    self._on_offer(message)
                elif kind in ("re-offer", "update"):
                    self._received(SignalingType.WEBSOCKET, message)
                    self._violation(m.unexpected_message(kind, "WebSocket"))
            else:
                self._on_live_message(message, SignalingType.WEBSOCKET)

    def websocket_closed(
        self, attempt: int, code: int | None, reason: str = "", error: str | None = None
    ) -> None:
        """The WebSocket of ``attempt`` ended.

        ``code``/``reason`` come from the server's close frame; ``code`` is None
        when the connection ended without one (TCP reset, EOF). ``error``
        describes a failure the client detected itself (a message over the size
        limit, invalid UTF-8, no answer to keepalive pings); ``code`` is then None.
        """
        with self._handling("websocket_closed"):
            if attempt in self._closing_attempts:
                self._closing_attempts.discard(attempt)
                return
            if attempt != self._websocket_attempt or not self._websocket_open:
                return
            if error is not None:
                code, reason = None, ""
                logger.warning("signaling WebSocket failed: %s", error)
            self._websocket_open = False
            self._emit("ws_close", code if code is not None else 0, reason if code else "")
            self._on_websocket_lost(code, reason, error)

    # -- inputs: the peer connection ----------------------------------------

    def offer_applied(self, answer_sdp: str) -> None:
        """The offer was applied; ``answer_sdp`` is the local description (with candidates)."""
        with self._handling("offer_applied"):
            if self._state not in _LIVE:
                return
            session = self._session
            session.answered = True
            self._emit("set_offer", session.offer)
            self._send_websocket(m.answer_message(answer_sdp))
            for candidate in m.candidates_from_sdp(answer_sdp):
                self._send_websocket(m.candidate_message(candidate))
            self._pump_reoffers()

    def offer_failed(self, error: str) -> None:
        """Applying the offer failed; leave with ICE_FAILED as the C++ SDK does (§5.11)."""
        with self._handling("offer_failed"):
            if self._state not in _LIVE:
                return
            root = f"Failed to SetOffer in offer message via WebSocket: error={error}"
            self._begin_disconnect(
                forced=(DisconnectCode.ICE_FAILED, root), reason="INTERNAL-ERROR"
            )

    def reoffer_applied(self, answer_sdp: str) -> None:
        """The re-offer in flight was applied; answer on the transport it came on (§2.4)."""
        with self._handling("reoffer_applied"):
            reoffer = self._take_reoffer_in_flight()
            if self._state not in _LIVE:
                return
            message = m.reanswer_message(answer_sdp, answer_type=reoffer.answer_type)
            self._send_signaling(message, prefer=reoffer.transport)
            self._pump_reoffers()

    def reoffer_failed(self, error: str) -> None:
        """Applying a re-offer failed; leave with ICE_FAILED (§5.6)."""
        with self._handling("reoffer_failed"):
            reoffer = self._take_reoffer_in_flight()
            if self._state not in _LIVE:
                return
            kind = "update" if reoffer.answer_type == "update" else "re-offer"
            via = "WebSocket" if reoffer.transport is SignalingType.WEBSOCKET else "DataChannel"
            root = f"Failed to SetOffer in {kind} message via {via}: error={error}"
            self._begin_disconnect(
                forced=(DisconnectCode.ICE_FAILED, root), reason="INTERNAL-ERROR"
            )

    def peer_connection_state(self, state: str) -> None:
        """``RTCPeerConnection.connectionState`` changed (aiortc has no ``disconnected``)."""
        with self._handling("peer_connection_state"):
            session = self._session
            if state == "connected":
                session.peer_connection_connected = True
                self._maybe_connected()
            elif state == "failed":
                session.peer_connection_failed = True
                if self._state in _LIVE:
                    # Never send disconnect when the PC failed (DOC:SORA_CLIENT, §5.9).
                    self._finish(
                        DisconnectCode.PEER_CONNECTION_STATE_FAILED, m.PEER_CONNECTION_FAILED
                    )
                elif self._state is State.CLOSING:
                    # The DataChannels died with it; stop waiting for them.
                    session.open_labels.clear()
                    self._check_closing_done()
            elif state == "closed" and self._state in _LIVE:
                self._terminate_after_grace(
                    DisconnectCode.PEER_CONNECTION_STATE_FAILED, m.PEER_CONNECTION_CLOSED
                )

    def stats_collected(self, request_id: int, reports: list[dict[str, Any]]) -> None:
        """Stats asked for with :class:`CollectStats` are ready."""
        with self._handling("stats_collected"):
            purpose = self._stats_requests.pop(request_id, None)
            if purpose is None or self._state not in _LIVE:
                return
            if purpose == "pong":
                self._send_websocket(m.pong_message(reports))
            else:
                self._send_data_channel("stats", m.stats_message(reports))

    # -- inputs: DataChannels -------------------------------------------------

    def data_channel_opened(self, label: str) -> None:
        """The server-created DataChannel ``label`` is open."""
        with self._handling("data_channel_opened"):
            session = self._session
            if self._state not in _LIVE:
                return
            if label not in session.data_channels:
                logger.warning("ignoring DataChannel %r: not in the offer", label)
                return
            if label not in session.open_labels:
                session.open_labels.add(label)
                # sora_sdk 2025.4.0 reports every offered label as it opens,
                # managed ones included, before and after "switched" (observed).
                self._emit("data_channel", label)

    def data_channel_message(self, label: str, data: bytes | str) -> None:
        """A message arrived on DataChannel ``label`` (text or binary, maybe zlib)."""
        with self._handling("data_channel_message"):
            spec = self._session.data_channels.get(label)
            if self._state not in _LIVE or spec is None:
                return
            try:
                payload = m.decode_data_channel_payload(data, compress=spec.compress)
            except m.MessageError as exc:
                if label.startswith("#"):
                    # Messaging payloads come from other clients: one peer's bad
                    # message must not end everybody's session. Dropped.
                    logger.warning("dropping a message on DataChannel %r: %s", label, exc)
                else:
                    self._violation(m.invalid_data_channel_message(label, str(exc)))
                return
            if label.startswith("#"):
                self._emit("message", label, payload)
                return
            if label == "rpc":
                self._emit("rpc", payload)
                return
            if label == "e2ee":
                return  # not used by this client
            try:
                message = m.loads(payload)
            except m.MessageError as exc:
                self._violation(m.invalid_data_channel_message(label, str(exc)))
                return
            kind = message["type"]
            logger.debug("received %s on DataChannel %s", kind, label)
            if label == "signaling":
                if kind in ("re-offer", "update"):
                    self._on_reoffer(message, SignalingType.DATACHANNEL)
                elif kind == "close":
                    self._on_close_message(message)
            elif label == "notify" and kind == "notify":
                problem = m.notify_problem(message)
                if problem is not None:
                    self._violation(m.invalid_data_channel_message(label, problem, "notify"))
                    return
                self._on_notify(message)
            elif label == "push" and kind == "push":
                self._emit("push", message)
            elif label == "stats" and kind == "req-stats":
                self._request_stats("stats")

    def data_channel_closed(self, label: str) -> None:
        """DataChannel ``label`` closed."""
        with self._handling("data_channel_closed"):
            session = self._session
            if label not in session.open_labels:
                return
            session.open_labels.discard(label)
            if self._state in _LIVE:
                if self._websocket_open:
                    # Sora closes DCs and the WebSocket together when it drops a
                    # session; the WebSocket close frame says why, so give it a moment.
                    self._terminate_after_grace(
                        DisconnectCode.DATACHANNEL_CLOSED, m.data_channel_closed(label)
                    )
                else:
                    # Any offered DC closing ends a DC-only session (CPP issue 0070).
                    self._finish(DisconnectCode.DATACHANNEL_CLOSED, m.data_channel_closed(label))
            elif self._state is State.CLOSING:
                self._check_closing_done()

    # -- user operations that do not change the state -------------------------

    def send_data_channel(self, label: str, data: bytes) -> bool:
        """Queue an application message on ``label``; False when that is not possible.

        Only offered ``#`` labels whose DataChannel is open are accepted, as by
        the official client since issue 0113: Sora drops a connection that
        writes to its own labels (CPP issue 0107).
        """
        session = self._session
        spec = session.data_channels.get(label)
        if (
            self._state not in _LIVE
            or spec is None
            or spec.managed
            or label not in session.open_labels
        ):
            return False
        payload = m.encode_data_channel_payload(bytes(data), compress=spec.compress)
        self._actions.append(SendDataChannel(label, payload))
        return True

    def send_rpc(self, request: bytes) -> bool:
        """Queue a JSON-RPC 2.0 ``request`` on the ``rpc`` DataChannel.

        False unless the offer has the ``rpc`` label (Sora grants it with
        ``rpc_methods``) and its DataChannel is open (``sora-protocol.md`` §2.8).
        """
        session = self._session
        spec = session.data_channels.get("rpc")
        if self._state not in _LIVE or spec is None or "rpc" not in session.open_labels:
            return False
        payload = m.encode_data_channel_payload(bytes(request), compress=spec.compress)
        self._actions.append(SendDataChannel("rpc", payload))
        return True

    # -- message handlers -------------------------------------------------------

    def _on_redirect(self, message: dict[str, Any]) -> None:
        location = message.get("location")
        self._received(SignalingType.WEBSOCKET, message)
        # The server closes this WebSocket after redirect; close it ourselves and
        # report it the way the C++ SDK does (observed: ws_close 1000 SELF-CLOSED).
        self._close_selected_websocket()
        self._emit("ws_close", *m.SELF_CLOSED)
        if not m.is_signaling_url(location):
            self._finish(DisconnectCode.INVALID_PARAMETER, m.invalid_redirect_url(str(location)))
            return
        assert isinstance(location, str)
        self._session = _Session()  # full per-session reset (§5.3)
        self._redirected = True
        self._state = State.REDIRECTING
        self._start_timer(Timer.WEBSOCKET_CONNECTION, self._config.websocket_connection_timeout)
        self._open_websocket(location)

    def _on_offer(self, message: dict[str, Any]) -> None:
        sdp = message.get("sdp")
        problem = m.offer_problem(message)
        if problem is not None or not isinstance(sdp, str):
            self._received(SignalingType.WEBSOCKET, message)
            self._violation(m.invalid_websocket_message(problem or "no sdp", "offer"))
            return
        session = self._session
        session.offer = message
        session.data_channels = m.parse_data_channel_specs(message)
        self._received(SignalingType.WEBSOCKET, message)
        self._state = State.NEGOTIATING
        self._actions.append(ApplyOffer(sdp, message))

    def _on_live_message(self, message: dict[str, Any], transport: SignalingType) -> None:
        kind = message["type"]
        if kind in ("re-offer", "update"):
            self._on_reoffer(message, transport)
        elif kind == "notify":
            problem = m.notify_problem(message)
            if problem is not None:
                self._violation(m.invalid_websocket_message(problem, "notify"))
                return
            self._on_notify(message)
        elif kind == "push":
            self._emit("push", message)
        elif kind == "ping":
            if message.get("stats") is True:
                self._request_stats("pong")
            else:
                self._send_websocket(m.pong_message())
        elif kind == "switched":
            self._on_switched(message)
        # Anything else (offer again, unknown types) is ignored (§10 item 10).

    def _on_reoffer(self, message: dict[str, Any], transport: SignalingType) -> None:
        sdp = message.get("sdp")
        self._received(transport, message)
        problem = m.reoffer_problem(message)
        if problem is not None or not isinstance(sdp, str):
            kind, problem = message["type"], problem or "no sdp"
            self._violation(
                m.invalid_websocket_message(problem, kind)
                if transport is SignalingType.WEBSOCKET
                else m.invalid_data_channel_message("signaling", problem, kind)
            )
            return
        answer_type = "update" if message["type"] == "update" else "re-answer"
        self._session.reoffers.append(_Reoffer(sdp, answer_type, transport))
        self._pump_reoffers()

    def _on_notify(self, message: dict[str, Any]) -> None:
        self._emit("notify", message)
        session = self._session
        own = self.connection_id
        if (
            message.get("event_type") == "connection.created"
            and own is not None
            and message.get("connection_id") == own
        ):
            session.own_connection_created = True
            self._maybe_connected()

    def _on_switched(self, message: dict[str, Any]) -> None:
        session = self._session
        session.switched = True
        session.ignore_disconnect_websocket = message.get("ignore_disconnect_websocket") is True
        self._emit("switched", message)
        if session.ignore_disconnect_websocket and self._websocket_open:
            # Sora ignores the WebSocket from now on; close it at once as the
            # C++ SDK does and report it as SELF-CLOSED (§5.5 step 4).
            self._close_selected_websocket()
            self._emit("ws_close", *m.SELF_CLOSED)
        if self._state is State.CONNECTED_WS:
            self._state = State.CONNECTED_DC

    def _on_close_message(self, message: dict[str, Any]) -> None:
        # Sora closes the DCs itself after "close"; answer nothing, just wait (§3.9).
        self._received(SignalingType.DATACHANNEL, message)
        self._enter_closing(
            _Closing(_CloseMode.SERVER_CLOSE, detail=(message.get("code"), message.get("reason")))
        )
        self._start_timer(Timer.DISCONNECT_WAIT, self._config.disconnect_wait_timeout)
        self._check_closing_done()

    def _on_websocket_lost(self, code: int | None, reason: str, error: str | None = None) -> None:
        session = self._session
        if self._state is State.CLOSING:
            self._closing_websocket_closed(code, reason, error)
        elif self._state in (State.SIGNALING, *_LIVE):
            if session.switched and session.ignore_disconnect_websocket:
                return  # Sora ignores the WebSocket now, so do we (§5.9)
            if code == 1000:
                self._finish(
                    DisconnectCode.CLOSE_SUCCEEDED,
                    m.server_closed_websocket(code, reason, with_data_channel=session.switched),
                )
            elif (
                session.switched
                and not session.peer_connection_failed
                and ("signaling" in session.open_labels)
            ):
                # Tell Sora over DC why we leave, then end (§5.9, C++ OnRead).
                self._enter_closing(
                    _Closing(_CloseMode.WEBSOCKET_LOST, detail=(code, reason), error=error)
                )
                why = "WEBSOCKET-ONCLOSE" if code is not None else "WEBSOCKET-ONERROR"
                self._send_data_channel("signaling", m.disconnect_message(why))
                self._start_timer(Timer.DISCONNECT_WAIT, self._config.disconnect_wait_timeout)
            else:
                self._finish(
                    _websocket_error_code(code), m.failed_to_read_websocket(code, reason, error)
                )

    def _violation(self, problem: str) -> None:
        """Sora sent something unusable: end the session with INTERNAL_ERROR naming it.

        Before the offer the session just ends; afterwards the normal
        disconnect sequence runs first (``reason`` INTERNAL-ERROR), as for an
        offer that cannot be applied (§5.11), and the code stays INTERNAL_ERROR.
        """
        logger.warning("signaling protocol violation: %s", problem)
        if self._state in _LIVE:
            self._begin_disconnect(
                forced=(DisconnectCode.INTERNAL_ERROR, problem), reason="INTERNAL-ERROR"
            )
        else:
            self._finish(DisconnectCode.INTERNAL_ERROR, problem)

    # -- disconnect sequencing (§5.8) ------------------------------------------

    def _begin_disconnect(
        self, *, forced: tuple[DisconnectCode, str] | None = None, reason: str = "NO-ERROR"
    ) -> None:
        session = self._session
        if session.switched and "signaling" in session.open_labels:
            mode = _CloseMode.HYBRID if self._websocket_open else _CloseMode.DATACHANNEL
            self._enter_closing(_Closing(mode, forced=forced))
            self._send_data_channel("signaling", m.disconnect_message(reason))
            self._start_timer(Timer.DISCONNECT_WAIT, self._config.disconnect_wait_timeout)
        elif self._websocket_open:
            # Not switched (even if DC signaling was asked for): WebSocket only (§5.8).
            self._enter_closing(_Closing(_CloseMode.WEBSOCKET, forced=forced))
            self._send_websocket(m.disconnect_message(reason))
            self._start_timer(Timer.WEBSOCKET_CLOSE, self._config.websocket_close_timeout)
        elif forced is not None:
            self._finish(forced[0], m.with_internal_message(forced[1], m.NO_TRANSPORT))
        else:
            self._finish(DisconnectCode.INTERNAL_ERROR, m.NO_TRANSPORT)

    def _enter_closing(self, closing: _Closing) -> None:
        self._closing = closing
        self._state = State.CLOSING
        self._pending_termination = None
        self._cancel_timer(Timer.CONNECT)
        self._cancel_timer(Timer.TRANSPORT_CLOSED)

    def _closing_websocket_closed(
        self, code: int | None, reason: str, error: str | None = None
    ) -> None:
        closing = self._closing
        assert closing is not None
        closing.websocket_result = (code, reason)
        if closing.mode is _CloseMode.WEBSOCKET:
            self._cancel_timer(Timer.WEBSOCKET_CLOSE)
            if code is None:
                self._finish_closing(
                    DisconnectCode.CLOSE_FAILED,
                    m.failed_to_close_websocket(code, reason, timed_out=False, error=error),
                )
            else:
                # Any close frame counts, even 4490 (observed with the official client).
                self._finish_closing(DisconnectCode.CLOSE_SUCCEEDED, m.CLOSED_WEBSOCKET_ONLY)
        elif closing.mode is _CloseMode.HYBRID:
            self._cancel_timer(Timer.WEBSOCKET_CLOSE)
            self._check_closing_done()

    def _check_closing_done(self) -> None:
        closing = self._closing
        if self._state is not State.CLOSING or closing is None:
            return
        if self._session.open_labels:
            return
        self._cancel_timer(Timer.DISCONNECT_WAIT)
        mode = closing.mode
        if mode is _CloseMode.HYBRID:
            if self._websocket_open:
                # DCs are done; the WebSocket gets its own guard (CPP issue 0029).
                if Timer.WEBSOCKET_CLOSE not in self._timers:
                    self._start_timer(Timer.WEBSOCKET_CLOSE, self._config.websocket_close_timeout)
                return
            result = closing.websocket_result
            if result is not None and result[0] is None:
                self._finish_closing(
                    DisconnectCode.CLOSE_FAILED,
                    m.failed_to_close_websocket(None, result[1], timed_out=False),
                )
            else:
                self._finish_closing(DisconnectCode.CLOSE_SUCCEEDED, m.CLOSED_HYBRID)
        elif mode is _CloseMode.DATACHANNEL:
            self._finish_closing(DisconnectCode.CLOSE_SUCCEEDED, m.CLOSED_DATACHANNEL_ONLY)
        elif mode is _CloseMode.SERVER_CLOSE:
            self._finish_closing(
                DisconnectCode.CLOSE_SUCCEEDED, m.server_closed_data_channel(*closing.detail)
            )
        elif mode is _CloseMode.WEBSOCKET_LOST:
            code, reason = closing.detail
            self._finish_closing(
                _websocket_error_code(code),
                m.failed_to_read_websocket_dc(code, reason, dc_closed=True, error=closing.error),
            )

    def _closing_timed_out(self, timer: Timer) -> None:
        closing = self._closing
        assert closing is not None
        mode = closing.mode
        if timer is Timer.WEBSOCKET_CLOSE:
            self._abort_selected_websocket()
            self._finish_closing(
                DisconnectCode.CLOSE_FAILED, m.failed_to_close_websocket(None, "", timed_out=True)
            )
        elif timer is Timer.DISCONNECT_WAIT:
            if mode is _CloseMode.HYBRID:
                self._abort_selected_websocket()
                self._finish_closing(DisconnectCode.CLOSE_FAILED, m.FAILED_HYBRID_DATACHANNEL)
            elif mode is _CloseMode.DATACHANNEL:
                self._finish_closing(DisconnectCode.CLOSE_FAILED, m.FAILED_DATACHANNEL_ONLY)
            elif mode is _CloseMode.SERVER_CLOSE:
                # Sora already said goodbye; its DCs not closing changes nothing.
                self._finish_closing(
                    DisconnectCode.CLOSE_SUCCEEDED, m.server_closed_data_channel(*closing.detail)
                )
            elif mode is _CloseMode.WEBSOCKET_LOST:
                code, reason = closing.detail
                self._finish_closing(
                    _websocket_error_code(code),
                    m.failed_to_read_websocket_dc(
                        code, reason, dc_closed=False, error=closing.error
                    ),
                )

    def _finish_closing(self, code: DisconnectCode, message: str) -> None:
        closing = self._closing
        if closing is not None and closing.forced is not None:
            forced_code, root = closing.forced
            code, message = forced_code, m.with_internal_message(root, message)
        self._finish(code, message)

    def _terminate_after_grace(self, code: DisconnectCode, message: str) -> None:
        if self._pending_termination is None:
            self._pending_termination = (code, message)
            self._start_timer(Timer.TRANSPORT_CLOSED, TRANSPORT_CLOSED_GRACE)

    def _finish(self, code: DisconnectCode, message: str) -> None:
        """End the session: release everything and fire ``disconnect`` (exactly once)."""
        if self._state is State.CLOSED:
            return
        for timer in sorted(self._timers):
            self._actions.append(CancelTimer(timer))
        self._timers.clear()
        for attempt in list(self._pending_attempts):
            self._close_attempt(attempt)
        if self._websocket_open:
            self._close_selected_websocket()
        self._actions.append(ClosePeerConnection())
        session = self._session
        session.reoffers.clear()
        session.open_labels.clear()
        self._stats_requests.clear()
        self._disconnect = (code, message)
        self._state = State.CLOSED
        logger.info("disconnected: code=%s message=%s", code.name, message)
        self._emit("disconnect", code, message)

    # -- helpers -------------------------------------------------------------

    @contextlib.contextmanager
    def _handling(self, name: str) -> Iterator[None]:
        if self._input is not None:
            raise SignalingStateError(f"{name}() called while handling {self._input}()")
        before = self._state
        targets = allowed_targets(before, name)
        self._input = name
        try:
            yield
        finally:
            self._input = None
        if self._state not in targets:
            raise SignalingStateError(
                f"bug: {name}() moved {before.name} -> {self._state.name}, "
                f"the transition table allows {sorted(s.name for s in targets)}"
            )

    def _emit(self, event: str, *args: Any) -> None:
        self._actions.append(Emit(event, args))

    def _start_timer(self, timer: Timer, seconds: float) -> None:
        self._timers.add(timer)
        self._actions.append(StartTimer(timer, seconds))

    def _cancel_timer(self, timer: Timer) -> None:
        if timer in self._timers:
            self._timers.discard(timer)
            self._actions.append(CancelTimer(timer))

    def _open_websocket(self, url: str) -> None:
        attempt = self._next_attempt
        self._next_attempt += 1
        self._pending_attempts[attempt] = url
        self._actions.append(OpenWebSocket(attempt, url))

    def _select_websocket(self, attempt: int, url: str) -> None:
        # First handshake wins; every other attempt is abandoned (§5.2).
        for other in list(self._pending_attempts):
            self._close_attempt(other)
        self._cancel_timer(Timer.WEBSOCKET_CONNECTION)
        self._websocket_attempt = attempt
        self._websocket_open = True
        if self._selected_url is None:
            self._selected_url = url
        self._connected_url = url
        self._state = State.SIGNALING
        connect = self._config.connect_message
        self._send_websocket(m.with_redirect_flag(connect) if self._redirected else dict(connect))

    def _close_attempt(self, attempt: int, code: int = 1000, reason: str = "") -> None:
        self._pending_attempts.pop(attempt, None)
        self._closing_attempts.add(attempt)
        self._actions.append(CloseWebSocket(attempt, code, reason))

    def _close_selected_websocket(self) -> None:
        if self._websocket_attempt is not None and self._websocket_open:
            self._websocket_open = False
            self._close_attempt(self._websocket_attempt)

    def _abort_selected_websocket(self) -> None:
        # Sora did not close in time: drop the socket, report it as the C++ SDK does.
        if self._websocket_attempt is not None and self._websocket_open:
            self._websocket_open = False
            self._closing_attempts.add(self._websocket_attempt)
            self._actions.append(AbortWebSocket(self._websocket_attempt))
            self._emit("ws_close", *m.DISCONNECT_WAIT_TIMEOUT)

    def _received(self, transport: SignalingType, message: dict[str, Any]) -> None:
        if message["type"] in m.SIGNALING_MESSAGE_TYPES:
            self._emit("signaling_message", transport, SignalingDirection.RECEIVED, message)

    def _send_websocket(self, message: dict[str, Any]) -> bool:
        if self._websocket_attempt is None or not self._websocket_open:
            return False
        self._actions.append(SendWebSocket(self._websocket_attempt, m.dumps(message)))
        if message["type"] in m.SIGNALING_MESSAGE_TYPES:
            self._emit(
                "signaling_message", SignalingType.WEBSOCKET, SignalingDirection.SENT, message
            )
        return True

    def _send_data_channel(self, label: str, message: dict[str, Any]) -> bool:
        spec = self._session.data_channels.get(label)
        if spec is None or label not in self._session.open_labels:
            return False
        payload = m.encode_data_channel_payload(m.dumps(message).encode(), compress=spec.compress)
        self._actions.append(SendDataChannel(label, payload))
        if message["type"] in m.SIGNALING_MESSAGE_TYPES:
            self._emit(
                "signaling_message", SignalingType.DATACHANNEL, SignalingDirection.SENT, message
            )
        return True

    def _send_signaling(self, message: dict[str, Any], *, prefer: SignalingType) -> None:
        if prefer is SignalingType.WEBSOCKET and self._send_websocket(message):
            return
        if self._send_data_channel("signaling", message) or self._send_websocket(message):
            return
        logger.warning("no transport left to send %s", message["type"])

    def _request_stats(self, purpose: str) -> None:
        request_id = self._next_request
        self._next_request += 1
        self._stats_requests[request_id] = purpose
        self._actions.append(CollectStats(request_id))

    def _pump_reoffers(self) -> None:
        # Strictly one re-offer at a time, and only after the answer went out (§5.6).
        session = self._session
        if session.reoffer_in_flight is not None or not session.answered or not session.reoffers:
            return
        if self._state not in _LIVE:
            return
        session.reoffer_in_flight = session.reoffers.popleft()
        self._actions.append(ApplyReoffer(session.reoffer_in_flight.sdp))

    def _take_reoffer_in_flight(self) -> _Reoffer:
        reoffer = self._session.reoffer_in_flight
        if reoffer is None:
            raise SignalingStateError("no re-offer is being applied")
        self._session.reoffer_in_flight = None
        return reoffer

    def _maybe_connected(self) -> None:
        # "Connected" = PC connected and our own connection.created seen (§5.4 step 7).
        session = self._session
        if (
            self._state is State.NEGOTIATING
            and session.peer_connection_connected
            and session.own_connection_created
        ):
            self._cancel_timer(Timer.CONNECT)
            self._state = State.CONNECTED_DC if session.switched else State.CONNECTED_WS
            self._emit("connected")


def _websocket_error_code(code: int | None) -> DisconnectCode:
    # A close frame other than 1000 is ONCLOSE; no close frame at all is ONERROR.
    return DisconnectCode.WEBSOCKET_ONERROR if code is None else DisconnectCode.WEBSOCKET_ONCLOSE
