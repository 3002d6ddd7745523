"""One BUNDLE transport (ICE + DTLS/SRTP + SCTP) built from aiortc's ORTC objects.

Used on both sides of a Sora session: by the dev server, which offers (ICE
controlling, DTLS role from the client's ``a=setup``), and by the client
engine, which answers (ICE controlled unless Sora is ICE-lite, ``a=setup:active``
so the client is the DTLS client, and the SCTP association runs over that
DTLS role, RFC 8841). Decrypted RTP/RTCP goes to callbacks unparsed and raw
packets go out through :meth:`BundleTransport.send_rtp`; the aiortc internals
this needs live in ``sora_async._aiortc_seam``.

ICE servers: :func:`select_ice_servers` reads them from Sora's browser
``RTCConfiguration``: the first STUN URL (aioice queries one STUN server) and
every TURN URL aioice can use. aioice itself allocates on a single TURN server
(``aiortc-notes.md`` A.8); :func:`sora_async._aiortc_seam.gather` allocates on
all of them in parallel, so a dead or refusing first server does not prevent
relaying through a later one, and UDP relays are preferred over TCP over TLS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiortc.rtcconfiguration import RTCIceServer, RTCIceTransportPolicy
from aiortc.rtcdtlstransport import RTCDtlsParameters
from aiortc.rtcicetransport import (
    RTCIceCandidate,
    RTCIceGatherer,
    RTCIceParameters,
    RTCIceTransport,
    candidate_from_aioice,
    parse_stun_turn_uri,
)
from aiortc.rtcsctptransport import RTCSctpCapabilities, RTCSctpTransport
from aiortc.sdp import candidate_from_sdp

from .. import _aiortc_seam as seam
from .._aiortc_seam import RawDtlsTransport, TurnServer

logger = logging.getLogger("sora_async.rtc")

#: Kept for the dev server, which imported it under this name.
ForwardingDtlsTransport = RawDtlsTransport

#: TURN transports aioice can use, best first: UDP relays media without TCP
#: head-of-line blocking; TCP and then TLS get through restrictive firewalls.
#: (``turns:`` over UDP, i.e. DTLS to the TURN server, is not supported by aioice.)
_TURN_PREFERENCE = (("turn", "udp"), ("turn", "tcp"), ("turns", "tcp"))

#: Seconds gathering waits for TURN allocations (all run in parallel), and for
#: the others once one relay candidate came: a dead or black-holed TURN server
#: delays the answer by this much at most.
TURN_ALLOCATION_TIMEOUT = 5.0
TURN_ALLOCATION_GRACE = 1.0


def select_ice_servers(config: Any) -> tuple[list[RTCIceServer], RTCIceTransportPolicy]:
    """The ICE servers the engine will use, from Sora's ``offer.config``.

    ``config`` is a browser ``RTCConfiguration`` (``sora-protocol.md`` §3.1):
    ``iceServers`` entries with ``urls`` (a string or a list), ``username`` and
    ``credential``, and ``iceTransportPolicy``. Returns single-URL servers: the
    first STUN URL (aioice queries one STUN server), then every usable TURN URL
    (``turn:`` over UDP or TCP, ``turns:`` over TCP), UDP first, then TCP, then
    TLS, each group in the offer's order, duplicates removed. The engine
    allocates on all of them (:class:`BundleTransport`). Malformed URLs are
    skipped.
    """
    stun: RTCIceServer | None = None
    turn: dict[tuple[str, str], list[RTCIceServer]] = {key: [] for key in _TURN_PREFERENCE}
    seen: set[tuple[Any, ...]] = set()
    policy = RTCIceTransportPolicy.ALL
    if isinstance(config, Mapping):
        for server in config.get("iceServers") or []:
            if not isinstance(server, Mapping):
                continue
            urls = server.get("urls")
            for url in [urls] if isinstance(urls, str) else list(urls or []):
                if not isinstance(url, str):
                    continue
                try:
                    parsed = parse_stun_turn_uri(url)
                except ValueError:
                    logger.warning("ignoring malformed ICE server URL %r", url)
                    continue
                if parsed["scheme"] == "stun" and stun is None:
                    stun = RTCIceServer(urls=url)
                elif parsed["scheme"] in ("turn", "turns"):
                    key = (parsed["scheme"], parsed["transport"])
                    identity = (*key, parsed["host"], parsed["port"], server.get("username"))
                    if key in turn and identity not in seen:
                        seen.add(identity)
                        turn[key].append(
                            RTCIceServer(
                                urls=url,
                                username=server.get("username"),
                                credential=server.get("credential"),
                            )
                        )
        if config.get("iceTransportPolicy") == "relay":
            policy = RTCIceTransportPolicy.RELAY
    servers = [stun] if stun is not None else []
    for key in _TURN_PREFERENCE:
        servers += turn[key]
    return servers, policy


def _split_ice_servers(
    servers: Sequence[RTCIceServer],
) -> tuple[list[RTCIceServer], list[TurnServer]]:
    """STUN servers for aioice, and TURN servers for the seam's gathering."""
    stun: list[RTCIceServer] = []
    turn: list[TurnServer] = []
    for server in servers:
        for url in [server.urls] if isinstance(server.urls, str) else list(server.urls):
            parsed = parse_stun_turn_uri(url)
            if parsed["scheme"] not in ("turn", "turns"):
                stun.append(RTCIceServer(urls=url))
            elif (parsed["scheme"], parsed["transport"]) in _TURN_PREFERENCE:
                turn.append(
                    TurnServer(
                        host=parsed["host"],
                        port=parsed["port"],
                        transport=parsed["transport"],
                        tls=parsed["scheme"] == "turns",
                        username=server.username,
                        password=server.credential,
                    )
                )
    return stun, turn


class BundleTransport:
    """ICE + DTLS + optional SCTP for one peer, offerer or answerer.

    ``ice_addresses``: gather host candidates on these addresses only (the
    dev server and hermetic tests use ``["127.0.0.1"]``); None gathers on every
    interface, as aiortc does. ``ice_servers``: STUN and TURN servers (a relay
    candidate is gathered on every TURN server); ``turn_ssl_context`` verifies
    ``turns:`` servers (None: the system trust store). ``on_state`` gets
    "connecting", "connected", "failed" and "closed".

    Example (the answering side)::

        transport = BundleTransport(ice_controlling=False, on_state=print)
        await transport.gather()
        ...  # write the answer with transport.local_ice / local_dtls / local_candidates
        transport.start(remote_ice, remote_dtls, candidates, dtls_role="client",
                        sctp_port=5000, sctp_max_message_size=262144)
    """

    def __init__(
        self,
        *,
        ice_addresses: Sequence[str] | None = None,
        on_state: Callable[[str], None],
        ice_controlling: bool = True,
        ice_servers: Sequence[RTCIceServer] = (),
        ice_transport_policy: RTCIceTransportPolicy = RTCIceTransportPolicy.ALL,
        turn_ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._ice_addresses = list(ice_addresses) if ice_addresses is not None else None
        self._loopback_only = bool(self._ice_addresses) and all(
            ipaddress.ip_address(a).is_loopback for a in self._ice_addresses or ()
        )
        self._on_state = on_state
        self._certificate = seam.shared_certificate()
        stun_servers, self._turn_servers = _split_ice_servers(ice_servers)
        self._turn_ssl_context = turn_ssl_context
        self._relay_only = ice_transport_policy == RTCIceTransportPolicy.RELAY
        #: why each TURN server gave no relay candidate (its URL -> the reason)
        self.turn_errors: dict[str, str] = {}
        # TURN servers are not given to aioice: seam.gather() allocates on each.
        self.gatherer = RTCIceGatherer(
            iceServers=stun_servers, iceTransportPolicy=ice_transport_policy
        )
        self.ice = RTCIceTransport(self.gatherer)
        seam.set_ice_controlling(self.ice, ice_controlling)
        seam.connect_promptly(self.ice)
        seam.send_when_writable(self.ice)
        self.dtls = RawDtlsTransport(self.ice, [self._certificate])
        self.sctp: RTCSctpTransport | None = None
        self._started = False
        self._stopped = False
        self._start_task: asyncio.Task[None] | None = None
        self.state = "new"
        #: ``time.monotonic()`` of the last datagram received (STUN, DTLS, SRTP, SRTCP).
        self.last_activity = time.monotonic()
        self._receive_filter: Callable[[bytes], bool] | None = None
        #: the aioice protocols seam.watch_ice_activity hooked (for seam.release_ice)
        self._watched: list[Any] = []

        @self.dtls.on("statechange")
        def _on_dtls_state() -> None:
            self._set_state(
                {"connected": "connected", "failed": "failed", "closed": "closed"}.get(
                    self.dtls.state, self.state
                )
            )

        @self.ice.on("statechange")
        def _on_ice_state() -> None:
            # aioice reports a lost consent (RFC 7675) as a closed connection,
            # which aiortc turns into ICE "failed" (aiortc-notes.md A.8).
            if self.ice.state == "failed":
                self._set_state("failed")

    def _set_state(self, state: str) -> None:
        if state == self.state or self.state == "closed":
            return
        if self._stopped and state != "closed":
            return
        self.state = state
        self._on_state(state)

    async def gather(self) -> None:
        """Gather local candidates (only on ``ice_addresses`` when given). Idempotent.

        Relay candidates come from every TURN server that answers within
        :data:`TURN_ALLOCATION_TIMEOUT`; the others are logged and listed in
        :attr:`turn_errors`. With the ``relay`` policy and no relay candidate at
        all, raises ``ConnectionError`` naming each server's problem.
        """
        if self.gatherer.state != "new":
            return
        failures = await seam.gather(
            self.gatherer,
            addresses=self._ice_addresses,
            turn_servers=self._turn_servers,
            ssl_context=self._turn_ssl_context,
            allocation_timeout=TURN_ALLOCATION_TIMEOUT,
            grace=TURN_ALLOCATION_GRACE,
        )
        for server, error in failures.items():
            self.turn_errors[server.url] = why = _turn_error(error)
            logger.warning("no relay candidate from %s: %s", server.url, why)
        self._watched = seam.watch_ice_activity(self.ice, self._on_datagram, self.dtls)
        seam.enlarge_receive_buffers(self.ice)
        if self._relay_only and not self.local_candidates:
            problems = "; ".join(f"{url}: {why}" for url, why in self.turn_errors.items())
            raise ConnectionError(
                "no relay candidate for iceTransportPolicy relay"
                + (f" ({problems})" if problems else " (no usable TURN server in iceServers)")
            )

    def _on_datagram(self, data: bytes) -> bool:
        if self._receive_filter is not None and not self._receive_filter(data):
            return False
        self.last_activity = time.monotonic()
        return True

    @property
    def local_ice(self) -> RTCIceParameters:
        return self.gatherer.getLocalParameters()

    @property
    def local_candidates(self) -> list[RTCIceCandidate]:
        return self.gatherer.getLocalCandidates()

    @property
    def local_dtls(self) -> RTCDtlsParameters:
        return self.dtls.getLocalParameters()

    @property
    def ice_role(self) -> str:
        """``"controlling"`` or ``"controlled"``."""
        return self.ice.role

    def start(
        self,
        remote_ice: RTCIceParameters,
        remote_dtls: RTCDtlsParameters,
        remote_candidates: Sequence[RTCIceCandidate],
        *,
        dtls_role: str,
        sctp_port: int | None,
        sctp_max_message_size: int | None,
        candidates_complete: bool = False,
    ) -> None:
        """Start ICE, then DTLS, then SCTP, in the background (idempotent).

        ``candidates_complete``: the remote side said ``a=end-of-candidates``,
        so ICE may fail once every pair failed instead of waiting for more.
        """
        if self._started or self._stopped:
            return
        self._started = True
        self._set_state("connecting")
        if sctp_port is not None:
            self.sctp = seam.TunedSctpTransport(self.dtls)
        self._start_task = asyncio.ensure_future(
            self._start(
                remote_ice,
                remote_dtls,
                list(remote_candidates),
                dtls_role,
                sctp_port,
                sctp_max_message_size,
                candidates_complete,
            )
        )

    async def _start(
        self,
        remote_ice: RTCIceParameters,
        remote_dtls: RTCDtlsParameters,
        remote_candidates: list[RTCIceCandidate],
        dtls_role: str,
        sctp_port: int | None,
        sctp_max_message_size: int | None,
        candidates_complete: bool,
    ) -> None:
        ice_start: asyncio.Future[None] | None = None
        dtls_start: asyncio.Future[None] | None = None
        try:
            for candidate in remote_candidates:
                await self.add_remote_candidate(candidate)
            if candidates_complete:
                await self.ice.addRemoteCandidate(None)
            ice_start = asyncio.ensure_future(self.ice.start(remote_ice))
            # DTLS starts once a pair passed its check, as libwebrtc's does when its
            # transport becomes writable; the nomination completes alongside (a round
            # trip more against an ICE-lite server: seam.send_when_writable).
            writable = seam.writable(self.ice)
            await asyncio.wait((ice_start, writable), return_when=asyncio.FIRST_COMPLETED)
            if self._ice_failed(ice_start):
                return
            self.dtls.set_role(dtls_role)
            dtls_start = asyncio.ensure_future(self.dtls.start(remote_dtls))
            await asyncio.wait((ice_start, dtls_start), return_when=asyncio.FIRST_COMPLETED)
            if self._ice_failed(ice_start):  # the handshake cannot finish without ICE
                return
            await dtls_start
            if self.sctp is not None and sctp_port is not None:
                caps = RTCSctpCapabilities(maxMessageSize=sctp_max_message_size or 65536)
                await self.sctp.start(caps, sctp_port)
            await ice_start
            self._ice_failed(ice_start)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # DTLS handshake failure, ICE failure, ...
            logger.info("transport failed: %r", exc)
            self._set_state("failed")
        finally:
            for task in (dtls_start, ice_start):
                if task is not None and not task.done():
                    task.cancel()

    def _ice_failed(self, ice_start: asyncio.Future[None]) -> bool:
        """``ice.start`` ended without a nominated pair: the transport failed."""
        if ice_start.done() and self.ice.state != "completed":
            self._set_state("failed")
            return True
        return False

    async def add_remote_candidate(self, candidate: RTCIceCandidate) -> None:
        """Add a remote candidate (offer, answer or trickled); unusable ones are skipped."""
        if not self._usable_remote(candidate):
            return
        await self.ice.addRemoteCandidate(candidate)

    def _usable_remote(self, candidate: RTCIceCandidate) -> bool:
        # aioice pairs UDP only. When bound to loopback, never send connectivity
        # checks elsewhere: tests must stay on 127.0.0.1 / ::1, and a peer on
        # this machine reaches the loopback candidate anyway (it is then learnt
        # as peer-reflexive).
        if candidate.protocol.lower() != "udp":
            return False
        if not self._loopback_only:
            return True
        try:
            return ipaddress.ip_address(candidate.ip).is_loopback
        except ValueError:
            return False  # mDNS names and the like

    async def send_rtp(self, data: bytes) -> bool:
        """Protect and send one RTP or RTCP packet; False if not connected."""
        return await self.dtls.send_rtp(data)

    def send_rtp_now(self, data: bytes) -> bool | None:
        """:meth:`send_rtp` without awaiting (the hot path of media packets): True when
        sent, False if not connected, None when it cannot be done synchronously here
        (then await :meth:`send_rtp`)."""
        return self.dtls.send_rtp_now(data)

    def set_receive_filter(self, keep: Callable[[bytes], bool] | None) -> None:
        """Simulate a lossy network: drop incoming datagrams ``keep`` returns False for.

        Applied as they arrive, before ICE, DTLS and SRTP (RTP headers are
        readable there); None removes it. For tests and diagnostics.
        """
        self._receive_filter = keep

    @property
    def counters(self) -> Mapping[str, int]:
        """Datagrams and bytes sent and received (``transport`` stats)."""
        return self.dtls.counters

    def selected_pair(self) -> seam.CandidatePair | None:
        """The nominated candidate pair once ICE completed."""
        return seam.nominated_pair(self.ice)

    async def stop(self) -> None:
        """Close SCTP, DTLS and ICE; fires ``on_state("closed")``. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._start_task is not None and not self._start_task.done():
            self._start_task.cancel()
            try:
                await self._start_task
            except (asyncio.CancelledError, Exception):
                pass
        if self.sctp is not None:
            await self.sctp.stop()
        await self.dtls.stop()
        await self.ice.stop()
        self._set_state("closed")
        # Break the reference cycles between this transport, aiortc's and aioice's
        # objects and the handlers, so that a closed transport goes by reference
        # counting instead of waiting for the cyclic GC (see seam.release_ice).
        seam.release_ice(self.ice, self._watched)
        self._watched = []
        self.dtls.remove_all_listeners()
        self.ice.remove_all_listeners()
        self._on_state = _ignore_state


def _ignore_state(state: str) -> None:
    """``on_state`` of a stopped :class:`BundleTransport` (it held its owner)."""


def _turn_error(error: BaseException) -> str:
    """Why an allocation failed, in words (TLS problems named as for the WebSocket)."""
    from ..websocket import describe_error

    if isinstance(error, TimeoutError):
        return str(error) or "no answer"
    return describe_error(error)


def parse_candidate(text: str) -> RTCIceCandidate:
    """Parse ``candidate:...`` (with or without ``a=``) into an aiortc candidate."""
    text = text.strip()
    if text.startswith("a="):
        text = text[2:]
    if text.startswith("candidate:"):
        text = text[len("candidate:") :]
    return candidate_from_sdp(text)


__all__ = [
    "BundleTransport",
    "ForwardingDtlsTransport",
    "RawDtlsTransport",
    "candidate_from_aioice",
    "parse_candidate",
    "select_ice_servers",
]
