"""The objects between encoder, packetizer, depacketizer and decoder.

Send path::

    av.VideoFrame ──Encoder.encode──► EncodedFrame ──(transform)──► Packetizer.packetize ──► RTP

Receive path::

    payloads of one RTP timestamp ──Depacketizer.depacketize──► EncodedFrame ──(transform)──►
    Decoder.decode ──► av.VideoFrame

aiortc fuses encoding and packetizing (``Encoder.encode`` returns payloads) and
depacketizes per packet (``aiortc-notes.md`` A.1, A.3). Splitting them gives
the encoded-transform hook a real object to work on, and per-frame
depacketizing is what AV1 (OBU sizes known only once every fragment is in) and
VP9 (several layer frames per timestamp) need.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import av.frame

#: RTP clock rate of every video codec (RFC 7741, RFC 9628, RFC 6184, RFC 7798, AV1 RTP §7).
VIDEO_CLOCK_RATE = 90_000
#: RTP clock rate of Opus (RFC 7587 §4.1), whatever the real sample rate.
OPUS_CLOCK_RATE = 48_000

VIDEO_CODECS = ("VP8", "VP9", "AV1", "H264", "H265")
AUDIO_CODECS = ("OPUS",)


class MalformedPayloadError(ValueError):
    """An RTP payload or a frame's set of payloads cannot be parsed.

    A ``ValueError``, so code written against aiortc's depayloaders (which
    raise ``ValueError``) keeps working. The jitter buffer drops the frame
    and asks for a key frame.
    """


class IncompleteFrameError(MalformedPayloadError):
    """The payloads of a frame parse but a fragment is missing (start, end or middle)."""


class CodecUnavailableError(LookupError):
    """No registered or working encoder/decoder for a codec and implementation."""


class DecodeError(ValueError):
    """The decoder rejected an encoded frame (the caller should request a key frame)."""


@dataclass(slots=True)
class EncodedFrame:
    """One encoded video frame or audio packet, in the codec's own bitstream format.

    ``data`` is what the decoder takes: a VP8/VP9 frame, an AV1 temporal unit
    (low-overhead OBUs with size fields), H.264/H.265 Annex-B (start codes),
    one Opus packet. ``timestamp`` is on the RTP clock (90 kHz video, 48 kHz
    Opus). The metadata follows the official ``SoraTransformableVideoFrame``
    and ``SoraTransformableAudioFrame`` (``aiortc-notes.md`` A.3).

    Example::

        frame = EncodedFrame(data=b"...", timestamp=3000, codec="VP9", is_keyframe=True,
                             width=640, height=480)
    """

    data: bytes
    timestamp: int
    codec: str
    is_keyframe: bool = False
    width: int = 0
    height: int = 0
    temporal_index: int = 0
    spatial_index: int = 0
    #: Picture id (VP8/VP9), or a running frame number where the codec has none.
    frame_id: int | None = None
    #: ``frame_id`` values this frame references (VP9 flexible mode P_DIFFs).
    frame_dependencies: tuple[int, ...] = ()
    # --- audio ---
    sample_rate: int = 0
    channels: int = 0
    #: Audio samples (per channel) this packet covers.
    samples: int = 0
    #: RFC 6464 level, 0 (loud) .. 127 (silence), when known.
    audio_level: int | None = None
    # --- RTP side, set by the receiver or the sender ---
    payload_type: int | None = None
    ssrc: int | None = None
    #: Extra per-codec facts a packetizer may use (documented by each codec module).
    codec_specific: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``"audio"`` for Opus, ``"video"`` otherwise."""
        return "audio" if self.codec.upper() in AUDIO_CODECS else "video"

    def __repr__(self) -> str:
        key = " key" if self.is_keyframe else ""
        size = f" {self.width}x{self.height}" if self.width else ""
        return (
            f"EncodedFrame({self.codec}{key}{size} ts={self.timestamp} "
            f"{len(self.data)} bytes id={self.frame_id})"
        )


class Encoder(abc.ABC):
    """Turns raw ``av`` frames into :class:`EncodedFrame` objects.

    Implementations open their codec lazily on the first frame (its size is
    not known before) and must not buffer: one frame in gives its encoded
    frame out (no look-ahead, measured for every built-in encoder).
    """

    #: Sora codec name ("VP8", "VP9", "AV1", "H264", "H265", "OPUS").
    codec: str = ""
    #: The frame rate frames arrive at before any frame dropping (the sender sets
    #: its source's rate, capped by its adaptation); rate control budgets
    #: ``target_bitrate / input_framerate`` bits per frame. None: not known.
    input_framerate: float | None = None

    @property
    @abc.abstractmethod
    def implementation_name(self) -> str:
        """What stats report as ``encoderImplementation`` ("libvpx", "NvCodec", ...)."""

    @abc.abstractmethod
    def encode(self, frame: av.frame.Frame, force_keyframe: bool = False) -> list[EncodedFrame]:
        """Encode one frame; usually returns exactly one :class:`EncodedFrame`.

        ``force_keyframe`` makes this frame a key frame (PLI/FIR answer).
        """

    @property
    def target_bitrate(self) -> int:
        """Target bit rate in bits per second (the bandwidth estimator writes it)."""
        return int(getattr(self, "_target_bitrate", 0))

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        self._target_bitrate = int(bitrate)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the codec; the encoder may be used again (it reopens)."""


class Decoder(abc.ABC):
    """Turns :class:`EncodedFrame` objects into ``av`` frames."""

    codec: str = ""

    @property
    @abc.abstractmethod
    def implementation_name(self) -> str:
        """What stats report as ``decoderImplementation``."""

    @abc.abstractmethod
    def decode(self, frame: EncodedFrame) -> Sequence[av.frame.Frame]:
        """Decode one encoded frame; returns the frames that came out (0 or 1 here).

        Raises :class:`DecodeError` when the decoder rejects the data.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the codec."""


class Packetizer(abc.ABC):
    """Splits an :class:`EncodedFrame` into RTP payloads (the RFC's payloader).

    The caller sets the RTP marker bit on the last payload of the frame and
    gives every payload the frame's timestamp.
    """

    codec: str = ""

    @abc.abstractmethod
    def packetize(self, frame: EncodedFrame, max_payload_size: int = 1200) -> list[bytes]:
        """Payloads for one frame, each at most ``max_payload_size`` bytes.

        Raises ``ValueError`` when ``max_payload_size`` is too small for the
        format's headers or the frame's bitstream is malformed.
        """


class Depacketizer(abc.ABC):
    """Rebuilds a frame from the payloads of one RTP timestamp (the RFC's depayloader).

    Per-frame: :meth:`depacketize` gets every payload of the timestamp in
    sequence-number order; it raises :class:`MalformedPayloadError` (a
    ``ValueError``) for garbage and :class:`IncompleteFrameError` when the
    format shows a fragment is missing. The per-payload helpers are cheap and
    never raise: a jitter buffer or an SFU uses them to find frame starts and
    key frames without depacketizing.
    """

    codec: str = ""

    @abc.abstractmethod
    def depacketize(self, payloads: Sequence[bytes], timestamp: int = 0) -> EncodedFrame:
        """The frame carried by ``payloads`` (all of one timestamp, in order)."""

    @abc.abstractmethod
    def is_frame_start(self, payload: bytes) -> bool:
        """True if ``payload`` is the first packet of a frame; False for garbage."""

    @abc.abstractmethod
    def is_keyframe_start(self, payload: bytes) -> bool:
        """True if ``payload`` is the first packet of a key frame; False for garbage."""

    def is_frame_end(self, payload: bytes) -> bool | None:
        """True/False when the payload format marks frame ends (VP9 E bit), else None.

        When None the RTP marker bit is the only end-of-frame signal.
        """
        return None


def require_payloads(payloads: Sequence[bytes], codec: str) -> None:
    """Shared check: a frame has at least one payload, all of them ``bytes``-like."""
    if not payloads:
        raise IncompleteFrameError(f"{codec}: no payloads for the frame")
    for payload in payloads:
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise MalformedPayloadError(f"{codec}: payload is {type(payload).__name__}, not bytes")


def check_max_payload_size(max_payload_size: int, minimum: int, codec: str) -> None:
    """Shared check for :meth:`Packetizer.packetize`."""
    if max_payload_size < minimum:
        raise ValueError(
            f"{codec}: max_payload_size {max_payload_size} is below the minimum of {minimum}"
        )


def split_evenly(length: int, max_size: int) -> list[int]:
    """Sizes of ``ceil(length / max_size)`` chunks that differ by at most one byte.

    Even fragments (as libwebrtc does) avoid a tiny last packet that travels
    alone and costs a full header.
    """
    if length <= 0:
        return []
    count = -(-length // max_size)
    base, extra = divmod(length, count)
    return [base + 1 if i < extra else base for i in range(count)]
