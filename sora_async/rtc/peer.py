"""The client side of one Sora session: :class:`RtcPeer`, what ``Connection`` drives.

Sora always offers; the peer always answers (``sora-protocol.md`` §5.4, §5.6)::

    peer = RtcPeer(RtcOptions(role=Role.SENDRECV, video_source=camera))
    peer.on("track", on_track)                  # RemoteTrack
    peer.on("datachannel", on_channel)          # aiortc RTCDataChannel (Sora creates them)
    peer.on("connectionstatechange", on_state)  # "connecting" | "connected" | "failed" | "closed"
    answer = await peer.apply_offer(offer["sdp"], offer)
    ...
    answer = await peer.apply_reoffer(reoffer["sdp"])
    stats = await peer.get_stats()
    await peer.close()

One :class:`~sora_async.rtc.transport.BundleTransport` carries everything.
Each offered m-section becomes a transceiver slot keyed by mid: the section
named by ``offer["mid"]`` for a kind we have a source for gets an
:class:`~sora_async.rtc.sender.RtpSender` (one layer per simulcast rid), a
section Sora sends on gets an :class:`~sora_async.rtc.receiver.RtpReceiver`
and a ``track`` event. A re-offer is answered from the same slots: kept
mids keep their sender/receiver, port-0 sections are retired (their track
ends), and a mid that comes back with a new stream gets a fresh receiver and
a new ``track`` event. An m-section without a usable codec (registry +
``video_codec_preference``) is rejected alone, with port 0.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiortc.rtcdtlstransport import RTCDtlsFingerprint, RTCDtlsParameters
from aiortc.rtcicetransport import RTCIceCandidate, RTCIceParameters
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    HeaderExtensionsMap,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
    unpack_remb_fci,
)
from aiortc.sdp import candidate_to_sdp
from pyee.asyncio import AsyncIOEventEmitter

from .._aiortc_seam import parse_rtp
from .._media import wake
from ..codecs import opus as opus_codec
from ..codecs.base import CodecUnavailableError, Decoder, Encoder
from ..codecs.h264 import ProfileLevelId
from ..codecs.pyav import EncoderSettings
from ..codecs.registry import create_decoder, create_encoder, find_codec, fmtp_compatible
from ..enums import Role
from ..hwaccel.capability import VideoCodecPreference
from ..hwaccel.types import VideoCodecImplementation, VideoCodecType
from ..transform import send_hook
from . import stats as rtc_stats
from ._workers import random_ssrc
from .congestion import TransportCongestion, simulcast_limits, simulcast_padding
from .pacer import PacedQueue
from .probing import PROBE_DURATION, ProbeCluster
from .receiver import FrameTransform, RemoteTrack, RtpReceiver
from .sdp import (
    EXT_TRANSPORT_CC,
    LocalTransport,
    MediaSection,
    NegotiatedCodec,
    NegotiatedSection,
    OfferedCodec,
    SendStream,
    SessionOffer,
    answer_setup,
    negotiate,
    parse_offer,
    write_answer,
)
from .sender import EncodingParameters, RtpSender, SendLayer
from .transport import BundleTransport, parse_candidate, select_ice_servers

logger = logging.getLogger("sora_async.rtc")

#: How often the RTCP work of a connection runs while a receiver has a NACK to repeat
#: or a key frame to ask for again (``RtpReceiver.wants_ticks``).
TICK_INTERVAL = 0.05
#: The same for a connection that receives video (or audio with NACK) while nothing
#: needs :data:`TICK_INTERVAL`: its transport-cc feedback goes out with the received
#: packets (every ``TransportCongestion.FEEDBACK_INTERVAL``, 100 ms), so the timer is
#: left with the reports, the liveness check and feedback for packets that stopped.
#: A packet that finds work for the short tick wakes the loop at once.
RELAXED_TICK_INTERVAL = 0.25
#: The same for a connection that receives audio only (without NACK): nothing to
#: repeat, and transport-cc feedback every 250 ms, libwebrtc's interval at Opus rates
#: (``RemoteEstimatorProxy``: 5 % of the received rate, within 50-250 ms).
AUDIO_TICK_INTERVAL = 0.25
#: The same for a connection that only sends: its periodic work is the sender
#: reports (:data:`REPORT_INTERVAL`) and the liveness check; feedback and receiver
#: reports apply the estimate as they arrive.
SEND_TICK_INTERVAL = 0.25
#: Padding is sent in bursts this often, in packets of at least this many bytes.
PADDING_INTERVAL = 0.02
PADDING_MIN_BYTES = 100
#: The most padding one packet carries (the padding length is one byte).
PADDING_MAX = 255
#: A probe cluster goes out in bursts this far apart (:meth:`RtcPeer._send_probe`).
PROBE_STEP = 0.005
#: A probe waiting for the first video packet looks again at most this long after.
PROBE_RETRY_MAX = 0.5
REPORT_INTERVAL = 1.0
#: Silence on the transport (not even an ICE consent check; both sides send one
#: every 4-6 s, RFC 7675) after which the session counts as failed. libwebrtc
#: reports "disconnected" after ~5 s and the JS SDK gives up 10 s later; aioice
#: alone would take ~30 s (aiortc-notes.md A.8).
LIVENESS_TIMEOUT = 8.0
#: Layer order Sora's simulcast uses (r0 lowest) and libwebrtc's default scales.
DEFAULT_SIMULCAST_SCALE = {"r0": 4.0, "r1": 2.0, "r2": 1.0}


@dataclass
class RtcOptions:
    """What the engine needs from the connection's options.

    ``ice_addresses`` restricts ICE gathering to those addresses (tests and
    loopback-only setups); ``turn_ssl_context`` makes the ``ssl.SSLContext``
    that verifies ``turns:`` servers (None: the system trust store);
    ``openh264`` is the path of Cisco's library for ``CISCO_OPENH264``. Bit
    rates are in kbps, as in the connect message.
    """

    role: Role = Role.SENDRECV
    audio_source: Any = None
    video_source: Any = None
    video_codec_preference: VideoCodecPreference = field(
        default_factory=VideoCodecPreference.default
    )
    audio_bit_rate: int | None = None
    video_bit_rate: int | None = None
    openh264: str | None = None
    ice_addresses: Sequence[str] | None = None
    turn_ssl_context: Callable[[], ssl.SSLContext] | None = None
    audio_transform: FrameTransform | None = None
    video_transform: FrameTransform | None = None
    #: ``DegradationPreference`` of the video sender (issue 6; None: ``MAINTAIN_FRAMERATE``,
    #: libwebrtc's default)
    degradation_preference: Any = None

    @classmethod
    def from_connection_options(cls, options: Any) -> RtcOptions:
        """From a :class:`~sora_async.options.ConnectionOptions`."""
        return cls(
            role=options.role,
            audio_source=options.audio_track(),
            video_source=options.video_track(),
            video_codec_preference=VideoCodecPreference.coerce(options.video_codec_preference),
            audio_bit_rate=options.audio_bit_rate,
            video_bit_rate=options.video_bit_rate,
            degradation_preference=getattr(options, "degradation_preference", None),
            openh264=getattr(options, "openh264", None),
            turn_ssl_context=getattr(options, "turn_ssl_context", None),
            # issue 7: Connection(*_frame_transformer=) -> the senders' encoded-frame hooks
            audio_transform=send_hook(getattr(options, "audio_frame_transformer", None), "audio"),
            video_transform=send_hook(getattr(options, "video_frame_transformer", None), "video"),
        )


@dataclass
class _Transceiver:
    """What one mid currently carries."""

    mid: str
    kind: str
    negotiated: NegotiatedSection
    sender: RtpSender | None = None
    receiver: RtpReceiver | None = None
    #: (stream id, track id, media SSRCs) of the stream the receiver plays
    stream_key: tuple[Any, ...] | None = None


class RtcPeer(AsyncIOEventEmitter):
    """The answering side of a Sora session (see the module docstring).

    Events: ``connectionstatechange(state)``, ``track(RemoteTrack)``,
    ``datachannel(RTCDataChannel)``.
    """

    def __init__(self, options: RtcOptions | None = None) -> None:
        super().__init__()
        self.options = options or RtcOptions()
        self.connection_state = "new"
        self.transport: BundleTransport | None = None
        self._transceivers: dict[str, _Transceiver] = {}
        self._ssrc_table: dict[int, RtpReceiver] = {}
        self._sender_ssrcs: dict[int, RtpSender] = {}
        self._retired_ssrcs: set[int] = set()
        self._taken_ssrcs: set[int] = set()
        self._rtcp_ssrc = random_ssrc(self._taken_ssrcs)
        self._cname = secrets.token_urlsafe(12)
        self._stream_id = str(uuid.uuid4())
        self._extensions = HeaderExtensionsMap()
        self._session_id = random.randint(1, 2**62)
        self._version = 0
        self._own_mids: dict[str, str] = {}
        self._encodings: list[EncodingParameters] | None = None
        self._audio_bitrate: int | None = None
        self._video_bitrate: int | None = None
        self._sctp_port: int | None = None
        self._sctp_max_message_size: int | None = None
        self._remote_ufrag: str | None = None
        #: retirements of senders/receivers in flight (awaited by close())
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rtcp_task: asyncio.Task[None] | None = None
        #: The RTCP loop's sleep while it is longer than TICK_INTERVAL (see _wake_ticks).
        self._tick_waiter: asyncio.Future[None] | None = None
        self._padding_task: asyncio.Task[None] | None = None
        self._padding_wanted = asyncio.Event()
        self._closed = False
        self._negotiating = asyncio.Lock()
        #: transport-cc / REMB estimation, pacing (issue 6; :mod:`.congestion`)
        self.congestion = TransportCongestion()
        #: video packets waiting for their pacer slot
        self._paced = PacedQueue(self._send_paced)

    # --- public ----------------------------------------------------------------------

    @property
    def senders(self) -> list[RtpSender]:
        return [t.sender for t in self._transceivers.values() if t.sender is not None]

    @property
    def receivers(self) -> list[RtpReceiver]:
        return [t.receiver for t in self._transceivers.values() if t.receiver is not None]

    @property
    def tracks(self) -> list[RemoteTrack]:
        """The remote tracks being received now."""
        return [r.track for r in self.receivers]

    async def apply_offer(self, offer_sdp: str, offer_message: Mapping[str, Any]) -> str:
        """Apply Sora's ``offer``; returns the answer SDP (with our candidates).

        Starts ICE/DTLS/SCTP in the background; ``connectionstatechange``
        reports the outcome. Raises ``ValueError``/``CodecUnavailableError``
        when the offer cannot be answered at all (a recvonly client whose
        ``video_codec_preference`` cannot decode the channel's codec).
        """
        async with self._negotiating:
            if self._closed:
                raise RuntimeError("the peer is closed")
            if self.transport is not None:
                raise RuntimeError("apply_offer() was already called; use apply_reoffer()")
            offer = parse_offer(offer_sdp)
            self._check_video_codec(offer_message)
            self._read_offer_message(offer_message)
            servers, policy = select_ice_servers(offer_message.get("config"))
            make_tls = self.options.turn_ssl_context
            turns = any(str(server.urls).startswith("turns:") for server in servers)
            # The answerer is ICE-controlled unless the offerer is ICE-lite (RFC 8445 §6.1.1).
            transport = BundleTransport(
                ice_controlling=offer.ice_lite,
                ice_servers=servers,
                ice_transport_policy=policy,
                turn_ssl_context=make_tls() if make_tls is not None and turns else None,
                ice_addresses=self.options.ice_addresses,
                on_state=self._on_transport_state,
            )
            transport.dtls.rtp_handler = self._handle_rtp
            transport.dtls.rtcp_handler = self._handle_rtcp
            self.transport = transport
            await transport.gather()
            if self._closed:
                raise RuntimeError("the peer was closed while gathering")
            answer = self._answer(offer)
            self._start_transport(offer)
            self._rtcp_task = asyncio.ensure_future(self._rtcp_loop())
            self._padding_task = asyncio.ensure_future(self._padding_loop())
            self._padding_task.add_done_callback(self._task_done)
            return answer

    async def apply_reoffer(self, offer_sdp: str) -> str:
        """Apply a ``re-offer``; returns the ``re-answer`` SDP."""
        async with self._negotiating:
            if self._closed or self.transport is None:
                raise RuntimeError("no session to re-negotiate")
            offer = parse_offer(offer_sdp)
            section = offer.transport_section()
            if section is not None and section.ice_ufrag not in (None, self._remote_ufrag):
                logger.warning("ICE restart in a re-offer is not supported; ignored")
            return self._answer(offer)

    async def get_stats(
        self, data_channels: Iterable[rtc_stats.DataChannelCounters] = ()
    ) -> list[dict[str, Any]]:
        """W3C-shaped stats (see :mod:`sora_async.rtc.stats`)."""
        if self.transport is None:
            return []
        return rtc_stats.build(self, data_channels)

    async def close(self) -> None:
        """Stop every sender and receiver (tracks end), then the transport. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._paced.close()
        # A negotiation in flight (gathering) finishes first, so that nothing
        # it creates outlives the transport.
        async with self._negotiating:
            pass
        # Timer loops are cancelled, not awaited: the padding loop of a recvonly
        # connection sleeps 0.5 s between checks, which would delay every close.
        loops = [t for t in (self._rtcp_task, self._padding_task) if t is not None]
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for transceiver in self._transceivers.values():
            await self._retire_sender(transceiver)
            await self._retire_receiver(transceiver)
        if self.transport is not None:
            await self.transport.stop()
            # The handlers and the cancelled loops (their CancelledError's traceback
            # holds this peer) would keep reference cycles (see BundleTransport.stop).
            self.transport.dtls.rtp_handler = None
            self.transport.dtls.rtcp_handler = None
        self._rtcp_task = self._padding_task = None
        self._set_state("closed")
        self.remove_all_listeners()

    def round_trip_time(self) -> float | None:
        """The latest RTT from receiver reports about our streams, if any."""
        for sender in self.senders:
            for layer in sender.layers:
                if layer.remote.round_trip_time is not None:
                    return layer.remote.round_trip_time
        return None

    def available_outgoing_bitrate(self) -> int | None:
        """The transport's bandwidth estimate (transport-cc, REMB, loss), if any yet."""
        estimate = self.congestion.estimate
        if estimate is not None:
            return estimate
        estimates = [s.available_bitrate for s in self.senders if s.available_bitrate]
        return max(estimates) if estimates else None

    # --- the offer message ---------------------------------------------------------------

    def _check_video_codec(self, offer_message: Mapping[str, Any]) -> None:
        # A recvonly client that cannot decode the channel's codec would sit in
        # a channel whose video it can never show: say so at once (issue 5).
        if self.options.role is not Role.RECVONLY or not offer_message.get("video", True):
            return
        codec = offer_message.get("video_codec_type")
        if not isinstance(codec, str):
            return
        try:
            codec_type = VideoCodecType.parse(codec)
        except ValueError:
            return
        if codec_type not in self.options.video_codec_preference.receivable():
            receivable = [c.name for c in self.options.video_codec_preference.receivable()]
            raise CodecUnavailableError(
                f"video_codec_preference has no decoder for {codec_type.name}, the channel's "
                f"video codec (it can decode {receivable or 'nothing'}); add a decoder for "
                f"{codec_type.name} or connect with video=False"
            )

    def _read_offer_message(self, offer_message: Mapping[str, Any]) -> None:
        mids = offer_message.get("mid")
        if isinstance(mids, Mapping):
            self._own_mids = {k: v for k, v in mids.items() if isinstance(v, str)}
        encodings = offer_message.get("encodings")
        if offer_message.get("simulcast") and isinstance(encodings, list):
            self._encodings = [
                EncodingParameters.from_offer(e) for e in encodings if isinstance(e, Mapping)
            ]

        def kbps(value: Any) -> int | None:
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value * 1000
            return None

        # The connect message's bit rates, or what Sora says it applied.
        self._audio_bitrate = kbps(self.options.audio_bit_rate) or kbps(
            offer_message.get("audio_bit_rate")
        )
        self._video_bitrate = kbps(self.options.video_bit_rate) or kbps(
            offer_message.get("video_bit_rate")
        )

    # --- negotiation -----------------------------------------------------------------------

    def _answer(self, offer: SessionOffer) -> str:
        negotiated: list[NegotiatedSection] = []
        for section in offer.sections:
            result = self._negotiate_section(section)
            negotiated.append(result)
            if not result.accepted and result.reason and section.port != 0:
                logger.warning("rejecting m-section %s (%s)", section.mid, result.reason)
        self._configure_extensions(negotiated)
        self._rebuild_ssrc_tables()
        # The senders (new, updated or retired) set the pacer's rate and their shares
        # now, before their first packet, not at the next tick or RTCP packet.
        self._apply_estimate()
        assert self.transport is not None
        setup, _ = answer_setup(self._transport_setup(offer))
        ice = self.transport.local_ice
        local = LocalTransport(
            ice_ufrag=ice.usernameFragment or "",
            ice_pwd=ice.password or "",
            fingerprints=[(f.algorithm, f.value) for f in self.transport.local_dtls.fingerprints],
            setup=setup,
            candidates=[candidate_to_sdp(c) for c in self.transport.local_candidates],
        )
        self._version += 1
        return write_answer(
            offer, negotiated, local, session_id=self._session_id, version=self._version
        )

    @staticmethod
    def _transport_setup(offer: SessionOffer) -> str | None:
        section = offer.transport_section()
        return section.setup if section is not None else None

    def _negotiate_section(self, section: MediaSection) -> NegotiatedSection:
        mid = section.mid if section.mid is not None else f"#{section.index}"
        role = self.options.role
        if section.kind in ("audio", "video"):
            source = (
                self.options.audio_source
                if section.kind == "audio"
                else (self.options.video_source)
            )
            can_send = role.sends and source is not None and self._own_mids.get(section.kind) == mid
            can_receive = role.receives and self._own_mids.get(section.kind) != mid
            result = negotiate(
                section, can_send=can_send, can_receive=can_receive, codec_check=self._codec_check
            )
        else:
            result = negotiate(
                section, can_send=False, can_receive=False, codec_check=self._codec_check
            )
            if result.accepted and section.kind == "application" and self._sctp_port is None:
                self._sctp_port = section.sctp_port or 5000
                self._sctp_max_message_size = section.max_message_size
            return result
        transceiver = self._transceivers.get(mid)
        if transceiver is None or transceiver.kind != section.kind:
            if transceiver is not None:
                self._spawn(self._retire(transceiver))
            transceiver = _Transceiver(mid, section.kind, result)
            self._transceivers[mid] = transceiver
        transceiver.negotiated = result
        self._update_sender(transceiver, result)
        self._update_receiver(transceiver, result)
        return result

    def _codec_check(self, offered: OfferedCodec, kind: str, role: str) -> str | None:
        spec = find_codec(offered.name)
        if spec is None or spec.kind != kind or spec.clock_rate != offered.clock_rate:
            return None
        if kind == "audio":
            return spec.name
        preference = self.options.video_codec_preference
        codec_type = VideoCodecType[spec.name]
        if role == "send" and preference.encoder_for(codec_type) is None:
            return None
        if role == "recv" and preference.decoder_for(codec_type) is None:
            return None
        if spec.name == "H264":
            # Any profile FFmpeg decodes and x264 encodes; packetization-mode 1
            # (FU-A) to send, as libwebrtc requires.
            if ProfileLevelId.parse(offered.fmtp.get("profile-level-id", "42e01f")) is None:
                return None
            if role == "send" and offered.fmtp.get("packetization-mode", "0") != "1":
                return None
            return spec.name
        if not fmtp_compatible(spec.name, spec.default_fmtp, offered.fmtp):
            return None
        return spec.name

    # --- senders --------------------------------------------------------------------------------

    def _update_sender(self, transceiver: _Transceiver, result: NegotiatedSection) -> None:
        sender = transceiver.sender
        if not result.sends:
            if sender is not None:
                self._spawn(self._retire_sender(transceiver))
            return
        codec = result.codecs[0]
        extensions = [(e.id, e.uri) for e in result.extensions]
        encodings = self._layer_encodings(result)
        if sender is None:
            source = (
                self.options.audio_source if result.kind == "audio" else self.options.video_source
            )
            transform = (
                self.options.audio_transform
                if result.kind == "audio"
                else self.options.video_transform
            )
            sender = RtpSender(
                kind=result.kind,
                mid=transceiver.mid,
                source=source,
                codec=codec,
                extensions=extensions,
                encodings=encodings,
                send=self._send_packet,
                cname=self._cname,
                encoder_factory=self._create_encoder,
                taken_ssrcs=self._taken_ssrcs,
                max_bitrate=self._audio_bitrate if result.kind == "audio" else self._video_bitrate,
                bitrate_cap=_sdp_bitrate_cap(result.offer),
                transform=transform,
            )
            sender.set_degradation_preference(self.options.degradation_preference)
            sender.on_limits_changed = self._apply_estimate
            transceiver.sender = sender
            if self.connection_state == "connected":
                sender.start()
        else:
            sender.update(codec, extensions, encodings)
        result.send_streams = [SendStream(layer.ssrc, layer.rtx_ssrc) for layer in sender.layers]
        result.cname = self._cname
        result.msid = (self._stream_id, str(getattr(sender.source, "id", uuid.uuid4())))

    def _layer_encodings(self, result: NegotiatedSection) -> list[EncodingParameters]:
        if not result.simulcast:
            return [EncodingParameters()]
        offered = {e.rid: e for e in self._encodings or []}
        layers: list[EncodingParameters] = []
        for layer in result.simulcast:
            params = offered.get(layer.rid)
            if params is None:
                params = EncodingParameters(
                    rid=layer.rid,
                    scale_resolution_down_by=DEFAULT_SIMULCAST_SCALE.get(layer.rid),
                )
            else:
                params = EncodingParameters(**vars(params))
            if layer.paused:
                params.active = False
            layers.append(params)
        return layers

    def _create_encoder(self, codec: NegotiatedCodec, layer: SendLayer) -> Encoder:
        if codec.kind == "audio":
            fmtp = codec.fmtp

            def flag(name: str) -> bool:
                return fmtp.get(name, "0").strip() == "1"

            ptime = fmtp.get("ptime", "").strip()
            channels, max_playback_rate = opus_codec.sdp_stream_format(fmtp)
            return opus_codec.OpusEncoder(
                # the sender set it before asking for the encoder (its default:
                # opus_codec.default_bitrate for this fmtp)
                bitrate=layer.max_bitrate,
                channels=channels,
                fec=flag("useinbandfec"),
                dtx=flag("usedtx"),
                ptime=int(ptime) if ptime in ("10", "20", "40", "60") else 20,
                max_playback_rate=max_playback_rate,
                cbr=flag("cbr"),
            )
        preference = self.options.video_codec_preference
        implementation = preference.encoder_for(codec.name) or VideoCodecImplementation.INTERNAL
        # The sender keeps the target within the layer's max (which can grow once
        # the source size is known); the encoder's own ceiling stays generous.
        settings = EncoderSettings(
            bitrate=layer.target_bitrate or layer.max_bitrate,
            max_bitrate=max(layer.max_bitrate, EncoderSettings.max_bitrate),
            framerate=int(layer.params.max_framerate or 30),
            fmtp=dict(codec.fmtp),
        )
        return create_encoder(
            codec.name, implementation, settings=settings, openh264=self.options.openh264
        )

    def _create_decoder(self, codec: NegotiatedCodec) -> Decoder:
        if codec.kind == "audio":
            return create_decoder(codec.name)
        preference = self.options.video_codec_preference
        implementation = preference.decoder_for(codec.name) or VideoCodecImplementation.INTERNAL
        return create_decoder(codec.name, implementation, openh264=self.options.openh264)

    def _retire_sender(self, transceiver: _Transceiver) -> Awaitable[None]:
        """Detach the transceiver's sender now; returns its stop()."""
        sender, transceiver.sender = transceiver.sender, None
        if sender is None:
            return asyncio.sleep(0)
        for ssrc in sender.ssrcs:
            self._sender_ssrcs.pop(ssrc, None)
        sender.on_limits_changed = None  # a reference cycle with this peer otherwise
        return sender.stop()

    # --- receivers -------------------------------------------------------------------------------

    def _update_receiver(self, transceiver: _Transceiver, result: NegotiatedSection) -> None:
        section = result.offer
        if not result.receives:
            if transceiver.receiver is not None:
                self._spawn(self._retire_receiver(transceiver, transceiver.receiver))
            return
        key = (section.stream_id, section.track_id, tuple(sorted(section.media_ssrcs)))
        receiver = transceiver.receiver
        if receiver is not None and transceiver.stream_key == key:
            receiver.update(result.codecs)
            self._announce_ssrcs(receiver, section)
            return
        if receiver is not None:
            # A new stream on a known mid (Sora reuses retired mids): the old
            # track ends, the new one gets a fresh receiver and a track event.
            self._spawn(self._retire_receiver(transceiver, receiver))
            for ssrc in section.ssrcs:
                self._retired_ssrcs.discard(ssrc)
        track = RemoteTrack(
            section.kind,
            track_id=section.track_id,
            stream_id=section.stream_id,
            mid=transceiver.mid,
        )
        receiver = RtpReceiver(
            kind=section.kind,
            mid=transceiver.mid,
            codecs=result.codecs,
            track=track,
            send_rtcp=self._send_packet,
            rtcp_ssrc=self._rtcp_ssrc,
            decoder_factory=self._create_decoder,
        )
        transceiver.receiver = receiver
        transceiver.stream_key = key
        self._announce_ssrcs(receiver, section)
        self.emit("track", track)

    @staticmethod
    def _announce_ssrcs(receiver: RtpReceiver, section: MediaSection) -> None:
        for media, rtx in section.rtx_ssrcs.items():
            receiver.rtx_ssrcs[rtx] = media

    def _retire_receiver(
        self, transceiver: _Transceiver, receiver: RtpReceiver | None = None
    ) -> Awaitable[None]:
        """Detach ``receiver`` (default: the transceiver's) now; returns its stop()."""
        if receiver is None:
            receiver = transceiver.receiver
        if receiver is transceiver.receiver:
            transceiver.receiver = None
            transceiver.stream_key = None
        if receiver is None:
            return asyncio.sleep(0)
        for ssrc, owner in list(self._ssrc_table.items()):
            if owner is receiver:
                del self._ssrc_table[ssrc]
                self._retired_ssrcs.add(ssrc)
        # Late packets of the stream that left must not be routed anywhere else.
        self._retired_ssrcs.update(receiver.streams)
        self._retired_ssrcs.update(receiver.rtx_ssrcs)
        receiver.track.stop()
        return receiver.stop()

    def _retire(self, transceiver: _Transceiver) -> Awaitable[Any]:
        return asyncio.gather(self._retire_sender(transceiver), self._retire_receiver(transceiver))

    def _rebuild_ssrc_tables(self) -> None:
        for transceiver in self._transceivers.values():
            receiver = transceiver.receiver
            if receiver is not None:
                section = transceiver.negotiated.offer
                for ssrc in section.ssrcs:
                    self._retired_ssrcs.discard(ssrc)
                    self._ssrc_table[ssrc] = receiver
            sender = transceiver.sender
            if sender is not None:
                for ssrc in sender.ssrcs:
                    self._sender_ssrcs[ssrc] = sender

    def _configure_extensions(self, negotiated: Sequence[NegotiatedSection]) -> None:
        # BUNDLE: one id per URI across the transport (RFC 8843 §9.2).
        seen: dict[int, str] = {}
        for section in negotiated:
            if section.accepted:
                for extension in section.extensions:
                    seen.setdefault(extension.id, extension.uri)
        extensions = HeaderExtensionsMap()
        extensions.configure(
            RTCRtpParameters(
                headerExtensions=[
                    RTCRtpHeaderExtensionParameters(id=ext_id, uri=uri)
                    for ext_id, uri in seen.items()
                ]
            )
        )
        self._extensions = extensions
        self.congestion.extension_id = next(
            (ext_id for ext_id, uri in seen.items() if uri == EXT_TRANSPORT_CC), None
        )

    # --- transport ------------------------------------------------------------------------------

    def _start_transport(self, offer: SessionOffer) -> None:
        assert self.transport is not None
        section = offer.transport_section()
        if section is None or not section.ice_ufrag or not section.ice_pwd:
            raise ValueError("the offer has no m-section with ICE parameters")
        if not section.fingerprints:
            raise ValueError("the offer has no DTLS fingerprint")
        candidates: list[RTCIceCandidate] = []
        for offered in offer.sections:
            if offered.rejected:
                continue
            for text in offered.candidates:
                try:
                    candidate = parse_candidate(text)
                except (AssertionError, ValueError, IndexError):
                    logger.debug("ignoring malformed candidate %r", text)
                    continue
                candidate.sdpMid = offered.mid
                candidates.append(candidate)
        _, dtls_role = answer_setup(section.setup)
        self._remote_ufrag = section.ice_ufrag
        self.transport.start(
            RTCIceParameters(
                usernameFragment=section.ice_ufrag,
                password=section.ice_pwd,
                iceLite=offer.ice_lite,
            ),
            RTCDtlsParameters(
                fingerprints=[RTCDtlsFingerprint(a, v) for a, v in section.fingerprints],
                role="auto",
            ),
            candidates,
            dtls_role=dtls_role,
            sctp_port=self._sctp_port,
            sctp_max_message_size=self._sctp_max_message_size,
            candidates_complete=any(s.end_of_candidates for s in offer.sections),
        )
        sctp = self.transport.sctp
        if sctp is not None:
            sctp.on("datachannel", lambda channel: self.emit("datachannel", channel))

    def _on_transport_state(self, state: str) -> None:
        if state == "connected":
            for sender in self.senders:
                sender.start()
        self._set_state(state)

    def _set_state(self, state: str) -> None:
        if state == self.connection_state or self.connection_state == "closed":
            return
        if self._closed and state != "closed":
            return
        self.connection_state = state
        self.emit("connectionstatechange", state)

    async def _send_packet(self, data: bytes) -> bool:
        transport = self.transport
        if transport is None or self._closed:
            return False
        if len(data) >= 12 and not 192 <= data[1] <= 223:  # RTP (RTCP: RFC 5761 §4)
            # no coroutine per packet unless the pacer makes this one wait
            congestion = self.congestion
            sender = self._sender_ssrcs.get(int.from_bytes(data[8:12], "big"))
            if sender is not None and sender.kind == "video":
                delay = congestion.pace(len(data))
                if delay or self._paced:
                    self._paced.push(delay, data)  # the sender goes on to its next frame
                    return True
            data = congestion.stamp(data)
        sent = transport.send_rtp_now(data)
        if sent is None:
            return await transport.send_rtp(data)
        return sent

    def _send_paced(self, data: bytes) -> None:
        """Send a video packet whose pacer slot came (:class:`~.pacer.PacedQueue`)."""
        transport = self.transport
        if transport is None or self._closed:
            return
        data = self.congestion.stamp(data)
        try:
            if transport.send_rtp_now(data) is None:
                task = asyncio.ensure_future(transport.send_rtp(data))
                self._tasks.add(task)
                task.add_done_callback(self._task_done)
        except Exception:  # a timer callback: nobody else would see it
            logger.exception("sending a paced packet failed")

    async def _handle_rtp(self, data: bytes, arrival_ms: int) -> None:
        try:
            packet = parse_rtp(data, self._extensions)  # RtpPacket.parse, faster
        except ValueError:
            return
        sequence = packet.extensions.transport_sequence_number
        feedback_due = self.congestion.on_rtp(sequence, packet.ssrc)
        receiver = self._ssrc_table.get(packet.ssrc)
        # late packets of a stream that left are not routed again
        if receiver is None and packet.ssrc not in self._retired_ssrcs:
            receiver = self._route_new_ssrc(packet)
            if receiver is not None:
                self._ssrc_table[packet.ssrc] = receiver
        if receiver is not None:
            await receiver.handle_rtp(packet, len(data), arrival_ms)
            if self._tick_waiter is not None and receiver.wants_ticks(time.monotonic()):
                self._wake_ticks()
        if feedback_due:
            # On this packet's pass of the loop rather than a timer's of its own.
            await self._send_feedback()

    def _route_new_ssrc(self, packet: RtpPacket) -> RtpReceiver | None:
        """An SSRC no ``a=ssrc`` announced: route by MID extension, else by payload type."""
        mid = packet.extensions.mid
        if mid:
            transceiver = self._transceivers.get(mid)
            if transceiver is not None and transceiver.receiver is not None:
                return transceiver.receiver
            return None
        candidates = [r for r in self.receivers if r.accepts_payload_type(packet.payload_type)]
        if len(candidates) == 1:
            return candidates[0]
        return None

    async def _handle_rtcp(self, data: bytes) -> None:
        # aiortc reads every RTPFB as a NACK: transport-cc feedback is taken out first.
        data = self.congestion.on_rtcp(data)
        self._apply_estimate()
        if not data:
            return
        try:
            packets = RtcpPacket.parse(data)
        except ValueError:
            return
        for packet in packets:
            try:
                await self._route_rtcp(packet)
            except Exception:
                logger.exception("RTCP handling failed for %r", packet)

    async def _route_rtcp(self, packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            receiver = self._ssrc_table.get(packet.ssrc)
            if receiver is not None:
                receiver.handle_sender_report(packet)
        if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            targets = {id(s): s for r in packet.reports if (s := self._sender_ssrcs.get(r.ssrc))}
            for sender in targets.values():
                await sender.handle_rtcp(packet)
            video = [
                r
                for r in packet.reports
                if (s := self._sender_ssrcs.get(r.ssrc)) is not None and s.kind == "video"
            ]
            if video:
                self.congestion.on_report_loss(max(r.fraction_lost for r in video) / 256.0)
                rtt = self.round_trip_time()
                if rtt is not None:
                    self.congestion.on_round_trip_time(rtt)
                self._apply_estimate()
        elif isinstance(packet, RtcpRtpfbPacket | RtcpPsfbPacket):
            ssrcs = [packet.media_ssrc]
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_FIR:
                ssrcs = [
                    int.from_bytes(packet.fci[i : i + 4], "big")
                    for i in range(0, len(packet.fci) - 7, 8)
                ]
            elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                try:
                    bitrate, ssrcs = unpack_remb_fci(packet.fci)
                except ValueError:
                    return
                if any(ssrc in self._sender_ssrcs for ssrc in ssrcs):
                    # REMB caps the transport's estimate, which the peer splits.
                    self.congestion.on_remb(bitrate)
                    self._apply_estimate()
                return
            targets = {id(s): s for ssrc in ssrcs if (s := self._sender_ssrcs.get(ssrc))}
            for sender in targets.values():
                await sender.handle_rtcp(packet)

    def _tick_interval(self) -> float:
        """How long the RTCP loop sleeps, and (as a side effect) how often transport-cc
        feedback goes out. A timer wake-up costs a pass of the event loop (and, on an
        idle loop, a thread wake-up and cold caches), so only a connection with a NACK
        to repeat or a key frame to ask for ticks at :data:`TICK_INTERVAL`; one that
        receives video (or audio with NACK) sends its feedback every 100 ms with the
        packets and ticks at :data:`RELAXED_TICK_INTERVAL`; audio only, every 250 ms.
        A receiver added by a re-offer counts from the next tick on."""
        receivers = self.receivers
        if not receivers:
            return SEND_TICK_INTERVAL
        now = time.monotonic()
        repairing = False
        busy = False
        for receiver in receivers:
            if receiver.kind == "video" or receiver.nack_negotiated:
                busy = True
            if receiver.wants_ticks(now):
                repairing = True
        self.congestion.feedback_interval = (
            TransportCongestion.FEEDBACK_INTERVAL if busy else AUDIO_TICK_INTERVAL
        )
        if repairing:
            return TICK_INTERVAL
        return RELAXED_TICK_INTERVAL if busy else AUDIO_TICK_INTERVAL

    def _wake_ticks(self) -> None:
        """A receiver has work for the short tick (a NACK to repeat, a key frame to ask
        for again) while the RTCP loop sleeps a longer interval: tick now; the ticks
        then stay at :data:`TICK_INTERVAL` while the work lasts."""
        waiter = self._tick_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _send_feedback(self) -> None:
        for feedback in self.congestion.feedback(self._rtcp_ssrc):
            await self._send_packet(feedback)

    async def _tick_sleep(self, interval: float) -> None:
        """``asyncio.sleep(interval)`` that :meth:`_wake_ticks` can end early (only a
        sleep longer than :data:`TICK_INTERVAL` needs that)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(interval, wake, waiter)
        if interval > TICK_INTERVAL:
            self._tick_waiter = waiter
        try:
            await waiter
        finally:
            timer.cancel()
            self._tick_waiter = None

    async def _rtcp_loop(self) -> None:
        last_report = time.monotonic()
        while True:
            await self._tick_sleep(self._tick_interval())
            if self.connection_state != "connected":
                continue
            now = time.monotonic()
            transport = self.transport
            if transport is not None and now - transport.last_activity > LIVENESS_TIMEOUT:
                logger.warning(
                    "nothing received for %.0f s: the network path is gone", LIVENESS_TIMEOUT
                )
                self._set_state("failed")
                return
            for receiver in self.receivers:
                await receiver.tick(now)
            await self._send_feedback()  # for packets that stopped coming, too
            self._apply_estimate()
            if now - last_report >= REPORT_INTERVAL:
                last_report = now
                await self._send_reports()

    async def _padding_loop(self) -> None:
        """Padding-only RTX packets: the probe clusters (``TransportCongestion.probe_due``),
        and padding while the video sends less than the transport's padding rate
        (simulcast with a layer off: see ``TransportCongestion.padding_due``)."""
        congestion = self.congestion
        retry = PADDING_INTERVAL
        while not self._closed:
            cluster = congestion.probe_due()
            if cluster is not None:
                if self.connection_state == "connected" and await self._send_probe(cluster):
                    retry = PADDING_INTERVAL
                else:
                    # Nothing to pad yet (padding follows the first video packet): look
                    # again, less often while the source stays idle.
                    await asyncio.sleep(retry)
                    retry = min(2 * retry, PROBE_RETRY_MAX)
                continue
            if congestion.padding_bitrate <= 0:
                # Nothing to pad (the usual case: no simulcast layer off, or no video
                # sender): no timer until _apply_estimate sets a padding rate or a probe.
                self._padding_wanted.clear()
                await self._padding_wanted.wait()
                continue
            await asyncio.sleep(PADDING_INTERVAL)
            due = congestion.padding_due()
            if self.connection_state != "connected":
                continue
            for sender in self.senders:
                while due >= PADDING_MIN_BYTES and not self._closed:
                    packet = sender.padding_packet(due)
                    if packet is None:
                        break
                    if not await self._send_packet(packet):
                        break
                    congestion.padding_sent(len(packet))
                    due -= len(packet)

    async def _send_probe(self, cluster: ProbeCluster) -> bool:
        """Send one probe cluster: padding at the cluster's rate for at least
        ``PROBE_DURATION`` and its packet count, in bursts every ``PROBE_STEP``
        (libwebrtc's prober sends one packet at a time; an event loop's timers are
        too coarse for that, and the estimate uses the packets' real send times).
        Media that leaves meanwhile counts in the cluster, as libwebrtc's does. False
        when no sender can pad yet (no video packet sent)."""
        transport = self.transport
        video = [s for s in self.senders if s.kind == "video"]

        def padding(size: int) -> bytes | None:
            return next((p for s in video if (p := s.padding_packet(size)) is not None), None)

        first = padding(PADDING_MAX)
        if transport is None or first is None:
            return False
        congestion = self.congestion
        congestion.begin_probe(cluster, len(first))
        started = time.monotonic()
        packet: bytes | None = first
        try:
            while not self._closed:
                due = cluster.bytes_due(time.monotonic())
                # a remainder under half the smallest packet waits for the next burst
                while packet is not None and (
                    due > PADDING_MIN_BYTES // 2 or cluster.sent_packets == 0
                ):
                    data = congestion.stamp(packet)
                    if transport.send_rtp_now(data) is None:
                        await transport.send_rtp(data)
                    congestion.probe_bytes_sent += len(data)
                    due -= len(data)
                    size = max(PADDING_MIN_BYTES, min(due, PADDING_MAX))
                    packet = padding(size)
                if packet is None:
                    break  # the senders went away
                if cluster.complete and time.monotonic() - started >= PROBE_DURATION:
                    break
                await asyncio.sleep(PROBE_STEP)
        finally:
            congestion.end_probe(cluster)
        return True

    def _sdes(self, ssrc: int) -> bytes:
        cname = self._cname.encode()
        return bytes(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=ssrc, items=[(1, cname)])]))

    async def _send_reports(self) -> None:
        # Compound packets (RFC 3550 §6.1): a report first, then SDES CNAME.
        for sender in self.senders:
            for report in sender.sender_reports():
                await self._send_packet(bytes(report) + self._sdes(report.ssrc))
        blocks = [block for receiver in self.receivers for block in receiver.reports()]
        for start in range(0, len(blocks), 31):  # RC is 5 bits
            rr = RtcpRrPacket(ssrc=self._rtcp_ssrc, reports=blocks[start : start + 31])
            await self._send_packet(bytes(rr) + self._sdes(self._rtcp_ssrc))

    def _apply_estimate(self) -> None:
        """Split the transport's estimate: audio keeps its rate, video shares the rest."""
        senders = self.senders
        audio = sum(layer.max_bitrate for s in senders if s.kind == "audio" for layer in s.layers)
        video = [s for s in senders if s.kind == "video"]
        video_max = sum(layer.max_bitrate for s in video for layer in s.layers if layer.active)
        self.congestion.can_probe = any(s.codec.rtx_payload_type is not None for s in video)
        self.congestion.configure(audio + video_max)
        self.congestion.padding_bitrate = sum(
            simulcast_padding(
                [
                    simulcast_limits(
                        *layer.params.size_for(s.source_width or 640, s.source_height or 360),
                        layer.max_bitrate,
                    )
                    for layer in s.layers
                    if layer.active
                ]
            )
            for s in video
            if s.simulcast
        )
        if self.congestion.padding_bitrate > 0 or self.congestion.prober.pending:
            self._padding_wanted.set()
        estimate = self.congestion.estimate
        if estimate is None or not video:
            return
        share = max(estimate - audio, 30_000) // len(video)
        for sender in video:
            if sender.available_bitrate != share:  # new senders get it on the next tick
                sender.set_estimate(share)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("rtc task failed", exc_info=task.exception())


def _sdp_bitrate_cap(section: MediaSection) -> int | None:
    """``b=TIAS`` (bps) or ``b=AS`` (kbps) of an m-section, in bps (RFC 3890, RFC 4566)."""
    if section.bandwidth.get("TIAS"):
        return section.bandwidth["TIAS"]
    if section.bandwidth.get("AS"):
        return section.bandwidth["AS"] * 1000
    return None


__all__ = ["RtcOptions", "RtcPeer"]
