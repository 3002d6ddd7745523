"""Opus (RFC 7587): one packet per payload, encoder/decoder round trip."""

from __future__ import annotations

import fractions

import numpy as np
import pytest
from av.audio.frame import AudioFrame

from sora_async.codecs import EncodedFrame, MalformedPayloadError, create_decoder, create_encoder
from sora_async.codecs.opus import OpusDepacketizer, OpusPacketizer, toc_frame_count
from sora_async.codecs.pattern import audio_frame


def test_payload_is_the_opus_packet() -> None:
    packet = EncodedFrame(data=b"\x78\x01\x02", timestamp=960, codec="OPUS")
    payloads = OpusPacketizer().packetize(packet)
    assert payloads == [b"\x78\x01\x02"]
    depacketizer = OpusDepacketizer()
    assert depacketizer.is_frame_start(payloads[0]) and depacketizer.is_keyframe_start(payloads[0])
    rebuilt = depacketizer.depacketize(payloads, timestamp=960)
    assert rebuilt.data == packet.data and rebuilt.is_keyframe and rebuilt.kind == "audio"


def test_toc_frame_counts() -> None:
    assert toc_frame_count(b"\x78") == 1
    assert toc_frame_count(b"\x79") == 2
    assert toc_frame_count(b"\x7b\x03") == 3
    for bad in (b"", b"\x7b", b"\x7b\x00"):
        with pytest.raises(MalformedPayloadError):
            toc_frame_count(bad)


def test_one_timestamp_must_have_one_payload() -> None:
    with pytest.raises(MalformedPayloadError):
        OpusDepacketizer().depacketize([b"\x78", b"\x78"])
    with pytest.raises(ValueError):
        OpusPacketizer().packetize(EncodedFrame(b"\x78" * 2000, 0, "OPUS"))


def test_encoder_makes_20ms_packets_that_decode() -> None:
    encoder, decoder = create_encoder("OPUS"), create_decoder("OPUS")
    packets = [p for i in range(5) for p in encoder.encode(audio_frame(i))]
    assert len(packets) == 5  # one 20 ms packet per 20 ms in, no buffering
    assert [p.timestamp for p in packets] == [0, 960, 1920, 2880, 3840]
    for packet in packets:
        [frame] = decoder.decode(packet)
        assert (frame.samples, frame.sample_rate, frame.layout.name) == (960, 48000, "stereo")


def test_encoder_takes_any_rate_and_layout() -> None:
    tone = (np.sin(np.arange(160) / 3) * 3000).astype(np.int16).reshape(1, -1)
    encoder = create_encoder("OPUS")
    out = []
    for i in range(12):  # 12 x 10 ms of 16 kHz mono
        frame = AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        frame.sample_rate = 16000
        frame.pts = i * 160
        frame.time_base = fractions.Fraction(1, 16000)
        out += encoder.encode(frame)
    assert len(out) in (5, 6) and all(p.samples == 960 for p in out)
