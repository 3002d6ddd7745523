"""The Opus encoder on libopus through ctypes: settings, output, input paths, fallback.

What it sends must be what the PyAV encoder sent (byte for byte with the same
settings), decode in FFmpeg's libopus decoder to the tone it was given, and
carry the TOC of 20 ms packets with the encoder's channel count.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from sora_async import AudioSource
from sora_async._media import Changed
from sora_async.codecs import opus
from sora_async.codecs.opus import OpusEncoder, default_bitrate, libopus, sdp_stream_format

pytestmark = pytest.mark.skipif(libopus() is None, reason="libopus cannot be loaded")

# opus_defines.h GET requests
GET_APPLICATION, GET_BITRATE, GET_MAX_BANDWIDTH, GET_VBR = 4001, 4003, 4005, 4007
GET_COMPLEXITY, GET_INBAND_FEC, GET_PACKET_LOSS_PERC, GET_DTX = 4011, 4013, 4015, 4017
GET_VBR_CONSTRAINT = 4021
#: TOC configs (RFC 6716 §3.1) with 20 ms frames: SILK, hybrid, CELT.
CONFIGS_20MS = {1, 5, 9, 13, 15, 19, 23, 27, 31}


def tone_frame(
    index: int, channels: int = 1, freq: float = 440.0, samples: int = 960, rate: int = 48000
) -> av.AudioFrame:
    """``samples`` of a ``freq`` Hz tone (s16, packed), pts in samples."""
    t = np.arange(index * samples, (index + 1) * samples) / rate
    wave = (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16)
    pcm = np.repeat(wave[:, None], channels, axis=1).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(
        pcm, format="s16", layout="mono" if channels == 1 else "stereo"
    )
    frame.sample_rate = rate
    frame.pts = index * samples
    frame.time_base = fractions.Fraction(1, rate)
    return frame


def mono_frame(pcm: np.ndarray, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = 48000, pts, fractions.Fraction(1, 48000)
    return frame


def pyav_encoder(**kwargs: object) -> OpusEncoder:
    """The same encoder on its PyAV fallback (what runs where libopus is not loadable)."""
    encoder = OpusEncoder(**kwargs)  # type: ignore[arg-type]
    encoder._lib = None
    return encoder


def ctl(encoder: OpusEncoder, request: int) -> int:
    lib = encoder._lib
    assert lib is not None and encoder._state is not None
    return lib.get(encoder._state, request)


def decode_pyav(packets: list[bytes], channels: int) -> np.ndarray:
    """FFmpeg's libopus decoder: the packets back to s16 (samples, channels) at 48 kHz."""
    ctx = av.CodecContext.create("libopus", "r")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate = 48000
    ctx.layout = "mono" if channels == 1 else "stereo"
    ctx.format = "s16"
    out = []
    for data in packets:
        for frame in ctx.decode(av.Packet(data)):
            out.append(frame.to_ndarray().reshape(-1, len(frame.layout.channels)))
    return np.concatenate(out)


def dominant_hz(pcm: np.ndarray, rate: int = 48000) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * rate / len(pcm))


@pytest.mark.parametrize("channels", [1, 2])
def test_tone_encodes_to_20ms_packets_that_decode_to_the_tone(channels: int) -> None:
    encoder = OpusEncoder(channels=channels)
    assert encoder.encodes_inline
    packets = [p for i in range(50) for p in encoder.encode(tone_frame(i, channels))]
    assert len(packets) == 50  # one packet per 20 ms frame, nothing held back
    assert [p.timestamp for p in packets[:3]] == [0, 960, 1920]
    assert all(p.samples == 960 and p.channels == channels for p in packets)
    for packet in packets:
        toc = packet.data[0]
        assert toc >> 3 in CONFIGS_20MS and toc & 0x03 == 0  # one 20 ms frame
        assert bool(toc & 0x04) == (channels == 2)  # the stereo flag
    pcm = decode_pyav([p.data for p in packets], channels)
    assert len(pcm) == 50 * 960
    steady = pcm[4800:, 0]  # past the codec's start-up
    assert abs(dominant_hz(steady) - 440) < 5
    rms = float(np.sqrt(np.mean(steady.astype(np.float64) ** 2)))
    assert 0.5 * 8000 / np.sqrt(2) < rms < 1.5 * 8000 / np.sqrt(2)


def test_output_is_byte_identical_to_the_pyav_encoder() -> None:
    """Same settings as FFmpeg's libopusenc applies for the PyAV encoder's options."""
    for kwargs in (
        {"channels": 1},
        {"channels": 2, "cbr": True},
        {"channels": 1, "complexity": 10},
    ):
        fast, slow = OpusEncoder(**kwargs), pyav_encoder(**kwargs)  # type: ignore[arg-type]
        for i in range(20):
            frame = tone_frame(i, int(kwargs["channels"]))
            assert [p.data for p in fast.encode(frame)] == [p.data for p in slow.encode(frame)]


def test_settings_are_libwebrtcs_and_the_sdps() -> None:
    encoder = OpusEncoder(bitrate=48_000, channels=1)
    encoder.encode(tone_frame(0))
    assert ctl(encoder, GET_APPLICATION) == 2048  # OPUS_APPLICATION_VOIP
    assert ctl(encoder, GET_COMPLEXITY) == 9  # libwebrtc's desktop default
    assert ctl(encoder, GET_BITRATE) == 48_000
    assert ctl(encoder, GET_INBAND_FEC) == 1
    assert ctl(encoder, GET_PACKET_LOSS_PERC) == 0  # libwebrtc's, until a loss is reported
    assert ctl(encoder, GET_VBR) == 1 and ctl(encoder, GET_VBR_CONSTRAINT) == 1
    assert ctl(encoder, GET_DTX) == 0
    sdp = OpusEncoder(channels=1, fec=False, dtx=True, cbr=True, max_playback_rate=16000)
    sdp.encode(tone_frame(0))
    assert ctl(sdp, GET_INBAND_FEC) == 0 and ctl(sdp, GET_DTX) == 1 and ctl(sdp, GET_VBR) == 0
    assert ctl(sdp, GET_MAX_BANDWIDTH) == 1103  # wideband for 16 kHz playback
    with pytest.raises(ValueError):
        OpusEncoder(complexity=11)


def test_bit_rate_changes_in_place() -> None:
    encoder = OpusEncoder(bitrate=64_000, channels=1)
    first = [p for i in range(10) for p in encoder.encode(tone_frame(i))]
    state = encoder._state
    encoder.target_bitrate = 12_000
    low = [p for i in range(10, 60) for p in encoder.encode(tone_frame(i))]
    assert encoder._state == state  # no new encoder (no reset of its state)
    assert ctl(encoder, GET_BITRATE) == 12_000
    assert [p.timestamp for p in first + low] == [960 * i for i in range(60)]
    assert np.mean([len(p.data) for p in low[-20:]]) < 0.5 * np.mean([len(p.data) for p in first])


def test_other_rates_layouts_and_sizes_are_converted_and_rechunked() -> None:
    # 16 kHz stereo in 10 ms frames into a mono encoder: resampled, remixed, rechunked
    encoder = OpusEncoder(channels=1)
    packets = [
        p for i in range(30) for p in encoder.encode(tone_frame(i, 2, samples=160, rate=16000))
    ]
    assert 13 <= len(packets) <= 15  # 300 ms less what the resampler holds back
    assert [p.timestamp for p in packets] == [960 * i for i in range(len(packets))]
    assert abs(dominant_hz(decode_pyav([p.data for p in packets], 1)[4800:, 0]) - 440) < 5
    # 48 kHz, odd sizes: every sample is encoded once, in order
    odd = OpusEncoder(channels=1)
    sizes = [441, 1000, 960, 37, 2402]
    wave = (np.sin(2 * np.pi * 440 * np.arange(sum(sizes)) / 48000) * 8000).astype(np.int16)
    out, at = [], 0
    for size in sizes:
        out += odd.encode(mono_frame(wave[at : at + size], at))
        at += size
    assert len(out) == sum(sizes) // 960 and len(odd._pending) == sum(sizes) % 960
    reference = OpusEncoder(channels=1)
    whole = [
        p.data
        for i in range(len(out))
        for p in reference.encode(mono_frame(wave[i * 960 : (i + 1) * 960], i * 960))
    ]
    assert [p.data for p in out] == whole  # the same bytes as 20 ms frames would give


def test_pyav_fallback_without_libopus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opus, "libopus", lambda: None)
    encoder = OpusEncoder(channels=1)
    assert not encoder.encodes_inline
    packets = [p for i in range(10) for p in encoder.encode(tone_frame(i))]
    assert len(packets) == 10 and all(p.data[0] >> 3 in CONFIGS_20MS for p in packets)
    encoder.close()


def test_close_frees_and_a_later_frame_reopens() -> None:
    encoder = OpusEncoder(channels=1)
    encoder.encode(tone_frame(0))
    encoder.close()
    assert encoder._state is None
    assert len(encoder.encode(tone_frame(1))) == 1 and encoder._state is not None
    encoder.close()


async def test_changed_wait_for_times_out_and_leaves_no_waiter() -> None:
    changed = Changed()
    started = time.monotonic()
    assert await changed.wait_for(lambda: False, 0.05) is False
    assert 0.04 <= time.monotonic() - started < 1.0
    assert changed._waiters == []
    task = asyncio.ensure_future(changed.wait_for(lambda: False, 5))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)
    assert changed._waiters == []
    flag = False

    def set_later() -> None:
        nonlocal flag
        flag = True
        changed.notify()

    asyncio.get_running_loop().call_later(0.02, set_later)
    assert await changed.wait_for(lambda: flag, 2) is True


async def test_audio_source_hands_over_whole_frames_early_and_paces_a_backlog() -> None:
    """A frame goes out once all of it is queued (up to 40 ms ahead of the clock), not
    on every write; a backlog still goes out at the clock's pace; stop() wakes recv()."""
    source = AudioSource(1, 48000)
    half = np.full((480, 1), 1000, np.int16)
    await asyncio.wait_for(source.recv(), 1)  # starts the clock (silence: nothing queued)
    pending = asyncio.ensure_future(source.recv())  # due 20 ms after the first
    source.write(half)
    await asyncio.sleep(0.002)
    assert not pending.done()  # 10 ms is not a frame: the write does not hand it over
    written = time.monotonic()
    source.write(half)
    frame = await asyncio.wait_for(pending, 1)
    assert time.monotonic() - written < 0.015  # the completing write, not the clock
    assert np.abs(frame.to_ndarray()).max() == 1000 and frame.pts == 960
    # 200 ms queued at once: frames 2..11 are due at 40..220 ms, handed over from 0..180 ms
    source.write(np.full((9600, 1), 1000, np.int16))
    started = time.monotonic()
    frames = [await asyncio.wait_for(source.recv(), 1) for _ in range(10)]
    assert 0.12 <= time.monotonic() - started < 0.5
    assert [f.pts for f in frames] == [960 * i for i in range(2, 12)]
    stopping = asyncio.ensure_future(source.recv())  # nothing queued: waits for its time
    await asyncio.sleep(0.005)
    assert not stopping.done()
    source.stop()  # wakes the paced wait at once
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(stopping, 0.5)


class _CountingChanged(Changed):
    """Counts the waits ``recv()`` registers (each one is a loop wake-up)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float | None = None,  # noqa: ASYNC109 - Changed's own signature
    ) -> bool:
        if not predicate():  # counted only when it has to wait
            self.waits += 1
        return await super().wait_for(predicate, timeout)


@pytest.mark.parametrize("lead_chunks", [4, 6])
async def test_a_real_time_producer_costs_recv_one_wait_per_frame(lead_chunks: int) -> None:
    """A producer writing 10 ms every 10 ms, 40 ms (within the early window: the data
    is waited for) or 60 ms (a backlog: the clock is waited for) ahead of the clock:
    one wait per frame either way, never both a timer and a write's wake-up, and the
    writes between do not wake recv().

    The first recv() takes 20 ms of the lead, so the producer may be 20 ms late before
    a frame goes out as silence. With 30 ms (10 ms of slack) one write late by a
    loaded host's scheduling did that once; the early window is 40 ms, so 40 ms of
    lead still has recv() wait for the data."""
    source = AudioSource(1, 48000)
    counting = _CountingChanged()
    source._paced = counting
    chunk = np.full((480, 1), 1000, np.int16)
    for _ in range(lead_chunks):
        source.write(chunk)
    await asyncio.wait_for(source.recv(), 1)  # starts the clock

    async def producer() -> None:
        start = time.monotonic()
        for index in range(1, 41):
            await asyncio.sleep(max(0.0, start + index * 0.01 - time.monotonic()))
            source.write(chunk)

    writing = asyncio.ensure_future(producer())
    try:
        frames = [await asyncio.wait_for(source.recv(), 1) for _ in range(16)]
    finally:
        writing.cancel()
    assert all(np.abs(f.to_ndarray()).max() == 1000 for f in frames)  # no silence
    # each wait is one wake-up; before, 2-3 per frame (a timer, then the write)
    assert counting.waits <= len(frames) + 1, counting.waits


def clicks_and_silence(index: int) -> av.AudioFrame:
    """The bench's audio: a 20 ms click once a second, digital silence otherwise."""
    pcm = np.zeros(960, np.int16)
    if index % 50 == 0:
        pcm[:480] = (np.sin(2 * np.pi * 1000 * np.arange(480) / 48000) * 12000).astype(np.int16)
    return mono_frame(pcm, index * 960)


def test_fec_follows_the_reported_loss_as_libwebrtcs() -> None:
    """The expected loss starts at 0 (no redundant copy in every packet) and follows
    the receiver reports: smoothed over ~10 s, capped at 20 %, applied in place."""
    encoder = OpusEncoder(channels=1)
    quiet = [p for i in range(100) for p in encoder.encode(clicks_and_silence(i))]
    assert ctl(encoder, GET_PACKET_LOSS_PERC) == 0 and ctl(encoder, GET_INBAND_FEC) == 1
    state = encoder._state
    encoder.set_packet_loss(0.10, now_ms=0.0)  # the first report is taken as it is
    assert encoder.packet_loss == 10
    lossy = [p for i in range(100, 200) for p in encoder.encode(clicks_and_silence(i))]
    assert encoder._state == state and ctl(encoder, GET_PACKET_LOSS_PERC) == 10
    # with an expected loss libopus adds the previous frame's redundant copy (LBRR)
    assert sum(len(p.data) for p in lossy) > 2 * sum(len(p.data) for p in quiet)
    # 10 s of clean reports (one a second) bring it back down, not at once
    for second in range(1, 11):
        encoder.set_packet_loss(0.0, now_ms=1000.0 * second)
        if second == 1:
            assert encoder.packet_loss == 9  # 0.9999 ** 1000 of 10 %
    assert encoder.packet_loss == 4  # 10 % * 0.9999 ** 10000 = 3.7 %
    encoder.set_packet_loss(0.9, now_ms=60_000.0)  # a long gap: the new value dominates
    assert encoder.packet_loss == 20  # capped (kMaxPacketLossFraction)
    encoder.encode(clicks_and_silence(200))
    assert ctl(encoder, GET_PACKET_LOSS_PERC) == 20


def test_default_bitrate_is_libwebrtcs() -> None:
    assert default_bitrate() == 32_000
    assert default_bitrate(2) == 64_000
    assert default_bitrate(1, 16000) == 20_000
    assert default_bitrate(2, 8000) == 24_000
    assert default_bitrate(1, 24000) == 32_000
    # what the sender reads them from (RFC 7587 §6.1)
    assert sdp_stream_format({"minptime": "10", "useinbandfec": "1"}) == (1, None)
    assert sdp_stream_format({"stereo": " 1", "maxplaybackrate": "16000"}) == (2, 16000)
    assert default_bitrate(*sdp_stream_format({"stereo": "1", "maxplaybackrate": "8000"})) == 24_000
