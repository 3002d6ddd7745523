"""Encoded transform (issue 7) through the engine and the dev server.

The official test's scenario: a sender appends ``b"sora"`` to every encoded
audio and video frame, a receiver checks and strips it, media still decodes
and the stats show bytes both ways. Then: an H.264 SEI user-data NAL unit
rides along intact, XOR "encryption" makes video undecodable without the
key and clean with it, simulcast layers carry their rid, the asyncio and
official styles, and the failure modes (a frame never handed back, a
frame handed back after disconnect).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from sora_async import (
    AudioFrameTransformer,
    Connection,
    TransformableAudioFrame,
    TransformableVideoFrame,
    VideoFrameTransformer,
)
from sora_async.devserver import DevServer
from sora_async.transform import FrameDirection
from tests.rtc_support import PatternTrack, ToneTrack, Tracks, frames, of_type, wait_stats

TRAILER = b"sora"


def connection(server: DevServer, role: str, channel_id: str, **keywords: Any) -> Connection:
    return Connection(server.signaling_url, role, channel_id, **keywords)


class Marker:
    """Appends the trailer on send; checks and strips it on receive, counting."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = {"audio": 0, "video": 0}
        self.marked: dict[str, int] = {"audio": 0, "video": 0}
        self.unmarked = 0
        self.seen: list[Any] = []
        self.audio: list[tuple[int | None, int | None]] = []

    async def append(self, frame: Any) -> Any:
        assert frame.direction is FrameDirection.SENDER
        self.sent[frame.kind] += 1
        frame.set_data(np.concatenate([frame.get_data(), np.frombuffer(TRAILER, np.uint8)]))
        return frame

    async def strip(self, frame: Any) -> Any:
        assert frame.direction is FrameDirection.RECEIVER
        self.seen.append((frame.mime_type, frame.payload_type, frame.ssrc, frame.rtp_timestamp))
        if frame.kind == "audio":
            self.audio.append((frame.receive_time, frame.audio_level))
        data = frame.get_data()
        if data.tobytes().endswith(TRAILER):
            frame.set_data(data[: -len(TRAILER)])
            self.marked[frame.kind] += 1
        else:
            self.unmarked += 1
        return frame


CODECS = ["VP8", "VP9", "H264", "H265", "AV1"]


@pytest.mark.parametrize("codec", CODECS)
async def test_sora_trailer_appended_and_stripped(sora_devserver: DevServer, codec: str) -> None:
    marker = Marker()
    receiver = connection(sora_devserver, "recvonly", f"tx-{codec}", video_codec_type=codec)
    tracks = Tracks(receiver)
    receiver.on(
        "track",
        lambda track: track.set_frame_transformer(
            AudioFrameTransformer(marker.strip)
            if track.kind == "audio"
            else VideoFrameTransformer(marker.strip)
        ),
    )
    sender = connection(
        sora_devserver,
        "sendonly",
        f"tx-{codec}",
        video_codec_type=codec,
        audio_source=ToneTrack(),
        video_source=PatternTrack(320, 240),
        audio_frame_transformer=AudioFrameTransformer(marker.append),
        # a bare coroutine works too (wrapped in a VideoFrameTransformer)
        video_frame_transformer=marker.append,
    )
    async with asyncio.timeout(60), receiver, sender:
        video = await tracks.wait(lambda t: t.kind == "video")
        audio = await tracks.wait(lambda t: t.kind == "audio")
        decoded = await frames(video, 10, within=30)
        assert {(f.width, f.height) for f in decoded} == {(320, 240)}
        await frames(audio, 20)
        sent = await wait_stats(
            sender, lambda s: all(o["bytesSent"] > 0 for o in of_type(s, "outbound-rtp"))
        )
        received = await wait_stats(
            receiver,
            lambda s: (
                len(of_type(s, "inbound-rtp")) == 2
                and all(i["bytesReceived"] > 0 for i in of_type(s, "inbound-rtp"))
            ),
        )
    assert len(of_type(sent, "outbound-rtp")) == 2
    (inbound,) = of_type(received, "inbound-rtp", "video")
    assert inbound["framesDecoded"] >= 10
    assert marker.unmarked == 0
    assert marker.marked["video"] >= 10 and marker.marked["audio"] >= 20, marker.marked
    mimes = {m for m, *_ in marker.seen}
    assert mimes == {"audio/opus", f"video/{codec}"}
    assert all(pt and ssrc for _, pt, ssrc, _ in marker.seen)
    assert all(t is not None and t > 0 for t, _ in marker.audio)  # µs since the epoch


def sei_user_data(payload: bytes) -> bytes:
    """An H.264 SEI NAL unit (type 6) with one user_data_unregistered message (type 5)."""
    uuid = bytes(range(0x10, 0x20))
    body = uuid + payload
    assert b"\x00\x00" not in body and len(body) < 255
    return b"\x00\x00\x00\x01\x06\x05" + bytes([len(body)]) + body + b"\x80"


async def test_h264_sei_user_data_arrives_intact(sora_devserver: DevServer) -> None:
    received: list[bytes] = []
    count = 0

    async def add_sei(frame: TransformableVideoFrame) -> TransformableVideoFrame:
        nonlocal count
        count += 1
        frame.set_data(bytes(frame.get_data()) + sei_user_data(b"frame %d" % count))
        return frame

    async def read_sei(frame: TransformableVideoFrame) -> TransformableVideoFrame:
        data = bytes(frame.get_data())
        marker = b"\x00\x00\x00\x01\x06\x05"
        at = data.rfind(marker)
        if at >= 0:
            received.append(data[at:])
        return frame

    receiver = connection(sora_devserver, "recvonly", "sei", video_codec_type="H264", audio=False)
    tracks = Tracks(receiver)
    receiver.on("track", lambda t: t.set_frame_transformer(read_sei))
    sender = connection(
        sora_devserver,
        "sendonly",
        "sei",
        video_codec_type="H264",
        audio=False,
        video_source=PatternTrack(320, 240),
        video_frame_transformer=VideoFrameTransformer(add_sei),
    )
    async with asyncio.timeout(40), receiver, sender:
        track = await tracks.wait(lambda t: t.kind == "video")
        decoded = await frames(track, 10)
    assert {(f.width, f.height) for f in decoded} == {(320, 240)}
    assert len(received) >= 10
    numbers = []
    for nal in received:
        body = nal[7:-1]
        assert nal[6] == len(body) and body[:16] == bytes(range(0x10, 0x20)), nal
        numbers.append(int(body[16:].split()[1]))
    assert numbers == sorted(numbers)  # in order


def xor(data: bytes, keep: int) -> bytes:
    """XOR everything after the first ``keep`` bytes (the VP8 frame tag stays readable)."""
    array = np.frombuffer(data, np.uint8).copy()
    array[keep:] ^= 0xA5
    return array.tobytes()


async def xor_frame(frame: TransformableVideoFrame) -> TransformableVideoFrame:
    frame.set_data(xor(bytes(frame.get_data()), 3))
    return frame


async def test_xor_encryption_needs_the_key(sora_devserver: DevServer) -> None:
    with_key = connection(sora_devserver, "recvonly", "xor", audio=False)
    without_key = connection(sora_devserver, "recvonly", "xor", audio=False)
    keyed, plain = Tracks(with_key), Tracks(without_key)
    with_key.on("track", lambda t: t.set_frame_transformer(VideoFrameTransformer(xor_frame)))
    sender = connection(
        sora_devserver,
        "sendonly",
        "xor",
        video_codec_type="VP8",
        audio=False,
        video_source=PatternTrack(320, 240),
        video_frame_transformer=VideoFrameTransformer(xor_frame),
    )
    async with asyncio.timeout(40), with_key, without_key, sender:
        track = await keyed.wait(lambda t: t.kind == "video")
        decoded = await frames(track, 10)
        assert {(f.width, f.height) for f in decoded} == {(320, 240)}
        await plain.wait(lambda t: t.kind == "video")
        stats = await wait_stats(
            without_key,
            lambda s: any(i["packetsReceived"] > 100 for i in of_type(s, "inbound-rtp", "video")),
        )
        (inbound,) = of_type(stats, "inbound-rtp", "video")
        assert inbound.get("framesDecoded", 0) == 0, inbound
        assert inbound["framesDropped"] > 0 or inbound.get("decodeErrors", 0) > 0, inbound
        receivers = [r for r in without_key._peer.receivers if r.kind == "video"]  # type: ignore[union-attr]
        assert sum(s.decode_errors for r in receivers for s in r.streams.values()) > 0
        # the keyed receiver is still decoding
        assert len(await frames(track, 5)) == 5


async def test_official_style_enqueue_later_from_another_thread(sora_devserver: DevServer) -> None:
    outgoing = VideoFrameTransformer()
    seen: list[TransformableVideoFrame] = []
    threads: set[str] = set()

    def on_transform(frame: TransformableVideoFrame) -> None:
        seen.append(frame)

        def later() -> None:
            threads.add(threading.current_thread().name)
            frame.set_data(bytes(frame.get_data()) + TRAILER)
            outgoing.enqueue(frame)

        threading.Timer(0.005, later).start()

    outgoing.on_transform = on_transform
    incoming = VideoFrameTransformer()
    marked = 0

    def strip(frame: TransformableVideoFrame) -> None:
        nonlocal marked
        data = frame.get_data()
        if data.tobytes().endswith(TRAILER):
            marked += 1
            frame.set_data(data[:-4])
        incoming.enqueue(frame)

    incoming.on_transform = strip
    receiver = connection(sora_devserver, "recvonly", "official", audio=False)
    tracks = Tracks(receiver)
    receiver.on("track", lambda t: t.set_frame_transformer(incoming))
    sender = connection(
        sora_devserver,
        "sendonly",
        "official",
        video_codec_type="VP8",
        audio=False,
        video_source=PatternTrack(320, 240),
        video_frame_transformer=outgoing,
    )
    async with asyncio.timeout(40), receiver, sender:
        track = await tracks.wait(lambda t: t.kind == "video")
        await frames(track, 10)
        # short-circuiting: frames flow unchanged, the callback is no longer called
        outgoing.start_short_circuiting()
        incoming.start_short_circuiting()
        before = len(seen)
        await frames(track, 5)
        assert len(seen) <= before + 1
    assert marked >= 10
    assert threads and threading.main_thread().name not in threads
    frame = seen[0]
    assert frame.mime_type == frame.mine_type == "video/VP8"
    assert frame.is_key_frame and (frame.width, frame.height) == (320, 240)
    assert frame.get_data().flags.writeable is False
    with pytest.raises(ValueError):
        frame.get_data()[0] = 1
    outgoing.enqueue(frame)  # after disconnect / twice: dropped quietly


async def test_async_iterator_style_and_drop(sora_devserver: DevServer) -> None:
    transformer = AudioFrameTransformer()
    handled: list[TransformableAudioFrame] = []

    async def run() -> None:
        async for frame in transformer:
            handled.append(frame)
            if len(handled) % 2:
                await transformer.put(frame)
            else:
                transformer.drop(frame)

    task = asyncio.create_task(run())
    await asyncio.sleep(0)
    receiver = connection(sora_devserver, "recvonly", "iter", video=False)
    tracks = Tracks(receiver)
    sender = connection(
        sora_devserver,
        "sendonly",
        "iter",
        video=False,
        audio_source=ToneTrack(),
        audio_frame_transformer=transformer,
    )
    try:
        async with asyncio.timeout(40), receiver, sender:
            track = await tracks.wait(lambda t: t.kind == "audio")
            await frames(track, 20)
            stats = await wait_stats(
                sender, lambda s: of_type(s, "outbound-rtp", "audio")[0]["packetsSent"] >= 20
            )
            (outbound,) = of_type(stats, "outbound-rtp", "audio")
            # every second frame dropped
            assert outbound["packetsSent"] <= len(handled) // 2 + 2
    finally:
        task.cancel()
    frame = handled[0]
    assert frame.mime_type == "audio/opus" and frame.direction is FrameDirection.SENDER
    assert frame.contributing_sources.dtype == np.uint32 and frame.sequence_number is None
    assert all(0 <= f.audio_level <= 127 for f in handled)  # type: ignore[operator]


async def test_a_frame_never_handed_back_stops_only_that_stream(sora_devserver: DevServer) -> None:
    held: list[TransformableVideoFrame] = []
    transformer = VideoFrameTransformer()
    transformer.on_transform = held.append  # never enqueued
    receiver = connection(sora_devserver, "recvonly", "stuck")
    tracks = Tracks(receiver)
    sender = connection(
        sora_devserver,
        "sendonly",
        "stuck",
        video_codec_type="VP8",
        audio_source=ToneTrack(),
        video_source=PatternTrack(320, 240),
        video_frame_transformer=transformer,
    )
    async with asyncio.timeout(40), receiver, sender:
        audio = await tracks.wait(lambda t: t.kind == "audio")
        await frames(audio, 50)  # audio flows on; signaling and stats too
        stats = await sender.get_stats()
        assert of_type(stats, "outbound-rtp", "audio")[0]["packetsSent"] >= 50
        video = [s for s in of_type(stats, "outbound-rtp", "video")]
        assert not video or video[0].get("packetsSent", 0) == 0
    assert len(held) == 1  # one frame in flight, nothing piles up
    transformer.enqueue(held[0])  # after disconnect: dropped quietly
    await asyncio.sleep(0.05)


async def test_simulcast_layers_show_their_rid(sora_devserver: DevServer) -> None:
    rids: set[str | None] = set()
    all_rids = asyncio.Event()

    async def note(frame: TransformableVideoFrame) -> TransformableVideoFrame:
        rids.add(frame.rid)
        if len(rids) == 3:
            all_rids.set()
        return frame

    sender = connection(
        sora_devserver,
        "sendonly",
        "simulcast",
        video_codec_type="VP8",
        audio=False,
        simulcast=True,
        video_source=PatternTrack(640, 360),
        video_frame_transformer=note,
    )
    async with asyncio.timeout(40), sender:
        await wait_stats(sender, lambda s: len(of_type(s, "outbound-rtp", "video")) == 3)
        await asyncio.wait_for(all_rids.wait(), 10)
    assert rids == {"r0", "r1", "r2"}


def test_wrong_transformers_are_refused() -> None:
    with pytest.raises(ValueError, match="video_frame_transformer"):
        Connection("ws://127.0.0.1:9/signaling", "sendonly", "c", video_frame_transformer=1)
    with pytest.raises(ValueError, match="audio_frame_transformer"):
        Connection(
            "ws://127.0.0.1:9/signaling",
            "sendonly",
            "c",
            audio_frame_transformer=VideoFrameTransformer(),
        )
    with pytest.raises(TypeError):
        TransformableVideoFrame()


async def test_a_receiving_transformer_that_never_hands_back_stops_only_its_track(
    sora_devserver: DevServer,
) -> None:
    held: list[TransformableAudioFrame] = []
    stuck = AudioFrameTransformer()
    stuck.on_transform = held.append  # never enqueued
    receiver = connection(sora_devserver, "recvonly", "rx-stuck", video_codec_type="VP8")
    tracks = Tracks(receiver)
    receiver.on("track", lambda t: t.set_frame_transformer(stuck) if t.kind == "audio" else None)
    sender = connection(
        sora_devserver,
        "sendonly",
        "rx-stuck",
        video_codec_type="VP8",
        audio_source=ToneTrack(),
        video_source=PatternTrack(320, 240),
    )
    async with asyncio.timeout(40), receiver, sender:
        video = await tracks.wait(lambda t: t.kind == "video")
        audio = await tracks.wait(lambda t: t.kind == "audio")
        assert len(await frames(video, 10)) == 10
        with pytest.raises(TimeoutError):
            await frames(audio, 1, within=0.5)
    assert len(held) == 1
    stuck.enqueue(held[0])  # after disconnect: dropped quietly
