"""The DataChannel fast paths of ``sora_async._aiortc_seam``.

``RawDtlsTransport.receive_dtls`` / ``send_data_now`` move SCTP packets between
the socket and the SCTP transport without aioice's queue and aiortc's coroutine
layers, and ``TunedSctpTransport`` parses lone DATA chunks, sends new data and
starts a message's flush without aiortc's generic steps. These run the real
thing (two ``BundleTransport`` on loopback, real DTLS and SCTP) and check that
messages arrive whole and in order, with loss and with a handler that waits,
and that the fast paths are the ones that carried them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from struct import pack
from typing import Any

import pytest
from aiortc import rtcsctptransport as sctp_module
from aiortc.rtcdatachannel import RTCDataChannel, RTCDataChannelParameters
from aiortc.rtcdtlstransport import (
    SRTP_PROFILES,
    RTCCertificate,
    RTCDtlsParameters,
    RTCDtlsTransport,
)
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceParameters, RTCIceTransport
from google_crc32c import value as crc32c
from OpenSSL import SSL

from sora_async import _aiortc_seam as seam
from sora_async.rtc.transport import BundleTransport
from tests.rtc_support import DropEveryRecord


def test_the_aiortc_members_the_sctp_fast_paths_use_exist() -> None:
    dtls_init = inspect.getsource(RTCDtlsTransport.__init__)
    for name in ("_data_receiver", "_ssl", "_state", "_transport"):
        assert f"self.{name}" in dtls_init, name
    # receive_dtls does what _recv_next does for a DTLS record
    recv_next = inspect.getsource(RTCDtlsTransport._recv_next)
    assert "self._ssl.bio_write(data)" in recv_next
    assert "self._data_receiver._handle_data(data)" in recv_next
    assert "await self.transport._recv()" in recv_next
    assert "self._ssl.bio_read(1500)" in inspect.getsource(RTCDtlsTransport._write_ssl)
    # every chunk aiortc marks for retransmission was first passed to _maybe_abandon
    for method in (
        sctp_module.RTCSctpTransport._receive_sack_chunk,
        sctp_module.RTCSctpTransport._t3_expired,
    ):
        source = inspect.getsource(method)
        assert source.count("._retransmit = True") == source.count("self._maybe_abandon("), method
    transmit = inspect.getsource(sctp_module.RTCSctpTransport._transmit)
    assert "chunk._sent_time = time.time()" in transmit
    # a lone SACK goes where _handle_data/_receive_chunk send it, and the SACK
    # TunedSctpTransport._send_sack_now packs holds what aiortc's _send_sack puts in
    handle_data = inspect.getsource(sctp_module.RTCSctpTransport._handle_data)
    assert "await self._receive_chunk(chunk)" in handle_data
    assert "await self._send_sack()" in handle_data
    receive_chunk = inspect.getsource(sctp_module.RTCSctpTransport._receive_chunk)
    assert "await self._receive_sack_chunk(chunk)" in receive_chunk
    _has_lines(
        sctp_module.RTCSctpTransport._send_sack,
        "sack.cumulative_tsn = self._last_received_tsn",
        "sack.advertised_rwnd = max(0, self._advertised_rwnd)",
        "sack.duplicates = self._sack_duplicates[:]",
        "await self._send_chunk(sack)",
        "self._sack_needed = False",
    )
    # TunedSctpTransport._data_now and _sack_now do these methods' work for a DATA
    # chunk completing no message and a SACK without gap blocks
    _has_lines(
        sctp_module.RTCSctpTransport._receive_data_chunk,
        "self._sack_needed = True",
        "if self._mark_received(chunk.tsn):",
        "inbound_stream.add_chunk(chunk)",
        "self._advertised_rwnd -= len(chunk.user_data)",
        "for message in inbound_stream.pop_messages():",
        "await self._reset_deferred_streams()",
    )
    _has_lines(
        sctp_module.RTCSctpTransport._reset_deferred_streams,
        "request = self._reconfig_deferred",
    )
    _has_lines(
        sctp_module.RTCSctpTransport._receive_sack_chunk,
        "self._last_sacked_tsn = chunk.cumulative_tsn",
        "cwnd_fully_utilized = self._flight_size >= self._cwnd",
        "self._update_rto(received_time - schunk._sent_time)",
        "self._cwnd += min(done_bytes, USERDATA_MAX_LENGTH)",
        "self._partial_bytes_acked -= self._cwnd",
        "self._t3_restart()",
        "self._update_advanced_peer_ack_point()",
        "await self._data_channel_flush()",
        "await self._transmit()",
    )
    # TunedSctpTransport._data_channel_send repeats aiortc's queueing, without the task
    _has_lines(
        sctp_module.RTCSctpTransport._data_channel_send,
        'pp_id, user_data = WEBRTC_STRING_EMPTY, b"\\x00"',
        'pp_id, user_data = WEBRTC_STRING, data.encode("utf8")',
        'pp_id, user_data = WEBRTC_BINARY_EMPTY, b"\\x00"',
        "pp_id, user_data = WEBRTC_BINARY, data",
        "if self._remote_max_message_size and (",
        "channel._addBufferedAmount(len(user_data))",
        "self._data_channel_queue.append((channel, pp_id, user_data))",
        "asyncio.ensure_future(self._data_channel_flush())",
    )
    # OpenSSL's calls through pyOpenSSL's binding (seam._Records), on its members
    assert seam._OPENSSL is not None
    connection = SSL.Connection(SSL.Context(SSL.DTLS_METHOD), None)
    for name in ("_ssl", "_into_ssl", "_from_ssl"):
        assert hasattr(connection, name), name
    assert seam._Records(connection)._ssl is not None


def _has_lines(function: Any, *lines: str) -> None:
    """``function``'s source (aiortc's, which a fast path mirrors) holds ``lines``."""
    source = inspect.getsource(function)
    for line in lines:
        assert line in source, (function, line)


class _Pair:
    def __init__(self, offerer: BundleTransport, answerer: BundleTransport) -> None:
        self.offerer, self.answerer = offerer, answerer
        self.channels: asyncio.Queue[RTCDataChannel] = asyncio.Queue()


@asynccontextmanager
async def _connected_pair() -> AsyncIterator[_Pair]:
    changed = asyncio.Event()

    def on_state(_state: str) -> None:
        changed.set()

    offerer = BundleTransport(ice_addresses=["127.0.0.1"], on_state=on_state, ice_controlling=True)
    answerer = BundleTransport(
        ice_addresses=["127.0.0.1"], on_state=on_state, ice_controlling=False
    )
    pair = _Pair(offerer, answerer)
    try:
        async with asyncio.timeout(20):
            await asyncio.gather(offerer.gather(), answerer.gather())

            def remote(t: BundleTransport) -> tuple[RTCIceParameters, RTCDtlsParameters]:
                return t.local_ice, RTCDtlsParameters(fingerprints=t.local_dtls.fingerprints)

            for local, other, role in (
                (offerer, answerer, "server"),
                (answerer, offerer, "client"),
            ):
                local.start(
                    *remote(other),
                    other.local_candidates,
                    dtls_role=role,
                    sctp_port=5000,
                    sctp_max_message_size=262144,
                    candidates_complete=True,
                )
            assert answerer.sctp is not None
            answerer.sctp.on("datachannel", pair.channels.put_nowait)
            while answerer.state != "connected" or offerer.state != "connected":
                changed.clear()
                await changed.wait()
            yield pair
    finally:
        async with asyncio.timeout(10):
            await offerer.stop()
            await answerer.stop()


class _Spy:
    """Counts what a method returned, per result."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> None:
        self.results: dict[Any, int] = {}
        original: Callable[..., Any] = getattr(cls, name)

        def spy(*args: Any) -> Any:
            result = original(*args)
            key = result if isinstance(result, bool) else result is not None
            self.results[key] = self.results.get(key, 0) + 1
            return result

        monkeypatch.setattr(cls, name, spy)


async def _open(pair: _Pair) -> tuple[RTCDataChannel, RTCDataChannel, asyncio.Queue[bytes]]:
    assert pair.offerer.sctp is not None
    sent = RTCDataChannel(pair.offerer.sctp, RTCDataChannelParameters(label="bulk"))
    received = await pair.channels.get()
    if sent.readyState != "open":
        opened = asyncio.Event()
        sent.on("open", opened.set)
        await opened.wait()
    inbox: asyncio.Queue[bytes] = asyncio.Queue()
    received.on("message", inbox.put_nowait)
    return sent, received, inbox


@pytest.mark.parametrize("lossy", [False, True])
async def test_64_kib_messages_arrive_whole_and_in_order_through_the_fast_paths(
    monkeypatch: pytest.MonkeyPatch, lossy: bool
) -> None:
    received_inline = _Spy(monkeypatch, seam.RawDtlsTransport, "receive_dtls")
    sent_inline = _Spy(monkeypatch, seam.RawDtlsTransport, "send_data_now")
    lone = _Spy(monkeypatch, seam.TunedSctpTransport, "_lone_data_chunk")
    data_now = _Spy(monkeypatch, seam.TunedSctpTransport, "_data_now")
    lone_sack = _Spy(monkeypatch, seam.TunedSctpTransport, "_lone_sack_chunk")
    payloads = [seq.to_bytes(4, "big") + os.urandom(65536 - 4 - seq % 5) for seq in range(30)]
    drop_some = DropEveryRecord(17)
    async with _connected_pair() as pair, asyncio.timeout(60):
        sent, _received, inbox = await _open(pair)
        if lossy:
            pair.answerer.set_receive_filter(drop_some)
        for payload in payloads:
            sent.send(payload)
        for payload in payloads:
            assert await inbox.get() == payload
    assert received_inline.results.get(True, 0) > 30 * 56, received_inline.results
    assert sent_inline.results.get(True, 0) > 30 * 56, sent_inline.results
    # a DATA chunk alone in its packet: handled at once (no message completes), or
    # parsed directly on the coroutine path (a last fragment, after a loss)
    fast_data = data_now.results.get(True, 0) + lone.results.get(True, 0)
    assert fast_data > 30 * 55, (data_now.results, lone.results)
    if not lossy:  # all but the last fragment of each message, without a coroutine
        assert data_now.results.get(True, 0) >= 30 * 54, data_now.results
    # a SACK every second packet, most without gaps
    assert lone_sack.results.get(True, 0) > 30 * 55 // 4, lone_sack.results
    if lossy:
        assert drop_some.dropped >= 30 * 56 // 17


class _Counter:
    """Counts a method's results, for one instance only."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, instance: Any, name: str) -> None:
        self.results: dict[Any, int] = {}
        original = getattr(type(instance), name)

        def spy(this: Any, *args: Any) -> Any:
            result = original(this, *args)
            if this is instance:
                self.results[result] = self.results.get(result, 0) + 1
            return result

        monkeypatch.setattr(type(instance), name, spy)


@pytest.mark.parametrize("packets", [9, 10])
async def test_one_sack_per_two_data_packets_handled_without_coroutines(
    monkeypatch: pytest.MonkeyPatch, packets: int
) -> None:
    # RFC 9260 §6.2: a SACK for (at least) every second packet with DATA, a lone
    # last packet acknowledged after SCTP_SACK_DELAY. A message of `packets` full
    # packets (within the initial cwnd, so they leave at once): the receiver sends
    # packets // 2 SACKs at once and one more later when the count is odd; all but
    # the last fragment are handled by _data_now, and the sender takes every SACK
    # on _sack_now (nothing else waits to be sent).
    async with _connected_pair() as pair, asyncio.timeout(30):
        sent, _received, inbox = await _open(pair)
        sent.send(b"warm")
        assert await inbox.get() == b"warm"
        await asyncio.sleep(0.1)  # the delayed SACK of that lone packet went out
        sender, receiver = pair.offerer.sctp, pair.answerer.sctp
        assert isinstance(sender, seam.TunedSctpTransport)
        assert isinstance(receiver, seam.TunedSctpTransport)
        data_now = _Counter(monkeypatch, receiver, "_data_now")
        sack_now = _Counter(monkeypatch, sender, "_sack_now")
        before = pair.answerer.dtls.counters["packetsSent"]
        payload = os.urandom(packets * sctp_module.USERDATA_MAX_LENGTH)
        sent.send(payload)
        assert await inbox.get() == payload
        assert pair.answerer.dtls.counters["packetsSent"] - before == packets // 2
        await asyncio.sleep(seam.SCTP_SACK_DELAY * 5)
        sacks = (packets + 1) // 2
        assert pair.answerer.dtls.counters["packetsSent"] - before == sacks
        assert data_now.results == {True: packets - 1, False: 1}  # False: the last
        assert sack_now.results == {True: sacks}
        assert not receiver._sack_needed and receiver._sack_packets == 0
        assert not sender._sent_queue and sender._flight_size == 0


async def test_drain_reads_what_is_queued_in_order_up_to_its_limit() -> None:
    # asyncio reads one datagram per wake-up; _drain reads on while the socket has
    # more, up to DRAIN_DATAGRAMS, and stops at the first no fast path takes.
    loop = asyncio.get_running_loop()
    later: asyncio.Queue[bytes] = asyncio.Queue()

    class Protocol(asyncio.DatagramProtocol):  # as aioice's StunProtocol keeps it
        transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            later.put_nowait(data)

    transport, protocol = await loop.create_datagram_endpoint(Protocol, local_addr=("127.0.0.1", 0))
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        address = transport.get_extra_info("sockname")
        datagrams = [bytes([n]) * (100 + n) for n in range(seam.DRAIN_DATAGRAMS + 4)]
        for datagram in datagrams:
            out.sendto(datagram, address)
        # loopback queues them on the socket at once; no await until drained, so
        # that the loop reads none of them first
        taken: list[bytes] = []

        def take(data: bytes, addr: Any) -> bool:
            taken.append(data)
            return len(taken) != 2  # the second is "not taken": draining stops there

        seam._drain(protocol, take)
        assert taken == datagrams[:2]
        taken.clear()
        seam._drain(protocol, lambda data, addr: taken.append(data) is None)
        assert taken == datagrams[2 : 2 + seam.DRAIN_DATAGRAMS]
        # the rest is asyncio's, in order
        async with asyncio.timeout(5):
            rest = [await later.get() for _ in datagrams[2 + seam.DRAIN_DATAGRAMS :]]
        assert rest == datagrams[2 + seam.DRAIN_DATAGRAMS :]
        transport.close()
        seam._drain(protocol, take)  # a closing transport is not read
        assert taken == datagrams[2 : 2 + seam.DRAIN_DATAGRAMS]
    finally:
        out.close()
        transport.close()


async def test_a_handler_that_waits_keeps_later_packets_in_order() -> None:
    async with _connected_pair() as pair, asyncio.timeout(30):
        sent, _received, inbox = await _open(pair)
        sctp = pair.answerer.sctp
        assert isinstance(sctp, seam.TunedSctpTransport)
        original = sctp._receive
        waited = asyncio.Event()
        backlogs: list[int] = []

        async def slow_first(stream_id: int, pp_id: int, data: bytes) -> None:
            if data[:1] == b"\x00" and not waited.is_set():
                # the handler run by receive_dtls waits: later datagrams must queue
                await asyncio.sleep(0.05)
                # it was started by receive_dtls, which queued what came meanwhile
                backlogs.append(len(pair.answerer.dtls._data_backlog or ()))
                waited.set()
            await original(stream_id, pp_id, data)

        sctp._receive = slow_first  # type: ignore[method-assign]
        payloads = [bytes([seq]) * (3000 + seq) for seq in range(20)]
        for payload in payloads:
            sent.send(payload)
        got = [await inbox.get() for _ in payloads]
        assert waited.is_set() and backlogs[0] > 0
        assert got == payloads
        assert pair.answerer.dtls._data_backlog is None


async def test_a_message_starts_leaving_before_send_returns() -> None:
    async with _connected_pair() as pair, asyncio.timeout(30):
        sent, _received, inbox = await _open(pair)
        sctp = pair.offerer.sctp
        assert sctp is not None
        before = pair.offerer.dtls.counters["packetsSent"]
        sent.send(bytes(65536))
        # no await in between: the first burst left on the caller's stack
        after = pair.offerer.dtls.counters["packetsSent"]
        # one Max.Burst, within the initial cwnd
        assert after - before == min(4 * seam.SCTP_MAX_BURST_CALLS, seam.SCTP_INITIAL_CWND_PACKETS)
        assert await inbox.get() == bytes(65536)


async def test_a_message_sent_costs_no_task_and_keeps_its_kind() -> None:
    async with _connected_pair() as pair, asyncio.timeout(30):
        sent, _received, inbox = await _open(pair)
        sctp = pair.offerer.sctp
        assert sctp is not None
        tasks = len(asyncio.all_tasks())
        payloads = [bytes([n]) * 1024 for n in range(50)]
        for payload in payloads:
            sent.send(payload)
        # aiortc's own _data_channel_send left a task per message that found nothing to do
        assert len(asyncio.all_tasks()) == tasks
        assert [await inbox.get() for _ in payloads] == payloads
        # the empty and text messages keep their PPIDs (RFC 8831 §6.6), as through aiortc
        for message in ("", b"", "é", "x"):
            sent.send(message)
        assert [await inbox.get() for _ in range(4)] == ["", b"", "é", "x"]
        limit = sctp._remote_max_message_size
        assert limit
        buffered = sent.bufferedAmount
        with pytest.raises(ValueError, match="only supports messages up to"):
            sent.send(bytes(limit + 1))
        assert sent.bufferedAmount == buffered  # refused before it was queued


def _packet(sctp: seam.TunedSctpTransport, *chunks: Any, tag: int | None = None) -> bytes:
    verification_tag = sctp._local_verification_tag if tag is None else tag
    header = pack("!HHL", 5000, 5000, verification_tag)
    body = b"".join(bytes(chunk) for chunk in chunks)
    checksum = crc32c(header + b"\x00\x00\x00\x00" + body)
    return header + pack("<L", checksum) + body


def _data(tsn: int, size: int) -> sctp_module.DataChunk:
    chunk = sctp_module.DataChunk(flags=sctp_module.SCTP_DATA_FIRST_FRAG)
    chunk.tsn, chunk.stream_id, chunk.stream_seq, chunk.protocol = tsn, 3, 7, 53
    chunk.user_data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    return chunk


async def test_lone_data_chunk_parses_what_parse_packet_parses_and_nothing_else() -> None:
    dtls = RTCDtlsTransport(
        RTCIceTransport(RTCIceGatherer(iceServers=[])), [RTCCertificate.generateCertificate()]
    )
    sctp = seam.TunedSctpTransport(dtls)
    for size in (1, 3, 1000, sctp_module.USERDATA_MAX_LENGTH):
        packet = _packet(sctp, _data(41, size))
        chunk = sctp._lone_data_chunk(packet)
        assert chunk is not None, size
        (parsed,) = sctp_module.parse_packet(packet)[3]
        assert isinstance(parsed, sctp_module.DataChunk)
        for name in ("flags", "tsn", "stream_id", "stream_seq", "protocol", "user_data"):
            assert getattr(chunk, name) == getattr(parsed, name), (size, name)
    good = _packet(sctp, _data(41, 100))
    corrupted = good[:-1] + bytes([good[-1] ^ 1])
    sack = sctp_module.SackChunk()
    sack.cumulative_tsn = 40
    for packet in (
        corrupted,  # bad checksum
        _packet(sctp, _data(41, 100), tag=sctp._local_verification_tag + 1),
        _packet(sctp, _data(41, 100), _data(42, 100)),  # two chunks: aiortc's parse
        _packet(sctp, sack),
        good[:20],
    ):
        assert sctp._lone_data_chunk(packet) is None


def test_data_packets_are_the_bytes_serialize_packet_makes() -> None:
    # TunedSctpTransport._transmit packs DATA packets itself (_data_packet): the wire
    # bytes must stay aiortc's, padding and checksum included
    for size in (1, 2, 3, 4, 5, 1000, 1199, sctp_module.USERDATA_MAX_LENGTH):
        for flags in (0, 1, 2, 3, 4, 7):
            chunk = _data(0xFFFFFFFE, size)
            chunk.flags = flags
            chunk.user_data = os.urandom(size)
            ours = seam._data_packet(5000, 5001, 0xDEADBEEF, chunk)
            assert ours == sctp_module.serialize_packet(5000, 5001, 0xDEADBEEF, chunk)
            assert len(ours) % 4 == 0


def _sack(cumulative_tsn: int, rwnd: int, gaps: Any = (), duplicates: Any = ()) -> Any:
    sack = sctp_module.SackChunk()
    sack.cumulative_tsn, sack.advertised_rwnd = cumulative_tsn, rwnd
    sack.gaps, sack.duplicates = list(gaps), list(duplicates)
    return sack


async def test_lone_sack_chunk_parses_what_parse_packet_parses_and_nothing_else() -> None:
    dtls = RTCDtlsTransport(
        RTCIceTransport(RTCIceGatherer(iceServers=[])), [RTCCertificate.generateCertificate()]
    )
    sctp = seam.TunedSctpTransport(dtls)
    for tsn, rwnd in ((0, 0), (41, 262144), (0xFFFFFFFF, 0xFFFFFFFF)):
        packet = _packet(sctp, _sack(tsn, rwnd))
        chunk = sctp._lone_sack_chunk(packet)
        assert chunk is not None
        (parsed,) = sctp_module.parse_packet(packet)[3]
        assert isinstance(parsed, sctp_module.SackChunk)
        for name in ("flags", "cumulative_tsn", "advertised_rwnd", "gaps", "duplicates"):
            assert getattr(chunk, name) == getattr(parsed, name), name
    good = _packet(sctp, _sack(41, 1000))
    for packet in (
        good[:-1] + bytes([good[-1] ^ 1]),  # bad checksum
        _packet(sctp, _sack(41, 1000), tag=sctp._local_verification_tag + 1),
        _packet(sctp, _sack(41, 1000, gaps=[(2, 3)])),  # gap blocks: aiortc's parse
        _packet(sctp, _sack(41, 1000, duplicates=[40])),
        _packet(sctp, _sack(41, 1000), _sack(42, 1000)),
        _packet(sctp, _data(41, 4)),
        good[:20],
    ):
        assert sctp._lone_sack_chunk(packet) is None


@pytest.mark.parametrize("report", ["nothing", "gaps", "duplicates"])
async def test_a_sack_sent_is_the_packet_aiortc_would_send(
    monkeypatch: pytest.MonkeyPatch, report: str
) -> None:
    dtls = RTCDtlsTransport(
        RTCIceTransport(RTCIceGatherer(iceServers=[])), [RTCCertificate.generateCertificate()]
    )
    sent: list[bytes] = []

    async def send_data(data: bytes) -> None:
        sent.append(data)

    monkeypatch.setattr(dtls, "_send_data", send_data)
    tuned, plain = seam.TunedSctpTransport(dtls), sctp_module.RTCSctpTransport(dtls)
    for sctp in (tuned, plain):
        sctp._remote_port = 5001
        sctp._remote_verification_tag = 0x12345678
        sctp._last_received_tsn = 0xFFFFFFFE
        sctp._advertised_rwnd = 200_000
        if report == "gaps":
            sctp._sack_misordered = {1, 2, 4}
        if report == "duplicates":
            sctp._sack_duplicates = [0xFFFFFFF0]
        sctp._sack_needed = True
        await (sctp._send_sack_now() if sctp is tuned else sctp._send_sack())
        assert not sctp._sack_needed and not sctp._sack_duplicates
    assert len(sent) == 2 and sent[0] == sent[1], sent


def _dtls_pair() -> tuple[SSL.Connection, SSL.Connection]:
    """Two pyOpenSSL DTLS connections (memory BIOs) after their handshake."""
    profiles = SRTP_PROFILES
    client = SSL.Connection(RTCCertificate.generateCertificate()._create_ssl_context(profiles))
    server = SSL.Connection(RTCCertificate.generateCertificate()._create_ssl_context(profiles))
    client.set_connect_state()
    server.set_accept_state()
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(SSL.WantReadError):
                side.do_handshake()
        for source, target in ((client, server), (server, client)):
            with contextlib.suppress(SSL.WantReadError):
                target.bio_write(source.bio_read(65536))
    return client, server


@pytest.mark.parametrize("fast", [True, False])
def test_records_encrypt_and_decrypt_as_pyopenssl_and_raise_as_it(fast: bool) -> None:
    client, server = _dtls_pair()
    sender, receiver = seam._Records(client), seam._Records(server)
    if not fast:  # as without pyOpenSSL's binding: its methods only
        sender._ssl = receiver._ssl = None
    packet = os.urandom(1189)
    record = sender.encrypt(packet)
    assert record[0] == 23 and not sender.output_pending()
    assert receiver.decrypt(record) == packet
    assert not receiver.output_pending()
    with pytest.raises(SSL.WantReadError):  # a replayed record is dropped, as recv does
        receiver.decrypt(record)
    assert receiver.decrypt(sender.encrypt(b"next")) == b"next"
    client.shutdown()
    assert sender.output_pending()
    alert = sender.output()
    with pytest.raises(SSL.ZeroReturnError):
        receiver.decrypt(alert)


async def test_t3_restarted_on_each_sack_expires_one_rto_after_the_last_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expired = asyncio.Event()
    expired_at: list[float] = []
    loop = asyncio.get_running_loop()

    def record(self: sctp_module.RTCSctpTransport) -> None:
        self._t3_handle = None
        expired_at.append(loop.time())
        expired.set()

    monkeypatch.setattr(sctp_module.RTCSctpTransport, "_t3_expired", record)
    dtls = RTCDtlsTransport(
        RTCIceTransport(RTCIceGatherer(iceServers=[])), [RTCCertificate.generateCertificate()]
    )
    sctp = seam.TunedSctpTransport(dtls)
    sctp._rto = 0.05
    sctp._t3_start()
    armed = sctp._t3_handle
    started = loop.time()
    await asyncio.sleep(0.03)
    restarted = loop.time()
    sctp._t3_restart()
    assert sctp._t3_handle is armed, "the armed timer is kept"
    async with asyncio.timeout(5):
        await expired.wait()
    assert expired_at[0] >= restarted + 0.05 - 0.002, (started, restarted, expired_at)
    # a restart with a shorter RTO re-arms earlier, and a cancel stops it for good
    expired.clear()
    sctp._t3_start()
    sctp._rto = 0.01
    sctp._t3_restart()
    async with asyncio.timeout(5):
        await expired.wait()
    sctp._t3_start()
    sctp._t3_restart()
    sctp._t3_cancel()
    assert sctp._t3_handle is None and sctp._t3_deadline == 0.0
