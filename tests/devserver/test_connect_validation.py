"""Bad input on the signaling WebSocket gets a 4490 close with a reason; the server goes on."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sora_async.devserver import DevServer

from .support import SignalingClient, connect_message, join

BAD_CONNECTS: list[tuple[str, Any]] = [
    ("not JSON", "{nope"),
    ("JSON array", "[1, 2]"),
    ("JSON string", '"connect"'),
    ("binary frame", b'{"type":"connect","role":"sendrecv","channel_id":"ch"}'),
    ("missing type", {"role": "sendrecv", "channel_id": "ch"}),
    ("non-string type", {"type": 1, "role": "sendrecv", "channel_id": "ch"}),
    ("first message not connect", {"type": "answer", "sdp": "v=0"}),
    ("pong before connect", {"type": "pong"}),
    ("missing role", {"type": "connect", "channel_id": "ch"}),
    ("legacy role", connect_message(role="upstream")),
    ("unknown role", connect_message(role="publisher")),
    ("missing channel_id", {"type": "connect", "role": "sendrecv"}),
    ("empty channel_id", connect_message(channel_id="")),
    ("numeric channel_id", connect_message(channel_id=5)),
    ("channel_id over 255 bytes", connect_message(channel_id="x" * 256)),
    ("client_id over 255 bytes", connect_message(client_id="é" * 128)),
    ("bundle_id not a string", connect_message(bundle_id=["b"])),
    (
        "recvonly without audio and video",
        connect_message(role="recvonly", audio=False, video=False),
    ),
    ("audio is a string", connect_message(audio="yes")),
    ("unknown video codec", connect_message(video={"codec_type": "MPEG2"})),
    ("unknown audio codec", connect_message(audio={"codec_type": "LYRA"})),
    ("negative bit rate", connect_message(video={"bit_rate": -1})),
    ("focus rid without spotlight", connect_message(spotlight_focus_rid="r2")),
    ("bad simulcast_request_rid", connect_message(simulcast_request_rid="r9")),
    ("simulcast not a boolean", connect_message(simulcast="true")),
    ("redirect false", connect_message(redirect=False)),
    ("data_channels not a list", connect_message(data_channel_signaling=True, data_channels={})),
    (
        "messaging label without #",
        connect_message(data_channels=[{"label": "chat", "direction": "sendrecv"}]),
    ),
    ("messaging label without direction", connect_message(data_channels=[{"label": "#chat"}])),
    (
        "duplicate label",
        connect_message(
            data_channels=[
                {"label": "#a", "direction": "sendrecv"},
                {"label": "#a", "direction": "recvonly"},
            ]
        ),
    ),
    (
        "lifetime and retransmits",
        connect_message(
            data_channels=[
                {
                    "label": "#a",
                    "direction": "sendrecv",
                    "max_packet_life_time": 10,
                    "max_retransmits": 1,
                }
            ]
        ),
    ),
    (
        "unknown header",
        connect_message(
            data_channels=[{"label": "#a", "direction": "sendrecv", "header": [{"type": "x"}]}]
        ),
    ),
]


async def _assert_refused(server: DevServer, frame: Any) -> None:
    client = await SignalingClient.open(server.signaling_url)
    if isinstance(frame, dict):
        frame = json.dumps(frame)
    await client.send_raw(frame)
    code, reason = await client.wait_closed()
    assert (code, reason) == (4490, "INVALID-MESSAGE")
    assert client.received == [], "nothing is sent before refusing"


@pytest.mark.parametrize(("case", "frame"), BAD_CONNECTS, ids=[case for case, _ in BAD_CONNECTS])
async def test_bad_connect_is_refused_with_4490_and_the_server_goes_on(
    server: DevServer, case: str, frame: Any
) -> None:
    await _assert_refused(server, frame)
    good = await join(server, "after-" + case.replace(" ", "-"))
    assert good.offer["type"] == "offer"
    assert server.connections[good.connection_id].state == "connected"
    await good.close()


async def test_oversized_message_is_refused_with_4490(start_server: Any) -> None:
    server = await start_server(max_message_size=4096)
    await _assert_refused(server, json.dumps(connect_message(metadata={"blob": "x" * 5000})))
    good = await join(server)
    await good.close()


async def test_invalid_utf8_text_is_refused_with_4490(server: DevServer) -> None:
    # websockets refuses to send invalid UTF-8 as text; write the frame by hand.
    client = await SignalingClient.open(server.signaling_url)
    frame = bytes([0x81, 0x80 | 2]) + b"\x00\x00\x00\x00" + b"\xff\xfe"
    client.ws.transport.write(frame)
    code, reason = await client.wait_closed()
    assert (code, reason) == (4490, "INVALID-MESSAGE")


async def test_no_connect_in_time_closes_with_timeout(start_server: Any) -> None:
    server = await start_server(signaling_timeout=0.3)
    client = await SignalingClient.open(server.signaling_url)
    assert await client.wait_closed() == (4490, "TIMEOUT")


async def test_no_answer_in_time_closes_with_timeout(start_server: Any) -> None:
    server = await start_server(signaling_timeout=0.5)
    client = await SignalingClient.open(server.signaling_url)
    await client.send(connect_message())
    await client.wait_type("offer")
    assert await client.wait_closed() == (4490, "TIMEOUT")
    assert server.connections == {}


async def test_junk_after_the_offer_is_refused(server: DevServer) -> None:
    client = await SignalingClient.open(server.signaling_url)
    await client.send(connect_message())
    await client.wait_type("offer")
    await client.send_raw("not json")
    assert await client.wait_closed() == (4490, "INVALID-MESSAGE")


async def test_second_connect_is_refused(server: DevServer) -> None:
    client = await join(server)
    await client.send(connect_message())
    assert await client.wait_closed() == (4490, "INVALID-MESSAGE")


async def test_unknown_message_types_are_ignored(server: DevServer) -> None:
    client = await join(server)
    await client.send({"type": "something-new", "x": 1})
    await client.send({"type": "disconnect", "reason": "NO-ERROR"})
    assert await client.wait_closed() == (1000, "TYPE-DISCONNECT")
