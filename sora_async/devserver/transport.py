"""One BUNDLE transport (ICE + DTLS/SRTP + SCTP) built from aiortc's ORTC objects.

The dev server drives aiortc's transports directly instead of
``RTCPeerConnection``: it needs raw (decrypted) RTP/RTCP in and out for
forwarding, SDP it writes itself, and server-created DataChannels. The aiortc
internals this needs are confined to this module (aiortc is pinned to 1.16.x):

- ``RTCDtlsTransport._handle_rtp_data`` / ``_handle_rtcp_data`` are overridden
  to hand packets to the forwarder, and ``_send_rtp`` sends raw packets;
- ``RTCDtlsTransport._set_role`` and ``RTCIceTransport._connection`` set the
  DTLS and ICE roles, as ``RTCPeerConnection`` itself does;
- aioice's ``Connection.get_component_candidates`` gathers on chosen addresses,
  because aioice never offers 127.0.0.1 and the dev server must work on
  loopback alone.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsParameters, RTCDtlsTransport
from aiortc.rtcicetransport import (
    RTCIceCandidate,
    RTCIceGatherer,
    RTCIceParameters,
    RTCIceTransport,
    candidate_from_aioice,
)
from aiortc.rtcsctptransport import RTCSctpCapabilities, RTCSctpTransport
from aiortc.sdp import candidate_from_sdp

logger = logging.getLogger("sora_async.devserver")

RtpHandler = Callable[[bytes, int], Awaitable[None]]
RtcpHandler = Callable[[bytes], Awaitable[None]]


class ForwardingDtlsTransport(RTCDtlsTransport):
    """A DTLS transport that passes decrypted RTP/RTCP to callbacks, unparsed."""

    rtp_handler: RtpHandler | None = None
    rtcp_handler: RtcpHandler | None = None

    async def _handle_rtp_data(self, data: bytes, arrival_time_ms: int) -> None:
        if self.rtp_handler is not None:
            await self.rtp_handler(data, arrival_time_ms)

    async def _handle_rtcp_data(self, data: bytes) -> None:
        if self.rtcp_handler is not None:
            await self.rtcp_handler(data)

    async def send_rtp(self, data: bytes) -> bool:
        """Protect and send one RTP or RTCP packet; False if not connected."""
        try:
            await self._send_rtp(data)
        except ConnectionError:
            return False
        return True


class BundleTransport:
    """ICE + DTLS + optional SCTP for one client; the server is the offerer."""

    def __init__(self, *, ice_addresses: list[str] | None, on_state: Callable[[str], None]):
        self._ice_addresses = ice_addresses
        self._loopback_only = bool(ice_addresses) and all(
            ipaddress.ip_address(a).is_loopback for a in ice_addresses or ()
        )
        self._on_state = on_state
        self._certificate = RTCCertificate.generateCertificate()
        self.gatherer = RTCIceGatherer(iceServers=[])
        self.ice = RTCIceTransport(self.gatherer)
        # Offerer is ICE-controlling unless the peer is ICE-lite (RFC 8445 §6.1.1).
        self.ice._connection.ice_controlling = True
        self.ice._role_set = True
        self.dtls = ForwardingDtlsTransport(self.ice, [self._certificate])
        self.sctp: RTCSctpTransport | None = None
        self._started = False
        self._start_task: asyncio.Task[None] | None = None
        self.state = "new"

        @self.dtls.on("statechange")
        def _on_dtls_state() -> None:
            self._set_state(
                {"connected": "connected", "failed": "failed", "closed": "closed"}.get(
                    self.dtls.state, self.state
                )
            )

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._on_state(state)

    async def gather(self) -> None:
        """Gather host candidates (only on ``ice_addresses`` when given)."""
        if self.gatherer.state == "completed":
            return
        if self._ice_addresses is None:
            await self.gatherer.gather()
            return
        connection = self.ice._connection
        candidates = await connection.get_component_candidates(
            component=1, addresses=self._ice_addresses
        )
        connection._local_candidates += candidates
        connection._local_candidates_end = True
        # keep the gatherer's own bookkeeping consistent with gather()
        self.gatherer._RTCIceGatherer__setState("completed")  # type: ignore[attr-defined]

    @property
    def local_ice(self) -> RTCIceParameters:
        return self.gatherer.getLocalParameters()

    @property
    def local_candidates(self) -> list[RTCIceCandidate]:
        return self.gatherer.getLocalCandidates()

    @property
    def local_dtls(self) -> RTCDtlsParameters:
        return self.dtls.getLocalParameters()

    def start(
        self,
        remote_ice: RTCIceParameters,
        remote_dtls: RTCDtlsParameters,
        remote_candidates: list[RTCIceCandidate],
        *,
        dtls_role: str,
        sctp_port: int | None,
        sctp_max_message_size: int | None,
    ) -> None:
        """Start ICE, then DTLS, then SCTP, in the background (idempotent)."""
        if self._started:
            return
        self._started = True
        self._set_state("connecting")
        if sctp_port is not None:
            self.sctp = RTCSctpTransport(self.dtls)
        self._start_task = asyncio.ensure_future(
            self._start(
                remote_ice,
                remote_dtls,
                remote_candidates,
                dtls_role,
                sctp_port,
                sctp_max_message_size,
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
    ) -> None:
        try:
            for candidate in remote_candidates:
                await self.add_remote_candidate(candidate)
            await self.ice.start(remote_ice)
            if self.ice.state != "completed":
                self._set_state("failed")
                return
            self.dtls._set_role(dtls_role)
            await self.dtls.start(remote_dtls)
            if self.sctp is not None and sctp_port is not None:
                caps = RTCSctpCapabilities(maxMessageSize=sctp_max_message_size or 65536)
                await self.sctp.start(caps, sctp_port)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # DTLS handshake failure, ICE failure, ...
            logger.info("transport failed: %r", exc)
            self._set_state("failed")

    async def add_remote_candidate(self, candidate: RTCIceCandidate) -> None:
        if not self._usable_remote(candidate):
            return
        await self.ice.addRemoteCandidate(candidate)

    def _usable_remote(self, candidate: RTCIceCandidate) -> bool:
        # aioice pairs UDP only. When the server is bound to loopback, never send
        # connectivity checks elsewhere: tests must stay on 127.0.0.1 / ::1, and
        # a client on this machine reaches the loopback candidate anyway (it is
        # then learnt as peer-reflexive).
        if candidate.protocol.lower() != "udp":
            return False
        if not self._loopback_only:
            return True
        try:
            return ipaddress.ip_address(candidate.ip).is_loopback
        except ValueError:
            return False  # mDNS names and the like

    async def stop(self) -> None:
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


def parse_candidate(text: str) -> RTCIceCandidate:
    """Parse ``candidate:...`` (with or without ``a=``) into an aiortc candidate."""
    text = text.strip()
    if text.startswith("a="):
        text = text[2:]
    if text.startswith("candidate:"):
        text = text[len("candidate:") :]
    return candidate_from_sdp(text)


__all__ = ["BundleTransport", "ForwardingDtlsTransport", "candidate_from_aioice", "parse_candidate"]
