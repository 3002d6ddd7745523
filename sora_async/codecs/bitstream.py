"""Small bitstream helpers shared by the payload formats.

- LEB128 (AV1 spec §4.10.5, used by the AV1 RTP aggregation format),
- Annex-B start-code splitting and joining (H.264 Annex B, H.265 Annex B),
- an Exp-Golomb bit reader (H.264 §9.1) for ``first_mb_in_slice``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .base import MalformedPayloadError

ANNEXB_START_CODE = b"\x00\x00\x00\x01"
#: AV1 limits LEB128 values to 8 bytes (AV1 spec §4.10.5).
_LEB128_MAX_BYTES = 8


def leb128_encode(value: int) -> bytes:
    """Unsigned LEB128 encoding of ``value`` (``0 <= value < 2**56``)."""
    if value < 0 or value >= 1 << (7 * _LEB128_MAX_BYTES):
        raise ValueError(f"LEB128 value out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def leb128_decode(data: bytes | memoryview, pos: int = 0) -> tuple[int, int]:
    """Decode a LEB128 value at ``pos``; returns ``(value, position after it)``.

    Raises :class:`MalformedPayloadError` when truncated or longer than 8 bytes.
    """
    value = 0
    for i in range(_LEB128_MAX_BYTES):
        if pos + i >= len(data):
            raise MalformedPayloadError("truncated LEB128 value")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise MalformedPayloadError("LEB128 value longer than 8 bytes")


def leb128_size(value: int) -> int:
    """Bytes :func:`leb128_encode` needs for ``value``."""
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex-B byte stream, start codes removed.

    Accepts 3- and 4-byte start codes; bytes before the first start code are
    ignored (Annex B allows leading zero bytes). Trailing zero bytes of a NAL
    unit (``trailing_zero_8bits``) are stripped. Data without any start code
    is taken as one NAL unit (some encoders emit a bare NAL).
    """
    nals: list[bytes] = []
    first = data.find(b"\x00\x00\x01")
    if first < 0:
        return [data] if data else []
    pos = first + 3
    length = len(data)
    while pos <= length:
        nxt = data.find(b"\x00\x00\x01", pos)
        end = length if nxt < 0 else nxt
        # A 4-byte start code leaves a zero at the end of the previous NAL; a
        # NAL unit never ends in 0x00 (rbsp_trailing_bits), so strip them all.
        nal = data[pos:end].rstrip(b"\x00")
        if nal:
            nals.append(nal)
        if nxt < 0:
            break
        pos = nxt + 3
    return nals


def join_annexb(nals: list[bytes]) -> bytes:
    """Annex-B byte stream with 4-byte start codes (what FFmpeg's parsers prefer)."""
    return b"".join(ANNEXB_START_CODE + nal for nal in nals)


def plan_nal_payloads(
    nals: Sequence[bytes],
    max_payload_size: int,
    *,
    aggregation_header_size: int,
    aggregate: Callable[[Sequence[bytes]], bytes],
    fragment: Callable[[bytes, int], list[bytes]],
) -> list[bytes]:
    """RTP payloads for the NAL units of one access unit, H.264 or H.265 alike.

    The same plan serves RFC 6184 §5.7 (STAP-A/FU-A) and RFC 7798 §4.4 (AP/FU):
    a unit too large for one payload is fragmented; consecutive units that fit
    together are aggregated behind a 16-bit size each; a lone unit goes as is.
    """
    size_field = 2
    payloads: list[bytes] = []
    i = 0
    while i < len(nals):
        nal = nals[i]
        if len(nal) > max_payload_size:
            payloads.extend(fragment(nal, max_payload_size))
            i += 1
            continue
        size = aggregation_header_size + size_field + len(nal)
        j = i + 1
        while j < len(nals) and size + size_field + len(nals[j]) <= max_payload_size:
            size += size_field + len(nals[j])
            j += 1
        if j - i >= 2:
            payloads.append(aggregate(nals[i:j]))
            i = j
        else:
            payloads.append(nal)
            i += 1
    return payloads


class BitReader:
    """MSB-first bit reader with Exp-Golomb (``ue(v)``) support; raises on overrun."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read_bit(self) -> int:
        byte_index = self._pos >> 3
        if byte_index >= len(self._data):
            raise MalformedPayloadError("bitstream overrun")
        bit = (self._data[byte_index] >> (7 - (self._pos & 7))) & 1
        self._pos += 1
        return bit

    def read_bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = (value << 1) | self.read_bit()
        return value

    def read_ue(self) -> int:
        """Unsigned Exp-Golomb code (H.264 §9.1)."""
        zeros = 0
        while self.read_bit() == 0:
            zeros += 1
            if zeros > 31:
                raise MalformedPayloadError("Exp-Golomb code too long")
        return (1 << zeros) - 1 + self.read_bits(zeros)


def strip_emulation_prevention(data: bytes) -> bytes:
    """RBSP from a NAL payload: drop each 0x03 of ``00 00 03`` (H.264 §7.4.1)."""
    if b"\x00\x00\x03" not in data:
        return data
    out = bytearray()
    zeros = 0
    for byte in data:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)
