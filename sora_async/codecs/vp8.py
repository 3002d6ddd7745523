"""VP8 over RTP (RFC 7741) and the libvpx real-time encoder setup.

Payload descriptor (RFC 7741 §4.2)::

     0 1 2 3 4 5 6 7
    +-+-+-+-+-+-+-+-+
    |X|R|N|S|R| PID | (REQUIRED)
    +-+-+-+-+-+-+-+-+
    |I|L|T|K| RSV   | (OPTIONAL, X=1)
    +-+-+-+-+-+-+-+-+
    |M| PictureID   | (OPTIONAL, I=1; M=1: 15-bit PictureID)
    +-+-+-+-+-+-+-+-+
    |   TL0PICIDX   | (OPTIONAL, L=1)
    +-+-+-+-+-+-+-+-+
    |TID|Y| KEYIDX  | (OPTIONAL, T=1 or K=1)
    +-+-+-+-+-+-+-+-+

The packetizer sends one partition (aiortc does the same) with a 15-bit
PictureID on every packet, S=1 on the first. The first byte of the VP8 frame
(the payload header, §4.3) carries the inverse key-frame bit P.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from av.video.codeccontext import VideoCodecContext

from .base import (
    Depacketizer,
    EncodedFrame,
    IncompleteFrameError,
    MalformedPayloadError,
    Packetizer,
    check_max_payload_size,
    require_payloads,
)
from .pyav import BitrateUpdate, EncoderSettings, EncoderSetup, register_configurator

CODEC = "VP8"
MIME_TYPE = "video/VP8"


@dataclass
class Vp8PayloadDescriptor:
    """The RFC 7741 §4.2 payload descriptor, field names as in the RFC.

    Example::

        >>> d, offset = Vp8PayloadDescriptor.parse(bytes([0x90, 0x80, 0x81, 0x02, 0xAA]))
        >>> (d.start_of_partition, d.picture_id, offset)
        (True, 258, 4)
    """

    start_of_partition: bool = False
    partition_index: int = 0
    non_reference: bool = False
    picture_id: int | None = None
    tl0picidx: int | None = None
    tid: int | None = None
    layer_sync: bool = False
    keyidx: int | None = None

    def __bytes__(self) -> bytes:
        first = (
            (0x20 if self.non_reference else 0)
            | (0x10 if self.start_of_partition else 0)
            | (self.partition_index & 0x07)
        )
        ext = 0
        if self.picture_id is not None:
            ext |= 0x80
        if self.tl0picidx is not None:
            ext |= 0x40
        if self.tid is not None:
            ext |= 0x20
        if self.keyidx is not None:
            ext |= 0x10
        if not ext:
            return bytes([first])
        out = bytearray([first | 0x80, ext])
        if self.picture_id is not None:
            # Always the 15-bit form (M=1), as libwebrtc and aiortc 1.16.
            out += struct.pack("!H", 0x8000 | (self.picture_id & 0x7FFF))
        if self.tl0picidx is not None:
            out.append(self.tl0picidx & 0xFF)
        if self.tid is not None or self.keyidx is not None:
            out.append(
                ((self.tid or 0) & 0x03) << 6
                | (0x20 if self.layer_sync else 0)
                | ((self.keyidx or 0) & 0x1F)
            )
        return bytes(out)

    @classmethod
    def parse(cls, data: bytes) -> tuple[Vp8PayloadDescriptor, int]:
        """Parse the descriptor at the start of ``data``; returns it and its length.

        Raises :class:`MalformedPayloadError` when truncated.
        """
        first, ext, picture_id, tl0picidx, tk, pos = _parse_descriptor(data)
        desc = cls(
            start_of_partition=bool(first & 0x10),
            partition_index=first & 0x07,
            non_reference=bool(first & 0x20),
            picture_id=picture_id,
            tl0picidx=tl0picidx,
        )
        if ext & 0x20:
            desc.tid = tk >> 6
            desc.layer_sync = bool(tk & 0x20)
        if ext & 0x10:
            desc.keyidx = tk & 0x1F
        return desc, pos


def _parse_descriptor(data: bytes) -> tuple[int, int, int | None, int | None, int, int]:
    """The descriptor's fields as ``(first byte, extension byte or 0, PictureID,
    TL0PICIDX, TID/Y/KEYIDX byte or 0, length)``.

    What :meth:`Vp8PayloadDescriptor.parse` reads, without building the object:
    the depacketizer reads every packet's descriptor (~1 µs as an object, ~0.3 µs
    as this tuple). Raises :class:`MalformedPayloadError` when truncated.
    """
    size = len(data)
    if size < 1:
        raise MalformedPayloadError("VP8 payload is empty")
    first = data[0]
    if not first & 0x80:
        return first, 0, None, None, 0, 1
    if size < 2:
        raise MalformedPayloadError("VP8 descriptor: truncated extension byte")
    ext = data[1]
    pos = 2
    picture_id = tl0picidx = None
    tk = 0
    if ext & 0x80:
        if size < pos + 1:
            raise MalformedPayloadError("VP8 descriptor: truncated PictureID")
        if data[pos] & 0x80:
            if size < pos + 2:
                raise MalformedPayloadError("VP8 descriptor: truncated 15-bit PictureID")
            picture_id = (data[pos] & 0x7F) << 8 | data[pos + 1]
            pos += 2
        else:
            picture_id = data[pos] & 0x7F
            pos += 1
    if ext & 0x40:
        if size < pos + 1:
            raise MalformedPayloadError("VP8 descriptor: truncated TL0PICIDX")
        tl0picidx = data[pos]
        pos += 1
    if ext & 0x30:
        if size < pos + 1:
            raise MalformedPayloadError("VP8 descriptor: truncated TID/KEYIDX")
        tk = data[pos]
        pos += 1
    return first, ext, picture_id, tl0picidx, tk, pos


def parse_frame_header(frame: bytes) -> tuple[bool, int, int]:
    """``(is_keyframe, width, height)`` from the start of a VP8 frame (RFC 6386 §9.1).

    Width and height are 0 for inter frames (only key frames carry them).
    """
    if not frame:
        raise MalformedPayloadError("VP8 frame is empty")
    is_keyframe = not frame[0] & 0x01
    if is_keyframe and len(frame) >= 10 and frame[3:6] == b"\x9d\x01\x2a":
        width = struct.unpack_from("<H", frame, 6)[0] & 0x3FFF
        height = struct.unpack_from("<H", frame, 8)[0] & 0x3FFF
        return True, width, height
    return is_keyframe, 0, 0


class Vp8Packetizer(Packetizer):
    """RFC 7741 payloader: one partition, 15-bit PictureID, S=1 on the first packet.

    The PictureID runs per packetizer (random start, §4.2 recommends it), so it
    stays continuous when the encoder behind it is re-created.
    """

    codec = CODEC

    def __init__(self, picture_id: int | None = None) -> None:
        self.picture_id = random.randint(0, 0x7FFF) if picture_id is None else picture_id & 0x7FFF

    def packetize(self, frame: EncodedFrame, max_payload_size: int = 1200) -> list[bytes]:
        descriptor = Vp8PayloadDescriptor(start_of_partition=True, picture_id=self.picture_id)
        header_size = len(bytes(descriptor))
        check_max_payload_size(max_payload_size, header_size + 1, CODEC)
        if not frame.data:
            raise ValueError("VP8: empty frame")
        data = frame.data
        room = max_payload_size - header_size
        # The descriptor is the same in every packet but the first (S=0 after it).
        first = bytes(descriptor)
        descriptor.start_of_partition = False
        rest = bytes(descriptor)
        payloads = [first + data[:room]]
        payloads += [rest + data[pos : pos + room] for pos in range(room, len(data), room)]
        self.picture_id = (self.picture_id + 1) & 0x7FFF
        return payloads


class Vp8Depacketizer(Depacketizer):
    """RFC 7741 depayloader working on the payloads of one frame."""

    codec = CODEC

    def depacketize(self, payloads: Sequence[bytes], timestamp: int = 0) -> EncodedFrame:
        require_payloads(payloads, CODEC)
        # Views of the payloads after their descriptors: joined once below, instead of
        # a sliced copy of each payload and then the joined one.
        parts: list[memoryview] = []
        picture_id: int | None = None
        tid = 0
        first_starts = False
        for index, payload in enumerate(payloads):
            payload = bytes(payload)  # no copy for bytes (what the assembler gives)
            first, ext, frame_picture_id, _, tk, offset = _parse_descriptor(payload)
            if offset >= len(payload):
                raise MalformedPayloadError("VP8 payload has a descriptor but no data")
            starts = (first & 0x17) == 0x10  # S=1 and partition index 0: a frame's start
            if index == 0:
                first_starts = starts
                picture_id = frame_picture_id
                if ext & 0x20:
                    tid = tk >> 6
            elif starts:
                raise MalformedPayloadError("VP8: a second frame start inside one frame")
            if (
                frame_picture_id is not None
                and picture_id is not None
                and frame_picture_id != picture_id
            ):
                raise MalformedPayloadError("VP8: PictureID changes inside one frame")
            parts.append(memoryview(payload)[offset:])
        if not first_starts:
            raise IncompleteFrameError("VP8: the first packet of the frame is missing")
        data = b"".join(parts)
        is_keyframe, width, height = parse_frame_header(data)
        return EncodedFrame(
            data=data,
            timestamp=timestamp,
            codec=CODEC,
            is_keyframe=is_keyframe,
            width=width,
            height=height,
            temporal_index=tid,
            frame_id=picture_id,
        )

    def is_frame_start(self, payload: bytes) -> bool:
        try:
            first, _, _, _, _, offset = _parse_descriptor(payload)
        except MalformedPayloadError:
            return False
        return (first & 0x17) == 0x10 and offset < len(payload)

    def is_keyframe_start(self, payload: bytes) -> bool:
        try:
            first, _, _, _, _, offset = _parse_descriptor(payload)
        except MalformedPayloadError:
            return False
        if not ((first & 0x17) == 0x10 and offset < len(payload)):
            return False
        return not payload[offset] & 0x01


def configure_libvpx(
    ctx: VideoCodecContext, settings: EncoderSettings, bitrate: int
) -> EncoderSetup:
    """libvpx VP8 real-time CBR, as the official client runs it (libwebrtc's
    ``LibvpxVp8Encoder::InitEncode``/``InitAndSetControlSettings``).

    ``minrate = maxrate = bit_rate`` selects CBR; without explicit quantizer
    limits FFmpeg passes its default qmax (31) and libvpx overshoots small
    targets several times over (measured: 1.0 Mbps for a 150 kbps target).
    FFmpeg does not apply a new ``bit_rate`` in place (measured), so bit-rate
    changes go to libvpx directly (:attr:`BitrateUpdate.LIBVPX`, re-creating the
    encoder only where that seam is unusable). ``drop-threshold=30`` is libwebrtc's
    ``rc_dropframe_thresh``: when even the coarsest quantizer cannot hold the
    target (the buffer falls under 30 %), libvpx skips frames instead of
    overshooting (measured on noise: 870 kbps at a 130 kbps target without it,
    the target with it); the sender sees no packet for a skipped frame.

    The rest is libwebrtc's values: ``cpu-used=-6`` (its default above CIF on
    x86), one token partition, ``static-thresh=1``, 15/100 % over/undershoot, a
    500 ms initial buffer (``rc_buf_initial_sz``; FFmpeg takes it in bits) and
    key frames capped at 900 % of a frame's budget (``MaxIntraTarget`` of its
    600 ms optimal buffer at 30 fps), so that a key frame is not a burst of
    several frames' worth of packets.

    No denoiser (``noise-sensitivity=0``): the official Sora SDKs feed libwebrtc
    through ``sora::ScalableVideoTrackSource``, whose ``needs_denoising()`` is
    false, so libwebrtc runs VP8 with ``kDenoiserOff``; aiortc's 4 (adaptive)
    is libwebrtc's default only for sources that do not say. Measured on the
    bench's media (paced at 30 fps, libvpx 1.16 in PyAV 18, 2-core EPYC): the
    denoiser cost 24 % of the encode (VGA 3.2 -> 2.4 ms, 720p 8.3-10.1 ->
    6.8-7.6 ms per frame; 13 % of its instructions under callgrind) at the same
    bit rate, and on clean input it lowered PSNR (VGA 47.9 -> 49.5 dB without).
    """
    ctx.qmin = 2
    ctx.qmax = 56
    return EncoderSetup(
        options={
            "deadline": "realtime",
            "cpu-used": "-6",
            "lag-in-frames": "0",
            "minrate": str(bitrate),
            "maxrate": str(bitrate),
            "bufsize": str(bitrate),
            "rc_init_occupancy": str(bitrate // 2),
            "max-intra-rate": "900",
            "noise-sensitivity": "0",
            "overshoot-pct": "15",
            "undershoot-pct": "100",
            "partitions": "0",
            "static-thresh": "1",
            "drop-threshold": "30",
        },
        bitrate_update=BitrateUpdate.LIBVPX,
    )


register_configurator("libvpx", configure_libvpx)
