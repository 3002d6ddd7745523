"""Offer SDP as the dev server writes it.

The server is always the offerer (as Sora is), so it only writes offers and
reads answers; answers are parsed with aiortc's SDP parser, which is solid.
Payload types and extension ids are fixed server-wide so that forwarding
needs no per-peer mapping tables; values follow what libwebrtc offers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aiortc.rtcdtlstransport import RTCDtlsFingerprint
from aiortc.rtcicetransport import RTCIceCandidate, RTCIceParameters
from aiortc.sdp import candidate_to_sdp


@dataclass(frozen=True)
class CodecSpec:
    """One codec as the server offers it."""

    name: str  # Sora codec_type: OPUS, VP8, VP9, AV1, H264, H265
    encoding_name: str  # rtpmap name
    clock_rate: int
    payload_type: int
    rtx_payload_type: int | None = None
    channels: int | None = None
    fmtp: str = ""


# No transport-cc: the server sends REMB + receiver reports instead of TWCC
# feedback, and libwebrtc ignores REMB once transport-cc is negotiated.
AUDIO_FEEDBACK: tuple[str, ...] = ()
VIDEO_FEEDBACK = ("goog-remb", "ccm fir", "nack", "nack pli")

CODECS: dict[str, CodecSpec] = {
    "OPUS": CodecSpec("OPUS", "opus", 48000, 111, channels=2, fmtp="minptime=10;useinbandfec=1"),
    "VP8": CodecSpec("VP8", "VP8", 90000, 96, 97),
    "VP9": CodecSpec("VP9", "VP9", 90000, 98, 99, fmtp="profile-id=0"),
    "AV1": CodecSpec("AV1", "AV1", 90000, 45, 46, fmtp="level-idx=5;profile=0;tier=0"),
    "H264": CodecSpec(
        "H264",
        "H264",
        90000,
        102,
        103,
        fmtp="level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    ),
    "H265": CodecSpec(
        "H265", "H265", 90000, 104, 105, fmtp="level-id=93;profile-id=1;tier-flag=0;tx-mode=SRST"
    ),
}

#: payload type -> codec, over every codec the server knows (RTX included)
CODEC_BY_PAYLOAD_TYPE: dict[int, CodecSpec] = {c.payload_type: c for c in CODECS.values()}
RTX_PAYLOAD_TYPES: dict[int, CodecSpec] = {
    c.rtx_payload_type: c for c in CODECS.values() if c.rtx_payload_type is not None
}

# Header extension ids, fixed for the whole BUNDLE (RFC 8285 requires one id per URI).
EXT_MID = 1
EXT_RID = 2
EXT_RRID = 3
EXT_AUDIO_LEVEL = 4
EXT_TRANSPORT_CC = 5
TRANSPORT_CC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
UPSTREAM_AUDIO_EXTENSIONS = (
    (EXT_MID, "urn:ietf:params:rtp-hdrext:sdes:mid"),
    (EXT_AUDIO_LEVEL, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
)
UPSTREAM_VIDEO_EXTENSIONS = (
    (EXT_MID, "urn:ietf:params:rtp-hdrext:sdes:mid"),
    (EXT_RID, "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
    (EXT_RRID, "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"),
)


def opus_fmtp(params: dict[str, object] | None) -> str:
    """Opus fmtp from the connect message's ``opus_params`` (RFC 7587 names).

    Sora reflects these in the offer (e.g. ``usedtx=1`` appears only when asked).
    """
    values: dict[str, object] = {"minptime": 10, "useinbandfec": 1}
    for key, value in (params or {}).items():
        if key == "sprop_stereo":
            key = "sprop-stereo"
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int | str):
            values[key] = value
    return ";".join(f"{k}={v}" for k, v in values.items())


@dataclass
class MediaSection:
    """One m-line of a server offer."""

    kind: str  # "audio" | "video" | "application"
    mid: str
    direction: str = "recvonly"  # from the server's point of view
    codec: CodecSpec | None = None
    rejected: bool = False  # port 0: a retired stream
    placeholder: bool = False  # inactive slot that only carries the transport
    # send sections (server -> client)
    ssrc: int | None = None
    stream_id: str | None = None
    track_id: str | None = None
    cname: str = ""
    # recv sections with simulcast (client -> server)
    rids: Sequence[tuple[str, bool]] = ()  # (rid, active)
    #: offer transport-cc feedback (client -> server sections of a ``transport_cc`` server)
    transport_cc: bool = False
    extensions: Sequence[tuple[int, str]] = field(default_factory=tuple)
    fmtp: str | None = None  # overrides codec.fmtp


@dataclass
class TransportDescription:
    """What every m-line of the BUNDLE shares."""

    ice: RTCIceParameters
    fingerprints: list[RTCDtlsFingerprint]
    candidates: list[RTCIceCandidate]
    sctp_port: int = 5000
    max_message_size: int = 262144


def write_offer(
    sections: Sequence[MediaSection],
    transport: TransportDescription,
    *,
    session_id: int,
    version: int,
) -> str:
    """Serialize a full offer."""
    bundled = [s.mid for s in sections if not s.rejected]
    lines = [
        "v=0",
        f"o=- {session_id} {version} IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
    ]
    if bundled:
        lines.append("a=group:BUNDLE " + " ".join(bundled))
    lines += ["a=extmap-allow-mixed", "a=msid-semantic: WMS *"]
    for section in sections:
        lines += _media_lines(section, transport)
    return "\r\n".join(lines) + "\r\n"


def _media_lines(section: MediaSection, transport: TransportDescription) -> list[str]:
    port = 0 if section.rejected else 9
    if section.kind == "application":
        lines = [f"m=application {port} UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 0.0.0.0"]
        if not section.rejected:
            lines += _transport_lines(transport)
        lines += [
            f"a=mid:{section.mid}",
            f"a=sctp-port:{transport.sctp_port}",
            f"a=max-message-size:{transport.max_message_size}",
        ]
        return lines

    codec = section.codec
    assert codec is not None
    pts = [codec.payload_type]
    if codec.rtx_payload_type is not None:
        pts.append(codec.rtx_payload_type)
    lines = [
        f"m={section.kind} {port} UDP/TLS/RTP/SAVPF {' '.join(map(str, pts))}",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
    ]
    if not section.rejected:
        lines += _transport_lines(transport)
    lines.append(f"a=mid:{section.mid}")
    for ext_id, uri in section.extensions:
        lines.append(f"a=extmap:{ext_id} {uri}")
    lines.append("a=inactive" if section.rejected else f"a={section.direction}")
    if section.direction == "sendonly" and section.stream_id and not section.rejected:
        lines.append(f"a=msid:{section.stream_id} {section.track_id}")
    lines += ["a=rtcp-mux", "a=rtcp-rsize"]
    rtpmap = f"a=rtpmap:{codec.payload_type} {codec.encoding_name}/{codec.clock_rate}"
    if codec.channels:
        rtpmap += f"/{codec.channels}"
    lines.append(rtpmap)
    feedback = AUDIO_FEEDBACK if section.kind == "audio" else VIDEO_FEEDBACK
    if section.transport_cc:
        feedback = (*feedback, "transport-cc")
    lines += [f"a=rtcp-fb:{codec.payload_type} {fb}" for fb in feedback]
    fmtp = section.fmtp if section.fmtp is not None else codec.fmtp
    if fmtp:
        lines.append(f"a=fmtp:{codec.payload_type} {fmtp}")
    if codec.rtx_payload_type is not None:
        lines.append(f"a=rtpmap:{codec.rtx_payload_type} rtx/{codec.clock_rate}")
        lines.append(f"a=fmtp:{codec.rtx_payload_type} apt={codec.payload_type}")
    if section.rids and not section.rejected:
        lines += [f"a=rid:{rid} recv" for rid, _ in section.rids]
        layers = ";".join(rid if active else f"~{rid}" for rid, active in section.rids)
        lines.append(f"a=simulcast:recv {layers}")
    # SSRCs only where the server sends: a=ssrc in a server-recvonly m-line can
    # abort libwebrtc (official-client-notes.md "The SDP").
    if section.direction == "sendonly" and section.ssrc is not None and not section.rejected:
        lines.append(f"a=ssrc:{section.ssrc} cname:{section.cname}")
        lines.append(f"a=ssrc:{section.ssrc} msid:{section.stream_id} {section.track_id}")
    return lines


def _transport_lines(transport: TransportDescription) -> list[str]:
    lines = [
        f"a=ice-ufrag:{transport.ice.usernameFragment}",
        f"a=ice-pwd:{transport.ice.password}",
    ]
    lines += [f"a=fingerprint:{fp.algorithm} {fp.value}" for fp in transport.fingerprints]
    lines.append("a=setup:actpass")
    lines += [f"a=candidate:{candidate_to_sdp(c)}" for c in transport.candidates]
    lines.append("a=end-of-candidates")
    return lines
