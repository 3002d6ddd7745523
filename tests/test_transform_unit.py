"""Encoded transform (issue 7) without a network: the hooks, the styles, the edge cases."""

from __future__ import annotations

import asyncio
import gc
import threading

import numpy as np
import pytest

from sora_async import (
    AudioFrameTransformer,
    TransformableVideoFrame,
    VideoFrameTransformer,
)
from sora_async.codecs.base import EncodedFrame
from sora_async.codecs.registry import create_depacketizer, create_packetizer
from sora_async.rtc import RemoteTrack
from sora_async.transform import (
    FrameDirection,
    av1_unwrap_opaque,
    av1_wrap_opaque,
)


def video(data: bytes = b"\x10\x02\x00\x9d\x01\x2a", codec: str = "VP8") -> EncodedFrame:
    return EncodedFrame(data=data, timestamp=3000, codec=codec, is_keyframe=True, width=320,
                        height=240, payload_type=96, ssrc=1234,
                        codec_specific={"rid": "r1"})  # fmt: skip


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
