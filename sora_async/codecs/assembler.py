"""Per-SSRC frame assembly: RTP packets in (any order), complete frames out.

This is the receive-side piece that feeds a :class:`Depacketizer` per frame.
It differs from aiortc's ``JitterBuffer`` (``aiortc-notes.md`` A.7) where that
hurts latency or recovery:

- a frame is emitted as soon as its packets from frame start to marker are
  all in (aiortc waits for the first packet of the *next* frame);
- frames come out in order; a gap is waited for only ``reorder_window``
  packets, then declared lost: later non-key frames are dropped (they would
  not decode) and :attr:`FrameAssembler.keyframe_needed` asks the caller to
  send a PLI, instead of stalling until 512 packets overflow;
- garbage payloads drop their frame (counted), never raise.

Frame boundaries come from the RTP marker bit, timestamp changes and the
depacketizer's ``is_frame_start``/``is_frame_end`` helpers.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Depacketizer, EncodedFrame, MalformedPayloadError


@dataclass(frozen=True)
class AssembledFrame:
    """A depacketized frame and where it came from."""

    frame: EncodedFrame
    first_sequence: int
    last_sequence: int
    #: True when packets before this frame were lost (it is a key frame then).
    after_loss: bool = False


class _Packet:
    """One buffered packet (a slotted class: built per packet, cheaper than a dataclass)."""

    __slots__ = ("marker", "payload", "starts", "timestamp")

    def __init__(self, timestamp: int, marker: bool, payload: bytes) -> None:
        self.timestamp = timestamp
        self.marker = marker
        self.payload = payload
        #: The depacketizer's is_frame_start(payload), asked once when first needed:
        #: after a loss _next_frame_start checks every buffered packet per new packet.
        self.starts: bool | None = None


class FrameAssembler:
    """Turns one SSRC's RTP packets into :class:`AssembledFrame` objects.

    Example::

        assembler = FrameAssembler(registry.create_depacketizer("VP9"))
        for frame in assembler.add(packet.sequence_number, packet.timestamp,
                                   packet.marker, packet.payload):
            decoder.decode(frame.frame)
        if assembler.keyframe_needed:
            send_pli(); assembler.keyframe_requested()
    """

    def __init__(
        self,
        depacketizer: Depacketizer,
        reorder_window: int = 8,
        capacity: int = 2048,
    ) -> None:
        self.depacketizer = depacketizer
        self.reorder_window = reorder_window
        self.capacity = capacity
        self._packets: dict[int, _Packet] = {}
        self._highest: int | None = None  # highest extended sequence number seen
        self._next: int | None = None  # first sequence number not yet consumed
        self._after_end: int | None = None  # sequence number after the last frame's end
        # How far _complete_frame_at got in the frame at _scan_start: packets
        # _scan_start.._scan_at - 1 are all buffered, share its timestamp and do not end
        # it by themselves (no marker, no depacketizer end). The next call for that
        # start goes on from _scan_at instead of rescanning the frame, which made a
        # k-packet frame cost k²/2 end checks (a 150-packet key frame: 11,000). Set
        # back to None whenever packets leave the buffer.
        self._scan_start: int | None = None
        self._scan_at = 0
        # A decoder can only start on a key frame.
        self._waiting_for_keyframe = True
        #: Set when frames were lost or dropped; cleared by :meth:`keyframe_requested`
        #: or when a key frame comes out.
        self.keyframe_needed = False
        self.frames_emitted = 0
        self.frames_dropped = 0
        self.malformed_frames = 0
        self.late_packets = 0

    # --- public -------------------------------------------------------------

    def add(
        self, sequence_number: int, timestamp: int, marker: bool, payload: bytes
    ) -> list[AssembledFrame]:
        """Add one packet; returns the frames it completes (possibly several, in order)."""
        seq = self._extend(sequence_number & 0xFFFF)
        if (
            seq == self._after_end
            and seq == self._next
            and not self._packets
            and (marker or self.depacketizer.is_frame_end(payload))
        ):
            # The packet right after the last frame's end, nothing buffered, and it
            # ends a frame: a whole frame by itself (every Opus packet, small video
            # frames). What _drain would do, without buffering it first.
            return self._single(seq, timestamp & 0xFFFFFFFF, payload)
        if self._next is not None and seq < self._next:
            if self._after_end is not None or self._next - seq >= self.capacity:
                self.late_packets += 1
                return []
            self._next = seq  # nothing emitted yet: an earlier packet came in late
        if seq in self._packets:
            return []  # duplicate (e.g. an RTX copy that arrived twice)
        self._packets[seq] = _Packet(timestamp & 0xFFFFFFFF, bool(marker), bytes(payload))
        if self._next is None:
            self._next = seq
        self._evict()
        return self._drain()

    def _single(self, seq: int, timestamp: int, payload: bytes) -> list[AssembledFrame]:
        self._next = self._after_end = seq + 1
        try:
            frame = self.depacketizer.depacketize([bytes(payload)], timestamp)
        except MalformedPayloadError:
            self.malformed_frames += 1
            self.frames_dropped += 1
            self._loss(None)
            return []
        if self._waiting_for_keyframe and not frame.is_keyframe:
            self.frames_dropped += 1
            self.keyframe_needed = True
            return []
        if frame.is_keyframe:
            self._waiting_for_keyframe = False
            self.keyframe_needed = False
        self.frames_emitted += 1
        return [AssembledFrame(frame, seq & 0xFFFF, seq & 0xFFFF)]

    def keyframe_requested(self) -> None:
        """The caller sent a PLI/FIR: clear :attr:`keyframe_needed` until the next loss."""
        self.keyframe_needed = False

    def reset(self) -> None:
        """Forget every packet (new SSRC, or the stream restarted)."""
        self._packets.clear()
        self._scan_start = None
        self._highest = None
        self._next = None
        self._after_end = None
        self._waiting_for_keyframe = True

    # --- internals ----------------------------------------------------------

    def _extend(self, seq16: int) -> int:
        if self._highest is None:
            self._highest = seq16
            return seq16
        # The extension of seq16 nearest the highest one (a tie, 0x8000 away, goes
        # backwards): arithmetic instead of min() over three candidates with a key.
        delta = (seq16 - self._highest) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        seq = self._highest + delta
        if seq > self._highest:
            self._highest = seq
        return seq

    def _evict(self) -> None:
        if len(self._packets) <= self.capacity:
            return
        for seq in sorted(self._packets)[: len(self._packets) - self.capacity]:
            del self._packets[seq]
        self._scan_start = None
        self._loss(min(self._packets) if self._packets else None)

    def _loss(self, resume_at: int | None) -> None:
        self._waiting_for_keyframe = True
        self.keyframe_needed = True
        if resume_at is not None:
            self._next = resume_at

    def _is_start(self, seq: int) -> bool:
        packet = self._packets[seq]
        before = self._packets.get(seq - 1)
        if before is not None and (before.timestamp != packet.timestamp or before.marker):
            return True
        starts = packet.starts
        if starts is None:
            starts = packet.starts = self.depacketizer.is_frame_start(packet.payload)
        return starts

    def _complete_frame_at(self, start: int) -> tuple[int | None, int]:
        """``(last sequence number, 0)`` of the complete frame at ``start``, or
        ``(None, first missing sequence number)``.

        A packet ends the frame when it has the marker bit, when the depacketizer
        says it ends one (VP9's E bit), or when the packet after it has another
        timestamp (the marker packet was lost, or the sender sets none).
        """
        packets = self._packets
        timestamp = packets[start].timestamp
        seq = self._scan_at if start == self._scan_start else start
        is_frame_end = self.depacketizer.is_frame_end
        while True:
            packet = packets.get(seq)
            if packet is None:
                # Packets start..seq - 1 are checked: the next call goes on from here.
                self._scan_start = start
                self._scan_at = seq
                return None, seq
            if packet.timestamp != timestamp:
                # seq > start here: the packet before it ends the frame.
                return seq - 1, 0
            if packet.marker or is_frame_end(packet.payload):
                return seq, 0
            seq += 1

    def _next_frame_start(self) -> int | None:
        """The first buffered packet at or after ``_next`` that starts a frame."""
        assert self._next is not None
        for seq in sorted(self._packets):
            if seq >= self._next and self._is_start(seq):
                return seq
        return None

    def _drain(self) -> list[AssembledFrame]:
        out: list[AssembledFrame] = []
        while self._packets:
            assert self._next is not None and self._highest is not None
            after_loss = False
            if self._next in self._packets and (
                # Right after a frame's end the next packet starts a frame.
                self._next == self._after_end or self._is_start(self._next)
            ):
                start = self._next
            else:
                # A gap, or a packet that does not start a frame, at _next: wait
                # reorder_window packets for the missing ones, then give up.
                if self._highest - self._next < self.reorder_window:
                    break
                found = self._next_frame_start()
                if found is None:
                    break
                start = found
                for seq in [s for s in self._packets if s < start]:
                    del self._packets[seq]
                self._scan_start = None
                self._loss(start)
                after_loss = True
            end, missing = self._complete_frame_at(start)
            if end is None:
                if self._highest - missing < self.reorder_window:
                    break
                # A packet inside the frame is lost for good: skip to the next start.
                self._next = max(missing, start + 1)
                self.frames_dropped += 1
                self._loss(None)
                continue
            timestamp = self._packets[start].timestamp
            payloads = [self._packets.pop(s).payload for s in range(start, end + 1)]
            self._scan_start = None
            self._next = self._after_end = end + 1
            try:
                frame = self.depacketizer.depacketize(payloads, timestamp)
            except MalformedPayloadError:
                self.malformed_frames += 1
                self.frames_dropped += 1
                self._loss(None)
                continue
            if self._waiting_for_keyframe and not frame.is_keyframe:
                # It references frames we never gave the decoder.
                self.frames_dropped += 1
                self.keyframe_needed = True
                continue
            if frame.is_keyframe:
                self._waiting_for_keyframe = False
                self.keyframe_needed = False
            self.frames_emitted += 1
            out.append(AssembledFrame(frame, start & 0xFFFF, end & 0xFFFF, after_loss))
        return out
