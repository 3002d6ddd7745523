"""The signaling WebSocket: TLS, HTTP proxy, User-Agent, size limits and error reports.

:class:`SignalingWebSocket` is one attempt at the signaling WebSocket of a
:class:`~sora_async.Connection` (several run at once when several URLs race,
one more after a ``redirect``). It opens the socket with ``websockets``, feeds
every frame to the sans-I/O :class:`~sora_async.signaling.SignalingProtocol`,
writes what the machine asks for in order, and reports how it ended.

Security decisions live here (``docs/security.md`` explains them for users):

- TLS is verified against the system trust store by default; ``ca_cert``
  replaces the store, ``client_cert``/``client_key`` add a client certificate
  (mTLS), ``insecure=True`` turns verification off. TLS 1.2 is the minimum.
- ``proxy_url`` goes through websockets' own HTTP ``CONNECT`` support, with
  Basic credentials from ``proxy_username``/``proxy_password`` and
  ``proxy_agent`` as the ``User-Agent`` of the ``CONNECT`` request. Proxy
  environment variables are ignored, like the official client does.
- ``user_agent`` (default :func:`default_user_agent`) is the ``User-Agent`` of
  the WebSocket handshake.
- Messages larger than :data:`MAX_MESSAGE_SIZE` end the session.
- websockets' DEBUG frame dumps are never produced: they would show the
  ``connect`` message and with it the ``metadata`` access tokens.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import ssl
import tempfile
import urllib.parse
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import (
    InvalidMessage,
    InvalidProxy,
    InvalidProxyMessage,
    InvalidProxyStatus,
    InvalidStatus,
    InvalidURI,
)

if TYPE_CHECKING:
    from .options import ConnectionOptions
    from .signaling.machine import SignalingProtocol

__all__ = [
    "MAX_MESSAGE_SIZE",
    "SignalingWebSocket",
    "default_user_agent",
    "describe_error",
    "proxy_url",
    "tls_context",
]

logger = logging.getLogger("sora_async.websocket")

#: Largest signaling message accepted, in bytes. A re-offer for a channel with
#: hundreds of streams is a few hundred kilobytes; anything near this is hostile.
MAX_MESSAGE_SIZE = 8 << 20
#: Frames websockets may buffer before it stops reading the socket.
MAX_QUEUE = 4
#: Longest reason phrase of a proxy or server HTTP refusal quoted in an error.
_MAX_QUOTED = 120


def default_user_agent() -> str:
    """The ``User-Agent`` sent when ``user_agent`` is not given: this library and version."""
    from . import __version__

    return f"Mozilla/5.0 (sora_async/{__version__})"


# -- TLS -------------------------------------------------------------------------


def tls_context(
    *,
    ca_cert: bytes | None = None,
    client_cert: bytes | None = None,
    client_key: bytes | None = None,
    insecure: bool = False,
) -> ssl.SSLContext:
    """The TLS client context for ``wss://`` (and a TLS proxy).

    ``ca_cert`` (PEM, one or more certificates, or one DER certificate)
    replaces the system trust store, as in the official SDK since 2025.1.0.
    ``client_cert`` is a PEM certificate chain, ``client_key`` its unencrypted
    PEM private key (it may also be inside ``client_cert``). ``insecure``
    disables certificate and host name verification.

    Raises ``ssl.SSLError`` or ``ValueError`` for unusable material; the
    message never contains the key.
    """
    if ca_cert is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, checks host names
        context.load_verify_locations(cadata=_cadata(ca_cert))
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_cert is not None:
        _load_client_certificate(context, client_cert, client_key)
    elif client_key is not None:
        raise ValueError("client_key needs client_cert")
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _cadata(ca_cert: bytes) -> str | bytes:
    if b"-----BEGIN" in ca_cert:
        # Text outside the BEGIN/END blocks (comments) may be anything.
        return ca_cert.decode("ascii", "ignore")
    return ca_cert  # DER


def _load_client_certificate(context: ssl.SSLContext, cert: bytes, key: bytes | None) -> None:
    with _pem_files(cert, key) as (cert_path, key_path):
        context.load_cert_chain(cert_path, key_path, password=_refuse_password)


def _refuse_password() -> bytes:
    # Without a password callback OpenSSL would prompt on the terminal and hang.
    raise ValueError("client_key is encrypted; pass the decrypted PEM key")


@contextlib.contextmanager
def _pem_files(cert: bytes, key: bytes | None) -> Iterator[tuple[str, str | None]]:
    """Paths OpenSSL can read ``cert``/``key`` from, for as long as the block runs.

    ``ssl`` loads certificate chains from files only. On Linux the files are
    anonymous memory (``memfd``), so the private key never touches a disk;
    elsewhere they are ``0600`` temporary files removed at once.
    """
    fds: list[int] = []
    paths: list[str] = []
    try:
        for pem in (cert, key):
            if pem is None:
                continue
            if hasattr(os, "memfd_create"):
                fd = os.memfd_create("sora_async-pem", os.MFD_CLOEXEC)
                fds.append(fd)
                os.write(fd, pem)
                paths.append(f"/proc/self/fd/{fd}")
            else:  # pragma: no cover - not Linux
                fd, path = tempfile.mkstemp(suffix=".pem")
                fds.append(fd)
                paths.append(path)
                os.write(fd, pem)
        yield paths[0], (paths[1] if len(paths) > 1 else None)
    finally:
        for fd in fds:
            os.close(fd)
        for path in paths:
            if not path.startswith("/proc/"):  # pragma: no cover - not Linux
                with contextlib.suppress(OSError):
                    os.unlink(path)


# -- proxy ---------------------------------------------------------------------


def proxy_url(url: str | None, username: str | None, password: str | None) -> str | None:
    """The proxy address for websockets, credentials embedded, or None for no proxy.

    ``url`` has been validated (``http://`` or ``https://``, a host, no
    credentials, no path). websockets sends the credentials as
    ``Proxy-Authorization: Basic``; it needs a password whenever a user name
    is given, so an absent one is empty.

    >>> proxy_url("http://proxy:3128", "u@x", "p:w")
    'http://u%40x:p%3Aw@proxy:3128'
    """
    if not url:
        return None
    if not username and not password:
        return url
    parts = urllib.parse.urlsplit(url)
    credentials = (
        urllib.parse.quote(username or "", safe="")
        + ":"
        + urllib.parse.quote(password or "", safe="")
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{credentials}@{parts.netloc}"))


# -- error reports -------------------------------------------------------------


def describe_error(exc: BaseException, *, tls: bool = False, client_cert: bool = False) -> str:
    """A short description of why opening a WebSocket failed, naming the problem.

    Like the official client's ``last_ec``: ``"Connection refused"`` rather
    than Python's repr; certificate problems, proxy refusals (``407``...) and
    HTTP refusals are spelled out. Never contains proxy credentials.
    ``tls``/``client_cert`` say whether the URL was ``wss://`` and whether a
    client certificate was configured, for the one TLS failure that TLS 1.3
    only reports as a closed connection (a missing or refused client
    certificate).
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or "certificate verify failed"
        return f"TLS certificate verification failed: {reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc.strerror or exc}"
    if isinstance(exc, InvalidProxyStatus):
        response = exc.response
        phrase = _quoted(response.reason_phrase)
        text = f"HTTP proxy refused CONNECT: {response.status_code} {phrase}"
        if response.status_code in (401, 407):  # tinyproxy says 401 for wrong credentials
            text += " (check proxy_username/proxy_password)"
        return text
    if isinstance(exc, InvalidProxyMessage):
        return f"HTTP proxy sent an invalid response to CONNECT{_cause(exc)}"
    if isinstance(exc, InvalidProxy):
        return "invalid proxy_url"  # its str() would show the credentials
    if isinstance(exc, InvalidStatus):
        response = exc.response
        return (
            "server refused the WebSocket handshake: "
            f"HTTP {response.status_code} {_quoted(response.reason_phrase)}"
        )
    if isinstance(exc, InvalidMessage):
        if tls and isinstance(exc.__cause__, EOFError):
            # TLS 1.3 checks the client certificate after the client's handshake
            # is done; asyncio drops the server's alert, so this is all we see.
            hint = (
                "it may have refused the client certificate"
                if client_cert
                else "it may require a client certificate (client_cert/client_key)"
            )
            return f"TLS: the server closed the connection after the TLS handshake; {hint}"
        return f"invalid HTTP response to the WebSocket handshake{_cause(exc)}"
    if isinstance(exc, InvalidURI):
        return f"invalid URL: {exc.msg}"
    if isinstance(exc, OSError) and exc.errno:
        if exc.errno > 0:
            return os.strerror(exc.errno)  # "Connection refused", as the official client
        return exc.strerror or str(exc)  # getaddrinfo's negative codes
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _quoted(text: str) -> str:
    printable = "".join(c if c.isprintable() else "?" for c in text)
    return printable[:_MAX_QUOTED]


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__
    return f": {_quoted(str(cause))}" if cause is not None and str(cause) else ""


class _NoFrameDumps(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets' logger minus its DEBUG output: every frame, the ``connect``
    message (with ``metadata``) included, would otherwise be logged."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_WEBSOCKETS_LOGGER = _NoFrameDumps(logging.getLogger("websockets.client"), {})


# -- one WebSocket attempt -----------------------------------------------------


class SignalingWebSocket:
    """One signaling WebSocket attempt: open, read, write in order, close.

    ``feed(handler, *args)`` gives an input to ``protocol`` (the Connection's
    ``_feed``); ``spawn(coroutine)`` runs a task the Connection waits for
    before it counts as closed.
    """

    def __init__(
        self,
        attempt: int,
        url: str,
        options: ConnectionOptions,
        protocol: SignalingProtocol,
        feed: Callable[..., Any],
        spawn: Callable[[Coroutine[Any, Any, None]], Any],
    ) -> None:
        self.attempt = attempt
        self.url = url
        self._options = options
        self._protocol = protocol
        self._feed = feed
        self._spawn = spawn
        self._websocket: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._outbox: collections.deque[str] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    def __repr__(self) -> str:
        return f"SignalingWebSocket(attempt={self.attempt}, url={self.url!r})"

    def connect_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``websockets.connect`` for this attempt."""
        options = self._options
        user_agent = options.user_agent or default_user_agent()
        arguments: dict[str, Any] = {
            # The handshake's User-Agent; user_agent_header below only reaches
            # the proxy's CONNECT request (the handshake keeps this one).
            "additional_headers": {"User-Agent": user_agent},
            "user_agent_header": options.proxy_agent or user_agent,
            # None, not websockets' default (True = environment variables).
            "proxy": proxy_url(options.proxy_url, options.proxy_username, options.proxy_password),
            "open_timeout": None,  # the machine's websocket_connection timer decides
            "close_timeout": options.websocket_close_timeout or 3.0,
            "compression": None,  # as the official SDKs
            "max_size": MAX_MESSAGE_SIZE,
            "max_queue": MAX_QUEUE,
            "logger": _WEBSOCKETS_LOGGER,
        }
        if self.url.startswith("wss:"):
            arguments["ssl"] = tls_context(
                ca_cert=options.ca_cert,
                client_cert=options.client_cert,
                client_key=options.client_key,
                insecure=bool(options.insecure),
            )
        return arguments

    async def run(self) -> None:
        """Open, then read until the WebSocket ends; report everything to the machine."""
        self._task = asyncio.current_task()
        protocol = self._protocol
        try:
            websocket = await websockets.connect(self.url, **self.connect_arguments())
        except asyncio.CancelledError:
            return  # the machine abandoned this attempt
        except Exception as exc:
            logger.debug("signaling WebSocket %s failed to open: %r", self.url, exc)
            description = describe_error(
                exc,
                tls=self.url.startswith("wss:"),
                client_cert=self._options.client_cert is not None,
            )
            self._feed(protocol.websocket_failed, self.attempt, description)
            return
        self._websocket = websocket
        try:
            self._feed(protocol.websocket_opened, self.attempt)
            with contextlib.suppress(websockets.ConnectionClosed):
                async for message in websocket:
                    self._feed(protocol.websocket_message, self.attempt, message)
        except asyncio.CancelledError:
            websocket.transport.abort()
            return
        finally:
            if self._writer is not None:
                self._writer.cancel()
        code, reason, error = self._how_it_ended(websocket)
        self._feed(protocol.websocket_closed, self.attempt, code, reason, error)

    def _how_it_ended(self, websocket: ClientConnection) -> tuple[int | None, str, str | None]:
        """``(code, reason, error)``: the server's close frame, or our own failure.

        ``error`` is set when the client failed the connection itself (a frame
        over :data:`MAX_MESSAGE_SIZE`, invalid UTF-8, a protocol error, no
        answer to keepalive pings): websockets then sent a close frame other
        than 1000 that the server did not start.
        """
        state = websocket.protocol
        received, sent = state.close_rcvd, state.close_sent
        if (
            sent is not None
            and sent.code != 1000
            and not state.close_rcvd_then_sent
            and not self._closing
        ):
            return None, "", f"client closed the WebSocket with {sent}"
        if received is None:
            return None, "", None
        return received.code, received.reason, None

    def send(self, text: str) -> None:
        """Queue one text frame; frames go out in the order they were queued."""
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
            except Exception as exc:  # the reader reports how the socket ended
                logger.debug("signaling WebSocket send failed: %r", exc)
                self._outbox.clear()

    def close(self, code: int, reason: str) -> None:
        """Close with a close handshake (or stop opening); idempotent."""
        if self._closing:
            return
        self._closing = True
        if self._websocket is None:
            if self._task is not None:
                self._task.cancel()  # still opening
            return
        self._spawn(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        assert self._websocket is not None
        if self._writer is not None and not self._writer.done():
            await asyncio.wait({self._writer}, timeout=1.0)
        await self._websocket.close(code, reason)

    def abort(self) -> None:
        """Drop the connection without a close handshake (a wait timed out)."""
        self._closing = True
        if self._websocket is not None:
            self._websocket.transport.abort()
        elif self._task is not None:
            self._task.cancel()
