"""Where sora_async works around aiortc 1.16; the only module touching its internals.

aiortc (pinned ``>=1.16,<1.17`` in ``pyproject.toml`` because of this module)
falls short of what Sora's offers need in four places (``aiortc-notes.md`` A.8):

1. **No common codec.** ``setRemoteDescription`` raises ``OperationError`` and
   the whole negotiation fails when one audio/video m-section has no codec
   aiortc supports (VP9/AV1/H265 from a Sora channel). Browsers reject just
   that m-section. :func:`prepare_offer` hands aiortc a copy of the offer in
   which such sections carry a placeholder codec and are ``inactive``;
   :func:`finalize_answer` then answers them with port 0, as JSEP rejects.
2. **Retired m-sections.** Sora retires a stream by re-offering its m-section
   with port 0 (and may reuse the mid later); aiortc never looks at the port.
   The same rewrite makes those sections ``inactive`` and the answer rejects them.
3. **Reused mids.** aiortc binds a mid to one transceiver whose receiver is
   started once, with the first SSRC, and fires ``track`` once. When Sora
   puts a new stream on a mid it used before, :func:`recycle_receivers`
   swaps in a fresh ``RTCRtpReceiver`` (private attribute) before
   ``setRemoteDescription`` so that aiortc creates a new track, fires
   ``track`` and registers the new SSRC; the old track ends.
4. **Stats.** Transport and candidate-pair figures live on private members
   (``RTCDtlsTransport._get_stats``, aioice's nominated pair).

SDP rewriting is done on the text, one m-section at a time, so that
everything aiortc does not parse is kept as Sora sent it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpTransceiver, sdp
from aiortc.codecs import CODECS
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcpeerconnection import find_common_codecs
from aiortc.rtcrtpreceiver import RemoteStreamTrack

logger = logging.getLogger("sora_async.aiortc")

# Attributes describing what a media section sends: dropped when aiortc must
# see the section as inactive.
_STREAM_ATTRIBUTES = ("a=ssrc:", "a=ssrc-group:", "a=msid:", "a=rid:", "a=simulcast:")
_CODEC_ATTRIBUTES = ("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")
_DIRECTIONS = ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive")
# Transport attributes aiortc requires in every section it applies.
_TRANSPORT_ATTRIBUTES = ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:", "a=setup:")
_PLACEHOLDER_CODEC = {"audio": "opus/48000/2", "video": "VP8/90000"}


@dataclass(frozen=True)
class MediaSection:
    """What :func:`media_sections` reads from one m-section of an SDP."""

    kind: str
    port: int
    mid: str | None
    #: ``a=msid`` (or the first ``a=ssrc:<n> msid:``) value: "<stream id> <track id>".
    msid: str | None
    ssrcs: tuple[str, ...]

    @property
    def retired(self) -> bool:
        """Port 0: Sora retired this stream (RFC 3264 §8.2)."""
        return self.port == 0

    @property
    def stream_id(self) -> str | None:
        """The stream id of ``a=msid``; for Sora the sending connection's id (§3.3)."""
        return self.msid.split()[0] if self.msid else None


@dataclass(frozen=True)
class PreparedOffer:
    """An offer rewritten for aiortc, and the mids its answer must reject."""

    sdp: str
    rejected_mids: frozenset[str]


def media_sections(text: str) -> list[MediaSection]:
    """The m-sections of an SDP, in order."""
    _, sections = _split(text)
    return [_describe(section) for section in sections]


def prepare_offer(text: str) -> PreparedOffer:
    """Rewrite a Sora offer so that aiortc can apply it (see the module docstring)."""
    session, sections = _split(text)
    unsupported = _sections_without_common_codec(text)
    template = _transport_template(session, sections)
    rejected: set[str] = set()
    rewritten: list[list[str]] = []
    for index, section in enumerate(sections):
        info = _describe(section)
        if info.kind in ("audio", "video") and (info.retired or index in unsupported):
            if info.mid is not None:
                rejected.add(info.mid)
            section = _inactive(section, info, placeholder=index in unsupported)
        rewritten.append(_with_transport(section, template))
    if rejected:
        logger.debug("rejecting m-sections %s", sorted(rejected))
    return PreparedOffer(_join(session, rewritten), frozenset(rejected))


def finalize_answer(text: str, rejected_mids: Iterable[str]) -> str:
    """Reject ``rejected_mids`` in aiortc's answer: port 0, inactive, out of BUNDLE."""
    rejected = set(rejected_mids)
    if not rejected:
        return text
    session, sections = _split(text)
    out: list[list[str]] = []
    for section in sections:
        info = _describe(section)
        if info.mid in rejected:
            fields = section[0].split()
            fields[1] = "0"
            section = [" ".join(fields)] + [
                "a=inactive" if line in _DIRECTIONS else line for line in section[1:]
            ]
        out.append(section)
    session = [_without_mids(line, rejected) for line in session]
    session = [line for line in session if line.strip() != "a=group:BUNDLE"]
    return _join(session, out)


async def recycle_receivers(
    pc: RTCPeerConnection, previous_offer: str | None, offer: str
) -> list[RemoteStreamTrack]:
    """Before applying ``offer``: give reused mids a fresh receiver, end retired streams.

    Returns the remote tracks that ended (their streams left the channel).
    """
    if previous_offer is None:
        return []
    before = {s.mid: s for s in media_sections(previous_offer) if s.mid is not None}
    after = {s.mid: s for s in media_sections(offer) if s.mid is not None}
    ended: list[RemoteStreamTrack] = []
    for transceiver in pc.getTransceivers():
        if transceiver.mid is None:
            continue
        was = before.get(transceiver.mid)
        now = after.get(transceiver.mid)
        if was is None or now is None or was.kind not in ("audio", "video"):
            continue
        if now.retired and not was.retired:
            ended.extend(await _stop_receiver(transceiver.receiver))
        elif not now.retired and (was.retired or (was.msid, was.ssrcs) != (now.msid, now.ssrcs)):
            # A new stream on a known mid: aiortc would keep the old receiver.
            ended.extend(await _replace_receiver(transceiver))
    return ended


def transports(pc: RTCPeerConnection) -> list[RTCDtlsTransport]:
    """The DTLS transports of ``pc`` (one with BUNDLE), media and SCTP alike."""
    found: dict[int, RTCDtlsTransport] = {}
    for transceiver in pc.getTransceivers():
        found.setdefault(id(transceiver.receiver.transport), transceiver.receiver.transport)
    if pc.sctp is not None:
        found.setdefault(id(pc.sctp.transport), pc.sctp.transport)
    return list(found.values())


def transport_stats(transport: RTCDtlsTransport) -> dict[str, Any]:
    """aiortc's own ``transport`` stats entry (packet and byte counters)."""
    for stats in transport._get_stats().values():
        return dict(vars(stats))
    return {}


def transport_stats_id(transport: RTCDtlsTransport) -> str:
    """The id aiortc gives the transport in its RTP stats (``transportId``)."""
    return str(transport._stats_id)


@dataclass(frozen=True)
class CandidatePair:
    """The nominated ICE candidate pair of a transport (from aioice)."""

    local: Mapping[str, Any]
    remote: Mapping[str, Any]
    state: str
    nominated: bool


def nominated_pair(ice: RTCIceTransport) -> CandidatePair | None:
    """The pair aioice nominated for component 1, if ICE completed."""
    connection = getattr(ice, "_connection", None)
    pair = getattr(connection, "_nominated", {}).get(1) if connection is not None else None
    if pair is None:
        return None
    return CandidatePair(
        local=_candidate(pair.local_candidate),
        remote=_candidate(pair.remote_candidate),
        state=pair.state.name.lower(),
        nominated=True,
    )


# -- internals -----------------------------------------------------------------


def _split(text: str) -> tuple[list[str], list[list[str]]]:
    session: list[str] = []
    sections: list[list[str]] = []
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            session.append(line)
    return session, sections


def _join(session: list[str], sections: list[list[str]]) -> str:
    lines = session + [line for section in sections for line in section]
    return "\r\n".join(lines) + "\r\n"


def _describe(section: list[str]) -> MediaSection:
    fields = section[0][2:].split()
    mid = msid = None
    ssrcs: list[str] = []
    ssrc_msid = None
    for line in section[1:]:
        if line.startswith("a=mid:"):
            mid = line[6:].strip()
        elif line.startswith("a=msid:"):
            msid = line[7:].strip()
        elif line.startswith("a=ssrc:"):
            ssrc, _, attribute = line[7:].partition(" ")
            if ssrc not in ssrcs:
                ssrcs.append(ssrc)
            if attribute.startswith("msid:") and ssrc_msid is None:
                ssrc_msid = attribute[5:].strip()
    try:
        port = int(fields[1])
    except (IndexError, ValueError):
        port = 0
    return MediaSection(
        kind=fields[0] if fields else "",
        port=port,
        mid=mid,
        msid=msid or ssrc_msid,
        ssrcs=tuple(ssrcs),
    )


def _sections_without_common_codec(text: str) -> set[int]:
    try:
        description = sdp.SessionDescription.parse(text)
    except Exception:  # aiortc's parser; let setRemoteDescription report it
        return set()
    return {
        index
        for index, media in enumerate(description.media)
        if media.kind in CODECS and not find_common_codecs(CODECS[media.kind], media.rtp.codecs)
    }


def _inactive(section: list[str], info: MediaSection, *, placeholder: bool) -> list[str]:
    keep = [
        line
        for line in section[1:]
        if not line.startswith(_STREAM_ATTRIBUTES)
        and line not in _DIRECTIONS
        and not (placeholder and line.startswith(_CODEC_ATTRIBUTES))
    ]
    head = section[0]
    if placeholder:
        fields = head.split()
        payload_type = next((f for f in fields[3:] if f.isdigit()), "96")
        head = " ".join([*fields[:3], payload_type])
        keep.append(f"a=rtpmap:{payload_type} {_PLACEHOLDER_CODEC[info.kind]}")
    if "a=rtcp-mux" not in keep:
        keep.append("a=rtcp-mux")  # aiortc refuses a media section without it
    keep.append("a=inactive")
    return [head, *keep]


def _transport_template(session: list[str], sections: list[list[str]]) -> dict[str, str]:
    # The first value of each transport attribute, from the session or any section.
    template: dict[str, str] = {}
    for line in [*session, *(line for section in sections for line in section)]:
        for prefix in _TRANSPORT_ATTRIBUTES:
            if line.startswith(prefix):
                template.setdefault(prefix, line)
    return template


def _with_transport(section: list[str], template: dict[str, str]) -> list[str]:
    # Sora may leave ICE/DTLS attributes out of retired sections; aiortc needs them.
    missing = [
        line
        for prefix, line in template.items()
        if not any(existing.startswith(prefix) for existing in section)
    ]
    return section + missing if missing else section


def _without_mids(line: str, mids: set[str]) -> str:
    if not line.startswith("a=group:BUNDLE"):
        return line
    kept = [mid for mid in line.split()[1:] if mid not in mids]
    return " ".join(["a=group:BUNDLE", *kept])


async def _stop_receiver(receiver: RTCRtpReceiver) -> list[RemoteStreamTrack]:
    track = receiver.track
    await receiver.stop()
    return [track] if isinstance(track, RemoteStreamTrack) and _end(track) else []


async def _replace_receiver(transceiver: RTCRtpTransceiver) -> list[RemoteStreamTrack]:
    old = transceiver.receiver
    fresh = RTCRtpReceiver(transceiver.kind, old.transport)
    fresh._set_rtcp_ssrc(transceiver.sender._ssrc)
    # RTCRtpTransceiver keeps its receiver in a name-mangled attribute.
    transceiver._RTCRtpTransceiver__receiver = fresh  # type: ignore[attr-defined]
    track = old.track
    await old.stop()
    return [track] if isinstance(track, RemoteStreamTrack) and _end(track) else []


def _end(track: RemoteStreamTrack) -> bool:
    if track.readyState != "live":
        return False
    # Wake a consumer blocked in recv(); it then sees the track ended.
    track._queue.put_nowait(None)
    track.stop()
    return True


def _candidate(candidate: Any) -> dict[str, Any]:
    return {
        "address": candidate.host,
        "port": candidate.port,
        "protocol": candidate.transport.lower(),
        "candidateType": candidate.type,
        "priority": candidate.priority,
        "foundation": candidate.foundation,
    }
