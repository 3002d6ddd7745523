"""Access tokens (``--secret``), cluster redirects (``--redirect-to``) and TLS / mTLS."""

from __future__ import annotations

import base64
import json
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
import websockets

from sora_async.devserver import AuthError, decode_jwt, encode_jwt

from .support import (
    DevServerStarter,
    FakePeerFactory,
    SignalingClient,
    connect_message,
    join,
)

# -- JWT ----------------------------------------------------------------------


def test_jwt_round_trip_and_rejections() -> None:
    token = encode_jwt({"channel_id": "ch", "exp": time.time() + 60}, "k")
    assert decode_jwt(token, "k")["channel_id"] == "ch"
    with pytest.raises(AuthError, match="signature"):
        decode_jwt(token, "other")
    with pytest.raises(AuthError, match="expired"):
        decode_jwt(encode_jwt({"exp": 10}, "k"), "k")
    with pytest.raises(AuthError, match="not yet"):
        decode_jwt(encode_jwt({"nbf": time.time() + 600}, "k"), "k")
    with pytest.raises(AuthError):
        decode_jwt("a.b", "k")
    with pytest.raises(AuthError):
        decode_jwt(None, "k")
    # alg "none" with the signature stripped must never pass.
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=").decode()
    forged = f"{header}.{token.split('.')[1]}."
    with pytest.raises(AuthError, match="alg"):
        decode_jwt(forged, "k")


BAD_TOKENS: list[tuple[str, Any]] = [
    ("no metadata", None),
    ("no access_token", {"token": "x"}),
    ("garbage", {"access_token": "not-a-jwt"}),
    ("wrong key", {"access_token": encode_jwt({"channel_id": "ch"}, "wrong")}),
    ("wrong channel", {"access_token": encode_jwt({"channel_id": "other"}, "k")}),
    ("expired", {"access_token": encode_jwt({"channel_id": "ch", "exp": 1}, "k")}),
    ("bad claim type", {"access_token": encode_jwt({"channel_id": "ch", "video": "yes"}, "k")}),
    (
        "bad codec claim",
        {"access_token": encode_jwt({"channel_id": "ch", "video_codec_type": "X"}, "k")},
    ),
]


@pytest.mark.parametrize(("case", "metadata"), BAD_TOKENS, ids=[c for c, _ in BAD_TOKENS])
async def test_bad_access_token_is_refused(
    start_server: DevServerStarter, case: str, metadata: Any
) -> None:
    server = await start_server(secret="k")
    client = await SignalingClient.open(server.signaling_url)
    fields = {"metadata": metadata} if metadata is not None else {}
    await client.send(connect_message(**fields))
    assert await client.wait_closed() == (4490, "AUTHENTICATION-FAILURE")
    assert client.received == []


async def test_token_claims_override_the_connect(
    start_server: DevServerStarter, peers: FakePeerFactory
) -> None:
    server = await start_server(secret="k")
    encodings = [
        {"rid": "r0", "active": True, "scaleResolutionDownTo": {"maxWidth": 640, "maxHeight": 360}},
        {"rid": "r1", "active": True, "scaleResolutionDownBy": 2.0},
        {"rid": "r2", "active": False},
    ]
    token = encode_jwt(
        {
            "channel_id": "ch",
            "audio": False,
            "video_codec_type": "AV1",
            "video_bit_rate": 2500,
            "simulcast": True,
            "simulcast_encodings": encodings,
            "exp": int(time.time()) + 300,
        },
        "k",
    )
    client = await join(server, role="sendonly", metadata={"access_token": token})
    offer = client.offer
    assert offer["audio"] is False and "audio_codec_type" not in offer
    assert offer["video_codec_type"] == "AV1" and offer["video_bit_rate"] == 2500
    assert offer["simulcast"] is True and offer["encodings"] == encodings
    assert offer["mid"] == {"video": "0"}
    kwargs = peers.peers[client.connection_id].kwargs
    assert kwargs["send_audio"] is False and kwargs["video_codec"] == "AV1"
    assert kwargs["encodings"] == encodings


async def test_token_connection_lifetime(start_server: DevServerStarter) -> None:
    server = await start_server(secret="k")
    token = encode_jwt({"channel_id": "ch", "connection_lifetime": 0.2}, "k")
    client = await join(server, metadata={"access_token": token})
    assert await client.wait_closed() == (1000, "LIFETIME-EXPIRED")


# -- redirect -------------------------------------------------------------------


async def test_redirect_sends_the_client_to_the_other_node(
    start_server: DevServerStarter,
) -> None:
    node_b = await start_server()
    node_a = await start_server(redirect_to=node_b.signaling_url)
    first = await SignalingClient.open(node_a.signaling_url)
    connect = connect_message(role="recvonly")
    await first.send(connect)
    redirect = await first.wait_type("redirect")
    assert redirect == {"type": "redirect", "location": node_b.signaling_url}
    assert await first.wait_closed() == (1000, "")
    assert node_a.connections == {}

    second = await SignalingClient.open(redirect["location"])
    await second.send({**connect, "redirect": True})
    second.offer = await second.wait_type("offer")
    await second.send({"type": "answer", "sdp": "v=0"})
    await second.wait_notify("connection.created", connection_id=second.connection_id)
    assert list(node_b.connections) == [second.connection_id]


async def test_a_redirected_connect_is_served_even_by_a_redirecting_node(
    start_server: DevServerStarter,
) -> None:
    node = await start_server(redirect_to="ws://192.0.2.1/signaling")
    client = await join(node, redirect=True)
    assert client.offer["type"] == "offer"


async def test_redirect_happens_before_authentication(start_server: DevServerStarter) -> None:
    node = await start_server(secret="k", redirect_to="ws://192.0.2.1/signaling")
    client = await SignalingClient.open(node.signaling_url)
    await client.send(connect_message())
    assert (await client.wait_type("redirect"))["location"] == "ws://192.0.2.1/signaling"


# -- TLS -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path, ca_path = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    ca.cert_pem.write_to_path(str(ca_path))
    return {"tls_cert": str(cert_path), "tls_key": str(key_path), "ca": str(ca_path)}


async def test_wss_with_a_server_certificate(
    start_server: DevServerStarter, ca: trustme.CA, tls_files: dict[str, str]
) -> None:
    server = await start_server(tls_cert=tls_files["tls_cert"], tls_key=tls_files["tls_key"])
    assert server.signaling_url.startswith("wss://") and server.api_url.startswith("https://")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    client = await SignalingClient.open(server.signaling_url, ssl=context)
    await client.send(connect_message())
    assert (await client.wait_type("offer"))["type"] == "offer"
    await client.close()


async def test_mtls_requires_a_client_certificate(
    start_server: DevServerStarter, ca: trustme.CA, tls_files: dict[str, str]
) -> None:
    server = await start_server(
        tls_cert=tls_files["tls_cert"], tls_key=tls_files["tls_key"], client_ca=tls_files["ca"]
    )
    anonymous = ssl.create_default_context()
    ca.configure_trust(anonymous)
    with pytest.raises((ssl.SSLError, OSError, websockets.InvalidHandshake)):
        client = await SignalingClient.open(server.signaling_url, ssl=anonymous)
        # TLS 1.3 reports a missing client certificate only on the first read.
        await client.send(connect_message())
        await client.wait_type("offer")

    with_cert = ssl.create_default_context()
    ca.configure_trust(with_cert)
    ca.issue_cert("client@example.com").configure_cert(with_cert)
    client = await SignalingClient.open(server.signaling_url, ssl=with_cert)
    await client.send(connect_message())
    assert (await client.wait_type("offer"))["type"] == "offer"
    await client.close()
