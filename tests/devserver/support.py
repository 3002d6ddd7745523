"""Test doubles and helpers for the dev-server control-plane tests.

``FakePeer`` stands in for the media plane (``ServerPeer``) with the same
constructor, methods and events, so the signaling can be driven end to end by
a plain ``websockets`` client without any WebRTC: ``set_answer`` makes the
peer "connect" and open its DataChannels; what the server sends on a
DataChannel is recorded, and tests inject client DataChannel messages.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import websockets
from pyee.asyncio import AsyncIOEventEmitter
from websockets.asyncio.client import ClientConnection

from sora_async.devserver import DevServer
from sora_async.devserver.peer import DataChannelSpec, Publication

STEP = 5.0  # seconds any single awaited step may take


class FakePeer(AsyncIOEventEmitter):
    """A ``ServerPeer`` look-alike that records what the control plane asks of it."""

    def __init__(
        self,
        *,
        factory: FakePeerFactory,
        connection_id: str,
        send_audio: bool,
        send_video: bool,
        recv_audio: bool,
        recv_video: bool,
        audio_codec: str = "OPUS",
        video_codec: str = "VP9",
        video_bit_rate: int | None = None,
        simulcast: bool = False,
        encodings: list[dict[str, Any]] | None = None,
        data_channels: Sequence[DataChannelSpec] = (),
        **media_options: Any,
    ) -> None:
        super().__init__()
        self.factory = factory
        self.media_options = media_options
        self.connection_id = connection_id
        self.kwargs = {
            "send_audio": send_audio,
            "send_video": send_video,
            "recv_audio": recv_audio,
            "recv_video": recv_video,
            "audio_codec": audio_codec,
            "video_codec": video_codec,
            "video_bit_rate": video_bit_rate,
            "simulcast": simulcast,
            "encodings": encodings,
        }
        self.data_channels = list(data_channels)
        self.mids: dict[str, str] = {}
        if send_audio:
            self.mids["audio"] = "0"
        if send_video:
            self.mids["video"] = str(len(self.mids))
        self.publications: list[Publication] = []
        self._planned = [
            Publication(connection_id, "audio", audio_codec, f"{connection_id}-a")
            for _ in range(send_audio)
        ] + [
            Publication(
                connection_id,
                "video",
                video_codec,
                f"{connection_id}-v",
                rids=["r0", "r1", "r2"] if simulcast else [],
            )
            for _ in range(send_video)
        ]
        self.offers: list[list[Publication]] = []
        self.answers: list[str] = []
        self.candidates: list[str] = []
        self.open_labels: set[str] = set()
        self.sent: list[tuple[str, bytes | str]] = []
        self.sent_event = asyncio.Event()
        self.rid_calls: list[tuple[str | None, str]] = []
        #: the simulcast layer "forwarded" per publisher (see :meth:`switch_layer`)
        self.forwarded: dict[str, str] = {}
        self.keyframe_calls: list[str | None] = []
        self.data_channels_closed = False
        self.closed = False
        self.log: list[str] = []
        self.activity = asyncio.Event()

    def _record(self, entry: str) -> None:
        self.log.append(entry)
        self.activity.set()

    async def wait(self, condition: Callable[[], bool], limit: float = STEP) -> None:
        """Until ``condition()`` holds, re-checked whenever the control plane calls this peer."""

        async def check() -> None:
            while not condition():
                self.activity.clear()
                await self.activity.wait()

        await asyncio.wait_for(check(), limit)

    # -- ServerPeer API -----------------------------------------------------

    async def create_offer(self, subscriptions: Sequence[Publication]) -> str:
        self._record("create_offer")
        self.offers.append(list(subscriptions))
        return self._sdp(subscriptions)

    async def set_answer(self, sdp: str) -> None:
        self._record("set_answer")
        self.answers.append(sdp)
        self.publications = list(self._planned)
        if self.factory.auto_connect:
            asyncio.get_running_loop().call_soon(self.connect)

    def add_ice_candidate(self, candidate: str) -> None:
        self._record("candidate")
        self.candidates.append(candidate)

    async def create_reoffer(self, subscriptions: Sequence[Publication]) -> str:
        self._record("create_reoffer")
        self.offers.append(list(subscriptions))
        return self._sdp(subscriptions)

    async def set_reanswer(self, sdp: str) -> None:
        self._record("set_reanswer")
        self.answers.append(sdp)

    def send_data(self, label: str, data: bytes | str) -> bool:
        if label not in self.open_labels:
            return False
        self.sent.append((label, data))
        self.sent_event.set()
        self.activity.set()
        return True

    async def close_data_channels(self) -> None:
        self._record("close_data_channels")
        self.data_channels_closed = True
        for label in list(self.open_labels):
            self.open_labels.discard(label)
            self.emit("datachannel_close", label)
        if self.factory.client_closes_pc_after_dc_close:
            self.emit("connectionstatechange", "closed")

    def set_simulcast_rid(self, publisher_connection_id: str | None, rid: str) -> None:
        self.rid_calls.append((publisher_connection_id, rid))
        self._record("set_simulcast_rid")

    def forwarded_rid(self, publisher_connection_id: str) -> str | None:
        return self.forwarded.get(publisher_connection_id)

    def request_keyframe(self, rid: str | None = None) -> None:
        self.keyframe_calls.append(rid)
        self._record("request_keyframe")

    async def get_stats(self) -> list[dict[str, Any]]:
        return [{"id": "T01", "type": "transport", "timestamp": 0.0}]

    async def close(self) -> None:
        if not self.closed:
            self._record("close")
            self.closed = True
            self.emit("connectionstatechange", "closed")
            if not self.factory.retain:
                self.factory.peers.pop(self.connection_id, None)

    # -- test controls --------------------------------------------------------

    def switch_layer(self, publisher_connection_id: str, rid: str) -> None:
        """The media now carries ``rid`` from that publisher (a key frame of it came)."""
        previous = self.forwarded.get(publisher_connection_id)
        self.forwarded[publisher_connection_id] = rid
        if previous is not None and previous != rid:
            self.emit("simulcast_switched", publisher_connection_id, previous, rid)

    @staticmethod
    def _sdp(subscriptions: Sequence[Publication]) -> str:
        streams = ",".join(f"{p.connection_id}/{p.kind}" for p in subscriptions)
        return f"v=0\r\na=x-fake-subscriptions:{streams}\r\n"

    def connect(self) -> None:
        """ICE/DTLS up, then (if any) every DataChannel open."""
        self.emit("connectionstatechange", "connected")
        if self.factory.auto_open_data_channels:
            self.open_all_data_channels()

    def open_all_data_channels(self) -> None:
        for spec in self.data_channels:
            self.open_labels.add(spec.label)
            self.emit("datachannel_open", spec.label)

    def client_sends(self, label: str, data: bytes | str) -> None:
        """The client wrote ``data`` on DataChannel ``label``."""
        self.emit("datachannel_message", label, data)

    def client_sends_json(self, label: str, message: dict[str, Any]) -> None:
        text = json.dumps(message)
        spec = next(s for s in self.data_channels if s.label == label)
        self.client_sends(label, zlib.compress(text.encode()) if spec.compress else text)

    def sent_on(self, label: str) -> list[bytes | str]:
        return [data for sent_label, data in self.sent if sent_label == label]

    def sent_json(self, label: str) -> list[dict[str, Any]]:
        spec = next(s for s in self.data_channels if s.label == label)
        out = []
        for data in self.sent_on(label):
            if spec.compress:
                assert isinstance(data, bytes), "compressed labels carry binary"
                data = zlib.decompress(data)
            out.append(json.loads(data))
        return out

    async def wait_sent_json(
        self, label: str, predicate: Callable[[dict[str, Any]], bool], limit: float = STEP
    ) -> dict[str, Any]:
        """The first JSON message sent on ``label`` that matches ``predicate``."""

        async def scan() -> dict[str, Any]:
            while True:
                for message in self.sent_json(label):
                    if predicate(message):
                        return message
                self.sent_event.clear()
                await self.sent_event.wait()

        return await asyncio.wait_for(scan(), limit)


class FakePeerFactory:
    """Creates ``FakePeer``\\ s and remembers them by connection id."""

    def __init__(self, *, retain: bool = True) -> None:
        #: Keep closed peers for inspection (off for leak tests).
        self.retain = retain
        self.peers: dict[str, FakePeer] = {}
        self.auto_connect = True
        self.auto_open_data_channels = True
        self.client_closes_pc_after_dc_close = True

    def __call__(self, **kwargs: Any) -> FakePeer:
        peer = FakePeer(factory=self, **kwargs)
        self.peers[peer.connection_id] = peer
        return peer


class SignalingClient:
    """A bare signaling client over ``websockets``; keeps every message it read."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self._taken: set[int] = set()
        self.offer: dict[str, Any] = {}

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> SignalingClient:
        ws = await asyncio.wait_for(websockets.connect(url, **kwargs), STEP)
        return cls(ws)

    @property
    def connection_id(self) -> str:
        return str(self.offer["connection_id"])

    async def send(self, message: dict[str, Any]) -> None:
        await asyncio.wait_for(self.ws.send(json.dumps(message)), STEP)

    async def send_raw(self, data: str | bytes) -> None:
        await asyncio.wait_for(self.ws.send(data), STEP)

    async def _read(self) -> dict[str, Any]:
        raw = await self.ws.recv()
        message = json.loads(raw)
        assert isinstance(raw, str), "the server sends text frames only"
        self.received.append(message)
        return message

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], limit: float = STEP
    ) -> dict[str, Any]:
        """The first message not returned before that matches ``predicate``, reading as needed."""

        async def scan() -> dict[str, Any]:
            index = 0
            while True:
                while index < len(self.received):
                    if index not in self._taken and predicate(self.received[index]):
                        self._taken.add(index)
                        return self.received[index]
                    index += 1
                await self._read()

        return await asyncio.wait_for(scan(), limit)

    async def wait_type(self, kind: str, limit: float = STEP, **fields: Any) -> dict[str, Any]:
        """The next message of type ``kind`` whose ``fields`` have the given values."""

        def match(message: dict[str, Any]) -> bool:
            return message.get("type") == kind and all(
                message.get(key) == value for key, value in fields.items()
            )

        return await self.wait_for(match, limit)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """Every message of type ``kind`` read so far."""
        return [message for message in self.received if message.get("type") == kind]

    async def wait_notify(
        self, event_type: str, limit: float = STEP, **fields: Any
    ) -> dict[str, Any]:
        return await self.wait_type("notify", limit, event_type=event_type, **fields)

    async def wait_closed(self, limit: float = STEP) -> tuple[int | None, str | None]:
        """Read (and keep) messages until the server closes; returns (code, reason)."""

        async def drain() -> None:
            try:
                while True:
                    await self._read()
            except websockets.ConnectionClosed:
                pass

        await asyncio.wait_for(drain(), limit)
        await asyncio.wait_for(self.ws.wait_closed(), limit)
        received = self.ws.protocol.close_rcvd
        if received is None:
            return None, None
        return received.code, received.reason

    async def close(self) -> None:
        await asyncio.wait_for(self.ws.close(), STEP)


def connect_message(
    channel_id: Any = "ch", role: str = "sendrecv", **fields: Any
) -> dict[str, Any]:
    return {"type": "connect", "role": role, "channel_id": channel_id, **fields}


async def join(
    server: DevServer, channel_id: str = "ch", role: str = "sendrecv", **fields: Any
) -> SignalingClient:
    """Connect, answer, and wait for the own ``connection.created`` (the client is in)."""
    client = await SignalingClient.open(server.signaling_url)
    await client.send(connect_message(channel_id, role, **fields))
    client.offer = await client.wait_type("offer")
    await client.send({"type": "answer", "sdp": "v=0\r\na=fake-answer\r\n"})
    await client.wait_notify("connection.created", connection_id=client.connection_id)
    return client


async def answer_reoffers(client: SignalingClient, count: int = 1) -> list[dict[str, Any]]:
    """Answer the next ``count`` re-offers on the WebSocket."""
    offers = []
    for _ in range(count):
        offer = await client.wait_type("re-offer")
        await client.send({"type": "re-answer", "sdp": "v=0\r\na=fake-re-answer\r\n"})
        offers.append(offer)
    return offers


async def wait_gone(server: DevServer, connection_id: str, limit: float = STEP) -> None:
    """Wait until the server has completely closed connection ``connection_id``."""
    session = server.registry.sessions.get(connection_id)
    if session is not None:
        await asyncio.wait_for(session.closed.wait(), limit)


DevServerStarter = Callable[..., Awaitable[DevServer]]
