"""Record real signaling transcripts for ``tests/test_signaling_fuzz.py``.

Runs ``sora_async`` clients against the dev server (WebSocket-only, hybrid and
DataChannel-only signaling, compression, messaging, re-offers from joining
senders, pings, a redirect, a server-side kick) and writes every input the
signaling machine received, in order, to ``signaling_transcripts.json``::

    python tests/data/record_transcripts.py

The fuzz test mutates these (drop, duplicate, reorder, corrupt, retype...)
and replays them against the sans-I/O machine.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiortc.mediastreams import AudioStreamTrack

from sora_async import Connection
from sora_async.devserver import DevServer
from sora_async.signaling.states import INPUTS

OUT = Path(__file__).with_name("signaling_transcripts.json")


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def record(conn: Connection, name: str, sessions: list[dict[str, Any]]) -> None:
    proto = conn._protocol
    inputs: list[Any] = []
    config = proto._config
    sessions.append(
        {
            "name": name,
            "signaling_urls": list(config.signaling_urls),
            "connect": _encode(dict(config.connect_message)),
            "inputs": inputs,
        }
    )
    for input_name in INPUTS:
        method = getattr(proto, input_name)

        def wrapper(*args: Any, _method: Any = method, _name: str = input_name) -> Any:
            inputs.append([_name, *_encode(list(args))])
            return _method(*args)

        setattr(proto, input_name, wrapper)


async def _api(server: DevServer, target: str, body: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.api_url, headers={"x-sora-target": target}, json=body) as response,
    ):
        assert response.status == 200, await response.text()


async def main() -> None:
    sessions: list[dict[str, Any]] = []
    chat = [{"label": "#chat", "direction": "sendrecv", "compress": True}]
    managed = [
        {"label": label, "direction": d, "compress": True}
        for label, d in (("signaling", "sendrecv"), ("notify", "recvonly"), ("push", "recvonly"))
    ]
    async with (
        DevServer(ping_interval=0.5) as server,
        DevServer(data_channel_signaling_close_message=True) as closing,
    ):
        modes = {
            "websocket": {"data_channel_signaling": False},
            "hybrid": {"data_channel_signaling": True, "ignore_disconnect_websocket": False},
            "datachannel": {"data_channel_signaling": True, "ignore_disconnect_websocket": True},
        }
        for mode, keywords in modes.items():
            conn = Connection(
                server.signaling_url,
                "sendrecv",
                f"rec-{mode}",
                video=False,
                data_channels=chat + (managed if mode == "datachannel" else []),
                metadata={"access_token": "recorded"},
                **keywords,
            )
            record(conn, mode, sessions)
            other = Connection(  # publishes audio: re-offers for conn
                server.signaling_url,
                "sendrecv",
                f"rec-{mode}",
                video=False,
                audio_source=AudioStreamTrack(),
                data_channels=chat,
                **keywords,
            )
            async with asyncio.timeout(30):
                await conn.connect()
                await asyncio.sleep(1.2)  # pings on the WebSocket
                await other.connect()  # notify, maybe a re-offer
                await asyncio.sleep(1.0)
                await other.send_data_channel("#chat", b"hello from the other side")
                await _api(
                    server,
                    "Sora_20160711.PushChannel",
                    {"channel_id": f"rec-{mode}", "data": {"n": 1}},
                )
                await asyncio.sleep(0.5)
                await other.disconnect()
                await asyncio.sleep(0.5)
                await conn.disconnect()

        # Re-offers: a recvonly that sees senders come and go.
        recv = Connection(server.signaling_url, "recvonly", "rec-reoffer")
        record(recv, "reoffers", sessions)
        async with asyncio.timeout(60):
            await recv.connect()
            for _ in range(2):
                sender = Connection(
                    server.signaling_url,
                    "sendonly",
                    "rec-reoffer",
                    video=False,
                    audio_source=AudioStreamTrack(),
                )
                await sender.connect()
                await asyncio.sleep(0.8)
                await sender.disconnect()
                await asyncio.sleep(0.8)
            await recv.disconnect()

        # A DataChannel-only session kicked by the server ("close" on DC signaling).
        kicked = Connection(
            closing.signaling_url,
            "recvonly",
            "rec-close",
            data_channel_signaling=True,
            ignore_disconnect_websocket=True,
            data_channels=managed,
        )
        record(kicked, "server-close", sessions)
        switched = asyncio.Event()
        kicked.on("switched", lambda _message: switched.set())
        async with asyncio.timeout(30):
            await kicked.connect()
            await switched.wait()
            await asyncio.sleep(0.5)
            await _api(
                closing,
                "Sora_20151104.DisconnectConnection",
                {"channel_id": "rec-close", "connection_id": kicked.connection_id},
            )
            await kicked.wait_closed()

        # A redirect.
        async with DevServer(redirect_to=server.signaling_url) as front:
            redirected = Connection(front.signaling_url, "recvonly", "rec-redirect")
            record(redirected, "redirect", sessions)
            async with asyncio.timeout(30):
                await redirected.connect()
                await redirected.disconnect()

    OUT.write_text(json.dumps(sessions, indent=1, ensure_ascii=False) + "\n")
    counts = {s["name"]: len(s["inputs"]) for s in sessions}
    print(f"wrote {OUT} {counts}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
