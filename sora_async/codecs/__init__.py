"""Codec layer: RTP payload formats and PyAV encoder/decoder plugins behind our own registry.

- :mod:`.base`: :class:`EncodedFrame` and the ``Encoder``/``Decoder``/
  ``Packetizer``/``Depacketizer`` interfaces;
- one module per payload format, named after its standard: :mod:`.vp8`
  (RFC 7741), :mod:`.vp9` (RFC 9628), :mod:`.av1` (AOM AV1 RTP), :mod:`.h264`
  (RFC 6184), :mod:`.h265` (RFC 7798), :mod:`.opus` (RFC 7587);
- :mod:`.pyav`: FFmpeg encoders/decoders with real-time settings and
  fallback across backends; :mod:`.hardware`: NVENC/QSV/AMF/V4L2/VideoToolbox
  setups; :mod:`.openh264`: Cisco's OpenH264 through ctypes;
- :mod:`.assembler`: per-SSRC frame assembly (reordering, loss) for receivers;
- :mod:`.registry`: lookup by name/MIME type, SDP facts, ``create_encoder``/
  ``create_decoder``.
"""

from __future__ import annotations

from .assembler import AssembledFrame, FrameAssembler
from .base import (
    CodecUnavailableError,
    DecodeError,
    Decoder,
    Depacketizer,
    EncodedFrame,
    Encoder,
    IncompleteFrameError,
    MalformedPayloadError,
    Packetizer,
)
from .pyav import BitrateUpdate, EncoderSettings, PyAVVideoDecoder, PyAVVideoEncoder
from .registry import (
    CodecRegistry,
    CodecSpec,
    RtcpFeedback,
    codecs,
    create_decoder,
    create_depacketizer,
    create_encoder,
    create_packetizer,
    default_registry,
    find_codec,
    fmtp_compatible,
    format_fmtp,
    get_codec,
    parse_fmtp,
    register_codec,
    register_decoder,
    register_encoder,
)

__all__ = [
    "AssembledFrame",
    "BitrateUpdate",
    "CodecRegistry",
    "CodecSpec",
    "CodecUnavailableError",
    "DecodeError",
    "Decoder",
    "Depacketizer",
    "EncodedFrame",
    "Encoder",
    "EncoderSettings",
    "FrameAssembler",
    "IncompleteFrameError",
    "MalformedPayloadError",
    "Packetizer",
    "PyAVVideoDecoder",
    "PyAVVideoEncoder",
    "RtcpFeedback",
    "codecs",
    "create_decoder",
    "create_depacketizer",
    "create_encoder",
    "create_packetizer",
    "default_registry",
    "find_codec",
    "fmtp_compatible",
    "format_fmtp",
    "get_codec",
    "parse_fmtp",
    "register_codec",
    "register_decoder",
    "register_encoder",
]
