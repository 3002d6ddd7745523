"""H.264 over RTP (RFC 6184, packetization-mode 1), profile-level-id, and the x264 setup.

Packet types in packetization-mode 1 (RFC 6184 §6.3): single NAL unit
(types 1-23), STAP-A (24) and FU-A (28). STAP-B, MTAP16/24 and FU-B are for
interleaved mode 2 and are rejected. FU-A (§5.8)::

    FU indicator: |F|NRI| 28 |    FU header: |S|E|R| NAL type |

The packetizer aggregates consecutive small NAL units (SPS, PPS, small
slices) into STAP-A and splits large ones into FU-A fragments of even size.
The depacketizer outputs Annex-B (4-byte start codes) for FFmpeg's decoder.

``profile-level-id`` (RFC 6184 §8.1) is classified into profiles the way
libwebrtc does (``h264_profile_level_id.cc``): Constrained Baseline, Baseline,
Main, High, Constrained High, Predictive High 4:4:4. Two H.264 formats are
compatible when profile and packetization-mode match; the level may differ
(``level-asymmetry-allowed``).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping, Sequence
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
    split_evenly,
)
from .bitstream import (
    BitReader,
    join_annexb,
    plan_nal_payloads,
    split_annexb,
    strip_emulation_prevention,
)
from .pyav import BitrateUpdate, EncoderSettings, EncoderSetup, register_configurator

CODEC = "H264"
MIME_TYPE = "video/H264"

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
NAL_STAP_A = 24
NAL_STAP_B = 25
NAL_MTAP16 = 26
NAL_MTAP24 = 27
NAL_FU_A = 28
NAL_FU_B = 29

#: NAL units that only appear at the start of an access unit (H.264 §7.4.1.2.3).
_AU_START_NALS = frozenset({NAL_SEI, NAL_SPS, NAL_PPS, NAL_AUD, 14, 15})
_STAP_A_HEADER = 1
_LENGTH_FIELD = 2
_FU_A_HEADER = 2


def nal_type(nal: bytes) -> int:
    """``nal_unit_type`` of a NAL unit (or RTP payload): the low 5 bits of byte 0."""
    return nal[0] & 0x1F


def _first_mb_in_slice_is_zero(slice_nal_body: bytes) -> bool:
    """True if a slice header (bytes after the NAL header) starts at macroblock 0."""
    try:
        return BitReader(strip_emulation_prevention(slice_nal_body[:8])).read_ue() == 0
    except MalformedPayloadError:
        return False


def _starts_access_unit(nal_kind: int, body: bytes) -> bool:
    if nal_kind in _AU_START_NALS:
        return True
    if nal_kind in (NAL_SLICE, NAL_IDR):
        return _first_mb_in_slice_is_zero(body)
    return False


class H264Packetizer(Packetizer):
    """RFC 6184 payloader for packetization-mode 1 (single NAL, STAP-A, FU-A)."""

    codec = CODEC

    def packetize(self, frame: EncodedFrame, max_payload_size: int = 1200) -> list[bytes]:
        check_max_payload_size(max_payload_size, _FU_A_HEADER + 1, CODEC)
        nals = [n for n in split_annexb(frame.data) if n]
        if not nals:
            raise ValueError("H264: the frame has no NAL unit")
        for nal in nals:
            if nal[0] & 0x80:
                raise ValueError("H264: NAL unit with forbidden_zero_bit set")
        return plan_nal_payloads(
            nals,
            max_payload_size,
            aggregation_header_size=_STAP_A_HEADER,
            aggregate=self._stap_a,
            fragment=self._fu_a,
        )

    @staticmethod
    def _stap_a(nals: Sequence[bytes]) -> bytes:
        # F is the OR and NRI the maximum of the aggregated units (RFC 6184 §5.7.1).
        forbidden = max(n[0] & 0x80 for n in nals)
        nri = max(n[0] & 0x60 for n in nals)
        out = bytearray([forbidden | nri | NAL_STAP_A])
        for nal in nals:
            out += struct.pack("!H", len(nal)) + nal
        return bytes(out)

    @staticmethod
    def _fu_a(nal: bytes, max_payload_size: int) -> list[bytes]:
        indicator = (nal[0] & 0xE0) | NAL_FU_A
        kind = nal[0] & 0x1F
        body = nal[1:]
        sizes = split_evenly(len(body), max_payload_size - _FU_A_HEADER)
        out: list[bytes] = []
        pos = 0
        for index, size in enumerate(sizes):
            fu_header = kind
            if index == 0:
                fu_header |= 0x80
            if index == len(sizes) - 1:
                fu_header |= 0x40
            out.append(bytes([indicator, fu_header]) + body[pos : pos + size])
            pos += size
        return out


class H264Depacketizer(Depacketizer):
    """RFC 6184 depayloader (mode 1) producing an Annex-B access unit."""

    codec = CODEC

    def depacketize(self, payloads: Sequence[bytes], timestamp: int = 0) -> EncodedFrame:
        require_payloads(payloads, CODEC)
        nals: list[bytes] = []
        fragment: bytearray | None = None
        for payload in payloads:
            payload = bytes(payload)
            if len(payload) < 1:
                raise MalformedPayloadError("H264: empty payload")
            if payload[0] & 0x80:
                raise MalformedPayloadError("H264: forbidden_zero_bit set")
            kind = nal_type(payload)
            if kind == NAL_FU_A:
                if len(payload) < 3:
                    raise MalformedPayloadError("H264: FU-A shorter than 3 bytes")
                start, end = bool(payload[1] & 0x80), bool(payload[1] & 0x40)
                if start and end:
                    raise MalformedPayloadError("H264: FU-A with both S and E set")
                if start:
                    if fragment is not None:
                        raise IncompleteFrameError("H264: FU-A restarted before its end")
                    fragment = bytearray([(payload[0] & 0xE0) | (payload[1] & 0x1F)])
                elif fragment is None:
                    raise IncompleteFrameError("H264: FU-A fragment without its start")
                fragment += memoryview(payload)[2:]  # appended without a sliced copy
                if end:
                    nals.append(bytes(fragment))
                    fragment = None
                continue
            if fragment is not None:
                raise IncompleteFrameError("H264: FU-A interrupted before its end")
            if 1 <= kind <= 23:
                nals.append(payload)
            elif kind == NAL_STAP_A:
                nals.extend(_split_stap_a(payload))
            elif kind in (NAL_STAP_B, NAL_MTAP16, NAL_MTAP24, NAL_FU_B):
                raise MalformedPayloadError(
                    f"H264: NAL type {kind} needs packetization-mode 2, not supported"
                )
            else:
                raise MalformedPayloadError(f"H264: reserved NAL type {kind}")
        if fragment is not None:
            raise IncompleteFrameError("H264: the frame ends inside an FU-A")
        return EncodedFrame(
            data=join_annexb(nals),
            timestamp=timestamp,
            codec=CODEC,
            is_keyframe=any(nal_type(n) == NAL_IDR for n in nals),
            codec_specific={"has_sps": any(nal_type(n) == NAL_SPS for n in nals)},
        )

    def _first_nal(self, payload: bytes) -> tuple[int, bytes, list[int]] | None:
        """(type of the first NAL, its body, types of all NALs in the packet) or None."""
        if len(payload) < 2 or payload[0] & 0x80:
            return None
        kind = nal_type(payload)
        if 1 <= kind <= 23:
            return kind, payload[1:], [kind]
        if kind == NAL_STAP_A:
            try:
                units = _split_stap_a(payload)
            except MalformedPayloadError:
                return None
            return nal_type(units[0]), units[0][1:], [nal_type(u) for u in units]
        if kind == NAL_FU_A and len(payload) >= 3 and payload[1] & 0x80:
            inner = payload[1] & 0x1F
            return inner, payload[2:], [inner]
        return None

    def is_frame_start(self, payload: bytes) -> bool:
        first = self._first_nal(payload)
        return first is not None and _starts_access_unit(first[0], first[1])

    def is_keyframe_start(self, payload: bytes) -> bool:
        first = self._first_nal(payload)
        if first is None or not _starts_access_unit(first[0], first[1]):
            return False
        return NAL_IDR in first[2] or NAL_SPS in first[2]


def _split_stap_a(payload: bytes) -> list[bytes]:
    units: list[bytes] = []
    pos = _STAP_A_HEADER
    while pos < len(payload):
        if pos + _LENGTH_FIELD > len(payload):
            raise MalformedPayloadError("H264: STAP-A length field truncated")
        size = struct.unpack_from("!H", payload, pos)[0]
        pos += _LENGTH_FIELD
        if size == 0 or pos + size > len(payload):
            raise MalformedPayloadError("H264: STAP-A unit is empty or truncated")
        units.append(payload[pos : pos + size])
        pos += size
    if not units:
        raise MalformedPayloadError("H264: empty STAP-A")
    return units


# --- profile-level-id (RFC 6184 §8.1) -------------------------------------------------


class H264Profile(enum.Enum):
    """H.264 profiles as libwebrtc classifies ``profile-level-id``."""

    CONSTRAINED_BASELINE = "constrained-baseline"
    BASELINE = "baseline"
    MAIN = "main"
    CONSTRAINED_HIGH = "constrained-high"
    HIGH = "high"
    PREDICTIVE_HIGH_444 = "predictive-high-444"


#: level_idc for "level 1b" (libwebrtc's kLevel1_b = 0).
LEVEL_1B = 0

# (profile_idc, profile_iop bit pattern, profile). 'x' = don't care; the order
# matters (Constrained Baseline before Baseline), as in libwebrtc.
_PROFILE_PATTERNS: tuple[tuple[int, str, H264Profile], ...] = (
    (0x42, "x1xx0000", H264Profile.CONSTRAINED_BASELINE),
    (0x4D, "1xxx0000", H264Profile.CONSTRAINED_BASELINE),
    (0x58, "11xx0000", H264Profile.CONSTRAINED_BASELINE),
    (0x42, "x0xx0000", H264Profile.BASELINE),
    (0x58, "10xx0000", H264Profile.BASELINE),
    (0x4D, "0x0x0000", H264Profile.MAIN),
    (0x64, "00000000", H264Profile.HIGH),
    (0x64, "00001100", H264Profile.CONSTRAINED_HIGH),
    (0xF4, "00000000", H264Profile.PREDICTIVE_HIGH_444),
)

_PROFILE_IDC = {
    H264Profile.CONSTRAINED_BASELINE: (0x42, 0xE0),
    H264Profile.BASELINE: (0x42, 0x00),
    H264Profile.MAIN: (0x4D, 0x00),
    H264Profile.CONSTRAINED_HIGH: (0x64, 0x0C),
    H264Profile.HIGH: (0x64, 0x00),
    H264Profile.PREDICTIVE_HIGH_444: (0xF4, 0x00),
}


def _matches(pattern: str, value: int) -> bool:
    for i, char in enumerate(pattern):
        bit = (value >> (7 - i)) & 1
        if char != "x" and int(char) != bit:
            return False
    return True


@dataclass(frozen=True)
class ProfileLevelId:
    """A parsed ``profile-level-id``: profile and ``level_idc`` (``LEVEL_1B`` for 1b).

    Example::

        >>> ProfileLevelId.parse("640c1f")
        ProfileLevelId(profile=<H264Profile.CONSTRAINED_HIGH: 'constrained-high'>, level=31)
        >>> str(ProfileLevelId(H264Profile.CONSTRAINED_BASELINE, 31))
        '42e01f'
    """

    profile: H264Profile
    level: int

    #: Used when the fmtp has no profile-level-id: libwebrtc's default
    #: (Constrained Baseline 3.1), not RFC 6184's Baseline 1.0, for interop.
    DEFAULT_STRING = "42e01f"

    @classmethod
    def parse(cls, value: str | None) -> ProfileLevelId | None:
        """Parse a 6-hex-digit string; None when malformed or an unknown profile."""
        if value is None:
            value = cls.DEFAULT_STRING
        value = value.strip()
        if len(value) != 6:
            return None
        try:
            number = int(value, 16)
        except ValueError:
            return None
        profile_idc, profile_iop, level_idc = number >> 16, (number >> 8) & 0xFF, number & 0xFF
        level = level_idc
        if level_idc == 9:
            level = LEVEL_1B
        elif level_idc == 11 and profile_iop & 0x10 and profile_idc in (0x42, 0x4D, 0x58):
            level = LEVEL_1B  # constraint_set3_flag: level 1b for Baseline/Main/Extended
        for idc, pattern, profile in _PROFILE_PATTERNS:
            if idc == profile_idc and _matches(pattern, profile_iop):
                return cls(profile, level)
        return None

    def __str__(self) -> str:
        idc, iop = _PROFILE_IDC[self.profile]
        level = self.level
        if level == LEVEL_1B:
            if self.profile in (H264Profile.CONSTRAINED_BASELINE, H264Profile.BASELINE):
                return f"{idc:02x}{iop | 0x10:02x}0b"
            return f"{idc:02x}{iop:02x}09"
        return f"{idc:02x}{iop:02x}{level:02x}"


def packetization_mode(fmtp: Mapping[str, str]) -> str:
    """``packetization-mode`` with the RFC 6184 default of 0."""
    return str(fmtp.get("packetization-mode", "0")).strip()


def fmtp_compatible(local: Mapping[str, str], remote: Mapping[str, str]) -> bool:
    """Same profile (libwebrtc classification) and packetization-mode; level may differ."""
    if packetization_mode(local) != packetization_mode(remote):
        return False
    ours = ProfileLevelId.parse(local.get("profile-level-id"))
    theirs = ProfileLevelId.parse(remote.get("profile-level-id"))
    return ours is not None and theirs is not None and ours.profile == theirs.profile


#: x264 profile per negotiated profile. x264 "baseline" is Constrained Baseline
#: (no FMO/ASO/redundant slices) so it also serves Baseline; Constrained High is
#: High without B-frames, which we never use anyway.
_X264_PROFILE = {
    H264Profile.CONSTRAINED_BASELINE: "baseline",
    H264Profile.BASELINE: "baseline",
    H264Profile.MAIN: "main",
    H264Profile.CONSTRAINED_HIGH: "high",
    H264Profile.HIGH: "high",
    H264Profile.PREDICTIVE_HIGH_444: "high",
}


def x264_profile(fmtp: Mapping[str, str]) -> str:
    """The x264 ``profile`` option for the negotiated ``profile-level-id``."""
    parsed = ProfileLevelId.parse(fmtp.get("profile-level-id")) or ProfileLevelId.parse(None)
    assert parsed is not None
    return _X264_PROFILE[parsed.profile]


def configure_libx264(
    ctx: VideoCodecContext, settings: EncoderSettings, bitrate: int
) -> EncoderSetup:
    """x264 for real time: ``tune=zerolatency`` (no look-ahead, no B-frames, no frame threads).

    - ``forced-idr=1``: FFmpeg builds x264 with open GOP, where a forced
      ``pict_type=I`` gives a non-IDR recovery-point frame; WebRTC receivers
      need an IDR to start.
    - VBV ``maxrate=bufsize=bit_rate`` (1 s): x264 re-targets the rate in place
      only with VBV on (``_ffmpeg_seam``), so :class:`BitrateUpdate.VBV`.
    - ``preset=veryfast``: ~5-6 ms/frame at 720p here (``aiortc-notes.md`` A.1).
    - The level is left to x264 (chosen from size and rate); receivers take
      any level with ``level-asymmetry-allowed=1``.
    """
    return EncoderSetup(
        options={
            "preset": "veryfast",
            "tune": "zerolatency",
            "profile": x264_profile(settings.fmtp),
            "forced-idr": "1",
            "maxrate": str(bitrate),
            "bufsize": str(bitrate),
        },
        bitrate_update=BitrateUpdate.VBV,
    )


register_configurator("libx264", configure_libx264)
