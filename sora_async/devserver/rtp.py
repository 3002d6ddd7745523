"""RTP/RTCP byte-level helpers for forwarding without decoding.

The forwarder never depacketizes: it reads the fixed header, the RFC 8285
header extensions it needs (MID, RID, repaired RID) and the first bytes of
the payload to tell key frames, then rewrites SSRC, payload type, sequence
number and timestamp in place.
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


# --- key-frame detection -----------------------------------------------------


def is_keyframe_start(codec: str, data: bytes) -> bool:
    """Whether an RTP payload starts a key frame that a decoder can start from.

    Per codec: VP8 (RFC 7741 §4.3), VP9 (RFC 9628 §4.2), AV1 (AOM RTP spec
    §4.4, N bit), H.264 (RFC 6184: IDR/SPS NAL units), H.265 (RFC 7798: IRAP
    or parameter-set NAL units).
    """
    if not data:
        return False
    try:
        if codec == "VP8":
            return _vp8_keyframe_start(data)
        if codec == "VP9":
            return _vp9_keyframe_start(data)
        if codec == "AV1":
            # N=1: first packet of a coded video sequence (a key frame with a
            # sequence header); Z=0: does not continue a previous OBU.
            return bool(data[0] & 0x08) and not data[0] & 0x80
        if codec == "H264":
            return _h264_keyframe_start(data)
        if codec == "H265":
            return _h265_keyframe_start(data)
    except IndexError:
        return False
    return False


def _vp8_keyframe_start(data: bytes) -> bool:
    first = data[0]
    start_of_partition = bool(first & 0x10)
    partition_id = first & 0x07
    if not start_of_partition or partition_id != 0:
        return False
    pos = 1
    if first & 0x80:  # X: extended control bits
        ext = data[pos]
        pos += 1
        if ext & 0x80:  # I: PictureID
            pos += 2 if data[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/KEYIDX byte
            pos += 1
    # VP8 payload header: P bit (inverse key frame flag) is bit 0 (RFC 7741 §4.3)
    return not data[pos] & 0x01


def _vp9_keyframe_start(data: bytes) -> bool:
    first = data[0]
    begins_frame = bool(first & 0x08)  # B
    inter_predicted = bool(first & 0x40)  # P
    if not begins_frame or inter_predicted:
        return False
    if first & 0x20:  # L: layer indices present; only spatial layer 0 starts a picture
        pos = 1
        if first & 0x80:  # I: PictureID
            pos += 2 if data[pos] & 0x80 else 1
        spatial_id = (data[pos] >> 1) & 0x07
        return spatial_id == 0
    return True


H264_KEY_NAL_TYPES = frozenset({5, 7})  # IDR slice, SPS


def _h264_keyframe_start(data: bytes) -> bool:
    nal_type = data[0] & 0x1F
    if nal_type in H264_KEY_NAL_TYPES:
        return True
    if nal_type == 24:  # STAP-A: 16-bit size then NAL unit, repeated
        pos = 1
        while pos + 2 < len(data):
            size = struct.unpack_from("!H", data, pos)[0]
            if data[pos + 2] & 0x1F in H264_KEY_NAL_TYPES:
                return True
            pos += 2 + size
        return False
    if nal_type == 28:  # FU-A: start bit and original type in the FU header
        return bool(data[1] & 0x80) and (data[1] & 0x1F) in H264_KEY_NAL_TYPES
    return False


def _h265_is_key_type(nal_type: int) -> bool:
    # IRAP pictures (BLA/IDR/CRA, 16..21) and VPS/SPS/PPS (32..34)
    return 16 <= nal_type <= 21 or 32 <= nal_type <= 34


def _h265_keyframe_start(data: bytes) -> bool:
    nal_type = (data[0] >> 1) & 0x3F
    if _h265_is_key_type(nal_type):
        return True
    if nal_type == 48:  # aggregation packet: 2-byte header, then 16-bit size + NAL
        pos = 2
        while pos + 2 < len(data):
            size = struct.unpack_from("!H", data, pos)[0]
            if _h265_is_key_type((data[pos + 2] >> 1) & 0x3F):
                return True
            pos += 2 + size
        return False
    if nal_type == 49:  # fragmentation unit: FU header after the 2-byte payload header
        fu_header = data[2]
        return bool(fu_header & 0x80) and _h265_is_key_type(fu_header & 0x3F)
    return False


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
