"""Property-based test of the sans-I/O signaling machine against hostile input.

Real transcripts recorded from the dev server (``tests/data/``, see
``record_transcripts.py``) are mutated by hypothesis (messages dropped,
duplicated, reordered, corrupted, retyped, truncated, flipped between text and
binary, compressed or not, replaced by random JSON or bytes) and replayed
against :class:`SignalingProtocol` by a simulated driver that behaves like
``Connection`` (it answers ``ApplyOffer``, ``CollectStats``, opens and closes
WebSockets, fires timers, and only reports DataChannel and peer-connection
events that aiortc could produce). A second property feeds purely random
messages. In every case no exception escapes, at most one ``disconnect`` is
ever emitted, nothing is sent after it, and driving the session to its end
always emits exactly one ``disconnect`` with a code and a message.

``SORA_ASYNC_FUZZ_EXAMPLES`` scales the number of cases (default 10,000 for
the transcript property, 2,000 for the random one).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sora_async.enums import DisconnectCode
from sora_async.signaling import (
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
    StartTimer,
    State,
    Timer,
)

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
given, settings, HealthCheck = hypothesis.given, hypothesis.settings, hypothesis.HealthCheck

EXAMPLES = int(os.environ.get("SORA_ASYNC_FUZZ_EXAMPLES", "10000"))
TRANSCRIPTS = json.loads(
    (Path(__file__).parent / "data" / "signaling_transcripts.json").read_text()
)
LABELS = ["signaling", "notify", "push", "stats", "rpc", "e2ee", "#chat", "#x", "unknown"]
TYPES = [
    "offer",
    "re-offer",
    "update",
    "notify",
    "push",
    "ping",
    "switched",
    "redirect",
    "close",
    "req-stats",
    "disconnect",
    "answer",
    "future-type",
]
PC_STATES = ["new", "connecting", "connected", "failed", "closed", "disconnected", "bogus"]
ANSWER = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n"
SETTINGS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
}


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$bytes"}:
        return base64.b64decode(value["$bytes"])
    return value


@dataclass
class Event:
    """Something the network or aiortc does: what the fuzzer mutates."""

    kind: str  # ws | dc | dc_open | dc_close | ws_close | pc | user (disconnect())
    label: str = ""
    data: Any = None  # str | bytes | tuple
    compressed: bool = False


def _environment(transcript: dict[str, Any]) -> list[Event]:
    events: list[Event] = []
    for name, *args in transcript["inputs"]:
        if name == "websocket_message":
            events.append(Event("ws", data=_decode(args[1])))
        elif name == "data_channel_message":
            data = _decode(args[1])
            compressed = False
            if isinstance(data, bytes):
                try:
                    data, compressed = zlib.decompress(data), True
                except zlib.error:
                    pass
            events.append(Event("dc", label=args[0], data=data, compressed=compressed))
        elif name == "data_channel_opened":
            events.append(Event("dc_open", label=args[0]))
        elif name == "data_channel_closed":
            events.append(Event("dc_close", label=args[0]))
        elif name == "websocket_closed":
            events.append(Event("ws_close", data=(args[1], args[2] if len(args) > 2 else "")))
        elif name == "peer_connection_state":
            events.append(Event("pc", data=args[0]))
        elif name == "disconnect":
            events.append(Event("user"))
    return events


# -- hostile values -------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(TYPES + LABELS + ["connection.created", "", "wss://x/signaling", "ws:"]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
random_messages = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(TYPES)},
        optional={
            "sdp": st.one_of(st.just(ANSWER), json_values),
            "connection_id": st.one_of(st.just("C" * 26), json_values),
            "event_type": st.one_of(st.just("connection.created"), json_values),
            "location": st.one_of(st.just("wss://b.example/signaling"), json_values),
            "ignore_disconnect_websocket": json_values,
            "stats": json_values,
            "config": json_values,
            "data_channels": st.one_of(
                st.lists(
                    st.fixed_dictionaries(
                        {"label": st.sampled_from(LABELS)},
                        optional={"compress": st.booleans(), "direction": st.text(max_size=8)},
                    ),
                    max_size=4,
                ),
                json_values,
            ),
            "code": json_values,
            "reason": json_values,
        },
    ),
    json_values,
)


def _mutate_message(draw: Any, data: Any) -> Any:
    """One mutation of one JSON message (given as text or bytes)."""
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        message = None
    operation = draw(
        st.sampled_from(
            ["delete", "retype", "set", "type", "truncate", "garbage", "random", "nest"]
        )
    )
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
    if operation == "truncate":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if operation == "garbage":
        return draw(st.one_of(st.binary(max_size=64), st.text(max_size=64)))
    if operation == "random" or not isinstance(message, dict) or not message:
        return json.dumps(draw(random_messages))
    message = copy.deepcopy(message)
    key = draw(st.sampled_from(sorted(message)))
    if operation == "delete":
        del message[key]
    elif operation == "retype":
        message[key] = draw(json_values)
    elif operation == "set":
        message[draw(st.text(max_size=12))] = draw(json_values)
    elif operation == "type":
        message["type"] = draw(st.one_of(st.sampled_from(TYPES), json_values))
    elif operation == "nest" and isinstance(message.get(key), dict | list):
        inner = message[key]
        if isinstance(inner, dict) and inner:
            inner[draw(st.sampled_from(sorted(inner)))] = draw(json_values)
        elif isinstance(inner, list) and inner:
            inner[draw(st.integers(0, len(inner) - 1))] = draw(json_values)
    return json.dumps(message)


@st.composite
def mutated_transcripts(draw: Any) -> tuple[dict[str, Any], list[Event]]:
    transcript = draw(st.sampled_from(TRANSCRIPTS))
    events = _environment(transcript)
    for _ in range(draw(st.integers(0, 10))):
        if not events:
            break
        operation = draw(
            st.sampled_from(
                [
                    *("mutate", "mutate", "mutate", "mutate"),
                    *("drop", "dup", "swap", "flip", "label", "insert"),
                ]
            )
        )
        messages = [i for i, e in enumerate(events) if e.kind in ("ws", "dc")]
        if operation in ("mutate", "flip") and messages:
            i = draw(st.sampled_from(messages))  # message events are what servers garble
        else:
            i = draw(st.integers(0, len(events) - 1))
        event = events[i]
        if operation == "drop":
            del events[i]
        elif operation == "dup":
            events.insert(i, copy.deepcopy(event))
        elif operation == "swap" and i + 1 < len(events):
            events[i], events[i + 1] = events[i + 1], events[i]
        elif operation == "mutate" and event.kind in ("ws", "dc"):
            event.data = _mutate_message(draw, event.data)
        elif operation == "flip" and event.kind == "ws":
            event.data = event.data.encode() if isinstance(event.data, str) else event.data
        elif operation == "flip" and event.kind == "dc":
            event.compressed = not event.compressed
        elif operation == "label" and event.kind in ("dc", "dc_open", "dc_close"):
            event.label = draw(st.sampled_from(LABELS))
        elif operation == "insert":
            kind = draw(st.sampled_from(["ws", "dc", "ws_close", "pc", "dc_close"]))
            events.insert(i, _random_event(draw, kind))
    return transcript, events


def _random_event(draw: Any, kind: str) -> Event:
    if kind == "ws":
        return Event("ws", data=json.dumps(draw(random_messages)))
    if kind == "dc":
        return Event(
            "dc",
            label=draw(st.sampled_from(LABELS)),
            data=json.dumps(draw(random_messages)).encode(),
            compressed=draw(st.booleans()),
        )
    if kind == "ws_close":
        code = draw(
            st.one_of(st.none(), st.sampled_from([1000, 1001, 4490, 1006]), st.integers(0, 5000))
        )
        return Event("ws_close", data=(code, draw(st.text(max_size=12))))
    if kind == "pc":
        return Event("pc", data=draw(st.sampled_from(PC_STATES)))
    return Event("dc_close", label=draw(st.sampled_from(LABELS)))


# -- the simulated driver ----------------------------------------------------------------


@dataclass
class Driver:
    """Performs actions like ``Connection`` does and checks the invariants."""

    proto: SignalingProtocol
    pending_attempts: set[int] = field(default_factory=set)
    open_attempts: list[int] = field(default_factory=list)
    closing_attempts: set[int] = field(default_factory=set)
    timers: set[Timer] = field(default_factory=set)
    applies: list[str] = field(default_factory=list)
    stats: list[int] = field(default_factory=list)
    pc: bool = False
    pc_closed: bool = False
    offer_answered: bool = False
    dcs: set[str] = field(default_factory=set)
    disconnects: list[tuple[Any, ...]] = field(default_factory=list)
    closed_pc: int = 0

    def drain(self) -> None:
        for action in self.proto.actions_to_perform():
            self.perform(action)

    def perform(self, action: Action) -> None:
        if self.disconnects and isinstance(
            action,
            SendWebSocket
            | SendDataChannel
            | ApplyOffer
            | ApplyReoffer
            | OpenWebSocket
            | StartTimer,
        ):
            raise AssertionError(f"{action!r} after disconnect")
        if isinstance(action, OpenWebSocket):
            self.pending_attempts.add(action.attempt)
        elif isinstance(action, CloseWebSocket | AbortWebSocket):
            if action.attempt in self.pending_attempts:
                self.pending_attempts.discard(action.attempt)  # the opening task is cancelled
            elif action.attempt in self.open_attempts:
                self.open_attempts.remove(action.attempt)
                self.closing_attempts.add(action.attempt)
        elif isinstance(action, StartTimer):
            self.timers.add(action.timer)
        elif isinstance(action, CancelTimer):
            self.timers.discard(action.timer)
        elif isinstance(action, ApplyOffer):
            if not self.pc_closed:
                self.pc = True
            self.applies.append("offer")
        elif isinstance(action, ApplyReoffer):
            self.applies.append("reoffer")
        elif isinstance(action, CollectStats):
            self.stats.append(action.request_id)
        elif isinstance(action, ClosePeerConnection):
            self.pc_closed = True
            self.closed_pc += 1
            self.dcs.clear()
        elif isinstance(action, Emit) and action.event == "disconnect":
            code, message = action.args
            assert isinstance(code, DisconnectCode) and isinstance(message, str) and message
            self.disconnects.append(action.args)
            assert len(self.disconnects) == 1, self.disconnects
            assert self.closed_pc == 1, "disconnect before the peer connection was released"

    def feed(self, method: str, *args: Any) -> None:
        getattr(self.proto, method)(*args)
        self.drain()

    # -- what the network / aiortc may do -----------------------------------------------

    @property
    def live_pc(self) -> bool:
        return self.pc and not self.pc_closed

    def environment(self, event: Event) -> None:
        if event.kind == "ws" and self.open_attempts:
            self.feed("websocket_message", self.open_attempts[-1], event.data)
        elif event.kind == "ws_close" and self.open_attempts:
            attempt = self.open_attempts.pop()
            code, reason = event.data
            error = "client closed the WebSocket with 1009" if code == 1009 else None
            self.feed("websocket_closed", attempt, code, str(reason), error)
        elif event.kind == "dc_open" and self.live_pc and self.offer_answered:
            self.dcs.add(event.label)
            self.feed("data_channel_opened", event.label)
        elif event.kind == "dc" and self.live_pc and event.label in self.dcs:
            data = event.data
            if event.compressed:
                raw = data.encode() if isinstance(data, str) else data
                data = zlib.compress(raw)
            self.feed("data_channel_message", event.label, data)
        elif event.kind == "dc_close" and self.live_pc and event.label in self.dcs:
            self.dcs.discard(event.label)
            self.feed("data_channel_closed", event.label)
        elif event.kind == "pc" and self.live_pc:
            state = event.data
            if state == "connected" and not self.offer_answered:
                return  # ICE cannot complete before the answer exists
            self.feed("peer_connection_state", state)
        elif event.kind == "user":
            self.feed("disconnect")

    # -- what Connection's own tasks do -------------------------------------------------

    def progress(self, choice: int) -> None:
        """One step of the driver's own work, picked by ``choice``."""
        steps = []
        if self.pending_attempts:
            steps += ["open", "fail"]
        if self.applies:
            steps += ["apply", "apply", "apply_fail"]
        if self.stats:
            steps.append("stats")
        if self.closing_attempts:
            steps.append("closed")
        if self.timers:
            steps.append("timer")
        if not steps:
            return
        step = steps[choice % len(steps)]
        if step in ("open", "fail"):
            attempt = min(self.pending_attempts)
            self.pending_attempts.discard(attempt)
            if step == "open":
                self.open_attempts.append(attempt)
                self.feed("websocket_opened", attempt)
            else:
                self.feed("websocket_failed", attempt, "Connection refused")
        elif step in ("apply", "apply_fail"):
            kind = self.applies.pop(0)
            ok = step == "apply"
            if kind == "offer":
                self.offer_answered = ok
                self.feed("offer_applied" if ok else "offer_failed", *([ANSWER] if ok else ["x"]))
            else:
                self.feed("reoffer_applied" if ok else "reoffer_failed", ANSWER if ok else "x")
        elif step == "stats":
            self.feed("stats_collected", self.stats.pop(0), [{"id": "T", "type": "transport"}])
        elif step == "closed":
            attempt = min(self.closing_attempts)
            self.closing_attempts.discard(attempt)
            self.feed("websocket_closed", attempt, 1000, "")
        elif step == "timer":
            timer = sorted(self.timers)[choice % len(self.timers)]
            self.timers.discard(timer)
            self.feed("timer_fired", timer)

    def settle(self) -> None:
        """Complete the driver's pending work successfully (no timers)."""
        while self.pending_attempts or self.applies or self.stats or self.closing_attempts:
            if self.pending_attempts:
                attempt = min(self.pending_attempts)
                self.pending_attempts.discard(attempt)
                self.open_attempts.append(attempt)
                self.feed("websocket_opened", attempt)
            elif self.applies:
                kind = self.applies.pop(0)
                if kind == "offer":
                    self.offer_answered = True
                    self.feed("offer_applied", ANSWER)
                else:
                    self.feed("reoffer_applied", ANSWER)
            elif self.stats:
                self.feed("stats_collected", self.stats.pop(0), [])
            else:
                attempt = min(self.closing_attempts)
                self.closing_attempts.discard(attempt)
                self.feed("websocket_closed", attempt, 1000, "")

    def finish(self, *, polite: bool = True) -> None:
        """Drive the session to its end: leave, then let everything complete.

        ``polite``: Sora closes the DataChannels and the WebSocket as asked;
        otherwise it never answers and the timers end the session.
        """
        self.feed("disconnect")
        for _ in range(1000):
            if self.pending_attempts:
                attempt = min(self.pending_attempts)
                self.pending_attempts.discard(attempt)
                self.open_attempts.append(attempt)
                self.feed("websocket_opened", attempt)
            elif self.applies:
                self.progress(1)  # apply (the first step when only applies wait)
            elif self.stats:
                self.feed("stats_collected", self.stats.pop(0), [])
            elif self.closing_attempts:
                attempt = min(self.closing_attempts)
                self.closing_attempts.discard(attempt)
                self.feed("websocket_closed", attempt, 1000, "")
            elif self.proto.state is State.CLOSED:
                break
            elif polite and self.dcs and self.live_pc:
                label = sorted(self.dcs)[0]
                self.dcs.discard(label)
                self.feed("data_channel_closed", label)
            elif polite and self.open_attempts:
                self.feed("websocket_closed", self.open_attempts.pop(), 1000, "TYPE-DISCONNECT")
            elif self.timers:
                timer = sorted(self.timers)[0]
                self.timers.discard(timer)
                self.feed("timer_fired", timer)
            else:
                raise AssertionError(f"stuck in {self.proto.state.name} with nothing pending")
        assert self.proto.state is State.CLOSED
        assert len(self.disconnects) == 1, self.disconnects
        assert not self.timers, self.timers  # every timer was cancelled or fired


def _machine(transcript: dict[str, Any] | None) -> SignalingProtocol:
    urls = transcript["signaling_urls"] if transcript else ["wss://a.example/signaling"]
    connect = transcript["connect"] if transcript else {"type": "connect", "role": "recvonly"}
    return SignalingProtocol(
        SignalingConfig(
            urls,
            connect,
            connect_timeout=30,
            websocket_connection_timeout=10,
            websocket_close_timeout=3,
            disconnect_wait_timeout=5,
        )
    )


def _replay(data: Any, transcript: dict[str, Any] | None, events: list[Event]) -> Driver:
    driver = Driver(_machine(transcript))
    driver.feed("start")
    for event in events:
        # The driver's own work interleaves with the network's events: usually
        # its tasks are done by the time the next message arrives; sometimes
        # they lag, fail, or a timer fires first.
        how = data.draw(st.integers(0, 9), label="driver")
        if how == 0:
            pass
        elif how == 1:
            for _ in range(data.draw(st.integers(1, 3), label="steps")):
                driver.progress(data.draw(st.integers(0, 7), label="step"))
        else:
            driver.settle()
        driver.environment(event)
        if data.draw(st.integers(0, 40), label="user") == 0:
            driver.feed("disconnect")
        if data.draw(st.integers(0, 40), label="send") == 0:
            driver.proto.send_data_channel("#chat", b"user data")
            driver.drain()
    driver.finish(polite=data.draw(st.booleans(), label="polite server"))
    return driver


@pytest.mark.slow
@pytest.mark.timeout(1200)
@settings(max_examples=EXAMPLES, **SETTINGS)
@given(case=mutated_transcripts(), data=st.data())
def test_mutated_real_transcripts_never_break_the_machine(
    case: tuple[dict[str, Any], list[Event]], data: Any
) -> None:
    transcript, events = case
    _replay(data, transcript, events)


@st.composite
def random_sessions(draw: Any) -> list[Event]:
    kinds = st.sampled_from(["ws", "ws", "ws", "dc", "dc", "ws_close", "pc", "dc_close", "dc_open"])
    events = []
    for kind in draw(st.lists(kinds, max_size=25)):
        if kind == "dc_open":
            events.append(Event("dc_open", label=draw(st.sampled_from(LABELS))))
        else:
            events.append(_random_event(draw, kind))
    return events


@pytest.mark.slow
@pytest.mark.timeout(600)
@settings(max_examples=max(1, EXAMPLES // 5), **SETTINGS)
@given(events=random_sessions(), data=st.data())
def test_random_messages_never_break_the_machine(events: list[Event], data: Any) -> None:
    _replay(data, None, events)


def test_the_transcripts_replay_unchanged_to_a_clean_end() -> None:
    # Sanity check of the harness: the real transcripts end as they did.
    for transcript in TRANSCRIPTS:
        driver = Driver(_machine(transcript))
        driver.feed("start")
        for event in _environment(transcript):
            driver.settle()
            driver.environment(event)
        driver.settle()
        driver.finish()
        [(code, message)] = driver.disconnects
        assert code is DisconnectCode.CLOSE_SUCCEEDED, (transcript["name"], message)
