"""The offer carries every field the official clients read; the media plane gets its job."""

from __future__ import annotations

from typing import Any

from sora_async.devserver import DevServer, default_simulcast_encodings, encode_jwt
from sora_async.devserver.ids import is_id

from .support import DevServerStarter, FakePeerFactory, SignalingClient, connect_message, join


async def _offer_for(server: DevServer, **fields: Any) -> dict[str, Any]:
    client = await SignalingClient.open(server.signaling_url)
    await client.send(connect_message(**fields))
    offer = await client.wait_type("offer")
    await client.close()
    return offer


def _has_no_null(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, dict):
        return all(_has_no_null(v) for v in value.values())
    if isinstance(value, list):
        return all(_has_no_null(v) for v in value)
    return True


async def test_recvonly_offer_has_every_required_field(server: DevServer) -> None:
    offer = await _offer_for(server, role="recvonly", channel_id="room")
    assert is_id(offer["connection_id"])
    assert offer["client_id"] == offer["bundle_id"] == offer["connection_id"]
    assert is_id(offer["session_id"])
    assert offer["channel_id"] == "room"
    assert offer["config"] == {"iceServers": []}
    assert offer["simulcast"] is False
    assert offer["spotlight"] is False
    assert offer["audio"] is True and offer["video"] is True
    assert offer["video_codec_type"] == "VP9"
    assert offer["audio_codec_type"] == "OPUS"
    assert offer["version"].endswith("-devserver")
    assert offer["data_channel_signaling"] is False
    assert offer["ignore_disconnect_websocket"] is False
    assert offer["sdp"].startswith("v=0")
    # Not a sender: no mid; not DataChannel signaling: no data_channels; no auth: no metadata.
    assert "mid" not in offer and "data_channels" not in offer and "metadata" not in offer
    assert _has_no_null(offer)


async def test_sender_offer_has_mids_and_the_requested_codecs(
    server: DevServer, peers: FakePeerFactory
) -> None:
    offer = await _offer_for(
        server,
        role="sendonly",
        client_id="camera-1",
        bundle_id="bundle-1",
        audio={"codec_type": "OPUS", "bit_rate": 64},
        video={"codec_type": "AV1", "bit_rate": 1500},
    )
    assert offer["mid"] == {"audio": "0", "video": "1"}
    assert offer["client_id"] == "camera-1" and offer["bundle_id"] == "bundle-1"
    assert offer["video_codec_type"] == "AV1" and offer["video_bit_rate"] == 1500
    assert offer["audio_bit_rate"] == 64
    assert "encodings" not in offer
    peer = peers.peers[offer["connection_id"]]
    assert peer.kwargs == {
        "send_audio": True,
        "send_video": True,
        "recv_audio": False,
        "recv_video": False,
        "audio_codec": "OPUS",
        "video_codec": "AV1",
        "video_bit_rate": 1500,
        "simulcast": False,
        "encodings": None,
    }


async def test_audio_only_sender_gets_an_audio_mid_only(
    server: DevServer, peers: FakePeerFactory
) -> None:
    offer = await _offer_for(server, role="sendrecv", video=False)
    assert offer["mid"] == {"audio": "0"}
    assert offer["video"] is False and "video_codec_type" not in offer
    kwargs = peers.peers[offer["connection_id"]].kwargs
    assert kwargs["send_video"] is False and kwargs["recv_video"] is False
    assert kwargs["send_audio"] is True and kwargs["recv_audio"] is True


async def test_simulcast_sender_gets_default_encodings_in_rid_order(
    server: DevServer, peers: FakePeerFactory
) -> None:
    offer = await _offer_for(server, role="sendonly", simulcast=True, video={"bit_rate": 3000})
    assert offer["simulcast"] is True
    assert [e["rid"] for e in offer["encodings"]] == ["r0", "r1", "r2"]
    assert [e["scaleResolutionDownBy"] for e in offer["encodings"]] == [4.0, 2.0, 1.0]
    assert offer["encodings"] == default_simulcast_encodings(3000)
    assert sum(e["maxBitrate"] for e in offer["encodings"]) == 3_000_000
    peer = peers.peers[offer["connection_id"]]
    assert peer.kwargs["simulcast"] is True
    assert peer.kwargs["encodings"] == offer["encodings"]


async def test_simulcast_receiver_gets_no_encodings(server: DevServer) -> None:
    offer = await _offer_for(server, role="recvonly", simulcast=True)
    assert offer["simulcast"] is True
    assert "encodings" not in offer


async def test_data_channel_signaling_offer_lists_every_label(
    server: DevServer, peers: FakePeerFactory
) -> None:
    offer = await _offer_for(
        server,
        data_channel_signaling=True,
        ignore_disconnect_websocket=True,
        data_channels=[
            {"label": "signaling", "direction": "sendrecv", "compress": True},
            {
                "label": "#chat",
                "direction": "sendonly",
                "ordered": False,
                "max_retransmits": 0,
                "protocol": "text",
                "header": [{"type": "sender_connection_id"}],
            },
            {
                "label": "#bin",
                "direction": "recvonly",
                "compress": True,
                "max_packet_life_time": 50,
            },
        ],
    )
    assert offer["data_channel_signaling"] is True
    assert offer["ignore_disconnect_websocket"] is True
    assert offer["data_channels"] == [
        {"label": "signaling", "direction": "sendrecv", "compress": True},
        {"label": "notify", "direction": "recvonly", "compress": False},
        {"label": "push", "direction": "recvonly", "compress": False},
        {"label": "stats", "direction": "sendrecv", "compress": False},
        {
            "label": "#chat",
            "direction": "sendonly",
            "compress": False,
            "header": [{"type": "sender_connection_id"}],
        },
        {"label": "#bin", "direction": "recvonly", "compress": True},
    ]
    assert _has_no_null(offer)
    specs = {spec.label: spec for spec in peers.peers[offer["connection_id"]].data_channels}
    assert specs["#chat"].ordered is False and specs["#chat"].max_retransmits == 0
    assert specs["#chat"].protocol == "text"
    assert specs["#bin"].max_packet_life_time == 50 and specs["#bin"].compress is True


async def test_session_id_is_shared_in_a_channel_and_renewed_after_it_empties(
    server: DevServer,
) -> None:
    first = await join(server, "room")
    second = await join(server, "room")
    other = await join(server, "elsewhere")
    assert first.offer["session_id"] == second.offer["session_id"]
    assert other.offer["session_id"] != first.offer["session_id"]
    old_session_id = first.offer["session_id"]
    for client in (first, second):
        await client.send({"type": "disconnect", "reason": "NO-ERROR"})
        await client.wait_closed()
    again = await join(server, "room")
    assert again.offer["session_id"] != old_session_id


async def test_configured_ice_servers_are_offered(start_server: DevServerStarter) -> None:
    ice = {"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "p"}
    server = await start_server(ice_servers=(ice,))
    offer = await _offer_for(server)
    assert offer["config"] == {"iceServers": [ice]}


async def test_access_token_metadata_claim_is_the_offer_metadata(
    start_server: DevServerStarter,
) -> None:
    server = await start_server(secret="k")
    token = encode_jwt({"channel_id": "ch", "metadata": {"plan": "dev"}}, "k")
    offer = await _offer_for(server, metadata={"access_token": token})
    assert offer["metadata"] == {"plan": "dev"}
