"""Simulcast receive side (issue 6), ``sora_async`` at both ends through the dev server.

* ``send_rpc("2025.2.0/RequestSimulcastRid", ...)`` on the ``rpc`` DataChannel (granted
  by the ``rpc_methods`` claim) switches the layer and ``simulcast.switched`` arrives as
  a ``notify`` event; a method not granted gets JSON-RPC error -32601.
* Spotlight with 3 senders and ``spotlight_number=1``: the focused sender arrives at
  the focus rid, the others at the unfocus rid, and the receiver follows focus changes;
  ``spotlight.*`` notifies arrive as ``notify`` events.

Sources are 320x180 at 10 fps (r0 80x45, r1 160x90, r2 320x180): two CPU cores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from sora_async import Connection, RemoteTrack
from sora_async.devserver import DevServer, default_simulcast_encodings, encode_jwt
from tests.rtc_support import PatternTrack, Tracks

SECRET = "rpc-secret"
RID_SIZES = {"r0": (80, 45), "r1": (160, 90), "r2": (320, 180)}


class Notifies:
    """``notify`` events of one connection, with a bounded wait for one."""

    def __init__(self, conn: Connection) -> None:
        self.items: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        conn.on("notify", self._add)

    def _add(self, message: dict[str, Any]) -> None:
        self.items.append(message)
        self._changed.set()

    async def wait(self, event_type: str, within: float = 10, **fields: Any) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                for item in self.items:
                    if item.get("event_type") == event_type and all(
                        item.get(k) == v for k, v in fields.items()
                    ):
                        return item
                self._changed.clear()
                await self._changed.wait()


async def size_of(track: RemoteTrack, size: tuple[int, int], within: float = 15) -> None:
    """Wait until ``track`` decodes a frame of ``size`` (heights rounded to even pass)."""
    seen: set[tuple[int, int]] = set()
    try:
        async with asyncio.timeout(within):
            while True:
                frame: Any = await track.recv()
                seen.add((frame.width, frame.height))
                if frame.width == size[0] and abs(frame.height - size[1]) <= 1:
                    return
    except TimeoutError:
        raise AssertionError(f"no {size} frame within {within}s; saw {sorted(seen)}") from None


def video_of(sender_id: str) -> Callable[[RemoteTrack], bool]:
    return lambda t: t.kind == "video" and t.stream_id == sender_id


def simulcast_sender(server: DevServer, channel: str, **keywords: Any) -> Connection:
    return Connection(
        server.signaling_url,
        "sendonly",
        channel,
        audio=False,
        simulcast=True,
        video_source=PatternTrack(320, 180, fps=10),
        **{"video_codec_type": "VP8", **keywords},
    )


def rpc_receiver(server: DevServer, channel: str, token: str) -> Connection:
    """A simulcast recvonly with DataChannel signaling (the rpc label needs it)."""
    return Connection(
        server.signaling_url,
        "recvonly",
        channel,
        audio=False,
        simulcast=True,
        data_channel_signaling=True,
        metadata={"access_token": token},
    )


async def request_rid(receiver: Connection, rid: str, sender_id: str) -> Any:
    """``RequestSimulcastRid`` over the rpc DataChannel, once it is open
    (it opens with the others after the switch)."""
    async with asyncio.timeout(10):
        while True:
            try:
                return await receiver.send_rpc(
                    "2025.2.0/RequestSimulcastRid",
                    {"rid": rid, "sender_connection_id": sender_id},
                    id=1,
                )
            except RuntimeError:  # not open yet: no event tells when it is
                await asyncio.sleep(0.1)


async def test_send_rpc_request_simulcast_rid_switches_layer_and_notifies() -> None:
    channel = "rpc-simulcast"
    granted = ["2025.2.0/RequestSimulcastRid"]
    token = encode_jwt({"channel_id": channel, "rpc_methods": granted}, SECRET)
    sender_token = encode_jwt({"channel_id": channel}, SECRET)
    async with DevServer(secret=SECRET) as server:
        sender = simulcast_sender(server, channel, metadata={"access_token": sender_token})
        receiver = rpc_receiver(server, channel, token)
        tracks = Tracks(receiver)
        notifies = Notifies(receiver)
        async with asyncio.timeout(45), sender, receiver:
            assert receiver.offer is not None
            assert receiver.offer.get("rpc_methods") == granted
            track = await tracks.wait(lambda t: t.kind == "video")
            await size_of(track, RID_SIZES["r0"])
            response = await request_rid(receiver, "r2", sender.connection_id)
            assert response == {"jsonrpc": "2.0", "id": 1, "result": {}}, response
            switched = await notifies.wait("simulcast.switched", current_rid="r2")
            assert switched["sender_connection_id"] == sender.connection_id
            assert (switched["request_rid"], switched["previous_rid"]) == ("r2", "r0"), switched
            await size_of(track, RID_SIZES["r2"])

            refused = await receiver.send_rpc("2025.2.0/DisconnectConnection", {}, id="x")
            assert refused is not None and refused["error"]["code"] == -32601, refused
            assert await receiver.send_rpc("2025.2.0/RequestSimulcastRid", {"rid": "r1"}) is None
            await notifies.wait("simulcast.switched", current_rid="r1")
            await size_of(track, RID_SIZES["r1"])


async def test_simulcast_switched_reports_the_layer_forwarded_not_the_one_asked_for() -> None:
    """r2 asked for while the sender does not send it (``active: false``): the
    notify comes when the media switches, to r1, with ``request_rid`` r2."""
    channel = "rpc-simulcast-fallback"
    granted = ["2025.2.0/RequestSimulcastRid"]
    token = encode_jwt({"channel_id": channel, "rpc_methods": granted}, SECRET)
    encodings = [
        {**encoding, "active": encoding["rid"] != "r2"}
        for encoding in default_simulcast_encodings()
    ]
    sender_token = encode_jwt({"channel_id": channel, "simulcast_encodings": encodings}, SECRET)
    async with DevServer(secret=SECRET) as server:
        sender = simulcast_sender(server, channel, metadata={"access_token": sender_token})
        receiver = rpc_receiver(server, channel, token)
        tracks = Tracks(receiver)
        notifies = Notifies(receiver)
        async with asyncio.timeout(45), sender, receiver:
            track = await tracks.wait(lambda t: t.kind == "video")
            await size_of(track, RID_SIZES["r0"])
            await request_rid(receiver, "r2", sender.connection_id)
            switched = await notifies.wait("simulcast.switched")
            assert switched["sender_connection_id"] == sender.connection_id
            assert (switched["request_rid"], switched["current_rid"]) == ("r2", "r1"), switched
            assert switched["previous_rid"] == "r0", switched
            await size_of(track, RID_SIZES["r1"])


async def test_send_rpc_without_a_granted_rpc_label_raises(sora_devserver: DevServer) -> None:
    conn = Connection(
        sora_devserver.signaling_url,
        "recvonly",
        "rpc-none",
        audio=False,
        data_channel_signaling=True,
    )
    async with asyncio.timeout(20), conn:
        assert conn.offer is not None and "rpc_methods" not in conn.offer
        with pytest.raises(RuntimeError, match="rpc"):
            await conn.send_rpc("2025.2.0/RequestSimulcastRid", {"rid": "r2"}, id=1)


async def test_spotlight_three_senders_one_focused_follows_focus(
    sora_devserver: DevServer,
) -> None:
    channel = "spotlight-three"
    spotlight: dict[str, Any] = {"spotlight": True, "spotlight_number": 1}
    receiver = Connection(
        sora_devserver.signaling_url,
        "recvonly",
        channel,
        audio=False,
        spotlight_focus_rid="r2",
        spotlight_unfocus_rid="r0",
        **spotlight,
    )
    tracks = Tracks(receiver)
    notifies = Notifies(receiver)
    senders = [simulcast_sender(sora_devserver, channel, **spotlight) for _ in range(3)]
    async with asyncio.timeout(60), receiver:
        for sender in senders:
            await sender.connect()
        try:
            ids = [str(s.connection_id) for s in senders]
            # The dev server focuses the most recent spotlight sender.
            await notifies.wait("spotlight.focused", connection_id=ids[2])
            await notifies.wait("spotlight.changed", connection_id=ids[2])
            by_sender: dict[str, RemoteTrack] = {}
            for sender_id in ids:
                by_sender[sender_id] = await tracks.wait(video_of(sender_id))
            await asyncio.gather(
                size_of(by_sender[ids[2]], RID_SIZES["r2"]),
                size_of(by_sender[ids[0]], RID_SIZES["r0"]),
                size_of(by_sender[ids[1]], RID_SIZES["r0"]),
            )

            # Focus change: the focused sender leaves, focus goes to the next one.
            await senders[2].disconnect()
            await notifies.wait("spotlight.focused", connection_id=ids[1])
            await asyncio.gather(
                size_of(by_sender[ids[1]], RID_SIZES["r2"]),
                size_of(by_sender[ids[0]], RID_SIZES["r0"]),
            )
        finally:
            for sender in senders:
                await sender.disconnect()


@pytest.mark.parametrize("codec", ["H264", "H265"])
async def test_simulcast_h26x_layers_reach_sora_async_receivers(
    sora_devserver: DevServer, codec: str
) -> None:
    # The official receiver cannot decode H.265 without hardware, and H.264 only with
    # OpenH264 (tests/test_simulcast.py): sora_async receivers are the referee here.
    channel = f"simulcast-{codec}"
    sender = simulcast_sender(sora_devserver, channel, video_codec_type=codec)
    low = Connection(sora_devserver.signaling_url, "recvonly", channel, audio=False, simulcast=True)
    high = Connection(
        sora_devserver.signaling_url,
        "recvonly",
        channel,
        audio=False,
        simulcast=True,
        simulcast_rid="r2",
    )
    low_tracks, high_tracks = Tracks(low), Tracks(high)
    async with asyncio.timeout(60), sender, low, high:
        await size_of(await low_tracks.wait(video_of(sender.connection_id)), RID_SIZES["r0"])
        await size_of(await high_tracks.wait(video_of(sender.connection_id)), RID_SIZES["r2"])
        stats = await sender.get_stats()
        sent = {
            s["rid"]: s
            for s in stats
            if s.get("type") == "outbound-rtp" and s.get("kind") == "video" and s.get("bytesSent")
        }
        assert set(sent) == {"r0", "r1", "r2"}, sorted(sent)
        codecs = {s["id"]: s["mimeType"] for s in stats if s.get("type") == "codec"}
        assert {codecs[s["codecId"]] for s in sent.values()} == {f"video/{codec}"}
