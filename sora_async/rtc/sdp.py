"""Sora's offer SDP as a typed model, the negotiation of each m-section, and our answer.

Sora always offers and the client always answers (``sora-protocol.md`` §3.1,
§3.3, §5.4, §5.6). This module is pure (text in, objects out, text out):

- :func:`parse_offer` reads everything the engine needs, including what
  aiortc's parser drops (``aiortc-notes.md`` A.2, A.8): port 0, ``a=rid``,
  ``a=simulcast``, ``a=extmap`` (with direction), ``a=msid``, ``a=ssrc`` and
  ``a=ssrc-group``, ``b=AS``/``TIAS``, ``a=ptime``, SCTP attributes.
- :func:`negotiate` decides one m-section: rejected on its own (port 0) when
  it is retired or no codec is usable, else the direction, codecs in offer
  order (+ RTX), feedback, header extensions and simulcast layers we answer.
- :func:`write_answer` writes the answer: mids and order mirrored, one BUNDLE
  group of the accepted mids, our ICE/DTLS attributes and candidates in every
  accepted section, ``a=ssrc``/``a=msid`` for what we send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger("sora_async.rtc")

# RTP header extensions (RFC 8285 URIs) the engine reads and writes.
EXT_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
EXT_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
EXT_RRID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
EXT_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
EXT_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
EXT_TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"

#: Extensions answered per kind. transport-cc (send-side estimation,
#: :mod:`.congestion`) where offered; REMB otherwise.
SUPPORTED_EXTENSIONS: dict[str, frozenset[str]] = {
    "audio": frozenset({EXT_MID, EXT_AUDIO_LEVEL, EXT_TRANSPORT_CC}),
    "video": frozenset({EXT_MID, EXT_RID, EXT_RRID, EXT_ABS_SEND_TIME, EXT_TRANSPORT_CC}),
}
#: ``a=rtcp-fb`` values answered: NACK (+RTX), PLI, FIR, REMB, transport-cc.
SUPPORTED_FEEDBACK = frozenset({"nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"})
#: Formats that are not media codecs (repair and redundancy schemes).
_NON_MEDIA = frozenset({"rtx", "red", "ulpfec", "flexfec-03", "telephone-event", "cn"})

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class SdpError(ValueError):
    """The offer cannot be understood at all (not a single m-section, bad m-line...)."""


@dataclass
class OfferedCodec:
    """One payload type of an m-section: ``a=rtpmap`` + ``a=fmtp`` + ``a=rtcp-fb``."""

    payload_type: int
    name: str  # encoding name as written ("VP9", "opus", "rtx")
    clock_rate: int
    channels: int | None = None
    fmtp: dict[str, str] = field(default_factory=dict)
    fmtp_line: str | None = None
    feedback: list[str] = field(default_factory=list)

    @property
    def rtpmap(self) -> str:
        return f"{self.name}/{self.clock_rate}" + (f"/{self.channels}" if self.channels else "")


@dataclass(frozen=True)
class Extmap:
    """``a=extmap:<id>[/<direction>] <uri>``."""

    id: int
    uri: str
    direction: str | None = None


@dataclass(frozen=True)
class Rid:
    """``a=rid:<rid> <send|recv> [restrictions]`` (RFC 8851)."""

    rid: str
    direction: str
    restrictions: str = ""


@dataclass(frozen=True)
class SimulcastLayer:
    """One entry of ``a=simulcast`` (RFC 8853); ``paused`` for ``~rid``."""

    rid: str
    paused: bool = False


@dataclass
class MediaSection:
    """One m-section of an offer."""

    index: int
    kind: str  # "audio" | "video" | "application" | anything else Sora might add
    port: int
    proto: str
    formats: list[str]
    mid: str | None = None
    direction: str = "sendrecv"
    codecs: list[OfferedCodec] = field(default_factory=list)
    extmaps: list[Extmap] = field(default_factory=list)
    rids: list[Rid] = field(default_factory=list)
    #: ``a=simulcast`` layers by direction ("send"/"recv"), first alternative of each.
    simulcast: dict[str, list[SimulcastLayer]] = field(default_factory=dict)
    msid: tuple[str, str] | None = None
    ssrcs: dict[int, dict[str, str]] = field(default_factory=dict)
    ssrc_groups: list[tuple[str, list[int]]] = field(default_factory=list)
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str | None = None
    candidates: list[str] = field(default_factory=list)
    end_of_candidates: bool = False
    rtcp_mux: bool = False
    rtcp_rsize: bool = False
    sctp_port: int | None = None
    max_message_size: int | None = None
    ptime: int | None = None
    #: ``b=AS`` (kbps) and ``b=TIAS`` (bps), as written.
    bandwidth: dict[str, int] = field(default_factory=dict)

    @property
    def rejected(self) -> bool:
        """Port 0: a retired or refused section (RFC 3264 §8.2)."""
        return self.port == 0

    @property
    def stream_id(self) -> str | None:
        """The ``a=msid`` stream id: for Sora, the sending connection's id (§3.3)."""
        if self.msid is not None:
            return self.msid[0]
        for attributes in self.ssrcs.values():
            if "msid" in attributes:
                return attributes["msid"].split()[0]
        return None

    @property
    def track_id(self) -> str | None:
        """The ``a=msid`` track id, if given."""
        if self.msid is not None and self.msid[1]:
            return self.msid[1]
        for attributes in self.ssrcs.values():
            parts = attributes.get("msid", "").split()
            if len(parts) > 1:
                return parts[1]
        return None

    @property
    def media_ssrcs(self) -> list[int]:
        """SSRCs of the media streams (RTX/FEC SSRCs of ``a=ssrc-group`` excluded)."""
        repair = {
            group[1]
            for semantics, group in self.ssrc_groups
            if semantics in ("FID", "FEC-FR") and len(group) > 1
        }
        return [ssrc for ssrc in self.ssrcs if ssrc not in repair]

    @property
    def rtx_ssrcs(self) -> dict[int, int]:
        """media SSRC -> RTX SSRC, from ``a=ssrc-group:FID``."""
        return {
            group[0]: group[1]
            for semantics, group in self.ssrc_groups
            if semantics == "FID" and len(group) > 1
        }

    def extmap_id(self, uri: str) -> int | None:
        return next((e.id for e in self.extmaps if e.uri == uri), None)


@dataclass
class SessionOffer:
    """A parsed offer."""

    sections: list[MediaSection]
    bundle: list[str] = field(default_factory=list)
    ice_lite: bool = False
    extmap_allow_mixed: bool = False

    def section(self, mid: str) -> MediaSection | None:
        return next((s for s in self.sections if s.mid == mid), None)

    def transport_section(self) -> MediaSection | None:
        """The section carrying the BUNDLE transport: the first accepted one of the group."""
        live = [s for s in self.sections if not s.rejected and s.ice_ufrag]
        for mid in self.bundle:
            for section in live:
                if section.mid == mid:
                    return section
        return live[0] if live else None


def parse_offer(text: str) -> SessionOffer:
    """Parse an offer (Sora's, or any JSEP offer); raises :class:`SdpError` if unusable.

    Session-level ICE/DTLS attributes apply to every section that does not
    repeat them. Unknown lines are ignored.
    """
    session_attrs: dict[str, str] = {}
    session_fingerprints: list[tuple[str, str]] = []
    offer = SessionOffer(sections=[])
    current: MediaSection | None = None
    codecs: dict[int, OfferedCodec] = {}
    fmtps: dict[int, str] = {}
    feedback: dict[str, list[str]] = {}

    def finish(section: MediaSection | None) -> None:
        if section is None:
            return
        for pt, line in fmtps.items():
            if pt in codecs:
                codecs[pt].fmtp_line = line
                codecs[pt].fmtp = parse_fmtp(line)
        for pt_text, values in feedback.items():
            for codec in codecs.values():
                if pt_text == "*" or pt_text == str(codec.payload_type):
                    codec.feedback += [v for v in values if v not in codec.feedback]
        ordered: list[OfferedCodec] = []
        for fmt in section.formats:
            if fmt.isdigit() and int(fmt) in codecs:
                ordered.append(codecs[int(fmt)])
        section.codecs = ordered

    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            finish(current)
            codecs, fmtps, feedback = {}, {}, {}
            fields = value.split()
            if len(fields) < 3:
                raise SdpError(f"bad m-line {line!r}")
            try:
                port = int(fields[1].split("/")[0])
            except ValueError as exc:
                raise SdpError(f"bad port in {line!r}") from exc
            current = MediaSection(
                index=len(offer.sections),
                kind=fields[0],
                port=port,
                proto=fields[2],
                formats=fields[3:],
            )
            offer.sections.append(current)
            continue
        if kind == "b" and current is not None:
            name, _, amount = value.partition(":")
            if amount.strip().isdigit():
                current.bandwidth[name.strip().upper()] = int(amount)
            continue
        if kind != "a":
            continue
        name, _, attr = value.partition(":")
        if current is None:
            if name == "group" and attr.startswith("BUNDLE"):
                offer.bundle = attr.split()[1:]
            elif name == "ice-lite":
                offer.ice_lite = True
            elif name == "extmap-allow-mixed":
                offer.extmap_allow_mixed = True
            elif name == "fingerprint":
                fingerprint = _fingerprint(attr)
                if fingerprint:
                    session_fingerprints.append(fingerprint)
            elif name in ("ice-ufrag", "ice-pwd", "setup"):
                session_attrs[name] = attr.strip()
            continue
        _section_attribute(current, name, attr, codecs, fmtps, feedback)
    finish(current)
    if not offer.sections:
        raise SdpError("offer has no m-section")
    for section in offer.sections:
        section.ice_ufrag = section.ice_ufrag or session_attrs.get("ice-ufrag")
        section.ice_pwd = section.ice_pwd or session_attrs.get("ice-pwd")
        section.setup = section.setup or session_attrs.get("setup")
        if not section.fingerprints:
            section.fingerprints = list(session_fingerprints)
    return offer


def _fingerprint(attr: str) -> tuple[str, str] | None:
    parts = attr.split()
    return (parts[0].lower(), parts[1]) if len(parts) == 2 else None


def _section_attribute(
    section: MediaSection,
    name: str,
    attr: str,
    codecs: dict[int, OfferedCodec],
    fmtps: dict[int, str],
    feedback: dict[str, list[str]],
) -> None:
    if name == "mid":
        section.mid = attr.strip()
    elif name in DIRECTIONS and not attr:
        section.direction = name
    elif name == "rtpmap":
        pt_text, _, encoding = attr.partition(" ")
        parts = encoding.strip().split("/")
        if pt_text.isdigit() and len(parts) >= 2 and parts[1].isdigit():
            channels = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
            codecs[int(pt_text)] = OfferedCodec(int(pt_text), parts[0], int(parts[1]), channels)
    elif name == "fmtp":
        pt_text, _, params = attr.partition(" ")
        if pt_text.isdigit():
            fmtps[int(pt_text)] = params.strip()
    elif name == "rtcp-fb":
        pt_text, _, value = attr.partition(" ")
        feedback.setdefault(pt_text, []).append(" ".join(value.split()))
    elif name == "extmap":
        head, _, rest = attr.partition(" ")
        ext_id, _, direction = head.partition("/")
        uri = rest.split()[0] if rest.split() else ""
        if ext_id.isdigit() and uri:
            section.extmaps.append(Extmap(int(ext_id), uri, direction or None))
    elif name == "rid":
        parts = attr.split(None, 2)
        if len(parts) >= 2:
            section.rids.append(Rid(parts[0], parts[1], parts[2] if len(parts) > 2 else ""))
    elif name == "simulcast":
        tokens = attr.split()
        for direction, layers in zip(tokens[::2], tokens[1::2], strict=False):
            parsed = []
            for alternatives in layers.split(";"):
                first = alternatives.split(",")[0].strip()
                if first:
                    paused = first.startswith("~")
                    parsed.append(SimulcastLayer(first.lstrip("~"), paused))
            section.simulcast[direction] = parsed
    elif name == "msid":
        parts = attr.split()
        if parts:
            section.msid = (parts[0], parts[1] if len(parts) > 1 else "")
    elif name == "ssrc":
        ssrc_text, _, rest = attr.partition(" ")
        if ssrc_text.isdigit():
            key, _, val = rest.partition(":")
            section.ssrcs.setdefault(int(ssrc_text), {})[key.strip()] = val.strip()
    elif name == "ssrc-group":
        parts = attr.split()
        if parts and all(p.isdigit() for p in parts[1:]):
            section.ssrc_groups.append((parts[0], [int(p) for p in parts[1:]]))
    elif name == "ice-ufrag":
        section.ice_ufrag = attr.strip()
    elif name == "ice-pwd":
        section.ice_pwd = attr.strip()
    elif name == "fingerprint":
        fingerprint = _fingerprint(attr)
        if fingerprint:
            section.fingerprints.append(fingerprint)
    elif name == "setup":
        section.setup = attr.strip()
    elif name == "candidate":
        section.candidates.append(attr.strip())
    elif name == "end-of-candidates":
        section.end_of_candidates = True
    elif name == "rtcp-mux":
        section.rtcp_mux = True
    elif name == "rtcp-rsize":
        section.rtcp_rsize = True
    elif name == "sctp-port" and attr.strip().isdigit():
        section.sctp_port = int(attr)
    elif name == "sctpmap":
        port = attr.split()[0] if attr.split() else ""
        if port.isdigit():
            section.sctp_port = int(port)
    elif name == "max-message-size" and attr.strip().isdigit():
        section.max_message_size = int(attr)
    elif name == "ptime" and attr.strip().isdigit():
        section.ptime = int(attr)


def parse_fmtp(value: str | None) -> dict[str, str]:
    """``"a=1;b=2"`` → ``{"a": "1", "b": "2"}`` (keys lower-cased)."""
    params: dict[str, str] = {}
    for item in (value or "").split(";"):
        key, _, val = item.strip().partition("=")
        if key.strip():
            params[key.strip().lower()] = val.strip()
    return params


# --- negotiation --------------------------------------------------------------


@dataclass
class NegotiatedCodec:
    """A codec we answered for an m-section (its payload type is the offer's)."""

    payload_type: int
    #: Sora codec name ("VP8", "VP9", "AV1", "H264", "H265", "OPUS").
    name: str
    kind: str
    rtpmap: str
    clock_rate: int
    channels: int | None
    fmtp: dict[str, str]
    fmtp_line: str | None
    feedback: list[str]
    rtx_payload_type: int | None = None

    @property
    def mime_type(self) -> str:
        return f"{self.kind}/{self.rtpmap.split('/')[0]}"

    @property
    def nack(self) -> bool:
        return "nack" in self.feedback


@dataclass
class SendStream:
    """What we send on one layer, for ``a=ssrc``/``a=ssrc-group``."""

    ssrc: int
    rtx_ssrc: int | None = None


@dataclass
class NegotiatedSection:
    """How we answer one m-section."""

    offer: MediaSection
    accepted: bool
    direction: str = "inactive"
    codecs: list[NegotiatedCodec] = field(default_factory=list)
    extensions: list[Extmap] = field(default_factory=list)
    #: Simulcast layers we send (mirrors the offer's ``a=simulcast:recv``).
    simulcast: list[SimulcastLayer] = field(default_factory=list)
    reason: str = ""
    # Filled by the engine for send sections:
    send_streams: list[SendStream] = field(default_factory=list)
    cname: str = ""
    msid: tuple[str, str] | None = None

    @property
    def mid(self) -> str | None:
        return self.offer.mid

    @property
    def kind(self) -> str:
        return self.offer.kind

    @property
    def sends(self) -> bool:
        return self.accepted and self.direction in ("sendonly", "sendrecv")

    @property
    def receives(self) -> bool:
        return self.accepted and self.direction in ("recvonly", "sendrecv")

    def extension_id(self, uri: str) -> int | None:
        return next((e.id for e in self.extensions if e.uri == uri), None)


#: ``usable(codec, offered_fmtp, role)`` where role is "send", "recv" or "any";
#: returns the Sora codec name, or None when the codec cannot be used that way.
CodecCheck = Callable[[OfferedCodec, str, str], "str | None"]


def negotiate(
    section: MediaSection,
    *,
    can_send: bool,
    can_receive: bool,
    codec_check: CodecCheck,
) -> NegotiatedSection:
    """Decide how to answer one audio/video/application m-section.

    ``can_send``: we have something to send on this mid; ``can_receive``: our
    role receives. ``codec_check`` says which offered codecs we can encode
    (role "send") and/or decode ("recv"). Without a usable codec only this
    section is rejected.
    """
    if section.rejected:
        return NegotiatedSection(section, accepted=False, reason="retired (port 0)")
    if section.kind == "application":
        accepted = "SCTP" in section.proto.upper()
        return NegotiatedSection(
            section, accepted=accepted, reason="" if accepted else f"unsupported {section.proto}"
        )
    if section.kind not in ("audio", "video"):
        return NegotiatedSection(section, accepted=False, reason=f"unsupported kind {section.kind}")
    remote_sends = section.direction in ("sendonly", "sendrecv")
    remote_receives = section.direction in ("recvonly", "sendrecv")
    we_send = can_send and remote_receives
    we_receive = can_receive and remote_sends
    roles = [r for r, on in (("send", we_send), ("recv", we_receive)) if on] or ["any"]

    chosen: list[NegotiatedCodec] = []
    for offered in section.codecs:
        if offered.name.lower() in _NON_MEDIA:
            continue
        names = {codec_check(offered, section.kind, role) for role in roles}
        if len(names) != 1 or None in names:
            continue
        name = names.pop()
        assert name is not None
        rtx = next(
            (
                c.payload_type
                for c in section.codecs
                if c.name.lower() == "rtx" and c.fmtp.get("apt") == str(offered.payload_type)
            ),
            None,
        )
        chosen.append(
            NegotiatedCodec(
                payload_type=offered.payload_type,
                name=name,
                kind=section.kind,
                rtpmap=offered.rtpmap,
                clock_rate=offered.clock_rate,
                channels=offered.channels,
                fmtp=dict(offered.fmtp),
                fmtp_line=offered.fmtp_line,
                feedback=[f for f in offered.feedback if f in SUPPORTED_FEEDBACK],
                rtx_payload_type=rtx,
            )
        )
    if not chosen:
        offered_names = ", ".join(
            c.name for c in section.codecs if c.name.lower() not in _NON_MEDIA
        )
        return NegotiatedSection(
            section,
            accepted=False,
            reason=f"no usable codec among [{offered_names}] to {'/'.join(roles)}",
        )
    direction = (
        "sendrecv"
        if we_send and we_receive
        else "sendonly"
        if we_send
        else "recvonly"
        if we_receive
        else "inactive"
    )
    supported = SUPPORTED_EXTENSIONS.get(section.kind, frozenset())
    extensions = [Extmap(e.id, e.uri) for e in section.extmaps if e.uri in supported]
    negotiated = NegotiatedSection(
        section, accepted=True, direction=direction, codecs=chosen, extensions=extensions
    )
    offered_layers = section.simulcast.get("recv", [])
    ext_uris = {e.uri for e in extensions}
    if we_send and section.kind == "video" and offered_layers:
        if EXT_RID in ext_uris:
            negotiated.simulcast = list(offered_layers)
        else:
            # RFC 8852: without the RID extension the layers cannot be told apart.
            logger.warning("mid %s: simulcast offered without the RID extension", section.mid)
    return negotiated


# --- answer ---------------------------------------------------------------------


@dataclass
class LocalTransport:
    """Our side of the BUNDLE transport as the answer describes it."""

    ice_ufrag: str
    ice_pwd: str
    fingerprints: Sequence[tuple[str, str]]
    setup: str = "active"
    #: ``candidate:`` attribute values without the ``candidate:`` prefix.
    candidates: Sequence[str] = ()
    sctp_port: int = 5000
    max_message_size: int = 262144


def answer_setup(offer_setup: str | None) -> tuple[str, str]:
    """Our ``a=setup`` for the offer's, and the DTLS role that implies (RFC 8842 §5.3).

    ``actpass``/absent → ``active`` (DTLS client, what browsers answer);
    ``active`` → ``passive`` (server); ``passive`` → ``active`` (client).
    """
    if (offer_setup or "actpass").lower() == "active":
        return "passive", "server"
    return "active", "client"


def write_answer(
    offer: SessionOffer,
    sections: Sequence[NegotiatedSection],
    transport: LocalTransport,
    *,
    session_id: int,
    version: int,
) -> str:
    """The answer SDP, m-sections in the offer's order."""
    accepted = {s.mid for s in sections if s.accepted and s.mid is not None}
    bundle = [mid for mid in offer.bundle if mid in accepted] or [
        s.mid for s in sections if s.accepted and s.mid is not None
    ]
    lines = ["v=0", f"o=- {session_id} {version} IN IP4 127.0.0.1", "s=-", "t=0 0"]
    if bundle:
        lines.append("a=group:BUNDLE " + " ".join(bundle))
    if offer.extmap_allow_mixed:
        lines.append("a=extmap-allow-mixed")
    lines.append("a=msid-semantic: WMS *")
    for section in sections:
        lines += _answer_section(section, transport)
    return "\r\n".join(lines) + "\r\n"


def _transport_lines(transport: LocalTransport) -> list[str]:
    lines = [f"a=candidate:{c}" for c in transport.candidates]
    lines.append("a=end-of-candidates")
    lines += [f"a=ice-ufrag:{transport.ice_ufrag}", f"a=ice-pwd:{transport.ice_pwd}"]
    lines += [f"a=fingerprint:{algorithm} {value}" for algorithm, value in transport.fingerprints]
    lines.append(f"a=setup:{transport.setup}")
    return lines


def _answer_section(section: NegotiatedSection, transport: LocalTransport) -> list[str]:
    offer = section.offer
    mid_line = [f"a=mid:{offer.mid}"] if offer.mid is not None else []
    if not section.accepted:
        fmt = offer.formats[0] if offer.formats else "0"
        lines = [f"m={offer.kind} 0 {offer.proto} {fmt}", "c=IN IP4 0.0.0.0", *mid_line]
        if offer.kind in ("audio", "video"):
            lines.append("a=inactive")
            offered = next((c for c in offer.codecs if str(c.payload_type) == fmt), None)
            if offered is not None:
                lines.append(f"a=rtpmap:{offered.payload_type} {offered.rtpmap}")
        return lines
    if offer.kind == "application":
        lines = [f"m=application 9 {offer.proto} {' '.join(offer.formats)}", "c=IN IP4 0.0.0.0"]
        lines += _transport_lines(transport)
        lines += mid_line
        if offer.proto.upper() == "DTLS/SCTP":  # pre-RFC 8841 syntax: "DTLS/SCTP 5000"
            lines.append(f"a=sctpmap:{transport.sctp_port} webrtc-datachannel 1024")
        else:
            lines.append(f"a=sctp-port:{transport.sctp_port}")
        lines.append(f"a=max-message-size:{transport.max_message_size}")
        return lines
    pts: list[int] = []
    for codec in section.codecs:
        pts.append(codec.payload_type)
    for codec in section.codecs:
        if codec.rtx_payload_type is not None:
            pts.append(codec.rtx_payload_type)
    lines = [
        f"m={offer.kind} 9 {offer.proto} {' '.join(map(str, pts))}",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
    ]
    lines += _transport_lines(transport)
    lines += mid_line
    lines += [f"a=extmap:{e.id} {e.uri}" for e in section.extensions]
    lines.append(f"a={section.direction}")
    sending = section.sends and section.msid is not None
    if sending and not section.simulcast and section.msid is not None:
        lines.append(f"a=msid:{section.msid[0]} {section.msid[1]}")
    lines.append("a=rtcp-mux")
    if offer.rtcp_rsize:
        lines.append("a=rtcp-rsize")
    for codec in section.codecs:
        lines.append(f"a=rtpmap:{codec.payload_type} {codec.rtpmap}")
        lines += [f"a=rtcp-fb:{codec.payload_type} {fb}" for fb in codec.feedback]
        if codec.fmtp_line:
            lines.append(f"a=fmtp:{codec.payload_type} {codec.fmtp_line}")
    for codec in section.codecs:
        if codec.rtx_payload_type is not None:
            lines.append(f"a=rtpmap:{codec.rtx_payload_type} rtx/{codec.clock_rate}")
            lines.append(f"a=fmtp:{codec.rtx_payload_type} apt={codec.payload_type}")
    if section.sends and section.simulcast:
        lines += [f"a=rid:{layer.rid} send" for layer in section.simulcast]
        layers = ";".join(("~" if layer.paused else "") + layer.rid for layer in section.simulcast)
        lines.append(f"a=simulcast:send {layers}")
    elif section.sends and section.send_streams:
        for stream in section.send_streams:
            if stream.rtx_ssrc is not None:
                lines.append(f"a=ssrc-group:FID {stream.ssrc} {stream.rtx_ssrc}")
        for stream in section.send_streams:
            for ssrc in (stream.ssrc, stream.rtx_ssrc):
                if ssrc is None:
                    continue
                lines.append(f"a=ssrc:{ssrc} cname:{section.cname}")
                if section.msid is not None:
                    lines.append(f"a=ssrc:{ssrc} msid:{section.msid[0]} {section.msid[1]}")
    return lines
