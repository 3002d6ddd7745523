"""Opus over RTP (RFC 7587): encoder and decoder on libopus itself (ctypes), PyAV as fallback.

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
from ctypes import c_char_p, c_int, c_int32, c_void_p
from typing import Any

import av
import av.error
import numpy as np
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


class OpusEncodeError(RuntimeError):
    """libopus refused a setting or a frame (through ctypes)."""


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


# libopus request codes and values (opus_defines.h) for ``opus_encoder_ctl``.
_OPUS_OK = 0
_OPUS_APPLICATION_VOIP = 2048
_OPUS_SET_BITRATE = 4002
_OPUS_SET_MAX_BANDWIDTH = 4004
_OPUS_SET_VBR = 4006
_OPUS_SET_COMPLEXITY = 4010
_OPUS_SET_INBAND_FEC = 4012
_OPUS_SET_PACKET_LOSS_PERC = 4014
_OPUS_SET_DTX = 4016
_OPUS_SET_VBR_CONSTRAINT = 4020
#: ``opus_cutoff`` (Hz) to the libopus bandwidth constant, as FFmpeg's libopusenc maps it.
_BANDWIDTHS = {4000: 1101, 6000: 1102, 8000: 1103, 12000: 1104, 20000: 1105}
#: libwebrtc's ``audio_encoder_opus`` default complexity on desktop (5 on Android/iOS).
DEFAULT_COMPLEXITY = 9
#: libwebrtc ``kMaxPacketLossFraction``: the expected loss given to libopus is capped here.
MAX_PACKET_LOSS_FRACTION = 0.2
#: libwebrtc's packet-loss smoother (``kAlphaForPacketLossFractionSmoother``): an
#: exponential filter whose weight decays by this factor per millisecond (~10 s).
_LOSS_SMOOTHING_PER_MS = 0.9999


def sdp_stream_format(fmtp: Mapping[str, str]) -> tuple[int, int | None]:
    """(channels, ``maxplaybackrate`` or None) an Opus ``a=fmtp`` asks a sender for
    (RFC 7587 §6.1: ``stereo=1`` says the receiver prefers stereo)."""
    playback = fmtp.get("maxplaybackrate", "").strip()
    channels = 2 if fmtp.get("stereo", "0").strip() == "1" else 1
    return channels, int(playback) if playback.isdigit() else None


def default_bitrate(channels: int = 1, max_playback_rate: int | None = None) -> int:
    """libwebrtc's default Opus bit rate (``CalculateDefaultBitrate``): 32 kbit/s per
    channel for fullband, 20 for wideband (``maxplaybackrate`` up to 16 kHz), 12 for
    narrowband (up to 8 kHz)."""
    per_channel = 32_000
    if max_playback_rate is not None and max_playback_rate <= 8000:
        per_channel = 12_000
    elif max_playback_rate is not None and max_playback_rate <= 16000:
        per_channel = 20_000
    return per_channel * (2 if channels == 2 else 1)


#: The largest Opus packet (RFC 6716 §3.2.1: 1275 bytes per frame, 3 frames of 20 ms at most
#: in 60 ms, plus framing); libopus recommends 4000 bytes of output buffer.
_MAX_PACKET = 4000


class OpusEncoder(Encoder):
    """libopus at 48 kHz, 20 ms packets; input of any format, rate and size.

    Options: ``application=voip`` (speech-tuned, libwebrtc's and aiortc's choice),
    ``fec=1`` (in-band FEC, which receivers ask for with ``useinbandfec=1``) with
    an expected loss of ``packet_loss`` %, and ``dtx``. As in libwebrtc the
    expected loss starts at 0 and follows what the receiver reports
    (:meth:`set_packet_loss`): libopus spends bits and CPU on FEC only once
    packets are lost. (aiortc's fixed 10 % made every packet carry a redundant
    copy of the previous one: 20 against the official client's 4.3 kbit/s for the
    bench's clicks and silence, and twice its encoding CPU.) The SDP
    parameters of RFC 7587 §6.1 map onto the rest: ``ptime`` → packet
    duration (10, 20, 40 or 60 ms), ``maxplaybackrate`` → the encoded audio
    bandwidth (``cutoff``), ``cbr=1`` → ``cbr=True``. ``complexity`` 0..10:
    9 by default, as libwebrtc on desktop.

    libopus is called through ctypes (:func:`libopus`): packed s16 input at
    48 kHz with the encoder's channel count (what :class:`~sora_async.AudioSource`
    produces) is encoded straight from the frame's buffer; anything else is
    converted with libswresample first. The bit rate changes in place
    (``OPUS_SET_BITRATE``). Where libopus cannot be loaded, PyAV's ``libopus``
    encoder runs with the same settings (:attr:`encodes_inline` is then False).

    Measured per 20 ms packet (48 kHz mono, 64 kbit/s, this project's 2-core
    EPYC): through ctypes 140-200 µs, nearly all of it libopus itself; through
    PyAV 200-300 µs on the codec pool, plus the pool round trip (100-180 µs of
    CPU). So it runs inline, on the event loop, as the Opus decoder does.
    """

    codec = CODEC

    def __init__(
        self,
        bitrate: int = 64_000,
        channels: int = 2,
        fec: bool = True,
        packet_loss: int = 0,
        dtx: bool = False,
        ptime: int = 20,
        max_playback_rate: int | None = None,
        cbr: bool = False,
        complexity: int = DEFAULT_COMPLEXITY,
    ) -> None:
        if ptime not in (10, 20, 40, 60):
            raise ValueError(f"Opus: ptime must be 10, 20, 40 or 60 ms, not {ptime}")
        if not 0 <= complexity <= 10:
            raise ValueError(f"Opus: complexity must be 0..10, not {complexity}")
        self._target_bitrate = int(bitrate)
        self._channels = 2 if channels == 2 else 1
        self._layout = "stereo" if self._channels == 2 else "mono"
        self._samples_per_packet = SAMPLE_RATE * ptime // 1000
        self._fec = fec
        self._packet_loss = packet_loss
        self._loss_applied = packet_loss
        self._smoothed_loss: float | None = None
        self._last_loss_ms = 0.0
        self._dtx = dtx
        self._cbr = cbr
        self._complexity = complexity
        self._cutoff = opus_cutoff(max_playback_rate) if max_playback_rate else 0
        self._next_timestamp: int | None = None
        # libopus through ctypes
        self._lib = libopus()
        self._state: int | None = None
        self._state_bitrate = 0
        self._out = ctypes.create_string_buffer(_MAX_PACKET)
        #: s16 samples at 48 kHz waiting for a whole packet (interleaved, flat)
        self._pending = np.zeros(0, np.int16)
        self._converter: AudioResampler | None = None
        # the PyAV fallback
        self._options = {
            "application": "voip",
            "frame_duration": str(ptime),
            "fec": "1" if fec else "0",
            "packet_loss": str(packet_loss),
            "dtx": "1" if dtx else "0",
            # libopus's default, which libwebrtc keeps: constrained VBR
            "vbr": "off" if cbr else "constrained",
        }
        if self._cutoff:
            self._options["cutoff"] = str(self._cutoff)
        self._ctx: av.AudioCodecContext | None = None
        self._ctx_bitrate = 0
        self._resampler: AudioResampler | None = None

    @property
    def implementation_name(self) -> str:
        return "libopus"

    @property
    def encodes_inline(self) -> bool:
        """True where libopus runs through ctypes: the sender then encodes on the event
        loop (a packet costs about as much as a codec-pool round trip would add)."""
        return self._lib is not None

    @property
    def packet_loss(self) -> int:
        """The expected packet loss (%) libopus plans its in-band FEC for."""
        return self._packet_loss

    def set_packet_loss(self, fraction: float, now_ms: float) -> None:
        """A receiver report's fraction lost (0..1) at ``now_ms``: smoothed over ~10 s
        and capped at 20 % as libwebrtc's ``OnReceivedUplinkPacketLossFraction``
        does; the libopus path applies it from the next packet on (PyAV's encoder
        keeps the loss it was opened with)."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        if self._smoothed_loss is None:
            self._smoothed_loss = fraction
        else:
            weight = _LOSS_SMOOTHING_PER_MS ** max(0.0, now_ms - self._last_loss_ms)
            self._smoothed_loss = weight * self._smoothed_loss + (1 - weight) * fraction
        self._last_loss_ms = now_ms
        expected = min(self._smoothed_loss, MAX_PACKET_LOSS_FRACTION)
        self._packet_loss = int(expected * 100 + 0.5)

    def encode(self, frame: av.frame.Frame, force_keyframe: bool = False) -> list[EncodedFrame]:
        if not isinstance(frame, av.AudioFrame):
            raise TypeError(f"Opus encoder takes av.AudioFrame, not {type(frame).__name__}")
        if self._next_timestamp is None:
            if frame.pts is not None and frame.time_base is not None:
                self._next_timestamp = int(frame.pts * frame.time_base * OPUS_CLOCK_RATE)
            else:
                self._next_timestamp = 0
        if self._lib is None:
            return self._encode_pyav(frame)
        state = self._state
        if state is None or self._target_bitrate != self._state_bitrate:
            state = self._open_libopus(state)
        if self._packet_loss != self._loss_applied:
            # Here, on the thread that encodes: libopus states are not thread-safe.
            self._lib.set(state, _OPUS_SET_PACKET_LOSS_PERC, self._packet_loss)
            self._loss_applied = self._packet_loss
        samples = self._samples_per_packet
        if frame.samples == samples and not len(self._pending) and self._as_is(frame):
            # The common case (AudioSource's 20 ms at 48 kHz): no copy before libopus.
            return [self._encode_packet(state, frame.planes[0].buffer_ptr)]
        pcm = self._pcm(frame)
        if len(self._pending):
            pcm = np.concatenate([self._pending, pcm])
        step = samples * self._channels
        out: list[EncodedFrame] = []
        whole = len(pcm) - len(pcm) % step
        for offset in range(0, whole, step):
            chunk = pcm[offset : offset + step]
            out.append(self._encode_packet(state, chunk.__array_interface__["data"][0]))
        self._pending = pcm[whole:].copy()
        return out

    def _as_is(self, frame: av.AudioFrame) -> bool:
        """Whether libopus takes ``frame``'s samples without conversion: packed s16 at
        48 kHz with the encoder's layout, and no resampler holding samples back."""
        return (
            frame.format.name == "s16"
            and frame.sample_rate == SAMPLE_RATE
            and frame.layout.name == self._layout
            and self._converter is None
        )

    def _pcm(self, frame: av.AudioFrame) -> np.ndarray:
        """``frame`` as flat interleaved s16 at 48 kHz with the encoder's channels."""
        if self._as_is(frame):
            count = frame.samples * self._channels
            return np.frombuffer(memoryview(frame.planes[0]), np.int16, count)
        if self._converter is None:
            # Once converting, keep converting: libswresample may hold samples back.
            self._converter = AudioResampler(format="s16", layout=self._layout, rate=SAMPLE_RATE)
        parts = [
            np.frombuffer(memoryview(f.planes[0]), np.int16, f.samples * self._channels)
            for f in self._converter.resample(frame)
        ]
        if not parts:
            return np.zeros(0, np.int16)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _encode_packet(self, state: int, pcm: int) -> EncodedFrame:
        """One packet from ``_samples_per_packet`` samples at address ``pcm``."""
        lib = self._lib
        assert lib is not None
        size = lib.encode(state, pcm, self._samples_per_packet, self._out, _MAX_PACKET)
        if size < 0:
            raise OpusEncodeError(f"Opus encoder: {lib.error(size)}")
        assert self._next_timestamp is not None
        timestamp = self._next_timestamp
        self._next_timestamp = timestamp + self._samples_per_packet
        return EncodedFrame(
            data=ctypes.string_at(self._out, size),
            timestamp=timestamp & 0xFFFFFFFF,
            codec=CODEC,
            is_keyframe=True,
            sample_rate=SAMPLE_RATE,
            channels=self._channels,
            samples=self._samples_per_packet,
        )

    def _open_libopus(self, state: int | None) -> int:
        """Create the libopus state (first frame), or apply a new bit rate in place."""
        lib = self._lib
        assert lib is not None
        if state is None:
            error = ctypes.c_int(0)
            created = lib.encoder_create(
                SAMPLE_RATE, self._channels, _OPUS_APPLICATION_VOIP, ctypes.byref(error)
            )
            if not created or error.value != _OPUS_OK:
                raise OpusEncodeError(f"Opus encoder: {lib.error(error.value)}")
            state = int(created)
            self._state = state
            # The settings FFmpeg's libopusenc applies for the PyAV encoder's options,
            # with libwebrtc's complexity. VBR is constrained (libopus's default, which
            # libwebrtc keeps): unconstrained, a 440 Hz tone took 47-53 kbit/s of a
            # 32 kbit/s target, where the official client sends 32.4.
            settings = [
                (_OPUS_SET_COMPLEXITY, self._complexity),
                (_OPUS_SET_VBR, 0 if self._cbr else 1),
                (_OPUS_SET_PACKET_LOSS_PERC, self._packet_loss),
                (_OPUS_SET_INBAND_FEC, 1 if self._fec else 0),
                (_OPUS_SET_DTX, 1 if self._dtx else 0),
            ]
            if not self._cbr:
                settings.append((_OPUS_SET_VBR_CONSTRAINT, 1))
            if self._cutoff:
                settings.append((_OPUS_SET_MAX_BANDWIDTH, _BANDWIDTHS[self._cutoff]))
            for request, value in settings:
                lib.set(state, request, value)
            self._loss_applied = self._packet_loss
        lib.set(state, _OPUS_SET_BITRATE, self._target_bitrate)
        self._state_bitrate = self._target_bitrate
        return state

    # -- PyAV fallback ------------------------------------------------------------------

    def _open_pyav(self) -> av.AudioCodecContext:
        ctx = av.CodecContext.create("libopus", "w")
        assert isinstance(ctx, av.AudioCodecContext)
        ctx.bit_rate = self._target_bitrate
        ctx.format = "s16"
        ctx.layout = self._layout
        ctx.sample_rate = SAMPLE_RATE
        ctx.time_base = TIME_BASE
        ctx.options = {**self._options, "compression_level": str(self._complexity)}
        ctx.open()
        self._ctx_bitrate = self._target_bitrate
        return ctx

    def _encode_pyav(self, frame: av.AudioFrame) -> list[EncodedFrame]:
        # libopus has no in-place rate change through FFmpeg; re-open on a >10 % change
        # (audio has no key frames, so this only resets the codec state).
        if self._ctx is not None and (
            abs(self._target_bitrate - self._ctx_bitrate) > 0.1 * max(self._ctx_bitrate, 1)
        ):
            self._ctx = None
        if self._ctx is None:
            self._ctx = self._open_pyav()
        if self._resampler is None:
            self._resampler = AudioResampler(
                format="s16",
                layout=self._layout,
                rate=SAMPLE_RATE,
                frame_size=self._samples_per_packet,
            )
        assert self._next_timestamp is not None
        out: list[EncodedFrame] = []
        for chunk in self._resampler.resample(frame):
            chunk.pts = None
            for packet in self._ctx.encode(chunk):
                out.append(
                    EncodedFrame(
                        data=bytes(packet),
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

    def close(self) -> None:
        """Free the libopus state (a later :meth:`encode` starts a new one)."""
        state, self._state = getattr(self, "_state", None), None
        lib = getattr(self, "_lib", None)
        if state is not None and lib is not None:
            lib.encoder_destroy(state)
        self._ctx = None

    def __del__(self) -> None:
        self.close()


#: The output rates libopus decodes to by itself (``opus_decoder_create``).
LIBOPUS_RATES = (8000, 12000, 16000, 24000, 48000)


_INT_P = ctypes.POINTER(ctypes.c_int)


def _bind(lib: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> Any:
    """``lib.name`` with its result and argument types set."""
    function = getattr(lib, name)
    function.restype = restype
    function.argtypes = list(argtypes)
    return function


class _LibOpus:
    """The few libopus encoder and decoder functions, through ctypes.

    Loaded with ``ctypes.PyDLL``, which keeps the GIL during a call: a 20 ms
    packet decodes in 10-40 µs and encodes in 140-200 µs, and releasing the
    GIL around that on the event-loop thread would let a codec thread take it
    for up to the switch interval (5 ms) before the loop gets it back.
    """

    def __init__(self, path: str) -> None:
        lib = ctypes.PyDLL(path)
        self.path = path
        self.create = _bind(lib, "opus_decoder_create", c_void_p, c_int32, c_int, _INT_P)
        self.destroy = _bind(lib, "opus_decoder_destroy", None, c_void_p)
        # opus_decode(st, data, len, opus_int16 *pcm (an address), frame_size, decode_fec)
        self.decode = _bind(
            lib, "opus_decode", c_int, c_void_p, c_char_p, c_int32, c_void_p, c_int, c_int
        )
        self.nb_samples = _bind(
            lib, "opus_packet_get_nb_samples", c_int, c_char_p, c_int32, c_int32
        )
        self.strerror = _bind(lib, "opus_strerror", c_char_p, c_int)
        self.encoder_create = _bind(
            lib, "opus_encoder_create", c_void_p, c_int32, c_int, c_int, _INT_P
        )
        self.encoder_destroy = _bind(lib, "opus_encoder_destroy", None, c_void_p)
        # opus_encode(st, const opus_int16 *pcm, frame_size, unsigned char *data, max_data_bytes)
        self.encode = _bind(
            lib, "opus_encode", c_int32, c_void_p, c_void_p, c_int, c_void_p, c_int32
        )
        # opus_encoder_ctl(OpusEncoder *st, int request, ...) is variadic: only the fixed
        # arguments get argtypes; the value goes as an explicit c_int32 beyond them, which
        # ctypes passes as a variadic argument (ffi_prep_cif_var) where the ABI differs.
        self.encoder_ctl = _bind(lib, "opus_encoder_ctl", c_int, c_void_p, c_int)

    def set(self, state: int, request: int, value: int) -> None:
        """``opus_encoder_ctl(state, request, (opus_int32) value)``; raises on an error."""
        code = self.encoder_ctl(state, request, ctypes.c_int32(value))
        if code != _OPUS_OK:
            raise OpusEncodeError(f"Opus encoder: request {request}={value}: {self.error(code)}")

    def get(self, state: int, request: int) -> int:
        """``opus_encoder_ctl(state, request, (opus_int32 *) &value)``: a GET request."""
        value = ctypes.c_int32(0)
        code = self.encoder_ctl(state, request, ctypes.byref(value))
        if code != _OPUS_OK:
            raise OpusEncodeError(f"Opus encoder: request {request}: {self.error(code)}")
        return value.value

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
                except (OSError, AttributeError):  # not there, or without the encoder
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
