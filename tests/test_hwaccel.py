"""Implementations, backends, probing, capability and preference (official shapes)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from sora_async.hwaccel import (
    Backend,
    ProbeResult,
    VideoCodecCapability,
    VideoCodecImplementation,
    VideoCodecPreference,
    VideoCodecType,
    backends_for,
    create_video_codec_preference_from_implementation,
    get_video_codec_capability,
    implementation_available,
    probe_backends,
    set_prober,
)
from sora_async.hwaccel import capability as capability_module
from sora_async.hwaccel import probe as probe_module

Impl = VideoCodecImplementation
Type = VideoCodecType


@pytest.fixture(autouse=True)
def fresh_probe_cache() -> Iterator[None]:
    set_prober(None)
    yield
    set_prober(None)


def h100_prober(calls: list[int] | None = None):
    """A fake machine like an H100: software works, NVDEC works, NVENC and the rest do not."""

    def prober(backends: Sequence[Backend], openh264: str | None) -> dict[str, ProbeResult]:
        if calls is not None:
            calls.append(len(backends))
        out = {}
        for b in backends:
            if b.implementation is Impl.INTERNAL and not b.platforms:
                out[b.key] = ProbeResult(True)
            elif b.implementation is Impl.NVIDIA_VIDEO_CODEC_SDK and b.role == "decoder":
                out[b.key] = ProbeResult(b.codec is not Type.VP8 or b.hwaccel is None)
            elif b.implementation is Impl.NVIDIA_VIDEO_CODEC_SDK:
                out[b.key] = ProbeResult(False, "PermissionError: avcodec_open2(h264_nvenc)")
            else:
                out[b.key] = ProbeResult(False, "UnknownError")
        return out

    return prober


def test_enums_match_the_official_names_and_values() -> None:
    assert {m.name: m.value for m in Impl} == {
        "INTERNAL": 0,
        "CISCO_OPENH264": 1,
        "INTEL_VPL": 2,
        "NVIDIA_VIDEO_CODEC_SDK": 3,
        "AMD_AMF": 4,
        "RASPI_V4L2M2M": 5,
    }
    assert {m.name: m.value for m in Type} == {"VP8": 1, "VP9": 2, "AV1": 3, "H264": 4, "H265": 5}
    assert Impl.NVIDIA_VIDEO_CODEC_SDK.json_name == "nvidia_video_codec_sdk"
    assert Type.parse("video/hevc") is Type.H265 and Type.parse(4) is Type.H264
    assert (
        Impl.parse("intel_vpl") is Impl.INTEL_VPL
        and Impl.parse(types.SimpleNamespace(name="AMD_AMF")) is Impl.AMD_AMF
    )
    with pytest.raises(ValueError):
        Type.parse("MPEG2")


def test_implementations_map_to_pyav_codecs() -> None:
    def names(impl: str, codec: str, role: str, platform: str = "linux") -> list[str]:
        return [
            b.pyav_name + (f"+{b.hwaccel}" if b.hwaccel else "")
            for b in backends_for(impl, codec, role, platform)  # type: ignore[arg-type]
        ]

    assert names("INTERNAL", "VP9", "encoder") == ["libvpx-vp9"]
    assert names("INTERNAL", "AV1", "decoder") == ["libdav1d"]
    assert names("INTERNAL", "H264", "encoder") == ["libx264"]
    assert names("INTERNAL", "H264", "encoder", "darwin") == ["h264_videotoolbox", "libx264"]
    assert names("NVIDIA_VIDEO_CODEC_SDK", "H265", "encoder") == ["hevc_nvenc"]
    assert names("NVIDIA_VIDEO_CODEC_SDK", "VP8", "encoder") == []
    assert names("NVIDIA_VIDEO_CODEC_SDK", "AV1", "decoder") == ["av1+cuda", "av1_cuvid"]
    assert names("INTEL_VPL", "H264", "encoder") == ["h264_qsv", "h264_vaapi"]
    assert names("INTEL_VPL", "H264", "encoder", "win32") == ["h264_qsv"]
    assert names("AMD_AMF", "AV1", "encoder") == ["av1_amf"]
    assert names("RASPI_V4L2M2M", "H264", "encoder") == ["h264_v4l2m2m"]
    assert names("RASPI_V4L2M2M", "VP9", "decoder") == []
    assert names("CISCO_OPENH264", "H264", "decoder") == ["openh264"]


def test_capability_on_an_nvdec_only_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    set_prober(h100_prober())
    monkeypatch.setattr(capability_module, "_gpu_name", lambda: "NVIDIA H100 80GB HBM3")
    capability = get_video_codec_capability()
    internal = {
        "name": "internal",
        "codecs": [
            {"type": t, "encoder": True, "decoder": True, "parameters": {}}
            for t in ("VP8", "VP9", "H264", "H265", "AV1")
        ],
        "parameters": {},
    }
    nvidia = {
        "name": "nvidia_video_codec_sdk",
        "codecs": [
            {"type": t, "encoder": False, "decoder": True, "parameters": {}}
            for t in ("VP8", "VP9", "H264", "H265", "AV1")
        ],
        "parameters": {"nvcodec_gpu_device_name": "NVIDIA H100 80GB HBM3"},
    }
    assert capability.to_json() == {"engines": [internal, nvidia]}
    assert capability.supports("AV1", "NVIDIA_VIDEO_CODEC_SDK", "decoder")
    assert not capability.supports("AV1", "NVIDIA_VIDEO_CODEC_SDK", "encoder")
    assert capability.engine(Impl.AMD_AMF) is None


def test_preference_for_nvdec_decoding_and_software_encoding() -> None:
    set_prober(h100_prober())
    capability = get_video_codec_capability()
    nvidia = create_video_codec_preference_from_implementation(
        capability, Impl.NVIDIA_VIDEO_CODEC_SDK
    )
    assert nvidia.to_json()["codecs"][2] == {
        "type": "H264",
        "encoder": None,
        "decoder": "nvidia_video_codec_sdk",
        "parameters": {},
    }
    assert nvidia.sendable() == [] and Type.AV1 in nvidia.receivable()
    preference = VideoCodecPreference.default()
    preference.merge(nvidia)
    assert preference.encoder_for("H264") is Impl.INTERNAL
    assert preference.decoder_for("H264") is Impl.NVIDIA_VIDEO_CODEC_SDK
    assert create_video_codec_preference_from_implementation(capability, Impl.AMD_AMF).codecs == []


def test_preference_methods_follow_the_official_semantics() -> None:
    """Expected JSON recorded from sora_sdk 2025.4.0 with the same calls."""
    Codec = VideoCodecPreference.Codec
    a = VideoCodecPreference(
        [Codec(Type.VP8, Impl.INTERNAL, Impl.INTERNAL), Codec(Type.H264, Impl.INTERNAL, None)]
    )
    b = VideoCodecPreference(
        [
            Codec(Type.H264, None, Impl.NVIDIA_VIDEO_CODEC_SDK),
            Codec(Type.AV1, Impl.NVIDIA_VIDEO_CODEC_SDK, None),
        ]
    )
    a.merge(b)
    assert a.to_json() == {
        "codecs": [
            {"type": "VP8", "encoder": "internal", "decoder": "internal", "parameters": {}},
            {
                "type": "H264",
                "encoder": "internal",
                "decoder": "nvidia_video_codec_sdk",
                "parameters": {},
            },
            {"type": "AV1", "encoder": "nvidia_video_codec_sdk", "decoder": None, "parameters": {}},
        ]
    }
    assert a.get_or_add(Type.VP9) == 3 and a.codecs[3].encoder is None
    assert a.find(Type.H265) is None and a.find("VP8") == 0
    assert a.has_implementation(Impl.NVIDIA_VIDEO_CODEC_SDK) and not a.has_implementation(
        Impl.AMD_AMF
    )


def test_preference_accepts_json_official_objects_and_none() -> None:
    default = VideoCodecPreference.coerce(None)
    assert default.sendable() == [Type.VP8, Type.VP9, Type.H264, Type.H265, Type.AV1]
    as_json = {
        "codecs": [{"type": "AV1", "encoder": "internal", "decoder": None, "parameters": {}}]
    }
    assert VideoCodecPreference.coerce(as_json).to_json() == as_json
    # Shaped like sora_sdk.SoraVideoCodecPreference (IntEnum members with the same names).
    official = types.SimpleNamespace(
        codecs=[types.SimpleNamespace(type=Type.H265, encoder=None, decoder=Impl.INTEL_VPL)]
    )
    converted = VideoCodecPreference.coerce(official)
    assert converted.decoder_for("H265") is Impl.INTEL_VPL and converted.encoder_for("H265") is None
    with pytest.raises(TypeError):
        VideoCodecPreference.coerce(42)


def test_probe_results_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    set_prober(h100_prober(calls))
    get_video_codec_capability()
    get_video_codec_capability()
    assert len(calls) == 1
    assert implementation_available("H264", "NVIDIA_VIDEO_CODEC_SDK", "decoder")
    assert not implementation_available("H264", "NVIDIA_VIDEO_CODEC_SDK", "encoder")
    assert len(calls) == 1  # answered from the cache
    get_video_codec_capability(refresh=True)
    assert len(calls) == 2


def test_openh264_engine_appears_only_with_a_working_library() -> None:
    def prober(backends: Sequence[Backend], openh264: str | None) -> dict[str, ProbeResult]:
        return {
            b.key: ProbeResult(
                b.engine == "openh264" and openh264 == "/ok/libopenh264.so",
                detail={"version": "2.6.0"},
            )
            if b.engine == "openh264"
            else ProbeResult(b.implementation is Impl.INTERNAL)
            for b in backends
        }

    set_prober(prober)
    good = get_video_codec_capability("/ok/libopenh264.so").to_json()["engines"]
    assert [e["name"] for e in good] == ["internal", "cisco_openh264"]
    assert [c["type"] for c in good[1]["codecs"]] == ["VP8", "VP9", "H265", "AV1", "H264"]
    assert good[1]["codecs"][4] == {
        "type": "H264",
        "encoder": True,
        "decoder": True,
        "parameters": {"version": "2.6.0", "openh264_path": "/ok/libopenh264.so"},
    }
    bad = get_video_codec_capability("/missing/libopenh264.so").to_json()["engines"]
    assert [e["name"] for e in bad] == ["internal"]


def test_real_probe_finds_software_codecs_and_rules_out_missing_hardware() -> None:
    results = probe_backends(
        backends_for("INTERNAL", "VP9", "encoder")
        + backends_for("INTERNAL", "AV1", "decoder")
        + backends_for("NVIDIA_VIDEO_CODEC_SDK", "H264", "encoder")
        + backends_for("INTEL_VPL", "H264", "encoder")
    )
    assert results["internal:VP9:encoder:libvpx-vp9"].ok
    assert results["internal:AV1:decoder:libdav1d"].ok
    # Absent from this FFmpeg build: ruled out without a child process.
    assert "not in this FFmpeg build" in (results["intel_vpl:H264:encoder:h264_vaapi"].error or "")
    nvenc = results["nvidia_video_codec_sdk:H264:encoder:h264_nvenc"]
    if not nvenc.ok:
        assert nvenc.error


def _fake_worker(tmp_path: Path, body: str) -> str:
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, os, sys, time
            request = json.loads(sys.stdin.read())
            for spec in request["probes"]:
            """
        )
        + textwrap.indent(textwrap.dedent(body), "    ")
        + "\n    print(json.dumps({'key': spec['key'], 'ok': True}), flush=True)\n"
    )
    return str(script)


def test_a_crashing_probe_is_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _fake_worker(tmp_path, "if 'libvpx-vp9' in spec['key']: os._exit(3)")
    monkeypatch.setattr(probe_module, "_WORKER", worker)
    backends = (
        backends_for("INTERNAL", "VP8", "encoder")
        + backends_for("INTERNAL", "VP9", "encoder")
        + backends_for("INTERNAL", "AV1", "encoder")
    )
    results = probe_module.subprocess_prober(backends, None)
    assert results["internal:VP8:encoder:libvpx"].ok
    assert results["internal:AV1:encoder:libsvtav1"].ok  # re-run on its own after the crash
    assert results["internal:VP9:encoder:libvpx-vp9"] == ProbeResult(
        False, "probe process exited with 3"
    )


def test_a_hanging_probe_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _fake_worker(tmp_path, "if 'libx265' in spec['key']: time.sleep(30)")
    monkeypatch.setattr(probe_module, "_WORKER", worker)
    backends = backends_for("INTERNAL", "H265", "encoder") + backends_for(
        "INTERNAL", "H264", "encoder"
    )
    results = probe_module.subprocess_prober(backends, None, timeout=0.5, per_probe_timeout=1.0)
    assert not results["internal:H265:encoder:libx265"].ok
    assert "timed out" in (results["internal:H265:encoder:libx265"].error or "")
    assert results["internal:H264:encoder:libx264"].ok


@pytest.mark.official
def test_same_json_shape_as_the_official_capability() -> None:
    code = (
        "import json, sora_sdk as s\nprint(json.dumps(s.get_video_codec_capability().to_json()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    official = json.loads(out.stdout.strip().splitlines()[-1])
    ours = get_video_codec_capability().to_json()
    official_internal = official["engines"][0]
    our_internal = ours["engines"][0]
    assert official_internal["name"] == our_internal["name"] == "internal"
    assert [c["type"] for c in official_internal["codecs"]] == [
        c["type"] for c in our_internal["codecs"]
    ]
    assert [sorted(c) for c in official_internal["codecs"]] == [
        sorted(c) for c in our_internal["codecs"]
    ]
    assert sorted(official_internal) == sorted(our_internal)


def _nvdec_available() -> bool:
    return implementation_available("H264", "NVIDIA_VIDEO_CODEC_SDK", "decoder")


@pytest.mark.skipif("not _nvdec_available()", reason="no NVIDIA decoder on this machine")
@pytest.mark.parametrize("codec", ["H264", "H265", "AV1", "VP9"])
def test_nvdec_decodes_for_real(codec: str) -> None:
    from sora_async.codecs import EncoderSettings, create_decoder, create_encoder
    from sora_async.codecs.pattern import video_frame

    encoder = create_encoder(codec, settings=EncoderSettings(bitrate=500_000))
    decoder = create_decoder(codec, "NVIDIA_VIDEO_CODEC_SDK", fallback=False)
    for i in range(5):
        [encoded] = encoder.encode(video_frame(320, 240, i))
        [picture] = decoder.decode(encoded)
        assert (picture.width, picture.height) == (320, 240)
    assert decoder.implementation_name == "NvCodec"
    # Hopper has NVDEC but no NVENC: the encoder side must probe as unavailable and fall back.
    capability: VideoCodecCapability = get_video_codec_capability()
    if not capability.supports(codec, "NVIDIA_VIDEO_CODEC_SDK", "encoder") and codec != "VP9":
        assert create_encoder(codec, "NVIDIA_VIDEO_CODEC_SDK").encode(video_frame(320, 240, 0))
