"""Sinks on a ``RemoteTrack`` take frames as they are decoded (``RemoteTrack._tap``).

No task per sink reads ``recv()``: the track hands each frame over at once. These
check what the pump gave before: frames queued before the sink first, the end of
the track, ``close()``, and that ``recv()`` still gets every frame beside a sink.
"""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np

from sora_async import AudioSink, VideoSink
from sora_async.rtc.receiver import RemoteTrack


def _audio(i: int) -> av.AudioFrame:
    pcm = np.full((1, 960 * 2), i, np.int16)
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
    frame.sample_rate = 48000
    frame.pts = i * 960
    frame.time_base = fractions.Fraction(1, 48000)
    return frame


def _video(i: int) -> av.VideoFrame:
    frame = av.VideoFrame(32, 24, "yuv420p")
    frame.pts = i * 3000
    return frame


async def test_an_audio_sink_gets_queued_then_tapped_frames_and_the_end() -> None:
    track = RemoteTrack("audio", track_id="a", stream_id="s", mid="0")
    track._deliver(_audio(1))  # before the sink: queued
    sink = AudioSink(track)
    await asyncio.sleep(0)
    track._deliver(_audio(2))  # handed over at once
    assert sink.buffered == 1920
    ok, pcm = await sink.read(1920)
    assert ok and pcm is not None
    assert pcm[0, 0] == 1 and pcm[-1, 0] == 2
    assert not sink.ended
    track.stop()
    assert sink.ended
    assert await sink.read(960) == (False, None)
    await sink.close()


async def test_closing_an_audio_sink_stops_the_tap() -> None:
    track = RemoteTrack("audio", track_id="a", stream_id="s", mid="0")
    sink = AudioSink(track)
    await asyncio.sleep(0)
    await sink.close()
    track._deliver(_audio(1))
    assert sink.buffered == 0
    assert sink.ended
    assert not track._taps


async def test_recv_beside_a_video_sink_still_gets_every_frame() -> None:
    track = RemoteTrack("video", track_id="v", stream_id="s", mid="1")
    async with VideoSink(track, capacity=10) as sink:
        await asyncio.sleep(0)
        for i in range(3):
            waiting = asyncio.ensure_future(track.recv())
            await asyncio.sleep(0)
            track._deliver(_video(i))
            assert (await waiting).pts == i * 3000
        assert sink.frames_received == 3
        got = [sink.get_nowait() for _ in range(3)]
        assert [f.frame.pts for f in got if f is not None] == [0, 3000, 6000]
        track.stop()
        assert await sink.get(timeout=1) is None
        assert sink.ended
