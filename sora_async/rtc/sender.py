"""The send side of one m-section: source frames → encoder(s) → RTP.

An :class:`RtpSender` pulls frames from its source (any object with ``kind``
and an aiortc-style ``async recv()`` returning ``av.VideoFrame``/
``av.AudioFrame``, or ``av.Packet`` for pre-encoded media; aiortc
``MediaStreamTrack`` objects work as they are) and feeds one
:class:`SendLayer` per encoding. A plain sender has one layer; a simulcast
sender has one per rid (``r0``/``r1``/``r2``), each with its own SSRC (+ RTX
SSRC), encoder, scale, bit rate, frame-rate cap, sequence numbers and
retransmission history, so RTCP (NACK, PLI/FIR, receiver reports) is handled
per layer and a key-frame request for one layer does not touch the others.

Per layer, frame by frame::

    source.recv() ─► mailbox (newest wins) ─► scale + encode on the codec pool
      ─► EncodedFrame ─► transform pipeline (issue 7, when set: frames in flight,
         results in order) ─► packetize
      ─► RTP (marker, timestamp, sequence, MID/RID/abs-send-time/audio level)
      ─► history (for NACK → RTX) ─► SRTP

At most one frame per layer is being encoded; a frame that arrives while
the encoder is busy replaces the one waiting (video), so an encoder that
falls behind drops frames instead of building latency. Bit rate follows REMB
and is changed in place where the codec layer supports it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import random
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc import clock
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
    unpack_remb_fci,
    wrap_rtx,
)
from av.video.reformatter import VideoReformatter

from ..codecs.base import EncodedFrame, Encoder, Packetizer
from ..codecs.opus import default_bitrate as opus_default_bitrate
from ..codecs.opus import sdp_stream_format as opus_sdp_stream_format
from ..codecs.registry import create_packetizer
from ..enums import DegradationPreference
from ..frames import reformat_with
from ..transform import TransformPipeline
from ._workers import CodecJobs, Mailbox, random_ssrc
from .congestion import allocate_simulcast, simulcast_limits
from .degradation import DegradationAdapter
from .rtp_extensions import one_byte_element_offset
from .sdp import (
    EXT_ABS_SEND_TIME,
    EXT_AUDIO_LEVEL,
    EXT_MID,
    EXT_RID,
    EXT_RRID,
    EXT_TRANSPORT_CC,
    NegotiatedCodec,
)

logger = logging.getLogger("sora_async.rtc")

#: An encoded-frame transform between encoder and packetizer (the encoded
#: transform issue plugs in here); returning None drops the frame.
FrameTransform = Callable[[EncodedFrame], Awaitable[EncodedFrame | None]]
SendPacket = Callable[[bytes], Awaitable[bool]]
#: ``factory(codec, layer) -> Encoder``; the peer builds it from the codec
#: preference, the negotiated fmtp and the bit rates.
EncoderFactory = Callable[[NegotiatedCodec, "SendLayer"], Encoder]

#: Packed RGB formats no encoder takes: converted to I420 before encoding.
_RGB_FORMATS = frozenset({"bgr24", "rgb24", "bgra", "rgba", "argb", "abgr", "bgr0", "rgb0"})
#: RTP payload budget: 1200 bytes keeps SRTP + IP/UDP + TURN under common MTUs.
MAX_PAYLOAD_SIZE = 1200
#: Retransmission history per layer: ~1 s of 3 Mbps video.
VIDEO_HISTORY = 512
AUDIO_HISTORY = 64
#: Audio frames waiting for the encoder before the oldest is dropped (~200 ms).
AUDIO_QUEUE = 10
#: libwebrtc's simulcast table (``kSimulcastFormats``, simulcast.cc): for a layer of at
#: least this many pixels, its max bit rate in kbps. Used when the offer gives none.
SIMULCAST_MAX_KBPS = (
    (1920 * 1080, 5000),
    (1280 * 720, 2500),
    (960 * 540, 1200),
    (640 * 360, 700),
    (480 * 270, 450),
    (320 * 180, 200),
    (0, 200),
)
#: A layer counts as bandwidth-limited when REMB holds it this far under its max.
_BANDWIDTH_LIMITED = 0.9


def single_stream_max_bitrate(width: int, height: int) -> int:
    """libwebrtc's default max bit rate (bps) of a non-simulcast stream of this size
    (``GetMaxDefaultVideoBitrateKbps``, webrtc_video_engine.cc); 0x0 means unknown yet."""
    pixels = width * height
    if not pixels:
        return 2_500_000
    if pixels <= 320 * 240:
        return 600_000
    if pixels <= 640 * 480:
        return 1_700_000
    if pixels <= 960 * 540:
        return 2_000_000
    return 2_500_000


def default_max_bitrate(width: int, height: int) -> int:
    """libwebrtc's max bit rate (bps) for a simulcast layer of this size."""
    pixels = width * height
    for minimum, kbps in SIMULCAST_MAX_KBPS:
        if pixels >= minimum:
            return kbps * 1000
    return 200_000


@dataclass
class EncodingParameters:
    """One W3C ``RTCRtpEncodingParameters`` entry as Sora's ``offer.encodings`` carries it.

    Example::

        EncodingParameters.from_offer({"rid": "r0", "scaleResolutionDownBy": 4,
                                       "maxBitrate": 150000, "active": True})
    """

    rid: str | None = None
    active: bool = True
    scale_resolution_down_by: float | None = None
    #: ``scaleResolutionDownTo`` (``maxWidth``/``maxHeight``).
    max_width: int | None = None
    max_height: int | None = None
    max_bitrate: int | None = None  # bps
    max_framerate: float | None = None
    scalability_mode: str | None = None

    @classmethod
    def from_offer(cls, encoding: Mapping[str, Any]) -> EncodingParameters:
        """Read one ``encodings`` entry; unknown keys are ignored (§6.1)."""

        def number(key: str) -> float | None:
            value = encoding.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            return float(value) if value > 0 else None

        down_to = encoding.get("scaleResolutionDownTo")
        max_width = max_height = None
        if isinstance(down_to, Mapping):
            width, height = down_to.get("maxWidth"), down_to.get("maxHeight")
            max_width = int(width) if isinstance(width, int | float) and width > 0 else None
            max_height = int(height) if isinstance(height, int | float) and height > 0 else None
        bitrate = number("maxBitrate")
        rid = encoding.get("rid")
        mode = encoding.get("scalabilityMode")
        return cls(
            rid=str(rid) if rid is not None else None,
            active=encoding.get("active", True) is not False,
            scale_resolution_down_by=number("scaleResolutionDownBy"),
            max_width=max_width,
            max_height=max_height,
            max_bitrate=int(bitrate) if bitrate else None,
            max_framerate=number("maxFramerate"),
            scalability_mode=str(mode) if isinstance(mode, str) else None,
        )

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        """The encoded size for a source of ``width`` x ``height`` (even, at least 2x2)."""
        w, h = float(width), float(height)
        scale = self.scale_resolution_down_by or 1.0
        if scale > 1.0:
            w, h = w / scale, h / scale
        if self.max_width or self.max_height:
            factor = min(
                1.0,
                (self.max_width or w) / w if w else 1.0,
                (self.max_height or h) / h if h else 1.0,
            )
            w, h = w * factor, h * factor
        return max(2, int(w) & ~1), max(2, int(h) & ~1)


class _QualityLimitation:
    """``qualityLimitationReason`` and ``qualityLimitationDurations`` (seconds)."""

    def __init__(self) -> None:
        self.reason = "none"
        self.durations = {"none": 0.0, "cpu": 0.0, "bandwidth": 0.0, "other": 0.0}
        self.resolution_changes = 0
        self._since = time.monotonic()

    def set(self, reason: str) -> None:
        now = time.monotonic()
        self.durations[self.reason] += now - self._since
        self._since = now
        self.reason = reason

    def snapshot(self) -> dict[str, float]:
        durations = dict(self.durations)
        durations[self.reason] += time.monotonic() - self._since
        return durations


class _RateWindow:
    """Events per second over the last second (``framesPerSecond``)."""

    def __init__(self) -> None:
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._times.append(now)
        while self._times and now - self._times[0] > 1.0:
            self._times.popleft()

    @property
    def rate(self) -> float:
        now = time.monotonic()
        while self._times and now - self._times[0] > 1.0:
            self._times.popleft()
        return float(len(self._times))


@dataclass
class RemoteReport:
    """What the last receiver report said about one of our SSRCs (``remote-inbound-rtp``)."""

    packets_lost: int = 0
    fraction_lost: float = 0.0
    jitter: float = 0.0  # seconds
    round_trip_time: float | None = None
    total_round_trip_time: float = 0.0
    round_trip_time_measurements: int = 0
    timestamp: float = 0.0  # ms


class SendLayer:
    """One RTP stream of a sender: a simulcast rid, or the only stream."""

    def __init__(
        self,
        sender: RtpSender,
        params: EncodingParameters,
        ssrc: int,
        rtx_ssrc: int | None,
    ) -> None:
        self.sender = sender
        self.params = params
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.encoder: Encoder | None = None
        self.reformatter = VideoReformatter()
        self.packetizer: Packetizer | None = None
        self.sequence = random.randint(0, 0xFFFF)
        self.rtx_sequence = random.randint(0, 0xFFFF)
        self.timestamp_offset = random.randint(0, 0xFFFFFFFF)
        #: sequence number -> the packet as sent (before SRTP), for NACK -> RTX
        self.history: dict[int, bytes] = {}
        self.mailbox: Mailbox[av.frame.Frame | av.Packet[Any]] = Mailbox(
            1 if sender.kind == "video" else AUDIO_QUEUE
        )
        self.task: asyncio.Task[None] | None = None
        self.jobs = CodecJobs()
        self.force_keyframe = False
        self.target_bitrate = 0
        self.max_bitrate = 0
        self.last_accept = 0.0
        self.started_talkspurt = True
        # counters (W3C outbound-rtp names in the stats)
        self.packets_sent = 0
        self.bytes_sent = 0
        self.header_bytes_sent = 0
        self.retransmitted_packets_sent = 0
        self.retransmitted_bytes_sent = 0
        self.frames_encoded = 0
        self.key_frames_encoded = 0
        self.frames_sent = 0
        self.frames_dropped = 0
        self.total_encode_time = 0.0
        self.encode_time_ewma = 0.0
        self.nack_count = 0
        self.pli_count = 0
        self.fir_count = 0
        self.frame_width = 0
        self.frame_height = 0
        self.fps = _RateWindow()
        self.quality = _QualityLimitation()
        #: ``degradation_preference`` adaptation (issue 6), single-stream video only
        self.adapter: DegradationAdapter | None = None
        #: turned off by the simulcast rate allocation: its min bit rate does not fit
        self.suspended = False
        self.remote = RemoteReport()
        self.remote_received = False
        # sender report bookkeeping
        self.last_rtp_timestamp: int | None = None
        self.last_send_time = 0.0
        self._sr_sent: collections.OrderedDict[int, float] = collections.OrderedDict()

    @property
    def rid(self) -> str | None:
        return self.params.rid

    @property
    def active(self) -> bool:
        return self.params.active

    # --- encoding -------------------------------------------------------------

    def encode(self, frame: av.frame.Frame, force_keyframe: bool) -> list[EncodedFrame]:
        """Runs on the codec pool: scale for this layer, then encode."""
        assert self.encoder is not None
        if isinstance(frame, av.VideoFrame):
            width, height = self.params.size_for(frame.width, frame.height)
            if self.adapter is not None:
                width, height = self.adapter.limit_size(width, height)
            # RGB frames (a VideoSource hands its BGR pixels over unconverted) are
            # converted here, with this layer's scaling, in one libswscale pass.
            target_format = "yuv420p" if frame.format.name in _RGB_FORMATS else None
            if (width, height) != (frame.width, frame.height) or target_format:
                # A reformatter of our own: PyAV caches one per frame, and the
                # layers of a simulcast sender scale the same frame in parallel.
                # BGR -> I420 without scaling goes through libyuv where available.
                frame = reformat_with(
                    self.reformatter,
                    frame,
                    width=width,
                    height=height,
                    format=target_format,
                    threads=1,
                )
            elif len(self.sender.layers) > 1:
                # Encoders write pts/pict_type into the frame: other layers share it.
                frame = copy_video_frame(frame)
        started = time.perf_counter()
        encoded = self.encoder.encode(frame, force_keyframe)
        elapsed = time.perf_counter() - started
        self.total_encode_time += elapsed
        self.encode_time_ewma = 0.9 * self.encode_time_ewma + 0.1 * elapsed
        return encoded

    def input_framerate(self) -> float | None:
        """The rate frames reach this layer's encoder at before any frame dropping:
        the source's (over the last second, once a second of frames came), capped by
        ``maxFramerate`` and the adaptation (libwebrtc ``GetInputFramerateFps``)."""
        fps = self.sender.measured_source_fps
        if fps is None:
            return None
        if self.params.max_framerate:
            fps = min(fps, self.params.max_framerate)
        if self.adapter is not None and self.adapter.fps_cap is not None:
            fps = min(fps, self.adapter.fps_cap)
        return fps

    def apply_target_bitrate(self, bitrate: int) -> None:
        """Set the encoder's target in place (REMB); tracks bandwidth limitation."""
        self.target_bitrate = int(bitrate)
        if self.adapter is not None:
            self.adapter.on_target(self.target_bitrate)
        if self.encoder is not None:
            self.encoder.target_bitrate = self.target_bitrate
        limited = self.max_bitrate and self.target_bitrate < _BANDWIDTH_LIMITED * self.max_bitrate
        if self.sender.kind == "video":
            if limited and self.quality.reason != "bandwidth":
                self.quality.set("bandwidth")
            elif not limited and self.quality.reason == "bandwidth":
                self.quality.set("none")

    def note_cpu(self, frame_interval: float) -> None:
        """CPU limitation: encoding takes most of the frame interval (libwebrtc's
        overuse detector uses encode time against capture interval the same way)."""
        if self.sender.kind != "video" or self.quality.reason == "bandwidth":
            return
        busy = frame_interval > 0 and self.encode_time_ewma > 0.85 * frame_interval
        if busy and self.quality.reason != "cpu":
            self.quality.set("cpu")
        elif not busy and self.quality.reason == "cpu":
            self.quality.set("none")

    # --- RTP ----------------------------------------------------------------------

    def next_sequence(self) -> int:
        sequence = self.sequence
        self.sequence = (self.sequence + 1) & 0xFFFF
        return sequence

    def remember(self, sequence: int, data: bytes) -> None:
        """Keep a sent packet for retransmission; the one ``limit`` numbers back goes."""
        history = self.history
        history[sequence] = data
        limit = VIDEO_HISTORY if self.sender.kind == "video" else AUDIO_HISTORY
        history.pop((sequence - limit) & 0xFFFF, None)
        if len(history) > limit:  # a jump in the sequence (none in practice)
            for old in list(history)[: len(history) - limit]:
                del history[old]

    def sender_report(self) -> RtcpSrPacket | None:
        if self.last_rtp_timestamp is None:
            return None
        ntp = clock.current_ntp_time()
        elapsed = time.monotonic() - self.last_send_time
        rtp_timestamp = (
            self.last_rtp_timestamp + int(elapsed * self.sender.codec.clock_rate)
        ) & 0xFFFFFFFF
        middle = (ntp >> 16) & 0xFFFFFFFF
        self._sr_sent[middle] = time.monotonic()
        while len(self._sr_sent) > 8:
            self._sr_sent.popitem(last=False)
        return RtcpSrPacket(
            ssrc=self.ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=ntp,
                rtp_timestamp=rtp_timestamp,
                packet_count=self.packets_sent & 0xFFFFFFFF,
                octet_count=self.bytes_sent & 0xFFFFFFFF,
            ),
        )

    def handle_report(self, report: Any) -> None:
        """A report block about this layer (RFC 3550 §6.4.1): loss, jitter, RTT."""
        remote = self.remote
        self.remote_received = True
        remote.packets_lost = int(report.packets_lost)
        remote.fraction_lost = report.fraction_lost / 256.0
        remote.jitter = report.jitter / self.sender.codec.clock_rate
        remote.timestamp = time.time() * 1000.0
        now = time.monotonic()
        set_packet_loss = getattr(self.encoder, "set_packet_loss", None)
        if callable(set_packet_loss):  # Opus plans its in-band FEC for the reported loss
            set_packet_loss(remote.fraction_lost, now * 1000.0)
        sent = self._sr_sent.get(report.lsr) if report.lsr else None
        if sent is not None:
            rtt = now - sent - report.dlsr / 65536.0
            if rtt >= 0:
                remote.round_trip_time = rtt
                remote.total_round_trip_time += rtt
                remote.round_trip_time_measurements += 1


def copy_video_frame(frame: av.VideoFrame) -> av.VideoFrame:
    """A deep copy made from the planes' buffers only (safe while other threads read it)."""
    copy = av.VideoFrame(frame.width, frame.height, frame.format.name)
    for source, target in zip(frame.planes, copy.planes, strict=True):
        rows = source.height
        data = np.frombuffer(memoryview(source), np.uint8)[: rows * source.line_size]
        data = data.reshape(rows, source.line_size)[:, : min(source.line_size, target.line_size)]
        out = np.zeros((rows, target.line_size), np.uint8)
        out[:, : data.shape[1]] = data
        target.update(out.tobytes())
    copy.pts = frame.pts
    if frame.time_base is not None:
        copy.time_base = frame.time_base
    return copy


def audio_level(frame: av.AudioFrame) -> int:
    """RFC 6464/6465 level of a frame: 0 (loud) .. 127 (silence), as -dBov."""
    if frame.format.name == "s16":
        # Packed s16 (what AudioSource gives) read from its buffer and squared with
        # one dot product: 4 µs against 15 µs through to_ndarray and float64 arrays.
        count = frame.samples * len(frame.layout.channels)
        if count == 0:
            return 127
        pcm = np.frombuffer(memoryview(frame.planes[0]), np.int16, count).astype(np.float64)
        rms = math.sqrt(float(np.dot(pcm, pcm)) / count) / 32768.0
        if rms <= 0:
            return 127
        return int(min(127, max(0, round(-20 * math.log10(rms)))))
    samples = frame.to_ndarray()
    if samples.dtype == np.int16:
        values = samples.astype(np.float64) / 32768.0
    elif samples.dtype == np.int32:
        values = samples.astype(np.float64) / 2147483648.0
    else:
        values = samples.astype(np.float64)
    if values.size == 0:
        return 127
    rms = math.sqrt(float(np.mean(values * values)))
    if rms <= 0:
        return 127
    return int(min(127, max(0, round(-20 * math.log10(rms)))))


class RtpSender:
    """Sends one source on one m-section, on one or more layers.

    ``send`` writes a packet to the transport. Created by the peer when a
    send m-section is negotiated; :meth:`start` runs it until :meth:`stop`.
    """

    def __init__(
        self,
        *,
        kind: str,
        mid: str,
        source: Any,
        codec: NegotiatedCodec,
        extensions: Sequence[tuple[int, str]],
        encodings: Sequence[EncodingParameters],
        send: SendPacket,
        cname: str,
        encoder_factory: EncoderFactory,
        taken_ssrcs: set[int],
        max_bitrate: int | None = None,
        bitrate_cap: int | None = None,
        transform: FrameTransform | None = None,
    ) -> None:
        self.kind = kind
        self.mid = mid
        self.source = source
        self.codec = codec
        self.cname = cname
        self.stream_id = ""
        self.transform = transform
        #: issue 7: per layer, the frames in the transform, forwarded in order
        self._transforms: dict[SendLayer, TransformPipeline[SendLayer]] = {}
        self._send = send
        self._encoder_factory = encoder_factory
        self._max_bitrate = max_bitrate
        self._bitrate_cap = bitrate_cap
        self._ext_ids = dict((uri, ext_id) for ext_id, uri in extensions)
        self._extensions_map = extensions_map(extensions)
        self._header_cache: dict[tuple[str | None, int | None], _HeaderParts] = {}
        self._taken = taken_ssrcs
        self.layers: list[SendLayer] = []
        for params in encodings or [EncodingParameters()]:
            rtx = random_ssrc(taken_ssrcs) if codec.rtx_payload_type is not None else None
            self.layers.append(SendLayer(self, params, random_ssrc(taken_ssrcs), rtx))
        if codec.rtx_payload_type is None:
            for layer in self.layers:
                layer.rtx_ssrc = None
        self._pump_task: asyncio.Task[None] | None = None
        self._started = False
        self._stopped = False
        self._remb: int | None = None
        #: Called when the layers' maximum bit rates changed (the source's size became
        #: known): the peer re-splits the transport's estimate and re-paces.
        self.on_limits_changed: Callable[[], None] | None = None
        # media-source stats
        self.source_frames = 0
        self.source_width = 0
        self.source_height = 0
        self.source_fps = _RateWindow()
        self.source_audio_level = 0.0
        self.source_audio_energy = 0.0
        self.source_audio_duration = 0.0
        self._configure_layers()

    # --- lifecycle ------------------------------------------------------------------

    @property
    def simulcast(self) -> bool:
        return any(layer.rid for layer in self.layers)

    def layer_by_ssrc(self, ssrc: int) -> SendLayer | None:
        return next((layer for layer in self.layers if ssrc in (layer.ssrc, layer.rtx_ssrc)), None)

    @property
    def ssrcs(self) -> list[int]:
        out: list[int] = []
        for layer in self.layers:
            out.append(layer.ssrc)
            if layer.rtx_ssrc is not None:
                out.append(layer.rtx_ssrc)
        return out

    def start(self) -> None:
        """Start pulling from the source and sending (idempotent)."""
        if self._started or self._stopped:
            return
        self._started = True
        for layer in self.layers:
            layer.task = asyncio.ensure_future(self._run_layer(layer))
        self._pump_task = asyncio.ensure_future(self._pump())

    async def stop(self) -> None:
        """Stop sending and release the encoders. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        tasks = [t for t in [self._pump_task, *(layer.task for layer in self.layers)] if t]
        for layer in self.layers:
            layer.mailbox.close()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        transforms = list(self._transforms.values())
        self._transforms.clear()
        for pipeline in transforms:
            await pipeline.close()  # frames still in the transform are dropped
        for layer in self.layers:
            await layer.jobs.drain()  # an encode may still run on the pool
            if layer.encoder is not None:
                encoder, layer.encoder = layer.encoder, None
                try:
                    encoder.close()
                except Exception:  # a codec that fails to flush must not block teardown
                    logger.debug("closing an encoder failed", exc_info=True)
            layer.history.clear()
        for layer in self.layers:
            self._taken.discard(layer.ssrc)
            if layer.rtx_ssrc is not None:
                self._taken.discard(layer.rtx_ssrc)

    def update(
        self,
        codec: NegotiatedCodec,
        extensions: Sequence[tuple[int, str]],
        encodings: Sequence[EncodingParameters] | None,
    ) -> None:
        """A re-offer kept this mid: re-apply codec, extensions and encodings (§5.6).

        Layers keep their SSRCs; a codec change re-creates the encoders.
        """
        if (codec.name, codec.payload_type, codec.fmtp) != (
            self.codec.name,
            self.codec.payload_type,
            self.codec.fmtp,
        ):
            for layer in self.layers:
                layer.encoder = None
                layer.packetizer = None
        self.codec = codec
        self._ext_ids = dict((uri, ext_id) for ext_id, uri in extensions)
        self._extensions_map = extensions_map(extensions)
        self._header_cache = {}
        if encodings:
            by_rid = {e.rid: e for e in encodings}
            for layer in self.layers:
                if layer.rid in by_rid:
                    layer.params = by_rid[layer.rid]
        if codec.rtx_payload_type is None:
            for layer in self.layers:
                layer.rtx_ssrc = None
        self._configure_layers()

    def _configure_layers(self) -> None:
        for layer in self.layers:
            if layer.packetizer is None:
                layer.packetizer = create_packetizer(self.codec.name)
            if layer.encoder is None:
                layer.max_bitrate = self._layer_max_bitrate(layer, 0, 0)
                layer.target_bitrate = layer.max_bitrate
                layer.encoder = self._encoder_factory(self.codec, layer)
                # An encoder cheaper than a codec-pool round trip (Opus through ctypes)
                # runs on the event loop, as the audio decoders do.
                layer.jobs.inline = bool(getattr(layer.encoder, "encodes_inline", False))
        self._apply_bitrates()

    def _layer_max_bitrate(self, layer: SendLayer, width: int, height: int) -> int:
        """The encoding's ``maxBitrate``, else the connection's bit rate, else
        libwebrtc's default for the size; never above the SDP's ``b=TIAS``/``b=AS``."""
        if layer.params.max_bitrate:
            bitrate = layer.params.max_bitrate
        elif self.kind == "audio":
            bitrate = self._max_bitrate or opus_default_bitrate(
                *opus_sdp_stream_format(self.codec.fmtp)
            )
        elif self.simulcast:
            bitrate = default_max_bitrate(*layer.params.size_for(width or 640, height or 360))
        elif self._max_bitrate:
            bitrate = self._max_bitrate
        else:
            bitrate = single_stream_max_bitrate(width, height)
        return min(bitrate, self._bitrate_cap) if self._bitrate_cap else bitrate

    # --- media ----------------------------------------------------------------------

    async def _pump(self) -> None:
        # A sora_async VideoSource can skip its own I420 conversion: the layers
        # convert on the codec pool (SendLayer.encode), one thread hop less.
        recv = getattr(self.source, "_recv_unconverted", None)
        if not callable(recv):
            recv = self.source.recv
        try:
            while True:
                try:
                    item = await recv()
                except MediaStreamError:
                    return
                now = time.monotonic()
                self._note_source(item, now)
                # Pre-encoded packets have one size: they go out on the first layer.
                layers = self.layers[:1] if isinstance(item, av.Packet) else self.layers
                for layer in layers:
                    if not layer.active or layer.suspended:
                        continue
                    cap = layer.params.max_framerate
                    if cap and isinstance(item, av.VideoFrame):
                        # 10 % slack so a 30 fps source is not cut to 15 fps by jitter
                        if now - layer.last_accept < 0.9 / cap:
                            continue
                    if layer.adapter is not None and isinstance(item, av.VideoFrame):
                        # before a second of frames the rate reads low: 0 is "unknown"
                        fps = self.measured_source_fps or 0.0
                        layer.adapter.on_source(item.width, item.height, fps)
                        if not layer.adapter.accept():
                            continue  # degradation: frame-rate cap or frame dropper
                    layer.last_accept = now
                    if len(layer.mailbox) >= layer.mailbox.capacity:
                        layer.frames_dropped += 1
                    layer.mailbox.put(item)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("mid %s: the %s source failed", self.mid, self.kind)

    @property
    def measured_source_fps(self) -> float | None:
        """The source's frame rate over the last second, once a second of frames came
        (before, the window reads low: one frame is "1 fps")."""
        fps = self.source_fps.rate
        if fps < 1 or self.source_frames <= fps:
            return None
        return fps

    def _note_source(self, item: Any, now: float) -> None:
        self.source_frames += 1
        self.source_fps.tick(now)
        if isinstance(item, av.VideoFrame):
            if (item.width, item.height) != (self.source_width, self.source_height):
                self.source_width, self.source_height = item.width, item.height
                # Defaults depend on the size (libwebrtc's tables), known only now.
                for layer in self.layers:
                    layer.max_bitrate = self._layer_max_bitrate(layer, item.width, item.height)
                self._apply_bitrates()
                if self.on_limits_changed is not None:
                    self.on_limits_changed()
        elif isinstance(item, av.AudioFrame):
            level = audio_level(item)
            linear = 10 ** (-level / 20)
            duration = item.samples / item.sample_rate if item.sample_rate else 0.0
            self.source_audio_level = linear
            self.source_audio_energy += linear * linear * duration
            self.source_audio_duration += duration

    async def _run_layer(self, layer: SendLayer) -> None:
        try:
            while True:
                try:
                    item = await layer.mailbox.get()
                except EOFError:
                    return
                if isinstance(item, av.Packet):
                    frames = [self._packet_frame(item)]
                else:
                    force, layer.force_keyframe = layer.force_keyframe, False
                    encode_time = layer.total_encode_time
                    if layer.encoder is not None and self.kind == "video":
                        # read here, on the loop: the source's rate window is not thread-safe
                        layer.encoder.input_framerate = layer.input_framerate()
                    try:
                        frames = await layer.jobs.run(layer.encode, item, force)
                    except Exception as exc:
                        logger.warning("mid %s: encoding failed: %r", self.mid, exc)
                        await asyncio.sleep(0.1)  # do not spin on a broken encoder
                        continue
                    layer.note_cpu(1.0 / max(1.0, self.source_fps.rate or 30.0))
                    if layer.adapter is not None:
                        layer.adapter.on_encoded(
                            sum(len(f.data) for f in frames),
                            layer.total_encode_time - encode_time,
                            keyframe=any(f.is_keyframe for f in frames),
                        )
                for frame in frames:
                    await self._send_frame(layer, frame)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("mid %s: sending failed", self.mid)

    def _packet_frame(self, packet: av.Packet[Any]) -> EncodedFrame:
        clock_rate = self.codec.clock_rate
        time_base = packet.time_base
        timestamp = int((packet.pts or 0) * time_base * clock_rate) if time_base else 0
        return EncodedFrame(
            data=bytes(packet),
            timestamp=timestamp & 0xFFFFFFFF,
            codec=self.codec.name,
            is_keyframe=bool(packet.is_keyframe),
        )

    async def _send_frame(self, layer: SendLayer, frame: EncodedFrame) -> None:
        frame.payload_type = self.codec.payload_type
        frame.ssrc = layer.ssrc
        if layer.rid:
            frame.codec_specific["rid"] = layer.rid
        if self.kind == "video":
            layer.frames_encoded += 1
            if frame.is_keyframe:
                layer.key_frames_encoded += 1
            if frame.width:
                if (frame.width, frame.height) != (layer.frame_width, layer.frame_height):
                    if layer.frame_width:
                        layer.quality.resolution_changes += 1
                    layer.frame_width, layer.frame_height = frame.width, frame.height
        if self.transform is not None or layer in self._transforms:
            self._submit_transform(layer, frame)
            return
        await self._packetize(frame, layer)

    def _submit_transform(self, layer: SendLayer, frame: EncodedFrame) -> None:
        """Issue 7: hand the frame to the layer's transform pipeline (never waits); the
        pipeline packetizes the results in order."""
        if self.kind == "audio":  # the frame facts libwebrtc gives an audio transform
            if frame.audio_level is None:
                linear = self.source_audio_level
                frame.audio_level = int(-20 * math.log10(linear)) if linear > 0 else 127
            frame.codec_specific.setdefault(
                "absolute_capture_timestamp", time.monotonic_ns() // 1_000_000
            )
        pipeline = self._transforms.get(layer)
        if pipeline is None:
            pipeline = self._transforms[layer] = TransformPipeline(
                self.kind, self._packetize, name=f"mid {self.mid} {layer.rid or ''}".rstrip()
            )
        if not pipeline.submit(self.transform, frame, layer):
            layer.frames_dropped += 1
        if pipeline.wants_keyframe:
            layer.force_keyframe = True

    async def _packetize(self, frame: EncodedFrame, layer: SendLayer) -> None:
        assert layer.packetizer is not None
        try:
            payloads = layer.packetizer.packetize(frame, MAX_PAYLOAD_SIZE)
        except ValueError as exc:
            logger.warning("mid %s: cannot packetize a frame: %s", self.mid, exc)
            return
        timestamp = (frame.timestamp + layer.timestamp_offset) & 0xFFFFFFFF
        level = None
        if self.kind == "audio" and EXT_AUDIO_LEVEL in self._ext_ids:
            level = frame.audio_level
            if level is None:
                level = (
                    int(-20 * math.log10(self.source_audio_level))
                    if self.source_audio_level > 0
                    else 127
                )
        # The header extension block (what aiortc's RtpPacket.serialize writes) only
        # depends on the RID and the audio level: it is built once for them; per
        # packet only marker, sequence number and abs-send-time change.
        parts = self._header_cache.get((layer.rid, level))
        if parts is None:
            parts = self._header_parts(layer.rid, level)
        first_byte, before, after, header_size = parts
        payload_type = self.codec.payload_type
        marked = 0x80 | payload_type
        ssrc = layer.ssrc
        last = len(payloads) - 1
        video = self.kind == "video"
        send = self._send
        remember = layer.remember
        pack = _RTP_HEADER.pack
        join = b"".join
        for index, payload in enumerate(payloads):
            if video:
                marker = index == last
            else:
                # RFC 3551 §4.1: the marker starts a talkspurt (first packet, after DTX)
                marker = layer.started_talkspurt
                layer.started_talkspurt = False
            sequence = layer.sequence
            layer.sequence = (sequence + 1) & 0xFFFF
            head = pack(first_byte, marked if marker else payload_type, sequence, timestamp, ssrc)
            if after is None:
                data = join((head, before, payload))
            else:
                abs_time = abs_send_time().to_bytes(3, "big")
                data = join((head, before, abs_time, after, payload))
            remember(sequence, data)
            if await send(data):
                layer.packets_sent += 1
                layer.bytes_sent += len(payload)
                layer.header_bytes_sent += header_size
        layer.last_rtp_timestamp = timestamp
        layer.last_send_time = time.monotonic()
        if self.kind == "video":
            layer.frames_sent += 1
            layer.fps.tick()

    def _header_parts(self, rid: str | None, level: int | None) -> _HeaderParts:
        """The RTP header's first byte and its extension block as aiortc's
        ``RtpPacket.serialize`` writes them for ``rid`` and ``level``: split around the
        abs-send-time value when there is one to write per packet (``after`` is None
        when not), and the header size. Cached unless abs-send-time cannot be found
        in a one-byte block (then its value is the one of now, as aiortc's)."""
        probe = RtpPacket(payload_type=self.codec.payload_type)
        self._set_extensions(probe, rid, repaired=False, audio_level=level)
        profile, value = self._extensions_map.set(probe.extensions)
        extension = struct.pack("!HH", profile, len(value) >> 2) + value if value else b""
        parts: _HeaderParts = (0x90 if value else 0x80, extension, None, 12 + len(extension))
        if probe.extensions.abs_send_time is not None:
            at = -1
            if profile == 0xBEDE:
                at = one_byte_element_offset(
                    value, 0, len(value), self._ext_ids[EXT_ABS_SEND_TIME], 3
                )
            if at < 0:
                return parts  # not cached: a fresh abs-send-time per frame
            at += 4
            parts = (parts[0], extension[:at], extension[at + 3 :], parts[3])
        self._header_cache[(rid, level)] = parts
        return parts

    def _set_extensions(
        self, packet: RtpPacket, rid: str | None, *, repaired: bool, audio_level: int | None
    ) -> None:
        extensions = packet.extensions
        if EXT_MID in self._ext_ids:
            extensions.mid = self.mid
        if rid:
            if repaired:
                extensions.rtp_stream_id = None
                if EXT_RRID in self._ext_ids:
                    extensions.repaired_rtp_stream_id = rid
            elif EXT_RID in self._ext_ids:
                extensions.rtp_stream_id = rid
        if EXT_ABS_SEND_TIME in self._ext_ids:
            extensions.abs_send_time = abs_send_time()
        if audio_level is not None:
            extensions.audio_level = (False, audio_level)
        if EXT_TRANSPORT_CC in self._ext_ids:
            # A placeholder: the peer writes the transport-wide number at send time.
            extensions.transport_sequence_number = 0

    # --- RTCP -----------------------------------------------------------------------

    async def handle_rtcp(self, packet: Any) -> None:
        """A feedback or report packet addressed to one of our SSRCs."""
        if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            for report in packet.reports:
                layer = self.layer_by_ssrc(report.ssrc)
                if layer is not None and report.ssrc == layer.ssrc:
                    layer.handle_report(report)
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            layer = self.layer_by_ssrc(packet.media_ssrc)
            if layer is not None:
                layer.nack_count += 1
                for sequence in packet.lost:
                    await self._retransmit(layer, sequence)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI:
            layer = self.layer_by_ssrc(packet.media_ssrc)
            if layer is not None:
                layer.pli_count += 1
                layer.force_keyframe = True
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_FIR:
            # FIR names its targets in 8-byte FCI entries (RFC 5104 §4.3.1.1).
            fci = packet.fci
            for offset in range(0, len(fci) - 7, 8):
                layer = self.layer_by_ssrc(int.from_bytes(fci[offset : offset + 4], "big"))
                if layer is not None:
                    layer.fir_count += 1
                    layer.force_keyframe = True
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if any(self.layer_by_ssrc(ssrc) is not None for ssrc in ssrcs):
                self._remb = bitrate
                self._apply_bitrates()

    def padding_packet(self, size: int) -> bytes | None:
        """A padding-only RTX packet (up to 255 bytes of padding, as libwebrtc's
        ``GeneratePadding``) on the RTX stream of the highest running layer, for the
        transport's padding (issue 6); None without RTX or before any media."""
        if self.kind != "video" or self.codec.rtx_payload_type is None:
            return None
        layer = next(
            (
                x
                for x in reversed(self.layers)
                if x.active
                and not x.suspended
                and x.rtx_ssrc is not None
                and x.last_rtp_timestamp is not None
            ),
            None,
        )
        if layer is None or layer.rtx_ssrc is None or layer.last_rtp_timestamp is None:
            return None
        packet = RtpPacket(
            payload_type=self.codec.rtx_payload_type,
            sequence_number=layer.rtx_sequence,
            timestamp=layer.last_rtp_timestamp,
            ssrc=layer.rtx_ssrc,
        )
        layer.rtx_sequence = (layer.rtx_sequence + 1) & 0xFFFF
        packet.padding_size = max(1, min(255, size))
        self._set_extensions(packet, layer.rid, repaired=True, audio_level=None)
        return packet.serialize(self._extensions_map)

    async def _retransmit(self, layer: SendLayer, sequence: int) -> None:
        sent = layer.history.get(sequence)
        if sent is None:
            return
        try:
            original = RtpPacket.parse(sent, self._extensions_map)
        except ValueError:
            return
        packet = original
        if layer.rtx_ssrc is not None and self.codec.rtx_payload_type is not None:
            packet = wrap_rtx(
                original,
                payload_type=self.codec.rtx_payload_type,
                sequence_number=layer.rtx_sequence,
                ssrc=layer.rtx_ssrc,
            )
            layer.rtx_sequence = (layer.rtx_sequence + 1) & 0xFFFF
            packet.extensions = type(original.extensions)(**vars(original.extensions))
            self._set_extensions(packet, layer.rid, repaired=True, audio_level=None)
        data = packet.serialize(self._extensions_map)
        if await self._send(data):
            layer.retransmitted_packets_sent += 1
            layer.retransmitted_bytes_sent += len(original.payload)

    def _apply_bitrates(self) -> None:
        """Split the estimate over the active layers, lowest first (as libwebrtc)."""
        active = [layer for layer in self.layers if layer.active]
        budget = self._remb
        if self.simulcast and self.kind == "video" and budget is not None and active:
            self._allocate_simulcast(active, budget)
            return
        for layer in self.layers:
            if not layer.active:
                continue
            if budget is None:
                layer.apply_target_bitrate(layer.max_bitrate)
                continue
            share = min(layer.max_bitrate, budget) if layer is not active[-1] else budget
            share = min(share, layer.max_bitrate)
            layer.apply_target_bitrate(max(share, 30_000))
            budget = max(0, budget - share)

    def _allocate_simulcast(self, active: list[SendLayer], budget: int) -> None:
        """libwebrtc's ``SimulcastRateAllocator``: layers whose min bit rate no longer
        fits are turned off, highest first, rather than scaled (issue 6); a layer that
        comes back starts with a key frame (``LibvpxVp8Encoder::SetRates``)."""
        width, height = self.source_width or 640, self.source_height or 360
        limits = [
            simulcast_limits(*layer.params.size_for(width, height), layer.max_bitrate)
            for layer in active
        ]
        shares = allocate_simulcast(budget, limits, [not layer.suspended for layer in active])
        for layer, share in zip(active, shares, strict=True):
            if share <= 0:
                if not layer.suspended:
                    layer.suspended = True
                    logger.info("mid %s: layer %s off (%d bps)", self.mid, layer.rid, budget)
                if layer.quality.reason != "bandwidth":
                    layer.quality.set("bandwidth")
                continue
            if layer.suspended:
                layer.suspended = False
                layer.force_keyframe = True
                logger.info("mid %s: layer %s back on (%d bps)", self.mid, layer.rid, budget)
            layer.apply_target_bitrate(share)

    def set_degradation_preference(self, preference: Any) -> None:
        """``degradation_preference`` (a :class:`~sora_async.DegradationPreference`, its
        name or value) for a single-stream video sender. None is libwebrtc's default for
        camera video, ``MAINTAIN_FRAMERATE`` (``WebRtcVideoSendStream::
        GetDegradationPreference``): the official client left unset, on a 1 Mbit/s link,
        sent 640x360 at 29 fps of a 1280x720 source, as with ``MAINTAIN_FRAMERATE``, and
        1280x720 at 6 fps only with ``DISABLED``."""
        if self.kind != "video" or len(self.layers) != 1:
            return
        if preference is None:
            preference = DegradationPreference.MAINTAIN_FRAMERATE
        if isinstance(preference, str):
            preference = DegradationPreference[preference.upper()]
        layer = self.layers[0]
        layer.adapter = DegradationAdapter(DegradationPreference(preference))
        layer.adapter.on_target(layer.target_bitrate)

    def set_estimate(self, bitrate: int) -> None:
        """The transport's bandwidth estimate for this sender (bps), split over its layers."""
        self._remb = int(bitrate)
        self._apply_bitrates()

    def sender_reports(self) -> list[RtcpSrPacket]:
        """One SR per layer that sent something."""
        return [r for layer in self.layers if (r := layer.sender_report()) is not None]

    @property
    def available_bitrate(self) -> int | None:
        """The last REMB estimate (bps), for ``availableOutgoingBitrate``."""
        return self._remb


_RTP_HEADER = struct.Struct("!BBHLL")
#: the first byte, the extension block (before, after abs-send-time), header size
_HeaderParts = tuple[int, bytes, bytes | None, int]
#: Seconds from the NTP epoch (1900) to the Unix epoch (1970).
_NTP_UNIX_OFFSET = 2_208_988_800


def abs_send_time() -> int:
    """The abs-send-time extension's value now: NTP seconds in 6.18 fixed point,
    24 bits (``(ntp >> 14) & 0xFFFFFF``, without aiortc's datetime arithmetic)."""
    return int((time.time() + _NTP_UNIX_OFFSET) * 262144) & 0xFFFFFF


def extensions_map(extensions: Sequence[tuple[int, str]]) -> HeaderExtensionsMap:
    """aiortc's header-extension codec for ``(id, uri)`` pairs."""
    extensions_map = HeaderExtensionsMap()
    extensions_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=ext_id, uri=uri) for ext_id, uri in extensions
            ]
        )
    )
    return extensions_map


__all__ = [
    "EncodingParameters",
    "FrameTransform",
    "RtpSender",
    "SendLayer",
    "audio_level",
    "default_max_bitrate",
    "extensions_map",
]
