"""Joining and leaving a channel: notify events, counters, serial re-offers, bundle exclusion."""

from __future__ import annotations

import re
from datetime import datetime

from sora_async.devserver import DevServer

from .support import (
    DevServerStarter,
    FakePeerFactory,
    SignalingClient,
    answer_reoffers,
    connect_message,
    join,
    wait_gone,
)


def _subscribed(sdp: str) -> set[str]:
    match = re.search(r"a=x-fake-subscriptions:(.*)\r\n", sdp)
    assert match is not None
    return {item for item in match.group(1).split(",") if item}


async def test_first_joiner_sees_its_own_connection_created(server: DevServer) -> None:
    client = await join(server, role="recvonly", metadata={"k": "v"}, signaling_notify_metadata=[1])
    created = client.of_type("notify")[0]
    assert created["event_type"] == "connection.created"
    assert created["connection_id"] == client.connection_id
    assert created["data"] == []
    assert created["channel_connections"] == 1
    assert created["channel_recvonly_connections"] == 1
    assert created["channel_sendonly_connections"] == created["channel_sendrecv_connections"] == 0
    assert created["role"] == "recvonly"
    assert created["session_id"] == client.offer["session_id"]
    assert created["client_id"] == created["bundle_id"] == client.connection_id
    assert created["turn_transport_type"] == "udp"
    assert created["minutes"] == 0
    assert created["metadata"] == [1]
    assert created["authn_metadata"] == {"k": "v"}
    stamp = created["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")


async def test_a_sender_joining_is_offered_to_the_receiver_then_retired(
    server: DevServer, peers: FakePeerFactory
) -> None:
    viewer = await join(server, role="recvonly", client_id="viewer")
    camera = await join(server, role="sendonly", client_id="camera")
    own = camera.of_type("notify")[-1]
    assert own["connection_id"] == camera.connection_id
    assert own["data"] == [{"connection_id": viewer.connection_id, "client_id": "viewer"}]
    assert own["channel_connections"] == 2 and own["channel_sendonly_connections"] == 1

    created = await viewer.wait_notify("connection.created", connection_id=camera.connection_id)
    assert "data" not in created
    assert created["client_id"] == "camera" and created["channel_connections"] == 2
    (reoffer,) = await answer_reoffers(viewer)
    assert _subscribed(reoffer["sdp"]) == {
        f"{camera.connection_id}/audio",
        f"{camera.connection_id}/video",
    }
    viewer_peer = peers.peers[viewer.connection_id]
    await viewer_peer.wait(lambda: viewer_peer.log[-1] == "set_reanswer")
    assert viewer_peer.log[-2:] == ["create_reoffer", "set_reanswer"]
    # The camera receives nothing, so it is never re-offered.
    assert camera.of_type("re-offer") == []

    await camera.send({"type": "disconnect", "reason": "NO-ERROR"})
    assert await camera.wait_closed() == (1000, "TYPE-DISCONNECT")
    destroyed = await viewer.wait_notify("connection.destroyed")
    assert destroyed["connection_id"] == camera.connection_id
    assert destroyed["channel_connections"] == 1 and destroyed["channel_sendonly_connections"] == 0
    (retire,) = await answer_reoffers(viewer)
    assert _subscribed(retire["sdp"]) == set()


async def test_reoffers_wait_for_each_reanswer(server: DevServer, peers: FakePeerFactory) -> None:
    viewer = await join(server, role="recvonly")
    first = await join(server, role="sendonly")
    reoffer = await viewer.wait_type("re-offer")
    second = await join(server, role="sendonly")
    await viewer.wait_notify("connection.created", connection_id=second.connection_id)
    # The second sender's streams wait until the first re-offer is answered.
    assert len(viewer.of_type("re-offer")) == 1
    assert _subscribed(reoffer["sdp"]) == {
        f"{first.connection_id}/audio",
        f"{first.connection_id}/video",
    }
    await viewer.send({"type": "re-answer", "sdp": "v=0"})
    (next_offer,) = await answer_reoffers(viewer)
    assert _subscribed(next_offer["sdp"]) == {
        f"{first.connection_id}/audio",
        f"{first.connection_id}/video",
        f"{second.connection_id}/audio",
        f"{second.connection_id}/video",
    }
    peer = peers.peers[viewer.connection_id]
    await peer.wait(lambda: peer.log.count("set_reanswer") == 2)


async def test_a_late_joiner_gets_existing_senders_in_its_first_offer(
    server: DevServer, peers: FakePeerFactory
) -> None:
    camera = await join(server, role="sendonly")
    viewer = await join(server, role="recvonly", video=False)
    (subscriptions,) = peers.peers[viewer.connection_id].offers
    assert [(p.connection_id, p.kind) for p in subscriptions] == [(camera.connection_id, "audio")]
    assert server.connections[viewer.connection_id].subscriptions == (
        (camera.connection_id, "audio"),
    )


async def test_sendrecv_peers_receive_each_other(server: DevServer) -> None:
    alice = await join(server)
    bob = await join(server)
    (to_alice,) = await answer_reoffers(alice)
    assert _subscribed(to_alice["sdp"]) == {
        f"{bob.connection_id}/audio",
        f"{bob.connection_id}/video",
    }
    assert _subscribed(bob.offer["sdp"]) == {
        f"{alice.connection_id}/audio",
        f"{alice.connection_id}/video",
    }
    assert bob.of_type("notify")[-1]["channel_sendrecv_connections"] == 2


async def test_same_bundle_connections_do_not_see_each_other(server: DevServer) -> None:
    viewer = await join(server, role="recvonly", bundle_id="b1")
    twin = await join(server, role="sendonly", bundle_id="b1")
    stranger = await join(server, role="sendonly")
    created = await viewer.wait_notify("connection.created", connection_id=stranger.connection_id)
    assert created["channel_connections"] == 3, "counters count every connection"
    (reoffer,) = await answer_reoffers(viewer)
    assert _subscribed(reoffer["sdp"]) == {
        f"{stranger.connection_id}/audio",
        f"{stranger.connection_id}/video",
    }
    assert twin.of_type("notify")[-1]["data"] == [], "the twin's own data omits its bundle"
    notified = {m["connection_id"] for m in viewer.of_type("notify")}
    assert twin.connection_id not in notified


async def test_candidates_in_both_formats_reach_the_peer_after_the_answer(
    server: DevServer, peers: FakePeerFactory
) -> None:
    peers.auto_connect = False
    client = await SignalingClient.open(server.signaling_url)
    await client.send(connect_message())
    client.offer = await client.wait_type("offer")
    cpp = "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host"
    js = {
        "candidate": "candidate:2 1 udp 2122260222 192.0.2.1 54322 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": "abcd",
    }
    # A candidate racing ahead of the answer is held until the answer is applied.
    await client.send({"type": "candidate", "candidate": cpp})
    await client.send({"type": "answer", "sdp": "v=0"})
    await client.send({"type": "candidate", **js})
    await client.send({"type": "candidate", "candidate": ""})
    peer = peers.peers[client.connection_id]
    await peer.wait(lambda: len(peer.candidates) == 2)
    assert peer.candidates == [cpp, js["candidate"]]
    assert peer.log[:2] == ["create_offer", "set_answer"]
    peer.connect()
    await client.wait_notify("connection.created", connection_id=client.connection_id)


async def test_leaving_is_complete_and_the_channel_disappears(server: DevServer) -> None:
    client = await join(server, "solo")
    assert "solo" in server.registry.channels
    await client.send({"type": "disconnect", "reason": "NO-ERROR"})
    assert await client.wait_closed() == (1000, "TYPE-DISCONNECT")
    await wait_gone(server, client.connection_id)
    assert server.connections == {}
    assert server.registry.channels == {}


async def test_connection_updated_repeats_for_each_live_member(
    start_server: DevServerStarter,
) -> None:
    server = await start_server(connection_updated_interval=0.2)
    viewer = await join(server, role="recvonly", client_id="viewer", bundle_id="b1")
    camera = await join(server, role="sendonly", client_id="camera")
    twin = await join(server, role="recvonly", client_id="twin", bundle_id="b1")
    await answer_reoffers(viewer)

    # The viewer hears about the camera and about itself, with the channel's counters.
    for subject in (camera, viewer):
        first = await viewer.wait_notify("connection.updated", connection_id=subject.connection_id)
        assert first["minutes"] == 0 and first["channel_connections"] == 3
        assert first["role"] == ("sendonly" if subject is camera else "recvonly")
    updates = [
        m
        for m in viewer.of_type("notify")
        if m["event_type"] == "connection.updated" and m["connection_id"] == camera.connection_id
    ]
    assert updates and all(m["client_id"] == "camera" for m in updates)
    # Same bundle: never about each other.
    await twin.wait_notify("connection.updated", connection_id=camera.connection_id)
    assert not [
        m
        for m in viewer.of_type("notify")
        if m["event_type"] == "connection.updated" and m["connection_id"] == twin.connection_id
    ]

    await camera.send({"type": "disconnect", "reason": "NO-ERROR"})
    assert await camera.wait_closed() == (1000, "TYPE-DISCONNECT")
    await viewer.wait_notify("connection.destroyed", connection_id=camera.connection_id)
    gone_at = len(viewer.of_type("notify"))
    # Two more rounds about the viewer itself, none about the camera any more.
    for _ in range(2):
        await viewer.wait_type(
            "notify",
            event_type="connection.updated",
            connection_id=viewer.connection_id,
            channel_connections=2,
        )
    later = viewer.of_type("notify")[gone_at:]
    assert all(m["connection_id"] != camera.connection_id for m in later)


async def test_connection_updated_off(start_server: DevServerStarter) -> None:
    server = await start_server(connection_updated_interval=0)
    viewer = await join(server, role="recvonly")
    camera = await join(server, role="sendonly")
    await viewer.wait_notify("connection.created", connection_id=camera.connection_id)
    await answer_reoffers(viewer)
    assert all(m["event_type"] != "connection.updated" for m in viewer.of_type("notify"))
