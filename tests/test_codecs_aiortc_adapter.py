"""Our codecs behind aiortc 1.16's Encoder/Decoder interfaces, through its real JitterBuffer."""

from __future__ import annotations

import av.error
import pytest
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

from sora_async.codecs import (
    EncodedFrame,
    create_decoder,
    create_depacketizer,
    create_encoder,
    create_packetizer,
)
from sora_async.codecs.aiortc_adapter import (
    AiortcDecoder,
    AiortcEncoder,
    frame_payload,
    split_frame_payloads,
)
from sora_async.codecs.pattern import video_frame


@pytest.mark.parametrize("codec", ["VP9", "AV1", "H265"])
def test_frames_cross_aiortcs_jitter_buffer_and_decode_per_frame(codec: str) -> None:
    sender = AiortcEncoder(create_encoder(codec), create_packetizer(codec), max_payload_size=300)
    receiver = AiortcDecoder(create_decoder(codec), create_depacketizer(codec))
    jitter = JitterBuffer(capacity=128, is_video=True)
    seq = 0
    decoded = []
    for i in range(5):
        payloads, timestamp = sender.encode(video_frame(160, 120, i), force_keyframe=False)
        assert timestamp == i * 3000 and len(payloads) >= 1
        for payload in payloads:
            packet = RtpPacket(
                payload_type=100, sequence_number=seq, timestamp=timestamp, payload=payload
            )
            packet._data = frame_payload(payload)  # type: ignore[attr-defined]  # the depayload hook
            seq += 1
            _, frame = jitter.add(packet)
            if frame is not None:
                decoded += receiver.decode(frame)
    # aiortc emits a frame when the next one starts: 4 of 5 here.
    assert len(decoded) == 4 and all(f.width == 160 for f in decoded)


def test_transforms_run_between_encoder_and_packetizer() -> None:
    seen: list[EncodedFrame] = []

    def drop_inter_frames(frame: EncodedFrame) -> EncodedFrame | None:
        seen.append(frame)
        return frame if frame.is_keyframe else None

    sender = AiortcEncoder(
        create_encoder("VP8"), create_packetizer("VP8"), transform=drop_inter_frames
    )
    assert sender.encode(video_frame(160, 120, 0))[0]
    assert sender.encode(video_frame(160, 120, 1)) == ([], 0)
    assert len(seen) == 2
    sender.target_bitrate = 300_000
    assert sender.encoder.target_bitrate == 300_000


def test_pre_encoded_packets_are_packetized() -> None:
    import av

    [encoded] = create_encoder("H264").encode(video_frame(160, 120, 0))
    packet = av.Packet(encoded.data)
    packet.pts = 3000
    sender = AiortcEncoder(create_encoder("H264"), create_packetizer("H264"))
    payloads, timestamp = sender.pack(packet)
    assert payloads and timestamp == 3000


def test_bad_frames_become_ffmpeg_errors_so_aiortc_asks_for_a_key_frame() -> None:
    receiver = AiortcDecoder(create_decoder("VP9"), create_depacketizer("VP9"))
    with pytest.raises(av.error.FFmpegError):
        receiver.decode(JitterFrame(data=frame_payload(b"\x00\x01"), timestamp=0))
    with pytest.raises(av.error.FFmpegError):
        receiver.decode(JitterFrame(data=b"\x00\x00\x00\x09ab", timestamp=0))
    assert split_frame_payloads(frame_payload(b"ab") + frame_payload(b"")) == [b"ab", b""]
