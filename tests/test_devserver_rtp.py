"""Byte-level RTP helpers of the dev server's forwarder, and its offer SDP."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtcdtlstransport import RTCDtlsFingerprint
from aiortc.rtcicetransport import RTCIceCandidate, RTCIceParameters
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription

from sora_async.codecs.registry import create_depacketizer
from sora_async.devserver.rtp import parse_rtp, rewrite_rtp, seq_newer
from sora_async.devserver.sdp import CODECS, MediaSection, TransportDescription, write_offer


def _packet_with_extensions() -> bytes:
    # one-byte header extensions: id 1 (mid "1"), id 2 (rid "r2")
    ext = bytes([0x10, ord("1"), 0x21, ord("r"), ord("2"), 0x00, 0x00, 0x00])
    header = struct.pack("!BBHII", 0x90, 0x80 | 96, 65535, 0xFFFFFF00, 0x1234)
    return header + struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext + b"\x90\xe0payload"


def test_parse_reads_one_byte_extensions_and_payload_offset() -> None:
    data = _packet_with_extensions()
    header = parse_rtp(data)
    assert (header.payload_type, header.marker, header.sequence_number) == (96, True, 65535)
    assert header.ssrc == 0x1234
    assert header.extensions == {1: b"1", 2: b"r2"}
    assert data[header.payload_offset :] == b"\x90\xe0payload"


def test_rewrite_strips_extensions_and_keeps_marker_and_payload() -> None:
    data = _packet_with_extensions()
    out = rewrite_rtp(
        data, parse_rtp(data), ssrc=0xCAFE, payload_type=98, sequence_number=7, timestamp=9
    )
    packet = RtpPacket.parse(out)
    assert (packet.ssrc, packet.payload_type, packet.sequence_number, packet.timestamp) == (
        0xCAFE,
        98,
        7,
        9,
    )
    assert packet.marker == 1
    assert packet.extensions.mid is None
    assert packet.payload == b"\x90\xe0payload"
    assert len(out) == 12 + len(b"\x90\xe0payload")


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80\x60\x00", b"\x40" + bytes(11), bytes([0x90]) + bytes(11)],
    ids=["empty", "short", "version1", "truncated-extension"],
)
def test_parse_rejects_malformed_packets(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_rtp(data)


@pytest.mark.parametrize(
    ("codec", "payload", "expected"),
    [
        # VP8: S=1, PID=0, no X; payload header P bit 0 -> key frame
        ("VP8", bytes([0x10, 0x00, 0x00]), True),
        ("VP8", bytes([0x10, 0x01, 0x00]), False),  # P=1: inter frame
        ("VP8", bytes([0x00, 0x00]), False),  # not the start of the partition
        # VP8 with X, I (15-bit picture id): descriptor is 4 bytes
        ("VP8", bytes([0x90, 0x80, 0x81, 0x23, 0x00]), True),
        # VP9: I=1 (7-bit pid), P=0, B=1, then the uncompressed header
        ("VP9", bytes([0x88, 0x05, 0x82, 0x49, 0x83, 0x42, 0x00]), True),
        ("VP9", bytes([0xC8, 0x05]), False),  # P=1
        ("VP9", bytes([0x80, 0x05]), False),  # not B
        # AV1 aggregation header: N=1 starts a coded video sequence
        ("AV1", bytes([0x18, 0x08, 0x00, 0x00]), True),  # + a sequence header OBU
        ("AV1", bytes([0x10]), False),
        ("AV1", bytes([0x98]), False),  # Z=1: continuation
        # H.264: IDR, STAP-A holding SPS, FU-A start of IDR, non-IDR slice
        ("H264", bytes([0x65, 0x88]), True),
        ("H264", bytes([0x78, 0x00, 0x02, 0x67, 0x42]), True),
        ("H264", bytes([0x7C, 0x85, 0x88, 0x80]), True),
        ("H264", bytes([0x7C, 0x05]), False),  # FU-A, not the start
        ("H264", bytes([0x41, 0x9A]), False),
        # H.265: IDR_W_RADL (19), FU (49) starting CRA (21), TRAIL_R (1)
        ("H265", bytes([19 << 1, 0x01, 0xAF, 0x00]), True),
        ("H265", bytes([49 << 1, 0x01, 0x80 | 21, 0xAF]), True),
        ("H265", bytes([1 << 1, 0x01]), False),
    ],
)
def test_keyframe_detection(codec: str, payload: bytes, expected: bool) -> None:
    # what the forwarder switches layers on; the codec layer owns the formats
    assert create_depacketizer(codec).is_keyframe_start(payload) is expected


def test_keyframe_detection_survives_truncated_descriptors() -> None:
    assert create_depacketizer("VP8").is_keyframe_start(bytes([0x90, 0x80])) is False
    assert create_depacketizer("H265").is_keyframe_start(bytes([49 << 1])) is False


def test_sequence_numbers_wrap() -> None:
    assert seq_newer(0, 65535)
    assert not seq_newer(65535, 0)
    assert not seq_newer(5, 5)


def _transport() -> TransportDescription:
    return TransportDescription(
        ice=RTCIceParameters(usernameFragment="ufrag", password="p" * 22),
        fingerprints=[RTCDtlsFingerprint(algorithm="sha-256", value="AA:" * 31 + "AA")],
        candidates=[
            RTCIceCandidate(
                component=1,
                foundation="1",
                ip="127.0.0.1",
                port=5000,
                priority=1,
                protocol="udp",
                type="host",
            )
        ],
    )


def test_offer_has_simulcast_recv_lines_and_reject_semantics() -> None:
    sections = [
        MediaSection(
            kind="video",
            mid="0",
            codec=CODECS["VP9"],
            rids=[("r0", True), ("r1", True), ("r2", False)],
        ),
        MediaSection(
            kind="audio",
            mid="1",
            direction="sendonly",
            codec=CODECS["OPUS"],
            ssrc=1234,
            stream_id="SENDER",
            track_id="t1",
        ),
        MediaSection(kind="video", mid="2", codec=CODECS["VP8"], rejected=True),
        MediaSection(kind="application", mid="3"),
    ]
    sdp = write_offer(sections, _transport(), session_id=1, version=2)
    assert "a=group:BUNDLE 0 1 3\r\n" in sdp
    assert "a=rid:r2 recv\r\na=simulcast:recv r0;r1;~r2\r\n" in sdp
    assert "a=msid:SENDER t1" in sdp and "a=ssrc:1234 msid:SENDER t1" in sdp
    assert "m=video 0 UDP/TLS/RTP/SAVPF 96 97" in sdp
    # no SSRC lines in server-recvonly m-lines (official-client-notes.md)
    video = sdp.split("m=audio")[0]
    assert "a=ssrc" not in video
    parsed = SessionDescription.parse(sdp)
    assert [m.rtp.muxId or "" for m in parsed.media[:3]] == ["0", "1", "2"]
    assert parsed.media[2].port == 0
    assert parsed.media[3].sctp_port == 5000
