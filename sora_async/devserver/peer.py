"""Media plane of the dev server: the server side of one client's WebRTC session.

A ``ServerPeer`` owns one BUNDLE transport (aiortc ICE + DTLS/SRTP + SCTP
objects driven directly, see ``transport.py``), writes Sora-shaped offer SDP
itself (``sdp.py``) and forwards RTP between peers without decoding
(``forwarding.py``). The control plane (``session.py``/``channel.py``) decides
who subscribes to what; this module only does what it is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiortc.rtcdatachannel import RTCDataChannel, RTCDataChannelParameters
from aiortc.rtcdtlstransport import RTCDtlsParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    pack_remb_fci,
)
from aiortc.sdp import SessionDescription
from pyee.asyncio import AsyncIOEventEmitter

from ..rtc.transport import BundleTransport, parse_candidate
from ..rtc.twcc import FeedbackRecorder
from .forwarding import DownstreamCongestion, Egress, Ingress, IngressLayer
from .rtp import parse_rtp
from .sdp import (
    CODECS,
    EXT_RID,
    EXT_TRANSPORT_CC,
    RTX_PAYLOAD_TYPES,
    TRANSPORT_CC_URI,
    UPSTREAM_AUDIO_EXTENSIONS,
    UPSTREAM_VIDEO_EXTENSIONS,
    MediaSection,
    TransportDescription,
    opus_fmtp,
    write_offer,
)

logger = logging.getLogger("sora_async.devserver")

RTCP_INTERVAL = 1.0
#: transport-cc feedback interval (libwebrtc: 50-250 ms)
TWCC_INTERVAL = 0.1
KEYFRAME_REQUESTS = (RTCP_PSFB_PLI, RTCP_PSFB_FIR)
DEFAULT_REMB_BPS = 2_500_000
#: Sora-like wait for the SCTP stream resets when closing DataChannels
DATA_CHANNEL_CLOSE_TIMEOUT = 3.0


@dataclass(frozen=True)
class DataChannelSpec:
    """A server-created DataChannel as it appears in the offer's ``data_channels``.

    ``direction`` is from the client's point of view, as in Sora.
    """

    label: str
    direction: str = "sendrecv"
    compress: bool = False
    ordered: bool | None = None
    max_packet_life_time: int | None = None
    max_retransmits: int | None = None
    protocol: str | None = None
    header: list[dict[str, Any]] | None = None


@dataclass(eq=False)
class Publication:
    """One upstream media stream (audio or video) that a client sends to the server.

    Other peers subscribe to it; its stream id in their SDP is the publisher's
    connection id (``a=msid:<connection_id> <track id>``), as with Sora.
    """

    connection_id: str
    kind: str  # "audio" | "video"
    codec: str  # "OPUS", "VP8", "VP9", "AV1", "H264", "H265"
    track_id: str
    rids: list[str] = field(default_factory=list)  # ["r0","r1","r2"] when simulcast
    _ingress: Ingress | None = field(default=None, repr=False)

    def request_keyframe(self, rid: str | None = None) -> None:
        """Send PLI upstream for one layer (``rid``) or for every layer."""
        if self._ingress is not None:
            _spawn(self._ingress.request_keyframe(rid))

    @property
    def closed(self) -> bool:
        return self._ingress is None or self._ingress.closed


@dataclass(eq=False)
class _Subscription:
    publication: Publication
    section: MediaSection
    egress: Egress


def _spawn(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    task.add_done_callback(_log_task_error)


def _log_task_error(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("background task failed", exc_info=task.exception())


class ServerPeer(AsyncIOEventEmitter):
    """Server side of one client's session.

    Events (pyee):
      ``"connectionstatechange"(state)``: "connecting" | "connected" | "failed" | "closed"
      ``"datachannel_open"(label)``, ``"datachannel_close"(label)``
      ``"datachannel_message"(label, data: bytes | str)``
      ``"publication"(Publication)``: upstream media of this client became available
    """

    def __init__(
        self,
        *,
        connection_id: str,
        send_audio: bool,
        send_video: bool,
        recv_audio: bool,
        recv_video: bool,
        audio_codec: str = "OPUS",
        video_codec: str = "VP9",
        video_bit_rate: int | None = None,  # kbps, caps REMB we send upstream
        simulcast: bool = False,
        encodings: list[dict[str, Any]] | None = None,
        data_channels: Sequence[DataChannelSpec] = (),
        audio_opus_params: dict[str, Any] | None = None,
        ice_addresses: Sequence[str] | None = ("127.0.0.1",),
        connect_timeout: float = 30.0,
        transport_cc: bool = False,
    ) -> None:
        super().__init__()
        if video_codec not in CODECS or video_codec == "OPUS":
            raise ValueError(f"unsupported video codec {video_codec!r}")
        if audio_codec != "OPUS":
            raise ValueError(f"unsupported audio codec {audio_codec!r}")
        self.connection_id = connection_id
        self.send_audio, self.send_video = send_audio, send_video
        self.recv_audio, self.recv_video = recv_audio, recv_video
        self.audio_codec, self.video_codec = audio_codec, video_codec
        self.video_bit_rate = video_bit_rate
        self.simulcast = simulcast and send_video and bool(encodings)
        self.encodings = list(encodings or [])
        self.data_channel_specs = list(data_channels)
        self.audio_opus_params = audio_opus_params
        self.connect_timeout = connect_timeout
        self.state = "new"
        #: transport-cc on the client's upstream: offered, and fed back every 100 ms
        self.transport_cc = transport_cc
        self._twcc = FeedbackRecorder() if transport_cc else None
        #: transport-cc toward the client: forwarded packets stamped where its answer
        #: kept the extension, its feedback read
        self.downstream = DownstreamCongestion() if transport_cc else None

        self.mids: dict[str, str] = {}
        self.publications: list[Publication] = []
        self._sections: list[MediaSection] = []
        self._subscriptions: dict[str, _Subscription] = {}  # mid -> subscription
        self._own_ingress: dict[str, Ingress] = {}  # mid -> ingress of the client's media
        self._ingress_by_pt: dict[int, Ingress] = {}
        self._layer_by_ssrc: dict[int, tuple[Ingress, IngressLayer]] = {}
        self._egress_by_ssrc: dict[int, Egress] = {}
        self._next_mid = 0
        self._sdp_session_id = random.randint(1, 2**62)
        self._sdp_version = 0
        self._rtcp_ssrc = random.randint(1, 0xFFFFFFFF)
        self._cname = secrets.token_hex(8)
        self._default_rid = "r0"  # Sora delivers r0 when nothing was asked (CPP:issue/0085)
        self._rid_by_publisher: dict[str, str] = {}
        self._channels: dict[str, RTCDataChannel] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

        self._transport = BundleTransport(
            ice_addresses=list(ice_addresses) if ice_addresses is not None else None,
            on_state=self._on_transport_state,
        )
        self._transport.dtls.rtp_handler = self._handle_rtp
        self._transport.dtls.rtcp_handler = self._handle_rtcp

    # --- offer / answer -------------------------------------------------

    async def create_offer(self, subscriptions: Sequence[Publication]) -> str:
        """Gather, then return the initial offer SDP (recv m-lines for the client's own
        media, one send m-line per subscription, and m=application when there are
        data channels)."""
        await self._transport.gather()
        if self.send_audio:
            self.mids["audio"] = self._add_upstream_section("audio")
        if self.send_video:
            self.mids["video"] = self._add_upstream_section("video")
        if self.data_channel_specs:
            self._sections.append(MediaSection(kind="application", mid=self._new_mid()))
        self._update_subscriptions(subscriptions)
        if not self._sections:
            # A recvonly joining an empty channel still needs an m-line to carry
            # ICE/DTLS, or its peer connection can never connect. Later re-offers
            # recycle this inactive slot for the first subscription.
            self._sections.append(
                MediaSection(
                    kind="audio",
                    mid=self._new_mid(),
                    direction="inactive",
                    codec=CODECS["OPUS"],
                    placeholder=True,
                )
            )
        return self._write()

    async def create_reoffer(self, subscriptions: Sequence[Publication]) -> str:
        """Offer SDP for a new subscription set: kept streams keep their mid, removed
        ones go to port 0, retired mids are reused for new ones (as Sora does)."""
        self._update_subscriptions(subscriptions)
        return self._write()

    def _write(self) -> str:
        self._sdp_version += 1
        transport = TransportDescription(
            ice=self._transport.local_ice,
            fingerprints=self._transport.local_dtls.fingerprints,
            candidates=self._transport.local_candidates,
        )
        return write_offer(
            self._sections, transport, session_id=self._sdp_session_id, version=self._sdp_version
        )

    def _new_mid(self) -> str:
        mid = str(self._next_mid)
        self._next_mid += 1
        return mid

    def _add_upstream_section(self, kind: str) -> str:
        mid = self._new_mid()
        if kind == "audio":
            codec = CODECS[self.audio_codec]
            section = MediaSection(
                kind="audio",
                mid=mid,
                direction="recvonly",
                codec=codec,
                extensions=UPSTREAM_AUDIO_EXTENSIONS + self._twcc_extension(),
                fmtp=opus_fmtp(self.audio_opus_params),
                transport_cc=self.transport_cc,
            )
        else:
            codec = CODECS[self.video_codec]
            rids: list[tuple[str, bool]] = []
            if self.simulcast:
                rids = [(str(e["rid"]), bool(e.get("active", True))) for e in self.encodings]
            section = MediaSection(
                kind="video",
                mid=mid,
                direction="recvonly",
                codec=codec,
                extensions=UPSTREAM_VIDEO_EXTENSIONS + self._twcc_extension(),
                rids=rids,
                transport_cc=self.transport_cc,
            )
        self._sections.append(section)
        return mid

    def _twcc_extension(self) -> tuple[tuple[int, str], ...]:
        return ((EXT_TRANSPORT_CC, TRANSPORT_CC_URI),) if self.transport_cc else ()

    def _update_subscriptions(self, publications: Sequence[Publication]) -> None:
        wanted = [
            p
            for p in publications
            if p.connection_id != self.connection_id
            and (self.recv_audio if p.kind == "audio" else self.recv_video)
        ]
        wanted_ids = {id(p) for p in wanted}
        # retire m-lines of publications that are gone (port 0, as Sora does)
        for mid, sub in list(self._subscriptions.items()):
            if id(sub.publication) not in wanted_ids or sub.publication.closed:
                if sub.section is self._sections[0]:
                    # The first m-line tags the BUNDLE transport: rejecting it
                    # (or every m-line) makes libwebrtc tear the transport down
                    # (RFC 8843 §7.3.3), so it goes inactive instead.
                    sub.section.placeholder = True
                    sub.section.direction = "inactive"
                    sub.section.ssrc = None
                    sub.section.stream_id = None
                else:
                    sub.section.rejected = True
                sub.egress.detach()
                self._egress_by_ssrc.pop(sub.egress.ssrc, None)
                del self._subscriptions[mid]
        present = {id(s.publication) for s in self._subscriptions.values()}
        for publication in wanted:
            if id(publication) in present or publication.closed:
                continue
            self._add_subscription(publication)

    def _add_subscription(self, publication: Publication) -> None:
        assert publication._ingress is not None
        codec = publication._ingress.codec
        ssrc = self._new_ssrc()
        section = self._reusable_section(publication.kind)
        if section is None:
            section = MediaSection(kind=publication.kind, mid=self._new_mid())
            self._sections.append(section)
        section.direction = "sendonly"
        section.codec = codec
        section.rejected = False
        section.placeholder = False
        section.ssrc = ssrc
        section.stream_id = publication.connection_id
        section.track_id = publication.track_id
        section.cname = publication.connection_id
        section.extensions = self._twcc_extension()
        section.transport_cc = self.transport_cc
        section.rids = ()
        section.fmtp = None
        egress = Egress(
            ingress=publication._ingress,
            ssrc=ssrc,
            payload_type=codec.payload_type,
            send=self._send_downstream,
            on_switch=functools.partial(self._layer_switched, publication.connection_id),
        )
        egress.want(self._rid_by_publisher.get(publication.connection_id, self._default_rid))
        self._subscriptions[section.mid] = _Subscription(publication, section, egress)
        self._egress_by_ssrc[ssrc] = egress

    def _reusable_section(self, kind: str) -> MediaSection | None:
        # Sora recycles retired m-lines (and their mids) for new streams of the
        # same kind, so clients must cope with a mid coming back (JS:base).
        for section in self._sections:
            if (section.rejected or section.placeholder) and section.kind == kind:
                return section
        return None

    def _new_ssrc(self) -> int:
        while True:
            ssrc = random.randint(1, 0xFFFFFFFF)
            if ssrc not in self._egress_by_ssrc and ssrc != self._rtcp_ssrc:
                return ssrc

    async def set_answer(self, sdp: str) -> None:
        """Apply the client's answer; starts ICE, DTLS and (if any) SCTP."""
        description = SessionDescription.parse(sdp)
        transport_media = next((m for m in description.media if m.port != 0), None)
        if transport_media is None and description.media:
            # libwebrtc answers an inactive m-line with port 0 at times; the
            # transport parameters are still there.
            transport_media = description.media[0]
        if transport_media is None or transport_media.ice is None or transport_media.dtls is None:
            raise ValueError("answer has no usable m-line")
        candidates = [c for m in description.media for c in m.ice_candidates]
        remote_dtls = RTCDtlsParameters(
            fingerprints=transport_media.dtls.fingerprints, role=transport_media.dtls.role
        )
        # a=setup:active in the answer makes the client the DTLS client (RFC 8842)
        dtls_role = "client" if transport_media.dtls.role == "server" else "server"
        app = next((m for m in description.media if m.kind == "application" and m.port != 0), None)
        self._apply_answer_media(description)
        if app is not None and self.data_channel_specs:
            max_size = app.sctpCapabilities.maxMessageSize if app.sctpCapabilities else None
            self._transport.start(
                transport_media.ice,
                remote_dtls,
                candidates,
                dtls_role=dtls_role,
                sctp_port=app.sctp_port or 5000,
                sctp_max_message_size=max_size,
            )
            self._create_data_channels()
        else:
            self._transport.start(
                transport_media.ice,
                remote_dtls,
                candidates,
                dtls_role=dtls_role,
                sctp_port=None,
                sctp_max_message_size=None,
            )
        self._start_task(self._rtcp_loop())
        if self._twcc is not None:
            self._start_task(self._twcc_loop(self._twcc))
        self._start_task(self._connect_deadline())

    async def set_reanswer(self, sdp: str) -> None:
        """Apply the client's re-answer; starts forwarding to new subscriptions and
        asks their publishers for a key frame."""
        self._apply_answer_media(SessionDescription.parse(sdp))

    def _apply_answer_media(self, description: SessionDescription) -> None:
        by_mid = {m.rtp.muxId: m for m in description.media if m.rtp.muxId}
        for kind, mid in self.mids.items():
            if mid in self._own_ingress:
                continue
            media = by_mid.get(mid)
            if media is None or media.port == 0 or media.direction not in ("sendonly", "sendrecv"):
                continue
            self._publish(kind, mid)
        for mid, sub in self._subscriptions.items():
            media = by_mid.get(mid)
            accepted = (
                media is not None
                and media.port != 0
                and media.direction in ("recvonly", "sendrecv")
            )
            if accepted and self.downstream is not None and media is not None:
                extension = next(
                    (e.id for e in media.rtp.headerExtensions if e.uri == TRANSPORT_CC_URI), None
                )
                if extension is not None:
                    self.downstream.extension_id = extension
            if accepted and not sub.egress.active:
                sub.egress.attach()
                sub.publication.request_keyframe(
                    sub.egress.wanted_rid if sub.publication.rids else None
                )

    def _publish(self, kind: str, mid: str) -> None:
        codec = CODECS[self.audio_codec if kind == "audio" else self.video_codec]
        rids = [str(e["rid"]) for e in self.encodings] if kind == "video" and self.simulcast else []
        ingress = Ingress(
            kind=kind,
            codec=codec,
            rids=rids,
            send_rtcp=self._transport.dtls.send_rtp,
            rtcp_ssrc=self._rtcp_ssrc,
        )
        self._own_ingress[mid] = ingress
        self._ingress_by_pt[codec.payload_type] = ingress
        publication = Publication(
            connection_id=self.connection_id,
            kind=kind,
            codec=codec.name,
            track_id=secrets.token_hex(8),
            rids=rids,
            _ingress=ingress,
        )
        self.publications.append(publication)
        self.emit("publication", publication)

    def add_ice_candidate(self, candidate: str) -> None:
        """Add a trickled remote candidate (``candidate:...``, ``a=`` prefix tolerated)."""
        if not candidate.strip():
            return
        parsed = parse_candidate(candidate)
        self._start_task(self._transport.add_remote_candidate(parsed))

    # --- data channels --------------------------------------------------

    def _create_data_channels(self) -> None:
        sctp = self._transport.sctp
        assert sctp is not None
        for spec in self.data_channel_specs:
            channel = RTCDataChannel(
                sctp,
                RTCDataChannelParameters(
                    label=spec.label,
                    ordered=True if spec.ordered is None else spec.ordered,
                    maxPacketLifeTime=spec.max_packet_life_time,
                    maxRetransmits=spec.max_retransmits,
                    protocol=spec.protocol or "",
                ),
            )
            self._channels[spec.label] = channel
            self._watch_channel(spec.label, channel)

    def _watch_channel(self, label: str, channel: RTCDataChannel) -> None:
        @channel.on("open")
        def _on_open() -> None:
            self.emit("datachannel_open", label)

        @channel.on("message")
        def _on_message(message: bytes | str) -> None:
            self.emit("datachannel_message", label, message)

        @channel.on("close")
        def _on_close() -> None:
            self.emit("datachannel_close", label)

    def send_data(self, label: str, data: bytes | str) -> bool:
        """Send on an open server-created DataChannel; False if it is not open."""
        channel = self._channels.get(label)
        if channel is None or channel.readyState != "open":
            return False
        try:
            channel.send(data)
        except Exception as exc:  # aiortc raises on oversized or closing channels
            logger.debug("send on %s failed: %r", label, exc)
            return False
        return True

    async def close_data_channels(self) -> None:
        """Close every DataChannel (SCTP stream reset), as Sora does on disconnect."""
        channels = [c for c in self._channels.values() if c.readyState in ("connecting", "open")]
        if not channels:
            return
        closed = asyncio.Event()

        def _check() -> None:
            if all(c.readyState == "closed" for c in channels):
                closed.set()

        for channel in channels:
            channel.on("close", _check)
            channel.close()
        _check()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DATA_CHANNEL_CLOSE_TIMEOUT):
                await closed.wait()

    # --- simulcast / key frames -----------------------------------------

    def set_simulcast_rid(self, publisher_connection_id: str | None, rid: str) -> None:
        """Choose the simulcast layer this client receives ("r0".."r2", or "none"
        to stop video) from one publisher, or from all when None. Switches on the
        next key frame of the new layer."""
        if rid not in ("none", "r0", "r1", "r2"):
            raise ValueError(f"invalid rid {rid!r}")
        if publisher_connection_id is None:
            self._default_rid = rid
            self._rid_by_publisher.clear()
        else:
            self._rid_by_publisher[publisher_connection_id] = rid
        for sub in self._subscriptions.values():
            if sub.publication.kind != "video":
                continue
            if publisher_connection_id not in (None, sub.publication.connection_id):
                continue
            previous = sub.egress.wanted_rid
            sub.egress.want(rid)
            if sub.egress.wanted_rid != previous and rid != "none":
                sub.publication.request_keyframe(rid if sub.publication.rids else None)

    def forwarded_rid(self, publisher_connection_id: str) -> str | None:
        """The simulcast layer now forwarded to this client from a publisher."""
        for sub in self._subscriptions.values():
            if sub.publication.kind == "video" and (
                sub.publication.connection_id == publisher_connection_id
            ):
                return sub.egress.forwarded_rid
        return None

    def _layer_switched(self, publisher_connection_id: str, previous: str, current: str) -> None:
        self.emit("simulcast_switched", publisher_connection_id, previous, current)

    def request_keyframe(self, rid: str | None = None) -> None:
        """Ask this client (as a sender) for a key frame."""
        for ingress in self._own_ingress.values():
            _spawn(ingress.request_keyframe(rid))

    # --- RTP / RTCP -----------------------------------------------------

    async def _handle_rtp(self, data: bytes, arrival_ms: int) -> None:
        try:
            header = parse_rtp(data)
        except ValueError:
            return
        if self._twcc is not None:
            sequence = header.extensions.get(EXT_TRANSPORT_CC)
            if sequence is not None and len(sequence) == 2:
                arrival_us = int(time.monotonic() * 1e6)
                self._twcc.record(int.from_bytes(sequence, "big"), arrival_us, header.ssrc)
        known = self._layer_by_ssrc.get(header.ssrc)
        if known is not None:
            await known[0].handle_rtp(known[1], data, header, arrival_ms)
            return
        if header.payload_type in RTX_PAYLOAD_TYPES:
            return  # retransmissions/padding: the forwarder does not NACK upstream
        ingress = self._ingress_by_pt.get(header.payload_type)
        if ingress is None:
            return
        rid_bytes = header.extensions.get(EXT_RID)
        rid = rid_bytes.decode("ascii", "replace") if rid_bytes else None
        layer = ingress.layer_for(rid)
        if layer is None:
            return  # simulcast packet before its RID was seen
        layer.ssrc = header.ssrc
        self._layer_by_ssrc[header.ssrc] = (ingress, layer)
        await ingress.handle_rtp(layer, data, header, arrival_ms)

    async def _send_downstream(self, data: bytes) -> bool:
        if self.downstream is not None:
            data = self.downstream.stamp(data)
        dtls = self._transport.dtls
        sent = dtls.send_rtp_now(data)  # no coroutine chain per packet and subscriber
        if sent is None:
            return await dtls.send_rtp(data)
        return sent

    async def _handle_rtcp(self, data: bytes) -> None:
        if self.downstream is not None:
            data = self.downstream.on_rtcp(data)
            if not data:
                return
        try:
            packets = RtcpPacket.parse(data)
        except ValueError:
            return
        for packet in packets:
            if isinstance(packet, RtcpSrPacket):
                known = self._layer_by_ssrc.get(packet.ssrc)
                if known is not None:
                    layer = known[1]
                    layer.last_sr = (packet.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
                    layer.last_sr_time = time.monotonic()
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                egress = self._egress_by_ssrc.get(packet.media_ssrc)
                if egress is not None:
                    await egress.handle_nack(packet.lost)
            elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in KEYFRAME_REQUESTS:
                for ssrc in self._keyframe_request_targets(packet):
                    egress = self._egress_by_ssrc.get(ssrc)
                    if egress is not None:
                        await egress.handle_keyframe_request()

    @staticmethod
    def _keyframe_request_targets(packet: RtcpPsfbPacket) -> list[int]:
        if packet.fmt == RTCP_PSFB_PLI:
            return [packet.media_ssrc]
        # FIR carries its targets in 8-byte FCI entries (RFC 5104 §4.3.1.1)
        fci = packet.fci
        return [int.from_bytes(fci[i : i + 4], "big") for i in range(0, len(fci) - 7, 8)]

    async def _rtcp_loop(self) -> None:
        # Receiver reports + REMB keep libwebrtc's loss- and REMB-based bandwidth
        # estimate climbing; without them it stays near its 300 kbps start.
        while not self._closed:
            await asyncio.sleep(RTCP_INTERVAL)
            if self._transport.dtls.state != "connected":
                continue
            packets: list[bytes] = []
            reports = [
                r
                for ingress in self._own_ingress.values()
                for layer in ingress.layers.values()
                if (r := layer.receiver_report()) is not None
            ]
            if reports:
                packets.append(bytes(RtcpRrPacket(ssrc=self._rtcp_ssrc, reports=reports[:31])))
            video_ssrcs = [
                layer.ssrc
                for ingress in self._own_ingress.values()
                if ingress.kind == "video"
                for layer in ingress.layers.values()
                if layer.ssrc is not None
            ]
            if video_ssrcs:
                remb = RtcpPsfbPacket(
                    fmt=RTCP_PSFB_APP,
                    ssrc=self._rtcp_ssrc,
                    media_ssrc=0,
                    fci=pack_remb_fci(self._remb_bitrate(), video_ssrcs),
                )
                packets.append(bytes(remb))
            for egress in self._egress_by_ssrc.values():
                report = egress.sender_report(self._rtcp_ssrc)
                if report is not None:
                    packets.append(bytes(report))
            for packet in packets:
                await self._transport.dtls.send_rtp(packet)

    async def _twcc_loop(self, recorder: FeedbackRecorder) -> None:
        # transport-cc feedback (RTPFB FMT 15) for what the client sent, every 100 ms.
        while not self._closed:
            await asyncio.sleep(TWCC_INTERVAL)
            if self._transport.dtls.state != "connected":
                continue
            for packet in recorder.build(self._rtcp_ssrc):
                await self._transport.dtls.send_rtp(packet)

    def _remb_bitrate(self) -> int:
        if self.simulcast:
            total = sum(int(e.get("maxBitrate", 0)) for e in self.encodings)
            if total:
                return total
        if self.video_bit_rate:
            return self.video_bit_rate * 1000
        return DEFAULT_REMB_BPS

    # --- state ----------------------------------------------------------

    def _on_transport_state(self, state: str) -> None:
        if self._closed and state != "closed":
            return
        self.state = state
        if state == "connected":
            # subscribers that were attached before DTLS was up missed the
            # key frame their attach asked for
            for sub in self._subscriptions.values():
                if sub.egress.active:
                    sub.publication.request_keyframe(
                        sub.egress.wanted_rid if sub.publication.rids else None
                    )
        self.emit("connectionstatechange", state)

    async def _connect_deadline(self) -> None:
        await asyncio.sleep(self.connect_timeout)
        if self.state not in ("connected", "closed"):
            logger.info("%s: not connected after %.0f s", self.connection_id, self.connect_timeout)
            self._on_transport_state("failed")

    def _start_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_task_error)

    async def get_stats(self) -> list[dict[str, Any]]:
        """W3C-shaped stats of this server-side session (``timestamp`` in ms)."""
        now = time.time() * 1000
        stats: list[dict[str, Any]] = [
            {
                "id": "T01",
                "type": "transport",
                "timestamp": now,
                "dtlsState": self._transport.dtls.state,
                "iceState": self._transport.ice.state,
            }
        ]
        downstream = self.downstream
        if downstream is not None and downstream.extension_id is not None:
            # transport-cc toward this client (dev server extension, not W3C)
            stats[0]["transportCcPacketsSent"] = downstream.packets_stamped
            stats[0]["transportCcFeedbackReceived"] = downstream.feedback_packets
            stats[0]["transportCcPacketsLost"] = downstream.packets_lost
            if downstream.estimate is not None:
                stats[0]["availableOutgoingBitrate"] = downstream.estimate
        for mid, ingress in self._own_ingress.items():
            for layer in ingress.layers.values():
                if layer.ssrc is None:
                    continue
                entry: dict[str, Any] = {
                    "id": f"IT{layer.ssrc}",
                    "type": "inbound-rtp",
                    "timestamp": now,
                    "ssrc": layer.ssrc,
                    "kind": ingress.kind,
                    "mid": mid,
                    "mimeType": f"{ingress.kind}/{ingress.codec.encoding_name}",
                    "packetsReceived": layer.packets,
                    "bytesReceived": layer.bytes,
                    "keyFramesReceived": layer.keyframes,
                    "jitter": layer.jitter / ingress.codec.clock_rate,
                }
                if layer.rid:
                    entry["rid"] = layer.rid
                stats.append(entry)
        for mid, sub in self._subscriptions.items():
            egress = sub.egress
            stats.append(
                {
                    "id": f"OT{egress.ssrc}",
                    "type": "outbound-rtp",
                    "timestamp": now,
                    "ssrc": egress.ssrc,
                    "kind": egress.kind,
                    "mid": mid,
                    "mimeType": f"{egress.kind}/{egress.ingress.codec.encoding_name}",
                    "packetsSent": egress.packets_sent,
                    "bytesSent": egress.bytes_sent,
                    "nackCount": egress.nacks,
                    "pliCount": egress.plis,
                    "retransmittedPacketsSent": egress.retransmitted,
                    "senderConnectionId": sub.publication.connection_id,
                    "rid": egress.source.rid if egress.source is not None else None,
                }
            )
        for label, channel in self._channels.items():
            stats.append(
                {
                    "id": f"D{channel.id}",
                    "type": "data-channel",
                    "timestamp": now,
                    "label": label,
                    "state": channel.readyState,
                }
            )
        return [{k: v for k, v in s.items() if v is not None} for s in stats]

    async def close(self) -> None:
        """Stop forwarding, close DataChannels, SCTP, DTLS and ICE. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for ingress in self._own_ingress.values():
            ingress.close()
        for sub in self._subscriptions.values():
            sub.egress.detach()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for channel in self._channels.values():
            channel.close()
        await self._transport.stop()
        if self.state != "closed":
            self.state = "closed"
            self.emit("connectionstatechange", "closed")
        self.remove_all_listeners()
