"""Secrets never leak: metadata (access tokens), client_key, proxy passwords.

A full session (wss with mTLS through a real proxy, metadata with access
tokens) and its failure paths run while every log record of every logger is
captured at DEBUG; the secrets must appear in none of them, in no exception
message or traceback, and in no ``repr()`` of the connection, its options or
the signaling machine's actions. The dev server runs in a subprocess so that
the captured records are the client's only (the server legitimately sees
the metadata).
"""

from __future__ import annotations

import asyncio
import base64
import traceback
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest

from sora_async import Connection, DisconnectCode, SoraConnectionError
from sora_async.options import ConnectionOptions
from sora_async.signaling import SignalingProtocol
from sora_async.websocket import proxy_url
from tests.security_support import (
    DevServerProcess,
    Events,
    HttpProxy,
    Pki,
    all_log_records,
    make_pki,
    proxy_binary,
    rendered,
)

pytestmark = pytest.mark.timeout(120)

TOKEN = f"token-{uuid.uuid4().hex}"
NOTIFY_TOKEN = f"notify-{uuid.uuid4().hex}"
USER = "alice"
# tinyproxy accepts [-a-z0-9._] passwords only.
PROXY_PASSWORD = f"pw-{uuid.uuid4().hex}"


def secrets(pki: Pki) -> list[str]:
    key_lines = [
        line
        for line in pki.client_key.decode().splitlines()
        if line and not line.startswith("-----")
    ]
    basic = base64.b64encode(f"{USER}:{PROXY_PASSWORD}".encode()).decode()
    return [
        TOKEN,
        NOTIFY_TOKEN,
        PROXY_PASSWORD,
        urllib.parse.quote(PROXY_PASSWORD, safe=""),
        basic,
        *key_lines,
    ]


def assert_clean(texts: list[str], pki: Pki) -> None:
    everything = "\n".join(texts)
    for secret in secrets(pki):
        assert secret not in everything, f"secret {secret[:12]}... leaked"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


def available_proxy() -> HttpProxy | None:
    for kind in ("tinyproxy", "squid"):
        if proxy_binary(kind):
            return HttpProxy(kind, USER, PROXY_PASSWORD)
    return None


async def test_no_secret_in_logs_exceptions_or_reprs(pki: Pki) -> None:
    proxy = available_proxy()
    if proxy is not None:
        proxy.start()
    texts: list[str] = []
    try:
        async with DevServerProcess(
            "--tls-cert",
            pki.server_cert,
            "--tls-key",
            pki.server_key,
            "--client-ca",
            pki.ca_path,
        ) as server:
            with all_log_records() as records:
                texts += await _scenarios(server.signaling_url, pki, proxy)
            texts.append(rendered(records))
            # The capture works: DEBUG records of the client and its libraries are there.
            assert any(r.levelname == "DEBUG" and r.name.startswith("sora_async") for r in records)
    finally:
        if proxy is not None:
            proxy.stop()
    assert_clean(texts, pki)


async def _scenarios(url: str, pki: Pki, proxy: HttpProxy | None) -> list[str]:
    texts: list[str] = []
    via: dict[str, Any] = {}
    if proxy is not None:
        via = {"proxy_url": proxy.url, "proxy_username": USER, "proxy_password": PROXY_PASSWORD}
    keywords: dict[str, Any] = {
        "metadata": {"access_token": TOKEN, "nested": [{"token": TOKEN}]},
        "signaling_notify_metadata": {"secret": NOTIFY_TOKEN},
        "ca_cert": pki.ca_pem,
        "client_cert": pki.client_cert,
        "client_key": pki.client_key,
        **via,
    }

    # 1. A whole session, in each signaling mode.
    for mode in ({}, {"data_channel_signaling": True, "ignore_disconnect_websocket": True}):
        conn = Connection(url, "recvonly", "secrets", **keywords, **mode)
        events = Events(conn)
        texts += [repr(conn), repr(conn.options), str(conn.options)]
        async with asyncio.timeout(30):
            await conn.connect()
            texts.append(repr(conn))
            await conn.disconnect()
        assert conn.disconnect_code is DisconnectCode.CLOSE_SUCCEEDED, conn.disconnect_message
        texts += [conn.disconnect_message or "", repr(events.of("disconnect"))]

    # 2. Failures: wrong proxy password, unknown CA, missing client certificate.
    failing: list[dict[str, Any]] = [
        {**keywords, "ca_cert": pki.other_ca.cert_pem.bytes()},
        {k: v for k, v in keywords.items() if k not in ("client_cert", "client_key")},
    ]
    if proxy is not None:
        failing.append({**keywords, "proxy_password": PROXY_PASSWORD[::-1]})
    for failing_keywords in failing:
        conn = Connection(url, "recvonly", "secrets", **failing_keywords)
        async with asyncio.timeout(30):
            with pytest.raises(SoraConnectionError) as failure:
                await conn.connect()
            await conn.wait_closed()
        texts += _exception_texts(failure.value)
        texts += [repr(conn), repr(conn.options)]

    # 3. Validation errors that involve the secrets themselves.
    for bad in (
        {"metadata": {"access_token": TOKEN, "bad": object()}},
        {"metadata": {"access_token": TOKEN, "x": float("nan")}},
        {"signaling_notify_metadata": {1: NOTIFY_TOKEN}},
        {"client_cert": pki.client_cert, "client_key": pki.client_key[:-60]},
        {"client_key": pki.client_key.decode()[40:]},  # str: taken as a path
        {"proxy_url": f"http://{USER}:{PROXY_PASSWORD}@127.0.0.1:3128"},
        {"proxy_password": PROXY_PASSWORD},
    ):
        with pytest.raises((ValueError, TypeError)) as invalid:
            Connection(url, "recvonly", "secrets", **bad)
        texts += _exception_texts(invalid.value)

    # 4. The machine's actions (what the driver performs, and may log).
    options = ConnectionOptions.from_arguments(url, "recvonly", "secrets", **keywords)
    machine = SignalingProtocol(options.signaling_config())
    machine.start()
    machine.websocket_opened(0)
    texts += [repr(action) for action in machine.actions_to_perform()]
    texts.append(repr(options))
    # The proxy URL handed to websockets does contain the password; it is never logged.
    assert PROXY_PASSWORD in (proxy_url("http://127.0.0.1:1", USER, PROXY_PASSWORD) or "")
    return texts


def _exception_texts(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


def test_options_repr_redacts_and_keeps_the_rest(pki: Pki) -> None:
    options = ConnectionOptions.from_arguments(
        "wss://sora.example/signaling",
        "sendrecv",
        "ch",
        metadata={"access_token": TOKEN},
        client_cert=pki.client_cert,
        client_key=pki.client_key,
        proxy_url="http://proxy.example:3128",
        proxy_username=USER,
        proxy_password=PROXY_PASSWORD,
    )
    text = repr(options)
    assert "metadata=<redacted>" in text and "client_key=<redacted>" in text
    assert "proxy_password=<redacted>" in text
    assert f"proxy_username={USER!r}" in text and "channel_id='ch'" in text
    assert f"client_cert=<{len(pki.client_cert)} bytes>" in text
    assert_clean([text, str(options)], pki)
    conn = Connection("wss://sora.example/signaling", "sendrecv", "ch", metadata={"t": TOKEN})
    assert repr(conn) == (
        "<Connection channel_id='ch' role=sendrecv state=INIT connection_id=None>"
    )
