"""TLS of the signaling WebSocket against the dev server with a real test CA (trustme).

``ca_cert`` pins a CA (PEM bytes as the official API takes it, or a ``str``
path, PEM text or DER), an unknown CA or the system store fails with
``WEBSOCKET_HANDSHAKE_FAILED`` and a message naming the certificate problem,
``insecure=True`` connects anyway (warning once), and with ``--client-ca`` the
server wants a client certificate from that CA (mTLS). Bad TLS material is
refused by the constructor, before any network activity.
``tests/test_connection.py::test_wss_with_ca_cert_client_certificate_and_insecure``
is the short happy-path version of these.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

import pytest

from sora_async import Connection, DisconnectCode, SoraConnectionError
from sora_async.signaling import State
from sora_async.websocket import tls_context
from tests.security_support import Events, Pki, make_pki, raw_tcp_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
async def tls_server(sora_devserver_factory: Any, pki: Pki) -> Any:
    return await sora_devserver_factory(tls_cert=pki.server_cert, tls_key=pki.server_key)


@pytest.fixture
async def mtls_server(sora_devserver_factory: Any, pki: Pki) -> Any:
    return await sora_devserver_factory(
        tls_cert=pki.server_cert, tls_key=pki.server_key, client_ca=pki.ca_path
    )


async def connect_and_leave(url: str | list[str], **keywords: Any) -> Connection:
    conn = Connection(url, "recvonly", "tls", **keywords)
    async with asyncio.timeout(20), conn:
        assert conn.state is State.CONNECTED_WS
    assert conn.disconnect_code is DisconnectCode.CLOSE_SUCCEEDED
    return conn


async def failure(url: str | list[str], **keywords: Any) -> SoraConnectionError:
    conn = Connection(url, "recvonly", "tls", **keywords)
    events = Events(conn)
    async with asyncio.timeout(20):
        with pytest.raises(SoraConnectionError) as raised:
            await conn.connect()
        await conn.wait_closed()
    assert events.of("disconnect") == [(raised.value.code, raised.value.message)]
    return raised.value


@pytest.mark.parametrize("form", ["pem-bytes", "path-str", "pem-str", "der-bytes"])
async def test_ca_cert_pins_the_test_ca(tls_server: Any, pki: Pki, form: str) -> None:
    ca_cert: Any = {
        "pem-bytes": pki.ca_pem,
        "path-str": pki.ca_path,
        "pem-str": pki.ca_pem.decode(),
        "der-bytes": ssl.PEM_cert_to_DER_cert(pki.ca_pem.decode()),
    }[form]
    await connect_and_leave(tls_server.signaling_url, ca_cert=ca_cert)


@pytest.mark.parametrize("trust", ["system-store", "another-ca"])
async def test_an_untrusted_server_certificate_fails_naming_the_problem(
    tls_server: Any, pki: Pki, trust: str
) -> None:
    keywords = {} if trust == "system-store" else {"ca_cert": pki.other_ca.cert_pem.bytes()}
    error = await failure(tls_server.signaling_url, **keywords)
    assert error.code is DisconnectCode.WEBSOCKET_HANDSHAKE_FAILED
    assert error.message == (
        "Failed Websocket handshake: last_ec=TLS certificate verification failed: "
        f"unable to get local issuer certificate last_url={tls_server.signaling_url}"
    )


async def test_a_certificate_for_another_host_name_fails(tls_server: Any, pki: Pki) -> None:
    # The certificate names 127.0.0.1; "localhost" resolves to loopback as well.
    url = tls_server.signaling_url.replace("127.0.0.1", "localhost")
    error = await failure(url, ca_cert=pki.ca_pem)
    assert error.code is DisconnectCode.WEBSOCKET_HANDSHAKE_FAILED
    assert "TLS certificate verification failed: Hostname mismatch" in error.message
    assert "'localhost'" in error.message


async def test_insecure_connects_to_an_untrusted_server_and_warns_once(
    tls_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    # Two racing URLs to the same server: still one warning for the connection.
    url = tls_server.signaling_url
    await connect_and_leave([url, url], insecure=True)
    warnings = [r for r in caplog.records if "insecure=True" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].levelno == logging.WARNING
    assert "NOT verified" in warnings[0].getMessage()


async def test_mtls_needs_a_client_certificate_from_the_servers_ca(
    mtls_server: Any, pki: Pki
) -> None:
    url = mtls_server.signaling_url
    error = await failure(url, ca_cert=pki.ca_pem)
    assert error.code is DisconnectCode.WEBSOCKET_HANDSHAKE_FAILED
    assert "it may require a client certificate (client_cert/client_key)" in error.message
    # insecure only concerns the server's certificate, not the server's demand.
    error = await failure(url, insecure=True)
    assert "it may require a client certificate" in error.message
    error = await failure(
        url, ca_cert=pki.ca_pem, client_cert=pki.stranger_cert, client_key=pki.stranger_key
    )
    assert error.code is DisconnectCode.WEBSOCKET_HANDSHAKE_FAILED
    assert "it may have refused the client certificate" in error.message
    await connect_and_leave(
        url, ca_cert=pki.ca_pem, client_cert=pki.client_cert, client_key=pki.client_key
    )


async def test_mtls_material_may_be_given_as_paths(mtls_server: Any, pki: Pki) -> None:
    cert, key = pki.directory / "client.pem", pki.directory / "client-key.pem"
    cert.write_bytes(pki.client_cert)
    key.write_bytes(pki.client_key)
    await connect_and_leave(
        mtls_server.signaling_url, ca_cert=pki.ca_path, client_cert=str(cert), client_key=str(key)
    )
    # A PEM holding the certificate and its key is enough on its own.
    both = pki.directory / "both.pem"
    both.write_bytes(pki.client_key + pki.client_cert)
    await connect_and_leave(mtls_server.signaling_url, ca_cert=pki.ca_pem, client_cert=str(both))


async def test_wss_to_a_server_that_does_not_speak_tls_names_it() -> None:
    async def plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async with raw_tcp_server(plain_http) as port:
        error = await failure(f"wss://127.0.0.1:{port}/signaling")
    assert error.code is DisconnectCode.WEBSOCKET_HANDSHAKE_FAILED
    assert "last_ec=TLS error: " in error.message


# -- bad material is refused before any I/O --------------------------------------------


def _encrypted(key_pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )


def test_unusable_tls_material_is_refused_by_the_constructor(pki: Pki) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"ca_cert": b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"}, "ca_cert"),
        ({"ca_cert": b""}, "ca_cert is empty"),
        ({"ca_cert": "/nonexistent/ca.pem"}, "ca_cert: cannot read the file it names"),
        ({"client_key": pki.client_key}, "client_key needs client_cert"),
        (
            {"client_cert": pki.client_cert, "client_key": pki.stranger_key},
            "client_cert/client_key cannot be used: KEY_VALUES_MISMATCH",
        ),
        (
            {"client_cert": pki.client_cert, "client_key": _encrypted(pki.client_key)},
            "client_key is encrypted",
        ),
        ({"client_key": 42}, "client_key must be bytes"),
    ]
    for keywords, expected in cases:
        with pytest.raises(ValueError) as raised:
            Connection("wss://127.0.0.1:1/signaling", "recvonly", "c", **keywords)
        assert expected in str(raised.value), (keywords.keys(), str(raised.value))
        # The key never shows up in the error, whatever went wrong.
        assert b"PRIVATE KEY" not in str(raised.value).encode()


def test_client_keys_never_touch_the_disk(pki: Pki) -> None:
    before = set(os.listdir(tempfile.gettempdir()))
    context = tls_context(client_cert=pki.client_cert, client_key=pki.client_key)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert set(os.listdir(tempfile.gettempdir())) <= before
    assert not [fd for fd in os.listdir("/proc/self/fd") if _is_pem_memfd(fd)]


def _is_pem_memfd(fd: str) -> bool:
    try:
        return "sora_async-pem" in os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False
