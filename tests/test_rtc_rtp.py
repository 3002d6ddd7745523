"""``RtpSender`` and ``RtpReceiver`` on their own: RTCP in, RTP out, and back.

No network: the sender writes into a list, the receiver is fed packets the
test builds (from a real encoder and packetizer), so loss, reordering,
retransmission and SSRC switches happen exactly where the test says.
"""

from __future__ import annotations

import asyncio
import fractions
import struct
from collections.abc import Callable
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import (
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtpPacket,
    pack_remb_fci,
)

from sora_async.codecs import EncoderSettings, create_encoder, create_packetizer
from sora_async.rtc.receiver import NackTracker, RemoteTrack, RtpReceiver, nack_packet
from sora_async.rtc.sdp import EXT_MID, EXT_RID, EXT_RRID, NegotiatedCodec
from sora_async.rtc.sender import EncodingParameters, RtpSender, SendLayer, extensions_map
from tests.rtc_support import QueueSource, receiver_for, vp8_codec

VP8 = vp8_codec()
H264 = NegotiatedCodec(
    payload_type=102,
    name="H264",
    kind="video",
    rtpmap="H264/90000",
    clock_rate=90000,
    channels=None,
    fmtp={"packetization-mode": "1", "profile-level-id": "42e01f"},
    fmtp_line="packetization-mode=1;profile-level-id=42e01f",
    feedback=["goog-remb", "nack", "nack pli"],
    rtx_payload_type=None,
)
EXTENSIONS = [(4, EXT_MID), (10, EXT_RID), (11, EXT_RRID)]


def frame(index: int, width: int = 320, height: int = 240) -> av.VideoFrame:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, (index * 7) % width :][:, :24] = 255
    out = av.VideoFrame.from_ndarray(image, format="bgr24")
    out.pts, out.time_base = index * 3000, fractions.Fraction(1, 90000)
    return out


class Wire:
    """What a sender wrote, parsed; with a way to wait for more."""

    def __init__(self) -> None:
        self.packets: list[RtpPacket] = []
        self.changed = asyncio.Event()

    async def send(self, data: bytes) -> bool:
        self.packets.append(RtpPacket.parse(data, extensions_map(EXTENSIONS)))
        self.changed.set()
        return True

    async def wait(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


def encoder(codec: NegotiatedCodec, layer: SendLayer) -> Any:
    settings = EncoderSettings(bitrate=layer.target_bitrate, fmtp=codec.fmtp)
    return create_encoder(codec.name, settings=settings)


async def started_sender(
    encodings: list[EncodingParameters] | None = None, codec: NegotiatedCodec = VP8
) -> tuple[RtpSender, QueueSource, Wire]:
    source, wire = QueueSource(), Wire()
    sender = RtpSender(
        kind="video",
        mid="1",
        source=source,
        codec=codec,
        extensions=EXTENSIONS,
        encodings=encodings or [EncodingParameters()],
        send=wire.send,
        cname="cname",
        encoder_factory=encoder,
        taken_ssrcs=set(),
        max_bitrate=1_000_000,
    )
    sender.start()
    return sender, source, wire


async def send_frames(
    sender: RtpSender, source: QueueSource, wire: Wire, count: int, start: int = 0
) -> None:
    """Feed ``count`` frames one at a time, each once the previous one is out."""
    for index in range(start, start + count):
        before = sum(layer.frames_sent for layer in sender.layers)
        source.queue.put_nowait(frame(index))
        active = sum(1 for layer in sender.layers if layer.active)
        await wire.wait(
            lambda b=before, a=active: sum(x.frames_sent for x in sender.layers) >= b + a
        )


# -- sender ---------------------------------------------------------------------------


async def test_sender_writes_rtp_and_answers_nack_with_rtx_and_pli_with_a_key_frame() -> None:
    async with asyncio.timeout(30):
        sender, source, wire = await started_sender()
        try:
            await send_frames(sender, source, wire, 3)
            (layer,) = sender.layers
            media = [p for p in wire.packets if p.ssrc == layer.ssrc]
            assert {p.payload_type for p in media} == {96}
            assert media[-1].marker == 1 and media[0].extensions.mid == "1"
            sequences = [p.sequence_number for p in media]
            assert sequences == [(sequences[0] + i) & 0xFFFF for i in range(len(sequences))]
            assert layer.key_frames_encoded == 1 and layer.frames_encoded == 3

            lost = media[1]
            nack = RtcpRtpfbPacket(
                fmt=1, ssrc=42, media_ssrc=layer.ssrc, lost=[lost.sequence_number]
            )
            await sender.handle_rtcp(nack)
            rtx = wire.packets[-1]
            assert (rtx.ssrc, rtx.payload_type) == (layer.rtx_ssrc, 97)  # RFC 4588
            assert struct.unpack("!H", rtx.payload[:2])[0] == lost.sequence_number
            assert rtx.payload[2:] == lost.payload and rtx.timestamp == lost.timestamp
            assert layer.nack_count == 1 and layer.retransmitted_packets_sent == 1

            await sender.handle_rtcp(RtcpPsfbPacket(fmt=1, ssrc=42, media_ssrc=layer.ssrc))
            await send_frames(sender, source, wire, 1, start=3)
            assert layer.pli_count == 1 and layer.key_frames_encoded == 2

            fir = RtcpPsfbPacket(
                fmt=4, ssrc=42, media_ssrc=0, fci=struct.pack("!LB3x", layer.ssrc, 1)
            )
            await sender.handle_rtcp(fir)
            await send_frames(sender, source, wire, 1, start=4)
            assert layer.fir_count == 1 and layer.key_frames_encoded == 3
        finally:
            await sender.stop()


async def test_sender_follows_remb_in_place_and_measures_rtt_from_receiver_reports() -> None:
    async with asyncio.timeout(30):
        sender, source, wire = await started_sender(codec=H264)
        try:
            await send_frames(sender, source, wire, 2)
            (layer,) = sender.layers
            assert layer.encoder is not None
            remb = RtcpPsfbPacket(
                fmt=15, ssrc=42, media_ssrc=0, fci=pack_remb_fci(300_000, [layer.ssrc])
            )
            await sender.handle_rtcp(remb)
            assert layer.target_bitrate == 300_000 == layer.encoder.target_bitrate
            assert layer.quality.reason == "bandwidth" and sender.available_bitrate == 300_000
            await send_frames(sender, source, wire, 2, start=2)
            # x264 takes a new VBV rate in place: no re-created encoder, no key frame.
            assert getattr(layer.encoder, "reopen_count", None) == 0
            assert getattr(layer.encoder, "in_place_bitrate_updates", 0) >= 1
            assert layer.key_frames_encoded == 1

            (report,) = sender.sender_reports()
            lsr = (report.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
            await asyncio.sleep(0.05)
            rr = RtcpRrPacket(
                ssrc=42,
                reports=[
                    RtcpReceiverInfo(
                        ssrc=layer.ssrc,
                        fraction_lost=64,
                        packets_lost=3,
                        highest_sequence=1,
                        jitter=900,
                        lsr=lsr,
                        dlsr=int(0.02 * 65536),
                    )
                ],
            )
            await sender.handle_rtcp(rr)
            remote = layer.remote
            assert remote.packets_lost == 3 and remote.fraction_lost == 0.25
            assert remote.jitter == pytest.approx(0.01)
            assert remote.round_trip_time is not None and 0.02 < remote.round_trip_time < 1.0
        finally:
            await sender.stop()


async def test_simulcast_layers_scale_once_and_key_frame_requests_stay_per_layer() -> None:
    encodings = [
        EncodingParameters(rid="r0", scale_resolution_down_by=4),
        EncodingParameters(rid="r1", scale_resolution_down_by=2),
        EncodingParameters(rid="r2", active=False),
    ]
    async with asyncio.timeout(30):
        sender, source, wire = await started_sender(encodings)
        try:
            await send_frames(sender, source, wire, 3)
            r0, r1, r2 = sender.layers
            assert (r0.frame_width, r0.frame_height) == (80, 60)
            assert (r1.frame_width, r1.frame_height) == (160, 120)
            assert r2.frames_encoded == 0 and r2.packets_sent == 0  # inactive: "~r2"
            by_ssrc = {p.ssrc: p for p in wire.packets}
            assert by_ssrc[r0.ssrc].extensions.rtp_stream_id == "r0"
            assert by_ssrc[r1.ssrc].extensions.rtp_stream_id == "r1"

            keys = (r0.key_frames_encoded, r1.key_frames_encoded)
            await sender.handle_rtcp(RtcpPsfbPacket(fmt=1, ssrc=42, media_ssrc=r1.ssrc))
            await send_frames(sender, source, wire, 1, start=3)
            assert (r0.key_frames_encoded, r1.key_frames_encoded) == (keys[0], keys[1] + 1)

            nack = RtcpRtpfbPacket(
                fmt=1, ssrc=42, media_ssrc=r0.ssrc, lost=[by_ssrc[r0.ssrc].sequence_number]
            )
            await sender.handle_rtcp(nack)
            rtx = wire.packets[-1]
            assert rtx.ssrc == r0.rtx_ssrc and rtx.extensions.repaired_rtp_stream_id == "r0"
            assert rtx.extensions.rtp_stream_id is None
        finally:
            await sender.stop()


# -- receiver --------------------------------------------------------------------------


def encoded_packets(ssrc: int, count: int, width: int, first_seq: int = 1000) -> list[RtpPacket]:
    """RTP packets of ``count`` VP8 frames at ``width`` x ``width*3/4`` on ``ssrc``."""
    encoder = create_encoder("VP8")
    packetizer = create_packetizer("VP8")
    packets: list[RtpPacket] = []
    seq = first_seq
    for index in range(count):
        for encoded in encoder.encode(frame(index, width, width * 3 // 4)):
            payloads = packetizer.packetize(encoded, 300)  # several packets per frame
            for number, payload in enumerate(payloads):
                packets.append(
                    RtpPacket(
                        payload_type=96,
                        marker=int(number == len(payloads) - 1),
                        sequence_number=seq & 0xFFFF,
                        timestamp=encoded.timestamp,
                        ssrc=ssrc,
                        payload=payload,
                    )
                )
                seq += 1
    return packets


class Feedback:
    def __init__(self) -> None:
        self.packets: list[Any] = []

    async def send(self, data: bytes) -> bool:
        self.packets.extend(RtcpPacket.parse(data))
        return True

    def nacked(self) -> list[int]:
        return [s for p in self.packets if isinstance(p, RtcpRtpfbPacket) for s in p.lost]

    def plis(self) -> int:
        return sum(1 for p in self.packets if isinstance(p, RtcpPsfbPacket) and p.fmt == 1)


def make_receiver(feedback: Feedback) -> tuple[RtpReceiver, RemoteTrack]:
    receiver, track = receiver_for("video", feedback.send, mid="1", queue_size=100)
    return receiver, track


async def frames_of(track: RemoteTrack, count: int) -> list[av.VideoFrame]:
    async with asyncio.timeout(10):
        return [await track.recv() for _ in range(count)]


async def test_a_lost_packet_is_nacked_and_its_retransmission_completes_the_frame() -> None:
    feedback = Feedback()
    async with asyncio.timeout(30):
        receiver, track = make_receiver(feedback)
        try:
            packets = encoded_packets(ssrc=5, count=4, width=320)
            lost = packets[len(packets) // 2]
            for packet in packets:
                if packet is not lost:
                    await receiver.handle_rtp(packet, 1200, 0)
            assert feedback.nacked() == [lost.sequence_number]
            # The retransmission comes back as RTX (RFC 4588) on the FID SSRC.
            receiver.rtx_ssrcs[6] = 5
            rtx = RtpPacket(
                payload_type=97,
                sequence_number=1,
                timestamp=lost.timestamp,
                ssrc=6,
                marker=lost.marker,
                payload=struct.pack("!H", lost.sequence_number) + lost.payload,
            )
            await receiver.handle_rtp(rtx, 1200, 0)
            decoded = await frames_of(track, 4)
            assert {(f.width, f.height) for f in decoded} == {(320, 240)}
            stream = receiver.streams[5]
            assert stream.packets_lost == 0 and stream.nack_count == 1
            assert stream.retransmitted_packets_received == 1 and feedback.plis() == 0
        finally:
            await receiver.stop()
    assert track.readyState == "ended"


async def test_two_ssrcs_on_one_receiver_do_not_corrupt_each_other_and_a_switch_is_followed() -> (
    None
):
    feedback = Feedback()
    async with asyncio.timeout(30):
        receiver, track = make_receiver(feedback)
        try:
            low = encoded_packets(ssrc=10, count=6, width=160, first_seq=100)
            high = encoded_packets(ssrc=20, count=6, width=320, first_seq=100)  # same seq range
            # Interleaved as an SFU switching layers would deliver them for a moment.
            for index in range(max(len(low), len(high))):
                for packets in (low, high):
                    if index < len(packets) and (packets is low or index >= len(high) // 2):
                        await receiver.handle_rtp(packets[index], 1200, 0)
            sizes = [(f.width, f.height) for f in await frames_of(track, 6)]
            # The low layer first, then (at the high layer's key frame... which came
            # mid-stream, so after its PLI) nothing corrupt: only whole sizes.
            assert set(sizes) <= {(160, 120), (320, 240)} and sizes[0] == (160, 120)
            assert receiver.streams[10].frames_decoded >= 5
            assert all(s.decode_errors == 0 for s in receiver.streams.values())
            # The high layer's key frame arrives: the receiver moves to it.
            switch = encoded_packets(ssrc=20, count=2, width=320, first_seq=500)
            for packet in switch:
                await receiver.handle_rtp(packet, 1200, 0)
            async with asyncio.timeout(10):
                while receiver.streams[20].frames_decoded < 2:
                    await track.recv()
            assert receiver.streams[20].key_frames_decoded >= 1
        finally:
            await receiver.stop()


def test_nack_tracker_limits_and_a_wrap_safe_nack() -> None:
    tracker = NackTracker()
    assert tracker.add(65534, 0.0) == []
    assert tracker.add(1, 0.0) == [65535, 0]  # across the wrap
    assert tracker.due(0.05) == []
    assert sorted(tracker.due(0.2)) == [0, 65535]
    for step in range(20):
        tracker.due(1.0 + step)
    assert tracker.missing == {}  # gave up after the retry limit
    assert tracker.add(2000, 30.0) == []  # a jump: a key frame, not 2000 NACKs
    (packet,) = RtcpPacket.parse(nack_packet(1, 2, [65535, 0, 3]))
    assert isinstance(packet, RtcpRtpfbPacket)
    assert [s & 0xFFFF for s in packet.lost] == [65535, 0, 3]


async def test_a_slow_consumer_gets_the_newest_frames_and_memory_stays_bounded() -> None:
    video = RemoteTrack("video", track_id=None, stream_id="S", mid="1")
    for index in range(100):
        video._deliver(frame(index, 32, 24))
    newest = [await bounded_recv(video) for _ in range(2)]
    assert [f.pts for f in newest] == [98 * 3000, 99 * 3000]  # video: newest two kept
    assert video.frames_dropped == 98
    audio = RemoteTrack("audio", track_id=None, stream_id="S", mid="0")
    for index in range(200):
        pcm = np.zeros((1, 960), np.int16)
        chunk = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        chunk.pts = index
        audio._deliver(chunk)
    assert (await bounded_recv(audio)).pts == 150  # audio: 1 s kept, oldest dropped
    video.set_enabled(False)
    video._deliver(frame(0, 32, 24))
    assert video.frames_dropped == 98 and not video.enabled
    video.stop()
    with pytest.raises(MediaStreamError):
        await bounded_recv(video)


async def bounded_recv(track: RemoteTrack) -> Any:
    async with asyncio.timeout(5):
        return await track.recv()


def test_one_byte_element_offset_walks_padding_and_stops_at_id_15() -> None:
    from sora_async.rtc.rtp_extensions import one_byte_element_offset

    # id 1 (1 byte), two padding bytes, id 3 (3 bytes), id 5 (2 bytes)
    block = bytes([0x10, 0xAA, 0, 0, 0x32, 1, 2, 3, 0x51, 4, 5, 0])
    assert one_byte_element_offset(block, 0, len(block), 1, 1) == 1
    assert one_byte_element_offset(block, 0, len(block), 3, 3) == 5
    assert one_byte_element_offset(block, 0, len(block), 5, 2) == 9
    assert one_byte_element_offset(block, 0, len(block), 5, 3) == -1  # other size
    assert one_byte_element_offset(block, 0, len(block), 7, 1) == -1  # absent
    assert one_byte_element_offset(block, 0, 8, 5, 2) == -1  # outside the range
    stop = bytes([0xF0, 0x51, 4, 5])
    assert one_byte_element_offset(stop, 0, len(stop), 5, 2) == -1  # after the stop mark
