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
- :func:`gather` replaces ``RTCIceGatherer.gather``, for two reasons. aioice
  never offers 127.0.0.1, so a server or a test bound to loopback gathers host
  candidates on chosen addresses (``Connection.get_component_candidates``).
  And aioice allocates on one TURN server per connection, with an SSL context
  of its own for ``turns:``: this allocates on every TURN server of the offer,
  in parallel, with aioice's own ``relayed_candidate``
  (``turn.create_turn_endpoint``), passing our ``ssl.SSLContext``, and gives
  each relay a local preference by its transport to the TURN server (UDP >
  TCP > TLS). It reads ``Connection._transport_policy``/``_use_ipv4``/
  ``_use_ipv6``, appends to ``_local_candidates``/``_protocols`` as aioice's
  gathering does and sets the gatherer's state.
- :func:`nominated_pair`: aioice's nominated pair for the ``candidate-pair``,
  ``local-candidate`` and ``remote-candidate`` stats (``relayProtocol`` for a
  relay candidate :func:`gather` obtained).
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

import asyncio
import logging
import socket
import ssl
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aioice.ice
import aiortc
from aioice.candidate import candidate_foundation, candidate_priority
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


@dataclass(frozen=True)
class TurnServer:
    """One TURN URL of the offer: ``turn:host:port?transport=udp|tcp`` or
    ``turns:host:port?transport=tcp`` (``tls``)."""

    host: str
    port: int
    #: transport to the TURN server: ``"udp"`` or ``"tcp"``
    transport: str = "udp"
    #: ``turns:``: TLS over ``tcp``
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @property
    def relay_protocol(self) -> str:
        """``"udp"``, ``"tcp"`` or ``"tls"`` (W3C ``RTCIceCandidate.relayProtocol``)."""
        return "tls" if self.tls else self.transport

    @property
    def url(self) -> str:
        """The URL, without credentials (for messages)."""
        scheme = "turns" if self.tls else "turn"
        return f"{scheme}:{self.host}:{self.port}?transport={self.transport}"

    def __repr__(self) -> str:  # no password in reprs
        return f"TurnServer({self.url!r})"


#: Local preference (RFC 8445 §5.1.2.1) of relay candidates by relay protocol:
#: every UDP relay above every TCP relay above every TLS relay, and within one
#: protocol the offer's order (minus the server's index). Relays have the
#: lowest type preference, so host and srflx candidates stay above them.
RELAY_LOCAL_PREFERENCE = {"udp": 65535, "tcp": 65535 - 16384, "tls": 65535 - 32768}

#: ``relayProtocol`` of the relay candidates this module gathered.
_relay_protocols: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


async def gather(
    gatherer: RTCIceGatherer,
    *,
    addresses: Sequence[str] | None = None,
    turn_servers: Sequence[TurnServer] = (),
    ssl_context: ssl.SSLContext | None = None,
    allocation_timeout: float = 5.0,
    grace: float = 1.0,
) -> dict[TurnServer, BaseException]:
    """Gather host/STUN candidates and a relay candidate on every TURN server.

    ``addresses``: host candidates on these only (None: every interface, as
    aioice); none with the ``relay`` policy (RFC 9429 §3.5.3). Allocations run
    in parallel and are bounded: a server that has not answered
    ``allocation_timeout`` seconds after the start, or ``grace`` seconds after
    the first relay candidate came, is given up. ``ssl_context`` verifies
    ``turns:`` servers (None: the system store). Returns why each failed
    server gave nothing.
    The gatherer must be ``new`` (it is ``completed`` afterwards).
    """
    connection = gatherer._connection
    relay_only = connection._transport_policy == aioice.ice.TransportPolicy.RELAY
    if relay_only:
        hosts: list[str] = []
    elif addresses is None:
        hosts = aioice.ice.get_host_addresses(
            use_ipv4=connection._use_ipv4, use_ipv6=connection._use_ipv6
        )
    else:
        hosts = list(addresses)
    connection._local_candidates_start = True
    gatherer._RTCIceGatherer__setState("gathering")  # type: ignore[attr-defined]
    ranks: dict[str, int] = {}
    allocations = {}
    for server in turn_servers:
        index = ranks[server.relay_protocol] = ranks.get(server.relay_protocol, -1) + 1
        preference = RELAY_LOCAL_PREFERENCE[server.relay_protocol] - min(index, 16383)
        task = asyncio.ensure_future(_allocate(connection, server, preference, ssl_context))
        allocations[task] = server
    failures: dict[TurnServer, BaseException] = {}
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + allocation_timeout
    try:
        candidates = await connection.get_component_candidates(component=1, addresses=hosts)
        pending = set(allocations)
        while pending and (remaining := deadline - loop.time()) > 0:
            done, pending = await asyncio.wait(
                pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                error = task.exception()
                if error is not None:
                    failures[allocations[task]] = error
                else:
                    candidates.append(task.result())
                    deadline = min(deadline, loop.time() + grace)
        for task in pending:
            waited = loop.time() - started
            failures[allocations[task]] = TimeoutError(f"no answer within {waited:.1f} s")
    finally:
        for task in allocations:
            task.cancel()
        # cancelled allocations close their sockets (create_turn_endpoint)
        await asyncio.gather(*allocations, return_exceptions=True)
    connection._local_candidates += candidates
    connection._local_candidates_end = True
    gatherer._RTCIceGatherer__setState("completed")  # type: ignore[attr-defined]
    return failures


async def _allocate(
    connection: Any, server: TurnServer, preference: int, ssl_context: ssl.SSLContext | None
) -> Any:
    if server.tls:
        tls: bool | ssl.SSLContext = ssl_context if ssl_context is not None else True
    else:
        tls = False
    candidate, protocol = await aioice.ice.relayed_candidate(
        component=1,
        hide_related_address=connection._transport_policy == aioice.ice.TransportPolicy.RELAY,
        protocol_factory=lambda: aioice.ice.StunProtocol(connection),
        turn_server=(server.host, server.port),
        turn_username=server.username,
        turn_password=server.password,
        turn_ssl=tls,  # type: ignore[arg-type]  # create_turn_endpoint takes a context
        turn_transport=server.transport,
    )
    # closed with the connection, like aioice's own relay protocol
    connection._protocols.append(protocol)
    candidate.priority = candidate_priority(1, "relay", preference)
    # RFC 8445 §5.1.1.3: relays from different servers/transports differ in foundation
    candidate.foundation = candidate_foundation(
        "relay", f"udp/{server.relay_protocol}/{server.host}:{server.port}", candidate.host
    )
    _relay_protocols[candidate] = server.relay_protocol
    return candidate


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


#: Receive buffer asked for each gathered UDP socket (bytes; Linux doubles it and
#: caps it at ``net.core.rmem_max``). libwebrtc raises its video socket's buffer
#: too (``kVideoRtpRecvBufferSize``); here a process with many connections whose
#: event loop falls behind for a moment would otherwise lose packets in the
#: kernel (measured: 50 receivers in one process, ~48 000 datagrams dropped in
#: 20 s with the 208 KiB default), and each loss costs NACKs, PLIs and key frames.
RECEIVE_BUFFER = 1 << 20


def enlarge_receive_buffers(ice: RTCIceTransport, size: int = RECEIVE_BUFFER) -> int:
    """Ask for ``size``-byte receive buffers on the gathered UDP sockets (not
    shrinking any); returns how many sockets were changed. Call after gathering."""
    changed = 0
    for protocol in ice._connection._protocols:
        transport = getattr(protocol, "transport", None)
        get_extra_info = getattr(transport, "get_extra_info", None)
        sock = get_extra_info("socket") if callable(get_extra_info) else None
        if sock is None:
            continue
        try:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < size:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
                changed += 1
        except OSError:  # not a plain UDP socket (a TURN/TCP relay): leave it
            continue
    return changed


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
    entry = {
        "address": candidate.host,
        "port": candidate.port,
        "protocol": candidate.transport.lower(),
        "candidateType": candidate.type,
        "priority": candidate.priority,
        "foundation": candidate.foundation,
    }
    relay_protocol = _relay_protocols.get(candidate)
    if relay_protocol is not None:
        entry["relayProtocol"] = relay_protocol
    return entry
