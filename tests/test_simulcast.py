"""Simulcast acceptance (issue 6): ``sora_async`` sends r0/r1/r2 at 960x540.

Against the dev server, for VP8, VP9, AV1 and H.264: ``get_stats()`` shows three
``outbound-rtp`` entries r0/r1/r2 at about 240x135 / 480x270 / 960x540 with bytes
flowing; an official ``sora_sdk`` recvonly gets r0 by default and r2 when it asks
(``simulcast_rid``: sora_sdk 2025.4.0 has no ``simulcast_request_rid``). With an
offer whose ``encodings`` disable r2 (a JWT claim), the answer carries ``~r2`` and
nothing is sent on r2.

The source is 960x540 at 10 fps and each case lasts about 10 s: two CPU cores.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from sora_async import Connection
from sora_async.devserver import DevServer, default_simulcast_encodings, encode_jwt
from tests.rtc_support import PatternTrack, of_type, wait_stats

OPENH264 = "/usr/lib/x86_64-linux-gnu/libopenh264.so.7"
HAVE_OPENH264 = os.path.exists(OPENH264)
#: libwebrtc aligns simulcast heights (CPP issue 0085); ours are exact, libwebrtc's
#: decoders report what was sent. Heights within this of the nominal size pass.
HEIGHT_TOLERANCE = 16
NOMINAL = {"r0": (240, 135), "r1": (480, 270), "r2": (960, 540)}


def _close(size: tuple[int, int], nominal: tuple[int, int]) -> bool:
    return size[0] == nominal[0] and abs(size[1] - nominal[1]) <= HEIGHT_TOLERANCE


def _sending(stats: list[dict[str, Any]]) -> set[str | None]:
    return {o.get("rid") for o in of_type(stats, "outbound-rtp", "video") if o.get("bytesSent")}


@pytest.mark.official
@pytest.mark.parametrize("codec", ["VP8", "VP9", "AV1", "H264"])
async def test_simulcast_960x540_three_layers_official_receivers_get_r0_and_r2(
    sora_devserver: DevServer, official_client: Any, codec: str
) -> None:
    if codec == "H264" and not HAVE_OPENH264:
        pytest.skip(f"the official receiver needs libopenh264 for H.264 ({OPENH264} missing)")
    url = sora_devserver.signaling_url
    channel = f"simulcast-960-{codec}"
    extra = {"openh264": OPENH264} if codec == "H264" else {}
    sender = Connection(
        url,
        "sendonly",
        channel,
        video_codec_type=codec,
        audio=False,
        simulcast=True,
        video_source=PatternTrack(960, 540, fps=10),
    )
    async with asyncio.timeout(60), sender:
        assert sender.offer is not None and sender.offer.get("simulcast") is True
        stats = await wait_stats(sender, lambda s: _sending(s) == {"r0", "r1", "r2"}, within=20)
        outbound = {o["rid"]: o for o in of_type(stats, "outbound-rtp", "video")}
        for rid, nominal in NOMINAL.items():
            size = (outbound[rid].get("frameWidth", 0), outbound[rid].get("frameHeight", 0))
            assert _close(size, nominal), (rid, size)
        codecs = {s["id"]: s for s in of_type(stats, "codec")}
        assert {codecs[o["codecId"]]["mimeType"].lower() for o in outbound.values()} == {
            f"video/{codec.lower()}"
        }
        async with (
            official_client(
                signaling_urls=[url],
                role="recvonly",
                channel_id=channel,
                name="official default",
                audio=False,
                **extra,
            ) as rx_default,
            official_client(
                signaling_urls=[url],
                role="recvonly",
                channel_id=channel,
                name="official r2",
                audio=False,
                simulcast_rid="r2",
                **extra,
            ) as rx_r2,
        ):
            await rx_default.connect()
            await rx_r2.connect()
            low = await rx_default.wait_for(
                "video_frame", lambda e: e["stream_id"] == sender.connection_id, timeout=20
            )
            assert _close((low["width"], low["height"]), NOMINAL["r0"]), low
            # The dev server forwards the best layer being sent when r2 is not (as Sora
            # falls back), and the sender's allocation turns r2 off while its estimate is
            # low: on a loaded host the r2 receiver's first frame was once r0's. What
            # must come is r2 itself.
            await rx_r2.wait_for(
                "video_frame",
                lambda e: (
                    e["stream_id"] == sender.connection_id
                    and _close((e["width"], e["height"]), NOMINAL["r2"])
                ),
                timeout=20,
            )
            await rx_default.disconnect()
            await rx_r2.disconnect()


async def test_simulcast_offer_disabling_r2_answers_tilde_r2_and_sends_nothing_on_r2() -> None:
    secret = "simulcast-secret"
    encodings = default_simulcast_encodings()
    encodings[2]["active"] = False
    token = encode_jwt({"channel_id": "simulcast-no-r2", "simulcast_encodings": encodings}, secret)
    answers: list[str] = []
    async with DevServer(secret=secret) as server:
        sender = Connection(
            server.signaling_url,
            "sendonly",
            "simulcast-no-r2",
            metadata={"access_token": token},
            video_codec_type="VP8",
            audio=False,
            simulcast=True,
            video_source=PatternTrack(320, 180, fps=10),
        )

        def on_signaling(transport: Any, direction: Any, message: Any) -> None:
            if isinstance(message, dict) and message.get("type") == "answer":
                answers.append(str(message.get("sdp")))

        sender.on("signaling_message", on_signaling)
        async with asyncio.timeout(30), sender:
            assert sender.offer is not None
            assert [e.get("active", True) for e in sender.offer["encodings"]] == [
                True,
                True,
                False,
            ]
            stats = await wait_stats(sender, lambda s: _sending(s) >= {"r0", "r1"})
            await asyncio.sleep(1.0)
            stats = await sender.get_stats()
            assert _sending(stats) == {"r0", "r1"}
            r2 = [o for o in of_type(stats, "outbound-rtp", "video") if o.get("rid") == "r2"]
            assert all(not o.get("bytesSent") and not o.get("packetsSent") for o in r2), r2
    assert answers, "no answer seen"
    simulcast_lines = [line for line in answers[0].splitlines() if line.startswith("a=simulcast")]
    assert simulcast_lines == ["a=simulcast:send r0;r1;~r2"], simulcast_lines
