"""Messaging relay on ``#`` labels: directions, the sender-id header, compression, bundles."""

from __future__ import annotations

import zlib
from typing import Any

from sora_async.devserver import DevServer

from .support import FakePeer, FakePeerFactory, join


def _entry(direction: str, **extra: Any) -> dict[str, Any]:
    return {"label": "#chat", "direction": direction, **extra}


async def _member(
    server: DevServer, peers: FakePeerFactory, entry: dict[str, Any] | None, **fields: Any
) -> tuple[str, FakePeer]:
    channels = [entry] if entry is not None else []
    client = await join(
        server, role="sendonly", audio=False, video=False, data_channel_signaling=True,
        data_channels=channels, **fields,
    )  # fmt: skip
    await client.wait_type("switched")
    return client.connection_id, peers.peers[client.connection_id]


async def test_messages_follow_directions_and_never_echo(
    server: DevServer, peers: FakePeerFactory
) -> None:
    sender_id, sender = await _member(server, peers, _entry("sendrecv"))
    _, receiver = await _member(server, peers, _entry("recvonly"))
    _, both = await _member(server, peers, _entry("sendrecv"))
    _, deaf = await _member(server, peers, _entry("sendonly"))
    _, unlabelled = await _member(server, peers, None)

    sender.client_sends("#chat", b"hello")
    assert receiver.sent_on("#chat") == [b"hello"]
    assert both.sent_on("#chat") == [b"hello"]
    assert sender.sent_on("#chat") == [], "never back to the sender"
    assert deaf.sent_on("#chat") == [] and unlabelled.sent_on("#chat") == []

    # A recvonly entry cannot send.
    receiver.client_sends("#chat", b"ignored")
    assert sender.sent_on("#chat") == [] and both.sent_on("#chat") == [b"hello"]
    # Text stays text.
    both.client_sends("#chat", "text")
    assert sender.sent_on("#chat") == ["text"]
    assert sender_id not in str(receiver.sent_on("#chat"))


async def test_header_prepends_the_26_byte_sender_id(
    server: DevServer, peers: FakePeerFactory
) -> None:
    sender_id, sender = await _member(server, peers, _entry("sendonly"))
    header = [{"type": "sender_connection_id"}]
    _, with_header = await _member(server, peers, _entry("recvonly", header=header))
    _, without = await _member(server, peers, _entry("recvonly"))
    sender.client_sends("#chat", b"\x00\x01payload")
    (received,) = with_header.sent_on("#chat")
    assert isinstance(received, bytes) and len(received) == 26 + 9
    assert received[:26] == sender_id.encode() and received[26:] == b"\x00\x01payload"
    assert without.sent_on("#chat") == [b"\x00\x01payload"]


async def test_compression_is_per_receiver(server: DevServer, peers: FakePeerFactory) -> None:
    _, sender = await _member(server, peers, _entry("sendonly", compress=True))
    _, plain = await _member(server, peers, _entry("recvonly"))
    _, packed = await _member(
        server, peers, _entry("recvonly", compress=True, header=[{"type": "sender_connection_id"}])
    )
    sender.client_sends("#chat", zlib.compress(b"x" * 1000))
    assert plain.sent_on("#chat") == [b"x" * 1000]
    (compressed,) = packed.sent_on("#chat")
    assert isinstance(compressed, bytes)
    inflated = zlib.decompress(compressed)
    assert len(inflated) == 26 + 1000 and inflated.endswith(b"x" * 1000)


async def test_same_bundle_gets_no_messages(server: DevServer, peers: FakePeerFactory) -> None:
    _, sender = await _member(server, peers, _entry("sendonly"), bundle_id="b")
    _, twin = await _member(server, peers, _entry("recvonly"), bundle_id="b")
    _, other = await _member(server, peers, _entry("recvonly"))
    sender.client_sends("#chat", b"m")
    assert twin.sent_on("#chat") == [] and other.sent_on("#chat") == [b"m"]


async def test_other_channels_get_nothing(server: DevServer, peers: FakePeerFactory) -> None:
    _, sender = await _member(server, peers, _entry("sendonly"))
    _, elsewhere = await _member(server, peers, _entry("recvonly"), channel_id="other")
    sender.client_sends("#chat", b"m")
    assert elsewhere.sent_on("#chat") == []
