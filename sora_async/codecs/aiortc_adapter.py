"""Adapters that let aiortc 1.16's sender and receiver run our codecs (for the RTP wiring).

aiortc's ``RTCRtpSender`` wants an encoder whose ``encode(frame, force_keyframe)``
returns ``(payloads, rtp_timestamp)`` and whose ``pack(av.Packet)`` does the
same for pre-encoded data; ``RTCRtpReceiver`` depayloads each packet with
``aiortc.codecs.depayload(codec, payload)``, joins a frame's results with
``b"".join`` in its ``JitterBuffer`` and hands the bytes to ``decoder.decode``
(``aiortc-notes.md`` A.0, A.1). Our split pipeline fits in with:

- :class:`AiortcEncoder`: our :class:`Encoder` + :class:`Packetizer` (+ an
  optional encoded-frame transform between them) behind aiortc's interface;
- :func:`frame_payload` as the ``depayload`` result for our codecs: it keeps
  payload boundaries (a 4-byte length before each payload) through the
  jitter buffer's join, so
- :class:`AiortcDecoder` can split them again and depacketize *per frame*.

Wiring them in (``get_encoder``/``get_decoder``/``depayload`` and the codec
lists) belongs in ``sora_async/_aiortc_seam.py``; this module touches no
aiortc internals.

Decode failures are raised as ``av.error.InvalidDataError`` because the
receiver's decoder thread catches ``av.FFmpegError`` only (it then sends a PLI);
any other exception would kill that thread.
"""

from __future__ import annotations

import errno
import fractions
import struct
from collections.abc import Callable

import av
import av.error
from aiortc.codecs.base import Decoder as _AiortcDecoder
from aiortc.codecs.base import Encoder as _AiortcEncoder
from aiortc.jitterbuffer import JitterFrame

from .base import (
    OPUS_CLOCK_RATE,
    VIDEO_CLOCK_RATE,
    DecodeError,
    Decoder,
    Depacketizer,
    EncodedFrame,
    Encoder,
    MalformedPayloadError,
    Packetizer,
)

#: An encoded-frame transform run between encoder and packetizer; None drops the frame.
Transform = Callable[[EncodedFrame], EncodedFrame | None]

_LENGTH = struct.Struct("!I")


def frame_payload(payload: bytes) -> bytes:
    """What a ``depayload`` hook returns for our codecs: the payload, length-prefixed."""
    return _LENGTH.pack(len(payload)) + payload


def split_frame_payloads(data: bytes) -> list[bytes]:
    """Undo the jitter buffer's join of :func:`frame_payload` results."""
    payloads: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + _LENGTH.size > len(data):
            raise MalformedPayloadError("framed payloads: truncated length")
        (size,) = _LENGTH.unpack_from(data, pos)
        pos += _LENGTH.size
        if pos + size > len(data):
            raise MalformedPayloadError("framed payloads: truncated payload")
        payloads.append(data[pos : pos + size])
        pos += size
    return payloads


class AiortcEncoder(_AiortcEncoder):
    """aiortc ``Encoder`` on top of ours: encode → (transform) → packetize.

    Example::

        encoder = AiortcEncoder(create_encoder("VP9"), create_packetizer("VP9"))
        payloads, timestamp = encoder.encode(frame, force_keyframe=False)
    """

    def __init__(
        self,
        encoder: Encoder,
        packetizer: Packetizer,
        max_payload_size: int = 1200,
        transform: Transform | None = None,
    ) -> None:
        self.encoder = encoder
        self.packetizer = packetizer
        self.max_payload_size = max_payload_size
        self.transform = transform
        self.last_frame: EncodedFrame | None = None

    @property
    def target_bitrate(self) -> int:
        """aiortc's REMB handler writes this."""
        return self.encoder.target_bitrate

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        self.encoder.target_bitrate = bitrate

    def _send(self, frames: list[EncodedFrame]) -> tuple[list[bytes], int]:
        payloads: list[bytes] = []
        timestamp = 0
        # Our encoders give one frame per input frame; aiortc puts one
        # timestamp and one marker on the whole list.
        for frame in frames:
            if self.transform is not None:
                transformed = self.transform(frame)
                if transformed is None:
                    continue
                frame = transformed
            payloads += self.packetizer.packetize(frame, self.max_payload_size)
            timestamp = frame.timestamp
            self.last_frame = frame
        return payloads, timestamp

    def encode(
        self, frame: av.frame.Frame, force_keyframe: bool = False
    ) -> tuple[list[bytes], int]:
        return self._send(self.encoder.encode(frame, force_keyframe))

    def pack(self, packet: av.Packet) -> tuple[list[bytes], int]:
        """Pre-encoded input (aiortc's ``pack`` path)."""
        clock = OPUS_CLOCK_RATE if self.encoder.codec == "OPUS" else VIDEO_CLOCK_RATE
        time_base = packet.time_base or fractions.Fraction(1, clock)
        timestamp = int((packet.pts or 0) * time_base * clock) & 0xFFFFFFFF
        frame = EncodedFrame(
            data=bytes(packet),
            timestamp=timestamp,
            codec=self.encoder.codec,
            is_keyframe=bool(packet.is_keyframe),
        )
        return self._send([frame])


class AiortcDecoder(_AiortcDecoder):
    """aiortc ``Decoder`` on top of ours: split → depacketize (per frame) → (transform) → decode."""

    def __init__(
        self,
        decoder: Decoder,
        depacketizer: Depacketizer,
        transform: Transform | None = None,
    ) -> None:
        self.decoder = decoder
        self.depacketizer = depacketizer
        self.transform = transform

    def decode(self, encoded_frame: JitterFrame) -> list[av.frame.Frame]:
        try:
            payloads = split_frame_payloads(encoded_frame.data)
            frame: EncodedFrame | None = self.depacketizer.depacketize(
                payloads, encoded_frame.timestamp
            )
            if self.transform is not None and frame is not None:
                frame = self.transform(frame)
            if frame is None:
                return []
            return list(self.decoder.decode(frame))
        except (MalformedPayloadError, DecodeError) as exc:
            raise av.error.InvalidDataError(errno.EINVAL, str(exc)) from exc
