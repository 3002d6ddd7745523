"""``_aiortc_seam.parse_rtp`` is aiortc's ``RtpPacket.parse``, only faster.

The receive path parses every RTP packet with it: the same fields, header extensions,
CSRCs, padding and payload, and the same exception for the same malformed packet, on
packets aiortc serializes (one- and two-byte extensions) and on mutated ones.
"""

from __future__ import annotations

import random
from typing import Any

from aiortc.rtp import HeaderExtensions, RtpPacket

from sora_async._aiortc_seam import parse_rtp
from sora_async.rtc.sender import extensions_map

EXTENSIONS = [
    (1, "urn:ietf:params:rtp-hdrext:sdes:mid"),
    (2, "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"),
    (3, "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
    (4, "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
    (5, "urn:ietf:params:rtp-hdrext:toffset"),
    (6, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
    (7, "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"),
]


def outcome(parse: Any, data: bytes, ext_map: Any) -> Any:
    try:
        packet = parse(data, ext_map)
    except Exception as exc:  # the type and message must match too
        return type(exc), str(exc)
    return (
        packet.version,
        packet.marker,
        packet.payload_type,
        packet.sequence_number,
        packet.timestamp,
        packet.ssrc,
        packet.csrc,
        packet.extensions,
        packet.payload,
        packet.padding_size,
    )


def packets(rnd: random.Random, ext_map: Any) -> list[bytes]:
    out = []
    for n in range(60):
        packet = RtpPacket(
            payload_type=rnd.randrange(128),
            marker=n % 2,
            sequence_number=rnd.randrange(1 << 16),
            timestamp=rnd.randrange(1 << 32),
            ssrc=rnd.randrange(1 << 32),
            payload=bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 40))),
        )
        packet.csrc = [rnd.randrange(1 << 32) for _ in range(n % 3)]
        packet.padding_size = (0, 0, 1, 7)[n % 4]
        extensions = packet.extensions
        if n % 5 != 4:
            extensions.transport_sequence_number = rnd.randrange(1 << 16)
        if n % 3 == 0:
            extensions.mid = str(n % 4)
        if n % 4 == 1:
            extensions.rtp_stream_id = "h"
            extensions.abs_send_time = rnd.randrange(1 << 24)
        if n % 6 == 2:
            extensions.repaired_rtp_stream_id = "rid-long-enough-for-two-byte-headers"
        if n % 7 == 3:
            extensions.audio_level = (bool(n % 2), rnd.randrange(128))
        out.append(packet.serialize(ext_map))
    # aiortc writes a transmission offset it cannot read back (2 bytes): a 3-byte one.
    header = bytes.fromhex("906f0102000000030000000b") + b"\xbe\xde\x00\x01"
    out.append(header + bytes([0x52, 0xFF, 0xFF, 0x9C]) + b"payload")
    return out


def test_parse_rtp_gives_what_aiortc_parses() -> None:
    ext_map = extensions_map(EXTENSIONS)
    rnd = random.Random(5)
    sample = packets(rnd, ext_map)
    profiles = {bytes(data[12 + 4 * (data[0] & 0x0F) :][:2]) for data in sample if data[0] & 0x10}
    assert {b"\xbe\xde", b"\x10\x00"} <= profiles  # one- and two-byte extensions
    assert RtpPacket.parse(sample[-1], ext_map).extensions.transmission_offset == -100
    for data in sample:
        expected = outcome(RtpPacket.parse, data, ext_map)
        assert isinstance(expected[7], HeaderExtensions), expected
        assert outcome(parse_rtp, data, ext_map) == expected
        # A map without those ids (or other ids) ignores the extensions alike.
        for other in (extensions_map([]), extensions_map([(7, EXTENSIONS[0][1])])):
            assert outcome(parse_rtp, data, other) == outcome(RtpPacket.parse, data, other)


def test_parse_rtp_refuses_malformed_packets_as_aiortc_does() -> None:
    ext_map = extensions_map(EXTENSIONS)
    rnd = random.Random(11)
    sample = packets(rnd, ext_map)
    failures = set()
    for _ in range(6000):
        data = bytearray(rnd.choice(sample))
        for _ in range(rnd.randrange(1, 4)):
            what = rnd.randrange(4)
            if what == 0 and data:
                data[rnd.randrange(min(len(data), 40))] = rnd.randrange(256)
            elif what == 1:
                data = data[: rnd.randrange(len(data) + 1)]
            elif what == 2 and len(data) > 12:
                data[0] = (data[0] & 0xC0) | rnd.randrange(64)  # P, X, CC
            else:
                data[-1:] = bytes([rnd.randrange(256)])  # padding length
        expected = outcome(RtpPacket.parse, bytes(data), ext_map)
        assert outcome(parse_rtp, bytes(data), ext_map) == expected, bytes(data).hex()
        if isinstance(expected[0], type):
            failures.add(expected[1])
    # Values aiortc cannot decode (a 1-byte transport-cc number, a MID that is not
    # UTF-8), alone and before a truncated element: aiortc checks every element's
    # length first, so the truncation is what it raises then.
    header = bytes.fromhex("906000010000000200000003bede0001")
    for extension in (
        bytes([0x70, 0x01, 0x00, 0x00]),  # transport-cc (id 7) of 1 byte
        bytes([0x70, 0x01, 0x13, 0x00]),  # the same, then an element cut short
        bytes([0x10, 0xFF, 0x70, 0x00]),  # MID (id 1) 0xFF, then an empty tcc
        bytes([0x10, 0xFF, 0x23, 0x00]),  # MID 0xFF, then an element cut short
    ):
        data = header + extension + b"payload"
        expected = outcome(RtpPacket.parse, data, ext_map)
        assert isinstance(expected[0], type), expected
        assert outcome(parse_rtp, data, ext_map) == expected
        failures.add(expected[1])
    # The mutations reach every refusal aiortc has.
    assert {
        "RTP packet length is less than 12 bytes",
        "RTP packet has invalid version",
        "RTP packet has truncated CSRC",
        "RTP packet has truncated extension profile / length",
        "RTP packet has truncated extension value",
        "RTP one-byte header extension value is truncated",
        "RTP packet padding length is invalid",
    } <= failures
