"""Real components for the security, hostile-server and fault tests (issue 9).

Nothing here is a mock: certificates come from a trustme CA, proxies are the
Debian ``tinyproxy``/``squid`` binaries, the dev server runs in a real
subprocess that can be SIGKILLed, and the "hostile" servers are small
websockets servers that misbehave on purpose. Everything listens on
127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest
import websockets
from websockets.asyncio.server import ServerConnection

from sora_async import Connection

LOOPBACK = "127.0.0.1"

#: Every event of a Connection, for :class:`Events`.
EVENT_NAMES = (
    "set_offer",
    "notify",
    "push",
    "switched",
    "signaling_message",
    "ws_close",
    "data_channel",
    "message",
    "connected",
    "disconnect",
)

MODES: dict[str, dict[str, Any]] = {
    "websocket": {"data_channel_signaling": False, "ignore_disconnect_websocket": False},
    "hybrid": {"data_channel_signaling": True, "ignore_disconnect_websocket": False},
    "datachannel": {"data_channel_signaling": True, "ignore_disconnect_websocket": True},
}


class Events:
    """Everything a Connection emits, in order, with a bounded wait for one event."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self.times: dict[str, float] = {}
        self._changed = asyncio.Event()
        for name in EVENT_NAMES:
            conn.on(name, self._recorder(name))

    def _recorder(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.events.append((name, args))
            self.times.setdefault(name, time.monotonic())
            self._changed.set()

        return record

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [args for event, args in self.events if event == name]

    def sent(self) -> list[dict[str, Any]]:
        """Signaling messages the client sent, in order."""
        return [args[2] for args in self.of("signaling_message") if args[1].name == "SENT"]

    async def wait(
        self, name: str, predicate: Callable[..., bool] = lambda *a: True, within: float = 10
    ) -> tuple[Any, ...]:
        async with asyncio.timeout(within):
            while True:
                for event, args in self.events:
                    if event == name and predicate(*args):
                        return args
                self._changed.clear()
                await self._changed.wait()


def resources() -> dict[str, int]:
    """What a leak would grow: tasks, threads, file descriptors, resident memory."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        rss_pages = int(statm.read().split()[1])
    return {
        "tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
        "rss_mb": rss_pages * os.sysconf("SC_PAGE_SIZE") // (1 << 20),
    }


async def eventually(condition: Callable[[], bool], seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - no event exists for these conditions
            await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# -- certificates -------------------------------------------------------------------


@dataclass
class Pki:
    """A test CA, a server certificate for 127.0.0.1, client certificates, files."""

    ca: Any
    other_ca: Any
    directory: Path
    server_cert: str  # path: key + chain, for the dev server
    server_key: str
    ca_path: str
    client_cert: bytes
    client_key: bytes
    stranger_cert: bytes  # from other_ca: the server must refuse it
    stranger_key: bytes

    @property
    def ca_pem(self) -> bytes:
        return bytes(self.ca.cert_pem.bytes())


def make_pki(directory: Path) -> Pki:
    trustme = pytest.importorskip("trustme")
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert(LOOPBACK)
    client = ca.issue_cert("client@sora-async.test")
    stranger = other_ca.issue_cert("stranger@sora-async.test")
    paths = {name: directory / f"{name}.pem" for name in ("server", "server-key", "ca")}
    server.private_key_and_cert_chain_pem.write_to_path(str(paths["server"]))
    server.private_key_pem.write_to_path(str(paths["server-key"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    return Pki(
        ca=ca,
        other_ca=other_ca,
        directory=directory,
        server_cert=str(paths["server"]),
        server_key=str(paths["server-key"]),
        ca_path=str(paths["ca"]),
        client_cert=client.cert_chain_pems[0].bytes(),
        client_key=client.private_key_pem.bytes(),
        stranger_cert=stranger.cert_chain_pems[0].bytes(),
        stranger_key=stranger.private_key_pem.bytes(),
    )


# -- a real HTTP proxy ------------------------------------------------------------------


def apr1(password: str, salt: str) -> str:
    """Apache ``$apr1$`` MD5-crypt, the hash squid's ``basic_ncsa_auth`` reads."""
    pw, sl = password.encode(), salt.encode()
    final = hashlib.md5(pw + sl + pw).digest()
    ctx = pw + b"$apr1$" + sl
    for i in range(len(pw), 0, -16):
        ctx += final[: min(16, i)]
    i = len(pw)
    while i:
        ctx += b"\0" if i & 1 else pw[:1]
        i >>= 1
    final = hashlib.md5(ctx).digest()
    for i in range(1000):
        step = pw if i & 1 else final
        if i % 3:
            step += sl
        if i % 7:
            step += pw
        step += final if i & 1 else pw
        final = hashlib.md5(step).digest()
    alphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

    def to64(value: int, count: int) -> str:
        out = ""
        for _ in range(count):
            out += alphabet[value & 0x3F]
            value >>= 6
        return out

    f = final
    encoded = (
        to64((f[0] << 16) | (f[6] << 8) | f[12], 4)
        + to64((f[1] << 16) | (f[7] << 8) | f[13], 4)
        + to64((f[2] << 16) | (f[8] << 8) | f[14], 4)
        + to64((f[3] << 16) | (f[9] << 8) | f[15], 4)
        + to64((f[4] << 16) | (f[10] << 8) | f[5], 4)
        + to64(f[11], 2)
    )
    return f"$apr1${salt}${encoded}"


PROXY_BINARIES = {"tinyproxy": "tinyproxy", "squid": "squid"}


def proxy_binary(kind: str) -> str | None:
    name = PROXY_BINARIES[kind]
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")


class LoggedDaemon:
    """A server binary in a child process with its own scratch directory and log file.

    Subclasses build the command in ``_start`` and call :meth:`_run` with a
    readiness check; ``diagnostic_files`` (in :attr:`directory`) go into
    failure messages after the log's tail.
    """

    name = "daemon"
    diagnostic_files: tuple[str, ...] = ("stderr.log",)

    def __init__(self, directory: Path, log_name: str) -> None:
        self.directory = directory
        self.log_path = directory / log_name
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        try:
            self._start()
        except BaseException:  # skipped, or failed to start: leave nothing behind
            self.stop()
            raise
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def _run(self, command: list[str], ready: Callable[[], bool]) -> None:
        """Start ``command`` (stderr to ``stderr.log``) and wait up to 15 s for ``ready()``."""
        with open(self.directory / "stderr.log", "wb") as stderr:
            self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.diagnostics()}")
            if ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen: {self.diagnostics()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def wait_for_log(self, *needles: str, within: float = 5) -> str:
        """The log once it contains every needle (squid writes a line at a request's end)."""
        async with asyncio.timeout(within):
            while not all(needle in self.log() for needle in needles):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        return self.log()

    def diagnostics(self) -> str:
        texts = [self.log()[-3000:]]
        for name in self.diagnostic_files:
            path = self.directory / name
            if path.exists():
                texts.append(path.read_text(errors="replace")[-2000:])
        return "\n".join(texts)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        self._process = None
        shutil.rmtree(self.directory, ignore_errors=True)


def listens(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:``port``."""
    with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
        return True
    return False


class HttpProxy(LoggedDaemon):
    """``tinyproxy`` or ``squid`` on 127.0.0.1 with Basic authentication.

    Both log every ``CONNECT``; squid's log line also has the request's
    ``User-Agent`` (tinyproxy cannot log request headers).
    """

    diagnostic_files = ("stderr.log", "cache.log")

    def __init__(self, kind: str, username: str, password: str) -> None:
        # Not pytest's tmp_path: squid's helpers run as user "proxy" and must
        # read the password file and write the log.
        super().__init__(Path(tempfile.mkdtemp(prefix=f"sora-async-{kind}-")), "access.log")
        self.directory.chmod(0o777)
        self.name = self.kind = kind
        self.username = username
        self.password = password
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _start(self) -> None:
        binary = proxy_binary(self.kind)
        if binary is None:
            pytest.skip(f"{self.kind} is not installed (.ci/run installs it with apt-get)")
        config = self.directory / f"{self.kind}.conf"
        if self.kind == "tinyproxy":
            config.write_text(
                f"Port {self.port}\nListen {LOOPBACK}\nTimeout 30\n"
                f'LogFile "{self.log_path}"\nLogLevel Connect\n'
                f'PidFile "{self.directory / "pid"}"\nMaxClients 50\nAllow {LOOPBACK}\n'
                f"BasicAuth {self.username} {self.password}\nDisableViaHeader Yes\n"
            )
            command = [binary, "-d", "-c", str(config)]
        else:
            passwords = self.directory / "passwd"
            passwords.write_text(f"{self.username}:{apr1(self.password, 'sOraAsYn')}\n")
            passwords.chmod(0o644)
            helper = Path("/usr/lib/squid/basic_ncsa_auth")
            if not helper.exists():
                pytest.skip("squid's basic_ncsa_auth helper is missing")
            config.write_text(
                f"http_port {LOOPBACK}:{self.port}\n"
                f"pid_filename {self.directory / 'squid.pid'}\n"
                f"cache_log {self.directory / 'cache.log'}\n"
                'logformat ua %ts.%03tu %>a %rm %ru %>Hs %un "%{User-Agent}>h"\n'
                f"access_log stdio:{self.log_path} ua\n"
                "cache deny all\n"
                f"auth_param basic program {helper} {passwords}\n"
                "auth_param basic realm sora-async-test\n"
                "acl authed proxy_auth REQUIRED\n"
                f"acl local src {LOOPBACK}\n"
                "http_access allow local authed\n"
                "http_access deny all\n"
                "shutdown_lifetime 0 seconds\n"
                f"coredump_dir {self.directory}\n"
                "netdb_filename none\n"
                "pinger_enable off\n"
                "dns_v4_first on\n"
            )
            command = [binary, "-N", "-f", str(config)]
        self._run(command, lambda: listens(self.port))


# -- the dev server in a subprocess -------------------------------------------------------


class DevServerProcess:
    """``python -m sora_async.devserver`` in a child process (which a test may SIGKILL)."""

    def __init__(self, *arguments: str) -> None:
        self.arguments = arguments
        self.process: asyncio.subprocess.Process | None = None
        self.signaling_url = ""
        self.api_url = ""
        self._stderr = tempfile.TemporaryFile()

    async def start(self) -> DevServerProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sora_async.devserver",
            "--host",
            LOOPBACK,
            "--port",
            "0",
            "--log-level",
            "WARNING",
            *self.arguments,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr,
        )
        assert self.process.stdout is not None
        async with asyncio.timeout(30):
            while not (self.signaling_url and self.api_url):
                line = (await self.process.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"dev server exited: {self.stderr()}")
                if line.startswith("signaling: "):
                    self.signaling_url = line.split(": ", 1)[1].strip()
                elif line.startswith("api: "):
                    self.api_url = line.split(": ", 1)[1].strip()
        return self

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-3000:]

    def kill(self, signum: int = signal.SIGKILL) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def stop(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if process is not None and process.stdout is not None:
            # Let the pipe transport close before the loop does.
            with contextlib.suppress(Exception):
                await process.stdout.read()
        self._stderr.close()

    async def __aenter__(self) -> DevServerProcess:
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


# -- misbehaving servers ----------------------------------------------------------------

Scenario = Callable[["HostileServer", ServerConnection], Awaitable[None]]


class HostileServer:
    """A websockets server that plays ``scenario`` against each client.

    It records what clients sent and their handshake headers. ``offer()``
    makes a real WebRTC offer (aiortc) so that the client really applies it.
    """

    def __init__(self, scenario: Scenario, **serve_options: Any) -> None:
        self.scenario = scenario
        self.serve_options = serve_options
        self.received: list[Any] = []
        self.user_agents: list[str | None] = []
        self.finished = asyncio.Event()
        self._pcs: list[Any] = []
        self._server: Any = None

    @property
    def url(self) -> str:
        port = self._server.sockets[0].getsockname()[1]
        scheme = "wss" if self.serve_options.get("ssl") else "ws"
        return f"{scheme}://{LOOPBACK}:{port}/signaling"

    async def _handle(self, websocket: ServerConnection) -> None:
        self.user_agents.append(websocket.request.headers.get("User-Agent"))
        try:
            await self.scenario(self, websocket)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.finished.set()

    async def recv(self, websocket: ServerConnection) -> dict[str, Any]:
        """The next JSON message from the client (recorded)."""
        message = json.loads(await websocket.recv())
        self.received.append(message)
        return message  # type: ignore[no-any-return]

    async def recv_until(self, websocket: ServerConnection, kind: str) -> dict[str, Any]:
        while True:
            message = await self.recv(websocket)
            if message["type"] == kind:
                return message

    async def serve_disconnect(self, websocket: ServerConnection) -> None:
        """Answer the client's ``disconnect`` the way Sora does (close 1000)."""
        await self.recv_until(websocket, "disconnect")
        await websocket.close(1000, "TYPE-DISCONNECT")

    async def offer_sdp(self, *kinds: str) -> str:
        """A real SDP offer with one more m-line per kind than the previous call."""
        from aiortc import RTCPeerConnection

        if not self._pcs:
            self._pcs.append(RTCPeerConnection())
        pc = self._pcs[0]
        for kind in kinds:
            pc.addTransceiver(kind, direction="sendonly")
        offer = await pc.createOffer()
        return str(offer.sdp)

    async def offer(self, *kinds: str, **extra: Any) -> dict[str, Any]:
        message = {
            "type": "offer",
            "sdp": await self.offer_sdp(*(kinds or ("audio",))),
            "connection_id": "H" * 26,
            "client_id": "H" * 26,
            "bundle_id": "H" * 26,
            "session_id": "S" * 26,
            "config": {"iceServers": []},
        }
        message.update(extra)
        return message

    async def __aenter__(self) -> HostileServer:
        options = {"max_size": None, "compression": None, **self.serve_options}
        self._server = await websockets.serve(self._handle, LOOPBACK, 0, **options)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        await self._server.wait_closed()
        for pc in self._pcs:
            await pc.close()


@contextlib.asynccontextmanager
async def raw_tcp_server(
    on_client: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> Any:
    """A plain TCP server on 127.0.0.1 (for servers that never speak WebSocket or TLS)."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(Exception):
            await on_client(reader, writer)
        writer.close()  # the client is gone (or was answered): free the socket now

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, read, never answer."""
    while await reader.read(4096):
        pass


@contextlib.contextmanager
def all_log_records() -> Iterator[list[Any]]:
    """Every log record of every logger at DEBUG and above, while the block runs."""
    import logging

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root = logging.getLogger()
    handler = Keep(logging.DEBUG)
    previous = root.level
    # Loggers with their own level (e.g. set by other tests) are lowered too.
    touched = {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger) and logger.level > logging.DEBUG
    }
    for name in touched:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        for name, level in touched.items():
            logging.getLogger(name).setLevel(level)


def rendered(records: list[Any]) -> str:
    """All records as text: message, arguments' reprs and tracebacks."""
    import logging

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    parts = []
    for record in records:
        parts.append(formatter.format(record))
        if record.args:
            parts.append(repr(record.args))
    return "\n".join(parts)
