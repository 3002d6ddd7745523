"""200 connect/disconnect cycles leave no tasks, file descriptors or bookkeeping behind."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import tracemalloc
from typing import Any

import pytest

from sora_async.devserver import DevServer

from .support import (
    DevServerStarter,
    FakePeerFactory,
    SignalingClient,
    connect_message,
    join,
    wait_gone,
)

CYCLES = 200


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _settle() -> tuple[int, int]:
    # Let closed transports finish their callbacks before counting.
    for _ in range(5):
        await asyncio.sleep(0)
    gc.collect()
    return len(asyncio.all_tasks()), _open_fds()


async def _cycle(server: DevServer, mode: dict[str, Any]) -> None:
    client = await join(server, **mode)
    if mode:
        await client.wait_type("switched")
    await client.send({"type": "disconnect", "reason": "NO-ERROR"})
    assert await client.wait_closed() == (1000, "TYPE-DISCONNECT")
    await wait_gone(server, client.connection_id)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/fd")
async def test_connect_disconnect_cycles_do_not_leak(start_server: DevServerStarter) -> None:
    server = await start_server(peer_factory=FakePeerFactory(retain=False))
    modes: list[dict[str, Any]] = [
        {},
        {"data_channel_signaling": True, "ignore_disconnect_websocket": False},
    ]
    # Warm up (first-use allocations: codecs, logging handlers, connection pools).
    for mode in modes:
        await _cycle(server, mode)
    tracemalloc.start()
    try:
        tasks_before, fds_before = await _settle()
        memory_before = tracemalloc.get_traced_memory()[0]
        for index in range(CYCLES):
            await _cycle(server, modes[index % 2])
        tasks_after, fds_after = await _settle()
        growth = tracemalloc.get_traced_memory()[0] - memory_before
    finally:
        tracemalloc.stop()
    assert tasks_after <= tasks_before
    assert fds_after <= fds_before + 2, "a few fds of noise at most"
    # Per cycle well under a kilobyte: nothing per connection is kept.
    assert growth < CYCLES * 512, f"{growth} bytes retained after {CYCLES} cycles"
    assert server.connections == {} and server.registry.channels == {}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/fd")
async def test_real_media_plane_releases_its_sockets(start_server: DevServerStarter) -> None:
    # The real ServerPeer gathers ICE (UDP sockets) for every offer; abandoned
    # connections must give them back.
    server = await start_server(peer_factory=None)
    for _ in range(2):
        client = await SignalingClient.open(server.signaling_url)
        await client.send(connect_message(role="recvonly"))
        await client.wait_type("offer")
        await client.close()
    tasks_before, fds_before = await _settle()
    for _ in range(50):
        client = await SignalingClient.open(server.signaling_url)
        await client.send(connect_message(role="recvonly", data_channel_signaling=True))
        offer = await client.wait_type("offer")
        await client.close()
        await wait_gone(server, offer["connection_id"])
    tasks_after, fds_after = await _settle()
    assert tasks_after <= tasks_before
    assert fds_after <= fds_before + 2
