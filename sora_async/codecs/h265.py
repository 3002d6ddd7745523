"""H.265/HEVC over RTP (RFC 7798) and the x265 real-time setup.

Payload header (RFC 7798 §1.1.4, the NAL unit header)::

    |F|   Type    |  LayerId  | TID |   (2 bytes)

Packet types (§4.4): single NAL unit (types 0-47), Aggregation Packet (AP,
48), Fragmentation Unit (FU, 49, with an FU header ``|S|E| FuType |``), and
PACI (50), which this implementation ignores (it is optional and WebRTC
senders do not use it). DONL/DOND fields exist only when
``sprop-max-don-diff`` > 0; the depacketizer supports them with
``with_don=True``, the packetizer never sends them (WebRTC does not either).

SDP: ``H265/90000`` with ``profile-id``, ``tier-flag``, ``level-id`` and
``tx-mode=SRST``. Formats are compatible when profile-id and tier-flag
match; the level may differ (the answer takes the lower one).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from av.video.codeccontext import VideoCodecContext

from .base import (
    Depacketizer,
    EncodedFrame,
    IncompleteFrameError,
    MalformedPayloadError,
    Packetizer,
    check_max_payload_size,
    require_payloads,
    split_evenly,
)
from .bitstream import join_annexb, plan_nal_payloads, split_annexb
from .pyav import BitrateUpdate, EncoderSettings, EncoderSetup, register_configurator

CODEC = "H265"
MIME_TYPE = "video/H265"

NAL_IRAP_FIRST = 16  # BLA_W_LP
NAL_IRAP_LAST = 23  # RSV_IRAP_VCL23
NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34
NAL_AUD = 35
NAL_PREFIX_SEI = 39
NAL_AP = 48
NAL_FU = 49
NAL_PACI = 50

_HEADER = 2
_FU_HEADER = 1
_LENGTH_FIELD = 2
#: NAL units that start an access unit (H.265 §7.4.2.4.4).
_AU_START_NALS = frozenset({NAL_VPS, NAL_SPS, NAL_PPS, NAL_AUD, NAL_PREFIX_SEI})


def nal_type(nal: bytes) -> int:
    """``nal_unit_type``: bits 1-6 of the first header byte."""
    return (nal[0] >> 1) & 0x3F


def is_irap(kind: int) -> bool:
    """Intra random access point types (BLA, IDR, CRA): a decoder can start here."""
    return NAL_IRAP_FIRST <= kind <= NAL_IRAP_LAST


def _starts_access_unit(kind: int, body: bytes) -> bool:
    if kind in _AU_START_NALS:
        return True
    if kind < 32:  # VCL: first_slice_segment_in_pic_flag is the first bit after the header
        return bool(body) and bool(body[0] & 0x80)
    return False


def _header_fields(nal: bytes) -> tuple[int, int, int]:
    """(F, LayerId, TID) of a 2-byte NAL header."""
    return nal[0] >> 7, ((nal[0] & 0x01) << 5) | (nal[1] >> 3), nal[1] & 0x07


def _make_header(forbidden: int, kind: int, layer_id: int, tid: int) -> bytes:
    return bytes([(forbidden << 7) | (kind << 1) | (layer_id >> 5), ((layer_id & 0x1F) << 3) | tid])


class H265Packetizer(Packetizer):
    """RFC 7798 payloader: single NAL unit, AP for small units, FU for large ones."""

    codec = CODEC

    def packetize(self, frame: EncodedFrame, max_payload_size: int = 1200) -> list[bytes]:
        check_max_payload_size(max_payload_size, _HEADER + _FU_HEADER + 1, CODEC)
        nals = split_annexb(frame.data)
        if not nals:
            raise ValueError("H265: the frame has no NAL unit")
        for nal in nals:
            if len(nal) < _HEADER + 1 or nal[0] & 0x80:
                raise ValueError("H265: malformed NAL unit in the frame")
        return plan_nal_payloads(
            nals,
            max_payload_size,
            aggregation_header_size=_HEADER,
            aggregate=self._ap,
            fragment=self._fu,
        )

    @staticmethod
    def _ap(nals: Sequence[bytes]) -> bytes:
        # F: OR of the units; LayerId and TID: the lowest of the units (RFC 7798 §4.4.2).
        fields = [_header_fields(n) for n in nals]
        header = _make_header(
            max(f[0] for f in fields),
            NAL_AP,
            min(f[1] for f in fields),
            min(f[2] for f in fields),
        )
        out = bytearray(header)
        for nal in nals:
            out += struct.pack("!H", len(nal)) + nal
        return bytes(out)

    @staticmethod
    def _fu(nal: bytes, max_payload_size: int) -> list[bytes]:
        forbidden, layer_id, tid = _header_fields(nal)
        header = _make_header(forbidden, NAL_FU, layer_id, tid)
        kind = nal_type(nal)
        body = nal[_HEADER:]
        sizes = split_evenly(len(body), max_payload_size - _HEADER - _FU_HEADER)
        out: list[bytes] = []
        pos = 0
        for index, size in enumerate(sizes):
            fu_header = kind
            if index == 0:
                fu_header |= 0x80
            if index == len(sizes) - 1:
                fu_header |= 0x40
            out.append(header + bytes([fu_header]) + body[pos : pos + size])
            pos += size
        return out


class H265Depacketizer(Depacketizer):
    """RFC 7798 depayloader producing an Annex-B access unit.

    ``with_don=True`` when the session has ``sprop-max-don-diff`` > 0 (DONL and
    DOND fields present); decoding order is then assumed to be transmission
    order, which holds for non-interleaved WebRTC senders.
    """

    codec = CODEC

    def __init__(self, with_don: bool = False) -> None:
        self.with_don = with_don

    def depacketize(self, payloads: Sequence[bytes], timestamp: int = 0) -> EncodedFrame:
        require_payloads(payloads, CODEC)
        nals: list[bytes] = []
        fragment: bytearray | None = None
        for payload in payloads:
            payload = bytes(payload)
            if len(payload) < _HEADER + 1:
                raise MalformedPayloadError("H265: payload shorter than 3 bytes")
            if payload[0] & 0x80:
                raise MalformedPayloadError("H265: forbidden_zero_bit set")
            kind = nal_type(payload)
            if kind == NAL_FU:
                fragment = self._add_fu(payload, fragment, nals)
                continue
            if fragment is not None:
                raise IncompleteFrameError("H265: FU interrupted before its end")
            if kind == NAL_AP:
                nals.extend(self._split_ap(payload))
            elif kind == NAL_PACI:
                continue  # RFC 7798 §4.4.4 PACI: optional, ignored.
            elif kind < NAL_AP:
                if self.with_don:
                    payload = payload[:_HEADER] + payload[_HEADER + 2 :]
                nals.append(payload)
            else:
                raise MalformedPayloadError(f"H265: unsupported payload type {kind}")
        if fragment is not None:
            raise IncompleteFrameError("H265: the frame ends inside an FU")
        if not nals:
            raise MalformedPayloadError("H265: no NAL unit in the frame")
        return EncodedFrame(
            data=join_annexb(nals),
            timestamp=timestamp,
            codec=CODEC,
            is_keyframe=any(is_irap(nal_type(n)) for n in nals),
            temporal_index=max(max(_header_fields(n)[2] - 1, 0) for n in nals),
            codec_specific={"has_parameter_sets": any(nal_type(n) == NAL_SPS for n in nals)},
        )

    def _add_fu(
        self, payload: bytes, fragment: bytearray | None, nals: list[bytes]
    ) -> bytearray | None:
        if len(payload) < _HEADER + _FU_HEADER + 1:
            raise MalformedPayloadError("H265: FU shorter than 4 bytes")
        fu_header = payload[_HEADER]
        start, end = bool(fu_header & 0x80), bool(fu_header & 0x40)
        if start and end:
            raise MalformedPayloadError("H265: FU with both S and E set")
        body = memoryview(payload)[_HEADER + _FU_HEADER :]  # appended without a sliced copy
        if start:
            if fragment is not None:
                raise IncompleteFrameError("H265: FU restarted before its end")
            if self.with_don:
                body = body[2:]
            forbidden, layer_id, tid = _header_fields(payload)
            fragment = bytearray(_make_header(forbidden, fu_header & 0x3F, layer_id, tid))
        elif fragment is None:
            raise IncompleteFrameError("H265: FU fragment without its start")
        fragment += body
        if end:
            nals.append(bytes(fragment))
            return None
        return fragment

    def _split_ap(self, payload: bytes) -> list[bytes]:
        units: list[bytes] = []
        pos = _HEADER
        while pos < len(payload):
            if self.with_don:
                pos += 2 if not units else 1  # DONL first, DOND after
            if pos + _LENGTH_FIELD > len(payload):
                raise MalformedPayloadError("H265: AP length field truncated")
            size = struct.unpack_from("!H", payload, pos)[0]
            pos += _LENGTH_FIELD
            if size < _HEADER or pos + size > len(payload):
                raise MalformedPayloadError("H265: AP unit too short or truncated")
            units.append(payload[pos : pos + size])
            pos += size
        if not units:
            raise MalformedPayloadError("H265: empty AP")
        return units

    def _first_nal(self, payload: bytes) -> tuple[int, bytes, list[int]] | None:
        if len(payload) < _HEADER + 1 or payload[0] & 0x80:
            return None
        kind = nal_type(payload)
        if kind < NAL_AP:
            body = payload[_HEADER + (2 if self.with_don else 0) :]
            return kind, body, [kind]
        if kind == NAL_AP:
            try:
                units = self._split_ap(payload)
            except MalformedPayloadError:
                return None
            return nal_type(units[0]), units[0][_HEADER:], [nal_type(u) for u in units]
        if kind == NAL_FU and len(payload) > _HEADER + _FU_HEADER and payload[_HEADER] & 0x80:
            inner = payload[_HEADER] & 0x3F
            body = payload[_HEADER + _FU_HEADER + (2 if self.with_don else 0) :]
            return inner, body, [inner]
        return None

    def is_frame_start(self, payload: bytes) -> bool:
        first = self._first_nal(payload)
        return first is not None and _starts_access_unit(first[0], first[1])

    def is_keyframe_start(self, payload: bytes) -> bool:
        first = self._first_nal(payload)
        if first is None or not _starts_access_unit(first[0], first[1]):
            return False
        return any(is_irap(k) or k == NAL_VPS for k in first[2])


def _int_param(fmtp: Mapping[str, str], name: str, default: int) -> int | None:
    try:
        return int(str(fmtp.get(name, default)).strip())
    except ValueError:
        return None


def fmtp_compatible(local: Mapping[str, str], remote: Mapping[str, str]) -> bool:
    """Same ``profile-id`` (default 1, Main) and ``tier-flag`` (default 0); any ``level-id``."""
    for name, default in (("profile-id", 1), ("tier-flag", 0)):
        ours, theirs = _int_param(local, name, default), _int_param(remote, name, default)
        if ours is None or theirs is None or ours != theirs:
            return False
    return True


def configure_libx265(
    ctx: VideoCodecContext, settings: EncoderSettings, bitrate: int
) -> EncoderSetup:
    """x265 for real time (``aiortc-notes.md`` A.1, measured).

    Without ``tune=zerolatency`` libx265 buffers 11 frames; with it there is
    no delay. ``forced-idr=1`` makes a forced ``pict_type=I`` an IDR (otherwise
    a CRA/I frame without the packet key flag, measured). ``repeat-headers``
    puts VPS/SPS/PPS before every key frame so a late joiner can start.
    A new ``bit_rate`` is not applied in place (measured).
    """
    main10 = _int_param(settings.fmtp, "profile-id", 1) == 2
    return EncoderSetup(
        options={
            "preset": "ultrafast",
            "tune": "zerolatency",
            "forced-idr": "1",
            "maxrate": str(bitrate),
            "bufsize": str(bitrate),
            "x265-params": "log-level=error:repeat-headers=1:aud=0",
        },
        bitrate_update=BitrateUpdate.RECREATE,
        pix_fmt="yuv420p10le" if main10 else "yuv420p",
    )


register_configurator("libx265", configure_libx265)
