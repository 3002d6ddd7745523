"""The engine against the official client (``sora_sdk``, libwebrtc) through the dev server.

Both directions for the official client's software codecs (VP8, VP9, AV1):
the picture arrives at the sent size and the 440 Hz tone as a 440 Hz tone.
Plus simulcast from ``sora_async``: three layers, the official receiver
asking for r2 gets the full size while ours gets r0 by default.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sora_async import Connection
from sora_async.devserver import DevServer
from tests.rtc_support import (
    TONE_HZ,
    PatternTrack,
    ToneTrack,
    Tracks,
    dominant_frequency,
    frames,
    of_type,
    wait_stats,
)

pytestmark = pytest.mark.official

SMALL_VIDEO = {"width": 320, "height": 240, "fps": 15}


@pytest.mark.parametrize("codec", ["VP8", "VP9", "AV1"])
async def test_sora_async_sender_to_official_receiver(
    sora_devserver: DevServer, official_client: Any, codec: str
) -> None:
    url = sora_devserver.signaling_url
    async with official_client(
        signaling_urls=[url], role="recvonly", channel_id=codec, name="official recvonly"
    ) as receiver:
        await receiver.connect()
        sender = Connection(
            url,
            "sendonly",
            codec,
            video_codec_type=codec,
            audio_source=ToneTrack(),
            video_source=PatternTrack(320, 240),
        )
        async with asyncio.timeout(40), sender:
            frame = await receiver.wait_for(
                "video_frame", lambda e: e["stream_id"] == sender.connection_id, timeout=15
            )
            assert (frame["width"], frame["height"]) == (320, 240)
            tone = await receiver.wait_for(
                "audio_level",
                lambda e: e["stream_id"] == sender.connection_id and e["rms"] > 0.05,
                timeout=15,
            )
            assert abs(tone["freq"] - TONE_HZ) <= TONE_HZ * 0.05, tone
            stats = await receiver.get_stats()
            video = [
                s for s in stats if s.get("type") == "inbound-rtp" and s.get("kind") == "video"
            ]
            codecs = {s["id"]: s for s in stats if s.get("type") == "codec"}
            assert {codecs[s["codecId"]]["mimeType"].lower() for s in video} == {
                f"video/{codec.lower()}"
            }
        await receiver.disconnect()


@pytest.mark.parametrize("codec", ["VP8", "VP9", "AV1"])
async def test_official_sender_to_sora_async_receiver(
    sora_devserver: DevServer, official_client: Any, codec: str
) -> None:
    url = sora_devserver.signaling_url
    receiver = Connection(url, "recvonly", codec, video_codec_type=codec)
    tracks = Tracks(receiver)
    async with asyncio.timeout(60), receiver:
        async with official_client(
            signaling_urls=[url],
            role="sendonly",
            channel_id=codec,
            name="official sendonly",
            video_codec_type=codec,
            fake_video=SMALL_VIDEO,
            fake_audio={"frequency": TONE_HZ},
        ) as sender:
            await sender.connect()
            video = await tracks.wait(
                lambda t: t.kind == "video" and t.stream_id == sender.connection_id
            )
            audio = await tracks.wait(
                lambda t: t.kind == "audio" and t.stream_id == sender.connection_id
            )
            decoded = await frames(video, 15)
            assert {(f.width, f.height) for f in decoded} == {(320, 240)}
            sound = await frames(audio, 50)  # 1 s
            assert sound[0].sample_rate == 48000
            assert abs(dominant_frequency(sound[10:]) - TONE_HZ) <= TONE_HZ * 0.05
            stats = await receiver.get_stats()
            (inbound,) = of_type(stats, "inbound-rtp", "video")
            codecs = {s["id"]: s for s in of_type(stats, "codec")}
            assert codecs[inbound["codecId"]]["mimeType"] == f"video/{codec}"
            assert inbound["framesDecoded"] >= 15
            await sender.disconnect()


async def test_simulcast_from_sora_async_three_layers_each_receiver_its_rid(
    sora_devserver: DevServer, official_client: Any
) -> None:
    url = sora_devserver.signaling_url
    sender = Connection(
        url,
        "sendonly",
        "simulcast",
        video_codec_type="VP8",
        audio=False,
        simulcast=True,
        video_source=PatternTrack(640, 360),
    )
    ours = Connection(url, "recvonly", "simulcast", audio=False)
    tracks = Tracks(ours)
    async with asyncio.timeout(60), sender, ours:
        assert sender.offer is not None and sender.offer.get("simulcast") is True
        stats = await wait_stats(
            sender,
            lambda s: (
                {o.get("rid") for o in of_type(s, "outbound-rtp") if o["bytesSent"]}
                == {"r0", "r1", "r2"}
            ),
        )
        sizes = {
            o["rid"]: (o["frameWidth"], o["frameHeight"]) for o in of_type(stats, "outbound-rtp")
        }
        assert sizes == {"r0": (160, 90), "r1": (320, 180), "r2": (640, 360)}
        # Sora delivers r0 unless asked otherwise (CPP issue 0085).
        track = await tracks.wait(lambda t: t.kind == "video")
        assert {(f.width, f.height) for f in (await frames(track, 5))[-2:]} == {(160, 90)}
        async with official_client(
            signaling_urls=[url],
            role="recvonly",
            channel_id="simulcast",
            name="official r2",
            audio=False,
            simulcast_rid="r2",
        ) as official:
            await official.connect()
            frame = await official.wait_for("video_frame", lambda e: e["width"] == 640, timeout=20)
            assert frame["height"] == 360
            await official.disconnect()
