"""Opus over RTP (RFC 7587): the libopus encoder on PyAV, the decoder on libopus itself.

One Opus packet per RTP payload, no payload header (RFC 7587 §4.2); the RTP
clock is 48 kHz whatever the audio rate (§4.1). Every packet starts a
"frame" and can be decoded alone. SDP: ``opus/48000/2`` with
``minptime=10;useinbandfec=1`` (what browsers and Sora use).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fractions
import glob
import os
import threading
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


#: The output rates libopus decodes to by itself (``opus_decoder_create``).
LIBOPUS_RATES = (8000, 12000, 16000, 24000, 48000)


class _LibOpus:
    """The few libopus decoder functions, through ctypes.

    Loaded with ``ctypes.PyDLL``, which keeps the GIL during a call: a 20 ms
    packet decodes in 10-40 µs, and releasing the GIL around that on the
    event-loop thread would let a codec thread take it for up to the switch
    interval (5 ms) before the loop gets it back.
    """

    def __init__(self, path: str) -> None:
        lib = ctypes.PyDLL(path)
        self.path = path
        self.create = lib.opus_decoder_create
        self.create.restype = ctypes.c_void_p
        self.create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        self.destroy = lib.opus_decoder_destroy
        self.destroy.restype = None
        self.destroy.argtypes = [ctypes.c_void_p]
        self.decode = lib.opus_decode
        self.decode.restype = ctypes.c_int
        self.decode.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int32,
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_int,
        ]
        self.nb_samples = lib.opus_packet_get_nb_samples
        self.nb_samples.restype = ctypes.c_int
        self.nb_samples.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32]
        self.strerror = lib.opus_strerror
        self.strerror.restype = ctypes.c_char_p
        self.strerror.argtypes = [ctypes.c_int]

    def error(self, code: int) -> str:
        message = self.strerror(code)
        return message.decode(errors="replace") if message else f"error {code}"


def _libopus_paths() -> list[str]:
    """Where libopus may be: the copy PyAV's wheel bundles (already loaded with FFmpeg,
    so the encoder and decoder are the same library), then the system's."""
    package = os.path.dirname(av.__file__)
    paths: list[str] = []
    for folder in (package + ".libs", os.path.join(package, ".dylibs")):
        paths += sorted(glob.glob(os.path.join(folder, "*opus*")))
    system = ctypes.util.find_library("opus")
    if system:
        paths.append(system)
    return paths


_libopus: _LibOpus | None = None
_libopus_tried = False
_libopus_lock = threading.Lock()


def libopus() -> _LibOpus | None:
    """The libopus binding, or None where no libopus library can be loaded."""
    global _libopus, _libopus_tried
    with _libopus_lock:
        if not _libopus_tried:
            _libopus_tried = True
            for path in _libopus_paths():
                try:
                    _libopus = _LibOpus(path)
                    break
                except (OSError, AttributeError):
                    continue
        return _libopus


class OpusDecoder(Decoder):
    """Opus decoder; returns packed s16 frames, 48 kHz stereo by default.

    libopus decodes to 8, 12, 16, 24 or 48 kHz, mono or stereo, by itself
    (RFC 6716 §4.3: the decoder renders at the rate asked for; a stereo stream
    decoded to mono is the average of the channels): :meth:`set_output_format`
    picks that, so that a consumer that wants 16 kHz mono gets it straight from
    the decoder instead of 48 kHz stereo plus a resampler. libopus is called
    through ctypes (:func:`libopus`); where it cannot be loaded, PyAV's
    ``libopus`` decoder is used, which gives 48 kHz only.

    Measured per 20 ms packet (64 kbit/s stereo tone): PyAV decode 56 µs,
    plus the sink's resample to 16 kHz mono 41 µs; libopus straight to
    16 kHz mono 35 µs in all (48 kHz stereo: 48 µs).
    """

    codec = CODEC

    def __init__(self, channels: int = 2, sample_rate: int = SAMPLE_RATE) -> None:
        self._lib = libopus()
        self._state: int | None = None
        self._ctx: av.AudioCodecContext | None = None
        self._rate = SAMPLE_RATE
        self._channels = 2 if channels == 2 else 1
        self._layout = "stereo" if self._channels == 2 else "mono"
        if self._lib is None:
            ctx = av.CodecContext.create("libopus", "r")
            assert isinstance(ctx, av.AudioCodecContext)
            ctx.sample_rate = SAMPLE_RATE
            ctx.layout = "stereo" if self._channels == 2 else "mono"
            ctx.format = "s16"
            self._ctx = ctx
        else:
            self.set_output_format(sample_rate, self._channels)

    @property
    def implementation_name(self) -> str:
        return "libopus"

    @property
    def output_format(self) -> tuple[int, int]:
        """(sample rate, channels) of the frames :meth:`decode` returns."""
        return self._rate, self._channels

    def set_output_format(self, sample_rate: int, channels: int) -> tuple[int, int]:
        """Decode to ``sample_rate`` Hz and ``channels`` from now on, as near as libopus
        can (48 kHz for a rate it does not decode to, stereo above 2 channels);
        returns the format it will use. Changing it restarts the decoder state
        (a new stream as far as concealment goes). Only 48 kHz without libopus."""
        rate = sample_rate if sample_rate in LIBOPUS_RATES else SAMPLE_RATE
        channels = 1 if channels == 1 else 2
        lib = self._lib
        if lib is None:
            return self._rate, self._channels
        if self._state is not None and (rate, channels) == (self._rate, self._channels):
            return rate, channels
        error = ctypes.c_int(0)
        state = lib.create(rate, channels, ctypes.byref(error))
        if not state or error.value != 0:
            raise DecodeError(f"Opus decoder: {lib.error(error.value)}")
        self._free()
        self._state, self._rate, self._channels = state, rate, channels
        self._layout = "stereo" if channels == 2 else "mono"
        return rate, channels

    def decode(self, frame: EncodedFrame) -> list[av.AudioFrame]:
        lib, state = self._lib, self._state
        if lib is None or state is None:
            return self._decode_pyav(frame)
        data = frame.data if isinstance(frame.data, bytes) else bytes(frame.data)
        samples = lib.nb_samples(data, len(data), self._rate)
        if samples <= 0:
            raise DecodeError(f"Opus decoder: {lib.error(samples) if samples else 'no samples'}")
        # Decode into the frame's own buffer: no copy between libopus and the consumer.
        out = av.AudioFrame(format="s16", layout=self._layout, samples=samples)
        got = lib.decode(state, data, len(data), out.planes[0].buffer_ptr, samples, 0)
        if got < 0:
            raise DecodeError(f"Opus decoder: {lib.error(got)}")
        if got != samples:  # not for a valid packet; keep what was decoded
            pcm = out.to_ndarray()[:, : got * self._channels]
            out = av.AudioFrame.from_ndarray(pcm, format="s16", layout=self._layout)
        out.sample_rate = self._rate
        return [out]

    def _decode_pyav(self, frame: EncodedFrame) -> list[av.AudioFrame]:
        assert self._ctx is not None
        packet = av.Packet(frame.data)
        packet.pts = frame.timestamp
        packet.time_base = TIME_BASE
        try:
            return list(self._ctx.decode(packet))
        except av.error.FFmpegError as exc:
            raise DecodeError(f"Opus decoder: {exc}") from exc

    def _free(self) -> None:
        state, self._state = getattr(self, "_state", None), None
        if state is not None and self._lib is not None:
            self._lib.destroy(state)

    def close(self) -> None:
        """Free the libopus state."""
        self._free()

    def __del__(self) -> None:
        self._free()


#: SDP format parameters browsers and Sora use for Opus.
DEFAULT_FMTP: Mapping[str, str] = {"minptime": "10", "useinbandfec": "1"}
