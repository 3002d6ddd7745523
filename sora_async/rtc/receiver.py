"""The receive side of one m-section: RTP → frames → decoder → :class:`RemoteTrack`.

An :class:`RtpReceiver` gets the packets the peer routed to its mid. Each
SSRC has its own :class:`InboundStream` (frame assembly with
:class:`~sora_async.codecs.FrameAssembler`, RFC 3550 reception statistics,
NACK bookkeeping), so several SSRCs on one receiver never corrupt each
other. One of them at a time feeds the decoder: when the SFU switches a
simulcast layer (a new SSRC), the receiver moves over at the new stream's
first key frame and keeps decoding.

::

    RTP ─► RTX unwrap ─► InboundStream (stats, NACK, assembler) ─► EncodedFrame
      ─► transform pipeline (issue 7, when set: frames in flight, results in order)
      ─► decode queue (bounded)
      ─► decoder on the codec pool (one frame in flight per receiver; video frames of
         all receivers of a loop go in batches, one pool job for several)
      ─► RemoteTrack queue (video: newest wins; audio: bounded, oldest dropped)

Loss: missing packets are NACKed at once and again every 100 ms up to ten
times (RTX or plain retransmissions both work); when a frame is lost for good
the assembler drops what depends on it and a PLI is sent, at most one per
0.5 s per stream.
"""

from __future__ import annotations

import asyncio
import fractions
import functools
import logging
import struct
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import (
    RTCP_PSFB_PLI,
    RTCP_RTPFB,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_rtcp_packet,
)

from ..codecs.assembler import FrameAssembler
from ..codecs.base import DecodeError, Decoder, EncodedFrame
from ..codecs.registry import create_depacketizer
from ..enums import TrackState
from ..transform import TransformPipeline, receive_hook
from ._workers import DRAIN_LIMIT, CodecJobs, Mailbox, seq_newer
from .sdp import NegotiatedCodec

logger = logging.getLogger("sora_async.rtc")

FrameTransform = Callable[[EncodedFrame], Awaitable[EncodedFrame | None]]
SendPacket = Callable[[bytes], Awaitable[bool]]
DecoderFactory = Callable[[NegotiatedCodec], Decoder]

#: Decoded frames a :class:`RemoteTrack` keeps for a slow consumer: video keeps
#: the newest two (latency stays bounded), audio 1 s of 20 ms frames.
VIDEO_TRACK_QUEUE = 2
AUDIO_TRACK_QUEUE = 50
#: Encoded frames waiting for the decoder; beyond that (video) everything
#: queued is dropped and a key frame requested: the decoder cannot keep up.
VIDEO_DECODE_QUEUE = 30
AUDIO_DECODE_QUEUE = 50
#: NACK policy (libwebrtc's NackRequester has similar limits).
NACK_INTERVAL = 0.1
NACK_MAX_RETRIES = 10
NACK_MAX_AGE = 500  # packets behind the newest
#: At most one PLI per stream per this many seconds.
PLI_INTERVAL = 0.5
#: A stream that sent nothing for this long may be replaced by another SSRC at once.
STREAM_IDLE = 1.0


class RemoteTrack(MediaStreamTrack):
    """A media track received from another connection of the channel.

    ``stream_id`` is the ``a=msid`` stream id Sora gives it, i.e. the sending
    connection's ``connection_id``; ``mid`` is its m-section. :meth:`recv`
    returns decoded ``av.VideoFrame``/``av.AudioFrame`` objects (48 kHz s16
    stereo audio; pts on the RTP clock from 0) and raises
    ``aiortc.mediastreams.MediaStreamError`` once the track ended. It is an
    aiortc ``MediaStreamTrack``, so aiortc's recorders and relays take it;
    ``track`` returns the object itself for code written against the former
    wrapper.

    Example::

        async def show(track):
            while True:
                frame = await track.recv()
                print(track.kind, frame)


        conn.on("track", lambda track: asyncio.create_task(show(track)))
    """

    def __init__(
        self,
        kind: str,
        *,
        track_id: str | None,
        stream_id: str | None,
        mid: str | None,
        queue_size: int | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind
        if track_id:
            self._id = track_id
        self.stream_id = stream_id
        self.mid = mid
        size = queue_size or (VIDEO_TRACK_QUEUE if kind == "video" else AUDIO_TRACK_QUEUE)
        self._frames: Mailbox[av.frame.Frame] = Mailbox(size)
        self._receiver: RtpReceiver | None = None
        self._enabled = True
        self._taps: list[_Tap] = []
        self._polled = False  # recv() was called: frames are queued for it too
        #: What the taps want the decoder to produce, recomputed when they change
        #: (read per packet): audio (sample rate, channels), or None for 48 kHz stereo.
        self._audio_format: tuple[int, int] | None = None
        #: The taps' per-frame preparations, run inside the decode job (see :meth:`_tap`).
        self._prepares: tuple[Callable[[av.frame.Frame], Any], ...] = ()

    @property
    def track(self) -> RemoteTrack:
        """The track itself (kept for callers of the former ``RemoteTrack.track``)."""
        return self

    @property
    def state(self) -> TrackState:
        """LIVE until the stream leaves the channel or the connection ends."""
        return TrackState.LIVE if self.readyState == "live" else TrackState.ENDED

    @property
    def enabled(self) -> bool:
        """False after ``set_enabled(False)``: frames are decoded but not delivered."""
        return self._enabled

    def set_enabled(self, enabled: bool) -> None:
        """Pause (False) or resume delivery; decoding goes on so resuming is instant."""
        self._enabled = bool(enabled)
        if not self._enabled:
            self._frames.clear()

    @property
    def frames_dropped(self) -> int:
        """Decoded frames dropped because the consumer read too slowly."""
        return self._frames.dropped

    async def recv(self) -> av.frame.Frame:
        """The next decoded frame; raises ``MediaStreamError`` once the track ended."""
        if self.readyState != "live":
            raise MediaStreamError
        if not self._polled:
            self._polled = True
            self._taps_changed()  # recv() gets 48 kHz stereo, whatever the taps wanted
        try:
            return await self._frames.get()
        except EOFError:
            raise MediaStreamError from None

    async def ended(self) -> None:
        """Wait until the track ends (its stream left the channel, or the connection ended)."""
        if self.readyState == "ended":
            return
        ended = asyncio.Event()
        self.once("ended", ended.set)
        await ended.wait()

    def set_frame_transformer(self, transformer: Any) -> None:
        """Transform each encoded frame of this track before it is decoded (issue 7).

        ``transformer`` is an :class:`~sora_async.AudioFrameTransformer` /
        :class:`~sora_async.VideoFrameTransformer` of the track's kind, or an
        ``async def transform(frame) -> frame | None`` (None drops the frame);
        see :mod:`sora_async.transform`. None removes it. ``TypeError`` for
        anything else or a transformer of the other kind.
        """
        hook = receive_hook(transformer, self.kind)
        if self._receiver is not None:
            self._receiver.transform = hook

    def stop(self) -> None:
        """End the track (also what the engine does when its stream leaves).

        Frames not read yet are dropped: an ended track holds no media.
        """
        self._frames.close()
        self._frames.clear()
        taps, self._taps = self._taps, []
        self._taps_changed()
        super().stop()
        for tap in taps:
            tap.on_end()

    def _tap(
        self,
        on_frame: Callable[[Any], None],
        on_end: Callable[[], None],
        *,
        audio_format: tuple[int, int] | None = None,
        prepare: Callable[[av.frame.Frame], Any] | None = None,
    ) -> Callable[[], None]:
        """Internal (the sinks): hand each decoded frame to ``on_frame`` as it is
        decoded, on the event loop, instead of queueing it for :meth:`recv` (a task
        wake-up per frame less); ``on_end()`` once the track ended. Frames already
        queued go first (unless :meth:`recv` is used too: it keeps getting every
        frame). Returns the function that undoes it.

        ``audio_format``: the (sample rate, channels) the consumer converts to. While
        every tap wants the same one and :meth:`recv` is not used, the decoder
        produces it itself where it can (libopus decodes to 8-48 kHz, mono or
        stereo), so ``on_frame`` gets frames of that format or of 48 kHz stereo.

        ``prepare(frame)``: runs on the codec thread right after the frame is
        decoded (e.g. the BGR conversion of a ``VideoSink``), so the frame crosses
        to the event loop once, converted; ``on_frame`` then gets its result.
        Frames decoded before the tap (or when ``prepare`` raised) come as they are.
        """
        while not self._polled and (queued := self._frames.get_nowait()) is not None:
            on_frame(queued)
        entry = _Tap(on_frame, on_end, audio_format, prepare)
        if self.readyState != "live":
            on_end()
        else:
            self._taps.append(entry)
            self._taps_changed()

        def untap() -> None:
            if entry in self._taps:
                self._taps.remove(entry)
                self._taps_changed()

        return untap

    def _taps_changed(self) -> None:
        formats = {tap.audio_format for tap in self._taps}
        single = formats.pop() if len(formats) == 1 else None
        self._audio_format = None if self._polled else single
        self._prepares = tuple(tap.prepare for tap in self._taps if tap.prepare is not None)

    def _deliver(self, frame: av.frame.Frame, prepared: dict[Any, Any] | None = None) -> None:
        if self._enabled and self.readyState == "live":
            if self._taps:
                for tap in list(self._taps):
                    prepare = tap.prepare
                    if prepare is not None and prepared is not None and prepare in prepared:
                        tap.on_frame(prepared[prepare])
                    else:
                        tap.on_frame(frame)
                if not self._polled:
                    return
            self._frames.put(frame)

    def __repr__(self) -> str:
        return (
            f"RemoteTrack(kind={self.kind!r}, id={self.id!r}, stream_id={self.stream_id!r}, "
            f"mid={self.mid!r})"
        )


class _Tap:
    """One consumer of :meth:`RemoteTrack._tap`."""

    __slots__ = ("audio_format", "on_end", "on_frame", "prepare")

    def __init__(
        self,
        on_frame: Callable[[Any], None],
        on_end: Callable[[], None],
        audio_format: tuple[int, int] | None,
        prepare: Callable[[av.frame.Frame], Any] | None,
    ) -> None:
        self.on_frame = on_frame
        self.on_end = on_end
        self.audio_format = audio_format
        self.prepare = prepare


class NackTracker:
    """Which sequence numbers are missing, and which to NACK now (with limits)."""

    def __init__(self) -> None:
        self.max_seq: int | None = None
        #: seq -> [first missing time, last NACK time, NACKs sent]
        self.missing: dict[int, list[float]] = {}

    def add(self, seq: int, now: float) -> list[int]:
        """Record a received packet; returns sequence numbers newly found missing."""
        if self.max_seq is None:
            self.max_seq = seq
            return []
        if not seq_newer(seq, self.max_seq):
            self.missing.pop(seq, None)  # a retransmission or a late packet
            return []
        gap = (seq - self.max_seq - 1) & 0xFFFF
        new: list[int] = []
        if gap > NACK_MAX_AGE:
            self.missing.clear()  # a jump: NACKing it all would be useless (PLI instead)
        else:
            for offset in range(1, gap + 1):
                missing = (self.max_seq + offset) & 0xFFFF
                self.missing[missing] = [now, now, 1]
                new.append(missing)
        self.max_seq = seq
        if self.missing:  # nothing to scan (and no list built) per packet without loss
            for old in [s for s in self.missing if (seq - s) & 0xFFFF > NACK_MAX_AGE]:
                del self.missing[old]
        return new

    def due(self, now: float, interval: float = NACK_INTERVAL) -> list[int]:
        """Missing packets whose NACK should be repeated now; gives up after the limit."""
        out: list[int] = []
        for seq, entry in list(self.missing.items()):
            if entry[2] >= NACK_MAX_RETRIES:
                del self.missing[seq]
            elif now - entry[1] >= interval:
                entry[1] = now
                entry[2] += 1
                out.append(seq)
        return out


def nack_packet(sender_ssrc: int, media_ssrc: int, lost: Sequence[int]) -> bytes:
    """A generic NACK (RFC 4585 §6.2.1), wrap-around safe (aiortc's is not)."""
    payload = struct.pack("!LL", sender_ssrc, media_ssrc)
    ordered = sorted(set(lost), key=lambda s: (s - lost[0]) & 0xFFFF)
    index = 0
    while index < len(ordered):
        pid = ordered[index]
        blp = 0
        index += 1
        while index < len(ordered):
            distance = (ordered[index] - pid - 1) & 0xFFFF
            if distance >= 16:
                break
            blp |= 1 << distance
            index += 1
        payload += struct.pack("!HH", pid, blp)
    return pack_rtcp_packet(RTCP_RTPFB, RTCP_RTPFB_NACK, payload)


class InboundStream:
    """One SSRC arriving at a receiver: assembly, statistics, loss recovery."""

    def __init__(self, receiver: RtpReceiver, ssrc: int, codec: NegotiatedCodec) -> None:
        self.receiver = receiver
        self.ssrc = ssrc
        self.codec = codec
        #: The RID extension's value on this stream, when the sender sets it.
        self.rid: str | None = None
        self.assembler = self._assembler(codec)
        self.nack = NackTracker()
        #: ``codec.nack``, read per packet (the property scans the feedback list).
        self.nack_enabled = codec.nack
        # RFC 3550 A.1/A.3/A.8 reception statistics
        self.base_seq: int | None = None
        self.max_seq = 0
        self.cycles = 0
        self.packets_received = 0
        self.bytes_received = 0
        self.header_bytes_received = 0
        self.retransmitted_packets_received = 0
        self.jitter = 0.0  # RTP timestamp units
        self._last_transit: int | None = None
        self._expected_prior = 0
        self._received_prior = 0
        self.last_packet_time = 0.0  # time.monotonic()
        self.last_sr = 0
        self.last_sr_time = 0.0
        self.remote_packets_sent = 0
        self.remote_bytes_sent = 0
        # decoding and feedback
        self.frames_decoded = 0
        self.key_frames_decoded = 0
        self.frames_dropped = 0
        self.decode_errors = 0
        self.total_decode_time = 0.0
        self.frame_width = 0
        self.frame_height = 0
        self.nack_count = 0
        self.pli_count = 0
        self.last_pli = float("-inf")
        self.fps = _RateWindow()
        self.total_samples_received = 0

    @property
    def last_packet_ms(self) -> float:
        """Wall-clock time (ms since the epoch) of the last packet, 0.0 before any.

        Derived from the monotonic arrival time when asked (stats), rather than a
        second clock read per packet."""
        if not self.last_packet_time:
            return 0.0
        return (time.time() - (time.monotonic() - self.last_packet_time)) * 1000.0

    @staticmethod
    def _assembler(codec: NegotiatedCodec) -> FrameAssembler:
        window = 3 if codec.kind == "audio" else 8
        return FrameAssembler(create_depacketizer(codec.name), reorder_window=window)

    def set_codec(self, codec: NegotiatedCodec) -> None:
        """The payload type moved to another codec: start assembling afresh."""
        if codec.name != self.codec.name:
            self.assembler = self._assembler(codec)
        self.codec = codec
        self.nack_enabled = codec.nack

    def observe(
        self,
        packet: RtpPacket,
        size: int,
        arrival_ms: int,
        retransmitted: bool,
        now: float | None = None,
    ) -> None:
        """Count one packet (RFC 3550 A.1/A.8); ``now``: its ``time.monotonic()``."""
        self.last_packet_time = time.monotonic() if now is None else now
        payload_size = len(packet.payload)
        self.packets_received += 1
        self.bytes_received += payload_size
        if size > payload_size:
            self.header_bytes_received += size - payload_size
        if retransmitted:
            self.retransmitted_packets_received += 1
            return
        seq = packet.sequence_number
        if self.base_seq is None:
            self.base_seq = seq
            self.max_seq = seq
        elif seq != self.max_seq and ((seq - self.max_seq) & 0xFFFF) < 0x8000:  # seq_newer
            if seq < self.max_seq:
                self.cycles += 1 << 16
            self.max_seq = seq
        arrival = arrival_ms * self.codec.clock_rate // 1000
        transit = arrival - packet.timestamp
        if self._last_transit is not None:
            delta = abs(transit - self._last_transit)
            if delta < 1 << 31:  # not across a timestamp wrap or a stream restart
                self.jitter += (delta - self.jitter) / 16
        self._last_transit = transit

    @property
    def packets_expected(self) -> int:
        if self.base_seq is None:
            return 0
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def packets_lost(self) -> int:
        return max(-(1 << 23), min((1 << 23) - 1, self.packets_expected - self.packets_received))

    def report(self) -> RtcpReceiverInfo | None:
        """A report block for our next RR (RFC 3550 §6.4.1)."""
        if self.base_seq is None:
            return None
        expected = self.packets_expected
        expected_interval = expected - self._expected_prior
        received_interval = self.packets_received - self._received_prior
        self._expected_prior, self._received_prior = expected, self.packets_received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        dlsr = int((time.monotonic() - self.last_sr_time) * 65536) if self.last_sr_time else 0
        return RtcpReceiverInfo(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            packets_lost=self.packets_lost,
            highest_sequence=(self.cycles + self.max_seq) & 0xFFFFFFFF,
            jitter=int(self.jitter),
            lsr=self.last_sr,
            dlsr=dlsr,
        )


class _RateWindow:
    def __init__(self) -> None:
        self._times: list[float] = []

    def tick(self) -> None:
        now = time.monotonic()
        self._times.append(now)
        if len(self._times) > 240:
            del self._times[:120]

    @property
    def rate(self) -> float:
        now = time.monotonic()
        return float(sum(1 for t in self._times if now - t <= 1.0))


class _TimestampMapper:
    """RTP timestamps → pts from 0, unwrapped, continuous across SSRC switches."""

    def __init__(self, step: int) -> None:
        self._step = step
        self._ssrc: int | None = None
        self._last_in = 0
        self._last_out: int | None = None
        self._offset = 0

    def map(self, ssrc: int, timestamp: int) -> int:
        if self._last_out is None:
            self._offset = -timestamp
        elif ssrc != self._ssrc:
            self._offset = self._last_out + self._step - timestamp
        else:
            delta = (timestamp - self._last_in) & 0xFFFFFFFF
            if delta >= 1 << 31:
                delta -= 1 << 32  # reordered (older) timestamp
            return self._emit(ssrc, timestamp, self._last_out + delta)
        return self._emit(ssrc, timestamp, timestamp + self._offset)

    def _emit(self, ssrc: int, timestamp: int, out: int) -> int:
        self._ssrc, self._last_in = ssrc, timestamp
        self._last_out = max(out, 0)
        return self._last_out


#: Video decode jobs handed to the codec pool together (one pool job, one loop
#: wake-up for their results), at most this many per pool job so that several
#: codec threads still share a busy moment. A frame's result waits for the whole
#: job, and each receiver has one frame in flight, so the job's length bounds a
#: receiver's frame rate: at 50 connections on 2 cores (a frame 1.85 ms of wall time
#: in a job) 8 per job gave 18-26 frames decoded per s and connection, dropping and
#: asking for key frames; 4 per job 27.2-27.3, in alternating runs.
DECODE_BATCH = 4


class _DecodeBatches:
    """The video decodes one pass of the event loop starts, for every receiver of
    the loop, handed to the codec pool in batches of :data:`DECODE_BATCH`.

    One pool job per frame cost a thread wake-up, a GIL hand-over and a result
    hand-back each (``CodecJobs``: ~100-180 µs of CPU per round trip); with 50
    receiving connections in a process that was 1500 round trips a second.
    Gathered until the end of the loop's current pass (``call_soon``), frames of
    many receivers share one. Each receiver still has at most one frame in flight,
    so its frames stay in order, and each frame's outcome goes to its receiver's
    ``_decoded`` as if it had been a job of its own.
    """

    def __init__(self) -> None:
        # No reference to the loop: it is this object's key in a weak mapping.
        self._pending: list[tuple[RtpReceiver, InboundStream, EncodedFrame]] = []
        self._jobs = CodecJobs()

    def add(
        self,
        loop: asyncio.AbstractEventLoop,
        receiver: RtpReceiver,
        stream: InboundStream,
        frame: EncodedFrame,
    ) -> None:
        """Decode ``frame`` with the others of this pass of ``loop`` (the running one)."""
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((receiver, stream, frame))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), DECODE_BATCH):
            batch = pending[start : start + DECODE_BATCH]
            done = functools.partial(self._done, batch)
            try:
                self._jobs.start(done, _decode_batch, batch)
            except BaseException as exc:  # the pool refused it: each receiver hears
                done(False, exc)

    @staticmethod
    def _done(
        batch: list[tuple[RtpReceiver, InboundStream, EncodedFrame]], ok: bool, value: Any
    ) -> None:
        outcomes = value if ok else [(False, value)] * len(batch)
        for (receiver, stream, frame), (frame_ok, result) in zip(batch, outcomes, strict=True):
            try:
                receiver._decoded(stream, frame, frame_ok, result)
            except Exception:
                logger.exception("mid %s: handling a decoded frame failed", receiver.mid)


def _decode_batch(
    batch: list[tuple[RtpReceiver, InboundStream, EncodedFrame]],
) -> list[tuple[bool, Any]]:
    """On the codec pool: each frame of a batch decoded by its receiver, in turn."""
    outcomes: list[tuple[bool, Any]] = []
    for receiver, stream, frame in batch:
        if receiver._stopped:  # stopped meanwhile: its decoder may be closing
            outcomes.append((False, DecodeError("the receiver stopped")))
            continue
        try:
            outcomes.append((True, receiver._decode(stream.codec, frame)))
        except Exception as exc:
            outcomes.append((False, exc))
    return outcomes


_decode_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _DecodeBatches] = (
    weakref.WeakKeyDictionary()
)


def _batches_for(loop: asyncio.AbstractEventLoop) -> _DecodeBatches:
    batches = _decode_batches.get(loop)
    if batches is None:
        batches = _decode_batches[loop] = _DecodeBatches()
    return batches


class RtpReceiver:
    """Receives one m-section's media and feeds its :class:`RemoteTrack`."""

    def __init__(
        self,
        *,
        kind: str,
        mid: str,
        codecs: Sequence[NegotiatedCodec],
        track: RemoteTrack,
        send_rtcp: SendPacket,
        rtcp_ssrc: int,
        decoder_factory: DecoderFactory,
        transform: FrameTransform | None = None,
    ) -> None:
        self.kind = kind
        self.mid = mid
        self.track = track
        track._receiver = self
        self.transform = transform
        #: issue 7: the frames in the transform, queued for the decoder in order
        self._transforms: TransformPipeline[InboundStream] | None = None
        self._send_rtcp = send_rtcp
        self._rtcp_ssrc = rtcp_ssrc
        self._decoder_factory = decoder_factory
        self._codecs: dict[int, NegotiatedCodec] = {}
        self._rtx: dict[int, int] = {}
        self.update(codecs)
        self.streams: dict[int, InboundStream] = {}
        #: RTX SSRC -> media SSRC (from a=ssrc-group:FID, or learnt)
        self.rtx_ssrcs: dict[int, int] = {}
        self._active: InboundStream | None = None
        self._queue: Mailbox[tuple[InboundStream, EncodedFrame]] = Mailbox(
            (VIDEO_DECODE_QUEUE if kind == "video" else AUDIO_DECODE_QUEUE) + 1
        )
        self._needs_keyframe = False
        self._decoders: dict[str, Decoder] = {}
        # Opus decodes in 15-30 µs (libopus straight to the sink's format), far less than
        # a pool round trip (100-180 µs of CPU): audio decodes inline.
        self._jobs = CodecJobs(inline=kind == "audio")
        self._clock = 90000 if kind == "video" else 48000
        self._time_base = fractions.Fraction(1, self._clock)  # one object for every frame
        #: (decoder, the track's wanted format) last applied to that decoder.
        self._format_applied: tuple[Decoder, tuple[int, int] | None] | None = None
        self._timestamps = _TimestampMapper(3000 if kind == "video" else 960)
        #: A decode job is on the codec pool (one at a time keeps the frames in order);
        #: its completion starts the next one (no task per receiver).
        self._decoding = False
        #: Resolved by :meth:`_decoded` for :meth:`stop`, which waits for a batched
        #: decode (not one of ``_jobs``) still using the decoder.
        self._idle: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # key frame requests after errors
        self._stopped = False

    @property
    def codecs(self) -> list[NegotiatedCodec]:
        return list(self._codecs.values())

    def update(self, codecs: Sequence[NegotiatedCodec]) -> None:
        """(Re-)negotiated codecs of the m-section."""
        self._codecs = {c.payload_type: c for c in codecs}
        self._rtx = {
            c.rtx_payload_type: c.payload_type for c in codecs if c.rtx_payload_type is not None
        }

    def accepts_payload_type(self, payload_type: int) -> bool:
        return payload_type in self._codecs or payload_type in self._rtx

    @property
    def nack_negotiated(self) -> bool:
        """A codec of the m-section has NACK feedback (``a=rtcp-fb:... nack``): then
        :meth:`tick` repeats NACKs and wants the short tick."""
        return any(codec.nack for codec in self._codecs.values())

    # --- RTP -----------------------------------------------------------------------

    async def handle_rtp(self, packet: RtpPacket, size: int, arrival_ms: int) -> None:
        """One packet routed to this m-section (on the event loop; quick)."""
        if self._stopped:
            return
        retransmitted = False
        if packet.payload_type in self._rtx:
            media_ssrc = self.rtx_ssrcs.get(packet.ssrc)
            if media_ssrc is None:
                media_ssrc = self._guess_media_ssrc(packet)
                if media_ssrc is None:
                    return
                self.rtx_ssrcs[packet.ssrc] = media_ssrc
            if len(packet.payload) < 2:
                return  # padding-only probe
            original_pt = self._rtx[packet.payload_type]
            packet = RtpPacket(
                payload_type=original_pt,
                marker=packet.marker,
                sequence_number=struct.unpack_from("!H", packet.payload)[0],
                timestamp=packet.timestamp,
                ssrc=media_ssrc,
                payload=packet.payload[2:],
            )
            retransmitted = True
        codec = self._codecs.get(packet.payload_type)
        if codec is None:
            return
        stream = self.streams.get(packet.ssrc)
        if stream is None:
            stream = self.streams[packet.ssrc] = InboundStream(self, packet.ssrc, codec)
        elif stream.codec.payload_type != codec.payload_type:
            stream.set_codec(codec)
        now = time.monotonic()
        stream.observe(packet, size, arrival_ms, retransmitted, now)
        if not retransmitted:
            rid = packet.extensions.rtp_stream_id
            if rid:
                stream.rid = rid
        if stream.nack_enabled:
            missing = stream.nack.add(packet.sequence_number, now)
            if missing:
                await self._send_nack(stream, missing)
        for assembled in stream.assembler.add(
            packet.sequence_number, packet.timestamp, bool(packet.marker), packet.payload
        ):
            frame = assembled.frame
            frame.payload_type = codec.payload_type
            frame.ssrc = stream.ssrc
            if stream.rid:  # issue 7: the simulcast layer, for encoded transforms
                frame.codec_specific["rid"] = stream.rid
            if self.transform is not None or self._transforms is not None:
                await self._submit_transform(stream, frame, packet, assembled.first_sequence)
            else:
                self._enqueue(stream, frame)
        if stream.assembler.keyframe_needed:
            await self.request_keyframe(stream)

    async def _submit_transform(
        self, stream: InboundStream, frame: EncodedFrame, packet: RtpPacket, first_sequence: int
    ) -> None:
        """Issue 7: after depacketizing, hand the frame to the transform pipeline (never
        waits); the pipeline queues the results for the decoder in order."""
        facts = frame.codec_specific  # what libwebrtc tells a receive-side transform
        if packet.csrc:
            facts["csrcs"] = tuple(packet.csrc)
        if self.kind == "audio":
            facts["receive_time"] = time.monotonic_ns() // 1000
            facts["sequence_number"] = first_sequence & 0xFFFF
            if packet.extensions.audio_level is not None:  # RFC 6464 (vad, level)
                facts["voice_activity"], frame.audio_level = packet.extensions.audio_level
        pipeline = self._transforms
        if pipeline is None:
            pipeline = self._transforms = TransformPipeline(
                self.kind, self._transformed, name=f"mid {self.mid}"
            )
        if not pipeline.submit(self.transform, frame, stream):
            stream.frames_dropped += 1
        if pipeline.wants_keyframe:
            await self.request_keyframe(stream)

    async def _transformed(self, frame: EncodedFrame, stream: InboundStream) -> None:
        if not self._stopped:
            self._enqueue(stream, frame)

    def _guess_media_ssrc(self, packet: RtpPacket) -> int | None:
        """The media SSRC an unannounced RTX SSRC repairs: by repaired RID, or the only one."""
        rid = packet.extensions.repaired_rtp_stream_id
        if rid is not None:
            for stream in self.streams.values():
                if stream.rid == rid:
                    return stream.ssrc
        if len(self.streams) == 1:
            return next(iter(self.streams))
        return None

    def _enqueue(self, stream: InboundStream, frame: EncodedFrame) -> None:
        active = self._active
        if active is not stream:
            idle = active is None or time.monotonic() - active.last_packet_time > STREAM_IDLE
            if not (frame.is_keyframe or idle):
                # Another SSRC while the current one is alive: an SFU layer switch
                # starts with a key frame of the new layer; wait for it.
                stream.frames_dropped += 1
                stream.assembler.keyframe_needed = True
                return
            if active is not None:
                logger.debug("mid %s: SSRC %d -> %d", self.mid, active.ssrc, stream.ssrc)
            self._active = stream
        if self._needs_keyframe:
            if not frame.is_keyframe:
                stream.frames_dropped += 1
                return
            self._needs_keyframe = False
        if self.kind == "video" and len(self._queue) >= VIDEO_DECODE_QUEUE:
            # The decoder is behind: drop the backlog (it would only add latency)
            # and restart from a key frame.
            stream.frames_dropped += self._queue.clear()
            self._needs_keyframe = True
            stream.assembler.keyframe_needed = True
            if not frame.is_keyframe:
                stream.frames_dropped += 1
                return
            self._needs_keyframe = False
        if self._jobs.inline and not self._queue:
            # Audio decodes inline (Opus: tens of µs, less than a pool round trip); with
            # nothing queued that keeps the order. The outcome is handled as a pool job's.
            done = functools.partial(self._decoded, stream, frame)
            self._jobs.start(done, self._decode, stream.codec, frame)
            return
        if len(self._queue) >= self._queue.capacity:
            stream.frames_dropped += 1
        self._queue.put((stream, frame))
        self._next_decode()

    def _next_decode(self) -> None:
        """Start the next queued decode unless one runs."""
        if self._decoding or self._stopped:
            return
        item = self._queue.get_nowait()
        if item is None:
            return
        stream, frame = item
        self._decoding = True
        if not self._jobs.inline:
            loop = asyncio.get_running_loop()
            _batches_for(loop).add(loop, self, stream, frame)
            return
        done = functools.partial(self._decoded, stream, frame)
        try:
            self._jobs.start(done, self._decode, stream.codec, frame)
        except BaseException:
            self._decoding = False
            raise

    def _decoded(self, stream: InboundStream, frame: EncodedFrame, ok: bool, value: Any) -> None:
        """A decode job ended (on the loop): deliver, then start the next one."""
        self._decoding = False
        idle = self._idle
        if idle is not None and not idle.done():
            idle.set_result(None)
        if self._stopped:
            return
        try:
            if ok:
                decoded, prepared, elapsed = value
                stream.total_decode_time += elapsed
                self._deliver(stream, frame, decoded, prepared)
            elif isinstance(value, DecodeError):
                stream.decode_errors += 1
                logger.debug("mid %s: %s", self.mid, value)
                if self.kind == "video":
                    self._needs_keyframe = True
                    task = asyncio.ensure_future(self.request_keyframe(stream))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            else:
                stream.decode_errors += 1
                logger.error("mid %s: decoder failed", self.mid, exc_info=value)
        finally:
            self._next_decode()

    async def _send_nack(self, stream: InboundStream, lost: Sequence[int]) -> None:
        stream.nack_count += 1
        await self._send_rtcp(nack_packet(self._rtcp_ssrc, stream.ssrc, lost))

    async def request_keyframe(self, stream: InboundStream | None = None) -> None:
        """Send a PLI for ``stream`` (default: the one being decoded), throttled."""
        stream = stream or self._active
        if stream is None or self.kind != "video":
            return
        now = time.monotonic()
        if now - stream.last_pli < PLI_INTERVAL:
            return
        stream.last_pli = now
        stream.pli_count += 1
        stream.assembler.keyframe_requested()
        pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self._rtcp_ssrc, media_ssrc=stream.ssrc)
        await self._send_rtcp(bytes(pli))

    # --- RTCP ------------------------------------------------------------------------

    def handle_sender_report(self, packet: RtcpSrPacket) -> None:
        stream = self.streams.get(packet.ssrc)
        if stream is None:
            return
        stream.last_sr = (packet.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
        stream.last_sr_time = time.monotonic()
        stream.remote_packets_sent = packet.sender_info.packet_count
        stream.remote_bytes_sent = packet.sender_info.octet_count

    def reports(self) -> list[RtcpReceiverInfo]:
        """Report blocks for every stream heard from."""
        return [r for s in self.streams.values() if (r := s.report()) is not None]

    def wants_ticks(self, now: float) -> bool:
        """True while :meth:`tick` has work here: a NACK to repeat, or a key frame to ask
        for again (streams that stopped count not, as in :meth:`tick`)."""
        for stream in self.streams.values():
            if now - stream.last_packet_time > STREAM_IDLE:
                continue
            if self._keyframe_wanted(stream) or (stream.nack_enabled and stream.nack.missing):
                return True
        return False

    def _keyframe_wanted(self, stream: InboundStream) -> bool:
        """A key frame is to be asked for (again) on ``stream``: its assembler lost one,
        or the decoder waits for one and this is the stream it decodes."""
        return stream.assembler.keyframe_needed or (self._needs_keyframe and stream is self._active)

    async def tick(self, now: float) -> None:
        """Periodic work: repeat NACKs, keep asking for a key frame while one is needed."""
        for stream in list(self.streams.values()):
            if now - stream.last_packet_time > STREAM_IDLE:
                continue  # a stream that stopped (e.g. the SFU switched layers away)
            if stream.nack_enabled:
                due = stream.nack.due(now)
                if due:
                    await self._send_nack(stream, due)
            if self._keyframe_wanted(stream):
                await self.request_keyframe(stream)

    # --- decoding ---------------------------------------------------------------------

    def _decode(
        self, codec: NegotiatedCodec, frame: EncodedFrame
    ) -> tuple[list[Any], list[dict[Any, Any]] | None, float]:
        """Runs on the codec pool (audio: inline). Returns the decoded frames, what the
        track's taps prepared from each (``RemoteTrack._tap``), and the decode time."""
        decoder = self._decoders.get(codec.name)
        if decoder is None:
            decoder = self._decoders[codec.name] = self._decoder_factory(codec)
        track = self.track
        if self.kind == "audio":
            wanted = track._audio_format
            applied = self._format_applied
            if applied is None or applied[0] is not decoder or applied[1] != wanted:
                set_format = getattr(decoder, "set_output_format", None)
                if callable(set_format):
                    set_format(*(wanted or (48000, 2)))
                self._format_applied = (decoder, wanted)
        started = time.perf_counter()
        frames = list(decoder.decode(frame))
        elapsed = time.perf_counter() - started
        prepares = track._prepares
        if not prepares or not frames:
            return frames, None, elapsed
        prepared: list[dict[Any, Any]] = []
        for decoded in frames:
            results: dict[Any, Any] = {}
            for prepare in prepares:
                try:
                    results[prepare] = prepare(decoded)
                except Exception:
                    logger.exception("mid %s: preparing a decoded frame failed", self.mid)
            prepared.append(results)
        return frames, prepared, elapsed

    def _deliver(
        self,
        stream: InboundStream,
        encoded: EncodedFrame,
        frames: list[Any],
        prepared: list[dict[Any, Any]] | None = None,
    ) -> None:
        for index, frame in enumerate(frames):
            pts = self._timestamps.map(stream.ssrc, encoded.timestamp)
            frame.pts = pts
            frame.time_base = self._time_base
            if isinstance(frame, av.VideoFrame):
                stream.frames_decoded += 1
                if encoded.is_keyframe:
                    stream.key_frames_decoded += 1
                stream.frame_width, stream.frame_height = frame.width, frame.height
                stream.fps.tick()
            elif isinstance(frame, av.AudioFrame):
                # On the RTP clock (48 kHz), whatever rate the decoder produced.
                rate = frame.sample_rate or self._clock
                stream.total_samples_received += frame.samples * self._clock // rate
            self.track._deliver(frame, None if prepared is None else prepared[index])

    def decoder_implementation(self, stream: InboundStream) -> str | None:
        decoder = self._decoders.get(stream.codec.name)
        return decoder.implementation_name if decoder is not None else None

    # --- teardown ---------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop decoding and end the track. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.track.stop()
        transforms, self._transforms = self._transforms, None
        if transforms is not None:
            await transforms.close()  # frames still in the transform are dropped
        self._queue.close()
        self._queue.clear()
        for task in list(self._tasks):
            task.cancel()
        await self._jobs.drain()  # a decode may still run on the pool
        if self._decoding:  # one in a batch (_DecodeBatches): wait for its outcome
            self._idle = asyncio.get_running_loop().create_future()
            await asyncio.wait([self._idle], timeout=DRAIN_LIMIT)
        for stream in self.streams.values():
            stream.assembler.reset()  # buffered packets; the counters stay for stats
            stream.nack.missing.clear()
        self.track._receiver = None
        decoders = list(self._decoders.values())
        self._decoders.clear()
        for decoder in decoders:
            try:
                decoder.close()
            except Exception:
                logger.debug("closing a decoder failed", exc_info=True)


__all__ = ["InboundStream", "NackTracker", "RemoteTrack", "RtpReceiver", "nack_packet"]
