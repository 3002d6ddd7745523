"""RTP header extensions in serialized packets (RFC 8285), for the per-packet hot paths.

aiortc parses and serializes extensions through ``RtpPacket`` objects; the send
path instead keeps serialized bytes and writes single values in place
(abs-send-time per packet, the transport-wide sequence number at send time),
which needs only where an element's value starts.
"""

from __future__ import annotations


def one_byte_element_offset(
    data: bytes | bytearray, start: int, end: int, extension_id: int, size: int
) -> int:
    """Where the value of element ``extension_id`` (``size`` bytes) starts in the
    one-byte-header extension elements ``data[start:end]`` (RFC 8285 §4.2), or -1
    when the element is absent, has another size, or follows the id-15 stop mark."""
    position = start
    while position < end:
        byte = data[position]
        if byte == 0:  # padding
            position += 1
            continue
        element_id, length = byte >> 4, (byte & 0x0F) + 1
        if element_id == 15:
            return -1
        if element_id == extension_id:
            return position + 1 if length == size else -1
        position += 1 + length
    return -1


__all__ = ["one_byte_element_offset"]
