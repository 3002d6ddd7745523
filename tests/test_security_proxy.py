"""The signaling WebSocket through a real HTTP proxy (Debian tinyproxy and squid).

Each proxy runs as a subprocess on 127.0.0.1 with Basic authentication
(``.ci/run`` installs both; a test is skipped with the reason when a binary
is missing). The client goes through websockets' own ``CONNECT`` support:
right credentials connect (``ws://`` and ``wss://`` with a pinned CA), wrong
or missing ones fail with the proxy's ``407`` in the message, the proxy's log
shows the ``CONNECT`` (and, with squid, which logs request headers, our
``proxy_agent``), and the dev server sees our ``user_agent`` on the handshake.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sora_async import Connection, DisconnectCode, SoraConnectionError, __version__
from sora_async.signaling import State
from tests.security_support import Events, HttpProxy, Pki, make_pki, raw_tcp_server, silent

pytestmark = pytest.mark.timeout(90)

USER = "alice"
#: Characters that need percent-encoding in a URL and are legal in Basic auth
#: (tinyproxy's configuration only takes ``[-a-z0-9._]`` passwords).
PASSWORDS = {"squid": "p@ss:w/rd%x", "tinyproxy": "pass-w0rd.x"}
PASSWORD = PASSWORDS["squid"]


@pytest.fixture(scope="module", params=["tinyproxy", "squid"])
def proxy(request: pytest.FixtureRequest) -> Iterator[HttpProxy]:
    server = HttpProxy(request.param, USER, PASSWORDS[request.param]).start()
    try:
        yield server
    finally:
        server.stop()


def via(proxy: HttpProxy, **extra: Any) -> dict[str, Any]:
    return {
        "proxy_url": proxy.url,
        "proxy_username": USER,
        "proxy_password": proxy.password,
        **extra,
    }


async def test_connects_through_the_proxy_with_the_right_credentials(
    proxy: HttpProxy, sora_devserver: Any
) -> None:
    url = sora_devserver.signaling_url
    conn = Connection(
        url,
        "recvonly",
        "proxied",
        user_agent="sora-async-test-ua/1.0",
        **via(proxy, proxy_agent="sora-async-test-proxy-agent/2.0"),
    )
    async with asyncio.timeout(20), conn:
        assert conn.state is State.CONNECTED_WS
        info = sora_devserver.connections[conn.connection_id]
        # The dev server saw our user_agent on the WebSocket handshake...
        assert info.user_agent == "sora-async-test-ua/1.0"
    assert conn.disconnect_code is DisconnectCode.CLOSE_SUCCEEDED
    host = url.split("/")[2]
    log = await proxy.wait_for_log(f"CONNECT {host}")
    if proxy.kind == "squid":
        # ...and the proxy saw proxy_agent on CONNECT, for the authenticated user.
        line = next(line for line in log.splitlines() if f"CONNECT {host} 200" in line)
        assert f" {USER} " in line
        assert '"sora-async-test-proxy-agent/2.0"' in line
        assert "sora-async-test-ua" not in log
    assert proxy.password not in log


async def test_wss_through_the_proxy_verifies_the_server(
    proxy: HttpProxy, sora_devserver_factory: Any, tmp_path: Path
) -> None:
    pki: Pki = make_pki(tmp_path)
    server = await sora_devserver_factory(tls_cert=pki.server_cert, tls_key=pki.server_key)
    async with asyncio.timeout(20):
        async with Connection(
            server.signaling_url, "recvonly", "proxied-tls", ca_cert=pki.ca_pem, **via(proxy)
        ) as conn:
            assert conn.state is State.CONNECTED_WS
            # Default user agent: this library and its version, also on CONNECT.
            info = server.connections[conn.connection_id]
            assert info.user_agent == f"Mozilla/5.0 (sora_async/{__version__})"
        conn = Connection(server.signaling_url, "recvonly", "proxied-tls", **via(proxy))
        with pytest.raises(SoraConnectionError) as failure:
            await conn.connect()
    assert "TLS certificate verification failed" in failure.value.message
    if proxy.kind == "squid":
        log = await proxy.wait_for_log(f'"Mozilla/5.0 (sora_async/{__version__})"')
        assert "CONNECT 127.0.0.1" in log


@pytest.mark.parametrize("credentials", ["wrong-password", "wrong-user", "none"])
async def test_wrong_or_missing_credentials_fail_with_407(
    proxy: HttpProxy, sora_devserver: Any, credentials: str
) -> None:
    keywords = {
        "wrong-password": {"proxy_username": USER, "proxy_password": "wrong"},
        "wrong-user": {"proxy_username": "mallory", "proxy_password": proxy.password},
        "none": {},
    }[credentials]
    conn = Connection(
        sora_devserver.signaling_url, "recvonly", "c", proxy_url=proxy.url, **keywords
    )
    events = Events(conn)
    async with asyncio.timeout(20):
        with pytest.raises(SoraConnectionError) as failure:
            await conn.connect()
        await conn.wait_closed()
    error = failure.value
    assert error.code is DisconnectCode.WEBSOCKET_HANDSHAKE_FAILED
    # squid answers 407; tinyproxy 407 without credentials, 401 for wrong ones.
    status = 401 if proxy.kind == "tinyproxy" and credentials != "none" else 407
    assert error.message.startswith(
        f"Failed Websocket handshake: last_ec=HTTP proxy refused CONNECT: {status} "
    )
    assert "(check proxy_username/proxy_password)" in error.message
    assert events.of("disconnect") == [(error.code, error.message)]
    assert not sora_devserver.connections
    for secret in (proxy.password, "wrong"):
        assert secret not in error.message
        assert secret not in repr(conn) and secret not in repr(conn.options)


async def test_a_proxy_that_is_down_or_silent_fails_cleanly(sora_devserver: Any) -> None:
    url = sora_devserver.signaling_url
    async with asyncio.timeout(20):
        conn = Connection(url, "recvonly", "c", proxy_url="http://127.0.0.1:1")
        with pytest.raises(SoraConnectionError) as refused:
            await conn.connect()
        assert refused.value.message.startswith(
            "Failed Websocket handshake: last_ec=Connection refused"
        )
        async with raw_tcp_server(silent) as port:
            conn = Connection(
                url,
                "recvonly",
                "c",
                proxy_url=f"http://127.0.0.1:{port}",
                websocket_connection_timeout=1,
            )
            with pytest.raises(SoraConnectionError) as stuck:
                await conn.connect()
            await conn.wait_closed()
    assert (stuck.value.code, stuck.value.message) == (
        DisconnectCode.INTERNAL_ERROR,
        "Connection timeout",
    )


async def test_environment_proxy_variables_are_ignored(
    sora_devserver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Like the official client: only proxy_url selects a proxy.
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:1")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    async with asyncio.timeout(20), Connection(sora_devserver.signaling_url, "recvonly", "c"):
        pass


def test_proxy_settings_are_validated_without_echoing_secrets() -> None:
    url = "ws://127.0.0.1:1/signaling"
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"proxy_url": f"http://{USER}:{PASSWORD}@proxy:3128"}, "must not contain credentials"),
        ({"proxy_url": "socks5://proxy:1080"}, "http://"),
        ({"proxy_url": "http://proxy:3128/path"}, "without path"),
        ({"proxy_url": "http://proxy:99999"}, "valid port"),
        ({"proxy_username": "a:b", "proxy_url": "http://p:1"}, "must not contain ':'"),
        ({"proxy_password": PASSWORD}, "need proxy_url"),
        (
            {"proxy_password": 12345},
            "proxy_password must be a string or None, got a value of type int",
        ),
        ({"proxy_agent": "x\r\nX-Injected: 1"}, "proxy_agent must be printable"),
        ({"user_agent": "x\nHost: evil"}, "user_agent must be printable"),
    ]
    for keywords, expected in cases:
        with pytest.raises(ValueError) as raised:
            Connection(url, "recvonly", "c", **keywords)
        message = str(raised.value)
        assert expected in message, (keywords, message)
        assert PASSWORD not in message and token not in message and "12345" not in message
