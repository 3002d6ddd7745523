"""A real TURN server for the TURN tests: Debian's ``coturn`` (``turnserver``).

It runs as a subprocess on 127.0.0.1 with long-term credentials, TURN over UDP
and TCP on one port and over TLS (a certificate from the test's trustme CA) on
another, logs to a file the tests read, and relays to loopback peers (coturn
refuses them by default, and the dev server's candidates are on 127.0.0.1).
``.ci/run`` installs coturn; without ``turnserver`` the tests are skipped with
the reason.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.security_support import LOOPBACK, LoggedDaemon, listens

REALM = "sora-async.test"


def turnserver_binary() -> str | None:
    return shutil.which("turnserver") or shutil.which(
        "turnserver", path="/usr/bin:/usr/sbin:/bin:/sbin"
    )


def free_udp_and_tcp_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (coturn listens on both)."""
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind((LOOPBACK, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both TCP and UDP")


def dead_udp_and_tcp_port() -> int:
    """A port nothing listens on (TCP refuses, UDP answers ICMP unreachable)."""
    return free_udp_and_tcp_port()


class Coturn(LoggedDaemon):
    """``turnserver`` on 127.0.0.1: ``turn:`` over UDP and TCP on :attr:`port`,
    ``turns:`` on :attr:`tls_port` (when a certificate is given)."""

    def __init__(
        self, username: str, password: str, *, cert: str | None = None, key: str | None = None
    ) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="sora-async-coturn-")), "turn.log")
        self.username = username
        self.password = password
        self.cert = cert
        self.key = key
        self.port = free_udp_and_tcp_port()
        self.tls_port = free_udp_and_tcp_port()

    def urls(self, *kinds: str) -> list[str]:
        """``"udp"``, ``"tcp"``, ``"tls"`` → the TURN URLs, in the given order."""
        table = {
            "udp": f"turn:{LOOPBACK}:{self.port}?transport=udp",
            "tcp": f"turn:{LOOPBACK}:{self.port}?transport=tcp",
            "tls": f"turns:{LOOPBACK}:{self.tls_port}?transport=tcp",
        }
        return [table[kind] for kind in kinds]

    def ice_server(self, *kinds: str, password: str | None = None) -> dict[str, Any]:
        """An ``iceServers`` entry as Sora sends it."""
        return {
            "urls": self.urls(*kinds),
            "username": self.username,
            "credential": self.password if password is None else password,
        }

    name = "turnserver"

    def _start(self) -> None:
        binary = turnserver_binary()
        if binary is None:
            pytest.skip("coturn is not installed: no turnserver (.ci/run installs it with apt-get)")
        lines = [
            f"listening-ip={LOOPBACK}",
            f"relay-ip={LOOPBACK}",
            f"listening-port={self.port}",
            f"tls-listening-port={self.tls_port}",
            "lt-cred-mech",
            f"user={self.username}:{self.password}",
            f"realm={REALM}",
            "fingerprint",
            "verbose",  # log each session and allocation
            # the dev server's candidates are on 127.0.0.1, which coturn refuses by default
            "allow-loopback-peers",
            "no-multicast-peers",
            "no-cli",
            "no-dtls",
            f"log-file={self.log_path}",
            "simple-log",
            f"pidfile={self.directory / 'turnserver.pid'}",
            f"userdb={self.directory / 'turndb'}",
        ]
        if self.cert is not None:
            lines += [f"cert={self.cert}", f"pkey={self.key or self.cert}"]
        else:
            lines.append("no-tls")
        config = self.directory / "turnserver.conf"
        config.write_text("\n".join(lines) + "\n")
        # coturn opens its UDP listener with the TCP one
        ports = [self.port] + ([self.tls_port] if self.cert is not None else [])
        # -c: not /etc/turnserver.conf (Debian's sends the log to syslog)
        self._run([binary, "-c", str(config)], lambda: all(map(listens, ports)))
