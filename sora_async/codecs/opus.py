"""Opus over RTP (RFC 7587) and the libopus encoder/decoder on PyAV.

One Opus packet per RTP payload, no payload header (RFC 7587 §4.2); the RTP
clock is 48 kHz whatever the audio rate (§4.1). Every packet starts a
"frame" and can be decoded alone. SDP: ``opus/48000/2`` with
``minptime=10;useinbandfec=1`` (what browsers and Sora use).
"""

from __future__ import annotations

import fractions
from collections.abc import Mapping, Sequence

import av
import av.error
from av.audio.resampler import AudioResampler

from .base import (
    OPUS_CLOCK_RATE,
    DecodeError,
    Decoder,
    Depacketizer,
    EncodedFrame,
    Encoder,
    MalformedPayloadError,
    Packetizer,
    require_payloads,
)

CODEC = "OPUS"
MIME_TYPE = "audio/opus"
SAMPLE_RATE = 48_000
#: 20 ms at 48 kHz, the WebRTC default packet time.
SAMPLES_PER_PACKET = 960
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


def toc_frame_count(packet: bytes) -> int:
    """Frames in an Opus packet from its TOC byte (RFC 6716 §3.1); raises on garbage."""
    if not packet:
        raise MalformedPayloadError("Opus: empty packet")
    code = packet[0] & 0x03
    if code == 0:
        return 1
    if code in (1, 2):
        return 2
    if len(packet) < 2:
        raise MalformedPayloadError("Opus: code 3 packet without frame count byte")
    count = packet[1] & 0x3F
    if count == 0:
        raise MalformedPayloadError("Opus: code 3 packet with 0 frames")
    return count


class OpusPacketizer(Packetizer):
    """RFC 7587: the payload is the Opus packet."""

    codec = CODEC

    def packetize(self, frame: EncodedFrame, max_payload_size: int = 1200) -> list[bytes]:
        if not frame.data:
            raise ValueError("Opus: empty packet")
        if len(frame.data) > max_payload_size:
            raise ValueError(
                f"Opus: a {len(frame.data)}-byte packet does not fit {max_payload_size} bytes"
            )
        return [bytes(frame.data)]


class OpusDepacketizer(Depacketizer):
    """RFC 7587: one payload, one Opus packet."""

    codec = CODEC

    def depacketize(self, payloads: Sequence[bytes], timestamp: int = 0) -> EncodedFrame:
        require_payloads(payloads, CODEC)
        if len(payloads) != 1:
            raise MalformedPayloadError(f"Opus: {len(payloads)} payloads for one timestamp")
        data = bytes(payloads[0])
        toc_frame_count(data)
        return EncodedFrame(
            data=data,
            timestamp=timestamp,
            codec=CODEC,
            is_keyframe=True,
            sample_rate=SAMPLE_RATE,
        )

    def is_frame_start(self, payload: bytes) -> bool:
        return bool(payload)

    def is_keyframe_start(self, payload: bytes) -> bool:
        return bool(payload)

    def is_frame_end(self, payload: bytes) -> bool | None:
        return bool(payload)


def opus_cutoff(max_playback_rate: int) -> int:
    """libopus bandwidth (FFmpeg ``cutoff``, Hz) for an RFC 7587 ``maxplaybackrate``.

    Narrowband 4 kHz up to 8 kHz playback, mediumband 6 kHz up to 12 kHz,
    wideband 8 kHz up to 16 kHz, super-wideband 12 kHz up to 24 kHz, else fullband.
    """
    for rate, cutoff in ((8000, 4000), (12000, 6000), (16000, 8000), (24000, 12000)):
        if max_playback_rate <= rate:
            return cutoff
    return 20000


class OpusEncoder(Encoder):
    """libopus at 48 kHz, 20 ms packets; input of any format, rate and size.

    Options: ``application=voip`` (speech-tuned, aiortc's choice),
    ``fec=1`` with an expected loss of ``packet_loss`` % (in-band FEC, which
    receivers ask for with ``useinbandfec=1``), and ``dtx``. The SDP
    parameters of RFC 7587 §6.1 map onto the rest: ``ptime`` → packet
    duration (10, 20, 40 or 60 ms), ``maxplaybackrate`` → the encoded audio
    bandwidth (``cutoff``), ``cbr=1`` → ``cbr=True``.
    """

    codec = CODEC

    def __init__(
        self,
        bitrate: int = 64_000,
        channels: int = 2,
        fec: bool = True,
        packet_loss: int = 10,
        dtx: bool = False,
        ptime: int = 20,
        max_playback_rate: int | None = None,
        cbr: bool = False,
    ) -> None:
        if ptime not in (10, 20, 40, 60):
            raise ValueError(f"Opus: ptime must be 10, 20, 40 or 60 ms, not {ptime}")
        self._target_bitrate = int(bitrate)
        self._channels = channels
        self._samples_per_packet = SAMPLE_RATE * ptime // 1000
        self._options = {
            "application": "voip",
            "frame_duration": str(ptime),
            "fec": "1" if fec else "0",
            "packet_loss": str(packet_loss),
            "dtx": "1" if dtx else "0",
            "vbr": "off" if cbr else "on",
        }
        if max_playback_rate:
            self._options["cutoff"] = str(opus_cutoff(max_playback_rate))
        self._ctx: av.AudioCodecContext | None = None
        self._ctx_bitrate = 0
        self._resampler = AudioResampler(
            format="s16",
            layout="stereo" if channels == 2 else "mono",
            rate=SAMPLE_RATE,
            frame_size=self._samples_per_packet,
        )
        self._next_timestamp: int | None = None

    @property
    def implementation_name(self) -> str:
        return "libopus"

    def _open(self) -> av.AudioCodecContext:
        ctx = av.CodecContext.create("libopus", "w")
        assert isinstance(ctx, av.AudioCodecContext)
        ctx.bit_rate = self._target_bitrate
        ctx.format = "s16"
        ctx.layout = "stereo" if self._channels == 2 else "mono"
        ctx.sample_rate = SAMPLE_RATE
        ctx.time_base = TIME_BASE
        ctx.options = dict(self._options)
        ctx.open()
        self._ctx_bitrate = self._target_bitrate
        return ctx

    def encode(self, frame: av.frame.Frame, force_keyframe: bool = False) -> list[EncodedFrame]:
        if not isinstance(frame, av.AudioFrame):
            raise TypeError(f"Opus encoder takes av.AudioFrame, not {type(frame).__name__}")
        if self._next_timestamp is None:
            if frame.pts is not None and frame.time_base is not None:
                self._next_timestamp = int(frame.pts * frame.time_base * OPUS_CLOCK_RATE)
            else:
                self._next_timestamp = 0
        # libopus has no in-place rate change through FFmpeg; re-open on a >10 % change
        # (audio has no key frames, so this only resets the codec state).
        if self._ctx is not None and (
            abs(self._target_bitrate - self._ctx_bitrate) > 0.1 * max(self._ctx_bitrate, 1)
        ):
            self._ctx = None
        if self._ctx is None:
            self._ctx = self._open()
        out: list[EncodedFrame] = []
        for chunk in self._resampler.resample(frame):
            chunk.pts = None
            for packet in self._ctx.encode(chunk):
                data = bytes(packet)
                out.append(
                    EncodedFrame(
                        data=data,
                        timestamp=self._next_timestamp & 0xFFFFFFFF,
                        codec=CODEC,
                        is_keyframe=True,
                        sample_rate=SAMPLE_RATE,
                        channels=self._channels,
                        samples=self._samples_per_packet,
                    )
                )
                self._next_timestamp += self._samples_per_packet
        return out


class OpusDecoder(Decoder):
    """libopus decoder; returns 48 kHz frames (stereo unless ``channels=1``)."""

    codec = CODEC

    def __init__(self, channels: int = 2) -> None:
        ctx = av.CodecContext.create("libopus", "r")
        assert isinstance(ctx, av.AudioCodecContext)
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "stereo" if channels == 2 else "mono"
        ctx.format = "s16"
        self._ctx = ctx

    @property
    def implementation_name(self) -> str:
        return "libopus"

    def decode(self, frame: EncodedFrame) -> list[av.AudioFrame]:
        packet = av.Packet(frame.data)
        packet.pts = frame.timestamp
        packet.time_base = TIME_BASE
        try:
            return list(self._ctx.decode(packet))
        except av.error.FFmpegError as exc:
            raise DecodeError(f"Opus decoder: {exc}") from exc


#: SDP format parameters browsers and Sora use for Opus.
DEFAULT_FMTP: Mapping[str, str] = {"minptime": "10", "useinbandfec": "1"}
