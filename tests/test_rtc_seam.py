"""The seam to aiortc's internals (``sora_async._aiortc_seam``) and the transport on it.

If aiortc moves a private member the engine relies on, the first test names
it; the second runs the real thing: an offering and an answering
``BundleTransport`` on loopback exchanging raw SRTP/SRTCP and opening a
DataChannel the offerer created (as Sora does). The last ones gather relay
candidates on several TURN servers at once: a real coturn (skipped where it
is not installed) and a silent one that must not hold gathering up.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aioice
import aioice.ice
import aioice.stun
import aioice.turn
import aiortc
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.rtcdatachannel import RTCDataChannel, RTCDataChannelParameters
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsParameters, RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceParameters, RTCIceTransport
from aiortc.rtp import HeaderExtensionsMap, RtcpPsfbPacket, RtpPacket

from sora_async import _aiortc_seam as seam
from sora_async.rtc.transport import BundleTransport
from sora_async.websocket import tls_context
from tests.security_support import eventually, make_pki
from tests.turn_support import LOOPBACK, Coturn, dead_udp_and_tcp_port


def test_the_private_members_the_seam_uses_exist_in_the_pinned_aiortc() -> None:
    assert seam.aiortc_version() == seam.PINNED_AIORTC, aiortc.__version__
    for name in ("_handle_rtp_data", "_handle_rtcp_data", "_send_rtp", "_set_role"):
        assert inspect.iscoroutinefunction(getattr(RTCDtlsTransport, name)) or callable(
            getattr(RTCDtlsTransport, name)
        ), name
    dtls = RTCDtlsTransport.__init__
    source = inspect.getsource(dtls)
    for counter in ("__tx_packets", "__rx_packets", "__tx_bytes", "__rx_bytes", "_role"):
        assert f"self.{counter}" in source, counter
    gatherer = RTCIceGatherer(iceServers=[])
    ice = RTCIceTransport(gatherer)
    assert isinstance(ice._connection, aioice.Connection)
    assert hasattr(gatherer, "_RTCIceGatherer__setState")
    assert hasattr(ice, "_role_set")
    connection = ice._connection
    for name in (
        "_local_candidates",
        "_local_candidates_end",
        "_local_candidates_start",
        "_nominated",
        "_protocols",
        "_transport_policy",
        "_use_ipv4",
        "_use_ipv6",
        "ice_controlling",
    ):
        assert hasattr(connection, name), name
    assert callable(aioice.ice.StunProtocol.datagram_received)
    assert inspect.iscoroutinefunction(connection.get_component_candidates)
    # seam.gather: aioice's relay allocation, handed our SSL context for turns:
    assert aioice.ice.TransportPolicy.RELAY is not None
    assert callable(aioice.ice.get_host_addresses)
    relayed = inspect.signature(aioice.ice.relayed_candidate).parameters
    for name in ("component", "hide_related_address", "protocol_factory", "turn_server"):
        assert name in relayed, name
    for name in ("turn_username", "turn_password", "turn_ssl", "turn_transport"):
        assert name in relayed, name
    assert "ssl=turn_ssl" in inspect.getsource(aioice.ice.relayed_candidate)
    assert "ssl=ssl" in inspect.getsource(aioice.turn.create_turn_endpoint)
    # no TURN server is given to aioice itself: it would allocate on one more
    assert connection.turn_server is None
    # seam.parse_rtp: the extension ids the map keeps, one per extension it reads
    ids = HeaderExtensionsMap()._HeaderExtensionsMap__ids  # type: ignore[attr-defined]
    for name in (
        "mid",
        "repaired_rtp_stream_id",
        "rtp_stream_id",
        "abs_send_time",
        "transmission_offset",
        "audio_level",
        "transport_sequence_number",
    ):
        assert hasattr(ids, name), name


async def test_offerer_and_answerer_exchange_srtp_and_open_a_datachannel() -> None:
    states: dict[str, list[str]] = {"offerer": [], "answerer": []}
    changed = asyncio.Event()

    def recorder(name: str) -> Callable[[str], None]:
        def record(state: str) -> None:
            states[name].append(state)
            changed.set()

        return record

    offerer = BundleTransport(
        ice_addresses=["127.0.0.1"], on_state=recorder("offerer"), ice_controlling=True
    )
    answerer = BundleTransport(
        ice_addresses=["127.0.0.1"], on_state=recorder("answerer"), ice_controlling=False
    )
    received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def on_rtp(data: bytes, arrival_ms: int) -> None:
        received.put_nowait(("rtp", data))

    async def on_rtcp(data: bytes) -> None:
        received.put_nowait(("rtcp", data))

    answerer.dtls.rtp_handler = on_rtp
    answerer.dtls.rtcp_handler = on_rtcp
    channels: asyncio.Queue[RTCDataChannel] = asyncio.Queue()
    try:
        async with asyncio.timeout(20):
            await asyncio.gather(offerer.gather(), answerer.gather())
            assert [c.ip for c in answerer.local_candidates] == ["127.0.0.1"]

            def remote(t: BundleTransport) -> tuple[RTCIceParameters, RTCDtlsParameters]:
                return t.local_ice, RTCDtlsParameters(fingerprints=t.local_dtls.fingerprints)

            offerer.start(
                *remote(answerer),
                answerer.local_candidates,
                dtls_role="server",  # the answer said a=setup:active
                sctp_port=5000,
                sctp_max_message_size=262144,
                candidates_complete=True,
            )
            answerer.start(
                *remote(offerer),
                offerer.local_candidates,
                dtls_role="client",
                sctp_port=5000,
                sctp_max_message_size=262144,
                candidates_complete=True,
            )
            assert answerer.sctp is not None and offerer.sctp is not None
            answerer.sctp.on("datachannel", channels.put_nowait)
            while answerer.state != "connected" or offerer.state != "connected":
                changed.clear()
                await changed.wait()
            assert answerer.ice_role == "controlled" and offerer.ice_role == "controlling"
            assert answerer.dtls.role == "client" and offerer.dtls.role == "server"

            packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=2, ssrc=3)
            packet.payload = b"media"
            assert await offerer.send_rtp(packet.serialize())
            pli = RtcpPsfbPacket(fmt=1, ssrc=4, media_ssrc=3)
            assert await offerer.send_rtp(bytes(pli))
            kind, data = await received.get()
            assert kind == "rtp" and RtpPacket.parse(data).payload == b"media"
            kind, data = await received.get()
            assert (kind, data) == ("rtcp", bytes(pli))

            RTCDataChannel(offerer.sctp, RTCDataChannelParameters(label="signaling"))
            channel = await channels.get()
            assert channel.label == "signaling" and channel.readyState == "open"

            # Every datagram is seen first (liveness): STUN, DTLS and SRTP alike.
            assert time.monotonic() - answerer.last_activity < 1.0
            pair = answerer.selected_pair()
            assert pair is not None and pair.remote["address"] == "127.0.0.1"
            counters = answerer.counters
            assert counters["packetsReceived"] >= 2 and counters["bytesSent"] > 0
    finally:
        async with asyncio.timeout(10):
            await offerer.stop()
            await answerer.stop()
    assert states["answerer"] == ["connecting", "connected", "closed"]
    assert states["offerer"][-1] == "closed"


def local_preference(candidate: Any) -> int:
    return (int(candidate.priority) >> 8) & 0xFFFF


async def test_gather_allocates_on_every_turn_server_udp_before_tcp_before_tls(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path)
    turn = Coturn("seam", "pw", cert=pki.server_cert, key=pki.server_key).start()
    dead = dead_udp_and_tcp_port()
    servers = [
        seam.TurnServer(LOOPBACK, turn.tls_port, "tcp", True, "seam", "pw"),
        seam.TurnServer(LOOPBACK, dead, "tcp", False, "seam", "pw"),  # refused
        seam.TurnServer(LOOPBACK, turn.port, "tcp", False, "seam", "pw"),
        seam.TurnServer(LOOPBACK, turn.port, "udp", False, "seam", "wrong"),  # 401
        seam.TurnServer(LOOPBACK, turn.port, "udp", False, "seam", "pw"),
    ]
    gatherer = RTCIceGatherer(iceServers=[])
    try:
        async with asyncio.timeout(15):
            failures = await seam.gather(
                gatherer,
                addresses=[LOOPBACK],
                turn_servers=servers,
                ssl_context=tls_context(ca_cert=pki.ca_pem),
                grace=5.0,
            )
        assert gatherer.state == "completed"
        candidates = sorted(
            gatherer._connection.local_candidates, key=lambda c: c.priority, reverse=True
        )
        assert [c.type for c in candidates] == ["host", "relay", "relay", "relay"]
        relays = candidates[1:]
        # UDP relays above TCP relays above TLS relays, whatever the offer's order;
        # within a protocol, minus the server's place among that protocol's servers
        preference = seam.RELAY_LOCAL_PREFERENCE
        assert [local_preference(c) for c in relays] == [
            preference["udp"] - 1,
            preference["tcp"] - 1,
            preference["tls"],
        ]
        assert len({c.foundation for c in relays}) == 3
        for relay in relays:
            await turn.wait_for_log(f"Local relay addr: {LOOPBACK}:{relay.port}")
        assert set(failures) == {servers[1], servers[3]}
        assert isinstance(failures[servers[1]], ConnectionRefusedError)
        assert "401" in str(failures[servers[3]])
        assert "pw" not in repr(servers)
        # the relays' sockets belong to the connection, like aioice's own
        assert len(gatherer._connection._protocols) == 4
    finally:
        async with asyncio.timeout(10):
            await gatherer._connection.close()
        try:
            # closing the connection deletes the three allocations (lifetime 0)
            await eventually(lambda: turn.log().count("username=<seam>, lifetime=0") >= 3)
        finally:
            turn.stop()


async def test_gather_gives_up_a_silent_turn_server_in_bounded_time() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOOPBACK, 0))
        silent.setblocking(False)
        server = seam.TurnServer(LOOPBACK, silent.getsockname()[1], "udp", False, "u", "p")
        gatherer = RTCIceGatherer(iceServers=[], iceTransportPolicy=RTCIceTransportPolicy.RELAY)
        started = time.monotonic()
        async with asyncio.timeout(10):
            failures = await seam.gather(
                gatherer, addresses=[LOOPBACK], turn_servers=[server], allocation_timeout=1.0
            )
        elapsed = time.monotonic() - started
        request, _ = silent.recvfrom(2048)  # the Allocate request did go out
    assert 1.0 <= elapsed < 3.0, elapsed
    assert isinstance(failures[server], TimeoutError)
    assert str(failures[server]).startswith("no answer within 1.")
    assert request[:2] == b"\x00\x03"  # STUN Allocate request
    # relay policy: no host candidate either; the abandoned socket is closed
    assert gatherer._connection.local_candidates == []
    assert gatherer._connection._protocols == []
    assert gatherer.state == "completed"
    await gatherer._connection.close()


async def test_tuned_sctp_acks_every_second_packet_and_bursts_within_cwnd() -> None:
    # The members TunedSctpTransport relies on (aiortc's SCTP sender and receiver).
    from aiortc import rtcsctptransport as sctp_module

    assert "await self._send_sack()" in inspect.getsource(sctp_module.RTCSctpTransport._handle_data)
    assert "4 * USERDATA_MAX_LENGTH" in inspect.getsource(sctp_module.RTCSctpTransport._transmit), (
        "aiortc's Max.Burst moved: revisit SCTP_MAX_BURST_CALLS"
    )
    dtls = RTCDtlsTransport(
        RTCIceTransport(RTCIceGatherer(iceServers=[])), [RTCCertificate.generateCertificate()]
    )
    sctp = seam.TunedSctpTransport(dtls)
    for name in (
        "_sack_needed",
        "_sack_misordered",
        "_sack_duplicates",
        "_outbound_queue",
        "_flight_size",
        "_fast_recovery_exit",
        "_last_received_tsn",
        "_local_verification_tag",
    ):
        assert hasattr(sctp, name), name
    assert sctp._advertised_rwnd == seam.SCTP_RECEIVE_WINDOW
    assert sctp._cwnd == seam.SCTP_INITIAL_CWND_PACKETS * sctp_module.USERDATA_MAX_LENGTH

    sent: list[Any] = []

    async def capture(chunk: Any) -> None:
        sent.append(chunk)

    async def capture_packet(data: bytes) -> None:  # SACKs packed by _send_sack_now
        sent.extend(sctp_module.parse_packet(data)[3])

    sctp._send_chunk = capture  # type: ignore[method-assign]
    dtls._send_data = capture_packet  # type: ignore[method-assign]
    sctp._association_state = sctp.State.ESTABLISHED
    sctp._remote_port = 5000
    sctp._last_received_tsn = 99

    async def receive(tsn: int) -> None:
        chunk = sctp_module.DataChunk(
            flags=sctp_module.SCTP_DATA_FIRST_FRAG | sctp_module.SCTP_DATA_LAST_FRAG
        )
        chunk.tsn, chunk.stream_id, chunk.stream_seq = tsn, 1, (tsn - 100) % 65536
        chunk.protocol, chunk.user_data = 53, b"x"
        await sctp._handle_data(
            sctp_module.serialize_packet(5000, 5000, sctp._local_verification_tag, chunk)
        )

    def sacks() -> list[Any]:
        return [c for c in sent if isinstance(c, sctp_module.SackChunk)]

    await receive(100)
    await asyncio.sleep(0)
    assert sacks() == [], "a lone packet's SACK waits for a second packet"
    await receive(101)
    assert [s.cumulative_tsn for s in sacks()] == [101], "every second packet at once"
    await receive(102)
    await asyncio.sleep(seam.SCTP_SACK_DELAY / 2)
    assert len(sacks()) == 1
    await asyncio.sleep(seam.SCTP_SACK_DELAY)
    assert [s.cumulative_tsn for s in sacks()] == [101, 102], "or SCTP_SACK_DELAY later"
    await receive(104)  # 103 missing: at once, with a gap block
    assert sacks()[-1].cumulative_tsn == 102 and sacks()[-1].gaps == [(2, 2)]
    await receive(103)  # fills the gap: at once too (the gap was still reported)
    assert sacks()[-1].cumulative_tsn == 104 and len(sacks()) == 4
    await asyncio.sleep(seam.SCTP_SACK_DELAY * 2)
    assert len(sacks()) == 4, "nothing left to acknowledge"

    # Sending: one 128 KiB message on an idle association leaves in one burst of
    # 4 * SCTP_MAX_BURST_CALLS packets (aiortc alone: 4), never beyond cwnd.
    sent.clear()
    sctp._cwnd = 1024 * 1024
    await sctp._send(1, 53, bytes(131072))
    data = [c for c in sent if isinstance(c, sctp_module.DataChunk)]
    assert len(data) == 4 * seam.SCTP_MAX_BURST_CALLS
    assert [c.tsn for c in data] == sorted(c.tsn for c in data)
    sent.clear()
    sctp._cwnd = 3 * sctp_module.USERDATA_MAX_LENGTH + sctp._flight_size
    await sctp._transmit()
    assert len([c for c in sent if isinstance(c, sctp_module.DataChunk)]) == 3
    sctp._t3_cancel()

    # Reassembly: nothing is scanned before a last fragment is held, and a
    # message whose middle fragment comes last is still delivered whole.
    stream = sctp._get_inbound_stream(7)
    assert isinstance(stream, sctp_module.InboundStream)

    def fragment(tsn: int, flags: int, data: bytes) -> Any:
        chunk = sctp_module.DataChunk(flags=flags)
        chunk.tsn, chunk.stream_id, chunk.stream_seq = tsn, 7, 0
        chunk.protocol, chunk.user_data = 53, data
        return chunk

    stream.add_chunk(fragment(10, sctp_module.SCTP_DATA_FIRST_FRAG, b"a"))
    assert list(stream.pop_messages()) == []
    stream.add_chunk(fragment(12, sctp_module.SCTP_DATA_LAST_FRAG, b"c"))
    assert list(stream.pop_messages()) == [], "the middle fragment is missing"
    stream.add_chunk(fragment(11, 0, b"b"))
    assert list(stream.pop_messages()) == [(7, 53, b"abc")]
    assert stream.reassembly == [] and list(stream.pop_messages()) == []


#: aioice 0.13's ``Connection.connect``, which ``seam._connect_promptly`` copies.
AIOICE_CONNECT_SHA256 = "da51be46190141ee23c03ab8d77c030b45e412b6430369790ba4665a7a7886d2"


def test_connect_promptly_copies_the_pinned_aioice_connect() -> None:
    import hashlib

    source = inspect.getsource(aioice.ice.Connection.connect)
    assert hashlib.sha256(source.encode()).hexdigest() == AIOICE_CONNECT_SHA256, (
        "aioice's Connection.connect changed: compare it with seam._connect_promptly"
    )
    assert "await asyncio.sleep(0.02)" in source
    ice = RTCIceTransport(RTCIceGatherer(iceServers=[]))
    for name in ("_check_list_state", "_check_list", "_early_checks", "_query_consent_task"):
        assert hasattr(ice._connection, name), name
    for name in ("_check_periodic", "_pair_remote_candidate", "_unfreeze_initial"):
        assert callable(getattr(ice._connection, name)), name


#: aioice 0.13's ``Connection.check_start``, ``sendto`` and ``recvfrom``, which
#: ``seam.send_when_writable`` replaces with copies that also use a pair whose check
#: succeeded before its nomination.
AIOICE_WRITABLE_SHA256 = {
    "check_start": "7de056d252f46a155c8b9c2061077360d2aa6b0dc0ca7f4f5a4fa2fec2417bca",
    "sendto": "bf162ec03bdce2cc2b9602cd47a03aa70b15b45383da4d0618090e65179f7e85",
    "recvfrom": "676acc01e4a9a9da04d94d86092a81ba17f1ef77bed0322c8302e3436310e863",
}


def test_send_when_writable_copies_the_pinned_aioice_methods() -> None:
    import hashlib

    for name, digest in AIOICE_WRITABLE_SHA256.items():
        source = inspect.getsource(getattr(aioice.ice.Connection, name))
        assert hashlib.sha256(source.encode()).hexdigest() == digest, (
            f"aioice's Connection.{name} changed: compare it with seam.send_when_writable"
        )
    ice = RTCIceTransport(RTCIceGatherer(iceServers=[]))
    seam.send_when_writable(ice)
    connection = ice._connection
    for name in ("_nominated", "_nominating", "_queue", "_check_list"):
        assert hasattr(connection, name), name
    assert connection.check_start.__func__ is seam._check_start_noting_writable
    seam.release_ice(ice)
    for name in ("check_start", "sendto", "recvfrom"):
        assert name not in connection.__dict__, name


def start_against(
    side: BundleTransport, other: BundleTransport, role: str, ice: RTCIceParameters | None = None
) -> None:
    """``side.start`` with ``other``'s ICE (or ``ice``), DTLS fingerprints and candidates,
    without SCTP."""
    side.start(
        ice or other.local_ice,
        RTCDtlsParameters(fingerprints=other.local_dtls.fingerprints),
        other.local_candidates,
        dtls_role=role,
        sctp_port=None,
        sctp_max_message_size=None,
        candidates_complete=True,
    )


class StateLog:
    """A transport's ``on_state`` calls, awaitable."""

    def __init__(self) -> None:
        self.states: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, state: str) -> None:
        self.states.append(state)
        self._changed.set()

    async def reached(self, state: str) -> None:
        while state not in self.states:
            self._changed.clear()
            await self._changed.wait()


async def test_ice_start_returns_on_the_result_not_after_the_check_pacing(
    monkeypatch: Any,
) -> None:
    """With the pause between checks stretched to 60 s, ICE still completes at
    once: the wait ends on the check list's result (aioice itself sleeps the
    whole pause after starting the only check before it looks)."""
    monkeypatch.setattr(seam, "ICE_CHECK_PACING_S", 60.0)
    logs = [StateLog(), StateLog()]
    sides = [
        BundleTransport(ice_addresses=["127.0.0.1"], on_state=log, ice_controlling=controlling)
        for log, controlling in zip(logs, (True, False), strict=True)
    ]
    for side in sides:  # BundleTransport installs it; aioice's own would not see the 60 s
        assert side.ice._connection.connect.__func__ is seam._connect_promptly
    try:
        async with asyncio.timeout(10):
            await asyncio.gather(*(side.gather() for side in sides))
            for side, other, role in ((*sides, "server"), (*sides[::-1], "client")):
                start_against(side, other, role)
            await asyncio.gather(*(log.reached("connected") for log in logs))
        assert [side.ice.state for side in sides] == ["completed", "completed"]
    finally:
        async with asyncio.timeout(10):
            for side in sides:
                await side.stop()


def _is_nominating_check(data: bytes) -> bool:
    try:
        message = aioice.stun.parse_message(data)
    except ValueError:
        return False
    return message.message_class == aioice.stun.Class.REQUEST and (
        "USE-CANDIDATE" in message.attributes
    )


async def test_dtls_starts_on_a_valid_pair_before_the_nomination() -> None:
    """Against an ICE-lite remote the controlling side nominates regularly: a second
    check with USE-CANDIDATE after the first one succeeded. DTLS does not wait for
    it (libwebrtc starts DTLS once its transport is writable): with that nominating
    check lost (aioice retransmits it 0.5 s later), both sides are connected while
    the nomination is still pending, and ICE completes later on the same pair."""
    logs = [StateLog(), StateLog()]
    controlling, controlled = sides = [
        BundleTransport(ice_addresses=["127.0.0.1"], on_state=log, ice_controlling=role)
        for log, role in zip(logs, (True, False), strict=True)
    ]
    dropped: list[float] = []

    def drop_first_nomination(data: bytes) -> bool:
        if not dropped and _is_nominating_check(data):
            dropped.append(time.monotonic())
            return False
        return True

    controlled.set_receive_filter(drop_first_nomination)
    completed = asyncio.Event()

    @controlling.ice.on("statechange")
    def _on_ice_state() -> None:
        if controlling.ice.state == "completed":
            completed.set()

    try:
        async with asyncio.timeout(10):
            await asyncio.gather(*(side.gather() for side in sides))
            lite = RTCIceParameters(
                usernameFragment=controlled.local_ice.usernameFragment,
                password=controlled.local_ice.password,
                iceLite=True,
            )
            start_against(controlling, controlled, "client", ice=lite)
            start_against(controlled, controlling, "server")
            await asyncio.gather(*(log.reached("connected") for log in logs))
            connected_at = time.monotonic()
            assert dropped, "the nominating check was never sent"
            assert [side.ice.state for side in sides] == ["checking", "checking"]
            assert seam.nominated_pair(controlling.ice) is None
            assert [side.dtls.state for side in sides] == ["connected", "connected"]
            await completed.wait()
        assert time.monotonic() - dropped[0] >= 0.4  # completed by the retransmission
        assert connected_at < dropped[0] + 0.4
        pair = seam.nominated_pair(controlling.ice)
        assert pair is not None and pair.remote["port"] == controlled.local_candidates[0].port
        assert [log.states for log in logs] == [["connecting", "connected"]] * 2
    finally:
        async with asyncio.timeout(10):
            for side in sides:
                await side.stop()


async def test_ice_start_still_fails_when_no_pair_answers(monkeypatch: Any) -> None:
    """The copied connect keeps aioice's failure: the only pair failed and no
    more candidates come -> ``ICE_FAILED`` -> the transport is "failed"."""
    import aioice.stun

    monkeypatch.setattr(aioice.stun, "RETRY_MAX", 1)  # fail after 1.5 s, not 31.5 s
    log = StateLog()
    side = BundleTransport(ice_addresses=["127.0.0.1"], on_state=log)
    other = BundleTransport(ice_addresses=["127.0.0.1"], on_state=lambda state: None)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.1", 0))
    try:
        async with asyncio.timeout(20):
            await asyncio.gather(side.gather(), other.gather())
            candidate = other.local_candidates[0]
            candidate.port = silent.getsockname()[1]
            side.start(
                other.local_ice,
                RTCDtlsParameters(fingerprints=other.local_dtls.fingerprints),
                [candidate],
                dtls_role="client",
                sctp_port=None,
                sctp_max_message_size=None,
                candidates_complete=True,
            )
            await log.reached("failed")
        assert side.ice.state == "failed"
        assert "connected" not in log.states
    finally:
        silent.close()
        async with asyncio.timeout(10):
            await side.stop()
            await other.stop()


def test_one_certificate_and_one_openssl_context_serve_every_transport() -> None:
    from aiortc.rtcdtlstransport import SRTP_PROFILES

    first = BundleTransport(on_state=lambda state: None)
    second = BundleTransport(on_state=lambda state: None)
    assert first.local_dtls.fingerprints == second.local_dtls.fingerprints
    assert first.local_dtls.fingerprints == RTCCertificate.getFingerprints(
        seam.shared_certificate()
    )
    certificate = seam.shared_certificate()
    context = certificate._create_ssl_context(SRTP_PROFILES)
    assert certificate._create_ssl_context(SRTP_PROFILES) is context
    assert certificate._create_ssl_context(SRTP_PROFILES[:1]) is not context
    # aiortc's own certificate builds a new context each time (what this saves)
    plain = RTCCertificate.generateCertificate()
    assert plain._create_ssl_context(SRTP_PROFILES) is not plain._create_ssl_context(SRTP_PROFILES)


def test_the_shared_certificate_is_renewed_a_day_before_it_expires(monkeypatch: Any) -> None:
    import datetime

    # the process's certificate comes back after the test (not one dated 29 days ahead)
    monkeypatch.setattr(seam, "_shared_certificate", None)
    current = seam.shared_certificate()
    assert seam.shared_certificate() is current
    left = current.expires - datetime.datetime.now(tz=datetime.UTC)
    assert datetime.timedelta(days=29) < left <= datetime.timedelta(days=30)
    # as if 29 days and a bit had passed
    later = current.expires - seam.CERTIFICATE_RENEW_BEFORE + datetime.timedelta(seconds=1)

    class Clock(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> Clock:
            return cls.fromtimestamp(later.timestamp(), tz)

    monkeypatch.setattr(seam.datetime, "datetime", Clock)
    renewed = seam.shared_certificate()
    assert renewed is not current
    assert renewed.getFingerprints() != current.getFingerprints()


def test_host_addresses_are_enumerated_once_per_ttl(monkeypatch: Any) -> None:
    calls: list[dict[str, bool]] = []
    real = aioice.ice.get_host_addresses

    def counting(**keywords: bool) -> list[str]:
        calls.append(keywords)
        return real(**keywords)

    monkeypatch.setattr(aioice.ice, "get_host_addresses", counting)
    monkeypatch.setattr(seam, "_host_addresses", {})
    first = seam.host_addresses(use_ipv4=True, use_ipv6=False)
    assert first == real(use_ipv4=True, use_ipv6=False)
    first.append("203.0.113.9")  # a copy: the cache is not changed through it
    again = seam.host_addresses(use_ipv4=True, use_ipv6=False)
    assert "203.0.113.9" not in again and len(calls) == 1
    seam.host_addresses(use_ipv4=True, use_ipv6=True)  # another family: its own entry
    assert len(calls) == 2
    monkeypatch.setattr(seam, "HOST_ADDRESSES_TTL_S", 0.0)  # expired: enumerated again
    seam.host_addresses(use_ipv4=True, use_ipv6=False)
    assert len(calls) == 3
