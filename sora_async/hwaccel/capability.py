"""``get_video_codec_capability`` and ``VideoCodecPreference``, shaped like the official SDK.

Same structure and JSON as ``sora_sdk``'s ``SoraVideoCodecCapability`` and
``SoraVideoCodecPreference`` (``sora-sdk-reference.md`` §1.4, checked against
the 2025.4.0 wheel)::

    capability.to_json() == {"engines": [
        {"name": "internal",
         "codecs": [{"type": "VP8", "encoder": True, "decoder": True, "parameters": {}}, ...],
         "parameters": {}}, ...]}
    preference.to_json() == {"codecs": [
        {"type": "VP8", "encoder": "internal", "decoder": "internal", "parameters": {}}, ...]}

Semantics kept from the official one: codecs are listed VP8, VP9, H264, H265,
AV1 (OpenH264: VP8, VP9, H265, AV1, H264, with ``version``/``openh264_path``
on H264); an engine other than INTERNAL appears only when something in it
works (the official adds CUDA/AMF engines "when a context can be created" and
omits OpenH264 for a bad path); ``merge`` copies only the non-None
encoder/decoder of the other preference; a preference made from an engine
that is absent is empty.

Our INTERNAL differs in what it can do, not in shape: H.264 and H.265 are
available (x264/x265 + FFmpeg), where the official INTERNAL (libwebrtc
without OpenH264) reports them false.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from .backends import BACKENDS, Backend, Role
from .probe import ProbeResult, probe_backends
from .types import (
    CAPABILITY_CODEC_ORDER,
    OPENH264_CODEC_ORDER,
    VideoCodecImplementation,
    VideoCodecType,
)

logger = logging.getLogger("sora_async.hwaccel")

_I = VideoCodecImplementation


@dataclass
class CapabilityParameters:
    """``SoraVideoCodecCapability.Parameters``: every field optional; JSON omits None."""

    version: str | None = None
    openh264_path: str | None = None
    vpl_impl: str | None = None
    vpl_impl_value: int | None = None
    nvcodec_gpu_device_name: str | None = None
    amf_runtime_version: str | None = None
    amf_embedded_version: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }


@dataclass
class CapabilityCodec:
    """``SoraVideoCodecCapability.Codec``: can this engine encode/decode ``type``?"""

    type: VideoCodecType
    encoder: bool = False
    decoder: bool = False
    parameters: CapabilityParameters = field(default_factory=CapabilityParameters)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type.name,
            "encoder": self.encoder,
            "decoder": self.decoder,
            "parameters": self.parameters.to_json(),
        }


@dataclass
class CapabilityEngine:
    """``SoraVideoCodecCapability.Engine``: one implementation and its codecs."""

    name: VideoCodecImplementation
    codecs: list[CapabilityCodec] = field(default_factory=list)
    parameters: CapabilityParameters = field(default_factory=CapabilityParameters)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name.json_name,
            "codecs": [c.to_json() for c in self.codecs],
            "parameters": self.parameters.to_json(),
        }

    def codec(self, codec: VideoCodecType | int | str) -> CapabilityCodec | None:
        wanted = VideoCodecType.parse(codec)
        return next((c for c in self.codecs if c.type is wanted), None)


@dataclass
class VideoCodecCapability:
    """``SoraVideoCodecCapability``: what each engine can do on this machine.

    Example::

        capability = get_video_codec_capability()
        capability.supports("H264", "NVIDIA_VIDEO_CODEC_SDK", "decoder")  # True on an H100
    """

    engines: list[CapabilityEngine] = field(default_factory=list)

    Engine = CapabilityEngine
    Codec = CapabilityCodec
    Parameters = CapabilityParameters

    def to_json(self) -> dict[str, Any]:
        """The capability as the official ``to_json()`` gives it: ``{"engines": [...]}``."""
        return {"engines": [e.to_json() for e in self.engines]}

    def engine(
        self, implementation: VideoCodecImplementation | int | str
    ) -> CapabilityEngine | None:
        """The engine of ``implementation`` (enum, value or name), or None if absent."""
        wanted = VideoCodecImplementation.parse(implementation)
        return next((e for e in self.engines if e.name is wanted), None)

    def supports(
        self,
        codec: VideoCodecType | int | str,
        implementation: VideoCodecImplementation | int | str,
        role: Role,
    ) -> bool:
        """Whether ``implementation`` can encode (``role="encoder"``) or decode ``codec``."""
        engine = self.engine(implementation)
        entry = engine.codec(codec) if engine else None
        return bool(entry and getattr(entry, role))


@dataclass
class PreferenceParameters:
    """``SoraVideoCodecPreference.Parameters`` (empty in the official API too)."""

    def to_json(self) -> dict[str, Any]:
        return {}


@dataclass
class PreferenceCodec:
    """``SoraVideoCodecPreference.Codec``: who encodes and decodes ``type``.

    ``encoder=None`` means the codec is not sent, ``decoder=None`` not received.
    """

    type: VideoCodecType
    encoder: VideoCodecImplementation | None = None
    decoder: VideoCodecImplementation | None = None
    parameters: PreferenceParameters = field(default_factory=PreferenceParameters)

    def __post_init__(self) -> None:
        self.type = VideoCodecType.parse(self.type)
        if self.encoder is not None:
            self.encoder = VideoCodecImplementation.parse(self.encoder)
        if self.decoder is not None:
            self.decoder = VideoCodecImplementation.parse(self.decoder)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type.name,
            "encoder": self.encoder.json_name if self.encoder is not None else None,
            "decoder": self.decoder.json_name if self.decoder is not None else None,
            "parameters": self.parameters.to_json(),
        }


class VideoCodecPreference:
    """``SoraVideoCodecPreference``: the codecs a connection offers, and who runs them.

    Example::

        internal = VideoCodecImplementation.INTERNAL
        vp9 = VideoCodecPreference.Codec(VideoCodecType.VP9, internal, internal)
        pref = VideoCodecPreference([vp9])
        h264 = pref.codecs[pref.get_or_add(VideoCodecType.H264)]
        h264.decoder = VideoCodecImplementation.NVIDIA_VIDEO_CODEC_SDK
    """

    Codec = PreferenceCodec
    Parameters = PreferenceParameters

    def __init__(self, codecs: Iterable[PreferenceCodec] = ()) -> None:
        self.codecs: list[PreferenceCodec] = list(codecs)

    def __repr__(self) -> str:
        return f"VideoCodecPreference({self.codecs!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VideoCodecPreference) and self.to_json() == other.to_json()

    def to_json(self) -> dict[str, Any]:
        """The preference as the official ``to_json()`` gives it: ``{"codecs": [...]}``."""
        return {"codecs": [c.to_json() for c in self.codecs]}

    def find(self, codec_type: VideoCodecType | int | str) -> int | None:
        """Index of ``codec_type`` in :attr:`codecs`, or None."""
        wanted = VideoCodecType.parse(codec_type)
        return next((i for i, c in enumerate(self.codecs) if c.type is wanted), None)

    def get_or_add(self, codec_type: VideoCodecType | int | str) -> int:
        """Index of ``codec_type``, appending an entry with no encoder/decoder if absent."""
        index = self.find(codec_type)
        if index is None:
            self.codecs.append(PreferenceCodec(VideoCodecType.parse(codec_type)))
            index = len(self.codecs) - 1
        return index

    def has_implementation(self, implementation: VideoCodecImplementation | int | str) -> bool:
        """Whether any codec is encoded or decoded by ``implementation``."""
        wanted = VideoCodecImplementation.parse(implementation)
        return any(wanted in (c.encoder, c.decoder) for c in self.codecs)

    def merge(self, other: VideoCodecPreference) -> None:
        """Take ``other``'s encoder/decoder choices where they are not None (official semantics)."""
        for codec in other.codecs:
            entry = self.codecs[self.get_or_add(codec.type)]
            if codec.encoder is not None:
                entry.encoder = codec.encoder
            if codec.decoder is not None:
                entry.decoder = codec.decoder

    # --- helpers beyond the official API ------------------------------------

    def encoder_for(
        self, codec_type: VideoCodecType | int | str
    ) -> VideoCodecImplementation | None:
        """Who encodes ``codec_type`` (None: not sent)."""
        index = self.find(codec_type)
        return self.codecs[index].encoder if index is not None else None

    def decoder_for(
        self, codec_type: VideoCodecType | int | str
    ) -> VideoCodecImplementation | None:
        """Who decodes ``codec_type`` (None: not received)."""
        index = self.find(codec_type)
        return self.codecs[index].decoder if index is not None else None

    def sendable(self) -> list[VideoCodecType]:
        """Codecs with an encoder, in preference order."""
        return [c.type for c in self.codecs if c.encoder is not None]

    def receivable(self) -> list[VideoCodecType]:
        """Codecs with a decoder, in preference order."""
        return [c.type for c in self.codecs if c.decoder is not None]

    @classmethod
    def default(cls) -> VideoCodecPreference:
        """What ``video_codec_preference=None`` means: every codec, INTERNAL both ways."""
        return cls(PreferenceCodec(t, _I.INTERNAL, _I.INTERNAL) for t in CAPABILITY_CODEC_ORDER)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VideoCodecPreference:
        """Inverse of :meth:`to_json`; raises ``ValueError`` on unknown names."""
        codecs = []
        for item in data.get("codecs", []):
            codecs.append(
                PreferenceCodec(
                    VideoCodecType.parse(item["type"]),
                    _parse_optional_impl(item.get("encoder")),
                    _parse_optional_impl(item.get("decoder")),
                )
            )
        return cls(codecs)

    @classmethod
    def coerce(cls, value: Any) -> VideoCodecPreference:
        """Accept ours, an official ``sora_sdk.SoraVideoCodecPreference``, its JSON, or None.

        Official objects are converted through the shared enum names and
        values, so ``Connection(video_codec_preference=...)`` can take either.
        """
        if value is None:
            return cls.default()
        if isinstance(value, VideoCodecPreference):
            return value
        if isinstance(value, Mapping):
            return cls.from_json(value)
        codecs = getattr(value, "codecs", None)
        if codecs is None:
            raise TypeError(f"not a video codec preference: {value!r}")
        return cls(
            PreferenceCodec(
                VideoCodecType.parse(c.type),
                _parse_optional_impl(c.encoder),
                _parse_optional_impl(c.decoder),
            )
            for c in codecs
        )


def _parse_optional_impl(value: Any) -> VideoCodecImplementation | None:
    return None if value is None else VideoCodecImplementation.parse(value)


def _gpu_name() -> str | None:
    """The first NVIDIA GPU's name (``nvcodec_gpu_device_name``), if ``nvidia-smi`` answers."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    name = out.strip().splitlines()[0].strip() if out.strip() else ""
    return name or None


#: Engines in the order the official capability lists them.
ENGINE_ORDER: tuple[VideoCodecImplementation, ...] = (
    _I.INTERNAL,
    _I.CISCO_OPENH264,
    _I.INTEL_VPL,
    _I.NVIDIA_VIDEO_CODEC_SDK,
    _I.AMD_AMF,
    _I.RASPI_V4L2M2M,
)


def build_capability(
    results: Mapping[str, ProbeResult],
    backends: Sequence[Backend],
    openh264: str | None = None,
    gpu_name: str | None = None,
) -> VideoCodecCapability:
    """Assemble the capability from probe results (pure; tested with faked results)."""
    capability = VideoCodecCapability()
    for impl in ENGINE_ORDER:
        if impl is _I.CISCO_OPENH264 and not openh264:
            continue
        order = OPENH264_CODEC_ORDER if impl is _I.CISCO_OPENH264 else CAPABILITY_CODEC_ORDER
        engine = CapabilityEngine(impl)
        for codec_type in order:
            entry = CapabilityCodec(codec_type)
            for role in ("encoder", "decoder"):
                for backend in backends:
                    if (
                        backend.implementation is impl
                        and backend.codec is codec_type
                        and backend.role == role
                    ):
                        result = results.get(backend.key)
                        if result is not None and result.ok:
                            setattr(entry, role, True)
                            if impl is _I.CISCO_OPENH264:
                                entry.parameters.version = result.detail.get("version")
                                entry.parameters.openh264_path = openh264
                            break
            engine.codecs.append(entry)
        usable = any(c.encoder or c.decoder for c in engine.codecs)
        if impl is not _I.INTERNAL and not usable:
            continue
        if impl is _I.NVIDIA_VIDEO_CODEC_SDK:
            engine.parameters.nvcodec_gpu_device_name = gpu_name
        capability.engines.append(engine)
    return capability


def get_video_codec_capability(
    openh264: str | None = None,
    *,
    refresh: bool = False,
) -> VideoCodecCapability:
    """Probe every engine on this machine (cached) and report what works.

    Same shape as ``sora_sdk.get_video_codec_capability(openh264)``. The
    first call runs a child process for a few seconds; later calls answer
    from the cache (``refresh=True`` probes again). Blocking: in asyncio code
    use ``await asyncio.to_thread(get_video_codec_capability)``.
    """
    backends = [b for b in BACKENDS if b.applies_to()]
    results = probe_backends(backends, openh264, refresh=refresh)
    nvidia_ok = any(
        r.ok
        for b in backends
        if b.implementation is _I.NVIDIA_VIDEO_CODEC_SDK
        for r in [results[b.key]]
    )
    return build_capability(results, backends, openh264, _gpu_name() if nvidia_ok else None)


def create_video_codec_preference_from_implementation(
    capability: VideoCodecCapability,
    implementation: VideoCodecImplementation | int | str,
) -> VideoCodecPreference:
    """Every codec of ``implementation``'s engine, using it wherever it works.

    As the official function: codecs the engine cannot encode get
    ``encoder=None`` (likewise decoders); an absent engine gives an empty
    preference. Combine with :meth:`VideoCodecPreference.merge` to mix, e.g.
    NVDEC decoding with software encoding on an H100.
    """
    engine = capability.engine(implementation)
    if engine is None:
        return VideoCodecPreference()
    return VideoCodecPreference(
        PreferenceCodec(
            c.type,
            engine.name if c.encoder else None,
            engine.name if c.decoder else None,
        )
        for c in engine.codecs
    )


def implementation_available(
    codec: VideoCodecType | int | str,
    implementation: VideoCodecImplementation | int | str,
    role: Role,
    openh264: str | None = None,
) -> bool:
    """Whether one implementation × codec × role works here (probes only what it needs)."""
    from .backends import backends_for

    chain = backends_for(implementation, codec, role)
    if not chain:
        return False
    results = probe_backends(chain, openh264)
    return any(results[b.key].ok for b in chain)
