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
import itertools
import threading
import time
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
from sora_async.codecs.bitstream import leb128_decode
from sora_async.devserver import DevServer
from sora_async.transform import (
    AUDIO_WINDOW,
    VIDEO_WINDOW,
    AudioFrameType,
    FrameDirection,
    TransformPipeline,
)
from tests.rtc_support import PatternTrack, ToneTrack, Tracks, frames, of_type, wait_stats

TRAILER = b"sora"


def connection(server: DevServer, role: str, channel_id: str, **keywords: Any) -> Connection:
    return Connection(server.signaling_url, role, channel_id, **keywords)


def av_sender(
    server: DevServer, channel_id: str, codec: str = "VP8", **keywords: Any
) -> Connection:
    """A sendonly of a 440 Hz tone and a 320x240 pattern (``keywords`` override)."""
    media: dict[str, Any] = {"video_source": PatternTrack(320, 240)}
    if keywords.get("audio", True):
        media["audio_source"] = ToneTrack()
    return connection(
        server, "sendonly", channel_id, video_codec_type=codec, **{**media, **keywords}
    )


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
    sender = av_sender(
        sora_devserver,
        f"tx-{codec}",
        codec,
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
    sender = av_sender(
        sora_devserver,
        "sei",
        "H264",
        audio=False,
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
    """XOR everything after the first ``keep`` bytes (the VP8/VP9 frame tag stays readable)."""
    array = np.frombuffer(data, np.uint8).copy()
    array[keep:] ^= 0xA5
    return array.tobytes()


#: H.264/H.265: a byte permutation that fixes 0-3 (so start codes and emulation
#: prevention stay where they are and the NAL units still split) and scrambles the rest.
_SCRAMBLE = np.array([b if b < 4 else 4 + (b - 4 + 77) % 252 for b in range(256)], np.uint8)
_UNSCRAMBLE = np.argsort(_SCRAMBLE).astype(np.uint8)


def scramble_nal_units(data: bytes, table: np.ndarray, header: int) -> bytes:
    """Scramble every NAL unit's payload, keeping start codes and ``header`` bytes."""
    array = np.frombuffer(data, np.uint8).copy()
    starts = [i + 3 for i in range(len(data) - 2) if data[i : i + 3] == b"\x00\x00\x01"]
    for begin, end in zip(starts, [*starts[1:], len(data) + 3], strict=True):
        payload = slice(begin + header, end - 3)
        array[payload] = table[array[payload]]
    return array.tobytes()


def xor_av1_frames(data: bytes) -> bytes:
    """XOR the payload of every AV1 frame/frame header/tile group OBU; OBU headers, size
    fields and the sequence header stay readable (the RTP format carries OBUs)."""
    array = np.frombuffer(data, np.uint8).copy()
    pos = 0
    while pos < len(data):
        obu_type = (data[pos] >> 3) & 0x0F
        start = pos + (2 if data[pos] & 0x04 else 1)
        size, start = leb128_decode(data, start)
        if obu_type in (3, 4, 6):  # OBU_FRAME_HEADER, OBU_TILE_GROUP, OBU_FRAME
            array[start : start + size] ^= 0xA5
        pos = start + size
    return array.tobytes()


def encrypt(codec: str, data: bytes, *, decrypt: bool = False) -> bytes:
    """XOR-style "encryption" that keeps what the RTP packetizer of ``codec`` parses
    (as an end-to-end encryption transform must with libwebrtc too)."""
    if codec in ("H264", "H265"):
        table = _UNSCRAMBLE if decrypt else _SCRAMBLE
        return scramble_nal_units(data, table, 1 if codec == "H264" else 2)
    if codec == "AV1":
        return xor_av1_frames(data)
    return xor(data, 3)


def cipher(codec: str, *, decrypt: bool) -> Any:
    async def transform(frame: TransformableVideoFrame) -> TransformableVideoFrame:
        frame.set_data(encrypt(codec, bytes(frame.get_data()), decrypt=decrypt))
        return frame

    return VideoFrameTransformer(transform)


def test_the_h26x_scramble_keeps_nal_units_and_round_trips() -> None:
    stream = b"\x00\x00\x00\x01\x67\x42\x00\x03\x1f" + b"\x00\x00\x01\x65" + bytes(range(256))
    scrambled = encrypt("H264", stream)
    assert scrambled != stream and scrambled[:5] == stream[:5] and scrambled[9:13] == stream[9:13]
    assert encrypt("H264", scrambled, decrypt=True) == stream


@pytest.mark.parametrize("codec", CODECS)
async def test_xor_encryption_needs_the_key(sora_devserver: DevServer, codec: str) -> None:
    channel = f"xor-{codec}"
    with_key = connection(sora_devserver, "recvonly", channel, audio=False)
    without_key = connection(sora_devserver, "recvonly", channel, audio=False)
    keyed, plain = Tracks(with_key), Tracks(without_key)
    with_key.on("track", lambda t: t.set_frame_transformer(cipher(codec, decrypt=True)))
    sender = connection(
        sora_devserver,
        "sendonly",
        channel,
        video_codec_type=codec,
        audio=False,
        video_source=PatternTrack(320, 240),
        video_frame_transformer=cipher(codec, decrypt=False),
    )
    async with asyncio.timeout(40), with_key, without_key, sender:
        track = await keyed.wait(lambda t: t.kind == "video")
        decoded = await frames(track, 10)
        assert {(f.width, f.height) for f in decoded} == {(320, 240)}
        await plain.wait(lambda t: t.kind == "video")
        stats = await wait_stats(
            without_key,
            lambda s: any(i["packetsReceived"] > 40 for i in of_type(s, "inbound-rtp", "video")),
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
    sender = av_sender(
        sora_devserver,
        "official",
        "VP8",
        audio=False,
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


class Holding:
    """An official-style transformer that sets frames aside as they come (never enqueued
    unless released); ``filled`` is set once ``count`` frames are held."""

    def __init__(self, transformer: Any, count: int) -> None:
        self.transformer = transformer
        self.held: list[Any] = []
        self.count = count
        self.filled = asyncio.Event()
        transformer.on_transform = self.hold

    def hold(self, frame: Any) -> None:
        self.held.append(frame)
        if len(self.held) >= self.count:
            self.filled.set()

    def release(self) -> None:
        """From now on every frame goes straight back; the held ones are enqueued."""
        self.transformer.on_transform = self.transformer.enqueue
        held, self.held = self.held, []
        for frame in held:
            self.transformer.enqueue(frame)


async def until(condition: Any, within: float = 5) -> None:
    """Poll ``condition()`` (engine counters have no events to wait on) until it holds."""
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


def send_pipelines(conn: Connection, kind: str) -> list[TransformPipeline[Any]]:
    senders = [s for s in conn._peer.senders if s.kind == kind]  # type: ignore[union-attr]
    return [p for s in senders for p in s._transforms.values()]


async def test_a_frame_never_handed_back_stops_only_that_stream(sora_devserver: DevServer) -> None:
    transformer = VideoFrameTransformer()
    holding = Holding(transformer, VIDEO_WINDOW)
    receiver = connection(sora_devserver, "recvonly", "stuck")
    tracks = Tracks(receiver)
    sender = av_sender(
        sora_devserver,
        "stuck",
        video_source=PatternTrack(320, 240, fps=30),
        video_frame_transformer=transformer,
    )
    async with asyncio.timeout(40), receiver, sender:
        await asyncio.wait_for(holding.filled.wait(), 10)  # frames keep being handed over
        audio = await tracks.wait(lambda t: t.kind == "audio")
        await frames(audio, 50)  # audio flows on; signaling and stats too
        stats = await sender.get_stats()
        assert of_type(stats, "outbound-rtp", "audio")[0]["packetsSent"] >= 50
        video = [s for s in of_type(stats, "outbound-rtp", "video")]
        assert not video or video[0].get("packetsSent", 0) == 0
        (pipeline,) = send_pipelines(sender, "video")
        await until(lambda: pipeline.dropped >= 3)
        # nothing piles up: the window is full, the frames beyond it are dropped and counted
        assert len(holding.held) == pipeline.in_flight == VIDEO_WINDOW
        (video_sender,) = [s for s in sender._peer.senders if s.kind == "video"]  # type: ignore[union-attr]
        assert video_sender.layers[0].frames_dropped >= pipeline.dropped
    assert len(holding.held) == VIDEO_WINDOW
    for frame in holding.held:
        transformer.enqueue(frame)  # after disconnect: dropped quietly
    await asyncio.sleep(0.05)


async def test_video_recovers_with_a_key_frame_when_a_stuck_transformer_lets_go(
    sora_devserver: DevServer,
) -> None:
    transformer = VideoFrameTransformer()
    holding = Holding(transformer, VIDEO_WINDOW)
    receiver = connection(sora_devserver, "recvonly", "let-go", audio=False)
    tracks = Tracks(receiver)
    sender = connection(
        sora_devserver,
        "sendonly",
        "let-go",
        video_codec_type="VP8",
        audio=False,
        video_source=PatternTrack(320, 240, fps=30),
        video_frame_transformer=transformer,
    )
    async with asyncio.timeout(40), receiver, sender:
        await asyncio.wait_for(holding.filled.wait(), 10)
        (pipeline,) = send_pipelines(sender, "video")
        (video_sender,) = [s for s in sender._peer.senders if s.kind == "video"]  # type: ignore[union-attr]
        layer = video_sender.layers[0]
        await until(lambda: pipeline.dropped >= 3)  # beyond the window: dropped, not queued
        key_frames = layer.key_frames_encoded
        holding.release()
        track = await tracks.wait(lambda t: t.kind == "video")
        decoded = await frames(track, 40)  # the held ones, then the stream goes on
        assert {(f.width, f.height) for f in decoded} == {(320, 240)}
        assert layer.key_frames_encoded > key_frames  # the encoder was asked for one
        assert not pipeline.wants_keyframe and pipeline.in_flight < VIDEO_WINDOW
        stats = await receiver.get_stats()
        (inbound,) = of_type(stats, "inbound-rtp", "video")
        assert inbound.get("decodeErrors", 0) == 0, inbound


class ReversePairs:
    """Official style, enqueueing from another thread: frame N is held until N+1
    arrives, then N+1 is enqueued before N. The stream must still go out in order."""

    def __init__(self, transformer: Any, mark: bytes = b"") -> None:
        self.transformer = transformer
        self.mark = mark
        self.held: Any = None
        self.seen: list[int] = []
        self.threads: set[str] = set()
        self.lock = threading.Lock()
        transformer.on_transform = self.on_transform

    def on_transform(self, frame: Any) -> None:
        with self.lock:
            self.seen.append(frame.rtp_timestamp)
            held, self.held = self.held, (None if self.held is not None else frame)
        if held is not None:
            threading.Thread(target=self.enqueue, args=(frame, held)).start()

    def enqueue(self, *frames: Any) -> None:
        self.threads.add(threading.current_thread().name)
        for frame in frames:
            data = bytes(frame.get_data())
            if self.mark:
                frame.set_data(data + self.mark)
            self.transformer.enqueue(frame)


def increasing(timestamps: list[int]) -> bool:
    return all(0 < (b - a) & 0xFFFFFFFF < 1 << 31 for a, b in itertools.pairwise(timestamps))


async def test_frames_held_until_the_next_one_and_enqueued_out_of_order_go_out_in_order(
    sora_devserver: DevServer,
) -> None:
    """Send and receive side: every frame is held until the next one arrives, then both
    are enqueued in reverse order from another thread; video and audio flow end to end,
    in order, and decode cleanly."""
    video_out, audio_out = (
        ReversePairs(VideoFrameTransformer(), TRAILER),
        ReversePairs(AudioFrameTransformer(), TRAILER),
    )
    incoming: dict[str, ReversePairs] = {}

    def on_track(track: Any) -> None:
        transformer = AudioFrameTransformer() if track.kind == "audio" else VideoFrameTransformer()
        incoming[track.kind] = ReversePairs(transformer)
        track.set_frame_transformer(transformer)

    receiver = connection(sora_devserver, "recvonly", "pairs", video_codec_type="VP8")
    tracks = Tracks(receiver)
    receiver.on("track", on_track)
    sender = av_sender(
        sora_devserver,
        "pairs",
        audio_frame_transformer=audio_out.transformer,
        video_frame_transformer=video_out.transformer,
    )
    async with asyncio.timeout(40), receiver, sender:
        video = await tracks.wait(lambda t: t.kind == "video")
        audio = await tracks.wait(lambda t: t.kind == "audio")
        decoded = await frames(video, 15)
        assert len(await frames(audio, 30)) == 30
        stats = await receiver.get_stats()
    assert {(f.width, f.height) for f in decoded} == {(320, 240)}
    assert all(b.pts > a.pts for a, b in itertools.pairwise(decoded))  # decoded in order
    (inbound,) = of_type(stats, "inbound-rtp", "video")
    assert inbound.get("decodeErrors", 0) == 0, inbound
    for kind, out in (("video", video_out), ("audio", audio_out)):
        # the receiver saw the sender's frames in the order they were encoded (its
        # transformer gets them as they arrive, before its own reordering)
        assert len(incoming[kind].seen) >= 10 and increasing(incoming[kind].seen), kind
        assert increasing(out.seen)
        assert threading.main_thread().name not in out.threads | incoming[kind].threads


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
    stuck = AudioFrameTransformer()
    holding = Holding(stuck, AUDIO_WINDOW)
    receiver = connection(sora_devserver, "recvonly", "rx-stuck", video_codec_type="VP8")
    tracks = Tracks(receiver)
    receiver.on("track", lambda t: t.set_frame_transformer(stuck) if t.kind == "audio" else None)
    sender = av_sender(sora_devserver, "rx-stuck")
    async with asyncio.timeout(40), receiver, sender:
        video = await tracks.wait(lambda t: t.kind == "video")
        audio = await tracks.wait(lambda t: t.kind == "audio")
        await asyncio.wait_for(holding.filled.wait(), 10)
        assert len(await frames(video, 10)) == 10
        with pytest.raises(TimeoutError):
            await frames(audio, 1, within=0.5)
        (audio_receiver,) = [r for r in receiver._peer.receivers if r.kind == "audio"]  # type: ignore[union-attr]
        pipeline = audio_receiver._transforms
        assert pipeline is not None
        await until(lambda: pipeline.dropped >= 3)
        assert pipeline.in_flight == AUDIO_WINDOW
        assert sum(s.frames_dropped for s in audio_receiver.streams.values()) >= pipeline.dropped
    assert len(holding.held) == AUDIO_WINDOW  # bounded: the rest were dropped, not queued
    for frame in holding.held:
        stuck.enqueue(frame)  # after disconnect: dropped quietly


async def test_frame_facts_as_libwebrtc_gives_them(sora_devserver: DevServer) -> None:
    """Each documented property, both directions, as ``sora_sdk`` (libwebrtc) fills it."""
    seen: dict[tuple[str, FrameDirection], list[Any]] = {}

    async def note(frame: Any) -> Any:
        facts = {
            name: getattr(frame, name)
            for name in dir(type(frame))
            if not name.startswith("_") and name not in ("encoded", "get_data", "set_data")
        }
        seen.setdefault((frame.kind, frame.direction), []).append(facts)
        return frame

    def on_track(track: Any) -> None:
        cls = AudioFrameTransformer if track.kind == "audio" else VideoFrameTransformer
        track.set_frame_transformer(cls(note))

    receiver = connection(sora_devserver, "recvonly", "facts", video_codec_type="VP8")
    tracks = Tracks(receiver)
    receiver.on("track", on_track)
    sender = av_sender(
        sora_devserver,
        "facts",
        audio_frame_transformer=note,
        video_frame_transformer=note,
    )
    started_ms, started_us = time.monotonic_ns() // 1_000_000, time.monotonic_ns() // 1000
    async with asyncio.timeout(40), receiver, sender:
        await frames(await tracks.wait(lambda t: t.kind == "video"), 5)
        await frames(await tracks.wait(lambda t: t.kind == "audio"), 10)
    ended_ms, ended_us = time.monotonic_ns() // 1_000_000, time.monotonic_ns() // 1000
    send_audio = seen["audio", FrameDirection.SENDER]
    receive_audio = seen["audio", FrameDirection.RECEIVER]
    for facts in send_audio + receive_audio:
        assert facts["contributing_sources"].dtype == np.uint32
        assert facts["contributing_sources"].size == 0  # Sora sets no CSRCs
        assert facts["mime_type"] == "audio/opus" and facts["payload_type"] > 0
        # RFC 6464 level; on receive only when the SFU forwards the extension
        assert facts["audio_level"] is None or 0 <= facts["audio_level"] <= 127
    for facts in send_audio:  # libwebrtc: not packetized yet; captured now
        assert 0 <= facts["audio_level"] <= 127
        assert facts["sequence_number"] is None and facts["receive_time"] is None
        assert started_ms <= facts["absolute_capture_timestamp"] <= ended_ms
        assert facts["type"] is AudioFrameType.SPEECH
    for facts in receive_audio:  # the RTP packet's facts; no capture time
        assert facts["absolute_capture_timestamp"] is None
        assert started_us <= facts["receive_time"] <= ended_us  # µs, monotonic clock
        assert facts["type"] is AudioFrameType.CN  # our sender's RFC 6464 voice flag is off
    numbers = [f["sequence_number"] for f in receive_audio]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(numbers)), numbers
    send_video = seen["video", FrameDirection.SENDER]
    receive_video = seen["video", FrameDirection.RECEIVER]
    assert send_video[0]["is_key_frame"] and receive_video[0]["is_key_frame"]
    assert all(isinstance(f["frame_id"], int) for f in send_video)
    for facts in receive_video:  # no generic frame descriptor through Sora
        assert facts["frame_id"] is None and facts["frame_dependencies"].size == 0
        assert facts["contributing_sources"].size == 0
    for facts in send_video + receive_video:
        assert (facts["width"], facts["height"]) in ((320, 240), (0, 0))
        assert facts["spatial_index"] == facts["temporal_index"] == 0


async def test_av1_bytes_appended_on_send_do_not_hurt_a_receiver_without_a_transform(
    sora_devserver: DevServer,
) -> None:
    """The appended bytes ride in a reserved OBU before the frame (transform.py), which
    a decoder skips: a receiver that does not strip them still decodes every frame."""

    async def mark(frame: TransformableVideoFrame) -> TransformableVideoFrame:
        frame.set_data(bytes(frame.get_data()) + TRAILER)
        return frame

    receiver = connection(sora_devserver, "recvonly", "av1-plain", audio=False)
    tracks = Tracks(receiver)
    sender = av_sender(
        sora_devserver,
        "av1-plain",
        "AV1",
        audio=False,
        video_frame_transformer=mark,
    )
    async with asyncio.timeout(40), receiver, sender:
        track = await tracks.wait(lambda t: t.kind == "video")
        decoded = await frames(track, 10)
        stats = await receiver.get_stats()
    assert {(f.width, f.height) for f in decoded} == {(320, 240)}
    (inbound,) = of_type(stats, "inbound-rtp", "video")
    assert inbound.get("decodeErrors", 0) == 0 and inbound["framesDecoded"] >= 10, inbound
