"""Control-plane features with the official ``sora_sdk`` client as referee.

The acceptance scenarios of issue 2 live in ``tests/test_devserver_official.py``;
these cover what they leave out: access tokens, connection lifetime (the three
shapes of a server-side close), TLS and mTLS, WebSocket ping/pong, spotlight.
Expected strings are the official client's own (sora-sdk-reference.md §1.6;
sora-python-sdk ``tests/test_sora_disconnect.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from sora_async.devserver import DevServer, encode_jwt
from tests.official.harness import OfficialClient

from .support import DevServerStarter

pytestmark = pytest.mark.official

Factory = Callable[..., OfficialClient]
_numbers = itertools.count(1)


def _channel(name: str) -> str:
    return f"cp-{name}-{next(_numbers)}"


def _ws_closes(client: OfficialClient, start: int = 0) -> list[tuple[int, str]]:
    return [(e["code"], e["reason"]) for e in client.events("ws_close") if e["seq"] >= start]


async def _server(start_server: DevServerStarter, **options: Any) -> DevServer:
    # The real media plane, not the fake one the other tests here use.
    options.setdefault("ping_interval", 5.0)
    return await start_server(peer_factory=None, **options)


async def test_access_token_accepted_and_refused(
    start_server: DevServerStarter, official_client: Factory
) -> None:
    ch = _channel("jwt")
    server = await _server(start_server, secret="dev-secret")
    token = encode_jwt({"channel_id": ch, "metadata": {"room": "a"}}, "dev-secret")
    async with official_client(
        signaling_urls=[server.signaling_url],
        role="recvonly",
        channel_id=ch,
        metadata={"access_token": token},
    ) as good:
        await good.connect()
        offer = good.events("set_offer")[0]["message"]
        assert offer["metadata"] == {"room": "a"}
        left = await good.disconnect()
        assert left["name"] == "CLOSE_SUCCEEDED"

    wrong = encode_jwt({"channel_id": "another-channel"}, "dev-secret")
    async with official_client(
        signaling_urls=[server.signaling_url],
        role="recvonly",
        channel_id=ch,
        metadata={"access_token": wrong},
    ) as refused:
        await refused.command("connect")
        event = await refused.wait_for("disconnect", timeout=15)
        assert event["name"] == "WEBSOCKET_ONCLOSE", event
        assert _ws_closes(refused) == [(4490, "AUTHENTICATION-FAILURE")]


@pytest.mark.parametrize(
    ("mode", "dc", "ignore"),
    [("ws-only", False, False), ("ws+dc", True, False), ("dc-only", True, True)],
)
async def test_lifetime_expiry_in_each_signaling_mode(
    start_server: DevServerStarter, official_client: Factory, mode: str, dc: bool, ignore: bool
) -> None:
    ch = _channel("lifetime")
    server = await _server(start_server, secret="k", data_channel_signaling_close_message=True)
    token = encode_jwt({"channel_id": ch, "connection_lifetime": 3}, "k")
    async with official_client(
        signaling_urls=[server.signaling_url],
        role="recvonly",
        channel_id=ch,
        metadata={"access_token": token},
        data_channel_signaling=dc,
        ignore_disconnect_websocket=ignore,
    ) as client:
        await client.connect()
        if dc:
            await client.wait_for("switched")
        event = await client.wait_for("disconnect", timeout=15)
        assert event["name"] == "CLOSE_SUCCEEDED", event
        if mode == "dc-only":
            closes = client.events(
                "signaling_message",
                lambda e: e["type"] == "DATACHANNEL" and e["message"].get("type") == "close",
            )
            assert [e["message"] for e in closes] == [
                {"type": "close", "code": 1000, "reason": "LIFETIME-EXPIRED"}
            ]
            assert event["message"] == "Succeeded to close DataChannel: reason=LIFETIME-EXPIRED"
        else:
            assert _ws_closes(client)[-1] == (1000, "LIFETIME-EXPIRED")
            assert "wsreason=LIFETIME-EXPIRED" in event["message"]


async def test_pings_are_answered_by_the_official_client(
    start_server: DevServerStarter, official_client: Factory
) -> None:
    ch = _channel("ping")
    server = await _server(start_server, ping_interval=0.3)
    async with official_client(
        signaling_urls=[server.signaling_url], role="recvonly", channel_id=ch
    ) as client:
        await client.connect()
        session = server.registry.sessions[client.connection_id or ""]
        # Without pongs the session would close 4490 TIMEOUT after one interval;
        # several stats round trips to the client take well over ten intervals.
        for _ in range(4):
            await client.get_stats()
        assert session.state.value == "connected"
        assert _ws_closes(client) == []
        left = await client.disconnect()
        assert left["name"] == "CLOSE_SUCCEEDED"


@pytest.fixture
def tls(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("client.example")
    files = {
        "cert": server_cert.private_key_and_cert_chain_pem,
        "key": server_cert.private_key_pem,
        "ca": ca.cert_pem,
        "client_cert": client_cert.cert_chain_pems[0],
        "client_key": client_cert.private_key_pem,
    }
    paths = {}
    for name, blob in files.items():
        path = tmp_path / f"{name}.pem"
        blob.write_to_path(str(path))
        paths[name] = str(path)
    return paths


async def test_wss_and_mtls_with_the_official_client(
    start_server: DevServerStarter, official_client: Factory, tls: dict[str, str]
) -> None:
    ch = _channel("tls")
    server = await _server(
        start_server, tls_cert=tls["cert"], tls_key=tls["key"], client_ca=tls["ca"]
    )
    assert server.signaling_url.startswith("wss://")
    async with official_client(
        signaling_urls=[server.signaling_url],
        role="recvonly",
        channel_id=ch,
        ca_cert=tls["ca"],
        client_cert=tls["client_cert"],
        client_key=tls["client_key"],
    ) as client:
        await client.connect()
        left = await client.disconnect()
        assert left["name"] == "CLOSE_SUCCEEDED"

    async with official_client(
        signaling_urls=[server.signaling_url], role="recvonly", channel_id=ch, ca_cert=tls["ca"]
    ) as anonymous:
        await anonymous.command("connect")
        event = await anonymous.wait_for("disconnect", timeout=40)
        assert event["name"] != "CLOSE_SUCCEEDED", "no client certificate, no connection"


async def test_spotlight_focus_with_official_clients(
    start_server: DevServerStarter, official_client: Factory
) -> None:
    ch = _channel("spotlight")
    server = await _server(start_server)
    common: dict[str, Any] = {
        "signaling_urls": [server.signaling_url],
        "channel_id": ch,
        "spotlight": True,
        "spotlight_number": 1,
        "video_codec_type": "VP8",
        # libwebrtc sends 3 layers from 960x540 up (2 at 640x360, so no r2).
        "fake_video": {"width": 960, "height": 540, "fps": 15},
    }
    async with (
        official_client(role="sendrecv", name="first", **common) as first,
        official_client(role="sendrecv", name="second", **common) as second,
    ):
        await first.connect()
        offer = first.events("set_offer")[0]["message"]
        assert offer["spotlight"] is True and offer["simulcast"] is True
        assert [e["rid"] for e in offer["encodings"]] == ["r0", "r1", "r2"]
        await first.wait_for(
            "notify",
            lambda e: (
                e["message"].get("event_type") == "spotlight.focused"
                and e["message"].get("connection_id") == first.connection_id
            ),
        )
        await second.connect()
        await first.wait_for(
            "notify",
            lambda e: (
                e["message"].get("event_type") == "spotlight.unfocused"
                and e["message"].get("connection_id") == first.connection_id
            ),
        )
        await first.wait_for(
            "notify",
            lambda e: (
                e["message"].get("event_type") == "spotlight.focused"
                and e["message"].get("connection_id") == second.connection_id
            ),
        )
        # The focused sender reaches the other at its focus layer (r2, full size).
        frame = await first.wait_for(
            "video_frame",
            lambda e: e.get("stream_id") == second.connection_id and e["width"] >= 900,
            timeout=20,
        )
        assert frame["width"] == 960
        for client in (second, first):
            left = await client.disconnect()
            assert left["name"] == "CLOSE_SUCCEEDED"
