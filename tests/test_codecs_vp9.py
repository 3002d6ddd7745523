"""VP9 payload format (RFC 9628): descriptor, SS, both modes, layer frames, garbage."""

from __future__ import annotations

import random

import pytest

from sora_async.codecs import (
    EncodedFrame,
    EncoderSettings,
    IncompleteFrameError,
    MalformedPayloadError,
    create_encoder,
)
from sora_async.codecs.pattern import video_frame
from sora_async.codecs.vp9 import (
    Vp9Depacketizer,
    Vp9Packetizer,
    Vp9PayloadDescriptor,
    Vp9PictureGroupEntry,
    Vp9ScalabilityStructure,
    build_superframe,
    parse_frame_header,
    split_superframe,
)


@pytest.fixture(scope="module")
def encoded() -> list[EncodedFrame]:
    """Three real VP9 frames at 160x120: key, inter, inter."""
    encoder = create_encoder("VP9", settings=EncoderSettings(bitrate=200_000))
    frames = [encoder.encode(video_frame(160, 120, i))[0] for i in range(3)]
    encoder.close()
    return frames


@pytest.mark.parametrize(
    "descriptor",
    [
        Vp9PayloadDescriptor(picture_id=0x7FFF, start_of_frame=True, end_of_frame=True),
        Vp9PayloadDescriptor(
            picture_id=12,
            inter_picture_predicted=True,
            layer_indices=True,
            tid=2,
            switching_up=True,
            sid=1,
            inter_layer_dependency=True,
            tl0picidx=250,
        ),
        Vp9PayloadDescriptor(
            picture_id=300,
            inter_picture_predicted=True,
            flexible_mode=True,
            layer_indices=True,
            tid=1,
            p_diffs=[1, 2, 127],
            not_reference_for_upper_layers=True,
        ),
        Vp9PayloadDescriptor(
            picture_id=1,
            start_of_frame=True,
            scalability_structure=Vp9ScalabilityStructure(
                num_spatial_layers=2,
                resolutions=[(320, 180), (640, 360)],
                picture_group=[
                    Vp9PictureGroupEntry(tid=0, p_diffs=[4]),
                    Vp9PictureGroupEntry(tid=1, switching_up=True, p_diffs=[1, 2]),
                ],
            ),
        ),
        Vp9PayloadDescriptor(start_of_frame=True, end_of_frame=True),  # no picture ID (I=0)
    ],
)
def test_descriptor_round_trips(descriptor: Vp9PayloadDescriptor) -> None:
    data = bytes(descriptor)
    parsed, offset = Vp9PayloadDescriptor.parse(data + b"\x01")
    assert parsed == descriptor
    assert offset == len(data)


def test_seven_bit_picture_id_is_read() -> None:
    parsed, offset = Vp9PayloadDescriptor.parse(bytes([0x88, 0x05, 0xAA]))
    assert parsed.picture_id == 5 and parsed.start_of_frame and offset == 2


def test_p_diff_limits() -> None:
    with pytest.raises(ValueError):
        bytes(
            Vp9PayloadDescriptor(flexible_mode=True, inter_picture_predicted=True, p_diffs=[1] * 4)
        )
    # Four P_DIFFs each saying "another follows".
    with pytest.raises(MalformedPayloadError):
        Vp9PayloadDescriptor.parse(bytes([0x50, 0x03, 0x03, 0x03, 0x03, 0x02, 0x00]))


def test_key_frame_carries_the_scalability_structure_on_its_first_packet(
    encoded: list[EncodedFrame],
) -> None:
    payloads = Vp9Packetizer(picture_id=42).packetize(encoded[0], max_payload_size=200)
    descriptors = [Vp9PayloadDescriptor.parse(p)[0] for p in payloads]
    assert len(payloads) > 1 and all(len(p) <= 200 for p in payloads)
    assert [d.start_of_frame for d in descriptors] == [True] + [False] * (len(payloads) - 1)
    assert [d.end_of_frame for d in descriptors] == [False] * (len(payloads) - 1) + [True]
    assert {d.picture_id for d in descriptors} == {42}
    assert not any(d.inter_picture_predicted for d in descriptors)
    ss = descriptors[0].scalability_structure
    assert ss is not None and ss.resolutions == [(160, 120)]
    # Non-flexible mode: a one-picture group referencing the previous picture.
    assert ss.picture_group == [Vp9PictureGroupEntry(tid=0, switching_up=False, p_diffs=[1])]
    assert all(d.scalability_structure is None for d in descriptors[1:])


def test_inter_frames_in_flexible_mode_reference_the_previous_picture(
    encoded: list[EncodedFrame],
) -> None:
    packetizer = Vp9Packetizer(flexible=True, picture_id=9)
    packetizer.packetize(encoded[0])
    payloads = packetizer.packetize(encoded[1])
    desc = Vp9PayloadDescriptor.parse(payloads[0])[0]
    assert desc.flexible_mode and desc.inter_picture_predicted and desc.p_diffs == [1]
    assert desc.picture_id == 10
    rebuilt = Vp9Depacketizer().depacketize(payloads)
    assert rebuilt.frame_dependencies == (9,)


def test_layer_indices_are_written_for_temporal_layers(encoded: list[EncodedFrame]) -> None:
    layered = EncodedFrame(data=encoded[1].data, timestamp=0, codec="VP9", temporal_index=1)
    desc = Vp9PayloadDescriptor.parse(Vp9Packetizer().packetize(layered)[0])[0]
    assert desc.layer_indices and desc.tid == 1


def test_depacketizer_returns_the_encoder_bitstream(encoded: list[EncodedFrame]) -> None:
    depacketizer = Vp9Depacketizer()
    packetizer = Vp9Packetizer()
    for original in encoded:
        payloads = packetizer.packetize(original, 150)
        assert depacketizer.is_frame_start(payloads[0])
        assert depacketizer.is_keyframe_start(payloads[0]) == original.is_keyframe
        assert depacketizer.is_frame_end(payloads[-1]) is True
        rebuilt = depacketizer.depacketize(payloads, timestamp=original.timestamp)
        assert rebuilt.data == original.data
        assert rebuilt.is_keyframe == original.is_keyframe
    key = depacketizer.depacketize(packetizer.packetize(encoded[0]))
    assert (key.width, key.height) == (160, 120)


def test_missing_first_or_last_packet_is_incomplete(encoded: list[EncodedFrame]) -> None:
    payloads = Vp9Packetizer().packetize(encoded[0], 150)
    with pytest.raises(IncompleteFrameError):
        Vp9Depacketizer().depacketize(payloads[1:])
    with pytest.raises(IncompleteFrameError):
        Vp9Depacketizer().depacketize(payloads[:-1])


def test_spatial_layer_frames_of_one_picture_become_a_superframe(
    encoded: list[EncodedFrame],
) -> None:
    packetizer = Vp9Packetizer(picture_id=5)
    base = EncodedFrame(
        data=encoded[0].data,
        timestamp=0,
        codec="VP9",
        is_keyframe=True,
        width=160,
        height=120,
        codec_specific={"num_spatial_layers": 2},
    )
    upper = EncodedFrame(
        data=encoded[1].data,
        timestamp=0,
        codec="VP9",
        is_keyframe=True,
        spatial_index=1,
        codec_specific={"num_spatial_layers": 2},
    )
    payloads = packetizer.packetize(base, 150) + packetizer.packetize(upper, 150)
    depacketizer = Vp9Depacketizer()
    assert not depacketizer.is_frame_start(packetizer.packetize(upper)[0])
    rebuilt = depacketizer.depacketize(payloads)
    assert split_superframe(rebuilt.data) == [encoded[0].data, encoded[1].data]
    assert rebuilt.spatial_index == 1 and rebuilt.is_keyframe


def test_superframe_index_round_trips() -> None:
    frames = [b"\x82" * 10, b"\x86" * 300, b"\x84" * 70000]
    assert split_superframe(build_superframe(frames)) == frames
    assert build_superframe([b"abc"]) == b"abc"


def test_frame_header_gives_key_frame_size(encoded: list[EncodedFrame]) -> None:
    header = parse_frame_header(encoded[0].data)
    assert header.is_keyframe and (header.width, header.height) == (160, 120)
    assert not parse_frame_header(encoded[1].data).is_keyframe
    with pytest.raises(MalformedPayloadError):
        parse_frame_header(b"\x00\x00")


def test_garbage_never_escapes_as_anything_but_value_error(encoded: list[EncodedFrame]) -> None:
    rng = random.Random(9)
    depacketizer = Vp9Depacketizer()
    valid = Vp9Packetizer().packetize(encoded[0], 150)
    cases = [
        [
            bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40)))
            for _ in range(rng.randint(1, 3))
        ]
        for _ in range(300)
    ]
    cases += [[valid[0][:n]] for n in range(40)]
    for payloads in cases:
        depacketizer.is_frame_start(payloads[0])
        depacketizer.is_keyframe_start(payloads[0])
        depacketizer.is_frame_end(payloads[0])
        try:
            depacketizer.depacketize(payloads)
        except ValueError:
            pass
