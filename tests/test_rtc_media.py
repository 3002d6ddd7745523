"""Media through the engine and the dev server: ``sora_async`` on both ends.

Scenarios a user would recognise: every codec arrives at the size it was sent,
a late joiner sees video at once, packet loss is repaired by NACK without a
key frame, a receiver that stays while senders come and go plays each new
sender on reused mids, and the stats of a call are all there and plausible.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from sora_async import Connection, DisconnectCode
from sora_async.devserver import DevServer
from tests.rtc_support import (
    PatternTrack,
    ToneTrack,
    Tracks,
    bounded,
    frames,
    of_type,
    wait_stats,
)


def connection(server: DevServer, role: str, channel_id: str, **keywords: Any) -> Connection:
    return Connection(server.signaling_url, role, channel_id, **keywords)


@pytest.mark.parametrize("codec", ["VP8", "VP9", "AV1", "H264", "H265"])
async def test_each_codec_arrives_at_the_sent_size(sora_devserver: DevServer, codec: str) -> None:
    receiver = connection(sora_devserver, "recvonly", codec, video_codec_type=codec, audio=False)
    tracks = Tracks(receiver)
    sender = connection(
        sora_devserver,
        "sendonly",
        codec,
        video_codec_type=codec,
        audio=False,
        video_source=PatternTrack(320, 240),
    )
    async with asyncio.timeout(40), receiver, sender:
        track = await tracks.wait(lambda t: t.stream_id == sender.connection_id)
        decoded = await frames(track, 10)
        assert {(f.width, f.height) for f in decoded} == {(320, 240)}
        sent = await sender.get_stats()
        (outbound,) = of_type(sent, "outbound-rtp", "video")
        codecs = {s["id"]: s for s in of_type(sent, "codec")}
        assert codecs[outbound["codecId"]]["mimeType"] == f"video/{codec}"
        received = await receiver.get_stats()
        (inbound,) = of_type(received, "inbound-rtp", "video")
        assert inbound["framesDecoded"] >= 10 and inbound["keyFramesDecoded"] >= 1
        expected = {"VP8": "libvpx", "VP9": "libvpx", "AV1": "SVT-AV1", "H264": "x264"}
        assert outbound["encoderImplementation"] == expected.get(codec, "x265")
        # FFmpeg's native decoders, dav1d for AV1 (the names libwebrtc reports too).
        assert inbound["decoderImplementation"] == ("dav1d" if codec == "AV1" else "FFmpeg")


async def test_a_late_joiner_decodes_within_2_seconds_because_a_key_frame_is_requested(
    sora_devserver: DevServer,
) -> None:
    sender = connection(
        sora_devserver,
        "sendonly",
        "late",
        video_codec_type="VP8",
        audio=False,
        video_source=PatternTrack(320, 240),
    )
    async with asyncio.timeout(40), sender:
        # 2 s of video: the start-up key frame is long gone.
        before = await wait_stats(
            sender, lambda s: of_type(s, "outbound-rtp", "video")[0]["framesEncoded"] >= 30
        )
        receiver = connection(sora_devserver, "recvonly", "late", audio=False)
        tracks = Tracks(receiver)
        async with receiver:
            joined = time.monotonic()
            track = await tracks.wait(lambda t: t.kind == "video")
            first = await bounded(track.recv(), 5)
            delay = time.monotonic() - joined
            assert (first.width, first.height) == (320, 240)
            assert delay < 2.0, f"first frame {delay:.2f} s after joining"
        after = await sender.get_stats()
    (was,), (now,) = (
        of_type(before, "outbound-rtp", "video"),
        of_type(after, "outbound-rtp", "video"),
    )
    assert now["keyFramesEncoded"] > was["keyFramesEncoded"]
    assert now["pliCount"] + now["firCount"] > was["pliCount"] + was["firCount"]


async def test_lost_packets_are_nacked_and_repaired_without_a_key_frame(
    sora_devserver: DevServer,
) -> None:
    receiver = connection(sora_devserver, "recvonly", "loss", video_codec_type="VP8", audio=False)
    tracks = Tracks(receiver)
    sender = connection(
        sora_devserver,
        "sendonly",
        "loss",
        video_codec_type="VP8",
        audio=False,
        video_source=PatternTrack(320, 240),
    )
    async with asyncio.timeout(40), receiver, sender:
        track = await tracks.wait(lambda t: t.kind == "video")
        await frames(track, 5)
        # The network loses every 10th RTP packet the first time it is sent: the
        # dev server's retransmission (answering our NACK) gets through.
        peer = receiver._peer
        assert peer is not None and peer.transport is not None
        seen: set[int] = set()
        dropped: list[int] = []

        def lossy(datagram: bytes) -> bool:
            if not (128 <= datagram[0] < 192) or 192 <= datagram[1] <= 223:
                return True  # DTLS, SRTCP
            seq = int.from_bytes(datagram[2:4], "big")  # SRTP leaves the header clear
            if seq in seen:
                return True
            seen.add(seq)
            if len(seen) % 10:
                return True
            dropped.append(seq)
            return False

        before = of_type(await receiver.get_stats(), "inbound-rtp", "video")[0]
        peer.transport.set_receive_filter(lossy)
        decoded = await frames(track, 45)  # 3 s at 15 fps
        peer.transport.set_receive_filter(None)
        assert len(dropped) >= 3 and {(f.width, f.height) for f in decoded} == {(320, 240)}
        after = await wait_stats(
            receiver, lambda s: of_type(s, "inbound-rtp", "video")[0]["packetsLost"] == 0
        )
        inbound = of_type(after, "inbound-rtp", "video")[0]
        assert inbound["nackCount"] >= len(dropped) - 1
        assert inbound["pliCount"] == before["pliCount"]  # repaired, no key frame needed
        (outbound,) = of_type(await sender.get_stats(), "outbound-rtp", "video")
        assert outbound["keyFramesEncoded"] <= 2


async def test_a_staying_receiver_plays_each_new_sender_on_reused_mids(
    sora_devserver: DevServer,
) -> None:
    receiver = connection(sora_devserver, "recvonly", "churn", video_codec_type="VP8", audio=False)
    tracks = Tracks(receiver)
    mids: list[str | None] = []
    async with asyncio.timeout(120), receiver:
        for i in range(4):
            width = 160 + 32 * i  # each sender is recognisable by its size
            sender = connection(
                sora_devserver,
                "sendonly",
                "churn",
                video_codec_type="VP8",
                audio=False,
                video_source=PatternTrack(width, 120),
            )
            async with sender:
                track = await tracks.wait(lambda t, s=sender: t.stream_id == s.connection_id)
                decoded = await frames(track, 3)
                assert {(f.width, f.height) for f in decoded} == {(width, 120)}, i
                mids.append(track.mid)
            await bounded(track.ended())
            assert receiver.connection_id is not None
    assert len(set(mids)) < len(mids), mids  # retired mids came back


async def test_stats_of_a_sendrecv_call_have_every_field_with_plausible_values(
    sora_devserver: DevServer,
) -> None:
    common: dict[str, Any] = {
        "video_codec_type": "VP8",
        "data_channel_signaling": True,
        "data_channels": [{"label": "#chat", "direction": "sendrecv"}],
    }
    alice = connection(
        sora_devserver,
        "sendrecv",
        "stats",
        audio_source=ToneTrack(),
        video_source=PatternTrack(320, 240),
        **common,
    )
    bob = connection(
        sora_devserver,
        "sendrecv",
        "stats",
        audio_source=ToneTrack(),
        video_source=PatternTrack(320, 240),
        **common,
    )
    alice_tracks = Tracks(alice)
    chat_open = asyncio.Event()
    alice.on("data_channel", lambda label: label == "#chat" and chat_open.set())
    async with asyncio.timeout(60), alice, bob:
        video = await alice_tracks.wait(lambda t: t.kind == "video")
        await alice_tracks.wait(lambda t: t.kind == "audio")
        await frames(video, 5)
        await chat_open.wait()
        assert await alice.send_data_channel("#chat", b"hello")

        def complete(stats: list[dict[str, Any]]) -> bool:
            remote = of_type(stats, "remote-inbound-rtp", "video")
            return (
                bool(remote)
                and "roundTripTime" in remote[0]
                and bool(of_type(stats, "inbound-rtp", "audio"))
            )

        stats = await wait_stats(alice, complete, within=20)
    now = time.time() * 1000
    by_type: dict[str, list[dict[str, Any]]] = {}
    for entry in stats:
        by_type.setdefault(entry["type"], []).append(entry)
        assert abs(entry["timestamp"] - now) < 30_000, entry  # milliseconds
    assert set(by_type) >= {
        "codec",
        "outbound-rtp",
        "inbound-rtp",
        "remote-inbound-rtp",
        "media-source",
        "transport",
        "candidate-pair",
        "local-candidate",
        "remote-candidate",
        "data-channel",
        "peer-connection",
    }
    ids = {entry["id"] for entry in stats}
    assert {c["mimeType"] for c in by_type["codec"]} == {"audio/opus", "video/VP8"}

    (outbound,) = of_type(stats, "outbound-rtp", "video")
    assert outbound["mid"] == alice.offer["mid"]["video"]  # type: ignore[index]
    assert outbound["bytesSent"] > 0 and outbound["packetsSent"] > 0
    assert outbound["framesEncoded"] > 0 and outbound["keyFramesEncoded"] >= 1
    assert (outbound["frameWidth"], outbound["frameHeight"]) == (320, 240)
    assert 5 <= outbound["framesPerSecond"] <= 20
    assert outbound["targetBitrate"] > 0 and outbound["encoderImplementation"] == "libvpx"
    assert outbound["pliCount"] >= 0 and outbound["nackCount"] >= 0
    assert outbound["qualityLimitationReason"] in ("none", "cpu", "bandwidth", "other")
    assert set(outbound["qualityLimitationDurations"]) == {"none", "cpu", "bandwidth", "other"}
    assert outbound["active"] is True and outbound["scalabilityMode"] == "L1T1"
    assert {outbound["codecId"], outbound["mediaSourceId"], outbound["transportId"]} <= ids

    (remote,) = of_type(stats, "remote-inbound-rtp", "video")
    assert remote["localId"] == outbound["id"] and 0 <= remote["roundTripTime"] < 1.0

    (inbound,) = of_type(stats, "inbound-rtp", "video")
    assert inbound["bytesReceived"] > 0 and inbound["packetsReceived"] > 0
    assert inbound["packetsLost"] >= 0 and 0 <= inbound["jitter"] < 1.0  # seconds
    assert inbound["framesDecoded"] > 0 and inbound["keyFramesDecoded"] >= 1
    assert (inbound["frameWidth"], inbound["frameHeight"]) == (320, 240)
    assert inbound["decoderImplementation"] == "FFmpeg"
    (audio_in,) = of_type(stats, "inbound-rtp", "audio")
    assert audio_in["decoderImplementation"] == "libopus" and audio_in["bytesReceived"] > 0

    sources = {s["kind"]: s for s in by_type["media-source"]}
    assert (sources["video"]["width"], sources["video"]["height"]) == (320, 240)
    assert 0 < sources["audio"]["audioLevel"] <= 1

    (transport,) = by_type["transport"]
    assert transport["dtlsState"] == "connected" and transport["bytesReceived"] > 0
    (pair,) = by_type["candidate-pair"]
    assert transport["selectedCandidatePairId"] == pair["id"] and pair["nominated"]
    assert pair["localCandidateId"] in ids and pair["remoteCandidateId"] in ids
    (remote_candidate,) = by_type["remote-candidate"]
    assert remote_candidate["address"] == "127.0.0.1" and remote_candidate["port"] > 0

    chat = next(d for d in by_type["data-channel"] if d["label"] == "#chat")
    assert chat["state"] == "open" and chat["messagesSent"] == 1 and chat["bytesSent"] == 5
    assert by_type["peer-connection"][0]["dataChannelsOpened"] >= 5


async def test_a_dead_network_path_fails_the_connection_within_10_seconds(
    sora_devserver: DevServer,
) -> None:
    # Everything from the server stops arriving (media, RTCP, STUN consent)
    # while the WebSocket stays up: only the engine's liveness can tell.
    conn = connection(sora_devserver, "recvonly", "dead-path")
    async with asyncio.timeout(30):
        await conn.connect()
        peer = conn._peer
        assert peer is not None and peer.transport is not None
        cut = time.monotonic()
        peer.transport.set_receive_filter(lambda datagram: False)
        await conn.wait_closed()
    assert time.monotonic() - cut < 10
    assert conn.disconnect_code is DisconnectCode.PEER_CONNECTION_STATE_FAILED
