"""Frame assembly from RTP packets: order, loss, duplicates, wrap-around, garbage."""

from __future__ import annotations

from sora_async.codecs import FrameAssembler
from sora_async.codecs.vp8 import Vp8Depacketizer, Vp8PayloadDescriptor

KEY = b"\x10\x02\x00\x9d\x01\x2a\x40\x01\xf0\x00"  # VP8 key frame header, 320x240
INTER = b"\x31\x02\x00\x00"


def vp8_packets(start_seq: int, timestamp: int, data: bytes, parts: int, picture_id: int):
    """``parts`` packets of one VP8 frame: (seq, timestamp, marker, payload)."""
    size = -(-len(data) // parts)
    out = []
    for i in range(parts):
        descriptor = Vp8PayloadDescriptor(start_of_partition=i == 0, picture_id=picture_id)
        chunk = data[i * size : (i + 1) * size]
        out.append(((start_seq + i) & 0xFFFF, timestamp, i == parts - 1, bytes(descriptor) + chunk))
    return out


def stream(frames: int, parts: int = 3, start_seq: int = 100, key_every: int = 0):
    packets = []
    seq = start_seq
    for n in range(frames):
        key = n == 0 or (key_every and n % key_every == 0)
        packets += vp8_packets(seq, n * 3000, (KEY if key else INTER) + bytes(30), parts, n)
        seq += parts
    return packets


def test_a_frame_comes_out_on_its_marker_packet() -> None:
    assembler = FrameAssembler(Vp8Depacketizer())
    packets = stream(2)
    assert assembler.add(*packets[0]) == [] and assembler.add(*packets[1]) == []
    [frame] = assembler.add(*packets[2])  # marker: no need to wait for the next frame
    assert frame.frame.is_keyframe and (frame.first_sequence, frame.last_sequence) == (100, 102)


def test_sequence_numbers_wrap_around() -> None:
    assembler = FrameAssembler(Vp8Depacketizer())
    out = [f for p in stream(5, start_seq=65533) for f in assembler.add(*p)]
    assert [f.frame.timestamp for f in out] == [0, 3000, 6000, 9000, 12000]


def test_duplicates_and_late_packets_are_ignored() -> None:
    assembler = FrameAssembler(Vp8Depacketizer())
    packets = stream(3)
    out = []
    for packet in packets[:6]:
        out += assembler.add(*packet)
        out += assembler.add(*packet)  # RTX copy
    out += assembler.add(*packets[0])  # very late
    out += [f for p in packets[6:] for f in assembler.add(*p)]
    assert [f.frame.timestamp for f in out] == [0, 3000, 6000]
    # The copies of the two marker packets came after their frame left, plus the late one.
    assert assembler.late_packets == 3


def test_the_stream_must_start_on_a_key_frame() -> None:
    assembler = FrameAssembler(Vp8Depacketizer())
    packets = stream(6, key_every=4)[3:]  # joined after the first key frame
    out = [f for p in packets for f in assembler.add(*p)]
    assert [f.frame.timestamp for f in out] == [12000, 15000]
    assert assembler.frames_dropped == 3 and not assembler.keyframe_needed


def test_a_lost_packet_inside_a_frame_drops_it_and_asks_for_a_key_frame() -> None:
    assembler = FrameAssembler(Vp8Depacketizer(), reorder_window=2)
    packets = stream(8, key_every=6)
    del packets[7]  # middle packet of frame 2
    out = []
    flags = []
    for packet in packets:
        out += assembler.add(*packet)
        flags.append(assembler.keyframe_needed)
    assert [f.frame.timestamp for f in out] == [0, 3000, 18000, 21000]
    assert out[2].frame.is_keyframe
    assert any(flags) and not assembler.keyframe_needed


def test_keyframe_requested_clears_the_flag_until_the_next_loss() -> None:
    assembler = FrameAssembler(Vp8Depacketizer(), reorder_window=1)
    packets = stream(4)
    del packets[4]
    for packet in packets:
        assembler.add(*packet)
    assert assembler.keyframe_needed
    assembler.keyframe_requested()
    assert not assembler.keyframe_needed


def test_garbage_payloads_drop_the_frame_without_raising() -> None:
    assembler = FrameAssembler(Vp8Depacketizer())
    packets = stream(3)
    packets[4] = (packets[4][0], packets[4][1], packets[4][2], b"\x80")  # truncated descriptor
    out = [f for p in packets for f in assembler.add(*p)]
    assert [f.frame.timestamp for f in out] == [0]
    assert assembler.malformed_frames == 1 and assembler.keyframe_needed


def test_memory_is_bounded() -> None:
    assembler = FrameAssembler(Vp8Depacketizer(), capacity=16)
    packets = stream(20)
    del packets[1]  # frame 0 never completes; everything after waits behind it
    for packet in packets:
        assembler.add(*packet)
        assert len(assembler._packets) <= 16


def test_reset_forgets_the_stream() -> None:
    assembler = FrameAssembler(Vp8Depacketizer())
    for packet in stream(2):
        assembler.add(*packet)
    assembler.reset()
    out = [f for p in stream(1, start_seq=5000) for f in assembler.add(*p)]
    assert len(out) == 1


def test_single_packet_frames_come_out_at_once_as_from_the_buffered_path() -> None:
    """One-packet frames in order (every Opus packet) take the direct path: the same
    frames, sequence numbers and counters as buffering them; a late packet whose
    number the direct path would expect after a loss is still refused."""
    packets = stream(6, parts=1, start_seq=65533)  # across the wrap, too
    assembler = FrameAssembler(Vp8Depacketizer())
    out = [assembler.add(*packet) for packet in packets]
    assert [len(frames) for frames in out] == [1] * 6
    assert [f[0].first_sequence for f in out] == [65533, 65534, 65535, 0, 1, 2]
    assert [f[0].frame.timestamp for f in out] == [n * 3000 for n in range(6)]
    assert out[0][0].frame.is_keyframe and not out[1][0].frame.is_keyframe
    assert assembler.frames_emitted == 6 and not assembler._packets
    # frame 7 lost for good: 8 inter frames after it are held, then dropped
    more = stream(20, parts=1, start_seq=65533)[6:]
    for packet in more[1:10]:
        assembler.add(*packet)
    assert assembler.keyframe_needed
    assert assembler.add(*more[0]) == []  # the late one is not a frame any more
    assert assembler.late_packets == 1


# --- the incremental frame scan ---------------------------------------------------------


class CountingVp8Depacketizer(Vp8Depacketizer):
    """The real VP8 depacketizer, counting the per-packet checks the assembler asks for."""

    def __init__(self) -> None:
        self.end_checks = 0
        self.start_checks = 0

    def is_frame_end(self, payload: bytes) -> bool | None:
        self.end_checks += 1
        return super().is_frame_end(payload)

    def is_frame_start(self, payload: bytes) -> bool:
        self.start_checks += 1
        return super().is_frame_start(payload)


def big_stream(start_seq: int = 100) -> list[tuple[int, int, bool, bytes]]:
    """A 100-packet key frame, then 3-packet inter frames of 3, 7 and 1 packets."""
    packets = vp8_packets(start_seq, 0, KEY + bytes(1090), 100, 0)
    seq = start_seq + 100
    for n, parts in enumerate((3, 7, 1), 1):
        packets += vp8_packets(seq, n * 3000, INTER + bytes(40 + n), parts, n)
        seq += parts
    return packets


def frames_of(packets, **kwargs) -> list[tuple[int, int, int, bool, bytes]]:
    assembler = FrameAssembler(Vp8Depacketizer(), **kwargs)
    return [
        (f.frame.timestamp, f.first_sequence, f.last_sequence, f.after_loss, f.frame.data)
        for packet in packets
        for f in assembler.add(*packet)
    ]


def test_a_100_packet_key_frame_costs_one_end_check_per_packet() -> None:
    """Each packet's own end check is made once, not once per later packet of its frame
    (a rescan from the frame's start per packet made it 4,950 for this frame)."""
    depacketizer = CountingVp8Depacketizer()
    assembler = FrameAssembler(depacketizer)
    packets = vp8_packets(100, 0, KEY + bytes(1090), 100, 0)
    out = [f for packet in packets for f in assembler.add(*packet)]
    assert len(out) == 1 and out[0].frame.is_keyframe
    assert (out[0].first_sequence, out[0].last_sequence) == (100, 199)
    assert out[0].frame.data == KEY + bytes(1090)
    # The marker packet ends the frame without asking the depacketizer.
    assert depacketizer.end_checks == 99


def test_after_a_loss_each_buffered_packet_is_asked_once_whether_it_starts_a_frame() -> None:
    """While the rest of a frame with a lost packet comes in, every new packet looks for
    the next frame start among the buffered ones: the depacketizer is asked once per
    packet, not once per packet per look (quadratic in the frame's size before)."""
    depacketizer = CountingVp8Depacketizer()
    assembler = FrameAssembler(depacketizer, reorder_window=2)
    packets = big_stream()
    del packets[10]  # lost for good
    out = [f for packet in packets for f in assembler.add(*packet)]
    assert out == [] and assembler.frames_dropped >= 1 and assembler.keyframe_needed
    assert depacketizer.start_checks <= len(packets)


def test_frames_are_the_same_in_order_reversed_and_end_before_middle() -> None:
    packets = big_stream()
    expected = frames_of(packets)
    assert [(t, a, b) for t, a, b, _, _ in expected] == [
        (0, 100, 199),
        (3000, 200, 202),
        (6000, 203, 209),
        (9000, 210, 210),
    ]
    assert expected[0][4] == KEY + bytes(1090)
    # Each frame's packets in reverse order (the window must cover the big frame).
    reversed_frames = packets[:100][::-1] + packets[100:103][::-1] + packets[103:110][::-1]
    assert frames_of(reversed_frames + packets[110:], reorder_window=128) == expected
    # The 7-packet frame: its marker first, then its start, then its middle.
    mixed = [*packets[:103], packets[109], packets[103], *packets[105:109], packets[104]]
    assert frames_of(mixed + packets[110:]) == expected
    # The key frame's second half before its first half.
    halves = packets[50:100] + packets[:50] + packets[100:]
    assert frames_of(halves, reorder_window=128) == expected


def test_duplicates_and_a_retransmitted_packet_give_the_same_frames() -> None:
    packets = big_stream()
    expected = frames_of(packets)
    doubled = [p for packet in packets for p in (packet, packet)]
    assert frames_of(doubled) == expected
    # Packet 42 of the key frame is lost, and its retransmission comes 5 packets later.
    late = packets[:42] + packets[43:48] + [packets[42]] + packets[48:]
    assert frames_of(late) == expected
    # A packet re-sent while its frame is still incomplete, twice.
    again = [*packets[:60], packets[30], packets[30], *packets[60:]]
    assert frames_of(again) == expected


def test_the_frame_scan_crosses_the_sequence_number_wrap() -> None:
    packets = big_stream(start_seq=65500)  # the key frame spans 65500..65535, 0..63
    out = frames_of(packets)
    assert [(t, a, b) for t, a, b, _, _ in out] == [
        (0, 65500, 63),
        (3000, 64, 66),
        (6000, 67, 73),
        (9000, 74, 74),
    ]
    shuffled = packets[:30] + packets[40:45] + packets[30:40] + packets[45:]
    assert frames_of(shuffled, reorder_window=16) == out


def test_a_frame_scanned_in_part_then_evicted_is_not_resumed() -> None:
    """Packets leaving the buffer (eviction at capacity) drop what the scan knew: the
    frame whose start was evicted is not emitted from its remains."""
    packets = big_stream()
    assembler = FrameAssembler(Vp8Depacketizer(), capacity=32, reorder_window=4)
    out = []
    for packet in packets[:20] + packets[21:]:  # packet 20 of the key frame lost
        out += assembler.add(*packet)
        assert len(assembler._packets) <= 32
    assert out == []  # the key frame cannot complete; the inter frames need it
    # A new key frame after the eviction comes out whole.
    more = vp8_packets(211, 12000, KEY + bytes(300), 10, 4)
    new = [f for packet in more for f in assembler.add(*packet)]
    assert [(f.frame.timestamp, f.first_sequence, f.last_sequence) for f in new] == [
        (12000, 211, 220)
    ]
    assert new[0].frame.data == KEY + bytes(300) and new[0].frame.is_keyframe


def test_a_timestamp_change_ends_a_frame_whose_marker_was_lost() -> None:
    """Packets scanned while the marker was missing: the next frame's first packet
    (another timestamp) ends the frame at the packet before it."""
    packets = big_stream()
    frame = [(s, t, False, p) if s == 202 else (s, t, m, p) for s, t, m, p in packets]
    assembler = FrameAssembler(Vp8Depacketizer())
    out = [f for packet in frame[:103] for f in assembler.add(*packet)]
    assert [f.frame.timestamp for f in out] == [0]  # frame 1 waits: its end is unknown
    out = assembler.add(*frame[103])
    assert [(f.frame.timestamp, f.first_sequence, f.last_sequence) for f in out] == [
        (3000, 200, 202)
    ]
