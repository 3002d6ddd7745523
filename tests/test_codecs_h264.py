"""H.264 payload format (RFC 6184 mode 1), profile-level-id, x264 profiles, garbage."""

from __future__ import annotations

import random
import struct

import pytest

from sora_async.codecs import (
    EncodedFrame,
    EncoderSettings,
    IncompleteFrameError,
    MalformedPayloadError,
    create_decoder,
    create_encoder,
)
from sora_async.codecs.bitstream import join_annexb, split_annexb
from sora_async.codecs.h264 import (
    LEVEL_1B,
    NAL_FU_A,
    NAL_STAP_A,
    H264Depacketizer,
    H264Packetizer,
    H264Profile,
    ProfileLevelId,
    fmtp_compatible,
    nal_type,
)
from sora_async.codecs.pattern import video_frame

SPS = bytes([0x67, 0x42, 0xC0, 0x1F, 0xDA, 0x01])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])
# IDR slice with first_mb_in_slice = 0 (ue(v) "1"), and a P slice starting at MB 5 ("00110").
IDR = bytes([0x65, 0x88]) + bytes(range(256)) * 8
P_SLICE_MB5 = bytes([0x41, 0x30, 0x00, 0x11])


def frame(*nals: bytes) -> EncodedFrame:
    return EncodedFrame(data=join_annexb(list(nals)), timestamp=0, codec="H264")


def test_annexb_split_accepts_3_and_4_byte_start_codes() -> None:
    data = (
        b"\x00\x00" + b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS + b"\x00\x00\x00\x01" + IDR
    )
    assert split_annexb(data) == [SPS, PPS, IDR]
    assert split_annexb(join_annexb([SPS, PPS])) == [SPS, PPS]


def test_small_nal_units_are_aggregated_in_stap_a_and_large_ones_fragmented() -> None:
    payloads = H264Packetizer().packetize(frame(SPS, PPS, IDR), max_payload_size=500)
    assert nal_type(payloads[0]) == NAL_STAP_A
    # NRI of the STAP-A is the highest of its units (RFC 6184 §5.7.1).
    assert payloads[0][0] & 0x60 == 0x60
    fu = payloads[1:]
    assert all(nal_type(p) == NAL_FU_A and len(p) <= 500 for p in fu)
    assert [bool(p[1] & 0x80) for p in fu] == [True] + [False] * (len(fu) - 1)
    assert [bool(p[1] & 0x40) for p in fu] == [False] * (len(fu) - 1) + [True]
    sizes = {len(p) for p in fu}
    assert max(sizes) - min(sizes) <= 1  # even fragments


def test_a_lone_nal_unit_goes_as_single_nal_unit_packet() -> None:
    assert H264Packetizer().packetize(frame(P_SLICE_MB5)) == [P_SLICE_MB5]


def test_depacketizer_outputs_annexb_and_marks_idr_frames_as_key() -> None:
    depacketizer = H264Depacketizer()
    payloads = H264Packetizer().packetize(frame(SPS, PPS, IDR), 300)
    assert depacketizer.is_frame_start(payloads[0]) and depacketizer.is_keyframe_start(payloads[0])
    assert not depacketizer.is_frame_start(payloads[2])  # FU-A middle
    rebuilt = depacketizer.depacketize(payloads, timestamp=77)
    assert split_annexb(rebuilt.data) == [SPS, PPS, IDR]
    assert rebuilt.is_keyframe and rebuilt.timestamp == 77 and rebuilt.codec_specific["has_sps"]


def test_first_mb_in_slice_decides_frame_start() -> None:
    depacketizer = H264Depacketizer()
    assert not depacketizer.is_frame_start(P_SLICE_MB5)
    assert depacketizer.is_frame_start(bytes([0x41, 0x9A, 0x00]))  # first_mb_in_slice = 0


def test_fu_a_errors() -> None:
    fu = H264Packetizer().packetize(frame(IDR), 300)
    depacketizer = H264Depacketizer()
    with pytest.raises(IncompleteFrameError):
        depacketizer.depacketize(fu[1:])  # no start
    with pytest.raises(IncompleteFrameError):
        depacketizer.depacketize(fu[:-1])  # no end
    with pytest.raises(IncompleteFrameError):
        depacketizer.depacketize([fu[0], fu[0]])  # restarted
    with pytest.raises(MalformedPayloadError):
        depacketizer.depacketize([bytes([0x7C, 0xC5, 0x00])])  # S and E both set


@pytest.mark.parametrize("kind", [25, 26, 27, 29])
def test_interleaved_mode_packets_are_rejected_with_a_reason(kind: int) -> None:
    with pytest.raises(MalformedPayloadError, match="packetization-mode 2"):
        H264Depacketizer().depacketize([bytes([0x60 | kind, 0, 0, 0])])


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        bytes([0x80 | 5, 0]),  # forbidden bit
        bytes([0x60]),  # type 0
        bytes([0x7E, 0]),  # type 30
        bytes([NAL_STAP_A, 0x00]),  # truncated length
        bytes([NAL_STAP_A]) + struct.pack("!H", 10) + b"\x65",  # truncated unit
        bytes([NAL_STAP_A]) + struct.pack("!H", 0),  # empty unit
        bytes([NAL_FU_A, 0x85]),  # FU-A too short
    ],
)
def test_malformed_payloads(payload: bytes) -> None:
    with pytest.raises(MalformedPayloadError):
        H264Depacketizer().depacketize([payload])


@pytest.mark.parametrize(
    ("value", "profile", "level"),
    [
        ("42e01f", H264Profile.CONSTRAINED_BASELINE, 31),
        ("42c01e", H264Profile.CONSTRAINED_BASELINE, 30),
        ("4de01f", H264Profile.CONSTRAINED_BASELINE, 31),
        ("42001f", H264Profile.BASELINE, 31),
        ("4d001f", H264Profile.MAIN, 31),
        ("640c1f", H264Profile.CONSTRAINED_HIGH, 31),
        ("640032", H264Profile.HIGH, 50),
        ("f40034", H264Profile.PREDICTIVE_HIGH_444, 52),
        ("42f00b", H264Profile.CONSTRAINED_BASELINE, LEVEL_1B),
        ("640009", H264Profile.HIGH, LEVEL_1B),
    ],
)
def test_profile_level_id_is_classified_like_libwebrtc(
    value: str, profile: H264Profile, level: int
) -> None:
    parsed = ProfileLevelId.parse(value)
    assert parsed == ProfileLevelId(profile, level)
    assert ProfileLevelId.parse(str(parsed)) == parsed


@pytest.mark.parametrize("value", ["", "42e0", "zzzzzz", "58601f", "6400ff1", "640400"])
def test_bad_profile_level_ids_parse_to_none(value: str) -> None:
    assert ProfileLevelId.parse(value) is None


def test_fmtp_matching_compares_profile_and_packetization_mode_not_level() -> None:
    cb31 = {"profile-level-id": "42e01f", "packetization-mode": "1"}
    assert fmtp_compatible(cb31, {"profile-level-id": "42e029", "packetization-mode": "1"})
    assert fmtp_compatible(cb31, {"profile-level-id": "4de01f", "packetization-mode": "1"})
    assert not fmtp_compatible(cb31, {"profile-level-id": "640c1f", "packetization-mode": "1"})
    assert not fmtp_compatible(cb31, {"profile-level-id": "42e01f"})  # mode 0 by default
    assert fmtp_compatible({"packetization-mode": "1"}, cb31)  # absent → 42e01f
    assert not fmtp_compatible(cb31, {"profile-level-id": "bogus", "packetization-mode": "1"})


@pytest.mark.parametrize(("plid", "profile_idc"), [("42e01f", 66), ("4d001f", 77), ("640c1f", 100)])
def test_encoder_follows_the_negotiated_profile(plid: str, profile_idc: int) -> None:
    encoder = create_encoder(
        "H264", settings=EncoderSettings(bitrate=200_000, fmtp={"profile-level-id": plid})
    )
    key = encoder.encode(video_frame(160, 120, 0))[0]
    sps = next(n for n in split_annexb(key.data) if nal_type(n) == 7)
    assert sps[1] == profile_idc
    decoded = create_decoder("H264").decode(key)
    assert decoded and decoded[0].width == 160


def test_garbage_never_escapes_as_anything_but_value_error() -> None:
    rng = random.Random(13)
    depacketizer = H264Depacketizer()
    valid = H264Packetizer().packetize(frame(SPS, PPS, IDR), 300)
    cases = [
        [
            bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 30)))
            for _ in range(rng.randint(1, 3))
        ]
        for _ in range(300)
    ]
    cases += [[valid[0][:n]] for n in range(len(valid[0]))]
    for payloads in cases:
        depacketizer.is_frame_start(payloads[0])
        depacketizer.is_keyframe_start(payloads[0])
        try:
            depacketizer.depacketize(payloads)
        except ValueError:
            pass
