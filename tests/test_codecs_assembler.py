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
