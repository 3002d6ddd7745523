"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01).

The sender stamps every RTP packet of the transport with a 16-bit transport-wide
sequence number (header extension
``http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01``);
the receiver reports, in RTCP transport-layer feedback (PT 205, FMT 15), which of
them arrived and when. aiortc parses every RTPFB as a NACK list, so this module
builds and parses the packet itself:

* :func:`build_feedback` / :func:`parse_feedback` — the wire format (§3.1: base
  sequence, status count, 24-bit reference time in 64 ms units, feedback count,
  run-length and status-vector chunks, receive deltas in 250 µs units);
* :class:`FeedbackRecorder` — the receive side: arrival times by transport
  sequence, turned into a feedback packet every ~100 ms;
* :class:`SendHistory` — the send side: what was sent when, matched with
  feedback into :class:`PacketResult` entries for the estimator.
* :func:`stamp_transport_sequence` — writes the sequence number into a
  serialized packet's one-byte header extension in place (at send time, after
  pacing, so the numbers follow the order on the wire).
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .rtp_extensions import one_byte_element_offset

if TYPE_CHECKING:
    from .probing import ProbeCluster

RTCP_RTPFB = 205
TWCC_FMT = 15
#: Receive-delta resolution (µs).
DELTA_UNIT_US = 250
#: Reference-time resolution (µs).
REFERENCE_UNIT_US = 64_000

_NOT_RECEIVED, _SMALL, _LARGE = 0, 1, 2
#: Packets reported per feedback at most (libwebrtc splits there too).
MAX_STATUSES = 1000


@dataclass
class Feedback:
    """One parsed feedback packet."""

    sender_ssrc: int
    media_ssrc: int
    base_sequence: int
    feedback_count: int
    #: ``(sequence, arrival_us or None)``; arrival relative to an arbitrary origin
    #: (reference time), consistent between feedbacks of one receiver.
    packets: list[tuple[int, int | None]]


@dataclass
class PacketResult:
    """A sent packet with its fate: ``arrival`` (s, receiver clock) or None if lost."""

    sequence: int
    send_time: float
    size: int
    arrival: float | None
    #: the probe cluster it was sent in (:mod:`.probing`), if any
    cluster: ProbeCluster | None = None


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: RTCP packet types 192..223 in the second byte."""
    return len(data) >= 2 and 192 <= data[1] <= 223


# --- the wire format ---------------------------------------------------------------


def _chunks(symbols: list[int]) -> list[int]:
    """Packet status chunks for ``symbols``: run-length where 7+ repeat, else 2-bit vectors."""
    chunks: list[int] = []
    i = 0
    while i < len(symbols):
        run = 1
        while i + run < len(symbols) and symbols[i + run] == symbols[i] and run < 0x1FFF:
            run += 1
        if run >= 7:
            chunks.append((symbols[i] << 13) | run)
            i += run
            continue
        group = symbols[i : i + 7]
        chunk = 0xC000
        for index, symbol in enumerate(group):
            chunk |= symbol << (2 * (6 - index))
        chunks.append(chunk)
        i += len(group)
    return chunks


def build_feedback(
    sender_ssrc: int,
    media_ssrc: int,
    base_sequence: int,
    arrivals: list[int | None],
    feedback_count: int,
) -> bytes:
    """One feedback packet: ``arrivals[i]`` is the arrival time (µs, any origin) of
    sequence ``base_sequence + i``, None if it did not arrive. At least one must have."""
    first = next(a for a in arrivals if a is not None)
    reference = first // REFERENCE_UNIT_US
    previous = reference * REFERENCE_UNIT_US
    symbols: list[int] = []
    deltas = bytearray()
    for arrival in arrivals:
        if arrival is None:
            symbols.append(_NOT_RECEIVED)
            continue
        delta = round((arrival - previous) / DELTA_UNIT_US)
        delta = max(-32768, min(32767, delta))
        previous += delta * DELTA_UNIT_US
        if 0 <= delta <= 255:
            symbols.append(_SMALL)
            deltas.append(delta)
        else:
            symbols.append(_LARGE)
            deltas += struct.pack("!h", delta)
    body = struct.pack(
        "!IIHHI",
        sender_ssrc,
        media_ssrc,
        base_sequence & 0xFFFF,
        len(arrivals),
        ((reference & 0xFFFFFF) << 8) | (feedback_count & 0xFF),
    )
    body += b"".join(struct.pack("!H", chunk) for chunk in _chunks(symbols)) + bytes(deltas)
    padding = (-len(body)) % 4
    if padding:
        body += b"\x00" * (padding - 1) + bytes([padding])
    header = struct.pack(
        "!BBH", 0x80 | (0x20 if padding else 0) | TWCC_FMT, RTCP_RTPFB, (len(body) + 4) // 4 - 1
    )
    return header + body


def parse_feedback(data: bytes) -> Feedback:
    """Parse one feedback packet (the whole RTCP packet, header included).

    Raises :class:`ValueError` on a malformed or truncated packet.
    """
    if len(data) < 20:
        raise ValueError("transport-cc feedback too short")
    first, packet_type, length = struct.unpack_from("!BBH", data)
    if packet_type != RTCP_RTPFB or first & 0x1F != TWCC_FMT:
        raise ValueError("not a transport-cc feedback packet")
    end = min(len(data), (length + 1) * 4)
    if first & 0x20 and end > 20:
        end -= data[end - 1]
    sender_ssrc, media_ssrc, base, count, word = struct.unpack_from("!IIHHI", data, 4)
    reference, feedback_count = word >> 8, word & 0xFF
    if reference & 0x800000:
        reference -= 1 << 24
    offset = 20
    symbols: list[int] = []
    while len(symbols) < count:
        if offset + 2 > end:
            raise ValueError("transport-cc feedback: truncated status chunks")
        (chunk,) = struct.unpack_from("!H", data, offset)
        offset += 2
        if not chunk & 0x8000:
            symbols += [(chunk >> 13) & 0x3] * (chunk & 0x1FFF)
        elif not chunk & 0x4000:
            symbols += [(chunk >> (13 - i)) & 0x1 for i in range(14)]
        else:
            symbols += [(chunk >> (2 * (6 - i))) & 0x3 for i in range(7)]
    symbols = symbols[:count]
    arrival = reference * REFERENCE_UNIT_US
    packets: list[tuple[int, int | None]] = []
    for index, symbol in enumerate(symbols):
        sequence = (base + index) & 0xFFFF
        if symbol == _NOT_RECEIVED:
            packets.append((sequence, None))
            continue
        if symbol == _SMALL:
            if offset + 1 > end:
                raise ValueError("transport-cc feedback: truncated deltas")
            delta = data[offset]
            offset += 1
        elif symbol == _LARGE:
            if offset + 2 > end:
                raise ValueError("transport-cc feedback: truncated deltas")
            (delta,) = struct.unpack_from("!h", data, offset)
            offset += 2
        else:
            raise ValueError("transport-cc feedback: reserved status symbol")
        arrival += delta * DELTA_UNIT_US
        packets.append((sequence, arrival))
    return Feedback(sender_ssrc, media_ssrc, base, feedback_count, packets)


def split_compound(data: bytes) -> list[bytes]:
    """The RTCP packets of a compound packet, each with its header."""
    packets: list[bytes] = []
    offset = 0
    while offset + 4 <= len(data):
        length = (struct.unpack_from("!H", data, offset + 2)[0] + 1) * 4
        packets.append(data[offset : offset + length])
        offset += length
    return packets


def stamp_transport_sequence(data: bytearray, extension_id: int, sequence: int) -> bool:
    """Write ``sequence`` into the one-byte header extension ``extension_id`` of a
    serialized RTP packet, in place. False when the packet does not carry it."""
    if len(data) < 12 or not data[0] & 0x10:
        return False
    offset = 12 + 4 * (data[0] & 0x0F)
    if len(data) < offset + 4 or data[offset : offset + 2] != b"\xbe\xde":
        return False
    length = struct.unpack_from("!H", data, offset + 2)[0] * 4
    end = min(len(data), offset + 4 + length)
    at = one_byte_element_offset(data, offset + 4, end, extension_id, 2)
    if at < 0:
        return False
    struct.pack_into("!H", data, at, sequence & 0xFFFF)
    return True


# --- the receive side ----------------------------------------------------------------


class _Unwrapper:
    def __init__(self) -> None:
        self._last: int | None = None

    def unwrap(self, sequence: int) -> int:
        if self._last is None:
            self._last = sequence
            return sequence
        delta = (sequence - self._last) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        self._last += delta
        return self._last


class FeedbackRecorder:
    """Arrival times of received packets by transport sequence, reported in batches."""

    def __init__(self) -> None:
        self._unwrapper = _Unwrapper()
        self._arrivals: dict[int, int] = {}
        self._next: int | None = None
        self._count = 0
        self.media_ssrc = 0

    def record(self, sequence: int, arrival_us: int, media_ssrc: int) -> None:
        unwrapped = self._unwrapper.unwrap(sequence)
        if self._next is not None and unwrapped < self._next:
            return  # already reported (a late or duplicate packet)
        if self._next is None:
            self._next = unwrapped
        self._arrivals[unwrapped] = arrival_us
        self.media_ssrc = media_ssrc

    def build(self, sender_ssrc: int) -> list[bytes]:
        """Feedback for everything recorded since the last call (maybe none)."""
        if not self._arrivals or self._next is None:
            return []
        last = max(self._arrivals)
        packets: list[bytes] = []
        start = self._next
        while start <= last:
            stop = min(last, start + MAX_STATUSES - 1)
            arrivals = [self._arrivals.pop(s, None) for s in range(start, stop + 1)]
            if any(a is not None for a in arrivals):
                packets.append(
                    build_feedback(sender_ssrc, self.media_ssrc, start, arrivals, self._count)
                )
                self._count = (self._count + 1) & 0xFF
            start = stop + 1
        self._next = last + 1
        return packets


# --- the send side -----------------------------------------------------------------------


class SendHistory:
    """Transport-wide sequence numbers handed out, with send time and size."""

    #: Packets remembered (about 10 s of 3 Mbps video).
    LIMIT = 4096

    def __init__(self) -> None:
        self._sequence = 0
        self._sent: OrderedDict[int, tuple[float, int, ProbeCluster | None]] = OrderedDict()

    def next(self, send_time: float, size: int, cluster: ProbeCluster | None = None) -> int:
        sequence = self._sequence
        self._sequence = (sequence + 1) & 0xFFFF
        self._sent[sequence] = (send_time, size, cluster)
        self._sent.move_to_end(sequence)
        while len(self._sent) > self.LIMIT:
            self._sent.popitem(last=False)
        return sequence

    def results(self, feedback: Feedback) -> list[PacketResult]:
        """The packets a feedback reports on that we remember, in sequence order."""
        out: list[PacketResult] = []
        for sequence, arrival_us in feedback.packets:
            sent = self._sent.pop(sequence, None)
            if sent is None:
                continue
            arrival = arrival_us / 1e6 if arrival_us is not None else None
            out.append(PacketResult(sequence, sent[0], sent[1], arrival, sent[2]))
        return out


__all__ = [
    "Feedback",
    "FeedbackRecorder",
    "PacketResult",
    "SendHistory",
    "build_feedback",
    "is_rtcp",
    "parse_feedback",
    "split_compound",
    "stamp_transport_sequence",
]
