"""Keep-alive and every way a connection ends, over WebSocket and over DataChannels."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from sora_async.devserver import DevServer

from .support import (
    STEP,
    DevServerStarter,
    FakePeer,
    FakePeerFactory,
    SignalingClient,
    join,
    wait_gone,
)

DC_ONLY: dict[str, Any] = {"data_channel_signaling": True, "ignore_disconnect_websocket": True}
HYBRID: dict[str, Any] = {"data_channel_signaling": True, "ignore_disconnect_websocket": False}


async def api(server: DevServer, target: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=STEP)) as http:
        async with http.post(server.api_url, json=body, headers={"x-sora-target": target}) as r:
            return r.status, await r.json()


async def disconnect_api(
    server: DevServer, client: SignalingClient, channel_id: str = "ch"
) -> None:
    status, body = await api(
        server,
        "Sora_20151104.DisconnectConnection",
        {"channel_id": channel_id, "connection_id": client.connection_id},
    )
    assert (status, body) == (200, {})


async def switched(
    server: DevServer, peers: FakePeerFactory, **fields: Any
) -> tuple[SignalingClient, FakePeer]:
    client = await join(server, **fields)
    message = await client.wait_type("switched")
    assert message == {
        "type": "switched",
        "ignore_disconnect_websocket": fields["ignore_disconnect_websocket"],
    }
    return client, peers.peers[client.connection_id]


# -- keep-alive ----------------------------------------------------------------


async def test_pings_alternate_stats_and_are_answered(start_server: DevServerStarter) -> None:
    server = await start_server(ping_interval=0.1)
    client = await join(server)
    first = await client.wait_type("ping")
    await client.send({"type": "pong"})
    second = await client.wait_type("ping")
    await client.send({"type": "pong", "stats": []})
    third = await client.wait_type("ping")
    assert [first["stats"], second["stats"], third["stats"]] == [False, True, False]
    await client.send({"type": "pong"})
    assert server.connections[client.connection_id].state == "connected"


async def test_a_missing_pong_closes_with_timeout(start_server: DevServerStarter) -> None:
    server = await start_server(ping_interval=0.1)
    client = await join(server)
    assert await client.wait_closed() == (4490, "TIMEOUT")
    assert client.of_type("ping")


async def test_pings_stop_after_the_switch(
    start_server: DevServerStarter, peers: FakePeerFactory
) -> None:
    server = await start_server(ping_interval=0.1)
    client, peer = await switched(server, peers, **HYBRID)
    # No pong is ever sent, yet the session lives on: pings stopped at the switch
    # and req-stats go to DataChannel "stats" instead.
    await peer.wait_sent_json("stats", lambda m: m == {"type": "req-stats"})
    await peer.wait_sent_json(
        "stats", lambda m: m == {"type": "req-stats"} and len(peer.sent_on("stats")) >= 2
    )
    assert server.connections[client.connection_id].state == "connected"
    switch_at = client.received.index(client.of_type("switched")[0])
    assert all(m["type"] != "ping" for m in client.received[switch_at:])
    peer.client_sends_json("stats", {"type": "stats", "reports": [{"id": "x"}]})
    await peer.wait(
        lambda: server.registry.sessions[client.connection_id].last_stats == [{"id": "x"}]
    )


# -- WebSocket-only endings ------------------------------------------------------


async def test_client_disconnect_closes_1000_type_disconnect(
    server: DevServer, peers: FakePeerFactory
) -> None:
    client = await join(server)
    await client.send({"type": "disconnect", "reason": "NO-ERROR"})
    assert await client.wait_closed() == (1000, "TYPE-DISCONNECT")
    await wait_gone(server, client.connection_id)
    assert peers.peers[client.connection_id].closed


async def test_disconnect_api_closes_1000_disconnected_api(server: DevServer) -> None:
    client = await join(server)
    await disconnect_api(server, client)
    assert await client.wait_closed() == (1000, "DISCONNECTED-API")


async def test_lifetime_expiry_closes_1000_lifetime_expired(start_server: DevServerStarter) -> None:
    server = await start_server(connection_lifetime=0.2)
    client = await join(server)
    assert await client.wait_closed() == (1000, "LIFETIME-EXPIRED")


async def test_a_lost_websocket_ends_the_session(server: DevServer, peers: FakePeerFactory) -> None:
    watcher = await join(server, role="recvonly")
    client = await join(server)
    await client.close()
    await wait_gone(server, client.connection_id)
    await watcher.wait_notify("connection.destroyed", connection_id=client.connection_id)
    assert peers.peers[client.connection_id].closed


async def test_a_failed_peer_connection_ends_the_session(
    server: DevServer, peers: FakePeerFactory
) -> None:
    client = await join(server)
    peers.peers[client.connection_id].emit("connectionstatechange", "failed")
    assert await client.wait_closed() == (4490, "INTERNAL-ERROR")


# -- DataChannel signaling ----------------------------------------------------------


async def test_switch_moves_notify_push_and_reoffers_to_data_channels(
    server: DevServer, peers: FakePeerFactory
) -> None:
    client, peer = await switched(server, peers, **HYBRID)
    assert server.connections[client.connection_id].switched
    camera = await join(server, role="sendonly")
    created = await peer.wait_sent_json(
        "notify", lambda m: m["connection_id"] == camera.connection_id
    )
    assert created["event_type"] == "connection.created"
    reoffer = await peer.wait_sent_json("signaling", lambda m: m["type"] == "re-offer")
    assert camera.connection_id in reoffer["sdp"]
    peer.client_sends_json("signaling", {"type": "re-answer", "sdp": "v=0"})
    await peer.wait(lambda: peer.log[-1] == "set_reanswer")
    status, _ = await api(
        server,
        "Sora_20160711.PushConnection",
        {"channel_id": "ch", "connection_id": client.connection_id, "data": {"n": 1}},
    )
    assert status == 200
    assert await peer.wait_sent_json("push", lambda m: True) == {"type": "push", "data": {"n": 1}}
    assert [m["type"] for m in client.received].count("re-offer") == 0
    assert [m["type"] for m in client.received if m["type"] in ("notify", "push")] == ["notify"]


async def test_switch_waits_for_every_data_channel(
    server: DevServer, peers: FakePeerFactory
) -> None:
    peers.auto_open_data_channels = False
    client = await join(server, **DC_ONLY)
    peer = peers.peers[client.connection_id]
    for spec in peer.data_channels[:-1]:
        peer.open_labels.add(spec.label)
        peer.emit("datachannel_open", spec.label)
    await client.send({"type": "pong"})  # a round trip: nothing was sent meanwhile
    assert client.of_type("switched") == []
    peer.open_labels.add(peer.data_channels[-1].label)
    peer.emit("datachannel_open", peer.data_channels[-1].label)
    assert await client.wait_type("switched") == {
        "type": "switched",
        "ignore_disconnect_websocket": True,
    }


async def test_compressed_labels_carry_zlib_binary(
    server: DevServer, peers: FakePeerFactory
) -> None:
    _client, peer = await switched(
        server,
        peers,
        **HYBRID,
        data_channels=[
            {"label": "signaling", "direction": "sendrecv", "compress": True},
            {"label": "notify", "direction": "recvonly", "compress": True},
        ],
    )
    await join(server, role="sendonly")
    await peer.wait_sent_json("notify", lambda m: m["event_type"] == "connection.created")
    reoffer = await peer.wait_sent_json("signaling", lambda m: m["type"] == "re-offer")
    assert reoffer["sdp"]
    assert all(
        isinstance(data, bytes) for data in peer.sent_on("notify") + peer.sent_on("signaling")
    )
    # The client answers compressed too; the server inflates it.
    peer.client_sends_json("signaling", {"type": "re-answer", "sdp": "v=0"})
    await peer.wait(lambda: peer.log[-1] == "set_reanswer")


async def test_dc_only_session_survives_the_websocket(
    server: DevServer, peers: FakePeerFactory
) -> None:
    client, peer = await switched(server, peers, **DC_ONLY)
    await client.close()
    await asyncio.wait_for(client.ws.wait_closed(), STEP)
    camera = await join(server, role="sendonly")
    await peer.wait_sent_json("notify", lambda m: m.get("connection_id") == camera.connection_id)
    info = server.connections[client.connection_id]
    assert info.state == "connected" and not info.websocket_open


async def test_hybrid_session_ends_with_its_websocket(
    server: DevServer, peers: FakePeerFactory
) -> None:
    client, peer = await switched(server, peers, **HYBRID)
    await client.close()
    await wait_gone(server, client.connection_id)
    assert peer.data_channels_closed and peer.closed


async def test_disconnect_over_data_channel_with_websocket_open(
    server: DevServer, peers: FakePeerFactory
) -> None:
    client, peer = await switched(server, peers, **HYBRID)
    peer.client_sends_json("signaling", {"type": "disconnect", "reason": "NO-ERROR"})
    assert await client.wait_closed() == (1000, "TYPE-DISCONNECT")
    assert peer.log.index("close_data_channels") < peer.log.index("close")
    await wait_gone(server, client.connection_id)


async def test_disconnect_over_websocket_closes_data_channels_first(
    server: DevServer, peers: FakePeerFactory
) -> None:
    client = await join(server, **HYBRID)
    peer = peers.peers[client.connection_id]
    await client.send({"type": "disconnect", "reason": "NO-ERROR"})
    assert await client.wait_closed() == (1000, "TYPE-DISCONNECT")
    assert peer.data_channels_closed


async def test_disconnect_over_data_channel_in_dc_only_mode(
    server: DevServer, peers: FakePeerFactory
) -> None:
    client, peer = await switched(server, peers, **DC_ONLY)
    await client.close()
    peer.client_sends_json("signaling", {"type": "disconnect", "reason": "NO-ERROR"})
    await wait_gone(server, client.connection_id)
    assert peer.data_channels_closed and peer.closed
    assert not any(m["type"] == "close" for m in peer.sent_json("signaling"))


async def test_api_kick_in_hybrid_mode_uses_the_websocket(
    server: DevServer, peers: FakePeerFactory
) -> None:
    client, peer = await switched(server, peers, **HYBRID)
    await disconnect_api(server, client)
    assert await client.wait_closed() == (1000, "DISCONNECTED-API")
    await wait_gone(server, client.connection_id)
    assert peer.data_channels_closed


async def test_api_kick_in_dc_only_mode_sends_close_when_enabled(
    start_server: DevServerStarter, peers: FakePeerFactory
) -> None:
    server = await start_server(data_channel_signaling_close_message=True)
    client, peer = await switched(server, peers, **DC_ONLY)
    await client.close()
    await disconnect_api(server, client)
    await wait_gone(server, client.connection_id)
    assert peer.sent_json("signaling")[-1] == {
        "type": "close",
        "code": 1000,
        "reason": "DISCONNECTED-API",
    }
    assert peer.log.index("close_data_channels") < peer.log.index("close")


async def test_api_kick_in_dc_only_mode_just_closes_data_channels_by_default(
    server: DevServer, peers: FakePeerFactory
) -> None:
    client, peer = await switched(server, peers, **DC_ONLY)
    await client.close()
    await disconnect_api(server, client)
    await wait_gone(server, client.connection_id)
    assert peer.data_channels_closed
    assert peer.sent_on("signaling") == []


async def test_lifetime_in_dc_only_mode_sends_close_when_enabled(
    start_server: DevServerStarter, peers: FakePeerFactory
) -> None:
    server = await start_server(data_channel_signaling_close_message=True, connection_lifetime=0.3)
    client, peer = await switched(server, peers, **DC_ONLY)
    await client.close()
    await wait_gone(server, client.connection_id)
    assert peer.sent_json("signaling")[-1]["reason"] == "LIFETIME-EXPIRED"


async def test_writing_on_notify_is_fatal(server: DevServer, peers: FakePeerFactory) -> None:
    client, peer = await switched(server, peers, **HYBRID)
    peer.client_sends("notify", "hello")
    assert await client.wait_closed() == (4490, "INTERNAL-ERROR")


async def test_junk_on_signaling_is_fatal(server: DevServer, peers: FakePeerFactory) -> None:
    client, peer = await switched(server, peers, **HYBRID)
    peer.client_sends("signaling", b"\x00\x01 not json")
    assert await client.wait_closed() == (4490, "INTERNAL-ERROR")


async def test_closing_the_signaling_channel_ends_a_dc_only_session(
    server: DevServer, peers: FakePeerFactory
) -> None:
    client, peer = await switched(server, peers, **DC_ONLY)
    await client.close()
    peer.open_labels.discard("signaling")
    peer.emit("datachannel_close", "signaling")
    await wait_gone(server, client.connection_id)


async def test_stop_closes_everything_with_1001(
    start_server: DevServerStarter, peers: FakePeerFactory
) -> None:
    server = await start_server()
    clients = [await join(server) for _ in range(3)]
    dc_only, _peer = await switched(server, peers, **DC_ONLY)
    await dc_only.close()
    waiting = await SignalingClient.open(server.signaling_url)
    await asyncio.wait_for(server.stop(), STEP)
    for client in [*clients, waiting]:
        code, _reason = await client.wait_closed()
        assert code == 1001
    assert all(peer.closed for peer in peers.peers.values())
    assert server.connections == {}
    current = asyncio.current_task()
    assert [t for t in asyncio.all_tasks() if t is not current and not t.done()] == []
