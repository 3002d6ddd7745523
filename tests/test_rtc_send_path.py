"""The sender writes its RTP headers itself (the extension block built once per RID
and audio level): the bytes are exactly aiortc's ``RtpPacket.serialize`` of the same
packet (every extension the sender writes, one- and two-byte blocks, audio levels, a
re-offer with other extension ids)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from aiortc.rtp import RtpPacket

import sora_async.rtc.sender as sender_module
from sora_async.codecs import EncodedFrame, create_packetizer
from sora_async.rtc.sdp import (
    EXT_ABS_SEND_TIME,
    EXT_AUDIO_LEVEL,
    EXT_MID,
    EXT_RID,
    EXT_RRID,
    EXT_TRANSPORT_CC,
)
from sora_async.rtc.sender import EncodingParameters, RtpSender, extensions_map
from tests.rtc_support import opus_codec, vp8_codec

ABS_SEND_TIME = 0xABCDEF

ONE_BYTE = [
    (1, EXT_MID),
    (3, EXT_ABS_SEND_TIME),
    (5, EXT_TRANSPORT_CC),
    (10, EXT_RID),
    (11, EXT_RRID),
]
TWO_BYTE = [(1, EXT_MID), (15, EXT_ABS_SEND_TIME), (20, EXT_TRANSPORT_CC), (10, EXT_RID)]


class _Source:
    kind = "video"

    async def recv(self) -> Any:
        await asyncio.sleep(3600)


def _sender(
    kind: str, extensions: list[tuple[int, str]], rid: str | None
) -> tuple[RtpSender, list[bytes]]:
    sent: list[bytes] = []

    async def send(data: bytes) -> bool:
        sent.append(data)
        return True

    sender = RtpSender(
        kind=kind,
        mid="7",
        source=_Source(),
        codec=vp8_codec() if kind == "video" else opus_codec(),
        extensions=extensions,
        encodings=[EncodingParameters(rid=rid)] if rid else None,
        send=send,
        cname="c",
        encoder_factory=lambda codec, layer: None,
        taken_ssrcs=set(),
    )
    return sender, sent


def _expected(
    sender: RtpSender,
    data: bytes,
    rid: str | None,
    level: int | None,
    extensions: list[tuple[int, str]],
) -> bytes:
    """aiortc's serialization of the packet the sender meant to write."""
    ext_ids = {uri for _, uri in extensions}
    got = RtpPacket.parse(data, extensions_map(extensions))
    packet = RtpPacket(
        payload_type=sender.codec.payload_type,
        marker=got.marker,
        sequence_number=got.sequence_number,
        timestamp=got.timestamp,
        ssrc=sender.layers[0].ssrc,
        payload=got.payload,
    )
    if EXT_MID in ext_ids:
        packet.extensions.mid = "7"
    if rid and EXT_RID in ext_ids:
        packet.extensions.rtp_stream_id = rid
    if EXT_ABS_SEND_TIME in ext_ids:
        packet.extensions.abs_send_time = ABS_SEND_TIME
    if level is not None and EXT_AUDIO_LEVEL in ext_ids:
        packet.extensions.audio_level = (False, level)
    if EXT_TRANSPORT_CC in ext_ids:
        packet.extensions.transport_sequence_number = 0
    return packet.serialize(extensions_map(extensions))


@pytest.mark.parametrize(
    "extensions",
    [[], [(1, EXT_MID)], [(3, EXT_ABS_SEND_TIME)], ONE_BYTE, TWO_BYTE],
    ids=["none", "mid", "abs", "one-byte", "two-byte"],
)
@pytest.mark.parametrize("rid", [None, "r1", "long-rid-value"])
def test_video_packets_are_aiortcs_serialization(
    monkeypatch: pytest.MonkeyPatch, extensions: list[tuple[int, str]], rid: str | None
) -> None:
    monkeypatch.setattr(sender_module, "abs_send_time", lambda: ABS_SEND_TIME)
    rng = random.Random(len(extensions) * 7 + len(rid or ""))
    sender, sent = _sender("video", extensions, rid)
    layer = sender.layers[0]
    layer.packetizer = create_packetizer("VP8")
    layer.sequence = 0xFFF0  # wraps
    for index in range(12):
        size = rng.choice([1, 50, 1100, 1200, 5000, 20000])
        frame = EncodedFrame(
            data=rng.randbytes(size),
            timestamp=(0xFFFFF000 + index * 3000) & 0xFFFFFFFF,
            codec="VP8",
        )
        before = len(sent)
        asyncio.run(sender._packetize(frame, layer))
        assert len(sent) > before
        for number, data in enumerate(sent[before:]):
            assert data == _expected(sender, data, rid, None, extensions)
            assert (data[1] >> 7) == (number == len(sent) - before - 1)
            assert layer.history[int.from_bytes(data[2:4], "big")] == data


def test_audio_packets_carry_each_frames_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sender_module, "abs_send_time", lambda: ABS_SEND_TIME)
    extensions = [(1, EXT_MID), (2, EXT_AUDIO_LEVEL), (5, EXT_TRANSPORT_CC)]
    sender, sent = _sender("audio", extensions, None)
    layer = sender.layers[0]
    layer.packetizer = create_packetizer("opus")
    for index, level in enumerate([127, 0, 30, 30, 127, 5, 0]):
        frame = EncodedFrame(data=bytes([index]) * 80, timestamp=index * 960, codec="opus")
        frame.audio_level = level
        layer.started_talkspurt = index in (0, 4)
        asyncio.run(sender._packetize(frame, layer))
        assert sent[-1] == _expected(sender, sent[-1], None, level, extensions)
        assert sent[-1][1] >> 7 == (index in (0, 4))


def test_a_reoffer_with_other_extension_ids_changes_the_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sender_module, "abs_send_time", lambda: ABS_SEND_TIME)
    sender, sent = _sender("video", ONE_BYTE, "r")
    layer = sender.layers[0]
    layer.packetizer = create_packetizer("VP8")
    frame = EncodedFrame(data=b"\x10" * 3000, timestamp=0, codec="VP8")
    asyncio.run(sender._packetize(frame, layer))
    assert sent[-1] == _expected(sender, sent[-1], "r", None, ONE_BYTE)
    sender.update(vp8_codec(), TWO_BYTE, None)
    asyncio.run(
        sender._packetize(EncodedFrame(data=b"\x10" * 3000, timestamp=0, codec="VP8"), layer)
    )
    assert sent[-1] == _expected(sender, sent[-1], "r", None, TWO_BYTE)
