"""CISCO_OPENH264 end to end through the dev server (issue 5 acceptance).

Needs a libopenh264 (Debian's ``libopenh264-7``; ``.ci/run`` installs it when
it can): without one every test here is skipped with the reason. H.264 with
OpenH264 on both sides of ``sora_async``, and the official client given the
same library path (``Sora(openh264=...)``) in both directions: its decoder
works with Debian's 2.3.1, its encoder needs the 2.6 ABI it was built for
(the official-sender test is skipped with the evidence below an older library).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sora_async import Connection
from sora_async.devserver import DevServer
from sora_async.hwaccel import VideoCodecPreference, get_video_codec_capability
from tests.openh264_support import OPENH264, OPENH264_VERSION, needs_openh264
from tests.rtc_support import PatternTrack, Tracks, frames, of_type

pytestmark = needs_openh264

SMALL_VIDEO = {"width": 320, "height": 240, "fps": 15}


def openh264_only() -> VideoCodecPreference:
    return VideoCodecPreference(
        [VideoCodecPreference.Codec("H264", "CISCO_OPENH264", "CISCO_OPENH264")]
    )


def test_capability_reports_openh264_h264_when_the_library_loads() -> None:
    capability = get_video_codec_capability(openh264=OPENH264)
    assert capability.supports("H264", "CISCO_OPENH264", "encoder")
    assert capability.supports("H264", "CISCO_OPENH264", "decoder")
    engine = capability.engine("CISCO_OPENH264")
    assert engine is not None
    (h264,) = [c for c in engine.to_json()["codecs"] if c["type"] == "H264"]
    assert h264["parameters"]["openh264_path"] == OPENH264
    assert h264["parameters"]["version"].startswith("2.")


def test_the_capability_probe_really_encodes_and_decodes() -> None:
    from sora_async.hwaccel._probe_worker import _probe_openh264_objects
    from sora_async.hwaccel.backends import backends_for
    from sora_async.hwaccel.probe import probe_backends

    chain = backends_for("CISCO_OPENH264", "H264", "encoder")
    chain += backends_for("CISCO_OPENH264", "H264", "decoder")
    encoder, decoder = probe_backends(chain, OPENH264, refresh=True).values()
    assert encoder.ok and encoder.detail["bytes"] > 0, encoder
    assert decoder.ok and decoder.detail["format"] == "yuv420p", decoder
    # Without the package (the worker imports nothing else): objects only.
    assert OPENH264 is not None
    assert _probe_openh264_objects(OPENH264, "decoder")["version"].startswith("2.")


async def test_openh264_on_both_sides_of_sora_async(sora_devserver: DevServer) -> None:
    url = sora_devserver.signaling_url
    common: dict[str, Any] = {
        "video_codec_type": "H264",
        "audio": False,
        "openh264": OPENH264,
        "video_codec_preference": openh264_only(),
    }
    receiver = Connection(url, "recvonly", "oh264", **common)
    tracks = Tracks(receiver)
    sender = Connection(url, "sendonly", "oh264", video_source=PatternTrack(320, 240), **common)
    async with asyncio.timeout(40), receiver, sender:
        track = await tracks.wait(lambda t: t.stream_id == sender.connection_id)
        decoded = await frames(track, 10)
        assert {(f.width, f.height) for f in decoded} == {(320, 240)}
        (outbound,) = of_type(await sender.get_stats(), "outbound-rtp", "video")
        (inbound,) = of_type(await receiver.get_stats(), "inbound-rtp", "video")
        assert outbound["encoderImplementation"] == "OpenH264"
        assert inbound["decoderImplementation"] == "OpenH264"
        assert inbound["framesDecoded"] >= 10 and inbound["keyFramesDecoded"] >= 1


@pytest.mark.official
async def test_sora_async_openh264_sender_to_official_receiver_with_the_same_library(
    sora_devserver: DevServer, official_client: Any
) -> None:
    url = sora_devserver.signaling_url
    async with official_client(
        signaling_urls=[url],
        role="recvonly",
        channel_id="oh264-to-official",
        name="official recvonly",
        openh264=OPENH264,
    ) as receiver:
        await receiver.connect()
        sender = Connection(
            url,
            "sendonly",
            "oh264-to-official",
            video_codec_type="H264",
            audio=False,
            video_source=PatternTrack(320, 240),
            openh264=OPENH264,
            video_codec_preference=openh264_only(),
        )
        async with asyncio.timeout(40), sender:
            frame = await receiver.wait_for(
                "video_frame", lambda e: e["stream_id"] == sender.connection_id, timeout=15
            )
            assert (frame["width"], frame["height"]) == (320, 240)
            stats = await receiver.get_stats()
            video = [
                s for s in stats if s.get("type") == "inbound-rtp" and s.get("kind") == "video"
            ]
            codecs = {s["id"]: s for s in stats if s.get("type") == "codec"}
            assert {codecs[s["codecId"]]["mimeType"].lower() for s in video} == {"video/h264"}
            assert {s.get("decoderImplementation") for s in video} == {"OpenH264"}
        await receiver.disconnect()


@pytest.mark.official
@pytest.mark.skipif(
    OPENH264_VERSION is not None and OPENH264_VERSION < (2, 6, 0),
    reason=(
        "sora_sdk 2025.4.0 is built against the OpenH264 2.6 headers (it logs 'OpenH264 version"
        " is 2.6' from the compile-time macros) and its encoder does not work with an older"
        " library: with Debian's 2.3.1 it sends no decodable frame or crashes (SIGSEGV); its"
        " decoder works (see the test above). Set OPENH264_PATH to Cisco's 2.6 build to run it."
    ),
)
async def test_official_sender_with_openh264_to_sora_async_openh264_receiver(
    sora_devserver: DevServer, official_client: Any
) -> None:
    url = sora_devserver.signaling_url
    receiver = Connection(
        url,
        "recvonly",
        "official-oh264",
        video_codec_type="H264",
        audio=False,
        openh264=OPENH264,
        video_codec_preference=openh264_only(),
    )
    tracks = Tracks(receiver)
    async with asyncio.timeout(60), receiver:
        async with official_client(
            signaling_urls=[url],
            role="sendonly",
            channel_id="official-oh264",
            name="official sendonly",
            video_codec_type="H264",
            audio=False,
            fake_video=SMALL_VIDEO,
            openh264=OPENH264,
        ) as sender:
            await sender.connect()
            video = await tracks.wait(
                lambda t: t.kind == "video" and t.stream_id == sender.connection_id
            )
            decoded = await frames(video, 15)
            assert {(f.width, f.height) for f in decoded} == {(320, 240)}
            (inbound,) = of_type(await receiver.get_stats(), "inbound-rtp", "video")
            assert inbound["decoderImplementation"] == "OpenH264"
            assert inbound["framesDecoded"] >= 15
            sent = await sender.get_stats()
            outbound = [
                s for s in sent if s.get("type") == "outbound-rtp" and s.get("kind") == "video"
            ]
            assert {s.get("encoderImplementation") for s in outbound} == {"OpenH264"}
            await sender.disconnect()


def test_compat_sora_passes_openh264_to_each_connection() -> None:
    import sora_async.compat as compat

    conn = compat.Sora(openh264=OPENH264).create_connection(
        signaling_urls=["wss://sora.example.com/signaling"], role="recvonly", channel_id="c"
    )
    assert conn._session.core.options.openh264 == OPENH264
    with pytest.raises(ValueError, match="openh264 cannot be used"):
        compat.Sora(openh264="/nonexistent/libopenh264.so").create_connection(
            signaling_urls=["wss://sora.example.com/signaling"], role="recvonly", channel_id="c"
        )


def test_the_cli_openh264_option_makes_h264_use_it() -> None:
    from sora_async.cli import build_parser
    from sora_async.cli.args import connection_keywords

    args = build_parser().parse_args(["recvonly", "--openh264", str(OPENH264)])
    keywords = connection_keywords(args, environ={})
    assert keywords["openh264"] == OPENH264
    preference = keywords["video_codec_preference"]
    assert preference.decoder_for("H264").name == "CISCO_OPENH264"
    assert preference.encoder_for("VP9").name == "INTERNAL"
