"""Codec registry: lookup, SDP facts, fmtp matching per codec, custom plugins."""

from __future__ import annotations

from collections.abc import Sequence

import av
import pytest

from sora_async.codecs import (
    CodecRegistry,
    CodecSpec,
    CodecUnavailableError,
    Depacketizer,
    EncodedFrame,
    Encoder,
    Packetizer,
    codecs,
    create_decoder,
    create_depacketizer,
    create_encoder,
    create_packetizer,
    find_codec,
    fmtp_compatible,
    format_fmtp,
    get_codec,
    parse_fmtp,
)
from sora_async.codecs.pattern import video_frame
from sora_async.codecs.pyav import configurator_for
from sora_async.hwaccel import BACKENDS


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("VP9", "VP9"),
        ("vp9", "VP9"),
        ("video/VP9", "VP9"),
        ("video/h265", "H265"),
        ("HEVC", "H265"),
        ("h264", "H264"),
        ("audio/opus", "OPUS"),
        ("opus", "OPUS"),
        ("AV1", "AV1"),
    ],
)
def test_lookup_by_sora_name_mime_type_or_rtpmap_name(name: str, expected: str) -> None:
    assert get_codec(name).name == expected


def test_unknown_codecs() -> None:
    assert find_codec("video/MP4V-ES") is None
    with pytest.raises(CodecUnavailableError):
        get_codec("G722")


def test_sdp_facts() -> None:
    assert [c.rtpmap for c in codecs("video")] == [
        "VP8/90000",
        "VP9/90000",
        "AV1/90000",
        "H264/90000",
        "H265/90000",
    ]
    assert get_codec("OPUS").rtpmap == "opus/48000/2"
    assert get_codec("VP9").default_fmtp == {"profile-id": "0"}
    assert format_fmtp(get_codec("H264").default_fmtp) == (
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
    )
    assert format_fmtp(get_codec("H265").default_fmtp) == (
        "level-id=93;profile-id=1;tier-flag=0;tx-mode=SRST"
    )
    assert [str(f) for f in get_codec("AV1").rtcp_feedback] == [
        "goog-remb",
        "ccm fir",
        "nack",
        "nack pli",
    ]
    assert (
        get_codec("VP8").video_codec_type is not None and get_codec("OPUS").video_codec_type is None
    )


def test_fmtp_parse_and_format() -> None:
    params = parse_fmtp("profile-level-id=42e01f; packetization-mode=1;Level-Asymmetry-Allowed=1")
    assert params == {
        "profile-level-id": "42e01f",
        "packetization-mode": "1",
        "level-asymmetry-allowed": "1",
    }
    assert parse_fmtp(format_fmtp(params)) == params
    assert parse_fmtp(None) == {} and parse_fmtp("flag") == {"flag": ""}


@pytest.mark.parametrize(
    ("codec", "local", "remote", "compatible"),
    [
        ("VP9", {"profile-id": "0"}, {}, True),
        ("VP9", {"profile-id": "0"}, {"profile-id": "2"}, False),
        ("VP9", {}, {"profile-id": "oops"}, False),
        ("AV1", {}, {"profile": "0", "level-idx": "8", "tier": "1"}, True),
        ("AV1", {"profile": "0"}, {"profile": "1"}, False),
        ("AV1", {}, {"level-idx": "x"}, False),
        (
            "H264",
            {"profile-level-id": "640c1f", "packetization-mode": "1"},
            {"profile-level-id": "640c34", "packetization-mode": "1"},
            True,
        ),
        (
            "H264",
            {"profile-level-id": "640c1f", "packetization-mode": "1"},
            {"profile-level-id": "64001f", "packetization-mode": "1"},
            False,
        ),
        ("H265", {"profile-id": "1", "level-id": "93"}, {"level-id": "153"}, True),
        ("H265", {"profile-id": "1"}, {"profile-id": "1", "tier-flag": "1"}, False),
        ("VP8", {}, {"anything": "1"}, True),
        ("OPUS", {"useinbandfec": "1"}, {"stereo": "1"}, True),
    ],
)
def test_fmtp_compatibility_per_codec(
    codec: str, local: dict[str, str], remote: dict[str, str], compatible: bool
) -> None:
    assert fmtp_compatible(codec, local, remote) is compatible


def test_every_codec_has_working_factories() -> None:
    for spec in codecs():
        assert isinstance(create_packetizer(spec.name), Packetizer)
        assert isinstance(create_depacketizer(spec.name), Depacketizer)
        assert create_encoder(spec.name).implementation_name
        assert create_decoder(spec.name).implementation_name


def test_every_pyav_encoder_backend_has_a_real_time_configuration() -> None:
    for backend in BACKENDS:
        if backend.role == "encoder" and backend.engine == "pyav":
            assert configurator_for(backend.pyav_name) is not None, backend.pyav_name


class UppercaseEncoder(Encoder):
    """A custom plugin: pretends to encode by tagging frames."""

    codec = "VP8"

    @property
    def implementation_name(self) -> str:
        return "custom"

    def encode(self, frame: av.frame.Frame, force_keyframe: bool = False) -> list[EncodedFrame]:
        return [EncodedFrame(b"\x10\x00\x00", 0, "VP8", is_keyframe=True)]


def test_custom_encoders_and_codecs_can_be_registered() -> None:
    registry = CodecRegistry()
    registry.register_codec(get_codec("VP8"))
    registry.register_encoder(
        "VP8", "NVIDIA_VIDEO_CODEC_SDK", lambda settings, **kw: UppercaseEncoder()
    )
    encoder = registry.create_encoder("video/VP8", "NVIDIA_VIDEO_CODEC_SDK")
    assert encoder.implementation_name == "custom"
    assert encoder.encode(video_frame(160, 120, 0))[0].is_keyframe
    with pytest.raises(ValueError):
        registry.register_codec(get_codec("VP8"))

    class Passthrough(Depacketizer):
        codec = "X-TEST"

        def depacketize(self, payloads: Sequence[bytes], timestamp: int = 0) -> EncodedFrame:
            return EncodedFrame(b"".join(payloads), timestamp, "X-TEST")

        def is_frame_start(self, payload: bytes) -> bool:
            return True

        def is_keyframe_start(self, payload: bytes) -> bool:
            return True

    registry.register_codec(
        CodecSpec(
            name="X-TEST",
            kind="video",
            mime_type="video/X-TEST",
            clock_rate=90000,
            packetizer=create_packetizer("VP8").__class__,
            depacketizer=Passthrough,
        )
    )
    assert registry.create_depacketizer("x-test").depacketize([b"a", b"b"]).data == b"ab"
