"""Encoder and decoder plugins on PyAV (FFmpeg), for software and hardware backends.

:class:`PyAVVideoEncoder` drives any FFmpeg video encoder through a
*configurator*: a function that sets the ``CodecContext`` up for real-time use
and says how the bit rate can change (:class:`BitrateUpdate`). Each codec
module registers configurators for its software encoders
(``register_configurator``); ``hardware.py`` does it for NVENC/QSV/AMF/V4L2/
VideoToolbox. :class:`PyAVVideoDecoder` wraps FFmpeg decoders, optionally with
an FFmpeg hardware device (``HWAccel("cuda")``).

Both take an ordered list of backends and fall back to the next one when a
backend cannot be opened or fails on its first frame (e.g. ``h264_nvenc`` on
a GPU without NVENC raises ``PermissionError`` at ``avcodec_open2``).

Guarantees, measured here for every software backend (``tests/test_codecs_pyav.py``):
no B-frames and no look-ahead (frame 1 in → packet 1 out), a forced key frame
comes out on the frame it was requested, decoders add no frame delay.
"""

from __future__ import annotations

import collections
import enum
import fractions
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import av
import av.error
from av.codec.hwaccel import HWAccel
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType, VideoFrame

from ..frames import reformat_video
from ..hwaccel.backends import Backend
from . import _ffmpeg_seam
from .base import (
    VIDEO_CLOCK_RATE,
    CodecUnavailableError,
    DecodeError,
    Decoder,
    EncodedFrame,
    Encoder,
)

logger = logging.getLogger("sora_async.codecs")

VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)


class BitrateUpdate(enum.Enum):
    """How an open encoder takes a new target bit rate."""

    #: Close and re-open the encoder (the next frame is a key frame).
    RECREATE = "recreate"
    #: The encoder reads ``AVCodecContext.bit_rate`` before each frame (FFmpeg NVENC
    #: ``reconfig_encoder`` with dynamic bit rate support).
    CONTEXT = "context"
    #: Set ``b``/``maxrate``/``bufsize`` with ``av_opt_set`` (libx264's VBV reconfig,
    #: see ``_ffmpeg_seam``); falls back to RECREATE if the seam is unusable.
    VBV = "vbv"
    #: ``vpx_codec_enc_config_set`` on the libvpx encoder under FFmpeg's ``libvpx``/
    #: ``libvpx-vp9`` (``_ffmpeg_seam.set_libvpx_bitrate``), which FFmpeg does not
    #: re-target itself; falls back to RECREATE if the seam cannot be verified.
    LIBVPX = "libvpx"


@dataclass(frozen=True)
class EncoderSettings:
    """What the application and negotiation decide for a video encoder.

    ``fmtp`` is the negotiated SDP format parameters (H.264
    ``profile-level-id``, H.265 ``profile-id``/``level-id``, VP9 ``profile-id``,
    AV1 ``profile``); configurators pick profile and level from it.
    ``keyframe_interval`` is in frames: real-time senders rely on PLI/FIR, so
    the default is long (aiortc uses 3000 too).
    """

    bitrate: int = 1_000_000
    min_bitrate: int = 50_000
    max_bitrate: int = 20_000_000
    framerate: int = 30
    keyframe_interval: int = 3000
    threads: int | None = None
    fmtp: Mapping[str, str] = field(default_factory=dict)

    def clamp(self, bitrate: int) -> int:
        """``bitrate`` limited to ``[min_bitrate, max_bitrate]``."""
        return max(self.min_bitrate, min(int(bitrate), self.max_bitrate))


@dataclass
class EncoderSetup:
    """What a configurator returns: FFmpeg private options and the bit-rate strategy.

    ``libvpx_controls`` are ``(control id, value)`` pairs for FFmpeg's ``libvpx``/
    ``libvpx-vp9`` encoders that FFmpeg has no option for, applied right after the
    encoder opens through ``_ffmpeg_seam.libvpx_control``; where that seam cannot be
    verified they are skipped and the encoder runs on :attr:`options` alone.
    """

    options: dict[str, str]
    bitrate_update: BitrateUpdate = BitrateUpdate.RECREATE
    pix_fmt: str = "yuv420p"
    libvpx_controls: tuple[tuple[int, int], ...] = ()


#: ``configure(ctx, settings, bitrate) -> EncoderSetup``; ``ctx`` already has
#: width, height, time base, frame rate, bit rate, GOP and no B-frames set.
Configurator = Callable[[VideoCodecContext, EncoderSettings, int], EncoderSetup]

_CONFIGURATORS: dict[str, Configurator] = {}


def register_configurator(pyav_name: str, configurator: Configurator) -> None:
    """Make ``configurator`` the real-time setup of the FFmpeg encoder ``pyav_name``."""
    _CONFIGURATORS[pyav_name] = configurator


def configurator_for(pyav_name: str) -> Configurator | None:
    """The registered configurator for ``pyav_name``, if any."""
    return _CONFIGURATORS.get(pyav_name)


def thread_count(width: int, height: int, cpus: int | None = None) -> int:
    """Encoder threads by resolution, as aiortc's ``vpx.number_of_threads``."""
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    pixels = width * height
    if pixels >= 1920 * 1080 and cpus > 8:
        return 8
    if pixels > 1280 * 960 and cpus >= 6:
        return 3
    if pixels > 640 * 480 and cpus >= 3:
        return 2
    return 1


#: The picture size a decoder is opened for before a key frame gives the stream's
#: (libwebrtc's ``InitialDecoderResolution``).
INITIAL_DECODER_SIZE = (320, 180)


def decoder_threads(pyav_name: str, width: int, height: int, cpus: int | None = None) -> int:
    """FFmpeg decoder threads for a ``width`` x ``height`` stream, as libwebrtc
    configures its software decoders.

    FFmpeg's default (``thread_count`` 0) is one thread per core plus one for
    every decoder, and libdav1d 1.5 per core: with many receivers in a process,
    or on few cores, the extra threads cost CPU for little speed. Measured here
    (2 cores, one 640x480 stream, CPU per frame): libdav1d 1.86 ms with the
    default against 0.93 with 2 threads; FFmpeg's VP9 1.60 against 1.37 with one.

    - libdav1d: ``max(2, cores)`` (``Dav1dDecoder::Configure``);
    - VP9: 2 threads per 1280x720 of picture, at least 1, at most one per core
      (``LibvpxVp9Decoder::Configure``: 1 up to 640x480, 2 at 720p, 4 at 1080p);
    - every other software decoder (VP8, H.264, H.265, libaom): 1
      (``LibvpxVp8Decoder``, ``H264DecoderImpl``).
    """
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    if pyav_name == "libdav1d":
        return max(2, cpus)
    if pyav_name in ("vp9", "libvpx-vp9"):
        return min(cpus, max(1, 2 * width * height // (1280 * 720)))
    return 1


def open_decoder_context(backend: Backend, width: int, height: int) -> Any:
    """An open FFmpeg decoder of ``backend`` for a ``width`` x ``height`` stream:
    its hardware device, :attr:`PyAVVideoDecoder.DECODER_OPTIONS` and, for a
    software backend, :func:`decoder_threads`."""
    hwaccel = HWAccel(backend.hwaccel, allow_software_fallback=False) if backend.hwaccel else None
    ctx = av.CodecContext.create(backend.pyav_name, "r", hwaccel=hwaccel)
    options = PyAVVideoDecoder.DECODER_OPTIONS.get(backend.pyav_name)
    if options:
        ctx.options = dict(options)
    if not backend.is_hardware:
        ctx.thread_count = decoder_threads(backend.pyav_name, width, height)
    ctx.open()
    return ctx


def open_encoder_context(
    backend: Backend, settings: EncoderSettings, width: int, height: int, bitrate: int
) -> tuple[VideoCodecContext, EncoderSetup]:
    """An open FFmpeg encoder of ``backend`` for ``width`` x ``height`` at ``bitrate``
    (bps), configured by its registered configurator, and that configurator's setup."""
    configure = configurator_for(backend.pyav_name)
    if configure is None:
        raise CodecUnavailableError(f"no configurator for encoder {backend.pyav_name}")
    ctx = av.CodecContext.create(backend.pyav_name, "w")
    if not isinstance(ctx, VideoCodecContext):  # pragma: no cover - defensive
        raise CodecUnavailableError(f"{backend.pyav_name} is not a video encoder")
    ctx.width = width
    ctx.height = height
    ctx.time_base = fractions.Fraction(1, settings.framerate)
    ctx.framerate = fractions.Fraction(settings.framerate, 1)
    ctx.bit_rate = bitrate
    ctx.gop_size = settings.keyframe_interval
    # No B-frames: they reorder output and add a frame of delay (aiortc#588).
    ctx.max_b_frames = 0
    ctx.thread_count = settings.threads or thread_count(width, height)
    setup = configure(ctx, settings, bitrate)
    ctx.pix_fmt = setup.pix_fmt
    ctx.options = dict(setup.options)
    ctx.open()
    for control_id, value in setup.libvpx_controls:
        if not _ffmpeg_seam.libvpx_control(ctx, backend.pyav_name, control_id, value):
            logger.debug(
                "%s: libvpx control %d=%d not applied", backend.pyav_name, control_id, value
            )
    return ctx, setup


def rtp_timestamp_of(frame: av.frame.Frame, clock_rate: int, fallback: int) -> int:
    """The frame's pts on the RTP clock (mod 2**32), or ``fallback`` when it has none."""
    if frame.pts is None or frame.time_base is None:
        return fallback & 0xFFFFFFFF
    return int(frame.pts * frame.time_base * clock_rate) & 0xFFFFFFFF


# FFmpeg failures that mean "this backend does not work here" at open or first
# frame: PermissionError (h264_nvenc without NVENC), ArgumentError (hevc_qsv),
# UnknownError (h264_amf) — aiortc-notes.md A.1 — plus missing codecs.
_BACKEND_FAILURES: tuple[type[BaseException], ...] = (
    av.error.FFmpegError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
)


class PyAVVideoEncoder(Encoder):
    """A real-time video encoder on one of several FFmpeg backends.

    Example::

        encoder = PyAVVideoEncoder("VP9", backends_for("INTERNAL", "VP9", "encoder"))
        encoded = encoder.encode(frame, force_keyframe=True)  # [EncodedFrame(VP9 key ...)]
        encoder.target_bitrate = 500_000  # applied before the next frame

    ``reopen_count`` counts encoder re-creations (size changes, bit-rate
    changes the backend cannot apply in place); ``in_place_bitrate_updates``
    counts bit-rate changes applied without one.
    """

    #: Minimum relative change that justifies re-creating an encoder for a new
    #: bit rate (aiortc uses 10 %): each re-creation costs a key frame.
    RECREATE_THRESHOLD = 0.10
    #: And at most one such re-creation per this many seconds.
    RECREATE_MIN_INTERVAL = 2.0

    def __init__(
        self,
        codec: str,
        backends: Sequence[Backend],
        settings: EncoderSettings | None = None,
    ) -> None:
        self.codec = codec.upper()
        self._backends = [b for b in backends if b.role == "encoder" and b.engine == "pyav"]
        if not self._backends:
            raise CodecUnavailableError(f"no PyAV encoder backend for {codec}")
        self._settings = settings or EncoderSettings()
        self._backend_index = 0
        self._ctx: VideoCodecContext | None = None
        self._setup: EncoderSetup | None = None
        self._size: tuple[int, int] = (0, 0)
        self._target_bitrate = self._settings.clamp(self._settings.bitrate)
        self._ctx_bitrate = 0
        #: capture times (s) of recent frames, for the input frame rate
        self._frame_times: collections.deque[float] = collections.deque(maxlen=32)
        #: the frame rate the bit rate is scaled for (None: the nominal one)
        self._rate_fps: float | None = None
        self._last_recreate = float("-inf")
        self._frames_in_ctx = 0
        self._frame_index = 0
        self._pts_to_rtp: dict[int, int] = {}
        self.reopen_count = 0
        self.in_place_bitrate_updates = 0
        self.keyframes_encoded = 0

    # --- public -------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        """The backend in use (or about to be tried)."""
        return self._backends[self._backend_index]

    @property
    def implementation_name(self) -> str:
        return self.backend.implementation_name

    @property
    def settings(self) -> EncoderSettings:
        return self._settings

    @property
    def target_bitrate(self) -> int:
        return self._target_bitrate

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        self._target_bitrate = self._settings.clamp(bitrate)

    @property
    def measured_framerate(self) -> float | None:
        """The frame rate of the frames given to :meth:`encode` (None: too few yet)."""
        times = self._frame_times
        if len(times) < 4 or times[-1] - times[0] <= 0:
            return None
        return (len(times) - 1) / (times[-1] - times[0])

    @property
    def ctx_bitrate(self) -> int:
        """The bit rate given to the FFmpeg encoder for :attr:`target_bitrate`.

        Encoders here count one ``1/framerate`` tick per frame (the pts is a
        frame counter), so they budget ``bit_rate / framerate`` bits per frame.
        When frames come slower than :attr:`EncoderSettings.framerate` (a 15 fps
        camera, a frame-rate cap of the degradation adaptation), the nominal rate
        is scaled up so that the frames that come carry the target: libwebrtc
        passes the input frame rate to the encoder's rate control the same way
        (``RateControlParameters.framerate_fps``). The rate is
        :attr:`~.base.Encoder.input_framerate` where the sender sets it (its
        source's rate, before any frame dropping: frames dropped because they
        overshoot must not raise the budget of the next ones), else the rate
        the frames come at here.
        """
        fps = self._rate_fps
        if fps is None:
            return self._target_bitrate
        return int(self._target_bitrate * self._settings.framerate / fps)

    def _note_frame_time(self, frame: VideoFrame) -> None:
        if frame.pts is not None and frame.time_base is not None:
            now = float(frame.pts * frame.time_base)
        else:
            now = time.monotonic()
        times = self._frame_times
        if times and not 0 < now - times[-1] < 2.0:
            times.clear()  # a jump: a new source, a wrapped clock, a long pause
        times.append(now)
        while len(times) > 4 and times[-1] - times[0] > 1.0:
            times.popleft()
        measured = self.input_framerate or self.measured_framerate
        if measured is None:
            return
        # within [1 fps, the nominal rate]; re-scaled only on a 10 % change (every
        # change of a RECREATE encoder's rate costs a key frame), and back to the
        # nominal rate once the frames come at 95 % of it: a source whose rate read
        # low at first, then 27.5 fps, then 30 was otherwise left scaled for 27.5
        # for good (9 % from there), and the encoder overshot its target by 9 % (the
        # frame dropper then dropped 2-5 frames a second of a 720p VP9 sender).
        nominal = float(self._settings.framerate)
        fps = min(max(measured, 1.0), nominal)
        current = self._rate_fps or nominal
        if self._rate_fps is not None and fps >= 0.95 * nominal:
            self._rate_fps = None
        elif abs(fps - current) / current > 0.10:
            self._rate_fps = None if fps >= nominal else fps

    def encode(self, frame: av.frame.Frame, force_keyframe: bool = False) -> list[EncodedFrame]:
        if not isinstance(frame, VideoFrame):
            raise TypeError(f"{self.codec} encoder takes av.VideoFrame, not {type(frame).__name__}")
        rtp_ts = rtp_timestamp_of(
            frame,
            VIDEO_CLOCK_RATE,
            self._frame_index * VIDEO_CLOCK_RATE // self._settings.framerate,
        )
        # 4:2:0 encoders need even sizes (x264 refuses odd ones): drop the odd line.
        size = (frame.width & ~1, frame.height & ~1)
        if size != (frame.width, frame.height):
            frame = reformat_video(frame, width=size[0], height=size[1])
        if self._ctx is not None and size != self._size:
            self._close_ctx()
        self._note_frame_time(frame)
        if self._ctx is not None and self.ctx_bitrate != self._ctx_bitrate:
            self._apply_bitrate()
        while True:
            if self._ctx is None:
                self._open(*size)
            assert self._ctx is not None and self._setup is not None
            try:
                packets = self._encode_one(frame, force_keyframe, rtp_ts)
                break
            except _BACKEND_FAILURES as exc:
                if self._frames_in_ctx > 0 or not self._next_backend(exc):
                    raise
        self._frames_in_ctx += 1
        out: list[EncodedFrame] = []
        for packet in packets:
            ts = self._pts_to_rtp.pop(packet.pts, rtp_ts) if packet.pts is not None else rtp_ts
            encoded = EncodedFrame(
                data=bytes(packet),
                timestamp=ts,
                codec=self.codec,
                is_keyframe=bool(packet.is_keyframe),
                width=self._size[0],
                height=self._size[1],
                frame_id=self._frame_index,
            )
            if encoded.is_keyframe:
                self.keyframes_encoded += 1
            out.append(encoded)
        self._frame_index += 1
        # Encoders here never hold frames back, but keep the map bounded if one does.
        if len(self._pts_to_rtp) > 64:
            self._pts_to_rtp.clear()
        return out

    def close(self) -> None:
        self._close_ctx()

    # --- internals ----------------------------------------------------------

    def _encode_one(
        self, frame: VideoFrame, force_keyframe: bool, rtp_ts: int
    ) -> list[av.Packet[Any]]:
        assert self._ctx is not None and self._setup is not None
        source = frame
        if frame.format.name != self._setup.pix_fmt:
            source = reformat_video(frame, format=self._setup.pix_fmt)
        saved = (source.pts, source.time_base, source.pict_type)
        # Always set pict_type: a decoded frame (relay) carries the decoder's
        # I/P/B type, which FFmpeg encoders would otherwise obey.
        source.pict_type = (
            PictureType.I if force_keyframe or self._frames_in_ctx == 0 else PictureType.NONE
        )
        # Rate control counts one tick of 1/framerate per frame (libvpx, SVT-AV1),
        # so feed a running frame counter rather than the capture clock.
        pts = self._frames_in_ctx
        source.pts = pts
        source.time_base = self._ctx.time_base
        self._pts_to_rtp[pts] = rtp_ts
        try:
            return list(self._ctx.encode(source))
        finally:
            if source is frame:
                frame.pts, frame.time_base, frame.pict_type = saved

    def _open(self, width: int, height: int) -> None:
        while True:
            backend = self.backend
            try:
                self._ctx, self._setup = self._create_context(backend, width, height)
                self._size = (width, height)
                self._ctx_bitrate = self.ctx_bitrate
                self._frames_in_ctx = 0
                return
            except _BACKEND_FAILURES as exc:
                if not self._next_backend(exc):
                    raise CodecUnavailableError(
                        f"no working {self.codec} encoder: {backend.pyav_name}: {exc}"
                    ) from exc

    def _create_context(
        self, backend: Backend, width: int, height: int
    ) -> tuple[VideoCodecContext, EncoderSetup]:
        return open_encoder_context(backend, self._settings, width, height, self.ctx_bitrate)

    def _next_backend(self, exc: BaseException) -> bool:
        failed = self.backend
        self._close_ctx(count=False)
        if self._backend_index + 1 >= len(self._backends):
            return False
        self._backend_index += 1
        logger.warning(
            "%s encoder %s failed (%s: %s); falling back to %s",
            self.codec,
            failed.pyav_name,
            type(exc).__name__,
            exc,
            self.backend.pyav_name,
        )
        return True

    def _apply_bitrate(self) -> None:
        assert self._ctx is not None and self._setup is not None
        new, current = self.ctx_bitrate, self._ctx_bitrate
        strategy = self._setup.bitrate_update
        if strategy is BitrateUpdate.CONTEXT:
            self._ctx.bit_rate = new
            self._ctx_bitrate = new
            self.in_place_bitrate_updates += 1
            return
        if strategy is BitrateUpdate.VBV and _ffmpeg_seam.set_codec_context_options(
            self._ctx, {"b": new, "maxrate": new, "bufsize": new}
        ):
            self._ctx_bitrate = new
            self.in_place_bitrate_updates += 1
            return
        if strategy is BitrateUpdate.LIBVPX and _ffmpeg_seam.set_libvpx_bitrate(
            self._ctx, self.backend.pyav_name, new
        ):
            self._ctx_bitrate = new
            self.in_place_bitrate_updates += 1
            return
        # Re-create, with hysteresis: every re-creation costs a key frame.
        now = time.monotonic()
        if abs(new - current) / max(current, 1) < self.RECREATE_THRESHOLD:
            return
        if now - self._last_recreate < self.RECREATE_MIN_INTERVAL:
            return
        self._last_recreate = now
        self._close_ctx()

    def _close_ctx(self, count: bool = True) -> None:
        if self._ctx is not None:
            if count:
                self.reopen_count += 1
            ctx, self._ctx = self._ctx, None
            if ctx.is_open and self._frames_in_ctx:
                # Drain (end of stream) before the context is freed: SVT-AV1
                # logs "deinit called without sending EOS" otherwise.
                try:
                    ctx.encode(None)
                except Exception:
                    logger.debug("%s: draining the encoder failed", self.codec, exc_info=True)
        self._setup = None
        self._pts_to_rtp.clear()


class PyAVVideoDecoder(Decoder):
    """An FFmpeg video decoder, falling back through ``backends`` on failure.

    Example::

        decoder = PyAVVideoDecoder("AV1", backends_for("INTERNAL", "AV1", "decoder"))
        frames = decoder.decode(encoded_frame)  # [av.VideoFrame]
    """

    #: Per-decoder FFmpeg options. libdav1d buffers 2 frames by default;
    #: max_frame_delay=1 removes that (aiortc-notes.md A.1, measured).
    DECODER_OPTIONS: Mapping[str, Mapping[str, str]] = {"libdav1d": {"max_frame_delay": "1"}}

    def __init__(self, codec: str, backends: Sequence[Backend]) -> None:
        self.codec = codec.upper()
        self._backends = [b for b in backends if b.role == "decoder" and b.engine == "pyav"]
        if not self._backends:
            raise CodecUnavailableError(f"no PyAV decoder backend for {codec}")
        self._backend_index = 0
        self._ctx: Any = None
        self._decoded = 0
        #: The last key frame's size (before one: libwebrtc's initial size): what a
        #: software context opens for (its thread count), on a fallback too.
        self._size = INITIAL_DECODER_SIZE
        self._open()

    @property
    def backend(self) -> Backend:
        return self._backends[self._backend_index]

    @property
    def implementation_name(self) -> str:
        return self.backend.implementation_name

    @property
    def is_hardware(self) -> bool:
        """True when frames are being decoded by a hardware backend."""
        return self.backend.is_hardware

    def decode(self, frame: EncodedFrame) -> list[VideoFrame]:
        if self._ctx is None:
            raise DecodeError(f"{self.codec} decoder is closed")
        if frame.is_keyframe and frame.width and frame.height:
            self._resize(frame.width, frame.height)
        while True:
            packet = av.Packet(frame.data)
            packet.pts = frame.timestamp
            packet.time_base = VIDEO_TIME_BASE
            try:
                frames = list(self._ctx.decode(packet))
                break
            except _BACKEND_FAILURES as exc:
                # Only a backend that never produced a frame is abandoned; later
                # errors are data errors (loss) and call for a key frame instead.
                if self._decoded == 0 and self._next_backend(exc):
                    continue
                raise DecodeError(f"{self.codec} decoder {self.backend.pyav_name}: {exc}") from exc
        self._decoded += len(frames)
        return [_to_system_memory(f) for f in frames]

    def close(self) -> None:
        self._ctx = None

    def _resize(self, width: int, height: int) -> None:
        """A key frame of ``width`` x ``height``: where that size wants another thread
        count (:func:`decoder_threads`), a new context decodes from this key frame on,
        as libwebrtc's VP9 decoder re-initialises on a key frame of a new size."""
        if (width, height) == self._size:
            return
        old_w, old_h = self._size
        # Noted on a hardware backend too: a software fallback opens for this size.
        self._size = (width, height)
        backend = self.backend
        name = backend.pyav_name
        if backend.is_hardware:
            return
        if decoder_threads(name, width, height) != decoder_threads(name, old_w, old_h):
            self._open()

    def _open(self) -> None:
        while True:
            backend = self.backend
            try:
                self._ctx = open_decoder_context(backend, *self._size)
                return
            except _BACKEND_FAILURES as exc:
                if not self._next_backend(exc, reopen=False):
                    raise CodecUnavailableError(
                        f"no working {self.codec} decoder: {backend.pyav_name}: {exc}"
                    ) from exc

    def _next_backend(self, exc: BaseException, reopen: bool = True) -> bool:
        failed = self.backend
        if self._backend_index + 1 >= len(self._backends):
            return False
        self._backend_index += 1
        logger.warning(
            "%s decoder %s%s failed (%s: %s); falling back to %s",
            self.codec,
            failed.pyav_name,
            f"+{failed.hwaccel}" if failed.hwaccel else "",
            type(exc).__name__,
            exc,
            self.backend.pyav_name,
        )
        if reopen:
            self._open()
        return True


def _to_system_memory(frame: Any) -> VideoFrame:
    """Frames in GPU memory (``cuda``, ``qsv``...) are copied to a software format.

    PyAV 18 normally transfers hardware frames itself; this is the safety net.
    """
    if not isinstance(frame, VideoFrame):  # pragma: no cover - decoders here are video
        raise DecodeError(f"video decoder returned {type(frame).__name__}")
    if frame.format.name in _HW_PIX_FMTS:
        return frame.reformat(format="yuv420p")
    return frame


_HW_PIX_FMTS = frozenset(
    {"cuda", "qsv", "vaapi", "videotoolbox_vld", "d3d11", "dxva2_vld", "drm_prime"}
)
