"""H.265 payload format (RFC 7798): single NAL, AP, FU, PACI, DONL, fmtp, garbage."""

from __future__ import annotations

import random
import struct

import pytest

from sora_async.codecs import (
    EncodedFrame,
    EncoderSettings,
    IncompleteFrameError,
    MalformedPayloadError,
    create_encoder,
)
from sora_async.codecs.bitstream import join_annexb, split_annexb
from sora_async.codecs.h265 import (
    NAL_AP,
    NAL_FU,
    H265Depacketizer,
    H265Packetizer,
    configure_libx265,
    fmtp_compatible,
    nal_type,
)
from sora_async.codecs.pattern import video_frame


def nal(kind: int, body: bytes, layer_id: int = 0, tid: int = 1) -> bytes:
    return bytes([(kind << 1) | (layer_id >> 5), ((layer_id & 0x1F) << 3) | tid]) + body


VPS = nal(32, b"\x0c\x01\xff\xff")
SPS = nal(33, b"\x01\x01\x60\x01")
PPS = nal(34, b"\xc1\x72\xb4")
IDR = nal(19, b"\xaf" + bytes(range(256)) * 6)  # first_slice_segment_in_pic_flag = 1
TRAIL_FIRST = nal(1, b"\x80\x11\x22")
TRAIL_SECOND = nal(1, b"\x40\x11\x22")  # second slice segment of a picture


def frame(*nals: bytes) -> EncodedFrame:
    return EncodedFrame(data=join_annexb(list(nals)), timestamp=0, codec="H265")


def test_parameter_sets_are_aggregated_and_the_slice_fragmented() -> None:
    payloads = H265Packetizer().packetize(frame(VPS, SPS, PPS, IDR), max_payload_size=400)
    assert nal_type(payloads[0]) == NAL_AP
    fu = payloads[1:]
    assert all(nal_type(p) == NAL_FU and len(p) <= 400 for p in fu)
    assert [bool(p[2] & 0x80) for p in fu] == [True] + [False] * (len(fu) - 1)
    assert [bool(p[2] & 0x40) for p in fu] == [False] * (len(fu) - 1) + [True]
    assert {p[2] & 0x3F for p in fu} == {19}
    rebuilt = H265Depacketizer().depacketize(payloads)
    assert split_annexb(rebuilt.data) == [VPS, SPS, PPS, IDR]
    assert rebuilt.is_keyframe and rebuilt.codec_specific["has_parameter_sets"]


def test_aggregation_header_takes_the_lowest_layer_and_tid() -> None:
    payload = H265Packetizer().packetize(
        frame(nal(1, b"\x80\x01", tid=3), nal(1, b"\x40\x01", tid=2))
    )[0]
    assert nal_type(payload) == NAL_AP
    assert payload[1] & 0x07 == 2


def test_single_nal_unit_packets_pass_through() -> None:
    assert H265Packetizer().packetize(frame(TRAIL_FIRST)) == [TRAIL_FIRST]


def test_frame_start_and_key_frame_helpers() -> None:
    depacketizer = H265Depacketizer()
    payloads = H265Packetizer().packetize(frame(VPS, SPS, PPS, IDR), 400)
    assert depacketizer.is_frame_start(payloads[0]) and depacketizer.is_keyframe_start(payloads[0])
    assert not depacketizer.is_frame_start(payloads[2])
    assert depacketizer.is_frame_start(TRAIL_FIRST) and not depacketizer.is_keyframe_start(
        TRAIL_FIRST
    )
    assert not depacketizer.is_frame_start(TRAIL_SECOND)


def test_paci_packets_are_ignored() -> None:
    paci = bytes([50 << 1, 1, 0, 0]) + b"\x00" * 4
    rebuilt = H265Depacketizer().depacketize([paci, TRAIL_FIRST])
    assert split_annexb(rebuilt.data) == [TRAIL_FIRST]


def test_donl_and_dond_fields_when_sprop_max_don_diff_is_set() -> None:
    donl = b"\x00\x07"
    single = TRAIL_FIRST[:2] + donl + TRAIL_FIRST[2:]
    ap = (
        bytes([NAL_AP << 1, 1])
        + donl
        + struct.pack("!H", len(VPS))
        + VPS
        + b"\x01"
        + struct.pack("!H", len(SPS))
        + SPS
    )
    fu_header = bytes([NAL_FU << 1, 1])
    fu_start = fu_header + bytes([0x80 | 19]) + donl + IDR[2:100]
    fu_end = fu_header + bytes([0x40 | 19]) + IDR[100:]
    depacketizer = H265Depacketizer(with_don=True)
    assert split_annexb(depacketizer.depacketize([single]).data) == [TRAIL_FIRST]
    assert split_annexb(depacketizer.depacketize([ap]).data) == [VPS, SPS]
    assert split_annexb(depacketizer.depacketize([fu_start, fu_end]).data) == [IDR]


def test_fu_errors() -> None:
    fu = H265Packetizer().packetize(frame(IDR), 300)
    depacketizer = H265Depacketizer()
    with pytest.raises(IncompleteFrameError):
        depacketizer.depacketize(fu[1:])
    with pytest.raises(IncompleteFrameError):
        depacketizer.depacketize(fu[:-1])
    with pytest.raises(MalformedPayloadError):
        depacketizer.depacketize([bytes([NAL_FU << 1, 1, 0xC0 | 19, 0])])  # S and E


@pytest.mark.parametrize(
    "payload",
    [
        b"\x02",
        bytes([0x80 | 2, 1, 0]),  # forbidden bit
        bytes([51 << 1, 1, 0]),  # reserved type
        bytes([NAL_AP << 1, 1, 0]),  # truncated length
        bytes([NAL_AP << 1, 1]) + struct.pack("!H", 40) + b"\x02\x01",  # truncated unit
        bytes([NAL_FU << 1, 1, 0x80]),  # FU without data
    ],
)
def test_malformed_payloads(payload: bytes) -> None:
    with pytest.raises(MalformedPayloadError):
        H265Depacketizer().depacketize([payload])


def test_fmtp_matching_compares_profile_and_tier_not_level() -> None:
    main = {"profile-id": "1", "tier-flag": "0", "level-id": "93"}
    assert fmtp_compatible(main, {"profile-id": "1", "tier-flag": "0", "level-id": "120"})
    assert fmtp_compatible(main, {})  # defaults: Main, Main tier
    assert not fmtp_compatible(main, {"profile-id": "2"})
    assert not fmtp_compatible(main, {"tier-flag": "1"})
    assert not fmtp_compatible(main, {"profile-id": "x"})


def test_main10_profile_selects_a_10_bit_input_format() -> None:
    import av

    ctx = av.CodecContext.create("libx265", "w")
    assert configure_libx265(ctx, EncoderSettings(fmtp={"profile-id": "2"}), 100_000).pix_fmt == (
        "yuv420p10le"
    )
    assert configure_libx265(ctx, EncoderSettings(), 100_000).pix_fmt == "yuv420p"


def test_x265_key_frames_carry_parameter_sets() -> None:
    encoder = create_encoder("H265", settings=EncoderSettings(bitrate=200_000))
    key = encoder.encode(video_frame(160, 120, 0))[0]
    kinds = [nal_type(n) for n in split_annexb(key.data)]
    assert kinds[:3] == [32, 33, 34]
    assert 19 in kinds or 20 in kinds  # IDR_W_RADL / IDR_N_LP
    forced = encoder.encode(video_frame(160, 120, 1), force_keyframe=True)[0]
    assert forced.is_keyframe and 32 in [nal_type(n) for n in split_annexb(forced.data)]


def test_garbage_never_escapes_as_anything_but_value_error() -> None:
    rng = random.Random(17)
    depacketizer = H265Depacketizer()
    valid = H265Packetizer().packetize(frame(VPS, SPS, PPS, IDR), 300)
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
