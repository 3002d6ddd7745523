"""Every access to aiortc's and aioice's private members, in one place.

``sora_async.rtc`` builds its own media engine on aiortc's transports (ICE,
DTLS/SRTP, SCTP) instead of ``RTCPeerConnection`` (``aiortc-notes.md`` A.0,
A.8). The transports' public API is almost enough; the gaps are covered
here, and nowhere else, so that an aiortc upgrade has one module to check.
aiortc is pinned ``>=1.16,<1.17`` in ``pyproject.toml`` because of this module
(aioice ``>=0.13,<0.14`` and pyOpenSSL ``<27`` likewise), and
``tests/test_rtc_seam.py`` and ``tests/test_rtc_sctp_fast_path.py`` fail loudly
if any member used here moves.

What is reached, and why:

- :class:`RawDtlsTransport`: ``RTCDtlsTransport._handle_rtp_data`` /
  ``_handle_rtcp_data`` are overridden so that decrypted RTP/RTCP goes to our
  router unparsed (aiortc's ``RtpRouter`` routes by SSRC/PT only and cannot
  take simulcast, mid reuse or several SSRCs per receiver), and
  ``_send_rtp`` protects and sends packets we built. ``_set_role`` sets the
  DTLS role from ``a=setup`` as ``RTCPeerConnection`` does; the private
  packet/byte counters feed the ``transport`` stats.
  :meth:`RawDtlsTransport.receive_srtp` does what ``_recv_next`` does for an
  SRTP/SRTCP datagram (``_rx_srtp``, ``_state``, the counters), called from
  :func:`watch_ice_activity` as the datagram arrives: per packet, one pass
  through aioice's ``asyncio.Queue`` and one wake-up of aiortc's receive task
  less (with 100 connections in a process that was a good part of the loop).
  :meth:`RawDtlsTransport.receive_dtls` does the same for a DTLS
  application-data record (SCTP: ``_ssl``, ``_data_receiver._handle_data``,
  aioice's ``Connection._queue`` to keep the order), and
  :meth:`RawDtlsTransport.send_data_now` / ``_write_ssl`` hand records to the
  nominated pair's socket (``Connection._nominated``) as aioice's
  ``Connection.send`` would; both go through :class:`_Records`, which makes
  pyOpenSSL's OpenSSL calls itself (pyOpenSSL's ``_lib``/``_ffi`` and its
  connection's ``_ssl``/``_into_ssl``/``_from_ssl``) on success and leaves every
  other result to pyOpenSSL.
- :class:`ReusableCertificate`: ``RTCCertificate._create_ssl_context`` cached
  per SRTP profile list, for :func:`shared_certificate`, one certificate per
  process instead of a key, a certificate and an OpenSSL context per connection.
- :func:`set_ice_controlling`: ``RTCIceTransport._connection`` (aioice) holds
  the ICE role; the offerer is controlling, the answerer controlled unless
  the offerer is ICE-lite (RFC 8445 §6.1.1).
- :func:`connect_promptly`: aioice's ``Connection.connect`` sleeps its 20 ms
  check pacing once more after the last check started before it looks at the
  result; on loopback that was most of a connect's time. The instance's
  ``connect`` is replaced by a copy of aioice 0.13's that wakes on the result
  (``_check_periodic``, ``_check_list_state``, ``_early_checks``...; aioice is
  pinned ``>=0.13,<0.14`` and the seam test pins that method's source).
- :func:`send_when_writable` / :func:`writable`: DTLS starts once a pair's
  check succeeded, before the nomination, as libwebrtc's does (against an
  ICE-lite remote aioice's regular nomination is a round trip more). The
  instance's ``check_start`` is a copy of aioice 0.13's that notes the pair at
  its check's success (``_nominating``, ``remote_is_lite``,
  ``_Connection__log_info``), and ``sendto``/``recvfrom`` use that pair until
  one is nominated (``_nominated``, ``_queue``); the seam test pins the three
  methods' source.
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
  refused as a replay). Once a fast path took a datagram, :func:`_drain` reads
  on what is already queued on that socket (asyncio's ``_sock``/``max_size``, as
  its ``_read_ready``): one event-loop pass per burst instead of per datagram.
- :func:`release_ice`: after ``stop``, undoes :func:`connect_promptly` and
  :func:`watch_ice_activity` (instance attributes that refer back to their
  instance) and clears aioice's ``Connection._check_list`` (pair -> protocol
  -> ``receiver`` -> connection) and ``_early_checks``: without those cycles a
  closed connection is freed by reference counting, not by the cyclic GC.
- :class:`TunedSctpTransport`: ``RTCSctpTransport``'s initial ``_advertised_rwnd``
  and ``_cwnd``, its ``_send_sack`` (called per received packet) and ``_transmit``
  (Max.Burst), for DataChannel throughput: a SACK every second packet, a window
  the receive buffer holds, bursts of up to 64 packets (the constants above it say why).
  For the per-packet cost of a large message (a 64 KiB message is 57 packets at
  each of sender, dev server and receiver) it also overrides ``_handle_data``
  (a packet of one DATA chunk, or of one SACK without gap blocks, parsed
  directly), ``_send_sack`` (such a SACK packed at once), ``_mark_received`` (in-order
  TSNs), ``_send_chunk`` (through ``send_data_now``), ``_transmit`` (new data
  sent without a scan of ``_sent_queue``; ``_maybe_abandon``, which aiortc asks
  before marking a chunk for retransmission, says when the scan is needed) and
  ``_data_channel_send`` (aiortc's queueing repeated, its ``_remote_max_message_size``,
  ``_data_channel_queue`` and the PPIDs; the flush starts at once, and no task per message).
  :meth:`TunedSctpTransport.handle_packet_now` does ``_receive_data_chunk``'s
  and ``_receive_sack_chunk``'s work for an in-order DATA chunk that completes
  no message and for a gap-free SACK while nothing waits to be sent (it reads
  ``_reconfig_deferred``, ``_inbound_streams``, ``_sent_queue``, the cwnd and
  T3 members), without a coroutine.

- :func:`parse_rtp`: aiortc's ``RtpPacket.parse`` for every received packet, with
  one-byte header extensions read in one pass through the ids
  ``HeaderExtensionsMap`` keeps privately (``__ids``); a value it cannot decode goes
  back to aiortc's ``HeaderExtensionsMap.get`` so that the same exception comes out
  (``tests/test_rtc_rtp_parse.py`` compares the two on mutated packets).

Server-created DataChannels need nothing private: ``RTCSctpTransport`` emits
``"datachannel"`` for DCEP opens.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import socket
import ssl
import struct
import time
import types
import weakref
from collections.abc import (
    Callable,
    Coroutine,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any

import aioice.ice
import aioice.stun
import aiortc
import pylibsrtp
from aioice.candidate import candidate_foundation, candidate_priority
from aiortc.rtcdatachannel import RTCDataChannel
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint, RTCDtlsTransport
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
from aiortc.rtcsctptransport import (
    SCTP_DATA_CHUNK_HEADER_LENGTH,
    SCTP_DATA_LAST_FRAG,
    SCTP_TSN_MODULO,
    USERDATA_MAX_LENGTH,
    WEBRTC_BINARY,
    WEBRTC_BINARY_EMPTY,
    WEBRTC_STRING,
    WEBRTC_STRING_EMPTY,
    Chunk,
    DataChunk,
    InboundStream,
    RTCSctpTransport,
    SackChunk,
    serialize_packet,
)
from aiortc.rtp import (
    RTP_HEADER_LENGTH,
    HeaderExtensions,
    HeaderExtensionsMap,
    RtpPacket,
    is_rtcp,
)
from aiortc.utils import uint32_gt, uint32_gte
from google_crc32c import value as crc32c  # aiortc's SCTP checksum
from OpenSSL import SSL

logger = logging.getLogger("sora_async.rtc")

#: The aiortc minor version this module was written and tested against.
PINNED_AIORTC = (1, 16)

#: ms from the NTP epoch (1900) to the Unix epoch: aiortc's ``clock.current_ms()``
#: counts from 1900.
_NTP_EPOCH_OFFSET_MS = 2_208_988_800_000

RtpHandler = Callable[[bytes, int], Coroutine[Any, Any, None]]
RtcpHandler = Callable[[bytes], Coroutine[Any, Any, None]]


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


class ReusableCertificate(RTCCertificate):
    """An ``RTCCertificate`` whose OpenSSL context is built once per SRTP profile list.

    aiortc builds a new ``SSL.Context`` (certificate converted to OpenSSL's form,
    key, ciphers, SRTP profiles) in ``RTCDtlsTransport.start`` for every
    connection: ~0.7 ms measured, on the path from ICE to the DTLS handshake,
    on both ends. One context serves any number of connections (each has its
    own ``SSL.Connection``), and every setting in it is the same for all.
    """

    def __init__(self, key: Any, cert: Any) -> None:
        super().__init__(key=key, cert=cert)
        self._contexts: dict[tuple[bytes, ...], SSL.Context] = {}
        self._fingerprints: list[RTCDtlsFingerprint] | None = None

    def getFingerprints(self) -> list[RTCDtlsFingerprint]:
        # asked several times per connection (answer, stats, DTLS validation): the
        # certificate never changes, its hashes are computed once
        if self._fingerprints is None:
            self._fingerprints = super().getFingerprints()
        return list(self._fingerprints)

    def _create_ssl_context(self, srtp_profiles: list[Any]) -> SSL.Context:
        profiles = tuple(profile.openssl_profile for profile in srtp_profiles)
        context = self._contexts.get(profiles)
        if context is None:
            context = super()._create_ssl_context(srtp_profiles)
            self._contexts[profiles] = context
        return context


#: a shared certificate is replaced once less than this is left of its validity
CERTIFICATE_RENEW_BEFORE = datetime.timedelta(days=1)
_shared_certificate: ReusableCertificate | None = None


def shared_certificate() -> ReusableCertificate:
    """The process's DTLS certificate (ECDSA P-256, aiortc's 30-day self-signed one).

    Generated on first use and renewed a day before it expires. WebRTC lets an
    application reuse a certificate across connections (W3C
    ``RTCConfiguration.certificates``); the DTLS fingerprint in each answer is
    then the same, which links this process's connections to one another, as
    one client's connections already are by the signaling. The key never
    leaves the process.
    """
    global _shared_certificate
    now = datetime.datetime.now(tz=datetime.UTC)
    if _shared_certificate is None or _shared_certificate.expires - now < CERTIFICATE_RENEW_BEFORE:
        certificate = ReusableCertificate.generateCertificate()
        assert isinstance(certificate, ReusableCertificate)  # a classmethod: cls(...)
        _shared_certificate = certificate
    return _shared_certificate


_RTP_FIXED_HEADER = struct.Struct("!BBHLL")


def parse_rtp(data: bytes, extensions_map: HeaderExtensionsMap) -> RtpPacket:
    """aiortc's ``RtpPacket.parse(data, extensions_map)``: the same packet, the same
    exception for the same malformed input, in ~30 % less time (measured 2.2 µs instead
    of 3.1 µs for a video packet with transport-cc and MID; it runs per received packet).

    One-byte header extensions (0xBEDE, what Sora and browsers send) are read here,
    straight into the packet's ``HeaderExtensions``, with the ids the map keeps
    privately (``HeaderExtensionsMap.__ids``, a ``HeaderExtensions`` of ids); aiortc
    builds a list of (id, value) pairs and a second ``HeaderExtensions`` per packet.
    Any other profile goes through ``extensions_map.get`` as in aiortc.
    """
    size = len(data)
    if size < RTP_HEADER_LENGTH:
        raise ValueError(f"RTP packet length is less than {RTP_HEADER_LENGTH} bytes")
    v_p_x_cc, m_pt, sequence_number, timestamp, ssrc = _RTP_FIXED_HEADER.unpack_from(data)
    if v_p_x_cc >> 6 != 2:
        raise ValueError("RTP packet has invalid version")
    cc = v_p_x_cc & 0x0F
    if size < RTP_HEADER_LENGTH + 4 * cc:
        raise ValueError("RTP packet has truncated CSRC")
    packet = RtpPacket(
        payload_type=m_pt & 0x7F,
        marker=m_pt >> 7,
        sequence_number=sequence_number,
        timestamp=timestamp,
        ssrc=ssrc,
    )
    pos = RTP_HEADER_LENGTH
    if cc:
        packet.csrc.extend(struct.unpack_from(f"!{cc}L", data, pos))
        pos += 4 * cc
    if v_p_x_cc & 0x10:
        if size < pos + 4:
            raise ValueError("RTP packet has truncated extension profile / length")
        profile, length = struct.unpack_from("!HH", data, pos)
        length *= 4
        pos += 4
        if size < pos + length:
            raise ValueError("RTP packet has truncated extension value")
        if profile == 0xBEDE:
            _one_byte_extensions(data, pos, pos + length, extensions_map, packet.extensions)
        else:
            packet.extensions = extensions_map.get(profile, data[pos : pos + length])
        pos += length
    if v_p_x_cc & 0x20:
        padding = data[-1]
        if not padding or padding > size - pos:
            raise ValueError("RTP packet padding length is invalid")
        packet.padding_size = padding
        packet.payload = data[pos:-padding]
    else:
        packet.payload = data[pos:]
    return packet


def _one_byte_extensions(
    data: bytes, start: int, end: int, extensions_map: HeaderExtensionsMap, out: HeaderExtensions
) -> None:
    """aiortc's ``unpack_header_extensions`` (0xBEDE) and ``HeaderExtensionsMap.get`` in
    one pass, without the list of (id, value) pairs."""
    ids = extensions_map._HeaderExtensionsMap__ids  # type: ignore[attr-defined]
    pos = start
    try:
        while pos < end:
            byte = data[pos]
            if byte == 0:  # padding
                pos += 1
                continue
            x_id = byte >> 4
            length = (byte & 0x0F) + 1
            pos += 1
            if end < pos + length:
                raise ValueError("RTP one-byte header extension value is truncated")
            # The same order of tests as aiortc (an id configured twice takes the first).
            if x_id == ids.mid:
                out.mid = data[pos : pos + length].decode("utf8")
            elif x_id == ids.repaired_rtp_stream_id:
                out.repaired_rtp_stream_id = data[pos : pos + length].decode("ascii")
            elif x_id == ids.rtp_stream_id:
                out.rtp_stream_id = data[pos : pos + length].decode("ascii")
            elif x_id == ids.abs_send_time:
                out.abs_send_time = struct.unpack("!L", b"\x00" + data[pos : pos + length])[0]
            elif x_id == ids.transmission_offset:
                value = data[pos : pos + length] + b"\x00"
                out.transmission_offset = struct.unpack("!l", value)[0] >> 8
            elif x_id == ids.audio_level:
                vad_level = struct.unpack("!B", data[pos : pos + length])[0]
                out.audio_level = (vad_level & 0x80 == 0x80, vad_level & 0x7F)
            elif x_id == ids.transport_sequence_number:
                value = data[pos : pos + length]
                out.transport_sequence_number = struct.unpack("!H", value)[0]
            pos += length
    except (UnicodeDecodeError, struct.error):
        # A value aiortc cannot decode either. aiortc checks every element's length
        # before it decodes any: let it raise what it raises.
        extensions_map.get(0xBEDE, data[start:end])
        raise


def _run_until_it_waits(coro: Coroutine[Any, Any, None], what: str) -> tuple[bool, Any]:
    """Run a packet handler's coroutine on the caller's stack until it first waits:
    ``(True, None)`` when it finished (or failed, logged), else ``(False, what it
    waits on)`` for :func:`_resume` to take over."""
    try:
        return False, coro.send(None)
    except StopIteration:
        return True, None
    except Exception:
        logger.exception("handling %s failed", what)
        return True, None


class RawDtlsTransport(RTCDtlsTransport):
    """A DTLS transport that hands decrypted RTP/RTCP to callbacks, unparsed.

    ``rtp_handler(data, arrival_ms)`` and ``rtcp_handler(data)`` are awaited
    inline by aiortc's receive loop: they must be quick (parse, route, queue).
    """

    rtp_handler: RtpHandler | None = None
    rtcp_handler: RtcpHandler | None = None
    #: SRTP datagrams that came while a handler run by :meth:`receive_srtp` waited.
    _backlog: collections.deque[tuple[bytes, int]] | None = None
    _backlog_task: asyncio.Future[None] | None = None

    def receive_srtp(self, data: bytes) -> bool:
        """Unprotect one SRTP/SRTCP datagram and run its handler now, on the caller's
        stack (``datagram_received``), instead of through aioice's queue and aiortc's
        receive task: one task wake-up less per packet. False (nothing done) before
        SRTP is set up; then the datagram takes aiortc's path.

        Handlers rarely wait (they route and queue); when one does, it finishes in a
        task and later datagrams queue behind it, so the order is kept.
        """
        srtp = self._rx_srtp
        if srtp is None or self._state != DtlsState.CONNECTED:
            return False
        self._RTCDtlsTransport__rx_bytes += len(data)  # type: ignore[attr-defined]
        self._RTCDtlsTransport__rx_packets += 1  # type: ignore[attr-defined]
        # aiortc's clock.current_ms() (ms since the NTP epoch) without its two
        # datetime objects and a timedelta per packet (~0.9 µs -> ~0.15 µs)
        arrival_ms = time.time_ns() // 1_000_000 + _NTP_EPOCH_OFFSET_MS
        if self._backlog is not None:
            self._backlog.append((data, arrival_ms))
            return True
        coro = self._unprotected(data, arrival_ms)
        if coro is None:
            return True
        finished, waiting_on = _run_until_it_waits(coro, "an SRTP packet")
        if finished:
            return True
        self._backlog = collections.deque()
        self._backlog_task = asyncio.ensure_future(self._finish(coro, waiting_on))
        return True

    def _unprotected(self, data: bytes, arrival_ms: int) -> Coroutine[Any, Any, None] | None:
        # The handlers' own coroutines, not _handle_rtp_data's around them: one
        # coroutine object and frame less per packet (both just await the handler).
        try:
            if is_rtcp(data):
                handler = self.rtcp_handler
                plain = self._rx_srtp.unprotect_rtcp(data)
                return None if handler is None else handler(plain)
            rtp_handler = self.rtp_handler
            plain = self._rx_srtp.unprotect(data)
            return None if rtp_handler is None else rtp_handler(plain, arrival_ms)
        except pylibsrtp.Error as exc:
            logger.debug("SRTP unprotect failed: %s", exc)
            return None

    async def _finish(self, coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        try:
            try:
                await _resume(coro, waiting_on)
            except Exception:
                logger.exception("handling an SRTP packet failed")
            backlog = self._backlog
            while backlog:
                data, arrival_ms = backlog.popleft()
                handler = self._unprotected(data, arrival_ms)
                if handler is not None:
                    try:
                        await handler
                    except Exception:
                        logger.exception("handling an SRTP packet failed")
        finally:
            self._backlog = None
            self._backlog_task = None

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

    def send_rtp_now(self, data: bytes) -> bool | None:
        """:meth:`send_rtp` without a coroutine: protect and hand the datagram to the
        selected pair's socket (or TURN) transport at once, as aiortc's ``_send_rtp``
        and aioice's ``Connection.send``/``StunProtocol.send_data`` do, minus five
        coroutine layers per packet. False when not connected; None when this path
        does not apply (no selected pair yet, a protocol of another kind): then
        :meth:`send_rtp` must be used."""
        srtp = self._tx_srtp
        if srtp is None or self._state != DtlsState.CONNECTED:
            return False
        sink = self._datagram_sink()
        if sink is None:
            return None
        self._send_datagram(sink, srtp.protect_rtcp(data) if is_rtcp(data) else srtp.protect(data))
        return True

    def _send_datagram(self, sink: tuple[asyncio.DatagramTransport, Any], data: bytes) -> None:
        """``sendto`` on the selected pair's socket, counted as aiortc counts."""
        sink[0].sendto(data, sink[1])
        self._RTCDtlsTransport__tx_bytes += len(data)  # type: ignore[attr-defined]
        self._RTCDtlsTransport__tx_packets += 1  # type: ignore[attr-defined]

    def _count_received(self, size: int) -> None:
        self._RTCDtlsTransport__rx_bytes += size  # type: ignore[attr-defined]
        self._RTCDtlsTransport__rx_packets += 1  # type: ignore[attr-defined]

    # --- DTLS application data (SCTP) -------------------------------------
    #
    # aiortc moves every SCTP packet through five coroutine layers on the way out
    # (``_send_chunk`` -> ``_send_data`` -> ``_write_ssl`` -> aioice ``Connection.send``
    # -> ``sendto`` -> ``StunProtocol.send_data``) and, on the way in, through
    # aioice's STUN parse attempt (a ValueError per datagram), its ``asyncio.Queue``
    # and a wake-up of aiortc's receive task. A 64 KiB DataChannel message is 56
    # packets at each of sender, dev server and receiver, so this per-packet cost
    # was most of the message's latency. The methods below are the same steps
    # without those layers; every case they do not cover takes aiortc's path.

    def _datagram_sink(self) -> tuple[asyncio.DatagramTransport, Any] | None:
        """The selected pair's UDP transport and remote address, when sending there
        directly is what aioice's ``Connection.send`` would do (a plain
        ``StunProtocol``, not a TURN relay)."""
        connection = self._ice_connection  # per packet: aiortc's property once only
        if connection is None:
            connection = self._ice_connection = getattr(self.transport, "_connection", None)
            if connection is None:
                return None
        pair = connection._nominated.get(1) or _writable_pair(connection, 1)
        if pair is None:
            return None
        if pair is not self._sink_pair:
            self._sink_pair, self._sink = pair, self._sink_of(pair)
        return self._sink

    #: aioice's ``Connection`` of the ICE transport (fixed for its lifetime).
    _ice_connection: Any = None
    #: The pair :attr:`_sink` was found for.
    _sink_pair: Any = None
    _sink: tuple[asyncio.DatagramTransport, Any] | None = None

    @staticmethod
    def _sink_of(pair: Any) -> tuple[asyncio.DatagramTransport, Any] | None:
        protocol = pair.protocol
        if type(protocol).send_data is not aioice.ice.StunProtocol.send_data:
            return None
        transport = protocol.transport
        if transport is None:
            return None
        return transport, pair.remote_addr

    def send_data_now(self, data: bytes) -> bool:
        """Encrypt one SCTP packet into a DTLS record and hand it to the socket now,
        as ``_send_data`` does. False (nothing done) where only ``_send_data`` can
        send it: not connected (it raises ``ConnectionError`` then), no selected pair
        yet, or a TURN-relayed pair."""
        if self._state != DtlsState.CONNECTED:
            return False
        sink = self._datagram_sink()
        records = self._records_of
        if records is None or records.connection is not self._ssl:
            records = self._records()
        if sink is None or records is None:
            return False
        record = records.encrypt(data)
        if record:  # _send_datagram, inline (per packet)
            sink[0].sendto(record, sink[1])
            self._RTCDtlsTransport__tx_bytes += len(record)  # type: ignore[attr-defined]
            self._RTCDtlsTransport__tx_packets += 1  # type: ignore[attr-defined]
        return True

    def _records(self) -> _Records | None:
        """:class:`_Records` of the current OpenSSL connection (None before start)."""
        connection = self._ssl
        records = self._records_of
        if records is None or records.connection is not connection:
            if connection is None:
                return None
            records = self._records_of = _Records(connection)
        return records

    _records_of: _Records | None = None

    def _flush_ssl(self, sink: tuple[asyncio.DatagramTransport, Any]) -> None:
        """``_write_ssl`` on a known sink, without a coroutine."""
        records = self._records()
        if records is None or not records.output_pending():
            return
        record = records.output()
        if record:
            self._send_datagram(sink, record)

    async def _write_ssl(self) -> None:
        # aiortc's, minus aioice's two coroutine layers where they only call sendto
        sink = self._datagram_sink()
        if sink is not None:
            self._flush_ssl(sink)
        else:
            await super()._write_ssl()

    def receive_dtls(self, data: bytes) -> bool:
        """Decrypt one DTLS application-data datagram and hand the SCTP packet to the
        SCTP transport now, on the caller's stack (``datagram_received``), as aiortc's
        receive task would. False (nothing done) where that task must take it: before
        the handshake completed, while datagrams wait in aioice's queue or the task is
        still handling one (the order is kept), or when the datagram is not exactly
        one record (an alert may follow the data).

        The SCTP handler rarely waits (only to send through a TURN relay); when it
        does, it finishes in a task and later datagrams queue behind it.
        """
        receiver = self._data_receiver
        size = len(data)
        if (
            self._state != DtlsState.CONNECTED
            or receiver is None
            or size < 13
            or (data[11] << 8 | data[12]) + 13 != size  # the record's length
        ):
            return False
        backlog = self._data_backlog
        if backlog is not None:  # a handler run from here waits: keep the order
            self._count_received(size)
            backlog.append(data)
            return True
        if getattr(receiver, "receiving", True) or not self._ice_queue_empty():
            return False
        sink = self._datagram_sink()
        if sink is None:  # a TURN relay: its sends may wait
            return False
        self._count_received(size)
        plain = self._decrypt(data)
        records = self._records_of  # _flush_ssl's check, inline (per packet)
        if records is None or records.output_pending():
            self._flush_ssl(sink)
        if not plain:
            return True
        handle_now = getattr(receiver, "handle_packet_now", None)
        if handle_now is not None and handle_now(plain):
            return True
        coro = receiver._handle_data(plain)
        finished, waiting_on = _run_until_it_waits(coro, "an SCTP packet")
        if finished:
            return True
        self._data_backlog = collections.deque()
        self._data_backlog_task = asyncio.ensure_future(self._finish_data(coro, waiting_on))
        return True

    def _ice_queue_empty(self) -> bool:
        """Whether aioice's queue of received datagrams (what aiortc's receive task
        reads) is empty; False where there is none to look at."""
        queue = self._ice_queue
        if queue is None:
            connection = getattr(self._transport, "_connection", None)
            queue = self._ice_queue = getattr(connection, "_queue", None)
            if queue is None:
                return False
        return queue.empty()

    _ice_queue: asyncio.Queue[Any] | None = None

    #: DTLS datagrams that came while an SCTP handler run by :meth:`receive_dtls` waited.
    _data_backlog: collections.deque[bytes] | None = None
    _data_backlog_task: asyncio.Future[None] | None = None

    def _decrypt(self, data: bytes) -> bytes:
        """One DTLS record in, its plaintext out (b"" for a record DTLS discards),
        as aiortc's ``_recv_next``."""
        records = self._records()
        if records is None:
            return b""
        try:
            return records.decrypt(data)
        except SSL.ZeroReturnError:
            # close_notify: end aiortc's receive task as its own path does (recvfrom
            # raises ConnectionError on None; the task then closes the transport)
            self.transport._connection._queue.put_nowait(None)
        except SSL.Error:  # replayed, bad MAC, ...
            pass
        return b""

    async def _finish_data(self, coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        try:
            try:
                await _resume(coro, waiting_on)
            except Exception:
                logger.exception("handling an SCTP packet failed")
            backlog = self._data_backlog
            while backlog:
                plain = self._decrypt(backlog.popleft())
                await self._write_ssl()
                receiver = self._data_receiver
                if plain and receiver is not None:
                    try:
                        await receiver._handle_data(plain)
                    except Exception:
                        logger.exception("handling an SCTP packet failed")
        finally:
            self._data_backlog = None
            self._data_backlog_task = None

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


try:  # pyOpenSSL's own cffi binding of OpenSSL, through which all its methods go
    from OpenSSL.SSL import _ffi as _openssl_ffi  # type: ignore[attr-defined]
    from OpenSSL.SSL import _lib as _openssl_lib  # type: ignore[attr-defined]

    _OPENSSL: Any = _openssl_lib
    _FFI: Any = _openssl_ffi
    for _name in ("SSL_write", "SSL_read", "BIO_write", "BIO_read", "BIO_get_mem_data"):
        getattr(_OPENSSL, _name)
except (ImportError, AttributeError):  # pragma: no cover - another pyOpenSSL
    _OPENSSL = _FFI = None

#: Largest DTLS record read or written at once (aiortc's ``_recv_next`` and
#: ``_write_ssl`` read 1500 bytes; an SCTP packet's record is ~1,230).
_RECORD_SIZE = 1500


class _Records:
    """DTLS records in and out of one pyOpenSSL ``Connection`` (memory BIOs).

    pyOpenSSL wraps each OpenSSL call in ~1-2 µs of Python (argument checks, a
    fresh buffer, an error-queue check even on success, an exception when a BIO
    is empty): encrypting one SCTP packet and decrypting it took 8.3 µs through
    ``send``/``bio_read``/``bio_write``/``recv`` against 3.7 µs for the same
    OpenSSL calls made here through pyOpenSSL's own binding (measured). Only
    success is handled here; any other result is handed to pyOpenSSL's method,
    which makes the call again and raises what OpenSSL says, as before. Without
    that binding (another pyOpenSSL) every call is pyOpenSSL's.
    """

    def __init__(self, connection: SSL.Connection) -> None:
        self.connection = connection
        fast = _OPENSSL is not None and all(
            hasattr(connection, name) for name in ("_ssl", "_into_ssl", "_from_ssl")
        )
        self._ssl: Any = connection._ssl if fast else None
        self._into: Any = connection._into_ssl if fast else None
        self._from: Any = connection._from_ssl if fast else None
        # one buffer per connection: a connection is used by one event loop's thread
        self._buffer: Any = _FFI.new("char[]", _RECORD_SIZE) if fast else None

    def encrypt(self, data: bytes) -> bytes:
        """``send(data)``, then the record it made (``bio_read``), b"" if none."""
        if self._ssl is None:
            self.connection.send(data)
            return self.output()
        if _OPENSSL.SSL_write(self._ssl, data, len(data)) <= 0:
            self.connection.send(data)  # raises what OpenSSL says
        size = _OPENSSL.BIO_read(self._from, self._buffer, _RECORD_SIZE)
        record: bytes = _FFI.buffer(self._buffer, size)[:] if size > 0 else b""
        return record

    def decrypt(self, record: bytes) -> bytes:
        """``bio_write(record)``, then ``recv``: its plaintext; raises as ``recv``."""
        if self._ssl is None:
            self.connection.bio_write(record)
            return self.connection.recv(_RECORD_SIZE)
        _OPENSSL.BIO_write(self._into, record, len(record))
        size = _OPENSSL.SSL_read(self._ssl, self._buffer, _RECORD_SIZE)
        if size > 0:
            plain: bytes = _FFI.buffer(self._buffer, size)[:]
            return plain
        return self.connection.recv(_RECORD_SIZE)  # raises what OpenSSL says

    def output_pending(self) -> bool:
        """Whether OpenSSL left bytes to send. After decrypting a record there are
        almost never any, and ``bio_read`` says so by raising ``WantReadError``
        (3.4 µs per received packet, against 0.2 µs for asking the BIO)."""
        if self._from is None:
            return True
        return bool(_OPENSSL.BIO_get_mem_data(self._from, _FFI.NULL) > 0)

    def output(self) -> bytes:
        """Up to one record's worth of what OpenSSL left to send (``bio_read``)."""
        try:
            return self.connection.bio_read(_RECORD_SIZE)
        except SSL.Error:
            return b""


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], waiting_on: Any) -> Generator[Any, Any, None]:
    """Finish, in the task awaiting this, a coroutine that was started by hand
    (``coro.send(None)``) and yielded ``waiting_on`` (what a task waits for)."""
    while True:
        try:
            sent = yield waiting_on
        except BaseException as exc:
            try:
                waiting_on = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting_on = coro.send(sent)
            except StopIteration:
                return


def set_ice_controlling(ice: RTCIceTransport, controlling: bool) -> None:
    """Fix the ICE role before ``start`` (``RTCPeerConnection`` does the same)."""
    ice._connection.ice_controlling = controlling
    ice._role_set = True


#: aioice's pacing of connectivity checks (Ta, RFC 8445 §14.2), as in its ``connect``.
ICE_CHECK_PACING_S = 0.02


def connect_promptly(ice: RTCIceTransport) -> None:
    """Make ``ice.start`` return as soon as the check list completes.

    aioice's ``Connection.connect`` starts a check, then sleeps Ta (20 ms)
    before it looks again, and only after that sleep waits for the result: on
    loopback the only pair succeeds in ~1 ms, so every connection waited ~19 ms
    with ICE done before DTLS could start (measured: ICE completed 7.2 ms into
    a connect, ``RTCIceTransport`` "completed" at 26.7 ms). This replaces the
    instance's ``connect`` with :func:`_connect_promptly`, aioice 0.13's
    ``connect`` with the pause cut short by the check list's result.
    """
    connection = ice._connection
    connection.connect = types.MethodType(_connect_promptly, connection)  # type: ignore[method-assign]


async def _connect_promptly(connection: aioice.ice.Connection) -> None:
    # aioice 0.13 ``Connection.connect`` (tests/test_rtc_seam.py pins its source),
    # except the loop: the wait between two checks ends early on the result.
    if not connection._local_candidates_end:
        raise ConnectionError("Local candidates gathering was not performed")
    if connection.remote_username is None or connection.remote_password is None:
        raise ConnectionError("Remote username or password is missing")
    for remote_candidate in connection._remote_candidates:
        connection._pair_remote_candidate(remote_candidate)
    connection.sort_check_list()
    connection._unfreeze_initial()
    for early_check in connection._early_checks:
        connection.check_incoming(*early_check)
    connection._early_checks.clear()
    connection._early_checks_done = True

    state: asyncio.Queue[int] = connection._check_list_state
    result: int | None = None
    while connection._check_periodic():
        getter = asyncio.ensure_future(state.get())
        try:
            await asyncio.wait((getter,), timeout=ICE_CHECK_PACING_S)
        finally:
            # A cancelled Queue.get leaves its item queued for the get below.
            getter.cancel()
        if not getter.cancelled() and getter.done():
            result = getter.result()
            break
    if result is None:
        result = await state.get() if connection._check_list else aioice.ice.ICE_FAILED

    for check in connection._check_list:
        if check.task:
            check.task.cancel()
    if result != aioice.ice.ICE_COMPLETED:
        raise ConnectionError("ICE negotiation failed")
    connection._query_consent_task = asyncio.create_task(connection.query_consent())


def send_when_writable(ice: RTCIceTransport) -> None:
    """Let data go out on a candidate pair once its check succeeded, before the
    pair is nominated, and let :func:`writable` tell when that is.

    aioice sends and receives only with a nominated pair (``Connection.sendto``
    and ``recvfrom`` read ``_nominated``) and ``RTCIceTransport.start`` returns
    only once a pair is nominated, so DTLS waited for the nomination. libwebrtc
    starts DTLS when its transport becomes writable (a check succeeded) and
    nominates alongside. Against an ICE-lite remote (Sora's kind of server)
    aioice nominates regularly (RFC 8445 §8.1.1: a second check with
    USE-CANDIDATE once the first succeeded, and only then is the pair
    "succeeded"): a whole round trip more before the handshake could start. As
    the controlled side the wait is for the remote's nominating check. Until a
    pair is nominated, data goes on the first pair whose check succeeded; then on
    the nominated one, as aioice does.

    Replaces the instance's ``check_start`` (a copy of aioice 0.13's that notes
    the pair at its check's success; the seam test pins aioice's source),
    ``sendto`` and ``recvfrom``; :func:`release_ice` undoes them.
    """
    connection = ice._connection
    connection.check_start = types.MethodType(_check_start_noting_writable, connection)  # type: ignore[method-assign]
    connection.sendto = types.MethodType(_sendto_writable, connection)  # type: ignore[method-assign]
    connection.recvfrom = types.MethodType(_recvfrom_writable, connection)  # type: ignore[method-assign]


def writable(ice: RTCIceTransport) -> asyncio.Future[None]:
    """A future done once a candidate pair of ``ice`` passed its connectivity check
    (needs :func:`send_when_writable`)."""
    connection = ice._connection
    future: asyncio.Future[None] | None = connection.__dict__.get("_sora_writable")
    if future is None:
        future = asyncio.get_running_loop().create_future()
        connection.__dict__["_sora_writable"] = future
        if _writable_pair(connection, 1) is not None:
            future.set_result(None)
    return future


def _writable_pair(connection: aioice.ice.Connection, component: int) -> Any:
    pair = connection._nominated.get(component)
    if pair is None:
        return connection.__dict__.get("_sora_valid", {}).get(component)
    return pair


def _note_writable(connection: aioice.ice.Connection, pair: aioice.ice.CandidatePair) -> None:
    connection.__dict__.setdefault("_sora_valid", {}).setdefault(pair.component, pair)
    future = connection.__dict__.get("_sora_writable")
    if future is not None and not future.done():
        future.set_result(None)


async def _check_start_noting_writable(
    connection: aioice.ice.Connection, pair: aioice.ice.CandidatePair
) -> None:
    # aioice 0.13 ``Connection.check_start`` (tests/test_rtc_seam.py pins its source),
    # plus _note_writable once the check succeeded, before a regular nomination.
    State = aioice.ice.CandidatePair.State
    log_info = connection._Connection__log_info  # type: ignore[attr-defined]
    assert connection.remote_password is not None
    connection.check_state(pair, State.IN_PROGRESS)
    nominate = connection.ice_controlling and not connection.remote_is_lite
    request = connection.build_request(pair, nominate=nominate)
    try:
        _response, addr = await pair.protocol.request(
            request, pair.remote_addr, integrity_key=connection.remote_password.encode("utf8")
        )
    except aioice.stun.TransactionError as exc:
        if exc.response and exc.response.error_code == 487:
            if "ICE-CONTROLLING" in request.attributes:
                connection.switch_role(ice_controlling=False)
            elif "ICE-CONTROLLED" in request.attributes:
                connection.switch_role(ice_controlling=True)
            return await connection.check_start(pair)
        connection.check_state(pair, State.FAILED)
        connection.check_complete(pair)
        return
    if addr != pair.remote_addr:
        log_info("Check %s failed : source address mismatch", pair)
        connection.check_state(pair, State.FAILED)
        connection.check_complete(pair)
        return
    _note_writable(connection, pair)
    if nominate or pair.remote_nominated:
        pair.nominated = True
    elif connection.ice_controlling and pair.component not in connection._nominating:
        log_info("Check %s nominating pair", pair)
        connection._nominating.add(pair.component)
        request = connection.build_request(pair, nominate=True)
        try:
            await pair.protocol.request(
                request, pair.remote_addr, integrity_key=connection.remote_password.encode("utf8")
            )
        except aioice.stun.TransactionError:
            log_info("Check %s failed : could not nominate pair", pair)
            valid = connection.__dict__.get("_sora_valid", {})
            if valid.get(pair.component) is pair:
                del valid[pair.component]
            connection.check_state(pair, State.FAILED)
            connection.check_complete(pair)
            return
        pair.nominated = True
    connection.check_state(pair, State.SUCCEEDED)
    connection.check_complete(pair)


async def _recvfrom_writable(connection: aioice.ice.Connection) -> tuple[bytes, int]:
    # aioice 0.13 ``Connection.recvfrom``, from a valid pair before the nomination
    if not connection._nominated and _writable_pair(connection, 1) is None:
        raise ConnectionError("Cannot receive data, not connected")
    result = await connection._queue.get()
    if result is None:
        raise ConnectionError("Connection lost while receiving data")
    return result


async def _sendto_writable(connection: aioice.ice.Connection, data: bytes, component: int) -> None:
    # aioice 0.13 ``Connection.sendto``, on a valid pair before the nomination
    pair = _writable_pair(connection, component)
    if pair is None:
        raise ConnectionError("Cannot send data, not connected")
    await pair.protocol.send_data(data, pair.remote_addr)


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


#: How long the host's interface addresses are reused by :func:`host_addresses`.
HOST_ADDRESSES_TTL_S = 5.0
_host_addresses: dict[tuple[bool, bool], tuple[float, list[str]]] = {}


def host_addresses(*, use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """aioice's ``get_host_addresses``, reused for :data:`HOST_ADDRESSES_TTL_S`.

    Enumerating the interfaces (``ifaddr``) costs ~0.5 ms of the event loop per
    connection (measured), on the path from the offer to the answer; a process
    opening many connections at once paid it for each. libwebrtc's network
    manager likewise enumerates once and watches for changes; here a change is
    seen within the TTL.
    """
    key = (use_ipv4, use_ipv6)
    now = time.monotonic()
    cached = _host_addresses.get(key)
    if cached is not None and now - cached[0] < HOST_ADDRESSES_TTL_S:
        return list(cached[1])
    addresses = aioice.ice.get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    _host_addresses[key] = (now, list(addresses))
    return addresses


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
        hosts = host_addresses(use_ipv4=connection._use_ipv4, use_ipv6=connection._use_ipv6)
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


def watch_ice_activity(
    ice: RTCIceTransport,
    on_datagram: Callable[[bytes], bool],
    dtls: RawDtlsTransport | None = None,
) -> list[Any]:
    """Call ``on_datagram(data)`` for every datagram the gathered sockets receive;
    the datagram is dropped when it returns False. Returns the protocols it
    hooked, for :func:`release_ice`.

    With ``dtls``, SRTP/SRTCP datagrams then go straight to
    :meth:`RawDtlsTransport.receive_srtp` and DTLS application data (SCTP) to
    :meth:`RawDtlsTransport.receive_dtls` (STUN, the handshake and what those two
    decline take aioice's and aiortc's path as before).

    Call after gathering (the sockets exist then). aioice's protocols are
    asyncio datagram protocols, whose ``datagram_received`` the event loop
    looks up on the instance; TURN-relayed data goes through the same method.
    """
    protocols = list(ice._connection._protocols)
    for protocol in protocols:
        original = protocol.datagram_received

        def taken(data: bytes | str, addr: tuple[Any, ...], _original: Any = original) -> int:
            """Handle one datagram: :data:`_TAKEN_SRTP` or :data:`_TAKEN_DTLS` when a
            fast path took it, else 0 (aioice's path had it)."""
            # asyncio and aioice's TURN hand over bytes: no isinstance check on a union
            # (the slow part of this wrapper) for them
            if type(data) is bytes:
                raw = data
            else:
                raw = bytes(data) if isinstance(data, bytes | bytearray) else b""
            if on_datagram(raw):
                # RFC 7983: 128-191 is RTP/RTCP; 23 a DTLS application-data record (SCTP)
                if dtls is not None and raw:
                    first = raw[0]
                    if 127 < first < 192:
                        if dtls.receive_srtp(raw):
                            return _TAKEN_SRTP
                    elif first == 23 and dtls.receive_dtls(raw):
                        return _TAKEN_DTLS
                _original(data, addr)
            return 0

        def datagram_received(
            data: bytes | str,
            addr: tuple[Any, ...],
            _taken: Any = taken,
            _protocol: Any = protocol,
        ) -> None:
            # Draining starts at SCTP (DataChannel bursts, the SACKs they draw);
            # media alone keeps asyncio's one datagram per pass.
            if _taken(data, addr) == _TAKEN_DTLS:
                _drain(_protocol, _taken)

        protocol.datagram_received = datagram_received  # type: ignore[method-assign]
    return protocols


def release_ice(ice: RTCIceTransport, watched: Sequence[Any] = ()) -> None:
    """After ``ice.stop()``: undo :func:`connect_promptly`, :func:`send_when_writable`
    and :func:`watch_ice_activity` (``watched``: what it returned) and drop the
    check list, so that a closed connection is freed by reference counting.

    Each of those is a reference cycle: the ``connect`` bound to its own
    connection, a protocol's ``datagram_received`` wrapper calling the
    protocol's own method, and aioice's check list (pair -> protocol ->
    ``receiver`` -> connection), which ``Connection.close`` keeps. Through them
    every object of a closed connection (hundreds) waited for the cyclic garbage
    collector, whose young-generation passes then ran ~0.3 ms each during the
    next connection's set-up (measured with the ``connect`` benchmark).
    """
    connection = ice._connection
    for name in ("connect", "check_start", "sendto", "recvfrom", "_sora_writable", "_sora_valid"):
        connection.__dict__.pop(name, None)
    for protocol in watched:
        protocol.__dict__.pop("datagram_received", None)
    connection._check_list.clear()
    connection._early_checks.clear()


#: Datagrams read at most per wake-up of a socket (see :func:`_drain`).
DRAIN_DATAGRAMS = 16

_TAKEN_SRTP = 1
_TAKEN_DTLS = 2


def _drain(protocol: Any, taken: Callable[[bytes, Any], int]) -> None:
    """Read the datagrams already queued on ``protocol``'s socket, up to
    :data:`DRAIN_DATAGRAMS`, once one was taken by a fast path.

    asyncio's datagram transport reads one datagram per readiness event, so each
    datagram of a burst (a 64 KiB DataChannel message is 57 packets, and their
    SACKs) cost one pass of the event loop: ``epoll_wait``, the selector's and
    ``_run_once``'s bookkeeping and a callback handle. Reading on while the socket
    has more does what asyncio's next passes would, in the same order, without
    them. It stops at the first datagram no fast path takes (aioice and aiortc
    then read on from their queue, in order) and when the transport closes. Only
    asyncio's selector transport is drained (its ``_sock`` and ``max_size``, as
    its ``_read_ready`` uses them); any other transport is left to its loop.
    """
    transport = getattr(protocol, "transport", None)
    sock = getattr(transport, "_sock", None)
    if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_DGRAM:
        return
    assert transport is not None
    size = getattr(transport, "max_size", 256 * 1024)
    for _ in range(DRAIN_DATAGRAMS):
        if transport.is_closing() or protocol.transport is not transport:
            return
        try:
            data, addr = sock.recvfrom(size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # as asyncio's _read_ready
            protocol.error_received(exc)
            return
        if not taken(data, addr):
            return


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


#: ``a_rwnd`` (bytes) this end advertises in its SCTP INIT/INIT-ACK (aiortc: 1 MiB).
#: aiortc's receiver never lowers its window for the datagrams still waiting in the
#: kernel (it only counts fragments held for reassembly), and its sender takes the
#: peer's ``a_rwnd`` as the initial ``ssthresh``: against a Python receiver (the
#: dev server relaying) slow start then grew ``cwnd`` to ~1 MB, more than the
#: socket's receive buffer holds, and ~7 % of a 64 KiB burst was lost and
#: retransmitted (measured; fast retransmits, halved ``cwnd``, SACKs with gap
#: blocks whose processing is O(outstanding) per SACK in aiortc). 256 KiB (~225
#: full packets) keeps a burst inside a 1 MiB receive buffer
#: (:data:`RECEIVE_BUFFER`), still holds one message of the largest size Sora
#: allows, and is more than the bandwidth-delay product this pure-Python stack
#: sustains (~10 MB/s x 20 ms).
SCTP_RECEIVE_WINDOW = 256 * 1024

#: Initial congestion window in full DATA packets (aiortc: 3; RFC 9260 §7.2.1:
#: ~4380 bytes). libwebrtc's dcsctp starts at 10 MTUs (as TCP's IW10, RFC 6928),
#: so the first 64 KiB message of an association is not spread over 5 round trips.
SCTP_INITIAL_CWND_PACKETS = 10

#: Acknowledge every this many packets with DATA (RFC 9260 §6.2: "at least every
#: second packet"; libwebrtc's dcsctp does the same). aiortc sends one SACK per
#: packet, doubling the datagrams (and the SACK handling of the sender) of a burst.
SCTP_SACK_EVERY_PACKETS = 2

#: Seconds a lone packet's SACK may wait for a second packet (RFC 9260 §6.2:
#: at most 200 ms; dcsctp: min(RTO/2, 200 ms)). Short, as nothing but the tail
#: of a burst or a single-packet message waits on it; aiortc's RTO is >= 1 s.
SCTP_SACK_DELAY = 0.02

#: Max.Burst in calls of aiortc's ``_transmit`` (4 packets each): up to 64 new
#: packets per SACK or per message queued, within cwnd, so that a 64 KiB message
#: (55 packets) leaves at once when cwnd allows, instead of 16 packets and then 2
#: per SACK. With 16 packets the dev server relaying a message interleaved its
#: sends with the handling of the receiver's SACKs, and the sender's emission
#: waited on the dev server's event loop: 64 KiB paced messages through the dev
#: server, 3 processes on 2 shared cores (bench timeline, medians of 30, two
#: interleaved rounds): sender first -> last packet 2.35/2.52 -> 0.95/1.13 ms,
#: first packet sent -> receiver's last 8.1/8.9 -> 5.6/8.0 ms; no retransmission
#: in 150-message runs. cwnd (initially :data:`SCTP_INITIAL_CWND_PACKETS`) and the
#: peer's window still bound what is in flight; RFC 9260 §6.1 D's Max.Burst (4)
#: is a SHOULD meant for paths a burst could overrun; TCP (RFC 5681) has none.
SCTP_MAX_BURST_CALLS = 16
_MAX_BURST_BYTES = SCTP_MAX_BURST_CALLS * 4 * USERDATA_MAX_LENGTH


#: An SCTP common header followed by a DATA chunk header (RFC 9260 §3.1, §3.3.1).
#: The checksum (bytes 8-12, little-endian) is read apart.
_DATA_PACKET_HEADER = struct.Struct("!HHL4xBBHLHHL")

#: An SCTP common header (checksum zero) followed by a SACK chunk without gap
#: blocks or duplicate TSNs (RFC 9260 §3.3.4): all a loss-free association sends.
_SACK_PACKET = struct.Struct("!HHL4xBBHLLHH")
_SACK_CHUNK_LENGTH = 16


#: Zero bytes to pad a chunk to a multiple of 4 (RFC 9260 §3.2): ``_PADDING[:n]``.
_PADDING = bytes(3)


def _data_packet(source_port: int, destination_port: int, tag: int, chunk: DataChunk) -> bytes:
    """``serialize_packet`` of a DATA chunk, the same bytes: one ``pack`` of both
    headers instead of two, and no ``DataChunk.__bytes__`` (per packet sent)."""
    user_data = chunk.user_data
    length = SCTP_DATA_CHUNK_HEADER_LENGTH + len(user_data)
    packet = (
        _DATA_PACKET_HEADER.pack(
            source_port,
            destination_port,
            tag,
            DataChunk.type,
            chunk.flags,
            length,
            chunk.tsn,
            chunk.stream_id,
            chunk.stream_seq,
            chunk.protocol,
        )
        + user_data
        + _PADDING[: -length % 4]
    )
    return _with_checksum(packet)


def _checksum(zeroed: bytes) -> bytes:
    """RFC 9260 §6.8: the CRC32c of a packet whose checksum field (bytes 8-12) is
    zero, as it goes there: little-endian (aiortc's ``serialize_packet``)."""
    checksum: bytes = crc32c(zeroed).to_bytes(4, "little")
    return checksum


def _with_checksum(zeroed: bytes) -> bytes:
    """``zeroed`` (a packet with a zero checksum field) with its checksum in place."""
    return zeroed[:8] + _checksum(zeroed) + zeroed[12:]


def _checksum_ok(packet: bytes) -> bool:
    """Whether ``packet``'s checksum field holds its checksum (as aiortc's
    ``parse_packet`` checks it)."""
    return packet[8:12] == _checksum(packet[:8] + b"\x00\x00\x00\x00" + packet[12:])


class _InboundStream(InboundStream):
    """aiortc's reassembly, but ``pop_messages`` returns at once while no last
    fragment is held: no message can be complete then. aiortc rescans the whole
    reassembly list after every DATA chunk, O(n²) in the fragments of a message
    (1 600 steps for one 64 KiB message, ~10 % of a receiver's CPU, measured)."""

    last_fragments = 0

    def add_chunk(self, chunk: DataChunk) -> None:
        super().add_chunk(chunk)
        if chunk.flags & SCTP_DATA_LAST_FRAG:
            self.last_fragments += 1

    def pop_messages(self) -> Iterator[tuple[int, int, bytes]]:
        if not self.last_fragments:
            return iter(())
        return self._pop_messages()

    def _pop_messages(self) -> Iterator[tuple[int, int, bytes]]:
        try:
            yield from super().pop_messages()
        finally:
            self._recount()

    def prune_chunks(self, tsn: int) -> int:
        size = super().prune_chunks(tsn)
        self._recount()
        return size

    def _recount(self) -> None:
        self.last_fragments = sum(1 for c in self.reassembly if c.flags & SCTP_DATA_LAST_FRAG)


class TunedSctpTransport(RTCSctpTransport):
    """aiortc's SCTP transport with the window and SACK behaviour above.

    Delayed SACK (RFC 9260 §6.2): a SACK goes out after every
    :data:`SCTP_SACK_EVERY_PACKETS` packets with DATA, at once while the receive
    side has gaps or duplicates and when a gap was just filled (RFC 9260 §6.7),
    and otherwise :data:`SCTP_SACK_DELAY` after a lone packet. (A SACK at the
    end of each receive batch instead was tried: a receiver that keeps up sees
    one packet per batch, so it still acknowledged every packet.) Sending:
    Max.Burst of :data:`SCTP_MAX_BURST_CALLS` x 4 packets. Reliability, ordering and message
    boundaries are aiortc's, unchanged.

    The per-packet steps of the common case (a DATA chunk alone in a packet
    received in order, new data sent, no retransmission pending) are done here
    without aiortc's generic ones; every other case is aiortc's. With
    :class:`RawDtlsTransport`'s record paths this took the instructions of a
    64 KiB message through sender, dev server and receiver from 45 M to 27 M
    (callgrind, one process, 30-message burst); SACKs without gap blocks or
    duplicates received and sent without aiortc's ``SackChunk`` parse, dispatch
    and serialization, 28.5 M -> 26.5 M (and 26.1 M with Max.Burst 64 packets).
    In-order DATA and plain SACKs handled without coroutines
    (:meth:`handle_packet_now`), new DATA sent without a ``_send_chunk`` coroutine
    and queued datagrams read in one event-loop pass (:func:`_drain`): 26.0 M ->
    21.6 M in three processes (dev server 12.2 M -> 9.9 M per message relayed).
    """

    def __init__(self, transport: RTCDtlsTransport, port: int = 5000) -> None:
        super().__init__(transport, port)
        #: The DTLS transport when it can send at once (aiortc's ``transport`` is a
        #: property, and it never changes: looked up once, not per packet).
        self._raw_dtls = transport if isinstance(transport, RawDtlsTransport) else None
        self._advertised_rwnd = SCTP_RECEIVE_WINDOW
        self._cwnd = SCTP_INITIAL_CWND_PACKETS * USERDATA_MAX_LENGTH
        self._sack_packets = 0
        self._sack_timer: asyncio.TimerHandle | None = None
        #: Loop time by which the lone packet waiting for a SACK gets one.
        self._sack_due = 0.0
        self._sack_task: asyncio.Future[None] | None = None
        self._sack_reported_gaps = False
        #: SCTP packets being handled now (see RawDtlsTransport.receive_dtls).
        self.receiving = 0
        #: Flushes started by _data_channel_send that had to wait (a TURN relay).
        self._flush_tasks: set[asyncio.Future[None]] = set()
        #: Loop time T3 was last restarted for (0: the armed timer's own).
        self._t3_deadline = 0.0
        #: A sent chunk may be marked for retransmission (see _maybe_abandon).
        self._retransmit_possible = False

    async def _handle_data(self, data: bytes) -> None:
        # ``receiving``: RawDtlsTransport.receive_dtls must not overtake a packet
        # aiortc's receive task is still handling.
        self.receiving += 1
        try:
            chunk = self._lone_data_chunk(data)
            if chunk is None:
                sack = self._lone_sack_chunk(data)
                if sack is None:
                    await super()._handle_data(data)
                    return
                # a sender gets one SACK per two packets it sent: aiortc's
                # _handle_data for it, without the generic parse and dispatch
                await self._receive_sack_chunk(sack)
                if self._sack_needed:
                    await self._send_sack()
                return
            # aiortc's _handle_data for a packet of one DATA chunk (all but the last
            # fragment of a message are such packets), without its generic parse,
            # INIT search and chunk-type dispatch
            await self._receive_data_chunk(chunk)
            if self._sack_needed:
                await self._send_sack()
        finally:
            self.receiving -= 1

    def handle_packet_now(self, data: bytes) -> bool:
        """Handle the two packets of a loss-free transfer at once, on the caller's
        stack (:meth:`RawDtlsTransport.receive_dtls`), as :meth:`_handle_data` would:
        a lone DATA chunk received in order that completes no message, and a lone
        SACK without gap blocks while nothing waits to be sent. True when done; False
        (nothing changed) for any other packet, which then takes :meth:`_handle_data`.

        Per packet this is one call instead of five coroutines (``_handle_data``,
        ``_receive_data_chunk``, ``_reset_deferred_streams``, ``_send_sack``,
        ``_send_sack_now``) run through ``_run_until_it_waits``: the dev server
        handles ~86 such packets per 64 KiB message it relays (57 DATA from the
        sender, 29 SACKs from the receiver).
        """
        if self.receiving or self._reconfig_deferred is not None or len(data) <= 12:
            return False
        if data[12] == SackChunk.type:
            return self._sack_now(data)
        if data[12] == DataChunk.type:
            return self._data_now(data)
        return False

    def _data_now(self, data: bytes) -> bool:
        # aiortc's _receive_data_chunk for the next TSN in order, no gap or
        # duplicate pending, on a stream that holds no last fragment, the chunk not
        # a last fragment itself: no message can complete, so nothing is delivered
        # and only the TSN, the reassembly list, the window and the SACK move.
        last = self._last_received_tsn
        if last is None or self._sack_misordered or self._sack_duplicates:
            return False
        chunk = self._lone_data_chunk(data)
        if (
            chunk is None
            or chunk.flags & SCTP_DATA_LAST_FRAG
            or chunk.tsn != (last + 1) % SCTP_TSN_MODULO
        ):
            return False
        stream = self._inbound_streams.get(chunk.stream_id)
        if type(stream) is not _InboundStream or stream.last_fragments:
            return False
        tsn, user_data = chunk.tsn, chunk.user_data
        self._sack_needed = True
        self._last_received_tsn = tsn
        reassembly = stream.reassembly
        if reassembly and not uint32_gt(tsn, reassembly[-1].tsn):
            stream.add_chunk(chunk)  # cannot happen in order; aiortc's insert
        else:
            reassembly.append(chunk)
        self._advertised_rwnd -= len(user_data)
        # _send_sack, synchronously (no gap or duplicate to report here)
        if self._sack_due_now():
            self._sack_packets = 0
            self._sack_reported_gaps = False
            self._send_soon(self._plain_sack_packet())
            self._sack_needed = False
        else:
            self._defer_sack()
        return True

    def _sack_now(self, data: bytes) -> bool:
        # aiortc's _receive_sack_chunk for a SACK without gap blocks while nothing
        # is queued to send and no retransmission, fast recovery or FORWARD TSN is
        # pending: its _data_channel_flush and _transmit would send nothing.
        if (
            self._retransmit_possible
            or self._fast_recovery_exit is not None
            or self._forward_tsn_chunk is not None
            or self._outbound_queue
            or self._data_channel_queue
            or self._sack_needed
        ):
            return False
        sack = self._lone_sack_chunk(data)
        if sack is None:
            return False
        cumulative_tsn = sack.cumulative_tsn
        if uint32_gt(self._last_sacked_tsn, cumulative_tsn):
            return True  # an old SACK: aiortc ignores it too
        received_time = time.time()
        self._last_sacked_tsn = cumulative_tsn
        cwnd_fully_utilized = self._flight_size >= self._cwnd
        done = 0
        done_bytes = 0
        sent = self._sent_queue
        while sent and uint32_gte(cumulative_tsn, sent[0].tsn):
            schunk = sent.popleft()
            done += 1
            if not schunk._acked:
                done_bytes += schunk._book_size
            if schunk._in_flight:  # _flight_size_decrease
                schunk._in_flight = False
                self._flight_size -= schunk._book_size
            if done == 1 and schunk._sent_count == 1:
                self._update_rto(received_time - schunk._sent_time)  # type: ignore[operator]
        if done and cwnd_fully_utilized:
            if self._cwnd <= self._ssthresh:
                self._cwnd += min(done_bytes, USERDATA_MAX_LENGTH)  # slow start
            else:  # congestion avoidance
                self._partial_bytes_acked += done_bytes
                if self._partial_bytes_acked >= self._cwnd:
                    self._partial_bytes_acked -= self._cwnd
                    self._cwnd += USERDATA_MAX_LENGTH
        if not sent:
            self._t3_cancel()
        elif done:
            self._t3_restart()
        self._update_advanced_peer_ack_point()
        if self._forward_tsn_chunk is not None:  # abandoned chunks acknowledged past
            self._run_soon(self._transmit())
        return True

    def _send_soon(self, packet: bytes) -> None:
        """Send ``packet`` now (:meth:`_sent_now`), else through aiortc's
        ``_send_data`` in a task (not expected: :meth:`handle_packet_now` runs only
        where the socket is known)."""
        if not self._sent_now(packet):
            self._run_soon(self.transport._send_data(packet))

    def _run_soon(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` on the caller's stack until it waits, then in a task."""
        finished, waiting_on = _run_until_it_waits(coro, "an SCTP packet")
        if not finished:
            task = asyncio.ensure_future(self._finish_flush(coro, waiting_on))
            self._flush_tasks.add(task)
            task.add_done_callback(self._flush_tasks.discard)

    def _lone_data_chunk(self, data: bytes) -> DataChunk | None:
        """The DATA chunk of a packet that holds just one, with a valid checksum and
        our verification tag (what ``parse_packet`` and ``_handle_data`` check);
        None for any other packet."""
        if len(data) < _DATA_PACKET_HEADER.size or data[12] != DataChunk.type:
            return None
        (_, _, tag, _, flags, length, tsn, stream_id, stream_seq, protocol) = (
            _DATA_PACKET_HEADER.unpack_from(data)
        )
        end = 12 + length
        if (
            length <= SCTP_DATA_CHUNK_HEADER_LENGTH
            or tag != self._local_verification_tag
            or end + (-length % 4) != len(data)
            or not _checksum_ok(data)
        ):
            return None
        chunk = DataChunk(flags)
        chunk.tsn = tsn
        chunk.stream_id = stream_id
        chunk.stream_seq = stream_seq
        chunk.protocol = protocol
        chunk.user_data = data[_DATA_PACKET_HEADER.size : end]
        return chunk

    def _lone_sack_chunk(self, data: bytes) -> SackChunk | None:
        """The SACK chunk of a packet that holds just one, without gap blocks or
        duplicate TSNs, with a valid checksum and our verification tag; None for
        any other packet (aiortc's path parses it)."""
        if len(data) != _SACK_PACKET.size or data[12] != SackChunk.type:
            return None
        (_, _, tag, _, _flags, length, cumulative_tsn, rwnd, gaps, duplicates) = (
            _SACK_PACKET.unpack(data)
        )
        if (
            length != _SACK_CHUNK_LENGTH
            or gaps
            or duplicates
            or tag != self._local_verification_tag
            or not _checksum_ok(data)
        ):
            return None
        sack = SackChunk()
        sack.cumulative_tsn = cumulative_tsn
        sack.advertised_rwnd = rwnd
        return sack

    async def _send_chunk(self, chunk: Chunk) -> None:
        # aiortc's, minus the coroutine layers below it when the DTLS transport can
        # hand the record to the socket at once (RawDtlsTransport.send_data_now)
        packet = self._packet(serialize_packet, chunk)
        if not self._sent_now(packet):
            await self.transport._send_data(packet)

    def _packet(self, pack: Callable[[int, int, int, Any], bytes], chunk: Chunk) -> bytes:
        """``chunk`` in a packet of this association (``serialize_packet`` or, for
        DATA, :func:`_data_packet`, the same bytes)."""
        return pack(
            self._local_port,
            self._remote_port,  # type: ignore[arg-type]  # set once associated
            self._remote_verification_tag,
            chunk,
        )

    def _sent_now(self, packet: bytes) -> bool:
        """Whether ``packet`` went straight to the socket
        (:meth:`RawDtlsTransport.send_data_now`); if not, the caller awaits aiortc's
        ``_send_data`` (no coroutine of its own here: this is per packet)."""
        dtls = self._raw_dtls
        return dtls is not None and dtls.send_data_now(packet)

    def _mark_received(self, tsn: int) -> bool:
        # The in-order case without gaps or duplicates, without aiortc's sort and
        # two filters per DATA chunk (same outcome: the cumulative TSN advances).
        last = self._last_received_tsn
        if (
            last is not None
            and not self._sack_misordered
            and not self._sack_duplicates
            and tsn == (last + 1) % SCTP_TSN_MODULO
        ):
            self._last_received_tsn = tsn
            return False
        return bool(super()._mark_received(tsn))

    def _get_inbound_stream(self, stream_id: int) -> InboundStream:
        stream = self._inbound_streams.get(stream_id)
        if stream is None:
            stream = self._inbound_streams[stream_id] = _InboundStream()
        return stream

    async def _transmit(self) -> None:
        # aiortc sends at most Max.Burst = 4 new packets per call (RFC 9260 §6.1 D),
        # per SACK and per message queued: a 64 KiB message on an idle association
        # left 4 packets at a time, ack-clocked through the peer's event loop.
        # Here up to 4 * SCTP_MAX_BURST_CALLS, within cwnd.
        if (
            self._retransmit_possible
            or self._forward_tsn_chunk is not None
            or self._fast_recovery_exit is not None
        ):
            # Retransmissions, FORWARD TSN and fast recovery's one-packet rule stay
            # aiortc's: its _transmit, called again while it may send more.
            await super()._transmit()
            for _ in range(SCTP_MAX_BURST_CALLS - 1):
                if (
                    not self._outbound_queue
                    or self._flight_size >= self._cwnd
                    or self._fast_recovery_exit is not None
                ):
                    break
                await super()._transmit()
            self._retransmit_possible = any(c._retransmit for c in self._sent_queue)
            return
        # New data only: aiortc's sending loop, without its scan of the whole sent
        # queue for chunks to retransmit (per call, and there were 4 calls per SACK:
        # ~200 steps per SACK with a 64 KiB message in flight).
        cwnd = min(self._flight_size + _MAX_BURST_BYTES, self._cwnd)
        outbound, sent = self._outbound_queue, self._sent_queue
        while outbound and self._flight_size < cwnd:
            chunk = outbound.popleft()
            sent.append(chunk)
            self._flight_size_increase(chunk)
            chunk._sent_count += 1
            chunk._sent_time = time.time()
            # _send_chunk inline: one coroutine less per packet sent
            packet = self._packet(_data_packet, chunk)
            if not self._sent_now(packet):
                await self.transport._send_data(packet)
            if not self._t3_handle:
                self._t3_start()

    def _data_channel_send(self, channel: RTCDataChannel, data: bytes | str) -> None:
        # aiortc queues the message and flushes it in a task, which the loop runs
        # after every callback already queued: at the dev server a relayed 64 KiB
        # message waited 0.4-0.6 ms (median, measured) before its first packet left.
        # The flush starts here instead. aiortc 1.16's queueing is repeated here, not
        # called, because it also creates that task per message, which then found
        # nothing to do: ~4 % of a 1 KiB burst's profile for the task alone. Queued
        # messages it cannot send yet (no association, a full window) go out from
        # aiortc's own flushes on ESTABLISHED and on each SACK, as before.
        if data == "":
            pp_id, user_data = WEBRTC_STRING_EMPTY, b"\x00"
        elif isinstance(data, str):
            pp_id, user_data = WEBRTC_STRING, data.encode("utf8")
        elif data == b"":
            pp_id, user_data = WEBRTC_BINARY_EMPTY, b"\x00"
        else:
            pp_id, user_data = WEBRTC_BINARY, data
        limit = self._remote_max_message_size
        if limit and len(user_data) > limit:
            raise ValueError(
                f"Cannot send message of {len(user_data)} bytes, the remote party "
                f"only supports messages up to {limit} bytes"
            )
        channel._addBufferedAmount(len(user_data))
        self._data_channel_queue.append((channel, pp_id, user_data))
        coro = self._data_channel_flush()
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return
        except ConnectionError:  # DTLS closed meanwhile: as in aiortc's task
            return
        except Exception:
            logger.exception("sending a DataChannel message failed")
            return
        task = asyncio.ensure_future(self._finish_flush(coro, waiting_on))
        self._flush_tasks.add(task)
        task.add_done_callback(self._flush_tasks.discard)

    async def _finish_flush(self, coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        try:
            await _resume(coro, waiting_on)
        except ConnectionError:
            pass
        except Exception:
            logger.exception("sending a DataChannel message failed")

    # T3 (RFC 9260 §6.3.2): aiortc cancels and re-arms its timer on every SACK that
    # acknowledges new data (28 per 64 KiB message). Here an armed timer is kept and
    # the new deadline noted; when the timer fires before it, it is armed again then.

    def _t3_restart(self) -> None:
        deadline = asyncio.get_running_loop().time() + self._rto
        handle = self._t3_handle
        if handle is not None and handle.when() <= deadline:
            self._t3_deadline = deadline
            return
        self._t3_deadline = 0.0
        super()._t3_restart()

    def _t3_expired(self) -> None:
        deadline, self._t3_deadline = self._t3_deadline, 0.0
        loop = asyncio.get_running_loop()
        if deadline > loop.time():  # restarted since it was armed
            self._t3_handle = loop.call_at(deadline, self._t3_expired)
            return
        super()._t3_expired()

    def _t3_start(self) -> None:
        self._t3_deadline = 0.0
        super()._t3_start()

    def _t3_cancel(self) -> None:
        self._t3_deadline = 0.0
        super()._t3_cancel()

    def _maybe_abandon(self, chunk: DataChunk) -> bool:
        # aiortc asks this right before each place it marks a chunk for
        # retransmission (a third miss in a SACK, T3 expiry).
        self._retransmit_possible = True
        return bool(super()._maybe_abandon(chunk))

    async def _send_sack(self) -> None:
        # aiortc calls this at the end of each received packet that needs a SACK
        if self._sack_due_now():
            await self._send_sack_now()
            return
        self._defer_sack()

    def _sack_due_now(self) -> bool:
        """Count a received packet that needs a SACK; whether the SACK goes now
        (every second packet, and at once to report a gap or a duplicate, or that a
        reported gap is filled) rather than after :data:`SCTP_SACK_DELAY`."""
        self._sack_packets += 1
        return bool(
            self._sack_packets >= SCTP_SACK_EVERY_PACKETS
            or self._sack_misordered
            or self._sack_duplicates
            or self._sack_reported_gaps  # the gap is filled now: say so at once
        )

    def _defer_sack(self) -> None:
        loop = asyncio.get_running_loop()
        self._sack_due = loop.time() + SCTP_SACK_DELAY
        # One timer, re-armed when it fires early, instead of one armed per lone
        # packet and cancelled by the next (a timer per two packets of a burst).
        if self._sack_timer is None:
            self._sack_timer = loop.call_at(self._sack_due, self._sack_delay_expired)

    def _sack_delay_expired(self) -> None:
        self._sack_timer = None
        if not self._sack_needed or self._association_state == self.State.CLOSED:
            return
        loop = asyncio.get_running_loop()
        if self._sack_due > loop.time() + 0.001:  # armed for an earlier lone packet
            self._sack_timer = loop.call_at(self._sack_due, self._sack_delay_expired)
            return
        self._sack_task = asyncio.ensure_future(self._send_deferred_sack())

    async def _send_sack_now(self) -> None:
        self._sack_packets = 0
        self._sack_reported_gaps = bool(self._sack_misordered)
        if self._sack_misordered or self._sack_duplicates:
            await super()._send_sack()
            return
        packet = self._plain_sack_packet()
        if not self._sent_now(packet):
            await self.transport._send_data(packet)
        self._sack_needed = False

    def _plain_sack_packet(self) -> bytes:
        # aiortc's _send_sack without gap blocks or duplicates to report (every
        # SACK of a loss-free association): the packet packed at once instead of a
        # SackChunk, its __bytes__ and serialize_packet's three concatenations
        packet = _SACK_PACKET.pack(
            self._local_port,
            self._remote_port,
            self._remote_verification_tag,
            SackChunk.type,
            0,
            _SACK_CHUNK_LENGTH,
            self._last_received_tsn,
            max(0, self._advertised_rwnd),
            0,
            0,
        )
        return _with_checksum(packet)

    async def _send_deferred_sack(self) -> None:
        self._sack_task = None
        if not self._sack_needed:  # sent meanwhile (second packet, gap)
            return
        try:
            await self._send_sack_now()
        except ConnectionError:  # DTLS closed meanwhile
            pass
