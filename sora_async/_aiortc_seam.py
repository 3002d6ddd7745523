"""Every access to aiortc's and aioice's private members, in one place.

``sora_async.rtc`` builds its own media engine on aiortc's transports (ICE,
DTLS/SRTP, SCTP) instead of ``RTCPeerConnection`` (``aiortc-notes.md`` A.0,
A.8). The transports' public API is almost enough; the gaps are covered
here, and nowhere else, so that an aiortc upgrade has one module to check.
aiortc is pinned ``>=1.16,<1.17`` in ``pyproject.toml`` because of this module,
and ``tests/test_rtc_seam.py`` fails loudly if any member used here moves.

What is reached, and why:

- :class:`RawDtlsTransport`: ``RTCDtlsTransport._handle_rtp_data`` /
  ``_handle_rtcp_data`` are overridden so that decrypted RTP/RTCP goes to our
  router unparsed (aiortc's ``RtpRouter`` routes by SSRC/PT only and cannot
  take simulcast, mid reuse or several SSRCs per receiver), and
  ``_send_rtp`` protects and sends packets we built. ``_set_role`` sets the
  DTLS role from ``a=setup`` as ``RTCPeerConnection`` does; the private
  packet/byte counters feed the ``transport`` stats.
- :func:`set_ice_controlling`: ``RTCIceTransport._connection`` (aioice) holds
  the ICE role; the offerer is controlling, the answerer controlled unless
  the offerer is ICE-lite (RFC 8445 §6.1.1).
- :func:`gather_on_addresses`: aioice never offers 127.0.0.1, so a server or
  a test bound to loopback gathers with ``Connection.get_component_candidates``
  on chosen addresses, then marks the gatherer completed.
- :func:`nominated_pair`: aioice's nominated pair for the ``candidate-pair``,
  ``local-candidate`` and ``remote-candidate`` stats.
- :func:`watch_ice_activity`: wraps each aioice socket protocol's
  ``datagram_received`` to see every datagram first (STUN consent checks
  included, which never reach DTLS): the engine's liveness signal, so a dead
  path is noticed in seconds instead of aioice's ~30 s consent failure
  (``aiortc-notes.md`` A.8), and a place to drop datagrams to simulate loss
  (before SRTP: a retransmission of a packet SRTP already accepted would be
  refused as a replay).

Server-created DataChannels need nothing private: ``RTCSctpTransport`` emits
``"datachannel"`` for DCEP opens.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiortc
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport

logger = logging.getLogger("sora_async.rtc")

#: The aiortc minor version this module was written and tested against.
PINNED_AIORTC = (1, 16)

RtpHandler = Callable[[bytes, int], Awaitable[None]]
RtcpHandler = Callable[[bytes], Awaitable[None]]


def aiortc_version() -> tuple[int, int]:
    """``(major, minor)`` of the installed aiortc."""
    major, minor, *_ = (int(part) for part in aiortc.__version__.split(".")[:2])
    return major, minor


if aiortc_version() != PINNED_AIORTC:  # pragma: no cover - guarded by the pin
    logger.warning(
        "aiortc %s is installed; sora_async's seam was written for %d.%d",
        aiortc.__version__,
        *PINNED_AIORTC,
    )


class RawDtlsTransport(RTCDtlsTransport):
    """A DTLS transport that hands decrypted RTP/RTCP to callbacks, unparsed.

    ``rtp_handler(data, arrival_ms)`` and ``rtcp_handler(data)`` are awaited
    inline by aiortc's receive loop: they must be quick (parse, route, queue).
    """

    rtp_handler: RtpHandler | None = None
    rtcp_handler: RtcpHandler | None = None

    async def _handle_rtp_data(self, data: bytes, arrival_time_ms: int) -> None:
        if self.rtp_handler is not None:
            await self.rtp_handler(data, arrival_time_ms)

    async def _handle_rtcp_data(self, data: bytes) -> None:
        if self.rtcp_handler is not None:
            await self.rtcp_handler(data)

    async def send_rtp(self, data: bytes) -> bool:
        """SRTP-protect and send one RTP or RTCP packet; False if not connected."""
        try:
            await self._send_rtp(data)
        except ConnectionError:
            return False
        return True

    def set_role(self, role: str) -> None:
        """``"client"`` or ``"server"``: who starts the handshake (``a=setup``, RFC 8842)."""
        if role not in ("client", "server"):
            raise ValueError(f"DTLS role must be 'client' or 'server', not {role!r}")
        self._set_role(role)

    @property
    def role(self) -> str:
        """``"client"``, ``"server"`` or ``"auto"`` (not set yet)."""
        return str(self._role)

    @property
    def counters(self) -> Mapping[str, int]:
        """Datagrams and bytes through this transport (DTLS, SRTP and SRTCP alike)."""
        return {
            "packetsSent": int(self._RTCDtlsTransport__tx_packets),  # type: ignore[attr-defined]
            "packetsReceived": int(self._RTCDtlsTransport__rx_packets),  # type: ignore[attr-defined]
            "bytesSent": int(self._RTCDtlsTransport__tx_bytes),  # type: ignore[attr-defined]
            "bytesReceived": int(self._RTCDtlsTransport__rx_bytes),  # type: ignore[attr-defined]
        }


def set_ice_controlling(ice: RTCIceTransport, controlling: bool) -> None:
    """Fix the ICE role before ``start`` (``RTCPeerConnection`` does the same)."""
    ice._connection.ice_controlling = controlling
    ice._role_set = True


async def gather_on_addresses(gatherer: RTCIceGatherer, addresses: Sequence[str]) -> None:
    """Gather host candidates on ``addresses`` only (plus STUN/TURN if configured)."""
    connection = gatherer._connection
    candidates = await connection.get_component_candidates(component=1, addresses=list(addresses))
    connection._local_candidates += candidates
    connection._local_candidates_end = True
    # keep the gatherer's own bookkeeping consistent with gather()
    gatherer._RTCIceGatherer__setState("completed")  # type: ignore[attr-defined]


def watch_ice_activity(ice: RTCIceTransport, on_datagram: Callable[[bytes], bool]) -> None:
    """Call ``on_datagram(data)`` for every datagram the gathered sockets receive;
    the datagram is dropped when it returns False.

    Call after gathering (the sockets exist then). aioice's protocols are
    asyncio datagram protocols, whose ``datagram_received`` the event loop
    looks up on the instance; TURN-relayed data goes through the same method.
    """
    for protocol in ice._connection._protocols:
        original = protocol.datagram_received

        def datagram_received(
            data: bytes | str, addr: tuple[Any, ...], _original: Any = original
        ) -> None:
            if on_datagram(bytes(data) if isinstance(data, bytes | bytearray) else b""):
                _original(data, addr)

        protocol.datagram_received = datagram_received  # type: ignore[method-assign]


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


def _candidate(candidate: Any) -> dict[str, Any]:
    return {
        "address": candidate.host,
        "port": candidate.port,
        "protocol": candidate.transport.lower(),
        "candidateType": candidate.type,
        "priority": candidate.priority,
        "foundation": candidate.foundation,
    }
