"""The command line, the options mapping, and the pytest fixtures users get."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from sora_async.devserver import BackgroundDevServer, DevServer, DevServerOptions
from sora_async.devserver.__main__ import build_parser, main, options_from_args

from .support import STEP, SignalingClient, connect_message


def test_every_cli_flag_maps_to_an_option() -> None:
    args = build_parser().parse_args(
        [
            "--host", "0.0.0.0", "--port", "0", "--secret", "s",
            "--tls-cert", "c.pem", "--tls-key", "k.pem", "--client-ca", "ca.pem",
            "--redirect-to", "wss://b/signaling", "--data-channel-signaling-close-message",
            "--connection-lifetime", "30", "--ping-interval", "2", "--log-level", "debug",
        ]
    )  # fmt: skip
    assert options_from_args(args) == DevServerOptions(
        host="0.0.0.0",
        port=0,
        secret="s",
        tls_cert="c.pem",
        tls_key="k.pem",
        client_ca="ca.pem",
        redirect_to="wss://b/signaling",
        data_channel_signaling_close_message=True,
        connection_lifetime=30.0,
        ping_interval=2.0,
    )
    assert args.log_level == "DEBUG"
    defaults = options_from_args(build_parser().parse_args([]))
    assert (defaults.host, defaults.port, defaults.ping_interval) == ("127.0.0.1", 5000, 5.0)


def test_media_addresses_follow_the_bind_address() -> None:
    assert DevServerOptions(host="127.0.0.1").media_addresses() == ["127.0.0.1"]
    assert DevServerOptions(host="localhost").media_addresses() == ["127.0.0.1"]
    assert DevServerOptions(host="0.0.0.0").media_addresses() is None
    assert DevServerOptions(host="0.0.0.0", ice_addresses=("10.0.0.2",)).media_addresses() == [
        "10.0.0.2"
    ]


async def test_cli_serves_until_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sora_async.devserver", "--port", "0", "--log-level", "WARNING",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.startswith("signaling: ws://127.0.0.1:")
        url = line.split(" ", 1)[1].strip()
        api_line = (await asyncio.wait_for(process.stdout.readline(), STEP)).decode()
        assert api_line.strip() == "api: " + url.replace("ws://", "http://").replace(
            "/signaling", "/api"
        )
        client = await SignalingClient.open(url)
        await client.send(connect_message(role="recvonly"))
        assert (await client.wait_type("offer"))["type"] == "offer"
        process.send_signal(signal.SIGTERM)
        code, _reason = await client.wait_closed(limit=15)
        assert code == 1001
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_cli_refuses_half_tls() -> None:
    with pytest.raises(SystemExit):
        main(["--tls-cert", "only-cert.pem"])


async def test_sora_devserver_fixture_is_started(sora_devserver: DevServer) -> None:
    assert sora_devserver.signaling_url.startswith("ws://127.0.0.1:")
    assert sora_devserver.api_url.endswith("/api")
    client = await SignalingClient.open(sora_devserver.signaling_url)
    await client.send({"type": "pong"})
    assert await client.wait_closed() == (4490, "INVALID-MESSAGE")


def test_background_server_for_synchronous_tests(
    sora_devserver_thread: BackgroundDevServer,
) -> None:
    assert sora_devserver_thread.port > 0
    assert sora_devserver_thread.connections == {}

    async def refused() -> tuple[int | None, str | None]:
        client = await SignalingClient.open(sora_devserver_thread.signaling_url)
        await client.send_raw("junk")
        return await client.wait_closed()

    assert asyncio.run(refused()) == (4490, "INVALID-MESSAGE")


async def test_servers_restart_and_refuse_double_start() -> None:
    server = DevServer(port=0, ping_interval=0)
    async with server:
        with pytest.raises(RuntimeError):
            await server.start()
    with pytest.raises(RuntimeError):
        _ = server.port
    async with server:
        assert server.port > 0
