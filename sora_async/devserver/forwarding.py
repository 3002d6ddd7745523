"""SFU forwarding: upstream streams (ingress) fanned out to subscribers (egress).

Nothing is decoded. Each upstream RTP stream is an ``IngressLayer`` (one per
simulcast rid, or one for a plain stream); each subscriber m-line is an
``Egress`` that picks one layer, switches layers only at a key frame of the
new layer, and rewrites SSRC / payload type / sequence / timestamp so the
subscriber sees one continuous stream. NACKs are answered from a per-egress
history; PLI/FIR go upstream to the layer being forwarded.
"""

from __future__ import annotations

import collections
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiortc import clock
from aiortc.rtp import (
    RTCP_PSFB_PLI,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpSenderInfo,
    RtcpSrPacket,
)

from ..codecs.registry import create_depacketizer
from ..rtc.congestion import BandwidthEstimator
from ..rtc.twcc import PacketResult, SendHistory, is_rtcp, parse_feedback, split_compound
from .rtp import RtpHeader, add_transport_sequence, payload, rewrite_rtp, seq_newer
from .sdp import CodecSpec

logger = logging.getLogger("sora_async.devserver")

SendPacket = Callable[[bytes], Awaitable[bool]]

#: Retransmission history per egress stream; 512 packets is ~1 s of 4 Mbps video.
HISTORY_SIZE = 512
#: libwebrtc ignores key-frame requests that follow each other too closely
#: (official-client-notes.md "Key frames"); coalesce requests within this window.
KEYFRAME_REQUEST_INTERVAL = 0.3
#: a simulcast layer counts as sent if a packet came within this window
LAYER_ACTIVE_WINDOW = 1.0
#: how long a subscriber waits for the layer it wants before a lower one is
#: forwarded instead. Without the delay, the key frames libwebrtc sends on every
#: layer at once (r0 first) would switch r0 -> r1 -> r2 within one burst and
#: leave partial frames in the stream that keep the decoder on the wrong size.
FALLBACK_DELAY = 2.0


@dataclass(eq=False)
class IngressLayer:
    """One upstream RTP stream: a simulcast rid, or ``""`` for a plain stream."""

    rid: str
    codec: CodecSpec
    kind: str
    ssrc: int | None = None
    packets: int = 0
    bytes: int = 0
    keyframes: int = 0
    # receiver-report state (RFC 3550 A.3, A.8)
    base_seq: int | None = None
    max_seq: int = 0
    cycles: int = 0
    expected_prior: int = 0
    received_prior: int = 0
    jitter: float = 0.0
    last_transit: int | None = None
    last_sr: int = 0  # middle 32 bits of the last SR's NTP timestamp
    last_sr_time: float = 0.0
    last_keyframe_request: float = 0.0
    last_packet_time: float = 0.0

    def observe(self, header: RtpHeader, size: int, arrival_ms: int) -> None:
        self.last_packet_time = time.monotonic()
        self.packets += 1
        self.bytes += size
        seq = header.sequence_number
        if self.base_seq is None:
            self.base_seq = seq
            self.max_seq = seq
        elif seq_newer(seq, self.max_seq):
            if seq < self.max_seq:
                self.cycles += 1 << 16
            self.max_seq = seq
        arrival = arrival_ms * self.codec.clock_rate // 1000
        transit = arrival - header.timestamp
        if self.last_transit is not None:
            delta = abs(transit - self.last_transit)
            self.jitter += (delta - self.jitter) / 16
        self.last_transit = transit

    def receiver_report(self) -> RtcpReceiverInfo | None:
        if self.ssrc is None or self.base_seq is None:
            return None
        extended_max = self.cycles + self.max_seq
        expected = extended_max - self.base_seq + 1
        lost = max(0, expected - self.packets)
        expected_interval = expected - self.expected_prior
        received_interval = self.packets - self.received_prior
        self.expected_prior, self.received_prior = expected, self.packets
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        dlsr = 0
        if self.last_sr_time:
            dlsr = int((time.monotonic() - self.last_sr_time) * 65536)
        return RtcpReceiverInfo(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            packets_lost=min(lost, 0x7FFFFF),
            highest_sequence=extended_max & 0xFFFFFFFF,
            jitter=int(self.jitter),
            lsr=self.last_sr,
            dlsr=dlsr,
        )


class Ingress:
    """The upstream side of one publication (one kind of one publisher)."""

    def __init__(
        self,
        *,
        kind: str,
        codec: CodecSpec,
        rids: list[str],
        send_rtcp: SendPacket,
        rtcp_ssrc: int,
    ) -> None:
        self.kind = kind
        self.codec = codec
        self.layers: dict[str, IngressLayer] = {
            rid: IngressLayer(rid, codec, kind) for rid in (rids or [""])
        }
        self.egresses: set[Egress] = set()
        # key frames are told from the payload descriptor (VP8/VP9/AV1) or NAL
        # types (H.264/H.265); the codec layer owns those formats
        self._is_keyframe_start = (
            create_depacketizer(codec.name).is_keyframe_start if kind == "video" else None
        )
        self._send_rtcp = send_rtcp
        self._rtcp_ssrc = rtcp_ssrc
        self.closed = False

    @property
    def simulcast(self) -> bool:
        return "" not in self.layers

    def layer_active(self, rid: str) -> bool:
        layer = self.layers.get(rid)
        return layer is not None and time.monotonic() - layer.last_packet_time < LAYER_ACTIVE_WINDOW

    def fallback_rid(self, wanted: str) -> str:
        """The best layer sent below ``wanted`` (else the lowest sent), when
        ``wanted`` itself is not being sent: libwebrtc sends fewer layers than
        offered for small sources (two at 640x360)."""
        active = [rid for rid in self.layers if self.layer_active(rid)]
        if not active:
            return wanted
        lower = [rid for rid in active if rid < wanted]
        return max(lower) if lower else min(active)

    def layer_for(self, rid: str | None) -> IngressLayer | None:
        if not self.simulcast:
            return self.layers[""]
        if rid is None:
            return None
        return self.layers.get(rid)

    async def handle_rtp(
        self, layer: IngressLayer, data: bytes, header: RtpHeader, arrival_ms: int
    ) -> None:
        layer.observe(header, len(data), arrival_ms)
        keyframe = self._is_keyframe_start is not None and self._is_keyframe_start(
            payload(data, header)
        )
        if keyframe:
            layer.keyframes += 1
        for egress in list(self.egresses):
            await egress.forward(layer, data, header, keyframe)

    async def request_keyframe(self, rid: str | None = None) -> None:
        """PLI upstream for one layer, or for all layers when ``rid`` is None."""
        if self.kind != "video" or self.closed:
            return
        now = time.monotonic()
        for layer in self.layers.values():
            if rid is not None and layer.rid != rid:
                continue
            if layer.ssrc is None or now - layer.last_keyframe_request < KEYFRAME_REQUEST_INTERVAL:
                continue
            layer.last_keyframe_request = now
            pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self._rtcp_ssrc, media_ssrc=layer.ssrc)
            await self._send_rtcp(bytes(pli))

    def close(self) -> None:
        self.closed = True
        for egress in list(self.egresses):
            egress.detach()


@dataclass(eq=False)
class Egress:
    """One subscriber m-line fed from one ingress."""

    ingress: Ingress
    ssrc: int
    payload_type: int
    send: SendPacket
    #: the layer this subscriber wants: a rid, "" for a plain stream, "none" for nothing
    wanted_rid: str = ""
    source: IngressLayer | None = None
    source_ssrc: int | None = None
    first_in_seq: int = 0
    seq_offset: int = 0
    ts_offset: int = 0
    next_out_seq: int = field(default_factory=lambda: random.randint(0, 0x7FFF))
    last_out_ts: int | None = None
    last_out_time: float = 0.0
    packets_sent: int = 0
    bytes_sent: int = 0
    nacks: int = 0
    plis: int = 0
    retransmitted: int = 0
    history: dict[int, bytes] = field(default_factory=dict)
    active: bool = False
    wanted_since: float = 0.0
    #: ``on_switch(previous_rid, current_rid)``: the forwarded layer changed
    #: (at a key frame of the new one; not called for the first layer)
    on_switch: Callable[[str, str], None] | None = None

    def attach(self) -> None:
        self.ingress.egresses.add(self)
        self.active = True
        self.wanted_since = time.monotonic()

    def detach(self) -> None:
        self.ingress.egresses.discard(self)
        self.active = False

    @property
    def kind(self) -> str:
        return self.ingress.kind

    def want(self, rid: str) -> None:
        """Choose the layer to receive; the switch happens at its next key frame."""
        wanted = rid if self.ingress.simulcast else ("none" if rid == "none" else "")
        if wanted != self.wanted_rid:
            self.wanted_rid = wanted
            self.wanted_since = time.monotonic()

    def target_rid(self) -> str:
        """The layer to forward now: the wanted one, or a fallback once it has
        been missing for ``FALLBACK_DELAY``."""
        wanted = self.wanted_rid
        if not self.ingress.simulcast or wanted == "none" or self.ingress.layer_active(wanted):
            return wanted
        if time.monotonic() - self.wanted_since < FALLBACK_DELAY:
            return wanted
        return self.ingress.fallback_rid(wanted)

    async def forward(
        self, layer: IngressLayer, data: bytes, header: RtpHeader, keyframe: bool
    ) -> None:
        if not self.active or self.wanted_rid == "none":
            return
        if header.ssrc != self.source_ssrc:
            if layer.rid != self.target_rid():
                return
            if not keyframe and self.kind == "video":
                # waiting to switch: make sure a key frame is on its way
                await self.ingress.request_keyframe(layer.rid if layer.rid else None)
                return
            self._switch_to(layer, header)
        elif not seq_newer(header.sequence_number, self.first_in_seq) and (
            header.sequence_number != self.first_in_seq
        ):
            return  # reordered packet from before the switch point
        out_seq = (header.sequence_number + self.seq_offset) & 0xFFFF
        out_ts = (header.timestamp + self.ts_offset) & 0xFFFFFFFF
        packet = rewrite_rtp(
            data,
            header,
            ssrc=self.ssrc,
            payload_type=self.payload_type,
            sequence_number=out_seq,
            timestamp=out_ts,
        )
        if seq_newer((out_seq + 1) & 0xFFFF, self.next_out_seq):
            self.next_out_seq = (out_seq + 1) & 0xFFFF
        self.last_out_ts = out_ts
        self.last_out_time = time.monotonic()
        self.history[out_seq] = packet
        self.history.pop((out_seq - HISTORY_SIZE) & 0xFFFF, None)
        if await self.send(packet):
            self.packets_sent += 1
            self.bytes_sent += len(packet)

    @property
    def forwarded_rid(self) -> str | None:
        """The layer being forwarded (None before the first one)."""
        return self.source.rid if self.source is not None else None

    def _switch_to(self, layer: IngressLayer, header: RtpHeader) -> None:
        previous = self.forwarded_rid
        if previous is not None:
            logger.debug("egress %d: layer %r -> %r", self.ssrc, previous, layer.rid)
        self.source = layer
        self.source_ssrc = header.ssrc
        self.first_in_seq = header.sequence_number
        self.seq_offset = (self.next_out_seq - header.sequence_number) & 0xFFFF
        if self.last_out_ts is None:
            self.ts_offset = 0
        else:
            # keep the timestamp running across the switch: layers have
            # unrelated random timestamp bases (RFC 3550 §5.1)
            elapsed = max(1, int((time.monotonic() - self.last_out_time) * layer.codec.clock_rate))
            self.ts_offset = (self.last_out_ts + elapsed - header.timestamp) & 0xFFFFFFFF
        # history of the old layer is useless for NACKs of the new one
        self.history.clear()
        if previous is not None and previous != layer.rid and self.on_switch is not None:
            self.on_switch(previous, layer.rid)

    async def handle_nack(self, lost: list[int]) -> None:
        self.nacks += 1
        for seq in lost:
            packet = self.history.get(seq)
            if packet is not None and await self.send(packet):
                self.retransmitted += 1

    async def handle_keyframe_request(self) -> None:
        self.plis += 1
        rid = self.source.rid if self.source is not None else self.wanted_rid
        await self.ingress.request_keyframe(rid if self.ingress.simulcast else None)

    def sender_report(self, rtcp_ssrc: int) -> RtcpSrPacket | None:
        if self.last_out_ts is None:
            return None
        clock_rate = self.ingress.codec.clock_rate
        elapsed = int((time.monotonic() - self.last_out_time) * clock_rate)
        return RtcpSrPacket(
            ssrc=self.ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=clock.current_ntp_time(),
                rtp_timestamp=(self.last_out_ts + elapsed) & 0xFFFFFFFF,
                packet_count=self.packets_sent,
                octet_count=self.bytes_sent,
            ),
        )


class DownstreamCongestion:
    """transport-cc toward one subscriber (``DevServer(transport_cc=True)``).

    Where the subscriber's answer kept the transport-wide-cc header extension,
    every RTP packet the server sends it (forwarded media and retransmissions)
    gets the next transport-wide sequence number (:meth:`stamp`), remembered with
    its send time and size; the subscriber's feedback (RTPFB FMT 15) is taken out
    of its RTCP (:meth:`on_rtcp`) and matched with them, counted, and fed to a
    :class:`~sora_async.rtc.congestion.BandwidthEstimator`, whose target is the
    server's estimate of the path to that subscriber (reported in the stats; the
    forwarder does not act on it).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        #: the negotiated extension id; None: not negotiated, packets go unstamped
        self.extension_id: int | None = None
        self.history = SendHistory()
        self.estimator = BandwidthEstimator(2_500_000, clock=clock)
        self.packets_stamped = 0
        self.feedback_packets = 0
        self.packets_acked = 0
        self.packets_lost = 0
        #: the packets the recent feedback reported on (send time, size, arrival)
        self.results: collections.deque[PacketResult] = collections.deque(maxlen=2000)

    @property
    def estimate(self) -> int | None:
        """The delay/loss-based estimate (bps) once feedback came, else None."""
        return self.estimator.target if self.feedback_packets else None

    def stamp(self, data: bytes) -> bytes:
        if self.extension_id is None or len(data) < 12 or is_rtcp(data):
            return data
        sequence = self.history.next(self._clock(), len(data))
        self.packets_stamped += 1
        return add_transport_sequence(data, self.extension_id, sequence)

    def on_rtcp(self, data: bytes) -> bytes:
        """Take transport-cc feedback out of a compound RTCP packet; returns the rest
        (aiortc would read an RTPFB FMT 15 as a NACK)."""
        packets = split_compound(data)
        if not any(_is_transport_feedback(p) for p in packets):
            return data
        rest = bytearray()
        for packet in packets:
            if not _is_transport_feedback(packet):
                rest += packet
                continue
            try:
                feedback = parse_feedback(packet)
            except ValueError as exc:
                logger.debug("bad transport-cc feedback from a subscriber: %s", exc)
                continue
            results = self.history.results(feedback)
            self.feedback_packets += 1
            if not results:
                continue
            self.results.extend(results)
            lost = sum(1 for r in results if r.arrival is None)
            self.packets_lost += lost
            self.packets_acked += len(results) - lost
            self.estimator.on_packet_results(results)
        return bytes(rest)


def _is_transport_feedback(packet: bytes) -> bool:
    return len(packet) > 1 and packet[1] == 205 and packet[0] & 0x1F == 15
