"""The receive path's shortcuts keep the media right.

- libopus decodes straight to what an ``AudioSink`` wants (16 kHz mono here) instead of
  48 kHz stereo plus a resampler: same tone, same level; ``recv()`` still gets 48 kHz
  stereo; without libopus the sink converts as before.
- A ``VideoSink(format="bgr24")`` on a ``RemoteTrack`` gets its frames converted inside
  the decode job (no conversion job of its own), and the picture is the decoded one.
- Decode jobs chain by callback: a frame the decoder rejects is counted, a key frame is
  asked for, and the frames after it still decode.
"""

from __future__ import annotations

import asyncio
import fractions
import functools
import time
from typing import Any

import av
import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from sora_async import AudioSink, VideoSink
from sora_async.codecs import create_packetizer
from sora_async.codecs import opus as opus_module
from sora_async.codecs.base import EncodedFrame
from sora_async.codecs.opus import OpusDecoder, OpusEncoder
from sora_async.frames import reformat_video
from sora_async.rtc.receiver import RtpReceiver
from tests.rtc_support import opus_codec, receiver_for, vp8_codec

OPUS = opus_codec()
VP8 = vp8_codec()
AMPLITUDE = 10000


def opus_packets(seconds: float, frequency: float = 440.0) -> list[bytes]:
    """A stereo sine tone, Opus-encoded in 20 ms packets."""
    encoder = OpusEncoder(channels=2)
    t = np.arange(int(48000 * seconds)) / 48000
    tone = (np.sin(2 * np.pi * frequency * t) * AMPLITUDE).astype(np.int16)
    packets: list[bytes] = []
    for start in range(0, len(tone) - 959, 960):
        pcm = np.repeat(tone[start : start + 960, None], 2, axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
        frame.sample_rate = 48000
        packets += [encoded.data for encoded in encoder.encode(frame)]
    return packets


def tone_of(pcm: np.ndarray, rate: int) -> tuple[float, float]:
    """(dominant frequency, RMS) of the first channel, after the decoder's start-up."""
    samples = pcm[rate // 10 :, 0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    peak = float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])
    return peak, float(np.sqrt(np.mean(samples**2)))


async def feed_audio(receiver: RtpReceiver, packets: list[bytes], first: int = 0) -> None:
    for index, payload in enumerate(packets, first):
        packet = RtpPacket(
            payload_type=OPUS.payload_type,
            sequence_number=index & 0xFFFF,
            timestamp=index * 960,
            ssrc=1234,
            payload=payload,
        )
        await receiver.handle_rtp(packet, 12 + len(payload), index * 20)


def test_libopus_decodes_straight_to_16k_mono_with_the_same_tone_and_level() -> None:
    if opus_module.libopus() is None:
        pytest.skip("no loadable libopus")
    packets = opus_packets(1.0)
    full = OpusDecoder()
    narrow = OpusDecoder()
    assert narrow.set_output_format(16000, 1) == (16000, 1)
    wide = np.concatenate(
        [
            f.to_ndarray().reshape(-1, 2)
            for p in packets
            for f in full.decode(EncodedFrame(p, 0, "OPUS"))
        ]
    )
    frames = [f for p in packets for f in narrow.decode(EncodedFrame(p, 0, "OPUS"))]
    assert {(f.sample_rate, f.layout.name, f.samples) for f in frames} == {(16000, "mono", 320)}
    mono = np.concatenate([f.to_ndarray().reshape(-1, 1) for f in frames])
    assert len(mono) * 3 == len(wide)
    wide_peak, wide_rms = tone_of(wide, 48000)
    peak, rms = tone_of(mono, 16000)
    assert abs(peak - 440) < 5 and abs(wide_peak - 440) < 5
    assert abs(rms - AMPLITUDE / np.sqrt(2)) < 0.05 * AMPLITUDE
    assert abs(rms - wide_rms) < 0.02 * wide_rms
    # A rate libopus does not decode to falls back to 48 kHz; channels to stereo.
    assert OpusDecoder().set_output_format(44100, 6) == (48000, 2)


async def test_a_16k_mono_sink_has_the_receiver_decode_at_16k_mono_and_recv_keeps_48k() -> None:
    if opus_module.libopus() is None:
        pytest.skip("no loadable libopus")
    packets = opus_packets(1.2)
    receiver, track = receiver_for("audio")
    try:
        sink = AudioSink(track, 16000, 1)
        await asyncio.sleep(0)  # the sink taps the track
        assert track._audio_format == (16000, 1)
        await feed_audio(receiver, packets[:40])
        decoder = next(iter(receiver._decoders.values()))
        assert isinstance(decoder, OpusDecoder) and decoder.output_format == (16000, 1)
        stream = receiver.streams[1234]
        assert stream.total_samples_received == 40 * 960  # on the 48 kHz RTP clock
        ok, pcm = await asyncio.wait_for(sink.read(40 * 320), 5)
        assert ok and pcm is not None and pcm.shape == (40 * 320, 1)
        peak, rms = tone_of(pcm, 16000)
        assert abs(peak - 440) < 5
        assert abs(rms - AMPLITUDE / np.sqrt(2)) < 0.05 * AMPLITUDE

        # A recv() consumer gets the documented 48 kHz stereo; the sink still 16 kHz mono.
        waiting = asyncio.ensure_future(track.recv())
        await asyncio.sleep(0)
        assert track._audio_format is None
        await feed_audio(receiver, packets[40:60], first=40)
        frame = await asyncio.wait_for(waiting, 5)
        assert isinstance(frame, av.AudioFrame)
        assert (frame.sample_rate, frame.layout.name, frame.samples) == (48000, "stereo", 960)
        assert decoder.output_format == (48000, 2)
        # (the resampler now in the sink keeps a few ms back: its filter delay)
        ok, pcm = await asyncio.wait_for(sink.read(18 * 320), 5)
        assert ok and pcm is not None
        assert abs(tone_of(pcm, 16000)[0] - 440) < 10
        await sink.close()
    finally:
        await receiver.stop()


async def test_without_libopus_the_sink_still_gets_16k_mono(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(opus_module, "libopus", lambda: None)
    packets = opus_packets(1.0)
    receiver, track = receiver_for("audio")
    try:
        sink = AudioSink(track, 16000, 1)
        await asyncio.sleep(0)
        await feed_audio(receiver, packets)
        decoder = next(iter(receiver._decoders.values()))
        assert isinstance(decoder, OpusDecoder) and decoder.output_format == (48000, 2)
        ok, pcm = await asyncio.wait_for(sink.read(45 * 320), 5)
        assert ok and pcm is not None
        peak, rms = tone_of(pcm, 16000)
        assert abs(peak - 440) < 5
        assert abs(rms - AMPLITUDE / np.sqrt(2)) < 0.05 * AMPLITUDE
        await sink.close()
    finally:
        await receiver.stop()


def vp8_frames(count: int) -> list[list[bytes]]:
    """RTP payloads of ``count`` VP8 frames, 320x240, a moving gradient."""
    ctx = av.CodecContext.create("libvpx", "w")
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.width, ctx.height, ctx.pix_fmt = 320, 240, "yuv420p"
    ctx.bit_rate = 500_000
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    packetizer = create_packetizer("VP8")
    out: list[list[bytes]] = []
    for i in range(count):
        image = np.zeros((240, 320, 3), np.uint8)
        image[:, :, 1] = (np.arange(320) + 8 * i) % 256
        frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        frame.pts = i
        for packet in ctx.encode(frame):
            encoded = EncodedFrame(bytes(packet), i * 3000, "VP8", is_keyframe=packet.is_keyframe)
            out.append(packetizer.packetize(encoded, 1000))
    return out


async def feed_video(receiver: RtpReceiver, frames: list[list[bytes]], seq: int = 0) -> int:
    for index, payloads in enumerate(frames):
        for k, payload in enumerate(payloads):
            packet = RtpPacket(
                payload_type=VP8.payload_type,
                marker=int(k == len(payloads) - 1),
                sequence_number=seq & 0xFFFF,
                timestamp=(index + seq) * 3000,
                ssrc=99,
                payload=payload,
            )
            seq += 1
            await receiver.handle_rtp(packet, 12 + len(payload), seq)
    return seq


async def test_a_bgr_video_sink_gets_frames_converted_in_the_decode_job() -> None:
    receiver, track = receiver_for("video")
    try:
        async with VideoSink(track, capacity=10, format="bgr24") as sink:
            own_jobs = 0
            run = sink._jobs.run

            async def counted(*args: Any) -> Any:
                nonlocal own_jobs
                own_jobs += 1
                return await run(*args)

            sink._jobs.run = counted  # type: ignore[method-assign]
            await asyncio.sleep(0)
            await feed_video(receiver, vp8_frames(5))
            got = []
            for _ in range(5):
                frame = await asyncio.wait_for(sink.get(), 5)
                assert frame is not None
                got.append(frame)
            assert own_jobs == 0  # converted in the decode job, not in one of the sink's
            for frame in got:
                bgr = frame.data()
                assert bgr.shape == (240, 320, 3)
                expected = reformat_video(frame.frame, format="bgr24").to_ndarray()
                assert np.array_equal(bgr, expected)
            assert receiver.streams[99].frames_decoded == 5
    finally:
        await receiver.stop()


async def test_a_rejected_frame_is_counted_a_key_frame_asked_for_and_decoding_goes_on() -> None:
    pli = asyncio.Event()

    async def rtcp(data: bytes) -> bool:
        if len(data) >= 2 and data[1] == 206:  # PSFB: the PLI
            pli.set()
        return True

    receiver, track = receiver_for("video", rtcp)
    try:
        first = asyncio.ensure_future(track.recv())
        seq = await feed_video(receiver, vp8_frames(1))
        assert isinstance(await asyncio.wait_for(first, 5), av.VideoFrame)
        # A key frame whose VP8 header is garbage: the decoder rejects it.
        garbage = [bytes([0x10, 0x00, 0xFF, 0xFF, 0x00]) + bytes(range(200))]
        seq = await feed_video(receiver, [garbage], seq)
        await asyncio.wait_for(pli.wait(), 5)  # asked for after the decode error
        assert receiver.streams[99].decode_errors == 1
        waiting = asyncio.ensure_future(track.recv())
        await feed_video(receiver, vp8_frames(3), seq)
        frame = await asyncio.wait_for(waiting, 5)
        assert isinstance(frame, av.VideoFrame) and (frame.width, frame.height) == (320, 240)
        assert receiver.streams[99].decode_errors == 1
    finally:
        await receiver.stop()


async def test_video_decodes_of_many_receivers_share_pool_jobs_and_stay_in_order(
    monkeypatch: Any,
) -> None:
    """The frames several receivers complete in one pass of the loop go to the codec
    pool together (at most DECODE_BATCH per job): fewer pool jobs than frames, every
    frame decoded and delivered, each receiver's in order."""
    from sora_async.rtc import _workers
    from sora_async.rtc import receiver as receiver_module

    submitted = 0
    pool = _workers.codec_pool()
    submit = pool.submit

    def counted(*args: Any) -> None:
        nonlocal submitted
        submitted += 1
        submit(*args)

    monkeypatch.setattr(pool, "submit", counted)
    count, frames = 12, vp8_frames(4)
    pairs = [receiver_for("video") for _ in range(count)]
    delivered: list[list[int]] = [[] for _ in range(count)]
    arrived = asyncio.Event()

    def on_frame(index: int, frame: Any) -> None:
        delivered[index].append(frame.pts)
        arrived.set()

    for index, (_, track) in enumerate(pairs):
        track._tap(functools.partial(on_frame, index), lambda: None)
    try:
        for step in range(len(frames)):
            # one frame of every receiver in one pass of the loop, as datagrams of many
            # connections arrive together
            for receiver, _ in pairs:
                await feed_video(receiver, [frames[step]], seq=step)
            async with asyncio.timeout(10):
                while any(len(d) < step + 1 for d in delivered):
                    arrived.clear()
                    await arrived.wait()
        for pts in delivered:
            assert pts == sorted(pts) and len(pts) == len(frames)
        assert all(r.streams[99].frames_decoded == len(frames) for r, _ in pairs)
        per_pass = -(-count // receiver_module.DECODE_BATCH)  # jobs per full pass
        assert submitted <= per_pass * len(frames) < count * len(frames)
    finally:
        async with asyncio.timeout(10):
            for receiver, _ in pairs:
                await receiver.stop()


async def test_stop_waits_for_a_batched_decode_before_closing_the_decoder() -> None:
    receiver, _track = receiver_for("video")
    closed_while_decoding = []
    decoding = False
    factory = receiver._decoder_factory

    def slow_decoder(codec: Any) -> Any:
        decoder = factory(codec)
        decode, close = decoder.decode, decoder.close

        def slow(frame: Any) -> Any:
            nonlocal decoding
            decoding = True
            time.sleep(0.2)
            decoding = False
            return decode(frame)

        def checked_close() -> None:
            closed_while_decoding.append(decoding)
            close()

        decoder.decode, decoder.close = slow, checked_close
        return decoder

    receiver._decoder_factory = slow_decoder
    await feed_video(receiver, vp8_frames(1))
    await asyncio.sleep(0.05)  # the batch is on the pool, decoding
    assert receiver._decoding
    async with asyncio.timeout(10):
        await receiver.stop()
    assert closed_while_decoding == [False]
    assert not receiver._decoding
