"""Transcript tests of the sans-I/O Sora signaling machine: JSON in, actions out.

Each test plays one scenario against :class:`SignalingProtocol` with plain
method calls and checks the actions it asks for: what goes on which wire,
which events fire, and how the session ends (code and message exactly as the
official client reports them; see ``sora-protocol.md`` §5.8-§5.11).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest

from sora_async.enums import DisconnectCode, SignalingDirection, SignalingType
from sora_async.signaling import (
    TRANSITIONS,
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
    SignalingConfig,
    SignalingProtocol,
    SignalingStateError,
    StartTimer,
    State,
    Timer,
)
from sora_async.signaling.states import INPUTS

CID = "C" * 26
OTHER = "O" * 26
CONNECT = {
    "type": "connect",
    "role": "recvonly",
    "channel_id": "ch",
    "sora_client": "sora_async 0.1.0",
    "libwebrtc": "aiortc 1.16.0",
    "environment": "[x86_64] Test OS",
    "metadata": {"access_token": "secret"},
    "video": True,
    "audio": True,
}
OFFER_SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
ANSWER_SDP = (
    "v=0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\n"
    "a=mid:0\r\n"
    "a=candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host\r\n"
    "a=candidate:2 1 udp 1694498815 198.51.100.1 5000 typ srflx raddr 192.0.2.1 rport 5000\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 97\r\n"
    "a=mid:1\r\n"
    "a=candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host\r\n"
    "a=candidate:2 1 udp 1694498815 198.51.100.1 5000 typ srflx raddr 192.0.2.1 rport 5000\r\n"
)
CANDIDATES = [
    "candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host",
    "candidate:2 1 udp 1694498815 198.51.100.1 5000 typ srflx raddr 192.0.2.1 rport 5000",
]
LABELS = ["signaling", "notify", "push", "stats", "rpc", "#chat", "#in"]


def offer(*, data_channels: bool = False, compress: bool = False, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "offer",
        "sdp": OFFER_SDP,
        "connection_id": CID,
        "client_id": "client",
        "bundle_id": "bundle",
        "session_id": "S" * 26,
        "channel_id": "ch",
        "config": {"iceServers": []},
        "mid": {"audio": "0", "video": "1"},
        "simulcast": False,
        "an_unknown_key": {"is": "ignored"},
    }
    if data_channels:
        message["data_channel_signaling"] = True
        message["data_channels"] = [
            {"label": "signaling", "direction": "sendrecv", "compress": compress},
            {"label": "notify", "direction": "recvonly", "compress": compress},
            {"label": "push", "direction": "recvonly", "compress": compress},
            {"label": "stats", "direction": "sendrecv", "compress": compress},
            {"label": "rpc", "direction": "sendrecv", "compress": compress},
            {
                "label": "#chat",
                "direction": "sendrecv",
                "compress": compress,
                "header": [{"type": "sender_connection_id"}],
            },
            {"label": "#in", "direction": "recvonly", "compress": compress},
        ]
    message.update(extra)
    return message


def created(connection_id: str = CID) -> dict[str, Any]:
    return {
        "type": "notify",
        "event_type": "connection.created",
        "connection_id": connection_id,
        "channel_connections": 1,
        "future_key": 1,
    }


class Session:
    """A machine plus the actions it produced so far, with transcript helpers."""

    def __init__(self, urls: tuple[str, ...] = ("wss://a.example/signaling",), **timeouts: Any):
        self.proto = SignalingProtocol(SignalingConfig(list(urls), CONNECT, **timeouts))
        self.log: list[Action] = []

    def take(self) -> list[Action]:
        actions = self.proto.actions_to_perform()
        self.log.extend(actions)
        return actions

    # -- inputs ----------------------------------------------------------------

    def ws(self, message: dict[str, Any] | str | bytes, attempt: int = 0) -> list[Action]:
        text = message if isinstance(message, str | bytes) else json.dumps(message)
        self.proto.websocket_message(attempt, text)
        return self.take()

    def dc(
        self, label: str, message: dict[str, Any] | bytes, *, compress: bool = False
    ) -> list[Action]:
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        self.proto.data_channel_message(label, zlib.compress(data) if compress else data)
        return self.take()

    # -- getting somewhere -----------------------------------------------------------

    def to_signaling(self) -> None:
        self.proto.start()
        self.proto.websocket_opened(0)
        self.take()

    def to_negotiating(self, **kw: Any) -> None:
        self.to_signaling()
        self.ws(offer(**kw))
        self.proto.offer_applied(ANSWER_SDP)
        self.take()

    def to_connected_ws(self, **kw: Any) -> None:
        self.to_negotiating(**kw)
        self.proto.peer_connection_state("connected")
        self.ws(created())
        assert self.proto.state is State.CONNECTED_WS

    def to_connected_dc(self, *, ignore: bool, compress: bool = False) -> None:
        self.to_negotiating(data_channels=True, compress=compress)
        self.proto.peer_connection_state("connected")
        for label in LABELS:
            self.proto.data_channel_opened(label)
        self.ws({"type": "switched", "ignore_disconnect_websocket": ignore})
        self.dc("notify", created(), compress=compress)
        assert self.proto.state is State.CONNECTED_DC

    def close_all_dcs(self) -> list[Action]:
        for label in LABELS:
            self.proto.data_channel_closed(label)
        return self.take()


def of(actions: list[Action], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def events(actions: list[Action], name: str) -> list[tuple[Any, ...]]:
    return [a.args for a in actions if isinstance(a, Emit) and a.event == name]


def ws_sent(actions: list[Action]) -> list[dict[str, Any]]:
    return [json.loads(a.text) for a in of(actions, SendWebSocket)]


def dc_sent(actions: list[Action], *, compress: bool = False) -> list[tuple[str, Any]]:
    out = []
    for a in of(actions, SendDataChannel):
        data = zlib.decompress(a.payload) if compress else a.payload
        out.append((a.label, data if a.label.startswith("#") else json.loads(data)))
    return out


def disconnects(actions: list[Action]) -> list[tuple[DisconnectCode, str]]:
    return [(code, message) for code, message in events(actions, "disconnect")]


def signaling_messages(
    actions: list[Action],
) -> list[tuple[SignalingType, SignalingDirection, str]]:
    return [(t, d, m["type"]) for t, d, m in events(actions, "signaling_message")]


# -- connecting ----------------------------------------------------------------------


def test_first_websocket_to_open_wins_and_the_others_are_closed() -> None:
    s = Session(urls=("wss://a/signaling", "wss://b/signaling", "wss://c/signaling"))
    s.proto.start()
    actions = s.take()
    assert [(a.attempt, a.url) for a in of(actions, OpenWebSocket)] == [
        (0, "wss://a/signaling"),
        (1, "wss://b/signaling"),
        (2, "wss://c/signaling"),
    ]
    assert StartTimer(Timer.CONNECT, 30.0) in actions
    assert StartTimer(Timer.WEBSOCKET_CONNECTION, 30.0) in actions

    s.proto.websocket_opened(1)
    actions = s.take()
    assert of(actions, CloseWebSocket) == [CloseWebSocket(0), CloseWebSocket(2)]
    assert CancelTimer(Timer.WEBSOCKET_CONNECTION) in actions
    [sent] = of(actions, SendWebSocket)
    assert sent.attempt == 1 and json.loads(sent.text) == CONNECT
    assert signaling_messages(actions) == [
        (SignalingType.WEBSOCKET, SignalingDirection.SENT, "connect")
    ]
    assert s.proto.state is State.SIGNALING
    assert s.proto.selected_url == "wss://b/signaling"

    # A loser that opens anyway is ignored (the driver already closes it).
    s.proto.websocket_opened(0)
    s.proto.websocket_closed(2, 1000, "")
    assert s.take() == []


def test_every_handshake_failing_ends_with_websocket_handshake_failed() -> None:
    s = Session(urls=("ws://a/signaling", "ws://b/signaling"))
    s.proto.start()
    s.take()
    s.proto.websocket_failed(0, "Connection refused")
    assert disconnects(s.take()) == []
    s.proto.websocket_failed(1, "Connection refused")
    actions = s.take()
    assert disconnects(actions) == [
        (
            DisconnectCode.WEBSOCKET_HANDSHAKE_FAILED,
            "Failed Websocket handshake: last_ec=Connection refused last_url=ws://b/signaling",
        )
    ]
    assert of(actions, ClosePeerConnection) == [ClosePeerConnection()]
    assert s.proto.state is State.CLOSED


def test_websocket_connection_timeout() -> None:
    s = Session(websocket_connection_timeout=2.5)
    s.proto.start()
    assert StartTimer(Timer.WEBSOCKET_CONNECTION, 2.5) in s.take()
    s.proto.timer_fired(Timer.WEBSOCKET_CONNECTION)
    actions = s.take()
    assert disconnects(actions) == [(DisconnectCode.INTERNAL_ERROR, "Connection timeout")]
    assert CloseWebSocket(0) in actions  # the pending attempt is abandoned


def test_connect_timeout_while_negotiating() -> None:
    s = Session(connect_timeout=7)
    s.to_negotiating()
    s.proto.timer_fired(Timer.CONNECT)
    actions = s.take()
    assert disconnects(actions) == [(DisconnectCode.INTERNAL_ERROR, "Connection timeout")]
    assert CloseWebSocket(0) in actions and ClosePeerConnection() in actions


def test_a_cancelled_timer_firing_late_is_ignored() -> None:
    s = Session()
    s.to_signaling()  # WEBSOCKET_CONNECTION was cancelled when the WebSocket opened
    s.proto.timer_fired(Timer.WEBSOCKET_CONNECTION)
    assert s.take() == [] and s.proto.state is State.SIGNALING


# -- redirect -------------------------------------------------------------------------


def test_redirect_reconnects_with_the_same_connect_plus_redirect_true() -> None:
    s = Session()
    s.to_signaling()
    actions = s.ws({"type": "redirect", "location": "wss://b.example/signaling"})
    assert signaling_messages(actions) == [
        (SignalingType.WEBSOCKET, SignalingDirection.RECEIVED, "redirect")
    ]
    assert CloseWebSocket(0) in actions
    assert events(actions, "ws_close") == [(1000, "SELF-CLOSED")]
    assert of(actions, OpenWebSocket) == [OpenWebSocket(1, "wss://b.example/signaling")]
    assert StartTimer(Timer.WEBSOCKET_CONNECTION, 30.0) in actions
    assert s.proto.state is State.REDIRECTING

    # Late frames and the close of the old WebSocket change nothing.
    assert s.ws({"type": "offer", "sdp": "x", "connection_id": CID}, attempt=0) == []
    s.proto.websocket_closed(0, 1000, "")
    assert s.take() == []

    s.proto.websocket_opened(1)
    [connect] = ws_sent(s.take())
    assert connect == {**CONNECT, "redirect": True}
    keys = list(connect)
    assert keys.index("redirect") == keys.index("environment") + 1
    assert s.proto.state is State.SIGNALING
    assert s.proto.connected_url == "wss://b.example/signaling"
    assert s.proto.selected_url == "wss://a.example/signaling"

    s.ws(offer(), attempt=1)
    assert s.proto.connection_id == CID


def test_redirect_to_an_invalid_url() -> None:
    s = Session()
    s.to_signaling()
    actions = s.ws({"type": "redirect", "location": "http://b/signaling"})
    assert disconnects(actions) == [
        (DisconnectCode.INVALID_PARAMETER, "Invalid URL: url=http://b/signaling")
    ]


def test_redirect_handshake_failure_and_timeout() -> None:
    s = Session()
    s.to_signaling()
    s.ws({"type": "redirect", "location": "ws://b/signaling"})
    s.proto.websocket_failed(1, "Connection refused")
    assert disconnects(s.take()) == [
        (
            DisconnectCode.WEBSOCKET_HANDSHAKE_FAILED,
            "Failed Websocket handshake in redirecting: ec=Connection refused url=ws://b/signaling",
        )
    ]

    s = Session()
    s.to_signaling()
    s.ws({"type": "redirect", "location": "ws://b/signaling"})
    s.proto.timer_fired(Timer.WEBSOCKET_CONNECTION)
    assert disconnects(s.take()) == [
        (DisconnectCode.INTERNAL_ERROR, "Connection timeout in redirection")
    ]


# -- offer, answer, connected -------------------------------------------------------------


def test_offer_is_applied_then_answered_with_trickled_candidates() -> None:
    s = Session()
    s.to_signaling()
    message = offer()
    actions = s.ws(message)
    assert of(actions, ApplyOffer) == [ApplyOffer(OFFER_SDP, message)]
    assert signaling_messages(actions) == [
        (SignalingType.WEBSOCKET, SignalingDirection.RECEIVED, "offer")
    ]
    assert s.proto.state is State.NEGOTIATING
    assert (s.proto.connection_id, s.proto.client_id, s.proto.bundle_id) == (
        CID,
        "client",
        "bundle",
    )
    assert s.proto.session_id == "S" * 26 and s.proto.offer == message

    s.proto.offer_applied(ANSWER_SDP)
    actions = s.take()
    assert events(actions, "set_offer") == [(message,)]
    # answer, then each distinct candidate once, as the C++ SDK trickles them
    assert ws_sent(actions) == [
        {"type": "answer", "sdp": ANSWER_SDP},
        *({"type": "candidate", "candidate": c} for c in CANDIDATES),
    ]
    assert signaling_messages(actions) == [
        (SignalingType.WEBSOCKET, SignalingDirection.SENT, "answer"),
        (SignalingType.WEBSOCKET, SignalingDirection.SENT, "candidate"),
        (SignalingType.WEBSOCKET, SignalingDirection.SENT, "candidate"),
    ]


def test_messages_other_than_offer_and_redirect_are_ignored_before_the_offer() -> None:
    s = Session()
    s.to_signaling()
    for message in ({"type": "ping"}, created(), {"type": "push", "data": {}}, {"type": "x"}):
        assert s.ws(message) == []
    assert s.proto.state is State.SIGNALING


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        ("not json", "invalid JSON: Expecting value"),
        ('"a string"', "not a JSON object but a string"),
        ("[1, 2]", "not a JSON object but an array"),
        ("null", "not a JSON object but null"),
        ('{"sdp": "x"}', "'type' must be a string, got nothing"),
        ('{"type": 1}', "'type' must be a string, got a number"),
        ('{"type": "offer", "x": NaN}', "invalid JSON: NaN is not JSON"),
        ("[" * 100_000, "invalid JSON"),
        (b'{"type": "offer"}', "binary frame (Sora sends text)"),
    ],
)
def test_an_unusable_frame_before_the_offer_ends_the_session(
    frame: str | bytes, problem: str
) -> None:
    s = Session()
    s.to_signaling()
    actions = s.ws(frame)
    [(code, message)] = disconnects(actions)
    assert code is DisconnectCode.INTERNAL_ERROR
    assert message.startswith(f"Invalid signaling message via WebSocket: {problem}")
    assert CloseWebSocket(0, 1000, "") in actions and s.proto.state is State.CLOSED


def test_an_unusable_frame_while_connected_leaves_with_the_normal_sequence() -> None:
    s = Session()
    s.to_connected_ws()
    actions = s.ws("{broken")
    assert ws_sent(actions) == [{"type": "disconnect", "reason": "INTERNAL-ERROR"}]
    assert s.proto.state is State.CLOSING
    s.proto.websocket_closed(0, 1000, "TYPE-DISCONNECT")
    [(code, message)] = disconnects(s.take())
    assert code is DisconnectCode.INTERNAL_ERROR
    assert message == (
        "Invalid signaling message via WebSocket: invalid JSON: Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1), internal_message="
        "Succeeded to close WebSocket (DC signaling is not enabled)"
    )


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"sdp": None}, "'sdp' must be a string, got null"),
        ({"connection_id": 7}, "'connection_id' must be a non-empty string, got a number"),
        ({"connection_id": ""}, "'connection_id' must be a non-empty string, got a string"),
        ({"client_id": ["x"]}, "'client_id' must be a string, got an array"),
        ({"config": []}, "'config' must be an object, got an array"),
        ({"config": {"iceServers": {}}}, "'config.iceServers' must be an array, got an object"),
        ({"config": {"iceServers": [1]}}, "'config.iceServers[0]' must be an object, got a number"),
        (
            {"config": {"iceServers": [{"urls": [1]}]}},
            "'config.iceServers[0].urls' must be a string or an array of strings, got an array",
        ),
        (
            {"config": {"iceServers": [{"urls": "turn:x", "credential": 1}]}},
            "'config.iceServers[0].credential' must be a string, got a number",
        ),
        ({"mid": "0"}, "'mid' must be an object, got a string"),
        ({"mid": {"audio": 0}}, "'mid.audio' must be a string, got a number"),
        ({"data_channels": {}}, "'data_channels' must be an array, got an object"),
        ({"data_channels": [{"label": 1}]}, "'data_channels[0].label' must be a non-empty"),
        (
            {"data_channels": [{"label": "#a", "compress": "yes"}]},
            "'data_channels[0].compress' must be a boolean, got a string",
        ),
        ({"encodings": [None]}, "'encodings[0]' must be an object, got null"),
        ({"simulcast": "true"}, "'simulcast' must be a boolean, got a string"),
    ],
)
def test_an_offer_with_missing_or_wrong_typed_members_ends_the_session(
    change: dict[str, Any], problem: str
) -> None:
    s = Session()
    s.to_signaling()
    message = offer()
    message.update(change)
    actions = s.ws(message)
    [(code, message)] = disconnects(actions)
    assert code is DisconnectCode.INTERNAL_ERROR
    assert message.startswith(f"Invalid offer message via WebSocket: {problem}")
    assert not of(actions, ApplyOffer)


def test_a_re_offer_before_the_offer_ends_the_session() -> None:
    s = Session()
    s.to_signaling()
    [(code, message)] = disconnects(s.ws({"type": "re-offer", "sdp": OFFER_SDP}))
    assert code is DisconnectCode.INTERNAL_ERROR
    assert message == "Unexpected re-offer message via WebSocket before the offer"


@pytest.mark.parametrize("transport", ["websocket", "datachannel"])
def test_a_re_offer_without_sdp_or_a_notify_without_event_type_ends_the_session(
    transport: str,
) -> None:
    for bad, problem in (
        ({"type": "re-offer"}, "Invalid re-offer message"),
        ({"type": "re-offer", "sdp": 1}, "Invalid re-offer message"),
        ({"type": "notify", "event_type": None}, "Invalid notify message"),
        ({"type": "notify", "event_type": "x", "connection_id": 1}, "Invalid notify message"),
    ):
        s = Session()
        if transport == "websocket":
            s.to_connected_ws()
            s.ws(bad)
            s.proto.websocket_closed(0, 1000, "TYPE-DISCONNECT")
        else:
            s.to_connected_dc(ignore=True)
            s.dc("signaling" if bad["type"] == "re-offer" else "notify", bad)
            s.close_all_dcs()
        s.take()
        [(code, message)] = disconnects(s.log)
        assert code is DisconnectCode.INTERNAL_ERROR, message
        assert message.startswith(problem), message
        assert ("WebSocket" if transport == "websocket" else "DataChannel") in message


@pytest.mark.parametrize("order", ["pc_first", "notify_first"])
def test_connected_needs_the_peer_connection_and_our_own_connection_created(order: str) -> None:
    s = Session()
    s.to_negotiating()
    s.ws(created(OTHER))  # somebody else's does not count
    steps = [
        lambda: s.proto.peer_connection_state("connected"),
        lambda: s.ws(created()),
    ]
    if order == "notify_first":
        steps.reverse()
    steps[0]()
    assert events(s.take(), "connected") == [] and s.proto.state is State.NEGOTIATING
    steps[1]()
    actions = s.take() + s.log[-3:]
    assert s.proto.state is State.CONNECTED_WS
    assert events(s.log, "connected") == [()]
    assert CancelTimer(Timer.CONNECT) in s.log
    assert [a for a in events(actions, "notify")][-1][0]["connection_id"] == CID


def test_notify_and_push_over_websocket_are_emitted_as_received() -> None:
    s = Session()
    s.to_connected_ws()
    notify = {"type": "notify", "event_type": "connection.destroyed", "connection_id": OTHER}
    push = {"type": "push", "data": {"x": 1}}
    assert events(s.ws(notify), "notify") == [(notify,)]
    assert events(s.ws(push), "push") == [(push,)]
    assert signaling_messages(s.log[-2:]) == []  # not signaling messages (observed)


def test_ping_is_answered_with_pong_and_with_stats_when_asked() -> None:
    s = Session()
    s.to_connected_ws()
    assert ws_sent(s.ws({"type": "ping", "stats": False})) == [{"type": "pong"}]
    actions = s.ws({"type": "ping", "stats": True})
    [collect] = of(actions, CollectStats)
    reports = [{"id": "T", "type": "transport", "timestamp": 1.0}]
    s.proto.stats_collected(collect.request_id, reports)
    assert ws_sent(s.take()) == [{"type": "pong", "stats": reports}]


def test_unknown_types_and_keys_are_ignored() -> None:
    s = Session()
    s.to_connected_ws()
    assert s.ws({"type": "future-type", "x": 1}) == []
    assert s.ws({"type": "offer", "sdp": "again", "connection_id": CID}) == []
    assert s.ws({"type": "notify", "event_type": "future.event", "x": [1]}) != []
    assert s.proto.state is State.CONNECTED_WS


# -- re-offer ---------------------------------------------------------------------------


def test_re_offers_are_applied_one_at_a_time_and_answered_in_kind() -> None:
    s = Session()
    s.to_connected_ws()
    first = s.ws({"type": "re-offer", "sdp": "sdp-1"})
    assert of(first, ApplyReoffer) == [ApplyReoffer("sdp-1")]
    assert signaling_messages(first) == [
        (SignalingType.WEBSOCKET, SignalingDirection.RECEIVED, "re-offer")
    ]
    assert of(s.ws({"type": "update", "sdp": "sdp-2"}), ApplyReoffer) == []  # queued
    assert of(s.ws({"type": "re-offer", "sdp": "sdp-3"}), ApplyReoffer) == []

    s.proto.reoffer_applied("answer-1")
    actions = s.take()
    assert ws_sent(actions) == [{"type": "re-answer", "sdp": "answer-1"}]
    assert of(actions, ApplyReoffer) == [ApplyReoffer("sdp-2")]
    s.proto.reoffer_applied("answer-2")
    actions = s.take()
    assert ws_sent(actions) == [{"type": "update", "sdp": "answer-2"}]  # legacy update
    assert of(actions, ApplyReoffer) == [ApplyReoffer("sdp-3")]
    s.proto.reoffer_applied("answer-3")
    assert signaling_messages(s.take()) == [
        (SignalingType.WEBSOCKET, SignalingDirection.SENT, "re-answer")
    ]


def test_a_re_offer_before_the_answer_waits_for_it() -> None:
    s = Session()
    s.to_signaling()
    s.ws(offer())
    assert of(s.ws({"type": "re-offer", "sdp": "early"}), ApplyReoffer) == []
    s.proto.offer_applied(ANSWER_SDP)
    actions = s.take()
    assert ws_sent(actions)[0]["type"] == "answer"
    assert of(actions, ApplyReoffer) == [ApplyReoffer("early")]


def test_a_re_offer_on_the_datachannel_is_answered_there_compressed() -> None:
    s = Session()
    s.to_connected_dc(ignore=True, compress=True)
    actions = s.dc("signaling", {"type": "re-offer", "sdp": "dc-sdp"}, compress=True)
    assert of(actions, ApplyReoffer) == [ApplyReoffer("dc-sdp")]
    assert signaling_messages(actions) == [
        (SignalingType.DATACHANNEL, SignalingDirection.RECEIVED, "re-offer")
    ]
    s.proto.reoffer_applied("dc-answer")
    actions = s.take()
    assert dc_sent(actions, compress=True) == [
        ("signaling", {"type": "re-answer", "sdp": "dc-answer"})
    ]
    assert signaling_messages(actions) == [
        (SignalingType.DATACHANNEL, SignalingDirection.SENT, "re-answer")
    ]


def test_a_websocket_re_offer_answered_after_the_websocket_closed_goes_on_the_datachannel() -> None:
    s = Session()
    s.to_negotiating(data_channels=True)
    s.proto.peer_connection_state("connected")
    for label in LABELS:
        s.proto.data_channel_opened(label)
    s.ws({"type": "re-offer", "sdp": "ws-sdp"})
    s.ws({"type": "switched", "ignore_disconnect_websocket": True})  # closes the WebSocket
    s.proto.reoffer_applied("late")
    assert dc_sent(s.take()) == [("signaling", {"type": "re-answer", "sdp": "late"})]


# -- DataChannel signaling ---------------------------------------------------------------


def test_switched_with_ignore_closes_the_websocket_as_self_closed() -> None:
    s = Session()
    s.to_negotiating(data_channels=True)
    s.proto.peer_connection_state("connected")
    for label in LABELS:
        s.proto.data_channel_opened(label)
    # Every offered label is reported as it opens, as sora_sdk 2025.4.0 does.
    assert events(s.take(), "data_channel") == [(label,) for label in LABELS]
    switched = {"type": "switched", "ignore_disconnect_websocket": True}
    actions = s.ws(switched)
    assert events(actions, "switched") == [(switched,)]
    assert CloseWebSocket(0) in actions
    assert events(actions, "ws_close") == [(1000, "SELF-CLOSED")]
    assert events(actions, "data_channel") == []
    assert s.proto.switched and s.proto.ignore_disconnect_websocket
    assert s.proto.state is State.NEGOTIATING  # own connection.created not seen yet
    s.proto.websocket_closed(0, 1000, "")  # our own close completing: not news
    assert s.take() == []
    actions = s.dc("notify", created())
    assert events(actions, "connected") == [()] and s.proto.state is State.CONNECTED_DC


def test_switched_without_ignore_keeps_the_websocket_for_ping() -> None:
    s = Session()
    s.to_connected_dc(ignore=False)
    assert not any(isinstance(a, CloseWebSocket) for a in s.log)
    assert ws_sent(s.ws({"type": "ping", "stats": False})) == [{"type": "pong"}]


def test_only_offered_datachannels_are_reported_once_each() -> None:
    s = Session()
    s.to_negotiating(data_channels=True)
    s.proto.data_channel_opened("signaling")
    s.ws({"type": "switched", "ignore_disconnect_websocket": False})
    s.proto.data_channel_opened("#chat")
    s.proto.data_channel_opened("#chat")
    s.proto.data_channel_opened("not-offered")
    s.take()
    assert events(s.log, "data_channel") == [("signaling",), ("#chat",)]


@pytest.mark.parametrize("compress", [False, True])
def test_datachannel_notify_push_stats_rpc_and_messages(compress: bool) -> None:
    s = Session()
    s.to_connected_dc(ignore=True, compress=compress)
    notify = {"type": "notify", "event_type": "connection.updated"}
    assert events(s.dc("notify", notify, compress=compress), "notify") == [(notify,)]
    push = {"type": "push", "data": [1]}
    assert events(s.dc("push", push, compress=compress), "push") == [(push,)]

    [collect] = of(s.dc("stats", {"type": "req-stats"}, compress=compress), CollectStats)
    s.proto.stats_collected(collect.request_id, [{"type": "transport"}])
    assert dc_sent(s.take(), compress=compress) == [
        ("stats", {"type": "stats", "reports": [{"type": "transport"}]})
    ]

    assert events(s.dc("rpc", b'{"jsonrpc":"2.0","id":1}', compress=compress), "rpc") == [
        (b'{"jsonrpc":"2.0","id":1}',)
    ]
    payload = CID.encode() + b"\x00binary"  # 26-byte sender header left in place
    assert events(s.dc("#chat", payload, compress=compress), "message") == [("#chat", payload)]


def test_uncompressed_datachannel_messages_may_be_text_or_binary() -> None:
    s = Session()
    s.to_connected_dc(ignore=True)
    s.proto.data_channel_message("#chat", "text frame")
    s.proto.data_channel_message("notify", json.dumps({"type": "notify", "event_type": "x"}))
    actions = s.take()
    assert events(actions, "message") == [("#chat", b"text frame")]
    assert len(events(actions, "notify")) == 1


def test_bad_messaging_payloads_are_dropped_not_fatal() -> None:
    # Messages on "#" labels come from other clients: a bad one is not Sora's fault.
    s = Session()
    s.to_connected_dc(ignore=True, compress=True)
    s.proto.data_channel_message("#chat", b"not zlib")
    s.proto.data_channel_message("#chat", zlib.compress(b"x")[:-3])  # truncated
    s.proto.data_channel_message("unknown-label", b"x")
    assert s.take() == [] and s.proto.state is State.CONNECTED_DC
    s.proto.data_channel_message("#chat", zlib.compress(b"fine"))
    assert events(s.take(), "message") == [("#chat", b"fine")]


@pytest.mark.parametrize(
    ("label", "payload", "problem"),
    [
        ("signaling", b"not zlib", "invalid zlib payload"),
        ("notify", zlib.compress(b"not json"), "invalid JSON"),
        ("push", zlib.compress(b"[]"), "not a JSON object but an array"),
        ("signaling", zlib.compress(b"x" * 100)[:-4], "invalid zlib payload: incomplete"),
        ("stats", zlib.compress(b" " * (9 << 20)), "zlib payload inflates to more than 8388608"),
    ],
)
def test_bad_payloads_on_sora_labels_end_the_session(
    label: str, payload: bytes, problem: str
) -> None:
    s = Session()
    s.to_connected_dc(ignore=True, compress=True)
    s.proto.data_channel_message(label, payload)
    actions = s.take()
    assert dc_sent(actions, compress=True) == [
        ("signaling", {"type": "disconnect", "reason": "INTERNAL-ERROR"})
    ]
    [(code, message)] = disconnects(s.close_all_dcs())
    assert code is DisconnectCode.INTERNAL_ERROR
    assert message.startswith(f"Invalid message on DataChannel {label!r}: {problem}"), message
    assert message.endswith("internal_message=Succeeded to close DataChannel")


def test_a_websocket_failure_found_by_the_client_is_named() -> None:
    s = Session()
    s.to_connected_ws()
    error = "client closed the WebSocket with 1009 (message too big) frame exceeds limit"
    s.proto.websocket_closed(0, None, "", error)
    actions = s.take()
    assert events(actions, "ws_close") == [(0, "")]
    assert disconnects(actions) == [
        (
            DisconnectCode.WEBSOCKET_ONERROR,
            f"Failed to read WebSocket: ec={error} wscode=0 wsreason=",
        )
    ]


@pytest.mark.parametrize("compress", [False, True])
def test_send_data_channel_accepts_only_open_offered_messaging_labels(compress: bool) -> None:
    s = Session()
    s.to_negotiating(data_channels=True, compress=compress)
    assert not s.proto.send_data_channel("#chat", b"early")  # not open yet
    for label in LABELS:
        s.proto.data_channel_opened(label)
    s.take()
    # Sora-managed labels and labels missing from the offer (official issue 0113).
    for label in ("signaling", "notify", "push", "stats", "rpc", "#nope"):
        assert not s.proto.send_data_channel(label, b"x"), label
    assert s.take() == []
    assert s.proto.send_data_channel("#chat", b"hello")
    [sent] = of(s.take(), SendDataChannel)
    assert sent.label == "#chat"
    assert (zlib.decompress(sent.payload) if compress else sent.payload) == b"hello"
    s.proto.data_channel_closed("#chat")
    assert not s.proto.send_data_channel("#chat", b"closed")


# -- client-initiated disconnect: the three modes -----------------------------------------


def test_disconnect_websocket_only() -> None:
    s = Session()
    s.to_connected_ws()
    s.proto.disconnect()
    actions = s.take()
    assert ws_sent(actions) == [{"type": "disconnect", "reason": "NO-ERROR"}]
    assert signaling_messages(actions) == [
        (SignalingType.WEBSOCKET, SignalingDirection.SENT, "disconnect")
    ]
    assert StartTimer(Timer.WEBSOCKET_CLOSE, 3.0) in actions
    assert s.proto.state is State.CLOSING
    s.proto.disconnect()  # again: nothing new
    assert s.take() == []
    s.proto.websocket_closed(0, 1000, "TYPE-DISCONNECT")
    actions = s.take()
    assert events(actions, "ws_close") == [(1000, "TYPE-DISCONNECT")]
    assert disconnects(actions) == [
        (
            DisconnectCode.CLOSE_SUCCEEDED,
            "Succeeded to close WebSocket (DC signaling is not enabled)",
        )
    ]
    assert ClosePeerConnection() in actions
    assert s.proto.disconnect_code is DisconnectCode.CLOSE_SUCCEEDED


def test_disconnect_websocket_only_counts_any_close_frame_as_success() -> None:
    # Observed with the official client: a 4490 close after "disconnect" is still success.
    s = Session()
    s.to_connected_ws()
    s.proto.disconnect()
    s.take()
    s.proto.websocket_closed(0, 4490, "X")
    assert disconnects(s.take()) == [
        (
            DisconnectCode.CLOSE_SUCCEEDED,
            "Succeeded to close WebSocket (DC signaling is not enabled)",
        )
    ]


def test_disconnect_websocket_only_failures() -> None:
    s = Session()
    s.to_connected_ws()
    s.proto.disconnect()
    s.take()
    s.proto.websocket_closed(0, None)  # TCP reset, no close frame
    actions = s.take()
    assert events(actions, "ws_close") == [(0, "")]
    assert disconnects(actions) == [
        (
            DisconnectCode.CLOSE_FAILED,
            "Failed to close WebSocket: ec=End of file wscode=0 wsreason=",
        )
    ]

    s = Session(websocket_close_timeout=1)
    s.to_signaling()  # also before the offer: the C++ SDK already says disconnect
    s.proto.disconnect()
    assert ws_sent(s.take()) == [{"type": "disconnect", "reason": "NO-ERROR"}]
    s.proto.timer_fired(Timer.WEBSOCKET_CLOSE)
    actions = s.take()
    assert AbortWebSocket(0) in actions
    assert events(actions, "ws_close") == [(4999, "DISCONNECT-WAIT-TIMEOUT-ERROR")]
    assert disconnects(actions) == [
        (
            DisconnectCode.CLOSE_FAILED,
            "Failed to close WebSocket: ec=Operation canceled wscode=0 wsreason=",
        )
    ]


@pytest.mark.parametrize("compress", [False, True])
def test_disconnect_hybrid_waits_for_datachannels_and_websocket(compress: bool) -> None:
    s = Session()
    s.to_connected_dc(ignore=False, compress=compress)
    s.proto.disconnect()
    actions = s.take()
    assert dc_sent(actions, compress=compress) == [
        ("signaling", {"type": "disconnect", "reason": "NO-ERROR"})
    ]
    assert ws_sent(actions) == []
    assert signaling_messages(actions) == [
        (SignalingType.DATACHANNEL, SignalingDirection.SENT, "disconnect")
    ]
    assert StartTimer(Timer.DISCONNECT_WAIT, 5.0) in actions
    actions = s.close_all_dcs()
    assert disconnects(actions) == []
    assert CancelTimer(Timer.DISCONNECT_WAIT) in actions
    assert StartTimer(Timer.WEBSOCKET_CLOSE, 3.0) in actions  # the WS gets its own guard
    s.proto.websocket_closed(0, 1000, "TYPE-DISCONNECT")
    actions = s.take()
    assert events(actions, "ws_close") == [(1000, "TYPE-DISCONNECT")]
    assert disconnects(actions) == [
        (DisconnectCode.CLOSE_SUCCEEDED, "Succeeded to close Websocket (DC signaling is enabled)")
    ]


def test_disconnect_hybrid_websocket_closing_first() -> None:
    s = Session()
    s.to_connected_dc(ignore=False)
    s.proto.disconnect()
    s.take()
    s.proto.websocket_closed(0, 1000, "TYPE-DISCONNECT")
    assert disconnects(s.take()) == []
    assert disconnects(s.close_all_dcs()) == [
        (DisconnectCode.CLOSE_SUCCEEDED, "Succeeded to close Websocket (DC signaling is enabled)")
    ]


def test_disconnect_hybrid_timeouts() -> None:
    s = Session()
    s.to_connected_dc(ignore=False)
    s.proto.disconnect()
    s.take()
    s.proto.timer_fired(Timer.DISCONNECT_WAIT)
    actions = s.take()
    assert AbortWebSocket(0) in actions
    assert events(actions, "ws_close") == [(4999, "DISCONNECT-WAIT-TIMEOUT-ERROR")]
    assert disconnects(actions) == [
        (
            DisconnectCode.CLOSE_FAILED,
            "Failed to close DataChannel and WebSocket: ec=Operation canceled",
        )
    ]

    s = Session()
    s.to_connected_dc(ignore=False)
    s.proto.disconnect()
    s.close_all_dcs()
    s.proto.timer_fired(Timer.WEBSOCKET_CLOSE)
    assert disconnects(s.take()) == [
        (
            DisconnectCode.CLOSE_FAILED,
            "Failed to close WebSocket: ec=Operation canceled wscode=0 wsreason=",
        )
    ]


@pytest.mark.parametrize("compress", [False, True])
def test_disconnect_datachannel_only(compress: bool) -> None:
    s = Session()
    s.to_connected_dc(ignore=True, compress=compress)
    s.proto.disconnect()
    actions = s.take()
    assert dc_sent(actions, compress=compress) == [
        ("signaling", {"type": "disconnect", "reason": "NO-ERROR"})
    ]
    # Sora closes the DataChannels; the client does not close them itself.
    assert of(actions, ClosePeerConnection) == []
    actions = s.close_all_dcs()
    assert disconnects(actions) == [
        (DisconnectCode.CLOSE_SUCCEEDED, "Succeeded to close DataChannel")
    ]
    assert ClosePeerConnection() in actions


def test_peer_connection_failing_during_a_datachannel_disconnect_ends_it_once() -> None:
    # found by tests/test_signaling_fuzz.py: CLOSING -> CLOSED on a PC failure
    s = Session()
    s.to_connected_dc(ignore=True)
    s.proto.disconnect()
    s.take()
    s.proto.peer_connection_state("failed")
    actions = s.take()
    assert s.proto.state is State.CLOSED
    assert len(disconnects(s.log)) == 1 and disconnects(actions)
    assert ClosePeerConnection() in actions


def test_disconnect_datachannel_only_timeout() -> None:
    s = Session(disconnect_wait_timeout=2)
    s.to_connected_dc(ignore=True)
    s.proto.disconnect()
    assert StartTimer(Timer.DISCONNECT_WAIT, 2) in s.take()
    s.proto.timer_fired(Timer.DISCONNECT_WAIT)
    assert disconnects(s.take()) == [
        (DisconnectCode.CLOSE_FAILED, "Failed to close DataChannel: ec=Operation canceled")
    ]


def test_disconnect_while_connecting_or_redirecting_says_nothing() -> None:
    for redirect in (False, True):
        s = Session()
        s.proto.start()
        s.take()
        if redirect:
            s.proto.websocket_opened(0)
            s.ws({"type": "redirect", "location": "ws://b/signaling"})
        s.proto.disconnect()
        actions = s.take()
        assert of(actions, SendWebSocket) == []
        assert disconnects(actions) == [
            (DisconnectCode.CLOSE_SUCCEEDED, "Close was called in connecting")
        ]
        assert CloseWebSocket(1 if redirect else 0) in actions


def test_disconnect_before_start() -> None:
    s = Session()
    s.proto.disconnect()
    assert disconnects(s.take()) == [
        (DisconnectCode.CLOSE_SUCCEEDED, "Close was called in connecting")
    ]
    with pytest.raises(SignalingStateError):
        s.proto.start()


# -- server-initiated endings ---------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (
            1000,
            "DISCONNECTED-API",
            (
                DisconnectCode.CLOSE_SUCCEEDED,
                "Succeeded to close WebSocket from server: ec=The WebSocket stream was "
                "gracefully closed at both endpoints wscode=1000 wsreason=DISCONNECTED-API",
            ),
        ),
        (
            4490,
            "INVALID-MESSAGE",
            (
                DisconnectCode.WEBSOCKET_ONCLOSE,
                "Failed to read WebSocket: ec=The WebSocket stream was gracefully closed at "
                "both endpoints wscode=4490 wsreason=INVALID-MESSAGE",
            ),
        ),
        (
            None,
            "",
            (
                DisconnectCode.WEBSOCKET_ONERROR,
                "Failed to read WebSocket: ec=End of file wscode=0 wsreason=",
            ),
        ),
    ],
)
@pytest.mark.parametrize("where", ["signaling", "connected"])
def test_server_closing_the_websocket(
    where: str, code: int | None, reason: str, expected: tuple[DisconnectCode, str]
) -> None:
    s = Session()
    s.to_signaling() if where == "signaling" else s.to_connected_ws()
    s.proto.websocket_closed(0, code, reason)
    actions = s.take()
    assert events(actions, "ws_close") == [(code or 0, reason)]
    assert disconnects(actions) == [expected]
    assert of(actions, SendWebSocket) == [] and of(actions, CloseWebSocket) == []


def test_server_closing_the_websocket_with_1000_in_hybrid_mode() -> None:
    s = Session()
    s.to_connected_dc(ignore=False)
    s.proto.websocket_closed(0, 1000, "DISCONNECTED-API")
    assert disconnects(s.take()) == [
        (
            DisconnectCode.CLOSE_SUCCEEDED,
            "Succeeded to close WebSocket and DataChannel from server: ec=The WebSocket "
            "stream was gracefully closed at both endpoints wscode=1000 wsreason=DISCONNECTED-API",
        )
    ]


@pytest.mark.parametrize(
    ("code", "why", "expected_code"),
    [
        (4490, "WEBSOCKET-ONCLOSE", DisconnectCode.WEBSOCKET_ONCLOSE),
        (None, "WEBSOCKET-ONERROR", DisconnectCode.WEBSOCKET_ONERROR),
    ],
)
def test_websocket_lost_in_hybrid_mode_is_reported_over_the_datachannel(
    code: int | None, why: str, expected_code: DisconnectCode
) -> None:
    s = Session()
    s.to_connected_dc(ignore=False)
    s.proto.websocket_closed(0, code, "X" if code else "")
    actions = s.take()
    assert dc_sent(actions) == [("signaling", {"type": "disconnect", "reason": why})]
    assert s.proto.state is State.CLOSING
    [(got_code, message)] = disconnects(s.close_all_dcs())
    assert got_code is expected_code
    assert message.startswith("Failed to read WebSocket and succeeded to close DataChannel: ec=")


def test_websocket_lost_in_hybrid_mode_after_the_pc_failed_ends_at_once() -> None:
    s = Session()
    s.to_connected_dc(ignore=False)
    s.proto.peer_connection_state("failed")
    assert disconnects(s.take())[0][0] is DisconnectCode.PEER_CONNECTION_STATE_FAILED


def test_websocket_loss_after_switched_with_ignore_is_not_an_error() -> None:
    s = Session()
    s.to_negotiating(data_channels=True)
    for label in LABELS:
        s.proto.data_channel_opened(label)
    s.proto.peer_connection_state("connected")
    # Our own close was requested; but even a server close would be ignored now.
    s.ws({"type": "switched", "ignore_disconnect_websocket": True})
    s.proto.websocket_closed(0, 4490, "X")
    assert disconnects(s.take()) == []


@pytest.mark.parametrize("compress", [False, True])
def test_close_message_on_the_datachannel(compress: bool) -> None:
    s = Session()
    s.to_connected_dc(ignore=True, compress=compress)
    close = {"type": "close", "code": 1000, "reason": "DISCONNECTED-API"}
    actions = s.dc("signaling", close, compress=compress)
    assert signaling_messages(actions) == [
        (SignalingType.DATACHANNEL, SignalingDirection.RECEIVED, "close")
    ]
    assert of(actions, SendDataChannel) == []  # never answer close with disconnect
    assert s.proto.state is State.CLOSING
    assert disconnects(s.close_all_dcs()) == [
        (DisconnectCode.CLOSE_SUCCEEDED, "Succeeded to close DataChannel: reason=DISCONNECTED-API")
    ]


def test_close_message_with_an_error_code_and_datachannels_that_never_close() -> None:
    s = Session()
    s.to_connected_dc(ignore=True)
    s.dc("signaling", {"type": "close", "code": 4490, "reason": "INTERNAL-ERROR"})
    s.proto.timer_fired(Timer.DISCONNECT_WAIT)
    assert disconnects(s.take()) == [
        (
            DisconnectCode.CLOSE_SUCCEEDED,
            "Failed to close DataChannel: code=4490 reason=INTERNAL-ERROR",
        )
    ]


def test_an_offered_datachannel_closing_ends_a_datachannel_only_session() -> None:
    s = Session()
    s.to_connected_dc(ignore=True)
    s.proto.data_channel_closed("push")
    actions = s.take()
    assert disconnects(actions) == [
        (DisconnectCode.DATACHANNEL_CLOSED, "DataChannel was closed unexpectedly: label=push")
    ]
    assert of(actions, SendDataChannel) == []


def test_a_datachannel_closing_with_the_websocket_up_lets_the_websocket_explain() -> None:
    s = Session()
    s.to_connected_dc(ignore=False)
    s.proto.data_channel_closed("#chat")
    actions = s.take()
    assert StartTimer(Timer.TRANSPORT_CLOSED, 1.0) in actions and disconnects(actions) == []
    s.proto.websocket_closed(0, 1000, "DISCONNECTED-API")
    assert disconnects(s.take())[0][0] is DisconnectCode.CLOSE_SUCCEEDED

    s = Session()
    s.to_connected_dc(ignore=False)
    s.proto.data_channel_closed("#chat")
    s.proto.timer_fired(Timer.TRANSPORT_CLOSED)
    assert disconnects(s.take()) == [
        (DisconnectCode.DATACHANNEL_CLOSED, "DataChannel was closed unexpectedly: label=#chat")
    ]


def test_peer_connection_failure_sends_no_disconnect() -> None:
    for prepare in ("ws", "dc"):
        s = Session()
        s.to_connected_ws() if prepare == "ws" else s.to_connected_dc(ignore=False)
        s.proto.peer_connection_state("failed")
        actions = s.take()
        assert disconnects(actions) == [
            (DisconnectCode.PEER_CONNECTION_STATE_FAILED, "PeerConnectionState is failed")
        ]
        assert of(actions, SendWebSocket) == [] and of(actions, SendDataChannel) == []
        assert ClosePeerConnection() in actions and CloseWebSocket(0) in actions


def test_peer_connection_closing_by_itself_ends_after_a_grace_period() -> None:
    s = Session()
    s.to_connected_ws()
    s.proto.peer_connection_state("closed")
    assert StartTimer(Timer.TRANSPORT_CLOSED, 1.0) in s.take()
    s.proto.timer_fired(Timer.TRANSPORT_CLOSED)
    assert disconnects(s.take()) == [
        (DisconnectCode.PEER_CONNECTION_STATE_FAILED, "PeerConnection was closed")
    ]


def test_offer_failure_leaves_with_ice_failed_after_the_normal_sequence() -> None:
    s = Session()
    s.to_signaling()
    s.ws(offer())
    s.proto.offer_failed("no common codec")
    actions = s.take()
    assert ws_sent(actions) == [{"type": "disconnect", "reason": "INTERNAL-ERROR"}]
    s.proto.websocket_closed(0, 1000, "TYPE-DISCONNECT")
    assert disconnects(s.take()) == [
        (
            DisconnectCode.ICE_FAILED,
            "Failed to SetOffer in offer message via WebSocket: error=no common codec, "
            "internal_message=Succeeded to close WebSocket (DC signaling is not enabled)",
        )
    ]


def test_re_offer_failure_on_the_datachannel() -> None:
    s = Session()
    s.to_connected_dc(ignore=True)
    s.dc("signaling", {"type": "re-offer", "sdp": "bad"})
    s.proto.reoffer_failed("boom")
    assert dc_sent(s.take()) == [("signaling", {"type": "disconnect", "reason": "INTERNAL-ERROR"})]
    assert disconnects(s.close_all_dcs()) == [
        (
            DisconnectCode.ICE_FAILED,
            "Failed to SetOffer in re-offer message via DataChannel: error=boom, "
            "internal_message=Succeeded to close DataChannel",
        )
    ]


def test_an_invalid_offer_ends_the_session() -> None:
    s = Session()
    s.to_signaling()
    actions = s.ws({"type": "offer", "sdp": 1})
    assert disconnects(actions)[0][0] is DisconnectCode.INTERNAL_ERROR


# -- invariants -------------------------------------------------------------------------


def _every_scenario() -> list[Session]:
    sessions = []
    for build in (
        lambda s: s.to_connected_ws() or s.proto.disconnect(),
        lambda s: s.to_connected_ws() or s.proto.peer_connection_state("failed"),
        lambda s: s.to_connected_dc(ignore=True) or s.proto.disconnect() or s.close_all_dcs(),
        lambda s: s.to_connected_dc(ignore=False) or s.proto.websocket_closed(0, None),
        lambda s: s.to_signaling() or s.proto.timer_fired(Timer.CONNECT),
    ):
        s = Session()
        build(s)
        s.take()
        sessions.append(s)
    return sessions


def test_disconnect_fires_exactly_once_and_late_inputs_are_ignored() -> None:
    for s in _every_scenario():
        for label in LABELS:
            s.proto.data_channel_closed(label)
        s.proto.websocket_closed(0, 1000, "")
        s.proto.peer_connection_state("closed")
        s.proto.timer_fired(Timer.DISCONNECT_WAIT)
        s.proto.disconnect()
        s.proto.data_channel_message("#chat", b"late")
        s.proto.websocket_message(0, json.dumps(created()))
        s.take()
        assert len(events(s.log, "disconnect")) == 1, s.log
        assert s.proto.state is State.CLOSED
        assert not s.proto.send_data_channel("#chat", b"x")


def test_metadata_is_sent_but_never_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="sora_async")
    s = Session()
    s.to_connected_ws()
    s.proto.disconnect()
    s.proto.websocket_closed(0, 1000, "TYPE-DISCONNECT")
    connect = ws_sent(s.log)[0]
    assert connect["type"] == "connect" and connect["metadata"] == {"access_token": "secret"}
    assert "secret" not in caplog.text


# -- the transition table -----------------------------------------------------------------


def _in_state(state: State) -> Session:
    s = Session()
    if state is State.CONNECTING:
        s.proto.start()
    elif state is State.SIGNALING:
        s.to_signaling()
    elif state is State.REDIRECTING:
        s.to_signaling()
        s.ws({"type": "redirect", "location": "ws://b/signaling"})
    elif state is State.NEGOTIATING:
        s.to_negotiating(data_channels=True)
        for label in LABELS:
            s.proto.data_channel_opened(label)
    elif state is State.CONNECTED_WS:
        s.to_connected_ws(data_channels=True)
        for label in LABELS:
            s.proto.data_channel_opened(label)
    elif state is State.CONNECTED_DC:
        s.to_connected_dc(ignore=False)
    elif state is State.CLOSING:
        s.to_connected_dc(ignore=False)
        s.dc("signaling", {"type": "re-offer", "sdp": "in flight"})
        s.proto.disconnect()
    elif state is State.CLOSED:
        s.to_connected_dc(ignore=False)
        s.dc("signaling", {"type": "re-offer", "sdp": "in flight"})
        s.proto.peer_connection_state("failed")
    s.take()
    assert s.proto.state is state
    return s


def _call(s: Session, name: str) -> None:
    p = s.proto
    reoffer_pending = p._session.reoffer_in_flight is not None
    calls = {
        "start": lambda: p.start(),
        "websocket_opened": lambda: p.websocket_opened(0),
        "websocket_failed": lambda: p.websocket_failed(0, "refused"),
        "websocket_message": lambda: p.websocket_message(0, json.dumps(created())),
        "websocket_closed": lambda: p.websocket_closed(0, 1000, "X"),
        "offer_applied": lambda: p.offer_applied(ANSWER_SDP),
        "offer_failed": lambda: p.offer_failed("x"),
        "reoffer_applied": lambda: p.reoffer_applied("a"),
        "reoffer_failed": lambda: p.reoffer_failed("x"),
        "peer_connection_state": lambda: p.peer_connection_state("connected"),
        "data_channel_opened": lambda: p.data_channel_opened("#chat"),
        "data_channel_message": lambda: p.data_channel_message(
            "signaling", json.dumps({"type": "close", "code": 1000, "reason": "R"})
        ),
        "data_channel_closed": lambda: p.data_channel_closed("#chat"),
        "stats_collected": lambda: p.stats_collected(0, []),
        "timer_fired": lambda: p.timer_fired(Timer.CONNECT),
        "disconnect": lambda: p.disconnect(),
    }
    live = (State.NEGOTIATING, State.CONNECTED_WS, State.CONNECTED_DC)
    if name.startswith("reoffer_") and not reoffer_pending and p.state in live:
        s.ws({"type": "re-offer", "sdp": "x"})
        s.dc("signaling", {"type": "re-offer", "sdp": "x"})
    calls[name]()


@pytest.mark.parametrize("state", list(State))
def test_every_row_of_the_transition_table(state: State) -> None:
    for name in INPUTS:
        s = _in_state(state)
        targets = TRANSITIONS[state].get(name)
        if targets is None:
            with pytest.raises(SignalingStateError, match=f"{name}.. is not allowed"):
                _call(s, name)
            continue
        _call(s, name)  # the machine itself checks the result against the table
        assert s.proto.state in targets, (state, name, s.proto.state)
