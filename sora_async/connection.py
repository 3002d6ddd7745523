"""The asyncio driver: :class:`Connection` runs the signaling machine over real I/O.

All protocol decisions live in :class:`~sora_async.signaling.SignalingProtocol`;
this module only moves data. It opens WebSockets with ``websockets``, runs the
media session with aiortc's ``RTCPeerConnection`` (``bundlePolicy=MAX_BUNDLE``;
DataChannels are created by Sora and arrive through ``datachannel``), fires
timers with ``loop.call_later``, and reports every outcome back to the machine
as an input. Events reach the user through a pyee emitter whose handlers may
be coroutines and whose exceptions are logged, never raised.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar, Unpack

import websockets
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy, RTCIceTransportPolicy
from websockets.asyncio.client import ClientConnection

from . import _aiortc_seam as seam
from . import stats
from .emitter import Emitter
from .enums import DisconnectCode, Role, TrackState
from .errors import SoraConnectionError
from .options import ConnectionKeywords, ConnectionOptions
from .signaling import actions as act
from .signaling.machine import SignalingProtocol
from .signaling.states import SignalingStateError, State

logger = logging.getLogger("sora_async")

_T = TypeVar("_T")

#: Above this many queued bytes, ``send_data_channel`` waits for the channel to drain.
_DATA_CHANNEL_HIGH_WATER = 1 << 20
_DATA_CHANNEL_LOW_WATER = 1 << 18
#: Largest signaling message accepted (re-offers of big channels are long SDPs).
_MAX_SIGNALING_MESSAGE = 16 << 20


class RemoteTrack:
    """A media track received from another connection of the channel.

    ``stream_id`` is the ``a=msid`` stream id Sora gives it, i.e. the sending
    connection's ``connection_id``. ``track`` is the underlying aiortc track;
    :meth:`recv` reads its next frame (``av.AudioFrame``/``av.VideoFrame``).
    """

    def __init__(self, track: MediaStreamTrack, *, stream_id: str | None, mid: str | None):
        self.track = track
        self.stream_id = stream_id
        self.mid = mid

    @property
    def kind(self) -> str:
        """``"audio"`` or ``"video"``."""
        return str(self.track.kind)

    @property
    def id(self) -> str:
        """The track id (``a=msid`` track id when Sora sends one)."""
        return str(self.track.id)

    @property
    def state(self) -> TrackState:
        """LIVE until the stream leaves the channel or the connection ends."""
        return TrackState.LIVE if self.track.readyState == "live" else TrackState.ENDED

    async def recv(self) -> Any:
        """The next decoded frame; raises ``aiortc.mediastreams.MediaStreamError`` once ended."""
        return await self.track.recv()

    async def ended(self) -> None:
        """Wait until the track ends (its stream left the channel, or the connection ended)."""
        if self.track.readyState == "ended":
            return
        ended = asyncio.Event()
        self.track.once("ended", ended.set)
        await ended.wait()

    def __repr__(self) -> str:
        return f"RemoteTrack(kind={self.kind!r}, id={self.id!r}, stream_id={self.stream_id!r})"


class Connection(Emitter):
    """One connection to a Sora channel.

    ``Connection(signaling_urls, role, channel_id, **keywords)`` takes the
    keywords of the official ``Sora.create_connection`` with the same names
    and meaning (see :class:`~sora_async.options.ConnectionKeywords`); they are
    validated at once (``TypeError`` for an unknown keyword, ``ValueError``
    naming the keyword for a bad value).

    Example::

        async with Connection(["wss://sora.example.com/signaling"], "sendrecv", "sora",
                              data_channel_signaling=True,
                              data_channels=[{"label": "#chat", "direction": "sendrecv"}]) as conn:
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
        self._websockets: dict[int, _SignalingWebSocket] = {}
        self._timers: dict[act.Timer, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pc: RTCPeerConnection | None = None
        #: Set by ClosePeerConnection: no peer connection may be created after it.
        self._pc_closed = False
        self._channels: dict[str, RTCDataChannel] = {}
        self._channel_counters: dict[str, stats.DataChannelCounters] = {}
        self._remote_offer: str | None = None
        self._sections: dict[str, seam.MediaSection] = {}
        self._tracks: list[RemoteTrack] = []
        self._streams: set[_MessageStream] = set()
        self._outcome: asyncio.Future[None] | None = None
        self._closed = asyncio.Event()

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

    def messages(self, label: str | None = None) -> AsyncIterator[tuple[str, bytes]]:
        """Messages received on ``#`` labels as ``(label, bytes)``, from now on.

        Only ``label`` if given. The iteration ends when the connection ends.
        Messages are buffered until read.
        """
        return _MessageStream(self, label)

    async def get_stats(self) -> list[dict[str, Any]]:
        """W3C-shaped stats (``timestamp`` in ms); ``[]`` before the offer."""
        return await stats.collect(self._pc, self._channel_counters.values())

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
            websocket = _SignalingWebSocket(self, action.attempt, action.url)
            self._websockets[action.attempt] = websocket
            self._spawn(websocket.run())
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

    def _on_emit(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "connected":
            if self._outcome is not None and not self._outcome.done():
                self._outcome.set_result(None)
        elif event == "message":
            label, data = args
            for stream in list(self._streams):
                stream.deliver(label, data)
        elif event == "disconnect":
            code, message = args
            if self._outcome is not None and not self._outcome.done():
                self._outcome.set_exception(SoraConnectionError(code, message))
            for stream in list(self._streams):
                stream.end()
            self._closed.set()
        self.emit(event, *args)

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
            self._pc = self._create_peer_connection(offer.get("config"))
            answer = await self._negotiate(sdp, offer=offer)
        except Exception as exc:
            logger.warning("failed to apply the offer: %r", exc)
            self._feed(self._protocol.offer_failed, _describe(exc))
            return
        self._feed(self._protocol.offer_applied, answer)

    async def _apply_reoffer(self, sdp: str) -> None:
        try:
            answer = await self._negotiate(sdp, offer=None)
        except Exception as exc:
            logger.warning("failed to apply a re-offer: %r", exc)
            self._feed(self._protocol.reoffer_failed, _describe(exc))
            return
        self._feed(self._protocol.reoffer_applied, answer)

    async def _negotiate(self, sdp: str, *, offer: Mapping[str, Any] | None) -> str:
        pc = self._pc
        if pc is None:
            raise RuntimeError("no peer connection")
        prepared = seam.prepare_offer(sdp)
        await seam.recycle_receivers(pc, self._remote_offer, sdp)
        self._remote_offer = sdp
        self._sections = {s.mid: s for s in seam.media_sections(sdp) if s.mid is not None}
        await pc.setRemoteDescription(RTCSessionDescription(prepared.sdp, "offer"))
        if offer is not None:
            # Tracks go on the transceivers Sora named, after SRD (§5.4 step 3).
            self._attach_sources(pc, offer)
        await pc.setLocalDescription(await pc.createAnswer())
        return seam.finalize_answer(pc.localDescription.sdp, prepared.rejected_mids)

    def _create_peer_connection(self, config: Any) -> RTCPeerConnection:
        pc = RTCPeerConnection(_rtc_configuration(config))
        pc.on("connectionstatechange", lambda: self._on_connection_state(pc))
        pc.on("datachannel", self._on_data_channel)
        pc.on("track", self._on_track)
        return pc

    def _attach_sources(self, pc: RTCPeerConnection, offer: Mapping[str, Any]) -> None:
        mids = offer.get("mid")
        if not isinstance(mids, Mapping) or not self.options.role.sends:
            return
        direction = "sendrecv" if self.options.role is Role.SENDRECV else "sendonly"
        for kind, track in (
            ("audio", self.options.audio_track()),
            ("video", self.options.video_track()),
        ):
            mid = mids.get(kind)
            if track is None or not isinstance(mid, str):
                continue
            for transceiver in pc.getTransceivers():
                if transceiver.mid == mid and transceiver.kind == kind:
                    transceiver.sender.replaceTrack(track)
                    transceiver.direction = direction
                    break
            else:
                logger.warning("offer names %s mid %r but has no such m-section", kind, mid)

    def _on_connection_state(self, pc: RTCPeerConnection) -> None:
        if pc is self._pc:
            self._feed(self._protocol.peer_connection_state, pc.connectionState)

    def _on_track(self, track: MediaStreamTrack) -> None:
        pc = self._pc
        mid = None
        if pc is not None:
            for transceiver in pc.getTransceivers():
                if transceiver.receiver.track is track:
                    mid = transceiver.mid
                    break
        section = self._sections.get(mid) if mid is not None else None
        remote = RemoteTrack(track, stream_id=section.stream_id if section else None, mid=mid)
        self._tracks.append(remote)
        self.emit("track", remote)

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
        pc, self._pc = self._pc, None
        if pc is not None:
            await pc.close()
        self._channels.clear()


class _SignalingWebSocket:
    """One signaling WebSocket attempt: open, read, write in order, close."""

    def __init__(self, connection: Connection, attempt: int, url: str) -> None:
        self._connection = connection
        self._protocol = connection._protocol
        self.attempt = attempt
        self.url = url
        self._websocket: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._outbox: collections.deque[str] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    async def run(self) -> None:
        self._task = asyncio.current_task()
        options = self._connection.options
        feed = self._connection._feed
        try:
            websocket = await websockets.connect(
                self.url,
                user_agent_header=options.user_agent_header(),
                proxy=options.proxy(),
                ssl=options.ssl_context() if self.url.startswith("wss:") else None,
                open_timeout=None,  # the machine's websocket_connection timer decides
                close_timeout=options.websocket_close_timeout or 3.0,
                compression=None,  # as the official SDKs
                max_size=_MAX_SIGNALING_MESSAGE,
            )
        except asyncio.CancelledError:
            return  # the machine abandoned this attempt
        except Exception as exc:
            feed(self._protocol.websocket_failed, self.attempt, _describe(exc))
            return
        self._websocket = websocket
        try:
            feed(self._protocol.websocket_opened, self.attempt)
            try:
                async for message in websocket:
                    feed(self._protocol.websocket_message, self.attempt, message)
            except websockets.ConnectionClosed:
                pass
        except asyncio.CancelledError:
            websocket.transport.abort()
            return
        finally:
            if self._writer is not None:
                self._writer.cancel()
        received = websocket.protocol.close_rcvd
        feed(
            self._protocol.websocket_closed,
            self.attempt,
            received.code if received is not None else None,
            received.reason if received is not None else "",
        )

    def send(self, text: str) -> None:
        self._outbox.append(text)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        while self._outbox and self._websocket is not None:
            text = self._outbox.popleft()
            try:
                await self._websocket.send(text)
            except websockets.ConnectionClosed:
                self._outbox.clear()

    def close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        if self._websocket is None:
            if self._task is not None:
                self._task.cancel()  # still opening
            return
        self._connection._spawn(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        assert self._websocket is not None
        if self._writer is not None and not self._writer.done():
            await asyncio.wait({self._writer}, timeout=1.0)
        await self._websocket.close(code, reason)

    def abort(self) -> None:
        self._closing = True
        if self._websocket is not None:
            self._websocket.transport.abort()
        elif self._task is not None:
            self._task.cancel()


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


def _rtc_configuration(config: Any) -> RTCConfiguration:
    # The offer's config is a browser RTCConfiguration (§3.1); aiortc uses the
    # first STUN and the first TURN URL only (aiortc-notes A.8).
    servers: list[RTCIceServer] = []
    policy = RTCIceTransportPolicy.ALL
    if isinstance(config, Mapping):
        for server in config.get("iceServers") or []:
            if not isinstance(server, Mapping) or not server.get("urls"):
                continue
            servers.append(
                RTCIceServer(
                    urls=server["urls"],
                    username=server.get("username"),
                    credential=server.get("credential"),
                )
            )
        if config.get("iceTransportPolicy") == "relay":
            policy = RTCIceTransportPolicy.RELAY
    return RTCConfiguration(
        iceServers=servers, iceTransportPolicy=policy, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
    )


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
