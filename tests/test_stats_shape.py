"""``get_stats()`` has the shape libwebrtc gives: compared with ``sora_sdk`` in one scenario.

The same sendonly → recvonly call runs twice against one dev server, once
with the official client on both ends and once with ``sora_async``. Per W3C
stats type, every field issue 4 lists must be present on our side, and the
fields libwebrtc reports that we do not are printed (``pytest -s``) and held
to an explicit list, so a regression or a new gap shows up as a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from sora_async import Connection, VideoSink
from sora_async.devserver import DevServer
from tests.rtc_support import PatternTrack, ToneTrack

pytestmark = pytest.mark.official

#: What issue 4 requires per type (``timestamp``/``id``/``type`` everywhere).
REQUIRED = {
    "codec": {"mimeType"},
    "outbound-rtp": {
        "kind", "mid", "bytesSent", "packetsSent", "framesEncoded", "keyFramesEncoded",
        "frameWidth", "frameHeight", "framesPerSecond", "targetBitrate",
        "encoderImplementation", "pliCount", "nackCount", "qualityLimitationReason",
        "qualityLimitationDurations", "active", "scalabilityMode",
    },
    "inbound-rtp": {
        "bytesReceived", "packetsReceived", "packetsLost", "framesDecoded",
        "keyFramesDecoded", "decoderImplementation", "jitter", "frameWidth", "frameHeight",
    },
    "remote-inbound-rtp": {"roundTripTime"},
    "media-source": set(),
    "transport": set(),
    "candidate-pair": set(),
    "local-candidate": set(),
    "remote-candidate": set(),
    "peer-connection": set(),
}  # fmt: skip
COMMON = {"id", "type", "timestamp"}

#: libwebrtc (M139) fields we do not produce yet, per type; kept explicit so a
#: field lost by a change fails here. Beyond what issue 4 asks for.
KNOWN_GAPS: dict[str, set[str]] = {
    "candidate-pair": {
        "bytesDiscardedOnSend", "consentRequestsSent", "lastPacketReceivedTimestamp",
        "lastPacketSentTimestamp", "packetsDiscardedOnSend", "priority", "requestsReceived",
        "requestsSent", "responsesReceived", "responsesSent", "totalRoundTripTime", "writable",
    },
    "inbound-rtp": {
        "framesAssembledFromMultiplePackets", "freezeCount", "jitterBufferDelay",
        "jitterBufferEmittedCount", "jitterBufferMinimumDelay", "jitterBufferTargetDelay",
        "minPlayoutDelay", "pauseCount", "powerEfficientDecoder", "qpSum", "totalAssemblyTime",
        "totalFreezesDuration", "totalInterFrameDelay", "totalPausesDuration",
        "totalProcessingDelay", "totalSquaredInterFrameDelay",
    },
    "local-candidate": {"ip", "networkAdapterType", "networkType", "usernameFragment", "vpn"},
    "outbound-rtp": {
        "encodingIndex", "hugeFramesSent", "qpSum", "totalEncodedBytesTarget",
        "totalPacketSendDelay",
    },
    "remote-candidate": {"ip", "usernameFragment"},
    "remote-outbound-rtp": {
        "remoteTimestamp", "reportsSent", "roundTripTimeMeasurements", "totalRoundTripTime",
    },
    "transport": {
        "dtlsCipher", "iceLocalUsernameFragment", "localCertificateId", "remoteCertificateId",
        "srtpCipher", "tlsVersion",
    },
}  # fmt: skip

VIDEO = {"width": 320, "height": 240, "fps": 15}


def key_sets(stats: list[dict[str, Any]], kind: str | None = None) -> dict[str, set[str]]:
    shapes: dict[str, set[str]] = {}
    for entry in stats:
        if kind is not None and entry.get("kind") not in (None, kind):
            continue
        shapes.setdefault(entry["type"], set()).update(entry)
    return shapes


async def poll(
    get: Callable[[], Any], ready: Callable[[list[dict[str, Any]]], bool], within: float
) -> list[dict[str, Any]]:
    async with asyncio.timeout(within):
        while True:
            stats = await get()
            if ready(stats):
                return stats
            await asyncio.sleep(0.5)  # stats have no event to wait on


def has(stats: list[dict[str, Any]], type_: str, field: str) -> bool:
    return any(s["type"] == type_ and s.get(field) for s in stats)


async def official_shapes(official_client: Any, url: str) -> tuple[dict, dict]:
    async with (
        official_client(signaling_urls=[url], role="recvonly", channel_id="shape-official") as rx,
        official_client(
            signaling_urls=[url],
            role="sendonly",
            channel_id="shape-official",
            video_codec_type="VP8",
            fake_video=VIDEO,
            fake_audio={"frequency": 440},
        ) as tx,
    ):
        await rx.connect()
        await tx.connect()
        sent = await poll(tx.get_stats, lambda s: has(s, "remote-inbound-rtp", "roundTripTime"), 30)
        received = await poll(rx.get_stats, lambda s: has(s, "inbound-rtp", "framesDecoded"), 30)
        await tx.disconnect()
        await rx.disconnect()
    return key_sets(sent, "video"), key_sets(received, "video")


async def our_shapes(url: str) -> tuple[dict, dict]:
    common: dict[str, Any] = {"channel_id": "shape-ours", "video_codec_type": "VP8"}
    tx = Connection(
        url,
        role="sendonly",
        audio_source=ToneTrack(),
        video_source=PatternTrack(VIDEO["width"], VIDEO["height"]),
        **common,
    )
    rx = Connection(url, role="recvonly", **common)
    sinks: list[VideoSink] = []
    rx.on("track", lambda t: t.kind == "video" and sinks.append(VideoSink(t)))
    async with asyncio.timeout(60), rx, tx:
        sent = await poll(tx.get_stats, lambda s: has(s, "remote-inbound-rtp", "roundTripTime"), 30)
        received = await poll(rx.get_stats, lambda s: has(s, "inbound-rtp", "framesDecoded"), 30)
    return key_sets(sent, "video"), key_sets(received, "video")


async def test_stats_keys_match_libwebrtc_for_the_fields_issue_4_lists(
    official_client: Any,
) -> None:
    async with DevServer(port=0) as server:
        official_sent, official_received = await official_shapes(
            official_client, server.signaling_url
        )
        ours_sent, ours_received = await our_shapes(server.signaling_url)

    ours = {**ours_received, **ours_sent}
    official = {**official_received, **official_sent}
    for type_, fields in REQUIRED.items():
        assert type_ in ours, f"no {type_} stats"
        missing = (fields | COMMON) - ours[type_]
        assert not missing, f"{type_} lacks {sorted(missing)}"
    gaps = {}
    for type_, keys in official.items():
        if type_ == "certificate":
            continue  # aiortc keeps its certificate private; documented gap
        absent = keys - ours.get(type_, set())
        if absent:
            gaps[type_] = absent
    for type_, absent in sorted(gaps.items()):
        print(f"libwebrtc reports, sora_async does not: {type_}: {sorted(absent)}")
    assert set(official) - {"certificate"} <= set(ours), "a whole stats type is missing"
    new_gaps = {t: a - KNOWN_GAPS.get(t, set()) for t, a in gaps.items()}
    assert not any(new_gaps.values()), f"new gaps against libwebrtc: {new_gaps}"
