"""The dev server process: an aiohttp application with WebSocket signaling and the HTTP API.

``GET /signaling`` upgrades to the signaling WebSocket, ``POST /api`` is the
Sora HTTP API, both on one port (``websockets`` only serves GET, hence
aiohttp). TLS (``wss://``/``https://``) and client-certificate checking
(mTLS) come from :mod:`ssl` contexts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

from . import api
from .channel import ChannelRegistry
from .peer import ServerPeer
from .session import ConnectionInfo, Session

__all__ = [
    "SORA_VERSION",
    "BackgroundDevServer",
    "DevServer",
    "DevServerOptions",
    "SignalingWebSocket",
]

log = logging.getLogger("sora_async.devserver")

#: ``version`` in every offer: the Sora release whose protocol this server
#: follows, marked so that nobody mistakes it for a real Sora.
SORA_VERSION = "2025.2.0-devserver"

#: How long a server-initiated close waits for the client's close frame.
CLOSE_HANDSHAKE_TIMEOUT = 5.0

_T = TypeVar("_T")


@dataclass(frozen=True)
class DevServerOptions:
    """Settings of one dev server; every field has a command-line twin in ``__main__``.

    Example::

        DevServerOptions(port=5000, secret="s3cret", data_channel_signaling_close_message=True)
    """

    host: str = "127.0.0.1"
    #: 0 picks a free port (see :attr:`DevServer.port`).
    port: int = 0
    #: HS256 key: when set, ``metadata.access_token`` must be a valid JWT.
    secret: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    #: CA bundle; when set, clients must present a certificate it signed (mTLS).
    client_ca: str | None = None
    #: Answer every ``connect`` without ``"redirect": true`` with a redirect here.
    redirect_to: str | None = None
    #: Send ``{"type":"close",...}`` on DataChannel ``signaling`` to DataChannel-only
    #: sessions before a server-side close (sora.conf ``data_channel_signaling_close_message``).
    data_channel_signaling_close_message: bool = False
    #: Seconds a connection may live (JWT claim ``connection_lifetime`` overrides).
    connection_lifetime: float | None = None
    #: Seconds between WebSocket ``ping``\\ s; a ping unanswered for this long
    #: closes 4490 ``TIMEOUT``. 0 disables pings.
    ping_interval: float = 5.0
    #: Seconds between the ``connection.updated`` notifies that tell a channel a
    #: connection is still there (``minutes`` counts its whole minutes). Sora's
    #: schedule is not public; 60 matches the minute granularity. 0 disables.
    connection_updated_interval: float = 60.0
    #: Seconds for each signaling step: connect, answer + ICE/DTLS, each re-answer.
    signaling_timeout: float = 30.0
    #: Largest WebSocket message accepted; larger ones close 4490.
    max_message_size: int = 1 << 20
    #: Local addresses the media plane offers ICE candidates on. Empty (the
    #: default): 127.0.0.1 when ``host`` is a loopback name or address, every
    #: interface otherwise (see :meth:`media_addresses`).
    ice_addresses: tuple[str, ...] = ()
    #: ``config.iceServers`` of every offer (each ``{"urls": [...], "username", "credential"}``).
    ice_servers: tuple[Mapping[str, Any], ...] = ()
    #: ``config.iceTransportPolicy`` of every offer (``"relay"``: clients must
    #: relay through a TURN server of ``ice_servers``); None: not sent.
    ice_transport_policy: str | None = None
    version: str = SORA_VERSION
    #: Offer transport-cc (header extension + ``a=rtcp-fb:* transport-cc``) on the
    #: clients' upstream m-lines and send transport-cc feedback for it, as Sora
    #: does; on the downstream m-lines too: forwarded packets carry transport-wide
    #: sequence numbers where the subscriber's answer kept the extension, and its
    #: feedback is read (``ServerPeer.downstream``). Off by default: REMB + receiver
    #: reports only.
    transport_cc: bool = False
    #: Media-plane factory with :class:`~.peer.ServerPeer`'s signature; tests of the
    #: control plane pass a fake. None means ``ServerPeer``.
    peer_factory: Callable[..., ServerPeer] | None = None

    def media_addresses(self) -> list[str] | None:
        """``ice_addresses`` for the media plane (None: every interface)."""
        if self.ice_addresses:
            return list(self.ice_addresses)
        return ["127.0.0.1"] if _is_loopback(self.host) else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ssl_context(options: DevServerOptions) -> ssl.SSLContext | None:
    if options.tls_cert is None:
        if options.tls_key is not None or options.client_ca is not None:
            raise ValueError("tls_key and client_ca need tls_cert")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(options.tls_cert, options.tls_key)
    if options.client_ca is not None:
        context.load_verify_locations(options.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


class _SignalingWebSocketResponse(web.WebSocketResponse):
    """aiohttp WebSocket whose protocol-level refusals close 4490 as Sora's do.

    aiohttp itself closes with 1009 (too big), 1007 (bad UTF-8) or 1002; Sora
    reports every signaling error as 4490 with a reason.
    """

    _REFUSALS = frozenset(
        {
            WSCloseCode.MESSAGE_TOO_BIG,
            WSCloseCode.INVALID_TEXT,
            WSCloseCode.PROTOCOL_ERROR,
            WSCloseCode.UNSUPPORTED_DATA,
        }
    )

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code in self._REFUSALS:
            log.info("WebSocket protocol error %s, closing 4490", code)
            code, message = 4490, b"INVALID-MESSAGE"
        return await super().close(code=code, message=message, drain=drain)


class SignalingWebSocket:
    """One accepted signaling WebSocket: ordered JSON sends and a clean close handshake.

    aiohttp's ``close()`` from another task while a ``receive()`` is pending
    drops the TCP connection without waiting for the client's close frame,
    which the official client reports as ``CLOSE_FAILED``. So reads happen in
    a task of our own that :meth:`close` cancels first; the close frame is
    then answered properly before the connection goes.
    """

    def __init__(self, response: web.WebSocketResponse, *, user_agent: str | None = None) -> None:
        self._ws = response
        #: ``User-Agent`` of the client's handshake request.
        self.user_agent = user_agent
        self._reader: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()

    @property
    def is_open(self) -> bool:
        """True until either side starts closing."""
        return self._close_task is None and not self._ws.closed

    async def send(self, message: Mapping[str, Any]) -> bool:
        """Send one JSON text frame; False if the WebSocket is no longer open."""
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        async with self._send_lock:
            if not self.is_open:
                return False
            try:
                await self._ws.send_str(text)
            except (ConnectionError, RuntimeError) as exc:
                log.debug("WebSocket send failed: %r", exc)
                return False
        return True

    async def run(self, on_message: Callable[[str | bytes], None]) -> None:
        """Read until the client closes or :meth:`close` has completed."""
        self._reader = asyncio.create_task(self._read(on_message))
        try:
            await asyncio.wait([self._reader])
            if self._close_task is not None:
                await asyncio.shield(self._close_task)
        finally:
            self._reader.cancel()

    async def _read(self, on_message: Callable[[str | bytes], None]) -> None:
        while True:
            message = await self._ws.receive()
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                try:
                    on_message(message.data)
                except Exception:
                    log.exception("error handling a WebSocket message")
            else:
                # CLOSE (answered by aiohttp), CLOSING, CLOSED or ERROR.
                return

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code``/``reason`` and wait for the handshake (idempotent)."""
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._close(code, reason))
        await asyncio.shield(self._close_task)

    async def _close(self, code: int, reason: str) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait([reader])
        # Taking the send lock lets a frame already being sent (e.g. a
        # redirect) go out before the close frame.
        async with self._send_lock:
            if self._ws.closed:
                return
            try:
                await self._ws.close(code=code, message=reason.encode())
            except Exception as exc:
                log.debug("WebSocket close failed: %r", exc)


class DevServer:
    """A local Sora-compatible server: WebSocket signaling, SFU media plane, HTTP API.

    Example::

        async with DevServer(port=0) as server:
            print(server.signaling_url)  # ws://127.0.0.1:PORT/signaling
            ...  # connect clients
            print(server.connections)  # connection_id -> ConnectionInfo

    Keyword options are the fields of :class:`DevServerOptions`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        self.options = DevServerOptions(host=host, port=port, **options)
        self.registry = ChannelRegistry()
        self._ssl_context = _ssl_context(self.options)
        self._sessions: set[Session] = set()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._stopping = False

    @classmethod
    def from_options(cls, options: DevServerOptions) -> DevServer:
        """A server for an existing :class:`DevServerOptions`."""
        fields = {name: getattr(options, name) for name in options.__dataclass_fields__}
        return cls(**fields)

    # -- addresses -------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("the dev server is not started")
        return self._port

    @property
    def signaling_url(self) -> str:
        """``ws://HOST:PORT/signaling`` (``wss://`` with TLS)."""
        scheme = "wss" if self._ssl_context is not None else "ws"
        return f"{scheme}://{_url_host(self.options.host)}:{self.port}/signaling"

    @property
    def api_url(self) -> str:
        """``http://HOST:PORT/api`` (``https://`` with TLS)."""
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{_url_host(self.options.host)}:{self.port}/api"

    @property
    def connections(self) -> Mapping[str, ConnectionInfo]:
        """Read-only snapshot: connection id → :class:`ConnectionInfo`, admitted connections."""
        return MappingProxyType(
            {cid: session.info() for cid, session in self.registry.sessions.items()}
        )

    # -- life cycle ------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving."""
        if self._runner is not None:
            raise RuntimeError("the dev server is already started")
        app = web.Application(client_max_size=self.options.max_message_size)
        app.router.add_get("/signaling", self._handle_signaling)
        app.router.add_post("/api", self._handle_api)
        # A short shutdown timeout: stop() has closed every session by then.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(
            runner, self.options.host, self.options.port, ssl_context=self._ssl_context
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]
        self._stopping = False
        log.info("dev server listening on %s (API %s)", self.signaling_url, self.api_url)

    async def stop(self) -> None:
        """Close every connection (WebSocket 1001), then stop serving; leaves no tasks."""
        runner = self._runner
        if runner is None:
            return
        self._stopping = True
        while self._sessions:
            sessions = list(self._sessions)
            for session in sessions:
                session.cut_close_grace()
            await asyncio.gather(
                *(session.end(WSCloseCode.GOING_AWAY, "") for session in sessions),
                return_exceptions=True,
            )
        self._runner = None
        self._port = None
        await runner.cleanup()
        log.info("dev server stopped")

    async def __aenter__(self) -> DevServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- handlers --------------------------------------------------------------

    async def _handle_signaling(self, request: web.Request) -> web.StreamResponse:
        if self._stopping:
            raise web.HTTPServiceUnavailable()
        response = _SignalingWebSocketResponse(
            max_msg_size=self.options.max_message_size,
            compress=False,
            timeout=CLOSE_HANDSHAKE_TIMEOUT,
        )
        await response.prepare(request)
        websocket = SignalingWebSocket(response, user_agent=request.headers.get("User-Agent"))
        session = Session(
            options=self.options,
            registry=self.registry,
            websocket=websocket,
            peer_factory=self.options.peer_factory or ServerPeer,
            on_closed=self._sessions.discard,
        )
        self._sessions.add(session)
        session.start()
        await websocket.run(session.on_websocket_message)
        session.on_websocket_closed()
        return response

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        return await api.handle(request, self.registry)


class BackgroundDevServer:
    """A :class:`DevServer` on its own event loop in a daemon thread, for synchronous code.

    Useful where the test itself blocks, e.g. when driving the official
    ``sora_sdk`` client::

        with BackgroundDevServer() as server:
            conn = sora.create_connection(signaling_urls=[server.signaling_url], ...)
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        self._server = DevServer(host, port, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="sora-devserver", daemon=True
        )

    @property
    def server(self) -> DevServer:
        """The wrapped server; only touch it through :meth:`call`."""
        return self._server

    def call(self, function: Callable[[DevServer], Awaitable[_T]], timeout: float = 30.0) -> _T:
        """Run ``await function(server)`` on the server's loop and return its result."""

        async def run() -> _T:
            return await function(self._server)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def start(self) -> BackgroundDevServer:
        """Start the loop thread and the server on it; returns self."""
        self._thread.start()
        self.call(lambda server: server.start())
        return self

    def stop(self) -> None:
        """Stop the server (closing every session) and its thread. Idempotent."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self.call(lambda server: server.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> BackgroundDevServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return self._server.port

    @property
    def signaling_url(self) -> str:
        """``ws://`` (or ``wss://``) URL of the signaling endpoint."""
        return self._server.signaling_url

    @property
    def api_url(self) -> str:
        """URL of the Sora HTTP API endpoint (POST with ``x-sora-target``)."""
        return self._server.api_url

    @property
    def connections(self) -> Mapping[str, ConnectionInfo]:
        """Snapshot taken on the server's loop (thread-safe)."""

        async def snapshot(server: DevServer) -> Mapping[str, ConnectionInfo]:
            return server.connections

        return self.call(snapshot)
