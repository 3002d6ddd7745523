"""Hostile or broken signaling servers never crash or hang the client.

Each case is a small websockets server that misbehaves on purpose (the dev
server for the DataChannel cases). Every case ends in exactly one
``disconnect`` with the expected code and a message naming the problem,
``connect()`` raises or returns accordingly, nothing is logged at ERROR (no
exception escaped anywhere), and a bystander connection to a healthy dev
server in the same process keeps working throughout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Response

from sora_async import Connection, DisconnectCode, SoraConnectionError
from sora_async.devserver import DevServer
from sora_async.signaling import State
from sora_async.websocket import MAX_MESSAGE_SIZE
from tests.security_support import MODES, Events, HostileServer, raw_tcp_server, silent

pytestmark = pytest.mark.timeout(60)

#: Timeouts short enough for a test, long enough for a loaded 2-core machine.
FAST = {"websocket_close_timeout": 1.0, "disconnect_wait_timeout": 1.0}


@pytest.fixture
async def bystander(sora_devserver: DevServer) -> AsyncIterator[Connection]:
    """A healthy connection in the same process; it must survive every hostile case."""
    conn = Connection(sora_devserver.signaling_url, "recvonly", "bystander")
    events = Events(conn)
    async with asyncio.timeout(20):
        await conn.connect()
    yield conn
    assert conn.state is State.CONNECTED_WS, conn.disconnect_message
    async with (
        asyncio.timeout(10),
        aiohttp.ClientSession() as session,
        session.post(
            sora_devserver.api_url,
            headers={"x-sora-target": "Sora_20160711.PushChannel"},
            json={"channel_id": "bystander", "data": {"still": "alive"}},
        ) as response,
    ):
        assert response.status == 200
    await events.wait("push", lambda m: m["data"] == {"still": "alive"})
    async with asyncio.timeout(10):
        await conn.disconnect()
    assert conn.disconnect_code is DisconnectCode.CLOSE_SUCCEEDED


@pytest.fixture(autouse=True)
def no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Nothing at ERROR or above: no exception escaped into a task or a callback."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def run_against(
    scenario: Callable[[HostileServer, ServerConnection], Awaitable[None]],
    *,
    connected: bool = False,
    **keywords: Any,
) -> tuple[Connection, Events, HostileServer]:
    """Connect to a server playing ``scenario``; return once the connection ended."""
    async with HostileServer(scenario) as server:
        conn = Connection(server.url, "recvonly", "hostile", **{**FAST, **keywords})
        events = Events(conn)
        async with asyncio.timeout(30):
            if connected:
                await conn.connect()
            else:
                with pytest.raises(SoraConnectionError) as failure:
                    await conn.connect()
                assert (failure.value.code, failure.value.message) == (
                    conn.disconnect_code,
                    conn.disconnect_message,
                )
            await conn.wait_closed()
    assert len(events.of("disconnect")) == 1, events.of("disconnect")
    assert conn.state is State.CLOSED
    return conn, events, server


def ended(conn: Connection) -> tuple[DisconnectCode | None, str]:
    return conn.disconnect_code, conn.disconnect_message or ""


# -- unusable frames -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        ('{"type": "offer", "sdp": ', "invalid JSON: Expecting value: line 1 column 26"),
        ("[1, 2, 3]", "not a JSON object but an array"),
        ('"offer"', "not a JSON object but a string"),
        ("null", "not a JSON object but null"),
        ("42", "not a JSON object but a number"),
        ('{"sdp": "v=0"}', "'type' must be a string, got nothing"),
        ('{"type": ["offer"]}', "'type' must be a string, got an array"),
        ("[" * 50_000 + "]" * 50_000, "invalid JSON: nested too deeply"),
        (b'{"type": "offer"}', "binary frame (Sora sends text)"),
        (b"\x00\xff\x00", "binary frame (Sora sends text)"),
    ],
    ids=lambda value: repr(value)[:20] if isinstance(value, str | bytes) else None,
)
async def test_an_unusable_frame_instead_of_the_offer(
    bystander: Connection, frame: str | bytes, problem: str
) -> None:
    async def scenario(server: HostileServer, ws: ServerConnection) -> None:
        await server.recv_until(ws, "connect")
        await ws.send(frame)
        await ws.wait_closed()

    conn, _events, server = await run_against(scenario)
    code, text = ended(conn)
    assert code is DisconnectCode.INTERNAL_ERROR
    assert text.startswith(f"Invalid signaling message via WebSocket: {problem}"), text
    # The client closed the socket itself, cleanly, without waiting for a timeout.
    assert server.finished.is_set()


async def test_an_unusable_frame_after_the_offer_leaves_politely(bystander: Connection) -> None:
    async def scenario(server: HostileServer, ws: ServerConnection) -> None:
        await server.recv_until(ws, "connect")
        await ws.send(json.dumps(await server.offer()))
        await server.recv_until(ws, "answer")
        await ws.send(b"\x89PNG binary garbage")
        await server.serve_disconnect(ws)

    conn, _events, server = await run_against(scenario)
    assert ended(conn) == (
        DisconnectCode.INTERNAL_ERROR,
        "Invalid signaling message via WebSocket: binary frame (Sora sends text), "
        "internal_message=Succeeded to close WebSocket (DC signaling is not enabled)",
    )
    assert server.received[-1] == {"type": "disconnect", "reason": "INTERNAL-ERROR"}


# -- missing or wrong-typed members ---------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"sdp": None}, "'sdp' must be a string, got null"),
        ({"connection_id": None}, "'connection_id' must be a non-empty string, got null"),
        ({"config": "relay"}, "'config' must be an object, got a string"),
        (
            {"config": {"iceServers": [{"urls": 3478}]}},
            "'config.iceServers[0].urls' must be a string or an array of strings, got a number",
        ),
        ({"mid": ["0"]}, "'mid' must be an object, got an array"),
        (
            {"data_channels": [{"label": "signaling", "compress": 1}]},
            "'data_channels[0].compress' must be a boolean, got a number",
        ),
    ],
)
async def test_an_offer_with_missing_or_wrong_typed_members(
    bystander: Connection, change: dict[str, Any], problem: str
) -> None:
    async def scenario(server: HostileServer, ws: ServerConnection) -> None:
        await server.recv_until(ws, "connect")
        offer = await server.offer()
        offer.update(change)
        await ws.send(json.dumps(offer))
        await ws.wait_closed()

    conn, events, _server = await run_against(scenario)
    assert ended(conn) == (
        DisconnectCode.INTERNAL_ERROR,
        f"Invalid offer message via WebSocket: {problem}",
    )
    assert not events.of("set_offer")


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({"type": "re-offer"}, "Invalid re-offer message via WebSocket: 'sdp' must be a string"),
        (
            {"type": "update", "sdp": {"v": 0}},
            "Invalid update message via WebSocket: 'sdp' must be a string, got an object",
        ),
        (
            {"type": "notify", "event_type": 7},
            "Invalid notify message via WebSocket: 'event_type' must be a string, got a number",
        ),
        (
            {"type": "notify"},
            "Invalid notify message via WebSocket: 'event_type' must be a string, got nothing",
        ),
        (
            {"type": "notify", "event_type": "connection.created", "connection_id": ["H"]},
            "Invalid notify message via WebSocket: 'connection_id' must be a string",
        ),
    ],
)
async def test_a_re_offer_or_notify_with_missing_or_wrong_typed_members(
    bystander: Connection, message: dict[str, Any], problem: str
) -> None:
    async def scenario(server: HostileServer, ws: ServerConnection) -> None:
        await server.recv_until(ws, "connect")
        await ws.send(json.dumps(await server.offer()))
        await server.recv_until(ws, "answer")
        await ws.send(json.dumps(message))
        await server.serve_disconnect(ws)

    conn, _events, _server = await run_against(scenario)
    code, text = ended(conn)
    assert code is DisconnectCode.INTERNAL_ERROR
    assert text.startswith(problem), text
    assert text.endswith(
        "internal_message=Succeeded to close WebSocket (DC signaling is not enabled)"
    )


async def test_an_sdp_that_cannot_be_parsed(bystander: Connection) -> None:
    async def scenario(server: HostileServer, ws: ServerConnection) -> None:
        await server.recv_until(ws, "connect")
        offer = await server.offer()
        offer["sdp"] = "this is not\r\nan SDP\r\nm=audio nine\r\n"
        await ws.send(json.dumps(offer))
        await server.serve_disconnect(ws)

    conn, _events, server = await run_against(scenario)
    code, text = ended(conn)
    # As the C++ SDK: a failed SetRemoteDescription is ICE_FAILED after the
    # normal disconnect sequence (sora-protocol.md §5.11).
    assert code is DisconnectCode.ICE_FAILED
    assert text.startswith("Failed to SetOffer in offer message via WebSocket: error=")
    assert not text.startswith("Failed to SetOffer in offer message via WebSocket: error=,")
    assert server.received[-1] == {"type": "disconnect", "reason": "INTERNAL-ERROR"}


# -- size, encoding ---------------------------------------------------------------------


async def test_a_huge_message_is_refused(bystander: Connection) -> None:
    async def scenario(server: HostileServer, ws: ServerConnection) -> None:
        await server.recv_until(ws, "connect")
        offer = await server.offer()
        offer["padding"] = "x" * (MAX_MESSAGE_SIZE + 1)
        await ws.send(json.dumps(offer))
        await ws.wait_closed()

    conn, _events, _server = await run_against(scenario)
    code, text = ended(conn)
    assert code is DisconnectCode.WEBSOCKET_ONERROR
    assert text.startswith(
        "Failed to read WebSocket: ec=client closed the WebSocket with 1009 (message too big) "
    ), text
    assert f"exceeds limit of {MAX_MESSAGE_SIZE} bytes wscode=0 wsreason=" in text


async def test_a_text_frame_that_is_not_utf8(bystander: Connection) -> None:
    async def scenario(server: HostileServer, ws: ServerConnection) -> None:
        await server.recv_until(ws, "connect")
        await ws.send(b'{"type": "offer", "sdp": "\xff\xfe"}', text=True)
        await ws.wait_closed()

    conn, _events, _server = await run_against(scenario)
    code, text = ended(conn)
    assert code is DisconnectCode.WEBSOCKET_ONERROR
    assert "client closed the WebSocket with 1007 (invalid frame payload data)" in text


# -- silence and timeouts ---------------------------------------------------------------


async def test_a_tcp_server_that_never_answers_the_handshake(bystander: Connection) -> None:
    for scheme in ("ws", "wss"):
        async with raw_tcp_server(silent) as port:
            conn = Connection(
                f"{scheme}://127.0.0.1:{port}/signaling",
                "recvonly",
                "c",
                websocket_connection_timeout=1,
            )
            events = Events(conn)
            async with asyncio.timeout(10):
                with pytest.raises(SoraConnectionError) as failure:
                    await conn.connect()
                await conn.wait_closed()
        assert (failure.value.code, failure.value.message) == (
            DisconnectCode.INTERNAL_ERROR,
            "Connection timeout",
        )
        assert len(events.of("disconnect")) == 1


async def test_a_server_that_accepts_and_says_nothing(bystander: Connection) -> None:
    async def scenario(server: HostileServer, ws: ServerConnection) -> None:
        await server.recv_until(ws, "connect")
        await ws.wait_closed()

    conn, _events, _server = await run_against(scenario, connect_timeout=1)
    assert ended(conn) == (DisconnectCode.INTERNAL_ERROR, "Connection timeout")


async def test_a_server_that_stops_after_the_offer(bystander: Connection) -> None:
    async def scenario(server: HostileServer, ws: ServerConnection) -> None:
        await server.recv_until(ws, "connect")
        await ws.send(json.dumps(await server.offer()))
        await ws.wait_closed()

    conn, events, _server = await run_against(scenario, connect_timeout=2)
    assert ended(conn) == (DisconnectCode.INTERNAL_ERROR, "Connection timeout")
    assert events.of("set_offer")


async def test_http_refusals_of_the_upgrade_are_named(bystander: Connection) -> None:
    def refuse(connection: ServerConnection, request: Any) -> Response:
        return Response(403, "Forbidden", Headers({"Content-Length": "0"}), b"")

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        await writer.drain()
        writer.close()

    async with HostileServer(lambda s, w: w.wait_closed(), process_request=refuse) as server:
        with pytest.raises(SoraConnectionError) as refused:
            await Connection(server.url, "recvonly", "c").connect()
    assert refused.value.code is DisconnectCode.WEBSOCKET_HANDSHAKE_FAILED
    assert "last_ec=server refused the WebSocket handshake: HTTP 403 Forbidden" in (
        refused.value.message
    )
    async with raw_tcp_server(garbage) as port:
        with pytest.raises(SoraConnectionError) as invalid:
            await Connection(f"ws://127.0.0.1:{port}/s", "recvonly", "c").connect()
    assert invalid.value.code is DisconnectCode.WEBSOCKET_HANDSHAKE_FAILED
    assert "last_ec=invalid HTTP response to the WebSocket handshake" in invalid.value.message


# -- a server that closes mid-offer ---------------------------------------------------------


@pytest.mark.parametrize("how", ["abort", "4490", "1000"])
async def test_a_server_that_closes_right_after_the_offer(bystander: Connection, how: str) -> None:
    async def scenario(server: HostileServer, ws: ServerConnection) -> None:
        await server.recv_until(ws, "connect")
        await ws.send(json.dumps(await server.offer("audio", "video")))
        if how == "abort":
            ws.transport.abort()
        else:
            await ws.close(int(how), "INTERNAL-ERROR" if how == "4490" else "BYE")

    conn, _events, _server = await run_against(scenario)
    expected = {
        "abort": (
            DisconnectCode.WEBSOCKET_ONERROR,
            "Failed to read WebSocket: ec=End of file wscode=0 wsreason=",
        ),
        "4490": (
            DisconnectCode.WEBSOCKET_ONCLOSE,
            "Failed to read WebSocket: ec=The WebSocket stream was gracefully closed at "
            "both endpoints wscode=4490 wsreason=INTERNAL-ERROR",
        ),
        "1000": (
            DisconnectCode.CLOSE_SUCCEEDED,
            "Succeeded to close WebSocket from server: ec=The WebSocket stream was "
            "gracefully closed at both endpoints wscode=1000 wsreason=BYE",
        ),
    }[how]
    assert ended(conn) == expected
    # The offer being applied when the socket went away is dropped quietly
    # (the autouse fixture checks that nothing was logged at ERROR).
    await asyncio.sleep(0.2)


# -- re-offers out of order -----------------------------------------------------------------


async def test_a_re_offer_before_the_offer(bystander: Connection) -> None:
    async def scenario(server: HostileServer, ws: ServerConnection) -> None:
        await server.recv_until(ws, "connect")
        await ws.send(json.dumps({"type": "re-offer", "sdp": await server.offer_sdp("audio")}))
        await ws.wait_closed()

    conn, _events, _server = await run_against(scenario)
    assert ended(conn) == (
        DisconnectCode.INTERNAL_ERROR,
        "Unexpected re-offer message via WebSocket before the offer",
    )


async def test_a_burst_of_re_offers_is_answered_one_at_a_time_in_order(
    bystander: Connection,
) -> None:
    sections: list[tuple[str, int]] = []

    async def scenario(server: HostileServer, ws: ServerConnection) -> None:
        await server.recv_until(ws, "connect")
        # The offer and three re-offers back to back, before any answer.
        await ws.send(json.dumps(await server.offer("audio")))
        for kind in ("video", "audio", "video"):
            await ws.send(json.dumps({"type": "re-offer", "sdp": await server.offer_sdp(kind)}))
        while len(sections) < 4:
            message = await server.recv(ws)
            if message["type"] in ("answer", "re-answer"):
                sections.append((message["type"], message["sdp"].count("\nm=")))
        await server.serve_disconnect(ws)

    async with HostileServer(scenario) as server:
        conn = Connection(server.url, "recvonly", "burst", **FAST)
        events = Events(conn)
        async with asyncio.timeout(30):
            task = asyncio.ensure_future(conn.connect())
            while len(sections) < 4:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            await conn.disconnect()
            with pytest.raises(SoraConnectionError):
                await task
    assert sections == [("answer", 1), ("re-answer", 2), ("re-answer", 3), ("re-answer", 4)]
    assert len(events.of("disconnect")) == 1


# -- DataChannel payloads (dev server) -------------------------------------------------------


def _compressed_channels() -> list[dict[str, Any]]:
    labels = [("signaling", "sendrecv"), ("notify", "recvonly"), ("push", "recvonly")]
    channels = [{"label": label, "direction": d, "compress": True} for label, d in labels]
    channels.append({"label": "#chat", "direction": "sendrecv", "compress": True})
    return channels


async def _switched(server: DevServer, **keywords: Any) -> tuple[Connection, Events, Any]:
    conn = Connection(
        server.signaling_url,
        "sendrecv",
        "dc-hostile",
        audio=False,
        video=False,
        data_channels=_compressed_channels(),
        **MODES["datachannel"],
        **FAST,
        **keywords,
    )
    events = Events(conn)
    async with asyncio.timeout(20):
        await conn.connect()
        await events.wait("switched")
        await events.wait("data_channel", lambda label: label == "#chat")
    session = server.registry.sessions[conn.connection_id]
    return conn, events, session


@pytest.mark.parametrize("label", ["signaling", "notify", "push"])
async def test_a_non_zlib_payload_on_a_compressed_sora_label(
    sora_devserver: DevServer, bystander: Connection, label: str
) -> None:
    conn, events, session = await _switched(sora_devserver)
    await events.wait("data_channel", lambda lbl: lbl == label)
    assert session.send_data(label, b"\x01\x02 not a zlib stream")
    async with asyncio.timeout(15):
        await conn.wait_closed()
    code, text = ended(conn)
    assert code is DisconnectCode.INTERNAL_ERROR
    assert text.startswith(
        f"Invalid message on DataChannel {label!r}: invalid zlib payload: "
        "Error -3 while decompressing data: incorrect header check, internal_message="
    ), text
    assert len(events.of("disconnect")) == 1


async def test_a_non_zlib_payload_on_a_compressed_messaging_label_is_dropped(
    sora_devserver: DevServer, bystander: Connection, caplog: Any
) -> None:
    # "#" payloads come from other clients: one bad peer must not end the session.
    conn, events, session = await _switched(sora_devserver)
    assert session.send_data("#chat", b"not zlib")
    assert session.send_data("#chat", zlib.compress(b"after the bad one"))
    async with asyncio.timeout(10):
        await events.wait("message", lambda label, data: data == b"after the bad one")
    assert [args for args in events.of("message")] == [("#chat", b"after the bad one")]
    assert conn.state is State.CONNECTED_DC
    assert any("dropping a message on DataChannel '#chat'" in r.message for r in caplog.records)
    async with asyncio.timeout(10):
        await conn.disconnect()
    assert conn.disconnect_code is DisconnectCode.CLOSE_SUCCEEDED
