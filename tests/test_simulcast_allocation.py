"""Simulcast under a falling estimate (issue 6): layers are turned off, not squeezed.

libwebrtc's ``SimulcastRateAllocator`` gives each layer up to its target, lowest
first, and turns off a layer (and those above it) whose min bit rate no longer
fits; a layer that is off needs 1.2 x its min to come back, and comes back with a
key frame. Here a real ``RtpSender`` with three VP8 layers (960x540 source: r0
240x134, r1 480x270, r2 960x540) writes into a list while the test moves the
estimate: what each SSRC carries is the outcome.
"""

from __future__ import annotations

import asyncio
import fractions
from typing import Any

import av
import numpy as np
from aiortc.rtp import RtpPacket

from sora_async.codecs import EncoderSettings, create_encoder
from sora_async.codecs.vp8 import Vp8PayloadDescriptor
from sora_async.rtc.congestion import (
    TransportCongestion,
    allocate_simulcast,
    simulcast_limits,
    simulcast_padding,
)
from sora_async.rtc.sdp import EXT_MID, EXT_RID, EXT_RRID, NegotiatedCodec
from sora_async.rtc.sender import EncodingParameters, RtpSender, SendLayer, extensions_map
from tests.rtc_support import QueueSource, vp8_codec

VP8 = vp8_codec()
EXTENSIONS = [(4, EXT_MID), (10, EXT_RID), (11, EXT_RRID)]
LAYERS = [
    EncodingParameters(rid="r0", scale_resolution_down_by=4.0, max_bitrate=150_000),
    EncodingParameters(rid="r1", scale_resolution_down_by=2.0, max_bitrate=450_000),
    EncodingParameters(rid="r2", max_bitrate=1_200_000),
]
LIMITS = [
    simulcast_limits(240, 134, 150_000),
    simulcast_limits(480, 270, 450_000),
    simulcast_limits(960, 540, 1_200_000),
]


def test_allocation_turns_the_upper_layers_off_lowest_first() -> None:
    assert LIMITS == [
        (30_000, 150_000, 150_000),
        (150_000, 350_000, 450_000),
        (350_000, 1_200_000, 1_200_000),
    ]
    on = [True, True, True]
    assert allocate_simulcast(3_000_000, LIMITS, on) == [150_000, 350_000, 1_200_000]
    assert allocate_simulcast(1_000_000, LIMITS, on) == [150_000, 350_000, 500_000]
    # r2's min (350 kbps) no longer fits: off; r1, now the top layer, gets the rest
    assert allocate_simulcast(700_000, LIMITS, on) == [150_000, 450_000, 0]
    assert allocate_simulcast(300_000, LIMITS, on) == [150_000, 150_000, 0]
    # the lowest layer always runs, at its min at least
    assert allocate_simulcast(100_000, LIMITS, on) == [100_000, 0, 0]
    assert allocate_simulcast(10_000, LIMITS, on) == [30_000, 0, 0]


def test_a_layer_that_is_off_needs_hysteresis_to_come_back() -> None:
    off = [True, True, False]
    # 850 kbps fits r2's min (350) after r0 + r1's targets, not 1.2 x 350
    assert allocate_simulcast(850_000, LIMITS, [True] * 3)[2] == 350_000
    assert allocate_simulcast(850_000, LIMITS, off) == [150_000, 450_000, 0]
    assert allocate_simulcast(920_000, LIMITS, off) == [150_000, 350_000, 420_000]


async def test_padding_up_to_the_lower_targets_and_the_top_min_within_the_estimate() -> None:
    # libwebrtc's CalculateMaxPadBitrateBps: r0 + r1 targets + 1.2 x r2's min, what
    # r2 needs to come back
    assert simulcast_padding(LIMITS) == 150_000 + 350_000 + 420_000 == 920_000
    assert allocate_simulcast(920_000, LIMITS, [True, True, False])[2] > 0
    assert simulcast_padding(LIMITS[:1]) == 0
    now = [10.0]
    congestion = TransportCongestion(clock=lambda: now[0])
    congestion.configure(1_800_000)
    congestion.padding_bitrate = simulcast_padding(LIMITS)
    assert congestion.padding_due() == 0  # no estimate yet: no padding
    congestion.on_remb(600_000)
    congestion.padding_due()
    now[0] += 0.05
    assert congestion.padding_due() == 600_000 // 8 // 20  # the estimate bounds it
    # what goes out paced (media or padding) uses the budget up
    congestion.pace(3750)
    congestion.padding_sent(3750)
    congestion.on_remb(2_000_000)
    now[0] += 0.05
    assert congestion.padding_due() == 920_000 // 8 // 20  # the padding rate bounds it
    assert congestion.padding_bytes_sent == 3750


def frame(index: int) -> av.VideoFrame:
    image = np.zeros((540, 960, 3), np.uint8)
    image[:, (index * 16) % 960 :][:, :64] = 255
    out = av.VideoFrame.from_ndarray(image, format="bgr24")
    out.pts, out.time_base = index * 3000, fractions.Fraction(1, 90000)
    return out


class Wire:
    def __init__(self) -> None:
        self.packets: list[RtpPacket] = []
        self.changed = asyncio.Event()

    async def send(self, data: bytes) -> bool:
        self.packets.append(RtpPacket.parse(data, extensions_map(EXTENSIONS)))
        self.changed.set()
        return True


def encoder(codec: NegotiatedCodec, layer: SendLayer) -> Any:
    return create_encoder(codec.name, settings=EncoderSettings(bitrate=layer.target_bitrate))


async def feed(sender: RtpSender, source: QueueSource, wire: Wire, start: int, count: int) -> None:
    """``count`` frames, each once every running layer sent the previous one."""
    for index in range(start, start + count):
        running = [x for x in sender.layers if x.active and not x.suspended]
        before = [x.frames_sent for x in running]
        source.queue.put_nowait(frame(index))
        while any(x.frames_sent <= b for x, b in zip(running, before, strict=True)):
            wire.changed.clear()
            await wire.changed.wait()


def is_key(packet: RtpPacket) -> bool:
    descriptor, offset = Vp8PayloadDescriptor.parse(packet.payload)
    return bool(descriptor.start_of_partition) and not packet.payload[offset] & 0x01


async def test_r2_stops_below_its_need_and_resumes_with_a_key_frame() -> None:
    source, wire = QueueSource(), Wire()
    sender = RtpSender(
        kind="video",
        mid="1",
        source=source,
        codec=VP8,
        extensions=EXTENSIONS,
        encodings=LAYERS,
        send=wire.send,
        cname="cname",
        encoder_factory=encoder,
        taken_ssrcs=set(),
    )
    r0, r1, r2 = sender.layers
    sender.start()
    try:
        async with asyncio.timeout(60):
            await feed(sender, source, wire, 0, 5)
            assert all(x.frames_sent == 5 for x in sender.layers)

            # padding (for the estimate to climb back) goes on the top running layer's RTX
            padding = RtpPacket.parse(
                sender.padding_packet(1000) or b"", extensions_map(EXTENSIONS)
            )
            assert (padding.ssrc, padding.payload_type, padding.payload) == (r2.rtx_ssrc, 97, b"")
            assert padding.padding_size == 255

            sender.set_estimate(600_000)  # r2 needs 350 kbps on top of r0 + r1's 500
            assert r2.suspended and not r1.suspended
            assert (r0.target_bitrate, r1.target_bitrate) == (150_000, 450_000)
            assert r2.quality.reason == "bandwidth"
            mark = len(wire.packets)
            await feed(sender, source, wire, 5, 10)
            later = wire.packets[mark:]
            assert {p.ssrc for p in later} == {r0.ssrc, r1.ssrc}  # nothing on r2
            assert r2.frames_sent in (5, 6)  # at most the frame already in its mailbox
            padding = RtpPacket.parse(sender.padding_packet(200) or b"", extensions_map(EXTENSIONS))
            assert padding.ssrc == r1.rtx_ssrc and padding.padding_size == 200

            sender.set_estimate(900_000)  # 900 < 500 + 1.2 x 350: not yet
            assert r2.suspended
            sender.set_estimate(2_000_000)
            assert not r2.suspended and r2.target_bitrate == 1_200_000
            mark = len(wire.packets)
            await feed(sender, source, wire, 15, 5)
            back = [p for p in wire.packets[mark:] if p.ssrc == r2.ssrc]
            assert back and is_key(back[0])  # it comes back with a key frame
            assert r2.frames_sent >= 10
    finally:
        await asyncio.wait_for(sender.stop(), 10)
