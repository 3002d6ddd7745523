"""The asyncio driver: :class:`Connection` runs the signaling machine over real I/O.

All protocol decisions live in :class:`~sora_async.signaling.SignalingProtocol`;
this module only moves data. It opens WebSockets with ``websockets``, runs the
media session with our engine :class:`~sora_async.rtc.RtcPeer` (one BUNDLE
transport; DataChannels are created by Sora and arrive through
``datachannel``), fires timers with ``loop.call_later``, and reports every
outcome back to the machine as an input. Events reach the user through a
pyee emitter whose handlers may be coroutines and whose exceptions are
logged, never raised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar, Unpack

from aiortc import RTCDataChannel

from .emitter import Emitter
from .enums import DisconnectCode, Role
from .errors import SoraConnectionError
from .options import ConnectionKeywords, ConnectionOptions
from .rtc import RemoteTrack, RtcOptions, RtcPeer, stats
from .signaling import actions as act
from .signaling.machine import SignalingProtocol
from .signaling.states import SignalingStateError, State
from .websocket import SignalingWebSocket

logger = logging.getLogger("sora_async")

_T = TypeVar("_T")

#: Above this many queued bytes, ``send_data_channel`` waits for the channel to drain.
_DATA_CHANNEL_HIGH_WATER = 1 << 20
_DATA_CHANNEL_LOW_WATER = 1 << 18


class Connection(Emitter):
    """One connection to a Sora channel.

    ``Connection(signaling_urls, role, channel_id, **keywords)`` takes the
    keywords of the official ``Sora.create_connection`` with the same names
    and meaning (see :class:`~sora_async.options.ConnectionKeywords`); they are
    validated at once (``TypeError`` for an unknown keyword, ``ValueError``
    naming the keyword for a bad value). Beyond the official keywords:
    ``video_codec_preference`` (ours, an official ``SoraVideoCodecPreference``
    or its ``to_json()``), ``openh264`` (the path of Cisco's libopenh264 for
    ``CISCO_OPENH264``, which the official API takes as ``Sora(openh264=...)``;
    it is loaded at once, so a wrong path or version raises ``ValueError``) and
    ``connect_timeout``.

    Example::

        async with Connection(
            ["wss://sora.example.com/signaling"],
            "sendrecv",
            "sora",
            data_channel_signaling=True,
            data_channels=[{"label": "#chat", "direction": "sendrecv"}],
        ) as conn:
            conn.on("notify", print)
            await conn.send_data_channel("#chat", b"hi")
            async for label, data in conn.messages("#chat"):
                ...

    Events (``conn.on(name, handler)``; handlers may be coroutines, and an
    exception in one is logged, never raised), as the official callbacks:

    - ``set_offer(dict)``: the offer, once applied (before the answer is sent);
    - ``signaling_message(SignalingType, SignalingDirection, dict)``: every
      connect/redirect/offer/answer/candidate/re-offer/re-answer/update/
      disconnect/close message;
    - ``notify(dict)``, ``push(dict)``, ``switched(dict)``, ``rpc(bytes)``;
    - ``ws_close(code, reason)``: every end of the signaling WebSocket, including
      ``(1000, "SELF-CLOSED")`` when the client closed it itself;
    - ``data_channel(label)``: an offered DataChannel opened (every label, as
      ``sora_sdk`` 2025.4.0 reports them);
    - ``message(label, bytes)``: a message on a ``#`` label;
    - ``track(RemoteTrack)``: a remote track (``stream_id`` = sender's connection id);
    - ``connected()``: what :meth:`connect` waits for (not an official callback);
    - ``disconnect(DisconnectCode, message)``: the end, fired exactly once.

    A connection is single use: once it ended, create a new one. The validated
    keywords are available as :attr:`options`.
    """

    def __init__(
        self,
        signaling_urls: str | list[str],
        role: str | Role,
        channel_id: str,
        **keywords: Unpack[ConnectionKeywords],
    ) -> None:
        self.options = ConnectionOptions.from_arguments(
            signaling_urls, role, channel_id, **keywords
        )
        super().__init__()
        self._protocol = SignalingProtocol(self.options.signaling_config())
        self._performing = False
        self._websockets: dict[int, SignalingWebSocket] = {}
        self._timers: dict[act.Timer, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._peer: RtcPeer | None = None
        #: Set by ClosePeerConnection: no peer connection may be created after it.
        self._pc_closed = False
        self._channels: dict[str, RTCDataChannel] = {}
        self._channel_counters: dict[str, stats.DataChannelCounters] = {}
        self._tracks: list[RemoteTrack] = []
        self._streams: set[_MessageStream] = set()
        #: JSON-RPC requests sent on ``rpc`` awaiting their response, by ``id``.
        self._rpc_pending: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._outcome: asyncio.Future[None] | None = None
        self._closed = asyncio.Event()

    def __repr__(self) -> str:
        # Never the options' secrets (metadata, client_key, proxy_password).
        return (
            f"<Connection channel_id={self.options.channel_id!r} role={self.options.role.value}"
            f" state={self.state.name} connection_id={self.connection_id!r}>"
        )

    # -- public API -------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and return once the peer connection is connected **and** the
        client's own ``connection.created`` notify arrived.

        Raises :class:`~sora_async.SoraConnectionError` (with the ``disconnect``
        code and message) if the connection ends first or ``connect_timeout``
        expires. Cancelling the awaiting task tears the connection down (the
        ``disconnect`` event still fires once).
        """
        if self._protocol.state is not State.INIT:
            raise RuntimeError("connect() can be called once; create a new Connection")
        outcome = asyncio.get_running_loop().create_future()
        outcome.add_done_callback(_consume_exception)
        self._outcome = outcome
        self._feed(self._protocol.start)
        try:
            await asyncio.shield(outcome)
        except asyncio.CancelledError:
            if not outcome.done():
                self._feed(self._protocol.disconnect)
            raise

    async def disconnect(self) -> None:
        """Leave the channel and wait until everything is released.

        Follows the official sequence for the current signaling mode (bounded
        by ``websocket_close_timeout``/``disconnect_wait_timeout``). Calling it
        again, or after the server ended the connection, just waits.
        """
        self._feed(self._protocol.disconnect)
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the connection ended and its sockets and tasks are released."""
        await self._closed.wait()
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def __aenter__(self) -> Connection:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.disconnect()

    async def send_data_channel(self, label: str, data: bytes) -> bool:
        """Send ``data`` on the messaging label ``label``.

        Returns False for Sora-managed labels, labels not in the offer and
        labels whose DataChannel is not open (no ``data_channel`` event yet),
        as the official client does since its issue 0113. Waits while more
        than 1 MiB is queued on the channel. Sora relays a message only to
        receivers whose channel is open on its side; it sends ``switched``
        once all of a connection's channels are, so right after joining wait
        for that before counting on delivery.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        channel = self._channels.get(label)
        if channel is not None and channel.bufferedAmount > _DATA_CHANNEL_HIGH_WATER:
            await _drained(channel)
        return bool(self._feed(self._protocol.send_data_channel, label, bytes(data)))

    async def send_rpc(
        self,
        method: str,
        params: Mapping[str, Any] | list[Any] | None = None,
        id: int | str | None = None,
    ) -> dict[str, Any] | None:
        """Send a JSON-RPC 2.0 call on the ``rpc`` DataChannel (``sora-protocol.md`` §2.8).

        ``method`` is ``"<version>/<API name>"``, e.g. ``"2025.2.0/RequestSimulcastRid"``
        with ``{"rid": "r2"}``; Sora accepts the methods the offer lists in
        ``rpc_methods`` and answers others with error -32601. With an ``id`` this
        waits for the response object (``{"jsonrpc": "2.0", "id": ..., "result": ...}``
        or ``..."error": {...}``; bound the wait with ``asyncio.timeout``); without
        one it is a notification and returns None. Every ``rpc`` message also
        fires the ``rpc(bytes)`` event.

        Raises :class:`RuntimeError` when the offer did not grant the ``rpc``
        label or its DataChannel is not open, and
        :class:`~sora_async.SoraConnectionError` when the connection ends first.
        """
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            request["params"] = params
        waiter: asyncio.Future[dict[str, Any]] | None = None
        if id is not None:
            if id in self._rpc_pending:
                raise ValueError(f"an RPC with id {id!r} is already waiting for its response")
            request["id"] = id
            waiter = asyncio.get_running_loop().create_future()
        data = json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode()
        if waiter is not None:
            self._rpc_pending[id] = waiter
        try:
            if not self._feed(self._protocol.send_rpc, data):
                raise RuntimeError("no open 'rpc' DataChannel (the offer grants none)")
            if waiter is None:
                return None
            return await waiter
        finally:
            if waiter is not None:
                self._rpc_pending.pop(id, None)

    def messages(self, label: str | None = None) -> AsyncIterator[tuple[str, bytes]]:
        """Messages received on ``#`` labels as ``(label, bytes)``, from now on.

        Only ``label`` if given. The iteration ends when the connection ends.
        Messages are buffered until read.
        """
        return _MessageStream(self, label)

    async def get_stats(self) -> list[dict[str, Any]]:
        """W3C-shaped stats (``timestamp`` in ms); ``[]`` before the offer."""
        return await stats.collect(self._peer, self._channel_counters.values())

    @property
    def state(self) -> State:
        """Where the connection is: :class:`~sora_async.signaling.State`."""
        return self._protocol.state

    @property
    def connection_id(self) -> str | None:
        """This connection's id, from the offer."""
        return self._protocol.connection_id

    @property
    def client_id(self) -> str | None:
        """The effective client id, from the offer."""
        return self._protocol.client_id

    @property
    def bundle_id(self) -> str | None:
        """The effective bundle id, from the offer."""
        return self._protocol.bundle_id

    @property
    def session_id(self) -> str | None:
        """The channel session id, from the offer."""
        return self._protocol.session_id

    @property
    def offer(self) -> dict[str, Any] | None:
        """The ``offer`` message as received."""
        return self._protocol.offer

    @property
    def switched(self) -> bool:
        """True once signaling moved to the DataChannels."""
        return self._protocol.switched

    @property
    def disconnect_code(self) -> DisconnectCode | None:
        """How the connection ended (None while it lives)."""
        return self._protocol.disconnect_code

    @property
    def disconnect_message(self) -> str | None:
        """The message that came with :attr:`disconnect_code`."""
        return self._protocol.disconnect_message

    @property
    def tracks(self) -> list[RemoteTrack]:
        """Remote tracks received so far (ended ones included)."""
        return list(self._tracks)

    # -- driving the machine --------------------------------------------------------

    def _feed(self, handler: Callable[..., _T], *args: Any) -> _T | None:
        """Give one input to the machine, then perform what it asks for."""
        try:
            result = handler(*args)
        except SignalingStateError:
            logger.exception("signaling state machine refused %s", handler.__name__)
            result = None
        if self._performing:
            return result  # the outer _feed drains the new actions
        self._performing = True
        try:
            while actions := self._protocol.actions_to_perform():
                for action in actions:
                    try:
                        self._perform(action)
                    except Exception:
                        logger.exception("failed to perform %r", action)
        finally:
            self._performing = False
        return result

    def _perform(self, action: act.Action) -> None:
        if isinstance(action, act.Emit):
            self._on_emit(action.event, action.args)
        elif isinstance(action, act.SendWebSocket):
            websocket = self._websockets.get(action.attempt)
            if websocket is not None:
                websocket.send(action.text)
        elif isinstance(action, act.SendDataChannel):
            self._send_on_channel(action.label, action.payload)
        elif isinstance(action, act.StartTimer):
            self._cancel_timer(action.timer)
            loop = asyncio.get_running_loop()
            self._timers[action.timer] = loop.call_later(
                action.seconds, self._timer_fired, action.timer
            )
        elif isinstance(action, act.CancelTimer):
            self._cancel_timer(action.timer)
        elif isinstance(action, act.OpenWebSocket):
            websocket = SignalingWebSocket(
                action.attempt, action.url, self.options, self._protocol, self._feed, self._spawn
            )
            self._websockets[action.attempt] = websocket
            self._spawn(self._run_websocket(websocket))
        elif isinstance(action, act.CloseWebSocket):
            websocket = self._websockets.get(action.attempt)
            if websocket is not None:
                websocket.close(action.code, action.reason)
        elif isinstance(action, act.AbortWebSocket):
            websocket = self._websockets.get(action.attempt)
            if websocket is not None:
                websocket.abort()
        elif isinstance(action, act.ApplyOffer):
            self._spawn(self._apply_offer(action.sdp, action.offer))
        elif isinstance(action, act.ApplyReoffer):
            self._spawn(self._apply_reoffer(action.sdp))
        elif isinstance(action, act.CollectStats):
            self._spawn(self._collect_stats(action.request_id))
        elif isinstance(action, act.ClosePeerConnection):
            self._pc_closed = True
            self._spawn(self._close_peer_connection())

    async def _run_websocket(self, websocket: SignalingWebSocket) -> None:
        try:
            await websocket.run()
        finally:
            # It holds this connection's _feed and _spawn: a reference cycle that would
            # leave the whole closed connection to the cyclic GC. Nothing is sent on
            # an attempt that ended (the machine was told by websocket_closed).
            if self._websockets.get(websocket.attempt) is websocket:
                del self._websockets[websocket.attempt]

    def _on_emit(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "connected":
            if self._outcome is not None and not self._outcome.done():
                self._outcome.set_result(None)
        elif event == "message":
            label, data = args
            for stream in list(self._streams):
                stream.deliver(label, data)
        elif event == "rpc":
            self._on_rpc_response(args[0])
        elif event == "disconnect":
            code, message = args
            if self._outcome is not None and not self._outcome.done():
                self._outcome.set_exception(SoraConnectionError(code, message))
            for waiter in self._rpc_pending.values():
                if not waiter.done():
                    waiter.set_exception(SoraConnectionError(code, message))
                    waiter.exception()  # a caller may have given up already
            for stream in list(self._streams):
                stream.end()
            self._closed.set()
        self.emit(event, *args)

    def _on_rpc_response(self, payload: bytes) -> None:
        try:
            response = json.loads(payload)
        except ValueError:
            logger.warning("ignoring an 'rpc' message that is not JSON")
            return
        if not isinstance(response, dict):
            return
        key = response.get("id")
        waiter = self._rpc_pending.get(key) if isinstance(key, int | str) else None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("internal task failed", exc_info=task.exception())

    def _timer_fired(self, timer: act.Timer) -> None:
        self._timers.pop(timer, None)
        self._feed(self._protocol.timer_fired, timer)

    def _cancel_timer(self, timer: act.Timer) -> None:
        handle = self._timers.pop(timer, None)
        if handle is not None:
            handle.cancel()

    # -- peer connection ------------------------------------------------------------

    async def _apply_offer(self, sdp: str, offer: Mapping[str, Any]) -> None:
        if self._pc_closed:
            return  # the session ended before this task ran
        try:
            self._peer = self._create_peer()
            # Sources go on the m-sections Sora named in offer["mid"] (§5.4 step 3).
            answer = await self._peer.apply_offer(sdp, offer)
        except Exception as exc:
            logger.warning("failed to apply the offer: %r", exc)
            self._feed(self._protocol.offer_failed, _describe(exc))
            return
        self._feed(self._protocol.offer_applied, answer)

    async def _apply_reoffer(self, sdp: str) -> None:
        try:
            if self._peer is None:
                raise RuntimeError("no peer connection")
            answer = await self._peer.apply_reoffer(sdp)
        except Exception as exc:
            logger.warning("failed to apply a re-offer: %r", exc)
            self._feed(self._protocol.reoffer_failed, _describe(exc))
            return
        self._feed(self._protocol.reoffer_applied, answer)

    def _create_peer(self) -> RtcPeer:
        peer = RtcPeer(RtcOptions.from_connection_options(self.options))
        peer.on("connectionstatechange", lambda state: self._on_connection_state(peer, state))
        peer.on("datachannel", self._on_data_channel)
        peer.on("track", self._on_track)
        return peer

    def _on_connection_state(self, peer: RtcPeer, state: str) -> None:
        if peer is self._peer:
            self._feed(self._protocol.peer_connection_state, state)

    def _on_track(self, track: RemoteTrack) -> None:
        self._tracks.append(track)
        self.emit("track", track)

    def _on_data_channel(self, channel: RTCDataChannel) -> None:
        label = channel.label
        if label in self._channels:
            logger.warning("ignoring a second DataChannel labelled %r", label)
            return
        self._channels[label] = channel
        counters = stats.DataChannelCounters(
            label=label, protocol=channel.protocol, channel_id=channel.id, state=channel.readyState
        )
        self._channel_counters[label] = counters

        def on_open() -> None:
            counters.state = "open"
            self._feed(self._protocol.data_channel_opened, label)

        def on_message(data: bytes | str) -> None:
            counters.received(len(data))
            self._feed(self._protocol.data_channel_message, label, data)

        def on_close() -> None:
            counters.state = "closed"
            self._feed(self._protocol.data_channel_closed, label)

        channel.on("message", on_message)
        channel.on("close", on_close)
        if channel.readyState == "open":
            on_open()
        else:
            channel.on("open", on_open)

    def _send_on_channel(self, label: str, payload: bytes) -> None:
        channel = self._channels.get(label)
        if channel is None or channel.readyState != "open":
            logger.debug("DataChannel %r is not open; message dropped", label)
            return
        channel.send(payload)
        self._channel_counters[label].sent(len(payload))

    async def _collect_stats(self, request_id: int) -> None:
        try:
            reports = await self.get_stats()
        except Exception:
            logger.exception("failed to collect stats")
            reports = []
        self._feed(self._protocol.stats_collected, request_id, reports)

    async def _close_peer_connection(self) -> None:
        peer, self._peer = self._peer, None
        if peer is not None:
            await peer.close()
        self._channels.clear()


class _MessageStream:
    """``Connection.messages()``: an async iterator fed by the ``message`` event."""

    _END: Any = object()

    def __init__(self, connection: Connection, label: str | None) -> None:
        self._connection = connection
        self._label = label
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        connection._streams.add(self)
        if connection._closed.is_set():
            self.end()

    def deliver(self, label: str, data: bytes) -> None:
        if self._label is None or self._label == label:
            self._queue.put_nowait((label, data))

    def end(self) -> None:
        self._queue.put_nowait(self._END)
        self._connection._streams.discard(self)

    def __aiter__(self) -> _MessageStream:
        return self

    async def __anext__(self) -> tuple[str, bytes]:
        item = await self._queue.get()
        if item is self._END:
            self._queue.put_nowait(self._END)  # stay ended
            raise StopAsyncIteration
        return item  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """Stop receiving (messages already queued are dropped)."""
        self._connection._streams.discard(self)


def _describe(exc: BaseException) -> str:
    # Like the official messages: "Connection refused" rather than Python's repr.
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def _consume_exception(future: asyncio.Future[Any]) -> None:
    # connect() may have been cancelled: do not warn about an unretrieved error.
    if not future.cancelled():
        future.exception()


async def _drained(channel: RTCDataChannel) -> None:
    drained = asyncio.Event()
    channel.bufferedAmountLowThreshold = _DATA_CHANNEL_LOW_WATER
    channel.once("bufferedamountlow", drained.set)
    channel.once("close", drained.set)
    if channel.bufferedAmount > _DATA_CHANNEL_LOW_WATER and channel.readyState == "open":
        await drained.wait()
