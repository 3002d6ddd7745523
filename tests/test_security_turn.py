"""Media through a real TURN server (Debian's coturn), relay only.

coturn runs on 127.0.0.1 with long-term credentials, TURN over UDP/TCP and
TLS (certificate from a trustme CA); the dev server puts it in the offer's
``config.iceServers`` with ``config.iceTransportPolicy: "relay"``, as Sora
does, so the clients may only use relay candidates. The tests check the
outcome on both ends: decoded frames, the selected candidate pair in
``get_stats()`` (``candidateType: "relay"`` and its ``relayProtocol``) and
coturn's own log (the allocation for our relay address, bytes relayed).
Skipped with the reason where ``turnserver`` is not installed (``.ci/run``
installs coturn).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sora_async import (
    Connection,
    DisconnectCode,
    RemoteTrack,
    SoraConnectionError,
    VideoSink,
    VideoSource,
)
from sora_async.devserver import DevServer
from sora_async.rtc.transport import TURN_ALLOCATION_TIMEOUT
from tests.media_helpers import pattern
from tests.official.scenario import dev_server
from tests.security_support import Pki, eventually, make_pki
from tests.turn_support import LOOPBACK, Coturn, dead_udp_and_tcp_port

pytestmark = pytest.mark.timeout(120)

USER = "alice"
PASSWORD = "turn-s3cret"
_channels = itertools.count(1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("turn-pki"))


@pytest.fixture(scope="module")
def coturn(pki: Pki) -> Iterator[Coturn]:
    server = Coturn(USER, PASSWORD, cert=pki.server_cert, key=pki.server_key).start()
    try:
        yield server
    finally:
        server.stop()


def relay_only(*ice_servers: dict[str, Any]) -> contextlib.AbstractAsyncContextManager[DevServer]:
    """A dev server whose offers say: these TURN servers, relay candidates only."""
    return dev_server(ice_servers=ice_servers, ice_transport_policy="relay")


def channel() -> str:
    return f"turn-{next(_channels)}"


async def selected_local_candidate(conn: Connection) -> dict[str, Any]:
    """The local candidate of the selected pair, from ``get_stats()``."""
    stats = {entry["id"]: entry for entry in await conn.get_stats()}
    transport = next(entry for entry in stats.values() if entry["type"] == "transport")
    pair = stats[transport["selectedCandidatePairId"]]
    return stats[pair["localCandidateId"]]


def relayed_bytes(log: str) -> list[int]:
    """Bytes coturn received from peers, per closed session of our user."""
    return [
        int(m)
        for m in re.findall(rf"peer usage: realm=<[^>]*>, username=<{USER}>, rp=\d+, rb=(\d+)", log)
    ]


async def feed(source: VideoSource, fps: int = 30) -> None:
    start = time.monotonic()
    for n in itertools.count():
        source.write(pattern(320, 240, n))
        await asyncio.sleep(max(0.0, start + (n + 1) / fps - time.monotonic()))


async def test_relay_only_through_udp_turn_carries_video(coturn: Coturn) -> None:
    ch = channel()
    async with relay_only(coturn.ice_server("udp")) as server:
        source = VideoSource()
        options: dict[str, Any] = {"audio": False, "video_codec_type": "VP8"}
        sender = Connection(server.signaling_url, "sendonly", ch, video_source=source, **options)
        receiver = Connection(server.signaling_url, "recvonly", ch, **options)
        tracks: asyncio.Queue[RemoteTrack] = asyncio.Queue()
        receiver.on("track", tracks.put_nowait)
        feeder = asyncio.create_task(feed(source))
        try:
            async with asyncio.timeout(30), receiver, sender:
                sink = VideoSink(await tracks.get(), format="bgr24")
                frame = await sink.get()
                while frame is not None and (frame.width, frame.height) != (320, 240):
                    frame = await sink.get()
                assert frame is not None and frame.data().shape == (240, 320, 3)
                for _ in range(30):  # a second of video through the relay
                    assert await sink.get() is not None
                await sink.close()
                for conn in (sender, receiver):
                    local = await selected_local_candidate(conn)
                    assert local["candidateType"] == "relay", local
                    assert local["relayProtocol"] == "udp"
                    # coturn allocated exactly that relay address for our user
                    await coturn.wait_for_log(
                        f"Local relay addr: {LOOPBACK}:{local['port']}",
                        f"user <{USER}>: incoming packet ALLOCATE processed, success",
                    )
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
    # The allocations are released on disconnect; coturn then logs what it relayed:
    # the sender's video came in from the dev server's side of the receiver's relay.
    await eventually(lambda: max(relayed_bytes(coturn.log()), default=0) > 20_000)


async def test_a_dead_first_turn_server_does_not_prevent_relaying_through_a_later_one(
    coturn: Coturn, caplog: pytest.LogCaptureFixture
) -> None:
    dead = dead_udp_and_tcp_port()
    dead_udp = f"turn:{LOOPBACK}:{dead}?transport=udp"  # ICMP unreachable, never answers
    dead_tcp = f"turn:{LOOPBACK}:{dead}?transport=tcp"  # connection refused
    first = {"urls": [dead_udp, dead_tcp], "username": USER, "credential": PASSWORD}
    caplog.set_level(logging.WARNING, logger="sora_async.rtc")
    async with relay_only(first, coturn.ice_server("tcp")) as server:
        conn = Connection(server.signaling_url, "recvonly", channel())
        started = time.monotonic()
        async with asyncio.timeout(20):
            await conn.connect()
            elapsed = time.monotonic() - started
            local = await selected_local_candidate(conn)
            await conn.disconnect()
    assert local["candidateType"] == "relay" and local["relayProtocol"] == "tcp", local
    # Allocations run in parallel; once one relay came, the others get a short grace.
    assert elapsed < TURN_ALLOCATION_TIMEOUT, elapsed
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        w.startswith(f"no relay candidate from {dead_udp}: no answer within") for w in warnings
    )
    assert f"no relay candidate from {dead_tcp}: Connection refused" in warnings


@pytest.mark.parametrize("trust", ["ca_cert", "insecure"])
async def test_turns_verifies_the_turn_server_with_ca_cert_and_not_with_insecure(
    coturn: Coturn, pki: Pki, trust: str
) -> None:
    keywords: dict[str, Any] = {"ca_cert": pki.ca_pem} if trust == "ca_cert" else {"insecure": True}
    async with relay_only(coturn.ice_server("tls")) as server:
        async with asyncio.timeout(20):
            async with Connection(server.signaling_url, "recvonly", channel(), **keywords) as conn:
                local = await selected_local_candidate(conn)
    assert local["candidateType"] == "relay" and local["relayProtocol"] == "tls", local
    await coturn.wait_for_log(f"Local relay addr: {LOOPBACK}:{local['port']}")


@pytest.mark.parametrize("trust", ["another CA", "system store"])
async def test_turns_with_an_untrusted_certificate_fails_naming_tls(
    coturn: Coturn, pki: Pki, trust: str
) -> None:
    keywords: dict[str, Any] = {}
    if trust == "another CA":
        keywords["ca_cert"] = bytes(pki.other_ca.cert_pem.bytes())
    url = coturn.urls("tls")[0]
    async with relay_only(coturn.ice_server("tls")) as server:
        conn = Connection(server.signaling_url, "recvonly", channel(), **keywords)
        async with asyncio.timeout(20):
            with pytest.raises(SoraConnectionError) as failure:
                await conn.connect()
            await conn.wait_closed()
    error = failure.value
    assert error.code is DisconnectCode.ICE_FAILED
    assert error.message.startswith(
        "Failed to SetOffer in offer message via WebSocket: error=no relay candidate for "
        f"iceTransportPolicy relay ({url}: TLS certificate verification failed: "
        "unable to get local issuer certificate)"
    ), error.message
    assert PASSWORD not in error.message
