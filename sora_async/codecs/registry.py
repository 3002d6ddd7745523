"""Our codec registry: payload formats, SDP facts, encoder and decoder factories.

aiortc chooses codecs with ``if``/``elif`` chains on the MIME type
(``get_encoder``/``get_decoder``/``depayload``, ``aiortc-notes.md`` A.1) that
cannot be extended. Here every codec is a :class:`CodecSpec` (rtpmap name,
clock rate, default fmtp, rtcp-fb, fmtp compatibility, packetizer and
depacketizer factories), looked up by Sora name ("VP9"), MIME type
("video/VP9") or rtpmap name ("vp9"). Encoders and decoders are created per
``VideoCodecImplementation``; the PyAV backends for each come from
``sora_async.hwaccel.backends``, and applications can register their own
factories (``register_encoder``/``register_decoder``).

Example::

    from sora_async.codecs import registry
    spec = registry.get_codec("video/H265")
    spec.rtpmap                     # 'H265/90000'
    encoder = registry.create_encoder("VP9", settings=EncoderSettings(bitrate=800_000))
    decoder = registry.create_decoder("H264", "NVIDIA_VIDEO_CODEC_SDK")  # falls back to software
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..hwaccel.backends import Backend, backends_for
from ..hwaccel.types import VideoCodecImplementation, VideoCodecType
from . import (
    av1,
    h264,
    h265,
    hardware,  # noqa: F401 - registers the hardware encoder configurators
    opus,
    vp8,
    vp9,
)
from .base import (
    OPUS_CLOCK_RATE,
    VIDEO_CLOCK_RATE,
    CodecUnavailableError,
    Decoder,
    Depacketizer,
    Encoder,
    Packetizer,
)
from .pyav import EncoderSettings, PyAVVideoDecoder, PyAVVideoEncoder

logger = logging.getLogger("sora_async.codecs")

Kind = Literal["audio", "video"]
FmtpCheck = Callable[[Mapping[str, str], Mapping[str, str]], bool]
EncoderFactory = Callable[..., Encoder]
DecoderFactory = Callable[..., Decoder]


@dataclass(frozen=True)
class RtcpFeedback:
    """One ``a=rtcp-fb`` value: ``type`` and optional ``parameter`` ("nack" "pli")."""

    type: str
    parameter: str | None = None

    def __str__(self) -> str:
        return f"{self.type} {self.parameter}" if self.parameter else self.type


#: Feedback aiortc 1.16 implements for video: NACK, PLI, FIR (received) and REMB.
VIDEO_RTCP_FEEDBACK: tuple[RtcpFeedback, ...] = (
    RtcpFeedback("goog-remb"),
    RtcpFeedback("ccm", "fir"),
    RtcpFeedback("nack"),
    RtcpFeedback("nack", "pli"),
)


def _always_compatible(local: Mapping[str, str], remote: Mapping[str, str]) -> bool:
    return True


def _int_param(fmtp: Mapping[str, str], name: str, default: int) -> int | None:
    try:
        return int(str(fmtp.get(name, default)).strip())
    except ValueError:
        return None


def vp9_fmtp_compatible(local: Mapping[str, str], remote: Mapping[str, str]) -> bool:
    """Same ``profile-id`` (default 0; RFC 9628 §6)."""
    ours, theirs = _int_param(local, "profile-id", 0), _int_param(remote, "profile-id", 0)
    return ours is not None and ours == theirs


def av1_fmtp_compatible(local: Mapping[str, str], remote: Mapping[str, str]) -> bool:
    """Same ``profile`` (default 0, Main; AV1 RTP spec §7.2).

    ``level-idx`` (default 5) and ``tier`` (default 0) only have to be valid
    numbers: they describe what a side can decode, and the answer picks the
    lower one, as libwebrtc does.
    """
    ours, theirs = _int_param(local, "profile", 0), _int_param(remote, "profile", 0)
    if ours is None or ours != theirs:
        return False
    for name, default in (("level-idx", 5), ("tier", 0)):
        if _int_param(local, name, default) is None or _int_param(remote, name, default) is None:
            return False
    return True


@dataclass(frozen=True)
class CodecSpec:
    """Everything the SDP and RTP layers need to know about one codec.

    ``name`` is the Sora name ("VP8", "VP9", "AV1", "H264", "H265", "OPUS").
    """

    name: str
    kind: Kind
    mime_type: str
    clock_rate: int
    packetizer: Callable[..., Packetizer]
    depacketizer: Callable[..., Depacketizer]
    channels: int | None = None
    default_fmtp: Mapping[str, str] = field(default_factory=dict)
    rtcp_feedback: tuple[RtcpFeedback, ...] = ()
    fmtp_compatible: FmtpCheck = _always_compatible

    @property
    def rtpmap_name(self) -> str:
        """Encoding name for ``a=rtpmap`` ("VP9", "H265", "opus")."""
        return self.mime_type.split("/", 1)[1]

    @property
    def rtpmap(self) -> str:
        """``a=rtpmap`` value after the payload type: ``"VP9/90000"``, ``"opus/48000/2"``."""
        suffix = f"/{self.channels}" if self.channels else ""
        return f"{self.rtpmap_name}/{self.clock_rate}{suffix}"

    @property
    def video_codec_type(self) -> VideoCodecType | None:
        """The :class:`VideoCodecType` of a video codec, None for audio."""
        return VideoCodecType[self.name] if self.kind == "video" else None


class CodecRegistry:
    """Codec specs plus per-implementation encoder/decoder factories.

    The module-level functions use one default instance (:data:`default_registry`);
    tests and applications can build their own.
    """

    def __init__(self) -> None:
        self._specs: dict[str, CodecSpec] = {}
        self._encoders: dict[tuple[str, VideoCodecImplementation], EncoderFactory] = {}
        self._decoders: dict[tuple[str, VideoCodecImplementation], DecoderFactory] = {}

    # --- codecs -------------------------------------------------------------

    def register_codec(self, spec: CodecSpec, replace: bool = False) -> None:
        """Add a codec; ``replace=True`` to override an existing one of that name."""
        key = spec.name.upper()
        if key in self._specs and not replace:
            raise ValueError(f"codec {spec.name} is already registered")
        self._specs[key] = spec

    def find_codec(self, name: str) -> CodecSpec | None:
        """Codec by Sora name, MIME type or rtpmap name (any case); None if unknown."""
        wanted = name.strip().upper()
        if wanted in self._specs:
            return self._specs[wanted]
        wanted = {"HEVC": "H265", "AVC": "H264"}.get(wanted, wanted)
        for spec in self._specs.values():
            if wanted in (spec.name.upper(), spec.mime_type.upper(), spec.rtpmap_name.upper()):
                return spec
        return None

    def get_codec(self, name: str) -> CodecSpec:
        """Like :meth:`find_codec` but raises :class:`CodecUnavailableError`."""
        spec = self.find_codec(name)
        if spec is None:
            raise CodecUnavailableError(f"unknown codec {name!r}")
        return spec

    def codecs(self, kind: Kind | None = None) -> list[CodecSpec]:
        """Registered codecs (optionally of one kind), in registration order."""
        return [s for s in self._specs.values() if kind is None or s.kind == kind]

    # --- payload formats ----------------------------------------------------

    def create_packetizer(self, codec: str, **kwargs: Any) -> Packetizer:
        """A new packetizer for ``codec`` (kwargs go to its constructor)."""
        return self.get_codec(codec).packetizer(**kwargs)

    def create_depacketizer(self, codec: str, **kwargs: Any) -> Depacketizer:
        """A new depacketizer for ``codec`` (kwargs go to its constructor)."""
        return self.get_codec(codec).depacketizer(**kwargs)

    def fmtp_compatible(
        self, codec: str, local: Mapping[str, str], remote: Mapping[str, str]
    ) -> bool:
        """Whether two fmtp sets of ``codec`` describe formats that can talk."""
        return self.get_codec(codec).fmtp_compatible(local, remote)

    # --- encoders and decoders ----------------------------------------------

    def register_encoder(
        self,
        codec: str,
        implementation: VideoCodecImplementation | int | str,
        factory: EncoderFactory,
    ) -> None:
        """Use ``factory(settings=..., **kwargs)`` for ``codec`` × ``implementation``."""
        impl = VideoCodecImplementation.parse(implementation)
        self._encoders[(self.get_codec(codec).name, impl)] = factory

    def register_decoder(
        self,
        codec: str,
        implementation: VideoCodecImplementation | int | str,
        factory: DecoderFactory,
    ) -> None:
        """Use ``factory(**kwargs)`` for decoding ``codec`` with ``implementation``."""
        impl = VideoCodecImplementation.parse(implementation)
        self._decoders[(self.get_codec(codec).name, impl)] = factory

    def create_encoder(
        self,
        codec: str,
        implementation: VideoCodecImplementation | int | str = VideoCodecImplementation.INTERNAL,
        *,
        settings: EncoderSettings | None = None,
        fallback: bool = True,
        openh264: str | None = None,
        **kwargs: Any,
    ) -> Encoder:
        """An encoder for ``codec`` on ``implementation``.

        Video encoders open lazily on the first frame; if the implementation's
        backends fail then (no NVENC on this GPU, no driver...), they fall back
        to the next backend and, with ``fallback=True``, to INTERNAL. The
        encoder's ``implementation_name`` tells which one runs. ``openh264``
        is the path of Cisco's library for ``CISCO_OPENH264``.
        """
        spec = self.get_codec(codec)
        impl = VideoCodecImplementation.parse(implementation)
        custom = self._encoders.get((spec.name, impl))
        if custom is not None:
            return custom(settings=settings, **kwargs)
        if spec.kind == "audio":
            if spec.name == opus.CODEC:
                return opus.OpusEncoder(**kwargs)
            raise CodecUnavailableError(f"no encoder for {spec.name}")
        chain = self._backend_chain(spec, impl, "encoder", fallback)
        if chain and chain[0].engine == "openh264":
            try:
                return _openh264_encoder(openh264, settings)
            except (CodecUnavailableError, OSError) as exc:
                if not fallback:
                    raise
                logger.warning("OpenH264 encoder unavailable (%s); using %s", exc, "INTERNAL")
        pyav_chain = [b for b in chain if b.engine == "pyav"]
        if not pyav_chain:
            raise CodecUnavailableError(f"no {impl.name} encoder for {spec.name}")
        return PyAVVideoEncoder(spec.name, pyav_chain, settings)

    def create_decoder(
        self,
        codec: str,
        implementation: VideoCodecImplementation | int | str = VideoCodecImplementation.INTERNAL,
        *,
        fallback: bool = True,
        openh264: str | None = None,
        **kwargs: Any,
    ) -> Decoder:
        """A decoder for ``codec`` on ``implementation``; falls back as :meth:`create_encoder`."""
        spec = self.get_codec(codec)
        impl = VideoCodecImplementation.parse(implementation)
        custom = self._decoders.get((spec.name, impl))
        if custom is not None:
            return custom(**kwargs)
        if spec.kind == "audio":
            if spec.name == opus.CODEC:
                return opus.OpusDecoder(**kwargs)
            raise CodecUnavailableError(f"no decoder for {spec.name}")
        chain = self._backend_chain(spec, impl, "decoder", fallback)
        if chain and chain[0].engine == "openh264":
            try:
                return _openh264_decoder(openh264)
            except (CodecUnavailableError, OSError) as exc:
                if not fallback:
                    raise
                logger.warning("OpenH264 decoder unavailable (%s); using %s", exc, "INTERNAL")
        pyav_chain = [b for b in chain if b.engine == "pyav"]
        if not pyav_chain:
            raise CodecUnavailableError(f"no {impl.name} decoder for {spec.name}")
        return PyAVVideoDecoder(spec.name, pyav_chain)

    @staticmethod
    def _backend_chain(
        spec: CodecSpec,
        impl: VideoCodecImplementation,
        role: Literal["encoder", "decoder"],
        fallback: bool,
    ) -> list[Backend]:
        codec_type = VideoCodecType[spec.name]
        chain = backends_for(impl, codec_type, role)
        if fallback and impl is not VideoCodecImplementation.INTERNAL:
            chain += backends_for(VideoCodecImplementation.INTERNAL, codec_type, role)
        return chain


def _openh264_encoder(path: str | None, settings: EncoderSettings | None) -> Encoder:
    from . import openh264

    if not path:
        raise openh264.OpenH264Error("CISCO_OPENH264 needs the path of libopenh264 (openh264=...)")
    return openh264.OpenH264Encoder(path, settings)


def _openh264_decoder(path: str | None) -> Decoder:
    from . import openh264

    if not path:
        raise openh264.OpenH264Error("CISCO_OPENH264 needs the path of libopenh264 (openh264=...)")
    return openh264.OpenH264Decoder(path)


def parse_fmtp(value: str | None) -> dict[str, str]:
    """``a=fmtp`` parameters as a dict (``"a=1;b=2"`` → ``{"a": "1", "b": "2"}``).

    Keys are lower-cased (SDP fmtp names are case-insensitive); a bare token
    gets the value ``""``.
    """
    params: dict[str, str] = {}
    for item in (value or "").split(";"):
        item = item.strip()
        if not item:
            continue
        key, _, val = item.partition("=")
        params[key.strip().lower()] = val.strip()
    return params


def format_fmtp(params: Mapping[str, str]) -> str:
    """Inverse of :func:`parse_fmtp`, keys sorted (as aiortc writes them)."""
    return ";".join(f"{k}={v}" if v != "" else k for k, v in sorted(params.items()))


def _builtin_specs() -> Iterable[CodecSpec]:
    yield CodecSpec(
        name=vp8.CODEC,
        kind="video",
        mime_type=vp8.MIME_TYPE,
        clock_rate=VIDEO_CLOCK_RATE,
        packetizer=vp8.Vp8Packetizer,
        depacketizer=vp8.Vp8Depacketizer,
        rtcp_feedback=VIDEO_RTCP_FEEDBACK,
    )
    yield CodecSpec(
        name=vp9.CODEC,
        kind="video",
        mime_type=vp9.MIME_TYPE,
        clock_rate=VIDEO_CLOCK_RATE,
        packetizer=vp9.Vp9Packetizer,
        depacketizer=vp9.Vp9Depacketizer,
        default_fmtp={"profile-id": "0"},
        rtcp_feedback=VIDEO_RTCP_FEEDBACK,
        fmtp_compatible=vp9_fmtp_compatible,
    )
    yield CodecSpec(
        name=av1.CODEC,
        kind="video",
        mime_type=av1.MIME_TYPE,
        clock_rate=VIDEO_CLOCK_RATE,
        packetizer=av1.Av1Packetizer,
        depacketizer=av1.Av1Depacketizer,
        default_fmtp={"level-idx": "5", "profile": "0", "tier": "0"},
        rtcp_feedback=VIDEO_RTCP_FEEDBACK,
        fmtp_compatible=av1_fmtp_compatible,
    )
    yield CodecSpec(
        name=h264.CODEC,
        kind="video",
        mime_type=h264.MIME_TYPE,
        clock_rate=VIDEO_CLOCK_RATE,
        packetizer=h264.H264Packetizer,
        depacketizer=h264.H264Depacketizer,
        default_fmtp={
            "level-asymmetry-allowed": "1",
            "packetization-mode": "1",
            "profile-level-id": "42e01f",
        },
        rtcp_feedback=VIDEO_RTCP_FEEDBACK,
        fmtp_compatible=h264.fmtp_compatible,
    )
    yield CodecSpec(
        name=h265.CODEC,
        kind="video",
        mime_type=h265.MIME_TYPE,
        clock_rate=VIDEO_CLOCK_RATE,
        packetizer=h265.H265Packetizer,
        depacketizer=h265.H265Depacketizer,
        # Main profile, Main tier, level 3.1 (level-id = 30 × 3.1), single stream.
        default_fmtp={"level-id": "93", "profile-id": "1", "tier-flag": "0", "tx-mode": "SRST"},
        rtcp_feedback=VIDEO_RTCP_FEEDBACK,
        fmtp_compatible=h265.fmtp_compatible,
    )
    yield CodecSpec(
        name=opus.CODEC,
        kind="audio",
        mime_type=opus.MIME_TYPE,
        clock_rate=OPUS_CLOCK_RATE,
        channels=2,
        packetizer=opus.OpusPacketizer,
        depacketizer=opus.OpusDepacketizer,
        default_fmtp=dict(opus.DEFAULT_FMTP),
    )


def _build_default() -> CodecRegistry:
    registry = CodecRegistry()
    for spec in _builtin_specs():
        registry.register_codec(spec)
    return registry


#: The registry the module-level functions use.
default_registry = _build_default()

register_codec = default_registry.register_codec
find_codec = default_registry.find_codec
get_codec = default_registry.get_codec
codecs = default_registry.codecs
create_packetizer = default_registry.create_packetizer
create_depacketizer = default_registry.create_depacketizer
fmtp_compatible = default_registry.fmtp_compatible
register_encoder = default_registry.register_encoder
register_decoder = default_registry.register_decoder
create_encoder = default_registry.create_encoder
create_decoder = default_registry.create_decoder
