"""Self-tests of the official-client harness that need no dev server."""

from __future__ import annotations

import math
import os
import signal
import socket

import numpy as np
import pytest

from tests.official.harness import OfficialClient
from tests.official.runner import dominant_frequency, parse_stats


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parse_stats_accepts_bare_non_finite_numbers() -> None:
    text = '[{"id":"x","a":-inf,"b":inf,"c":nan,"d":"-inf in a string","e":-Infinity,"f":1.5}]'
    (entry,) = parse_stats(text)
    assert entry["a"] is None and entry["b"] is None and entry["c"] is None
    assert entry["d"] == "-inf in a string"
    assert entry["e"] is None
    assert entry["f"] == 1.5


def test_dominant_frequency_of_a_sine() -> None:
    rate = 48000
    t = np.arange(rate // 2) / rate
    assert math.isclose(dominant_frequency(np.sin(2 * np.pi * 440 * t), rate), 440, rel_tol=0.01)
    assert math.isclose(dominant_frequency(np.sin(2 * np.pi * 1000 * t), rate), 1000, rel_tol=0.01)


@pytest.mark.official
async def test_unreachable_server_reports_handshake_failure_and_exits_cleanly(
    official_client,
) -> None:
    url = f"ws://127.0.0.1:{_closed_port()}/signaling"
    async with official_client(
        signaling_urls=[url], role="sendrecv", channel_id="harness-self-test"
    ) as client:
        # Nothing to get or send on before connect(): both are harmless.
        assert await client.get_stats() == []
        assert await client.send_data_channel("#x", b"hello") is False

        await client.command("connect")
        event = await client.wait_for("disconnect", timeout=15)
        assert event["name"] == "WEBSOCKET_HANDSHAKE_FAILED"
        assert event["code"] == 4
        assert event["message"] == (
            f"Failed Websocket handshake: last_ec=Connection refused last_url={url}"
        )
        # The handshake never completed, so no WebSocket close is reported.
        assert client.events("ws_close") == []

        # disconnect() after the connection ended returns at once.
        assert await client.disconnect(timeout=10) is event
    assert client.returncode == 0
    assert client.events()[-1]["event"] == "exit"


@pytest.mark.official
async def test_connect_reports_the_disconnect_it_got_instead_of_timing_out() -> None:
    url = f"ws://127.0.0.1:{_closed_port()}/signaling"
    async with OfficialClient(signaling_urls=[url], role="recvonly", channel_id="c") as client:
        with pytest.raises(AssertionError, match="WEBSOCKET_HANDSHAKE_FAILED"):
            await client.connect(timeout=15)


@pytest.mark.official
async def test_wait_for_timeout_names_what_was_awaited_and_shows_recent_events() -> None:
    url = f"ws://127.0.0.1:{_closed_port()}/signaling"
    async with OfficialClient(signaling_urls=[url], role="recvonly", channel_id="c") as client:
        with pytest.raises(AssertionError) as info:
            await client.wait_for("notify", lambda e: True, timeout=0.5)
        text = str(info.value)
        assert "no notify matching <lambda at test_harness.py" in text
        assert '"event":"ready"' in text


@pytest.mark.official
async def test_bad_create_connection_keyword_fails_at_start() -> None:
    client = OfficialClient(
        signaling_urls=["ws://127.0.0.1:9/signaling"],
        role="recvonly",
        channel_id="c",
        no_such_keyword=1,
    )
    with pytest.raises(AssertionError, match="failed to start: TypeError"):
        await client.start()
    await client.close(check=False)
    assert client.returncode == 2


@pytest.mark.official
async def test_a_crashed_runner_fails_the_test_with_the_signal() -> None:
    client = OfficialClient(
        signaling_urls=["ws://127.0.0.1:9/signaling"], role="recvonly", channel_id="c"
    )
    await client.start()
    assert client.pid is not None
    os.kill(client.pid, signal.SIGABRT)
    with pytest.raises(AssertionError, match="process ended \\(killed by signal SIGABRT\\)"):
        await client.wait_for("notify", timeout=10)
    with pytest.raises(AssertionError, match="crashed: killed by signal SIGABRT"):
        await client.close()
