"""RTP/RTCP byte-level helpers for forwarding without decoding.

The forwarder never depacketizes: it reads the fixed header and the RFC 8285
header extensions it needs (MID, RID, repaired RID), asks the codec layer
whether a payload starts a key frame, then rewrites SSRC, payload type,
sequence number and timestamp.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_HEADER = struct.Struct("!BBHII")


@dataclass(slots=True)
class RtpHeader:
    """The parts of an RTP packet the forwarder looks at (RFC 3550 §5.1)."""

    payload_type: int
    marker: bool
    sequence_number: int
    timestamp: int
    ssrc: int
    #: offset of the payload in the packet
    payload_offset: int
    #: offset where the header extension block starts (0 if none)
    extension_offset: int
    #: one- or two-byte header extension elements: id -> value
    extensions: dict[int, bytes]
    padding: int


def parse_rtp(data: bytes) -> RtpHeader:
    """Parse the header of an RTP packet; raises ValueError on malformed input."""
    if len(data) < 12:
        raise ValueError("RTP packet too short")
    first, second, seq, ts, ssrc = RTP_HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise ValueError("not RTP version 2")
    cc = first & 0x0F
    offset = 12 + 4 * cc
    extensions: dict[int, bytes] = {}
    ext_offset = 0
    if first & 0x10:
        if len(data) < offset + 4:
            raise ValueError("truncated header extension")
        ext_offset = offset
        profile, length = struct.unpack_from("!HH", data, offset)
        body_start = offset + 4
        body_end = body_start + 4 * length
        if len(data) < body_end:
            raise ValueError("truncated header extension")
        extensions = _parse_extension_elements(profile, data[body_start:body_end])
        offset = body_end
    padding = 0
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or offset + padding > len(data):
            raise ValueError("bad RTP padding")
    if offset > len(data) - padding:
        raise ValueError("RTP header longer than packet")
    return RtpHeader(
        payload_type=second & 0x7F,
        marker=bool(second & 0x80),
        sequence_number=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload_offset=offset,
        extension_offset=ext_offset,
        extensions=extensions,
        padding=padding,
    )


def _parse_extension_elements(profile: int, body: bytes) -> dict[int, bytes]:
    elements: dict[int, bytes] = {}
    pos = 0
    if profile == 0xBEDE:  # one-byte header (RFC 8285 §4.2)
        while pos < len(body):
            byte = body[pos]
            if byte == 0:  # padding
                pos += 1
                continue
            ext_id, length = byte >> 4, (byte & 0x0F) + 1
            if ext_id == 15:
                break
            elements[ext_id] = body[pos + 1 : pos + 1 + length]
            pos += 1 + length
    elif profile & 0xFFF0 == 0x1000:  # two-byte header (RFC 8285 §4.3)
        while pos + 1 < len(body):
            ext_id = body[pos]
            if ext_id == 0:
                pos += 1
                continue
            length = body[pos + 1]
            elements[ext_id] = body[pos + 2 : pos + 2 + length]
            pos += 2 + length
    return elements


def rewrite_rtp(
    data: bytes,
    header: RtpHeader,
    *,
    ssrc: int,
    payload_type: int,
    sequence_number: int,
    timestamp: int,
) -> bytes:
    """Return ``data`` with new SSRC/PT/sequence/timestamp and without header
    extensions: the publisher's extension ids mean nothing to the subscriber
    (and a foreign MID value would make libwebrtc demux to the wrong m-line)."""
    first = data[0]
    cc = first & 0x0F
    csrc_end = 12 + 4 * cc
    out = bytearray(12)
    RTP_HEADER.pack_into(
        out,
        0,
        first & ~0x10 & 0xFF,
        (data[1] & 0x80) | payload_type,
        sequence_number & 0xFFFF,
        timestamp & 0xFFFFFFFF,
        ssrc,
    )
    out += data[12:csrc_end]
    out += data[header.payload_offset :]
    return bytes(out)


def payload(data: bytes, header: RtpHeader) -> bytes:
    """The payload of a parsed packet, without padding."""
    return data[header.payload_offset : len(data) - header.padding]


# --- sequence arithmetic -----------------------------------------------------


def seq_newer(a: int, b: int) -> bool:
    """True if 16-bit sequence number ``a`` is after ``b`` (RFC 3550 A.1 style)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000


def unwrap_rtx(data: bytes, header: RtpHeader) -> tuple[int, bytes] | None:
    """Original sequence number and payload of an RTX packet (RFC 4588 §4)."""
    body = payload(data, header)
    if len(body) < 2:
        return None  # padding-only probe
    return struct.unpack_from("!H", body)[0], body[2:]


# --- transport-wide congestion control -----------------------------------------


def add_transport_sequence(data: bytes, extension_id: int, sequence: int) -> bytes:
    """``data`` with a transport-wide sequence number (draft-holmer-rmcat-transport-
    wide-cc-extensions-01) in a one-byte-header extension element ``extension_id``.

    Forwarded packets carry no extensions (``rewrite_rtp``): the block is added;
    where one exists, an element with this id is overwritten, else one is appended
    to a one-byte-header block. Packets with another kind of block go out as they are.
    """
    first = data[0]
    header_end = 12 + 4 * (first & 0x0F)
    element = bytes([(extension_id << 4) | 1]) + (sequence & 0xFFFF).to_bytes(2, "big")
    if not first & 0x10:
        block = b"\xbe\xde\x00\x01" + element + b"\x00"
        return bytes([first | 0x10]) + data[1:header_end] + block + data[header_end:]
    profile, length = struct.unpack_from("!HH", data, header_end)
    if profile != 0xBEDE:
        return data
    body_start = header_end + 4
    body = bytearray(data[body_start : body_start + 4 * length])
    pos = 0
    while pos < len(body):
        byte = body[pos]
        if byte == 0:
            pos += 1
            continue
        ext_id, size = byte >> 4, (byte & 0x0F) + 1
        if ext_id == 15:
            break
        if ext_id == extension_id and size == 2:
            body[pos + 1 : pos + 3] = element[1:]
            return data[:body_start] + bytes(body) + data[body_start + 4 * length :]
        pos += 1 + size
    used = pos
    body = body[:used] + element
    body += b"\x00" * (-len(body) % 4)
    out = bytearray(data[:header_end])
    out += struct.pack("!HH", 0xBEDE, len(body) // 4) + body
    out += data[body_start + 4 * length :]
    return bytes(out)
