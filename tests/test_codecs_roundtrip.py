"""Real frames through the whole chain: encode → packetize → RTP order games → assemble → decode."""

from __future__ import annotations

import random

import pytest

from sora_async.codecs import (
    EncodedFrame,
    EncoderSettings,
    FrameAssembler,
    create_decoder,
    create_depacketizer,
    create_encoder,
    create_packetizer,
)
from sora_async.codecs.pattern import video_frame

VIDEO_CODECS = ["VP8", "VP9", "AV1", "H264", "H265"]


def encode_clip(codec: str, count: int, key_at: tuple[int, ...] = ()) -> list[EncodedFrame]:
    encoder = create_encoder(codec, settings=EncoderSettings(bitrate=300_000))
    frames = [
        encoder.encode(video_frame(160, 120, i), force_keyframe=i in key_at)[0]
        for i in range(count)
    ]
    encoder.close()
    return frames


def rtp_packets(
    codec: str, frames: list[EncodedFrame], mtu: int
) -> list[tuple[int, int, bool, bytes]]:
    """(sequence number, timestamp, marker, payload) as a sender would emit them."""
    packetizer = create_packetizer(codec)
    packets = []
    seq = 65530  # wraps around during the clip
    for frame in frames:
        payloads = packetizer.packetize(frame, mtu)
        for index, payload in enumerate(payloads):
            packets.append((seq & 0xFFFF, frame.timestamp, index == len(payloads) - 1, payload))
            seq += 1
    return packets


@pytest.mark.parametrize("mtu", [1200, 250])
@pytest.mark.parametrize("codec", VIDEO_CODECS)
def test_frames_arrive_with_their_size_and_key_frames(codec: str, mtu: int) -> None:
    frames = encode_clip(codec, 5)
    depacketizer = create_depacketizer(codec)
    decoder = create_decoder(codec)
    packetizer = create_packetizer(codec)
    for frame in frames:
        payloads = packetizer.packetize(frame, mtu)
        assert all(len(p) <= mtu for p in payloads)
        rebuilt = depacketizer.depacketize(payloads, frame.timestamp)
        assert rebuilt.is_keyframe == frame.is_keyframe
        [picture] = decoder.decode(rebuilt)
        assert (picture.width, picture.height) == (160, 120)


@pytest.mark.parametrize("codec", VIDEO_CODECS)
def test_reordered_packets_are_put_back_in_order(codec: str) -> None:
    frames = encode_clip(codec, 6)
    packets = rtp_packets(codec, frames, 250)
    rng = random.Random(3)
    # Swap neighbours here and there (reordering within a few packets).
    for i in range(0, len(packets) - 1, 3):
        if rng.random() < 0.7:
            packets[i], packets[i + 1] = packets[i + 1], packets[i]
    assembler = FrameAssembler(create_depacketizer(codec))
    decoder = create_decoder(codec)
    out = [a for p in packets for a in assembler.add(*p)]
    assert [a.frame.timestamp for a in out] == [f.timestamp for f in frames]
    for assembled in out:
        [picture] = decoder.decode(assembled.frame)
        assert picture.width == 160
    assert not assembler.keyframe_needed and assembler.frames_dropped == 0


@pytest.mark.parametrize("codec", VIDEO_CODECS)
def test_after_a_loss_only_the_next_key_frame_gets_through(codec: str) -> None:
    frames = encode_clip(codec, 8, key_at=(5,))
    packets = rtp_packets(codec, frames, 250)
    first_of_frame_2 = next(i for i, p in enumerate(packets) if p[1] == frames[2].timestamp)
    del packets[first_of_frame_2 + 1 if len(packets) > first_of_frame_2 + 1 else first_of_frame_2]
    assembler = FrameAssembler(create_depacketizer(codec), reorder_window=3)
    decoder = create_decoder(codec)
    emitted = []
    saw_keyframe_request = False
    for packet in packets:
        emitted += assembler.add(*packet)
        saw_keyframe_request |= assembler.keyframe_needed
    timestamps = [a.frame.timestamp for a in emitted]
    assert timestamps[:2] == [frames[0].timestamp, frames[1].timestamp]
    assert frames[5].timestamp in timestamps  # the forced key frame recovers the stream
    assert frames[3].timestamp not in timestamps and frames[4].timestamp not in timestamps
    assert saw_keyframe_request and not assembler.keyframe_needed
    for assembled in emitted:
        [picture] = decoder.decode(assembled.frame)
        assert picture.width == 160
