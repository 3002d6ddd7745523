"""The HTTP API: ``POST /api`` with ``x-sora-target``."""

from __future__ import annotations

from typing import Any

import aiohttp

from sora_async.devserver import DevServer

from .support import STEP, FakePeerFactory, answer_reoffers, join


async def post(
    server: DevServer, target: str | None, body: Any, *, raw: bytes | None = None
) -> tuple[int, Any]:
    headers = {"x-sora-target": target} if target is not None else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=STEP)) as http:
        if raw is not None:
            request = http.post(server.api_url, data=raw, headers=headers)
        else:
            request = http.post(server.api_url, json=body, headers=headers)
        async with request as response:
            assert response.content_type == "application/json"
            return response.status, await response.json()


async def test_unknown_or_missing_target_is_400(server: DevServer) -> None:
    status, body = await post(server, "Sora_20991231.DoMagic", {})
    assert status == 400 and body["error_type"] == "UNKNOWN-TARGET"
    status, body = await post(server, None, {})
    assert status == 400 and body["error_type"] == "UNKNOWN-TARGET"


async def test_bad_json_is_400(server: DevServer) -> None:
    target = "Sora_20201013.ListChannelConnections"
    status, body = await post(server, target, None, raw=b"{not json")
    assert status == 400 and body["error_type"] == "INVALID-JSON"
    status, body = await post(server, target, [1, 2])
    assert status == 400 and body["error_type"] == "INVALID-JSON"
    status, body = await post(server, target, {"channel_id": 7})
    assert status == 400 and body["error_type"] == "INVALID-PARAMETER"


async def test_unknown_connection_is_404(server: DevServer) -> None:
    for target in (
        "Sora_20151104.DisconnectConnection",
        "Sora_20160711.PushConnection",
        "Sora_20170529.GetStatsConnection",
        "Sora_20241218.RequestKeyFrame",
    ):
        status, body = await post(
            server, target, {"channel_id": "ch", "connection_id": "X" * 26, "data": {}}
        )
        assert status == 404, target
        assert body["error_type"] == "CONNECTION-NOT-FOUND"


async def test_list_channel_connections(server: DevServer) -> None:
    target = "Sora_20201013.ListChannelConnections"
    assert await post(server, target, {"channel_id": "ch"}) == (200, [])
    viewer = await join(server, role="recvonly", client_id="viewer")
    camera = await join(server, role="sendonly", signaling_notify_metadata={"name": "cam"})
    await join(server, channel_id="other")
    status, body = await post(server, target, {"channel_id": "ch"})
    assert status == 200
    assert [entry["connection_id"] for entry in body] == [
        viewer.connection_id,
        camera.connection_id,
    ]
    assert body[0]["client_id"] == "viewer" and body[0]["role"] == "recvonly"
    assert body[1]["metadata"] == {"name": "cam"}
    assert body[1]["session_id"] == camera.offer["session_id"]


async def test_push_channel_and_connection(server: DevServer) -> None:
    first = await join(server)
    second = await join(server)
    status, body = await post(
        server, "Sora_20160711.PushChannel", {"channel_id": "ch", "data": {"all": True}}
    )
    assert (status, body) == (200, {})
    for client in (first, second):
        assert await client.wait_type("push") == {"type": "push", "data": {"all": True}}
    status, _ = await post(
        server,
        "Sora_20160711.PushConnection",
        {"channel_id": "ch", "connection_id": second.connection_id, "data": ["one"]},
    )
    assert status == 200
    assert await second.wait_type("push") == {"type": "push", "data": ["one"]}
    status, body = await post(server, "Sora_20160711.PushChannel", {"channel_id": "ch"})
    assert status == 400 and body["error_type"] == "INVALID-PARAMETER"


async def test_request_key_frame_reaches_the_sender(
    server: DevServer, peers: FakePeerFactory
) -> None:
    camera = await join(server, role="sendonly")
    viewer = await join(server, role="recvonly")
    target = "Sora_20241218.RequestKeyFrame"
    ids = {"channel_id": "ch", "connection_id": camera.connection_id}
    assert await post(server, target, ids) == (200, {})
    assert await post(server, target, {**ids, "rid": "r1"}) == (200, {})
    assert peers.peers[camera.connection_id].keyframe_calls == [None, "r1"]
    status, _ = await post(server, target, {**ids, "rid": "r7"})
    assert status == 400
    status, _ = await post(server, target, {**ids, "connection_id": viewer.connection_id})
    assert status == 400


async def test_get_stats_connection_returns_the_peer_stats(server: DevServer) -> None:
    client = await join(server)
    status, body = await post(
        server,
        "Sora_20170529.GetStatsConnection",
        {"channel_id": "ch", "connection_id": client.connection_id},
    )
    assert status == 200
    assert body == [{"id": "T01", "type": "transport", "timestamp": 0.0}]


async def test_request_simulcast_rid_switches_and_notifies(
    server: DevServer, peers: FakePeerFactory
) -> None:
    camera = await join(server, role="sendonly", simulcast=True)
    viewer = await join(server, role="recvonly", simulcast=True)
    viewer_peer = peers.peers[viewer.connection_id]
    target = "Sora_20251217.RequestSimulcastRid"
    body = {
        "channel_id": "ch",
        "receiver_connection_id": viewer.connection_id,
        "sender_connection_id": camera.connection_id,
        "rid": "r2",
    }
    assert await post(server, target, body) == (200, {})
    assert viewer_peer.rid_calls == [(camera.connection_id, "r2")]
    switched = await viewer.wait_notify("simulcast.switched")
    assert switched["sender_connection_id"] == camera.connection_id
    assert switched["request_rid"] == switched["current_rid"] == "r2"
    assert switched["previous_rid"] == "r0"

    # Without a sender it applies to every sender.
    del body["sender_connection_id"]
    body["rid"] = "r1"
    assert await post(server, target, body) == (200, {})
    assert viewer_peer.rid_calls[-1] == (None, "r1")
    switched = await viewer.wait_notify("simulcast.switched")
    assert switched["previous_rid"] == "r2" and switched["current_rid"] == "r1"

    # With media flowing, the notify waits for the switch and names the layer it got.
    viewer_peer.switch_layer(camera.connection_id, "r1")
    body["rid"] = "r2"
    assert await post(server, target, body) == (200, {})
    # (the next notify is the one below: none was sent before the media switched)
    viewer_peer.switch_layer(camera.connection_id, "r1")  # no change: no notify
    viewer_peer.switch_layer(camera.connection_id, "r0")  # r2 is not sent: a lower layer
    switched = await viewer.wait_notify("simulcast.switched")
    assert (switched["request_rid"], switched["current_rid"], switched["previous_rid"]) == (
        "r2",
        "r0",
        "r1",
    ), switched

    status, error = await post(server, target, {**body, "rid": "r5"})
    assert status == 400 and error["error_type"] == "INVALID-PARAMETER"
    status, _ = await post(server, target, {**body, "sender_connection_id": "Z" * 26})
    assert status == 404


async def test_simulcast_request_rid_applies_to_later_senders(
    server: DevServer, peers: FakePeerFactory
) -> None:
    viewer = await join(server, role="recvonly", simulcast_request_rid="r1")
    camera = await join(server, role="sendonly", simulcast=True)
    await answer_reoffers(viewer)
    peer = peers.peers[viewer.connection_id]
    await peer.wait(lambda: (camera.connection_id, "r1") in peer.rid_calls)
    plain = await join(server, role="sendonly")
    await answer_reoffers(viewer)
    await peer.wait(lambda: peer.log.count("set_reanswer") == 2)
    assert all(sender != plain.connection_id for sender, _ in peer.rid_calls)


async def test_disconnect_channel_closes_every_connection(server: DevServer) -> None:
    clients = [await join(server) for _ in range(2)]
    status, _ = await post(server, "Sora_20151104.DisconnectChannel", {"channel_id": "ch"})
    assert status == 200
    for client in clients:
        assert await client.wait_closed() == (1000, "DISCONNECTED-API")


async def test_get_is_not_allowed(server: DevServer) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=STEP)) as http:
        async with http.get(server.api_url) as response:
            assert response.status == 405
