"""Faults: a killed server, a dropped network path, a DataChannel closed by the
server, a cancelled ``connect()``, and hundreds of cycles without leaks.

Each fault ends in exactly one ``disconnect`` with the expected code within
seconds and releases every task, thread and file descriptor. The dev server
runs in a real subprocess where a test kills it with SIGKILL; the dropped
path is a network namespace whose loopback goes down (skipped with the reason
where namespaces are not allowed).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

import sora_async.connection
from sora_async import Connection, DisconnectCode, SoraConnectionError
from sora_async.devserver import DevServer
from sora_async.signaling import State
from tests.security_support import (
    MODES,
    DevServerProcess,
    Events,
    HostileServer,
    eventually,
    make_pki,
    raw_tcp_server,
    resources,
    silent,
)

pytestmark = pytest.mark.timeout(120)

#: The sora_async.rtc media engine (which replaces aiortc's RTCPeerConnection in
#: Connection) detects a dead path in seconds; without it these tests are xfail.
RTC_ENGINE = not hasattr(sora_async.connection, "RTCPeerConnection")
LIVENESS_PENDING = (
    "peer-connection liveness (dead path detected in seconds via RTCP / ICE consent / "
    "DataChannel activity) belongs to the sora_async.rtc media engine, absent here; "
    "aiortc's RTCPeerConnection needs ~30 s (ICE consent freshness)"
)
needs_liveness = pytest.mark.xfail(not RTC_ENGINE, reason=LIVENESS_PENDING, strict=False)


async def joined(conn: Connection, events: Events, mode: str) -> None:
    async with asyncio.timeout(20):
        await conn.connect()
        if mode != "websocket":
            await events.wait("switched")
            await events.wait("data_channel", lambda label: label == "signaling")


# -- the server process dies ------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "code", "message", "within"),
    [
        (
            "websocket",
            DisconnectCode.WEBSOCKET_ONERROR,
            "Failed to read WebSocket: ec=End of file wscode=0 wsreason=",
            3.0,
        ),
        (
            # The WebSocket dies first; the disconnect sent over DC gets no answer
            # within disconnect_wait_timeout (2 s here).
            "hybrid",
            DisconnectCode.WEBSOCKET_ONERROR,
            "Failed to read WebSocket and to close DataChannel: ec=End of file "
            "ec2=Operation canceled wscode=0 wsreason=",
            5.0,
        ),
        pytest.param(
            "datachannel",
            None,  # PEER_CONNECTION_STATE_FAILED or DATACHANNEL_CLOSED
            None,
            10.0,
            marks=needs_liveness,
        ),
    ],
)
async def test_a_sigkilled_server_is_noticed_within_seconds(
    mode: str, code: DisconnectCode | None, message: str | None, within: float
) -> None:
    async with DevServerProcess() as server:
        conn = Connection(
            server.signaling_url, "recvonly", "kill", disconnect_wait_timeout=2, **MODES[mode]
        )
        events = Events(conn)
        await joined(conn, events, mode)
        killed_at = time.monotonic()
        server.kill()
        try:
            async with asyncio.timeout(within):
                await conn.wait_closed()
        finally:
            if conn.state is not State.CLOSED:
                await conn.disconnect()
        elapsed = time.monotonic() - killed_at
    assert len(events.of("disconnect")) == 1
    [(got_code, got_message)] = events.of("disconnect")
    if code is None:
        assert got_code in (
            DisconnectCode.PEER_CONNECTION_STATE_FAILED,
            DisconnectCode.DATACHANNEL_CLOSED,
        ), got_message
    else:
        assert (got_code, got_message) == (code, message)
    assert elapsed < within


# -- the network path goes away ---------------------------------------------------------

_NETNS_CHILD = r"""
import asyncio, json, subprocess, sys, time
import aioice.ice
from sora_async import Connection
from sora_async.devserver import DevServer

# The namespace has nothing but loopback, and aioice never gathers 127.0.0.1:
# let the client's ICE gather there (the dev server already does).
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []

async def main():
    async with DevServer(ping_interval=0) as server:
        conn = Connection(server.signaling_url, "recvonly", "netns")
        ended = asyncio.Event()
        result = {}
        def on_disconnect(code, message):
            result.update(code=code.name, message=message, at=time.monotonic())
            ended.set()
        conn.on("disconnect", on_disconnect)
        await asyncio.wait_for(conn.connect(), 20)
        await asyncio.sleep(1)  # media and consent checks running
        dropped = time.monotonic()
        subprocess.run(["ip", "link", "set", "lo", "down"], check=True)
        try:
            await asyncio.wait_for(ended.wait(), float(sys.argv[1]))
            result["seconds"] = round(result.pop("at") - dropped, 2)
        except asyncio.TimeoutError:
            result = {"code": None, "seconds": None, "state": conn.state.name}
        print(json.dumps(result), flush=True)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        await asyncio.wait_for(conn.disconnect(), 15)

asyncio.run(main())
"""


def _netns_or_skip() -> str:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2's ip")
    name = f"sora_async_{uuid.uuid4().hex[:8]}"
    added = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if added.returncode != 0:
        pytest.skip(f"network namespaces are not allowed here: {added.stderr.strip()}")
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    return name


@pytest.mark.slow
@pytest.mark.timeout(90)
@needs_liveness
def test_a_dropped_network_path_fails_the_peer_connection_within_10_seconds() -> None:
    # Client and dev server share a private network namespace (loopback only);
    # taking its lo down drops every packet silently, as a dead path does.
    namespace = _netns_or_skip()
    try:
        child = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", _NETNS_CHILD, "20"],
            capture_output=True,
            text=True,
            timeout=80,
        )
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    assert lines, child.stderr[-3000:]
    result = json.loads(lines[-1])
    print(f"dropped path: {result}")
    assert result["code"] == "PEER_CONNECTION_STATE_FAILED", result
    assert result["seconds"] <= 10, result


# -- a DataChannel closed by the server ----------------------------------------------------


def _close_server_channel(server: DevServer, connection_id: str, label: str) -> None:
    session = server.registry.sessions[connection_id]
    channels = getattr(session.peer, "_channels", None)
    if channels is None:
        pytest.skip("the dev server's peer no longer exposes its DataChannels")
    channels[label].close()


@pytest.mark.parametrize("mode", ["datachannel", "hybrid"])
@pytest.mark.parametrize("label", ["notify", "#chat"])
async def test_a_datachannel_closed_by_the_server(
    sora_devserver: DevServer, mode: str, label: str
) -> None:
    conn = Connection(
        sora_devserver.signaling_url,
        "sendrecv",
        "dc-close",
        audio=False,
        video=False,
        data_channels=[{"label": "#chat", "direction": "sendrecv"}],
        **MODES[mode],
    )
    events = Events(conn)
    await joined(conn, events, mode)
    await events.wait("data_channel", lambda lbl: lbl == label)
    closed_at = time.monotonic()
    _close_server_channel(sora_devserver, conn.connection_id or "", label)
    async with asyncio.timeout(5):
        await conn.wait_closed()
    assert time.monotonic() - closed_at < 3  # hybrid waits 1 s for a WebSocket close frame
    assert events.of("disconnect") == [
        (DisconnectCode.DATACHANNEL_CLOSED, f"DataChannel was closed unexpectedly: label={label}")
    ]


# -- the task awaiting connect() is cancelled ------------------------------------------------


async def _cancel_during(url: str, started: asyncio.Event | None, **keywords: Any) -> None:
    before = resources()
    conn = Connection(url, "recvonly", "cancel", websocket_close_timeout=1, **keywords)
    events = Events(conn)
    task = asyncio.ensure_future(conn.connect())
    async with asyncio.timeout(15):
        if started is not None:
            await started.wait()
        else:
            await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await conn.wait_closed()
    assert conn.state is State.CLOSED
    assert len(events.of("disconnect")) == 1

    def released() -> bool:
        now = resources()
        return all(now[key] <= before[key] for key in ("tasks", "fds", "threads"))

    try:
        await eventually(released, seconds=5)
    except TimeoutError:
        raise AssertionError(f"not released: {before} -> {resources()}") from None


async def test_cancelling_connect_during_the_tcp_and_tls_handshakes() -> None:
    async with raw_tcp_server(silent) as port:
        await _cancel_during(f"ws://127.0.0.1:{port}/signaling", None)
        await _cancel_during(f"wss://127.0.0.1:{port}/signaling", None)


async def test_cancelling_connect_during_the_proxy_connect(sora_devserver: DevServer) -> None:
    async with raw_tcp_server(silent) as port:
        await _cancel_during(
            sora_devserver.signaling_url, None, proxy_url=f"http://127.0.0.1:{port}"
        )


async def test_cancelling_connect_while_waiting_for_the_offer() -> None:
    got_connect = asyncio.Event()

    async def scenario(server: HostileServer, ws: Any) -> None:
        await server.recv_until(ws, "connect")
        got_connect.set()
        await server.serve_disconnect(ws)

    async with HostileServer(scenario) as server:
        await _cancel_during(server.url, got_connect)
    assert server.received[-1] == {"type": "disconnect", "reason": "NO-ERROR"}


#: aioice 0.10 race: Connection.close() during the last ICE check lets connect()
#: start its consent-freshness task afterwards, on the closed connection; it
#: lives until consent fails (~30 s). Seen here as one task left behind.
ICE_CLOSE_RACE = (
    "aioice starts query_consent() after close() when the check list completed "
    "just before (closing while ICE finishes); aiortc's RTCPeerConnection leaves "
    "it running, the sora_async.rtc engine (absent here) stops it"
)


@pytest.mark.xfail(not RTC_ENGINE, reason=ICE_CLOSE_RACE, strict=False)
@pytest.mark.parametrize("mode", list(MODES))
async def test_cancelling_connect_while_negotiating(sora_devserver: DevServer, mode: str) -> None:
    before = resources()
    conn = Connection(sora_devserver.signaling_url, "recvonly", "cancel", **MODES[mode])
    events = Events(conn)
    task = asyncio.ensure_future(conn.connect())
    async with asyncio.timeout(20):
        await events.wait("set_offer")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await conn.wait_closed()
    assert len(events.of("disconnect")) == 1
    [(code, _message)] = events.of("disconnect")
    assert code in (DisconnectCode.CLOSE_SUCCEEDED, DisconnectCode.CLOSE_FAILED)
    await eventually(lambda: not sora_devserver.connections)
    try:
        await eventually(lambda: resources()["tasks"] <= before["tasks"], seconds=5)
    except TimeoutError:
        left = [t.get_coro() for t in asyncio.all_tasks()]
        raise AssertionError(f"tasks left behind: {left}") from None


# -- many cycles -------------------------------------------------------------------------


async def _settle(server: DevServer | None = None) -> dict[str, int]:
    """Resources once the last connection's server side and tasks are done."""
    if server is not None:
        await eventually(lambda: not server.connections)
    counts: list[int] = []

    def steady() -> bool:
        counts.append(len(asyncio.all_tasks()))
        return len(counts) > 10 and len(set(counts[-10:])) == 1

    await eventually(steady, seconds=10)
    return resources()


async def _assert_no_growth(
    before: dict[str, int], server: DevServer | None = None, *, rss_mb: int
) -> None:
    after = await _settle(server)
    if after["tasks"] > before["tasks"] or after["fds"] > before["fds"] + 2:
        await asyncio.sleep(2)  # a slow machine: give stragglers one more chance
        after = await _settle(server)
    print(f"resources before/after: {before} {after}")
    assert after["tasks"] <= before["tasks"], (before, after)
    assert after["threads"] <= before["threads"], (before, after)
    assert after["fds"] <= before["fds"] + 2, (before, after)
    assert after["rss_mb"] <= before["rss_mb"] + rss_mb, (before, after)


@pytest.mark.slow
@pytest.mark.timeout(1500)
async def test_500_connect_disconnect_cycles_leak_nothing(sora_devserver: DevServer) -> None:
    modes = list(MODES)

    async def cycle(i: int) -> None:
        conn = Connection(
            sora_devserver.signaling_url, "recvonly", f"cycle-{i % 4}", **MODES[modes[i % 3]]
        )
        async with asyncio.timeout(30):
            await conn.connect()
            await conn.disconnect()
        assert conn.disconnect_code is DisconnectCode.CLOSE_SUCCEEDED, conn.disconnect_message

    for i in range(30):  # warm-up: caches, executors, lazily created state
        await cycle(i)
    before = await _settle(sora_devserver)
    for i in range(30, 530):
        await cycle(i)
    await _assert_no_growth(before, sora_devserver, rss_mb=40)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_100_failed_connects_leak_nothing(sora_devserver_factory: Any, tmp_path: Any) -> None:
    pki = make_pki(tmp_path)
    tls = await sora_devserver_factory(tls_cert=pki.server_cert, tls_key=pki.server_key)

    async def bad_offer(server: HostileServer, ws: Any) -> None:
        await server.recv_until(ws, "connect")
        await ws.send('{"type": "offer", "sdp": 1}')
        await ws.wait_closed()

    async with HostileServer(bad_offer) as hostile, raw_tcp_server(silent) as silent_port:
        failures: list[tuple[str, dict[str, Any]]] = [
            ("ws://127.0.0.1:1/signaling", {}),  # refused
            (tls.signaling_url, {}),  # untrusted certificate
            (hostile.url, {}),  # invalid offer
            (f"ws://127.0.0.1:{silent_port}/s", {"websocket_connection_timeout": 0.3}),
        ]

        async def attempt(i: int) -> None:
            url, keywords = failures[i % len(failures)]
            conn = Connection(url, "recvonly", "fail", **keywords)
            async with asyncio.timeout(15):
                with pytest.raises(SoraConnectionError):
                    await conn.connect()
                await conn.wait_closed()

        for i in range(20):
            await attempt(i)
        before = await _settle()
        for i in range(100):
            await attempt(i)
        await _assert_no_growth(before, rss_mb=20)
