"""Acceptance of the dev server (issue 2, scenarios 1-8) with the official client as referee.

Every client here is the official ``sora_sdk`` (libwebrtc) client running in a
subprocess (``tests/official``); the dev server runs in the test's event loop.
The expected disconnect strings are the ones the official client itself
reports against a real Sora (sora-sdk-reference.md §1.6, sora-protocol.md
§5.8/§5.11, and the SDK's own e2e tests ``test_type_disconnect.py``,
``test_sora_disconnect.py``).
"""

# ruff: noqa: ASYNC109  (helpers take explicit timeouts, like the harness)

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.official.harness import OfficialClient
from tests.official.scenario import (
    CLOSED_API,
    counters,
    dev_server,
    mime_types,
    notify_of,
    rtp_streams,
    signaling,
    sora_api,
    total,
)

pytestmark = pytest.mark.official

_channel_numbers = itertools.count(1)

TONE_HZ = 440.0
SMALL_VIDEO = {"width": 320, "height": 240, "fps": 15}
WS_ONLY_CLOSED = "Succeeded to close WebSocket (DC signaling is not enabled)"
HYBRID_CLOSED = "Succeeded to close Websocket (DC signaling is enabled)"  # sic: "Websocket"
DC_ONLY_CLOSED = "Succeeded to close DataChannel"


def channel(name: str) -> str:
    return f"{name}-{next(_channel_numbers)}"


def media_sections(sdp: str) -> list[dict[str, Any]]:
    """The m-lines of an SDP: kind, port, direction, mid and msid stream id."""
    sections = []
    for block in sdp.replace("\r\n", "\n").split("\nm=")[1:]:
        lines = block.split("\n")
        kind, port = lines[0].split()[:2]
        attrs = [line[2:] for line in lines[1:] if line.startswith("a=")]
        sections.append(
            {
                "kind": kind,
                "port": int(port),
                "direction": next(
                    (a for a in attrs if a in ("sendonly", "recvonly", "sendrecv", "inactive")),
                    None,
                ),
                "mid": next((a[4:] for a in attrs if a.startswith("mid:")), None),
                "msid": next((a[5:].split()[0] for a in attrs if a.startswith("msid:")), None),
            }
        )
    return sections


def sending_streams(sdp: str) -> dict[str, set[str]]:
    """Stream id (sender connection id) -> kinds the server sends in this offer."""
    streams: dict[str, set[str]] = {}
    for m in media_sections(sdp):
        if m["port"] != 0 and m["direction"] in ("sendonly", "sendrecv") and m["msid"]:
            streams.setdefault(m["msid"], set()).add(m["kind"])
    return streams


async def wait_frame(
    client: OfficialClient,
    sender: OfficialClient,
    size: tuple[int, int] | None = None,
    timeout: float = 15,
    start: int = 0,
    height_tolerance: int = 0,
) -> dict[str, Any]:
    """A decoded frame of ``sender``'s stream at ``client`` (of ``size`` if given)."""

    def match(e: dict[str, Any]) -> bool:
        if e["stream_id"] != sender.connection_id:
            return False
        if size is None:
            return True
        return e["width"] == size[0] and abs(e["height"] - size[1]) <= height_tolerance

    match.__name__ = f"frame of {sender.name}" + (f" sized {size}" if size else "")
    return await client.wait_for("video_frame", match, timeout=timeout, start=start)


async def wait_stats(
    client: OfficialClient,
    condition: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 15,
    what: str = "stats condition",
) -> list[dict[str, Any]]:
    """Poll ``get_stats()`` until ``condition`` holds (stats have no events to wait on)."""
    stats: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                stats = await client.get_stats()
                if condition(stats):
                    return stats
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise AssertionError(
            f"{client.name}: {what} not reached within {timeout}s; last stats: "
            + json.dumps([s for s in stats if "rtp" in s.get("type", "")])[:3000]
        ) from None


# -- scenario 1: sendonly -> recvonly media ------------------------------------


@pytest.mark.parametrize(
    "video_codec",
    ["VP8", "VP9", "AV1", None],
    ids=["opus+vp8", "opus+vp9", "opus+av1", "opus-only"],
)
async def test_sendonly_to_recvonly_media(official_client, video_codec: str | None) -> None:
    """A sender's tone and moving picture arrive decoded, at the sent size, in the chosen codecs."""
    ch = channel("media")
    sender_options: dict[str, Any] = {
        "audio_codec_type": "OPUS",
        "fake_audio": {"frequency": TONE_HZ},
    }
    if video_codec:
        sender_options.update(video_codec_type=video_codec, fake_video=SMALL_VIDEO)
    else:
        sender_options.update(video=False)
    async with dev_server() as server:
        urls = [server.signaling_url]
        async with (
            official_client(
                signaling_urls=urls, role="recvonly", channel_id=ch, name="recvonly"
            ) as rx,
            official_client(
                signaling_urls=urls,
                role="sendonly",
                channel_id=ch,
                name="sendonly",
                **sender_options,
            ) as tx,
        ):
            await rx.connect()
            await tx.connect()

            # Remote tracks are labelled with the sender's connection id.
            await rx.wait_for(
                "track", lambda e: e["kind"] == "audio" and e["stream_id"] == tx.connection_id
            )
            tone = await rx.wait_for(
                "audio_level",
                lambda e: (
                    e["stream_id"] == tx.connection_id
                    and e["rms"] > 0.05
                    and abs(e["freq"] - TONE_HZ) <= TONE_HZ * 0.05
                ),
                timeout=15,
            )
            assert tone["rms"] < 1.0
            if video_codec:
                await rx.wait_for(
                    "track", lambda e: e["kind"] == "video" and e["stream_id"] == tx.connection_id
                )
                await wait_frame(rx, tx)  # any decoded frame first: a clearer failure
                frame = await wait_frame(rx, tx, (320, 240))

            tx_before, rx_before = await tx.get_stats(), await rx.get_stats()
            if video_codec:
                # 30 more decoded frames: about 2 s of media between the two samples.
                await rx.wait_for(
                    "video_frame",
                    lambda e: (
                        e["stream_id"] == tx.connection_id and e["count"] >= frame["count"] + 30
                    ),
                    timeout=15,
                )
            else:
                mark = rx.mark()
                for _ in range(4):  # four more 0.5 s analysis windows of the tone
                    level = await rx.wait_for(
                        "audio_level", lambda e: e["stream_id"] == tx.connection_id, start=mark
                    )
                    mark = level["seq"] + 1
            tx_after, rx_after = await tx.get_stats(), await rx.get_stats()

            kinds = {"audio": "audio/opus"}
            if video_codec:
                kinds["video"] = f"video/{video_codec}".lower()
            for kind, mime in kinds.items():
                assert mime_types(tx_after, "outbound-rtp", kind) == {mime}, kind
                assert mime_types(rx_after, "inbound-rtp", kind) == {mime}, kind
                assert (
                    total(tx_after, "outbound-rtp", kind, "bytesSent")
                    > total(tx_before, "outbound-rtp", kind, "bytesSent")
                    > 0
                ), kind
                assert (
                    total(rx_after, "inbound-rtp", kind, "bytesReceived")
                    > total(rx_before, "inbound-rtp", kind, "bytesReceived")
                    > 0
                ), kind
            if video_codec:
                assert total(rx_after, "inbound-rtp", "video", "framesDecoded") > 30

            left = await tx.disconnect()
            assert (left["name"], left["message"]) == ("CLOSE_SUCCEEDED", WS_ONLY_CLOSED)
            await rx.wait_for("notify", notify_of("connection.destroyed", tx.connection_id))
            assert (await rx.disconnect())["name"] == "CLOSE_SUCCEEDED"


# -- scenario 2: late joiner -----------------------------------------------------


@pytest.mark.parametrize("video_codec", ["VP8", "VP9", "AV1"])
async def test_late_recvonly_joiner_decodes_within_2_seconds(
    official_client, video_codec: str
) -> None:
    """A recvonly joining a running sender decodes its first frame within 2 s (a key
    frame was requested for it, not waited for)."""
    ch = channel("late")
    async with dev_server() as server:
        urls = [server.signaling_url]
        async with official_client(
            signaling_urls=urls,
            role="sendonly",
            channel_id=ch,
            name="sendonly",
            video_codec_type=video_codec,
            fake_video=SMALL_VIDEO,
            audio=False,
        ) as tx:
            await tx.connect()
            # The sender has been sending for 3 s (45 frames at 15 fps): its
            # start-up key frame is long gone.
            before = await wait_stats(
                tx,
                lambda s: total(s, "outbound-rtp", "video", "framesEncoded") >= 45,
                what="45 encoded frames",
            )
            async with official_client(
                signaling_urls=urls,
                role="recvonly",
                channel_id=ch,
                name="late recvonly",
                audio=False,
            ) as rx:
                created = await rx.connect()
                frame = await wait_frame(rx, tx, timeout=10)
                after = await tx.get_stats()
                delay = frame["t"] - created["t"]
                requests = total(after, "outbound-rtp", "video", "pliCount") + total(
                    after, "outbound-rtp", "video", "firCount"
                )
                keyframes = total(after, "outbound-rtp", "video", "keyFramesEncoded") - total(
                    before, "outbound-rtp", "video", "keyFramesEncoded"
                )
                assert delay < 2.0, (
                    f"first frame {delay:.2f}s after connection.created "
                    f"(PLI+FIR at the sender: {requests}, new key frames: {keyframes})"
                )
                assert (frame["width"], frame["height"]) == (320, 240)


# -- scenario 3: re-offer churn ----------------------------------------------------


async def test_reoffer_churn_three_senders_join_and_leave(official_client) -> None:
    """One recvonly stays while three senders join one by one and then leave one by one,
    and a fourth joins afterwards (retired mids reused); every connect completes, every
    notify counter is right, and the recvonly decodes every sender."""
    ch = channel("churn")
    # 320x240: libwebrtc sends 160x120 as 160x112 (its own alignment, not the server's).
    tiny = {"width": 320, "height": 240, "fps": 10}
    async with dev_server() as server:
        urls = [server.signaling_url]
        async with contextlib.AsyncExitStack() as stack:
            rx = await stack.enter_async_context(
                official_client(
                    signaling_urls=urls, role="recvonly", channel_id=ch, name="recvonly"
                )
            )
            own = (await rx.connect())["message"]
            assert counters(own) == (1, 0, 0, 1)
            assert own.get("data") == []

            senders: list[OfficialClient] = []
            for k in range(1, 4):
                tx = await stack.enter_async_context(
                    official_client(
                        signaling_urls=urls,
                        role="sendonly",
                        channel_id=ch,
                        name=f"sendonly{k}",
                        video_codec_type="VP8",
                        fake_video=tiny,
                    )
                )
                created = (await tx.connect(timeout=10))["message"]
                assert counters(created) == (1 + k, 0, k, 1), created
                existing = {entry.get("connection_id") for entry in created.get("data", [])}
                assert existing == {rx.connection_id} | {s.connection_id for s in senders}, created
                seen = await rx.wait_for(
                    "notify", notify_of("connection.created", tx.connection_id)
                )
                assert counters(seen["message"]) == (1 + k, 0, k, 1), seen
                senders.append(tx)
                await wait_frame(rx, tx, (320, 240))

            reoffer = signaling("re-offer", "RECEIVED")
            full = rx.events("signaling_message", reoffer)[-1]["message"]["sdp"]
            assert sending_streams(full) == {
                s.connection_id: {"audio", "video"} for s in senders
            }, media_sections(full)
            mark = rx.mark()
            for k, tx in enumerate(senders, 1):
                left = await tx.disconnect()
                assert left["name"] == "CLOSE_SUCCEEDED", left
                gone = await rx.wait_for(
                    "notify", notify_of("connection.destroyed", tx.connection_id)
                )
                assert counters(gone["message"]) == (1 + 3 - k, 0, 3 - k, 1), gone

            # Every leaver's m-lines are retired (port 0). Leaves close together may share
            # one re-offer, so wait for the state, not for a count.
            emptied = await rx.wait_for(
                "signaling_message",
                lambda e: reoffer(e) and sending_streams(e["message"]["sdp"]) == {},
                start=mark,
            )
            retired = media_sections(emptied["message"]["sdp"])

            # Joining after three leaves: the retired m-lines are reused, not appended.
            late = await stack.enter_async_context(
                official_client(
                    signaling_urls=urls,
                    role="sendonly",
                    channel_id=ch,
                    name="sendonly4",
                    video_codec_type="VP8",
                    fake_video=tiny,
                )
            )
            created = (await late.connect(timeout=10))["message"]
            assert counters(created) == (2, 0, 1, 1), created
            await wait_frame(rx, late, (320, 240))
            last = rx.events("signaling_message", reoffer)[-1]["message"]["sdp"]
            assert sending_streams(last) == {late.connection_id: {"audio", "video"}}
            assert len(media_sections(last)) == len(retired), (retired, media_sections(last))

            reoffers = rx.events("signaling_message", reoffer)
            reanswers = rx.events("signaling_message", signaling("re-answer", "SENT"))
            assert len(reoffers) >= 5, "at least one per join and one for the leaves"
            assert len(reanswers) == len(reoffers)
            assert rx.events("disconnect") == []


# -- scenario 4: messaging ------------------------------------------------------------

MESSAGES = [b"spam", "はむ".encode(), bytes(range(256)), b"x" * 5000]


@pytest.mark.parametrize("header", [False, True], ids=["no-header", "header"])
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
async def test_messaging_sendonly_to_recvonly(
    official_client, header: bool, compress: bool
) -> None:
    """Messages on ``#test`` reach the receiver byte for byte (behind the 26-byte sender
    connection id when it asked for the header), in order, and never echo to the sender."""
    ch = channel("messaging")
    rx_label: dict[str, Any] = {"label": "#test", "direction": "recvonly", "compress": compress}
    if header:
        rx_label["header"] = [{"type": "sender_connection_id"}]
    common = {"audio": False, "video": False, "data_channel_signaling": True}
    async with dev_server() as server:
        urls = [server.signaling_url]
        async with (
            official_client(
                signaling_urls=urls,
                role="sendrecv",
                channel_id=ch,
                name="receiver",
                data_channels=[rx_label],
                **common,
            ) as rx,
            official_client(
                signaling_urls=urls,
                role="sendrecv",
                channel_id=ch,
                name="sender",
                data_channels=[{"label": "#test", "direction": "sendonly", "compress": compress}],
                **common,
            ) as tx,
        ):
            await rx.connect()
            await tx.connect()
            offered = tx.events("set_offer")[0]["message"]["data_channels"]
            assert {
                "label": "#test",
                "direction": "sendonly",
                "compress": compress,
            }.items() <= next(d for d in offered if d["label"] == "#test").items()
            await rx.wait_for("data_channel", lambda e: e["label"] == "#test")
            await tx.wait_for("data_channel", lambda e: e["label"] == "#test")

            for payload in MESSAGES:
                assert await tx.send_data_channel("#test", payload) is True

            await rx.wait_for(
                "message", lambda e: len(rx.events("message")) >= len(MESSAGES), timeout=10
            )
            received = [e for e in rx.events("message")]
            assert [e["label"] for e in received] == ["#test"] * len(MESSAGES)

            data = [base64.b64decode(e["data_b64"]) for e in received]
            prefix = tx.connection_id.encode() if header else b""
            assert len(prefix) == (26 if header else 0)
            assert data == [prefix + m for m in MESSAGES]
            assert [e["size"] for e in received] == [len(prefix) + len(m) for m in MESSAGES]

            tx_stats, rx_stats = await tx.get_stats(), await rx.get_stats()
            sent = next(
                s for s in tx_stats if s.get("type") == "data-channel" and s.get("label") == "#test"
            )
            got = next(
                s for s in rx_stats if s.get("type") == "data-channel" and s.get("label") == "#test"
            )
            assert sent["messagesSent"] == got["messagesReceived"] == len(MESSAGES)
            if not compress:  # compressed labels count zlib bytes on the wire
                assert sent["bytesSent"] == sum(map(len, MESSAGES))
                assert got["bytesReceived"] == sum(len(prefix) + len(m) for m in MESSAGES)
            assert tx.events("message") == []  # never back to the sender


# -- scenario 5: DataChannel signaling modes and disconnect strings -----------------------

MODES = {
    # name: (data_channel_signaling, ignore_disconnect_websocket)
    "ws-only": (False, False),
    "ws+dc": (True, False),
    "dc-only": (True, True),
}


async def _connect_in_mode(client: OfficialClient, mode: str) -> None:
    await client.connect()
    dc_signaling, ignore_ws = MODES[mode]
    if dc_signaling:
        switched = await client.wait_for("switched")
        assert switched["message"].get("ignore_disconnect_websocket") is ignore_ws
    if ignore_ws:
        # The official client closes its WebSocket itself on switched.
        closed = await client.wait_for("ws_close")
        assert (closed["code"], closed["reason"]) == (1000, "SELF-CLOSED")
    # A full round trip to the client process before checking what did not happen.
    await client.get_stats()
    if not dc_signaling:
        assert client.events("switched") == []
    if not ignore_ws:
        assert client.events("ws_close") == []


@pytest.mark.parametrize("mode", list(MODES))
async def test_client_initiated_disconnect_in_each_signaling_mode(
    official_client, mode: str
) -> None:
    dc_signaling, ignore_ws = MODES[mode]
    async with dev_server() as server:
        async with official_client(
            signaling_urls=[server.signaling_url],
            role="recvonly",
            channel_id=channel(mode),
            data_channel_signaling=dc_signaling,
            ignore_disconnect_websocket=ignore_ws,
        ) as client:
            await _connect_in_mode(client, mode)
            mark = client.mark()
            event = await client.disconnect()
            expected = {
                "ws-only": WS_ONLY_CLOSED,
                "ws+dc": HYBRID_CLOSED,
                "dc-only": DC_ONLY_CLOSED,
            }
            assert (event["name"], event["message"]) == ("CLOSE_SUCCEEDED", expected[mode])
            sent = client.events("signaling_message", signaling("disconnect", "SENT"))
            assert [e["type"] for e in sent] == ["DATACHANNEL" if dc_signaling else "WEBSOCKET"]
            closes = [
                (e["code"], e["reason"]) for e in client.events("ws_close") if e["seq"] >= mark
            ]
            if ignore_ws:
                assert closes == []
            else:
                assert closes == [(1000, "TYPE-DISCONNECT")]


@pytest.mark.parametrize("mode", list(MODES))
async def test_disconnect_connection_api_in_each_signaling_mode(official_client, mode: str) -> None:
    """``DisconnectConnection``: WS modes close the WebSocket 1000 ``DISCONNECTED-API``; DC-only
    mode with the close message sends ``{"type":"close"}`` on ``signaling`` first."""
    dc_signaling, ignore_ws = MODES[mode]
    ch = channel(f"api-{mode}")
    options = {"data_channel_signaling_close_message": True} if ignore_ws else {}
    async with dev_server(**options) as server:
        async with official_client(
            signaling_urls=[server.signaling_url],
            role="recvonly",
            channel_id=ch,
            data_channel_signaling=dc_signaling,
            ignore_disconnect_websocket=ignore_ws,
        ) as client:
            await _connect_in_mode(client, mode)
            mark = client.mark()
            status, body = await sora_api(
                server,
                "Sora_20151104.DisconnectConnection",
                {"channel_id": ch, "connection_id": client.connection_id},
            )
            assert status == 200, body
            event = await client.wait_for("disconnect", timeout=15)
            assert event["name"] == "CLOSE_SUCCEEDED", event
            closes = [
                (e["code"], e["reason"]) for e in client.events("ws_close") if e["seq"] >= mark
            ]
            if mode == "ws-only":
                assert event["message"] == f"Succeeded to close WebSocket from server: {CLOSED_API}"
                assert closes == [(1000, "DISCONNECTED-API")]
            elif mode == "ws+dc":
                assert event["message"] == (
                    f"Succeeded to close WebSocket and DataChannel from server: {CLOSED_API}"
                )
                assert closes == [(1000, "DISCONNECTED-API")]
            else:
                close = await client.wait_for("signaling_message", signaling("close", "RECEIVED"))
                assert close["type"] == "DATACHANNEL"
                assert close["message"] == {
                    "type": "close",
                    "code": 1000,
                    "reason": "DISCONNECTED-API",
                }
                assert event["message"] == "Succeeded to close DataChannel: reason=DISCONNECTED-API"
                assert closes == []
            # Server-initiated: the client never sends a disconnect of its own.
            assert client.events("signaling_message", signaling("disconnect", "SENT")) == []


@pytest.mark.slow
async def test_disconnect_connection_api_dc_only_without_close_message(official_client) -> None:
    """DC-only without the close-message option: Sora just closes the DataChannels; the client
    still ends the connection (it must not hang or crash).

    Observed with sora_sdk 2025.4.0: it does not react to its DataChannels closing and
    reports PEER_CONNECTION_STATE_FAILED "PeerConnectionState::kFailed" once ICE consent
    runs out, about 17 s later; this is why Sora has the close message.
    """
    ch = channel("api-dc-only-no-close")
    async with dev_server() as server:
        async with official_client(
            signaling_urls=[server.signaling_url],
            role="recvonly",
            channel_id=ch,
            data_channel_signaling=True,
            ignore_disconnect_websocket=True,
        ) as client:
            await _connect_in_mode(client, "dc-only")
            status, body = await sora_api(
                server,
                "Sora_20151104.DisconnectConnection",
                {"channel_id": ch, "connection_id": client.connection_id},
            )
            assert status == 200, body
            event = await client.wait_for("disconnect", timeout=40)
            assert client.events("signaling_message", signaling("close", "RECEIVED")) == []
            assert event["name"] in {"CLOSE_SUCCEEDED", "PEER_CONNECTION_STATE_FAILED"}, event


# -- scenario 6: simulcast ----------------------------------------------------------------


@pytest.mark.slow
async def test_simulcast_three_layers_and_rid_selection(official_client) -> None:
    """A 960x540 simulcast sender sends r0/r1/r2; a default recvonly gets r0 (240 wide), one
    asking for r2 gets 960 wide, and RequestSimulcastRid moves the first to r1 (480 wide)."""
    ch = channel("simulcast")
    # libwebrtc aligns simulcast heights (CPP issue 0085: 960x540 -> r0 240x128, r2 960x528).
    tol = 16
    async with dev_server() as server:
        urls = [server.signaling_url]
        async with (
            official_client(
                signaling_urls=urls,
                role="sendonly",
                channel_id=ch,
                name="simulcast sender",
                simulcast=True,
                video_codec_type="VP8",
                audio=False,
                fake_video={"width": 960, "height": 540, "fps": 15},
            ) as tx,
            official_client(
                signaling_urls=urls,
                role="recvonly",
                channel_id=ch,
                name="recvonly default",
                audio=False,
            ) as rx_default,
            official_client(
                signaling_urls=urls,
                role="recvonly",
                channel_id=ch,
                name="recvonly r2",
                audio=False,
                simulcast_rid="r2",
            ) as rx_r2,
        ):
            await tx.connect()
            offer = tx.events("set_offer")[0]["message"]
            assert offer.get("simulcast") is True
            assert [e.get("rid") for e in offer.get("encodings", [])] == ["r0", "r1", "r2"]
            await rx_default.connect()
            await rx_r2.connect()

            stats = await wait_stats(
                tx,
                lambda s: (
                    {
                        o.get("rid")
                        for o in rtp_streams(s, "outbound-rtp", "video")
                        if o.get("bytesSent")
                    }
                    >= {"r0", "r1", "r2"}
                ),
                timeout=20,
                what="bytes sent on r0, r1 and r2",
            )
            assert mime_types(stats, "outbound-rtp", "video") == {"video/vp8"}

            await wait_frame(rx_default, tx, (240, 135), timeout=20, height_tolerance=tol)
            await wait_frame(rx_r2, tx, (960, 540), timeout=30, height_tolerance=tol)

            mark = rx_default.mark()
            status, body = await sora_api(
                server,
                "Sora_20251217.RequestSimulcastRid",
                {
                    "channel_id": ch,
                    "receiver_connection_id": rx_default.connection_id,
                    "sender_connection_id": tx.connection_id,
                    "rid": "r1",
                },
            )
            assert status == 200, body
            await wait_frame(
                rx_default, tx, (480, 270), timeout=15, start=mark, height_tolerance=tol
            )
            switched = await rx_default.wait_for(
                "notify",
                lambda e: e["message"].get("event_type") == "simulcast.switched",
                start=mark,
            )
            assert switched["message"].get("current_rid") == "r1", switched


# -- scenario 7: redirect -----------------------------------------------------------------


async def test_redirect_from_server_a_to_server_b(official_client) -> None:
    ch = channel("redirect")
    async with dev_server() as server_b, dev_server(redirect_to=server_b.signaling_url) as server_a:
        async with official_client(
            signaling_urls=[server_a.signaling_url],
            role="recvonly",
            channel_id=ch,
            name="redirected",
        ) as client:
            await client.connect()
            redirect = await client.wait_for("signaling_message", signaling("redirect", "RECEIVED"))
            assert redirect["type"] == "WEBSOCKET"
            assert redirect["message"]["location"] == server_b.signaling_url
            connects = client.events("signaling_message", signaling("connect", "SENT"))
            assert len(connects) == 2
            assert "redirect" not in connects[0]["message"]
            assert connects[1]["message"].get("redirect") is True

            # The redirected client lives on B: a client connecting to B directly sees it.
            async with official_client(
                signaling_urls=[server_b.signaling_url],
                role="recvonly",
                channel_id=ch,
                name="direct",
            ) as direct:
                own = (await direct.connect())["message"]
                assert {e.get("connection_id") for e in own.get("data", [])} == {
                    client.connection_id
                }
            left = await client.disconnect()
            assert (left["name"], left["message"]) == ("CLOSE_SUCCEEDED", WS_ONLY_CLOSED)


# -- scenario 8: bad input ----------------------------------------------------------------

_valid = {"type": "connect", "role": "recvonly", "channel_id": "bad-input"}

BAD_INPUT: dict[str, str | bytes] = {
    "malformed JSON": "{not json",
    "JSON array": json.dumps([_valid]),
    "JSON string": json.dumps("connect"),
    "missing type": json.dumps({k: v for k, v in _valid.items() if k != "type"}),
    "answer before connect": json.dumps({"type": "answer", "sdp": "v=0\r\n"}),
    "missing role": json.dumps({k: v for k, v in _valid.items() if k != "role"}),
    "unknown role": json.dumps({**_valid, "role": "upload"}),
    "missing channel_id": json.dumps({k: v for k, v in _valid.items() if k != "channel_id"}),
    "channel_id not a string": json.dumps({**_valid, "channel_id": 42}),
    "empty channel_id": json.dumps({**_valid, "channel_id": ""}),
    "recvonly without audio and video": json.dumps({**_valid, "audio": False, "video": False}),
    "binary frame": b"\x00\x01junk\xff",
    # Just over the dev server's documented default limit (max_message_size, 1 MiB).
    "oversized message": json.dumps({**_valid, "metadata": {"pad": "x" * (1 << 20)}}),
}


AWAIT_OFFER = "<wait for the offer>"


async def _close_of(server: Any, frames: list[str | bytes]) -> tuple[int | None, str]:
    """Send ``frames`` on a raw WebSocket; return the server's close code and reason."""
    async with asyncio.timeout(15), aiohttp.ClientSession() as session:
        async with session.ws_connect(server.signaling_url, max_msg_size=0) as ws:
            try:
                for frame in frames:
                    if frame is AWAIT_OFFER:
                        while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                            if json.loads(msg.data).get("type") == "offer":
                                break
                        else:
                            return ws.close_code, f"(closed before the offer: {msg.type})"
                    elif isinstance(frame, bytes):
                        await ws.send_bytes(frame)
                    else:
                        await ws.send_str(frame)
            except ConnectionError as e:  # closed by the server while we were still sending
                return ws.close_code, f"(send failed: {e})"
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    return msg.data, msg.extra or ""
                if msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    return ws.close_code, ""
                if msg.type == aiohttp.WSMsgType.ERROR:
                    return ws.close_code, f"(error: {msg.data})"
                # anything else (e.g. an offer) is ignored: we wait for the close


async def test_bad_input_closes_4490_and_server_keeps_serving(official_client) -> None:
    ch = "bad-input"
    async with dev_server() as server:
        urls = [server.signaling_url]
        async with official_client(
            signaling_urls=urls, role="recvonly", channel_id=ch, name="bystander"
        ) as bystander:
            await bystander.connect()

            results = {name: await _close_of(server, [frame]) for name, frame in BAD_INPUT.items()}
            # Junk instead of an answer, once the server has sent its offer.
            valid = json.dumps({**_valid, "channel_id": "bad-input-2"})
            results["junk after the offer"] = await _close_of(
                server, [valid, AWAIT_OFFER, "garbage{"]
            )
            results["binary junk after the offer"] = await _close_of(
                server, [valid, AWAIT_OFFER, b"\xff\x00"]
            )
            wrong = {name: r for name, r in results.items() if r[0] != 4490 or not r[1]}
            assert wrong == {}, f"expected 4490 with a reason for every case; got {results}"

            # The server still serves: the bystander is untouched and a newcomer connects.
            async with official_client(
                signaling_urls=urls, role="recvonly", channel_id=ch, name="newcomer"
            ) as newcomer:
                own = (await newcomer.connect())["message"]
                assert {e.get("connection_id") for e in own.get("data", [])} == {
                    bystander.connection_id
                }
                await bystander.wait_for(
                    "notify", notify_of("connection.created", newcomer.connection_id)
                )
            assert bystander.events("disconnect") == []
