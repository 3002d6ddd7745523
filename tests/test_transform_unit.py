"""Encoded transform (issue 7) without a network: the hooks, the styles, the edge cases."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from sora_async import (
    AudioFrameTransformer,
    TransformableAudioFrame,
    TransformableVideoFrame,
    VideoFrameTransformer,
)
from sora_async.codecs.base import EncodedFrame
from sora_async.codecs.registry import create_depacketizer, create_packetizer
from sora_async.rtc import RemoteTrack
from sora_async.transform import (
    AudioFrameType,
    FrameDirection,
    TransformPipeline,
    av1_unwrap_opaque,
    av1_wrap_opaque,
)
from tests.rtc_support import receiver_for


def video(data: bytes = b"\x10\x02\x00\x9d\x01\x2a", codec: str = "VP8") -> EncodedFrame:
    return EncodedFrame(
        data=data,
        timestamp=3000,
        codec=codec,
        is_keyframe=True,
        width=320,
        height=240,
        payload_type=96,
        ssrc=1234,
        codec_specific={"rid": "r1"},
    )


async def test_frame_api() -> None:
    seen: list[TransformableVideoFrame] = []

    async def keep(frame: TransformableVideoFrame) -> TransformableVideoFrame:
        seen.append(frame)
        frame.set_data(b"abc")
        frame.rtp_timestamp = 2**32 + 5
        return frame

    out = await VideoFrameTransformer(keep)(video())
    assert out is not None and out.data == b"abc" and out.timestamp == 5
    (frame,) = seen
    assert frame.direction is FrameDirection.SENDER
    assert (frame.payload_type, frame.ssrc, frame.rid) == (96, 1234, "r1")
    assert frame.mime_type == frame.mine_type == "video/VP8"
    assert frame.is_key_frame and (frame.width, frame.height) == (320, 240)
    assert frame.frame_dependencies.dtype == np.int64
    assert not frame.get_data().flags.writeable
    with pytest.raises(TypeError):
        frame.set_data(np.zeros((2, 2), np.uint8))
    with pytest.raises(TypeError):
        frame.set_data("text")


async def test_none_drops_and_short_circuit_bypasses() -> None:
    calls = 0

    async def drop(frame: object) -> None:
        nonlocal calls
        calls += 1

    transformer = VideoFrameTransformer(drop)
    assert await transformer(video()) is None
    transformer.start_short_circuiting()
    assert (await transformer(video())) is not None and calls == 1


async def test_receive_hook_direction_and_kind_check() -> None:
    transformer = AudioFrameTransformer()
    directions = []

    def on_transform(frame: object) -> None:
        directions.append(frame.direction)  # type: ignore[attr-defined]
        transformer.enqueue(frame)  # type: ignore[arg-type]

    transformer.on_transform = on_transform
    hook = transformer.receive_hook("audio")
    opus = EncodedFrame(data=b"\xfc\x00", timestamp=0, codec="OPUS")
    assert await hook(opus) is opus
    assert directions == [FrameDirection.RECEIVER]
    with pytest.raises(TypeError):
        transformer.receive_hook("video")
    track = RemoteTrack("video", track_id=None, stream_id=None, mid="1")
    with pytest.raises(TypeError):
        track.set_frame_transformer(transformer)
    with pytest.raises(TypeError):
        track.set_frame_transformer(42)


async def test_iterator_keeps_order_across_streams_and_forgets_cancelled_frames() -> None:
    transformer = VideoFrameTransformer()
    got: list[int] = []

    async def consume() -> None:
        async for frame in transformer:
            got.append(frame.rtp_timestamp)
            await transformer.put(frame)

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)
    results = await asyncio.gather(*(transformer(video()) for _ in range(3)))
    assert all(r is not None for r in results) and got == [3000] * 3
    consumer.cancel()
    # nobody reads: the stream waits, and a cancelled wait leaves nothing behind
    stuck = asyncio.create_task(transformer(video()))
    await asyncio.sleep(0.01)
    assert not stuck.done()
    stuck.cancel()
    await asyncio.gather(stuck, return_exceptions=True)
    assert not transformer._ready and not transformer._waiting


async def test_enqueue_from_another_thread_later_and_after_the_end() -> None:
    transformer = VideoFrameTransformer()
    frames: list[TransformableVideoFrame] = []
    transformer.on_transform = frames.append
    task = asyncio.create_task(transformer(video()))
    await asyncio.sleep(0.01)
    (frame,) = frames
    frame.set_data(b"late")
    thread = threading.Thread(target=transformer.enqueue, args=(frame,))
    thread.start()
    thread.join()
    out = await asyncio.wait_for(task, 5)
    assert out is not None and out.data == b"late"
    transformer.enqueue(frame)  # twice: ignored
    # a frame whose stream ended (cancelled) is dropped quietly when enqueued
    task = asyncio.create_task(transformer(video()))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    transformer.enqueue(frames[-1])
    del task
    gc.collect()
    assert not transformer._waiting


async def test_start_short_circuiting_releases_waiting_frames() -> None:
    transformer = VideoFrameTransformer()
    transformer.on_transform = lambda frame: None  # never enqueued
    original = video()
    task = asyncio.create_task(transformer(original))
    await asyncio.sleep(0.01)
    transformer.start_short_circuiting()
    assert await asyncio.wait_for(task, 5) is original


def test_enqueue_after_the_loop_closed_is_quiet() -> None:
    transformer = VideoFrameTransformer()
    frames: list[TransformableVideoFrame] = []
    transformer.on_transform = frames.append
    loop = asyncio.new_event_loop()
    task = loop.create_task(transformer(video()))
    loop.run_until_complete(asyncio.sleep(0.01))
    task.cancel()
    loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    loop.close()
    transformer.enqueue(frames[0])


@pytest.mark.parametrize("tail", [b"sora", b"\x00", bytes(range(256)) * 3])
def test_av1_bytes_that_are_not_obus_survive_rtp(tail: bytes) -> None:
    sequence_header = b"\x0a\x0b\x00\x00\x00\x24\xc4\xff\xdf\x00\x68\x02\x10"
    frame_obu = b"\x32\x05" + b"\x11\x22\x33\x44\x55"
    original = b"\x12\x00" + sequence_header + frame_obu
    wrapped = av1_wrap_opaque(original + tail)
    assert av1_wrap_opaque(original) == original
    encoded = EncodedFrame(data=wrapped, timestamp=0, codec="AV1", is_keyframe=True)
    payloads = create_packetizer("AV1").packetize(encoded, 100)
    received = create_depacketizer("AV1").depacketize(payloads, 0)
    assert received.is_keyframe
    assert av1_unwrap_opaque(received.data) == original + tail
    # the opaque OBU rides before the frame OBU (after it, dav1d in sora_sdk stops decoding)
    assert wrapped.endswith(frame_obu) and wrapped.startswith(b"\x12\x00" + sequence_header)
    # one at the end (a sender that appends the OBU there) is taken out as well
    at_end = original + bytes([0x72, len(tail)]) + tail if len(tail) < 128 else None
    if at_end is not None:
        assert av1_unwrap_opaque(at_end) == original + tail
    assert av1_unwrap_opaque(original) == original


# -- the pipeline: frames handed over as they come, results forwarded in order ------------------


def numbered(index: int, *, key: bool = False, kind: str = "video") -> EncodedFrame:
    codec = "VP8" if kind == "video" else "OPUS"
    return EncodedFrame(data=b"%d" % index, timestamp=index, codec=codec, is_keyframe=key)


class Collected:
    """A pipeline's forward: records what comes out, wakes waiters at a count."""

    def __init__(self) -> None:
        self.frames: list[int] = []
        self.changed = asyncio.Event()

    async def forward(self, frame: EncodedFrame, context: str) -> None:
        assert context == "ctx"
        self.frames.append(frame.timestamp)
        self.changed.set()

    async def wait(self, count: int) -> list[int]:
        async with asyncio.timeout(5):
            while len(self.frames) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.frames


async def test_pipeline_hands_over_without_waiting_and_keeps_order_from_threads() -> None:
    """The official style enqueueing frames in reverse pairs from other threads: every
    frame is handed over at once, the results still go out in submission order."""
    transformer = VideoFrameTransformer()
    received: list[TransformableVideoFrame] = []
    lock = threading.Lock()

    def on_transform(frame: TransformableVideoFrame) -> None:
        with lock:
            received.append(frame)
            if len(received) % 2:
                return  # hold frame N until N+1 arrives, then enqueue N+1 first
            pair = received[-1], received[-2]
        for held in pair:
            thread = threading.Thread(target=transformer.enqueue, args=(held,))
            thread.start()
            thread.join()

    transformer.on_transform = on_transform
    out = Collected()
    pipeline = TransformPipeline("video", out.forward)
    assert all(pipeline.submit(transformer, numbered(i, key=i == 0), "ctx") for i in range(20))
    assert await out.wait(20) == list(range(20))
    assert (pipeline.in_flight, pipeline.dropped, pipeline.forwarded) == (0, 0, 20)
    assert [f.rtp_timestamp for f in received] == list(range(20))  # handed over in order
    await pipeline.close()


async def test_pipeline_drops_none_and_failures_and_goes_on() -> None:
    async def transform(frame: TransformableVideoFrame) -> TransformableVideoFrame | None:
        await asyncio.sleep(0.001 * (10 - frame.rtp_timestamp))  # later frames finish first
        if frame.rtp_timestamp == 3:
            return None
        if frame.rtp_timestamp == 5:
            raise RuntimeError("a broken transform")
        return frame

    out = Collected()
    pipeline = TransformPipeline("video", out.forward)
    hook = VideoFrameTransformer(transform)
    for i in range(10):
        pipeline.submit(hook, numbered(i, key=i == 0), "ctx")
    assert await out.wait(8) == [0, 1, 2, 4, 6, 7, 8, 9]
    assert pipeline.discarded == 2 and pipeline.in_flight == 0
    await pipeline.close()


async def test_pipeline_window_bounds_a_stuck_transformer_and_video_recovers_on_a_key_frame() -> (
    None
):
    transformer = VideoFrameTransformer()
    held: list[TransformableVideoFrame] = []
    transformer.on_transform = held.append  # never enqueued (for now)
    out = Collected()
    pipeline = TransformPipeline("video", out.forward, window=4)
    accepted = [pipeline.submit(transformer, numbered(i, key=i == 0), "ctx") for i in range(10)]
    assert accepted == [True] * 4 + [False] * 6
    await asyncio.sleep(0)
    assert (len(held), pipeline.in_flight, pipeline.dropped) == (4, 4, 6)
    assert not pipeline.wants_keyframe  # no room yet
    for frame in held:
        transformer.enqueue(frame)
    assert await out.wait(4) == [0, 1, 2, 3]
    assert pipeline.wants_keyframe  # room again: ask the encoder / the sender for a key frame
    assert not pipeline.submit(transformer, numbered(10), "ctx")  # delta frames: still dropped
    transformer.on_transform = transformer.enqueue
    assert pipeline.submit(transformer, numbered(11, key=True), "ctx")
    assert pipeline.submit(transformer, numbered(12), "ctx")
    assert not pipeline.wants_keyframe
    assert await out.wait(6) == [0, 1, 2, 3, 11, 12]
    assert pipeline.dropped == 7
    await pipeline.close()


async def test_pipeline_audio_drops_only_what_overflows_and_close_releases_frames() -> None:
    transformer = AudioFrameTransformer()
    held: list[object] = []
    transformer.on_transform = held.append
    out = Collected()
    pipeline = TransformPipeline("audio", out.forward, window=3)
    accepted = [pipeline.submit(transformer, numbered(i, kind="audio"), "ctx") for i in range(5)]
    assert accepted == [True, True, True, False, False]
    await asyncio.sleep(0)
    transformer.enqueue(held[0])  # type: ignore[arg-type]
    assert await out.wait(1) == [0]
    assert pipeline.submit(transformer, numbered(5, kind="audio"), "ctx")  # no key frames here
    await asyncio.sleep(0)
    await pipeline.close()
    assert pipeline.in_flight == 0 and not transformer._waiting
    for frame in held:
        transformer.enqueue(frame)  # type: ignore[arg-type]  # after the end: dropped quietly
    assert not pipeline.submit(transformer, numbered(6, kind="audio"), "ctx")
    await asyncio.sleep(0.01)
    assert out.frames == [0]


async def test_receive_side_audio_facts_come_from_the_rtp_packet() -> None:
    """CSRCs, sequence number, RFC 6464 voice flag and level, arrival time (µs, monotonic)."""
    receiver, track = receiver_for("audio")
    seen: list[TransformableAudioFrame] = []
    got = asyncio.Event()

    async def note(frame: TransformableAudioFrame) -> TransformableAudioFrame | None:
        seen.append(frame)
        got.set()
        return None  # dropped: nothing to decode

    track.set_frame_transformer(note)
    before = time.monotonic_ns() // 1000
    try:
        for seq, (vad, csrcs) in enumerate([(True, [11, 22]), (False, [])], start=65535):
            packet = RtpPacket(
                payload_type=111,
                sequence_number=seq & 0xFFFF,
                timestamp=960 * seq,
                ssrc=5,
                payload=b"\xfc\xff\xfe",
            )
            packet.csrc = csrcs
            packet.extensions.audio_level = (vad, 30)
            await receiver.handle_rtp(packet, 100, 0)
        async with asyncio.timeout(5):
            while len(seen) < 2:
                got.clear()
                await got.wait()
    finally:
        await receiver.stop()
    first, second = seen
    assert first.contributing_sources.tolist() == [11, 22] and second.contributing_sources.size == 0
    assert first.contributing_sources.dtype == np.uint32
    assert (first.sequence_number, second.sequence_number) == (65535, 0)
    assert (first.type, second.type) == (AudioFrameType.SPEECH, AudioFrameType.CN)
    assert first.audio_level == 30 and first.absolute_capture_timestamp is None
    assert before <= first.receive_time <= time.monotonic_ns() // 1000  # type: ignore[operator]
    assert first.direction is FrameDirection.RECEIVER
