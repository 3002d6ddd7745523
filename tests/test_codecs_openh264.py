"""CISCO_OPENH264 through ctypes (needs a libopenh264; Debian's libopenh264-7 has the same API)."""

from __future__ import annotations

import ctypes.util

import pytest

from sora_async.codecs import (
    EncoderSettings,
    create_decoder,
    create_depacketizer,
    create_encoder,
    create_packetizer,
)
from sora_async.codecs.openh264 import OpenH264Decoder, OpenH264Encoder, OpenH264Error
from sora_async.codecs.pattern import video_frame
from tests.openh264_support import OPENH264, needs_openh264


@needs_openh264
def test_openh264_to_ffmpeg_and_back_through_rtp() -> None:
    assert OPENH264 is not None
    encoder = OpenH264Encoder(OPENH264, EncoderSettings(bitrate=300_000))
    ours, ffmpeg = OpenH264Decoder(OPENH264), create_decoder("H264")
    packetizer, depacketizer = create_packetizer("H264"), create_depacketizer("H264")
    keys = []
    for i in range(6):
        [frame] = encoder.encode(video_frame(320, 240, i), force_keyframe=i == 4)
        keys.append(frame.is_keyframe)
        rebuilt = depacketizer.depacketize(packetizer.packetize(frame, 300), frame.timestamp)
        for decoder in (ours, ffmpeg):
            [picture] = decoder.decode(rebuilt)
            assert (picture.width, picture.height) == (320, 240)
    assert keys == [True, False, False, False, True, False]
    assert encoder.implementation_name == "OpenH264" and encoder.library_version.startswith("2.")


@needs_openh264
def test_openh264_decodes_x264_constrained_baseline() -> None:
    assert OPENH264 is not None
    x264 = create_encoder("H264", settings=EncoderSettings(fmtp={"profile-level-id": "42e01f"}))
    decoder = OpenH264Decoder(OPENH264)
    for i in range(3):
        [picture] = decoder.decode(x264.encode(video_frame(160, 120, i))[0])
        assert picture.width == 160


@needs_openh264
def test_openh264_changes_bit_rate_in_place() -> None:
    assert OPENH264 is not None
    encoder = OpenH264Encoder(OPENH264, EncoderSettings(bitrate=800_000))
    before = [len(encoder.encode(video_frame(320, 240, i))[0].data) for i in range(20)]
    encoder.target_bitrate = 100_000
    after = [encoder.encode(video_frame(320, 240, i))[0] for i in range(20, 50)]
    assert encoder.in_place_bitrate_updates == 1 and encoder.reopen_count == 0
    assert not any(f.is_keyframe for f in after)
    assert sum(len(f.data) for f in after[10:]) / 20 < 0.6 * sum(before[5:]) / 15


@needs_openh264
def test_registry_uses_openh264_when_asked_and_given_a_path() -> None:
    encoder = create_encoder("H264", "CISCO_OPENH264", openh264=OPENH264)
    decoder = create_decoder("H264", "CISCO_OPENH264", openh264=OPENH264)
    [frame] = encoder.encode(video_frame(160, 120, 0))
    assert decoder.decode(frame)[0].height == 120
    assert (encoder.implementation_name, decoder.implementation_name) == ("OpenH264", "OpenH264")


def test_without_a_path_openh264_falls_back_or_fails_clearly() -> None:
    assert create_encoder("H264", "CISCO_OPENH264").implementation_name == "x264"
    with pytest.raises(OpenH264Error, match="path"):
        create_encoder("H264", "CISCO_OPENH264", fallback=False)


def test_a_wrong_path_or_library_gives_a_clear_error(tmp_path: object) -> None:
    with pytest.raises(OpenH264Error, match="cannot load"):
        OpenH264Encoder("/nonexistent/libopenh264.so")
    libz = ctypes.util.find_library("z")
    if libz:
        with pytest.raises(OpenH264Error, match="not an OpenH264 library"):
            OpenH264Decoder(libz)
