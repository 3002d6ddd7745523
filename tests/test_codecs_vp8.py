"""VP8 payload format (RFC 7741): descriptor, packetizer, depacketizer, garbage."""

from __future__ import annotations

import random

import pytest

from sora_async.codecs import EncodedFrame, IncompleteFrameError, MalformedPayloadError
from sora_async.codecs.vp8 import (
    Vp8Depacketizer,
    Vp8Packetizer,
    Vp8PayloadDescriptor,
    parse_frame_header,
)

# A VP8 key frame header (RFC 6386 §9.1): P=0, start code, 320x240.
KEYFRAME = (
    bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]) + bytes(range(200)) * 5
)
INTER_FRAME = bytes([0x31, 0x02, 0x00]) + bytes(300)


def frame(data: bytes, key: bool = False) -> EncodedFrame:
    return EncodedFrame(data=data, timestamp=9000, codec="VP8", is_keyframe=key)


@pytest.mark.parametrize(
    "descriptor",
    [
        Vp8PayloadDescriptor(start_of_partition=True),
        Vp8PayloadDescriptor(start_of_partition=True, picture_id=0x7FFF),
        Vp8PayloadDescriptor(non_reference=True, partition_index=3, picture_id=5, tl0picidx=200),
        Vp8PayloadDescriptor(picture_id=1234, tid=2, layer_sync=True, keyidx=17),
        Vp8PayloadDescriptor(keyidx=31),
    ],
)
def test_descriptor_round_trips(descriptor: Vp8PayloadDescriptor) -> None:
    data = bytes(descriptor)
    parsed, offset = Vp8PayloadDescriptor.parse(data + b"\xaa")
    assert parsed == descriptor
    assert offset == len(data)


def test_descriptor_reads_the_rfc_bits() -> None:
    # X=1 S=1 PID=0 | I=1 | M=1 PictureID=0x0102
    parsed, offset = Vp8PayloadDescriptor.parse(bytes([0x90, 0x80, 0x81, 0x02, 0xFF]))
    assert parsed.start_of_partition and parsed.picture_id == 0x102 and offset == 4
    # 7-bit PictureID (M=0)
    parsed, offset = Vp8PayloadDescriptor.parse(bytes([0x80, 0x80, 0x05, 0xFF]))
    assert parsed.picture_id == 5 and offset == 3


@pytest.mark.parametrize(
    "data", [b"", b"\x80", b"\x80\x80", b"\x80\x80\x81", b"\x80\x40", b"\x80\x20"]
)
def test_truncated_descriptors_are_rejected(data: bytes) -> None:
    with pytest.raises(MalformedPayloadError):
        Vp8PayloadDescriptor.parse(data)


def test_frame_is_split_at_the_mtu_with_s_bit_on_the_first_packet_only() -> None:
    packetizer = Vp8Packetizer(picture_id=100)
    payloads = packetizer.packetize(frame(KEYFRAME, key=True), max_payload_size=300)
    assert all(len(p) <= 300 for p in payloads)
    descriptors = [Vp8PayloadDescriptor.parse(p)[0] for p in payloads]
    assert [d.start_of_partition for d in descriptors] == [True] + [False] * (len(payloads) - 1)
    assert {d.picture_id for d in descriptors} == {100}
    assert b"".join(p[Vp8PayloadDescriptor.parse(p)[1] :] for p in payloads) == KEYFRAME


def test_picture_id_advances_per_frame_and_wraps_at_15_bits() -> None:
    packetizer = Vp8Packetizer(picture_id=0x7FFF)
    first = packetizer.packetize(frame(INTER_FRAME))
    second = packetizer.packetize(frame(INTER_FRAME))
    assert Vp8PayloadDescriptor.parse(first[0])[0].picture_id == 0x7FFF
    assert Vp8PayloadDescriptor.parse(second[0])[0].picture_id == 0


def test_depacketizer_rebuilds_a_key_frame_with_its_size() -> None:
    payloads = Vp8Packetizer(picture_id=7).packetize(frame(KEYFRAME, key=True), 200)
    depacketizer = Vp8Depacketizer()
    assert depacketizer.is_frame_start(payloads[0]) and depacketizer.is_keyframe_start(payloads[0])
    assert not depacketizer.is_frame_start(payloads[1])
    rebuilt = depacketizer.depacketize(payloads, timestamp=1234)
    assert rebuilt.data == KEYFRAME
    assert (rebuilt.is_keyframe, rebuilt.width, rebuilt.height) == (True, 320, 240)
    assert (rebuilt.timestamp, rebuilt.frame_id) == (1234, 7)
    assert parse_frame_header(INTER_FRAME) == (False, 0, 0)


def test_a_frame_without_its_first_packet_is_incomplete() -> None:
    payloads = Vp8Packetizer().packetize(frame(KEYFRAME, key=True), 200)
    with pytest.raises(IncompleteFrameError):
        Vp8Depacketizer().depacketize(payloads[1:])


def test_picture_id_change_inside_a_frame_is_rejected() -> None:
    packetizer = Vp8Packetizer()
    a = packetizer.packetize(frame(KEYFRAME, key=True), 200)
    b = packetizer.packetize(frame(KEYFRAME, key=True), 200)
    with pytest.raises(MalformedPayloadError):
        Vp8Depacketizer().depacketize([a[0], b[1]])


def test_tiny_mtu_is_refused() -> None:
    with pytest.raises(ValueError):
        Vp8Packetizer().packetize(frame(INTER_FRAME), max_payload_size=4)


def test_garbage_never_escapes_as_anything_but_value_error() -> None:
    rng = random.Random(7)
    depacketizer = Vp8Depacketizer()
    valid = Vp8Packetizer().packetize(frame(KEYFRAME, key=True), 200)
    cases = [[bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 20)))] for _ in range(300)]
    cases += [[valid[0][:n]] for n in range(len(valid[0]))]
    for payloads in cases:
        depacketizer.is_frame_start(payloads[0])
        depacketizer.is_keyframe_start(payloads[0])
        try:
            depacketizer.depacketize(payloads)
        except ValueError:
            pass
