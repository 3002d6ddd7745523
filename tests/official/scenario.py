"""Helpers shared by the scenario suites that drive clients against the dev server
(``tests/test_devserver_official.py``, ``tests/test_compat_differential.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from sora_async.devserver import DevServer

# The tail of the message for a server close 1000 DISCONNECTED-API; "ec=" is boost.beast's
# text for websocket::error::closed (a clean close handshake).
CLOSED_API = (
    "ec=The WebSocket stream was gracefully closed at both endpoints "
    "wscode=1000 wsreason=DISCONNECTED-API"
)


@contextlib.asynccontextmanager
async def dev_server(**options: Any) -> AsyncIterator[DevServer]:
    """``DevServer(port=0, **options)`` with bounded start and stop."""
    async with asyncio.timeout(15):
        server = DevServer(port=0, **options)
        await server.__aenter__()
    try:
        yield server
    finally:
        async with asyncio.timeout(15):
            await server.__aexit__(None, None, None)


async def sora_api(server: Any, target: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST to the dev server's Sora HTTP API; returns (status, parsed JSON or text)."""
    async with asyncio.timeout(10), aiohttp.ClientSession() as session:
        async with session.post(
            server.api_url, headers={"x-sora-target": target}, data=json.dumps(body)
        ) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text


def by_id(stats: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in stats if "id" in s}


def rtp_streams(stats: list[dict[str, Any]], type_: str, kind: str) -> list[dict[str, Any]]:
    return [s for s in stats if s.get("type") == type_ and s.get("kind") == kind]


def mime_types(stats: list[dict[str, Any]], type_: str, kind: str) -> set[str]:
    """mimeTypes of the codecs that the ``type_`` (outbound-rtp/inbound-rtp) streams use."""
    codecs = by_id(stats)
    return {
        codecs[s["codecId"]]["mimeType"].lower()
        for s in rtp_streams(stats, type_, kind)
        if s.get("codecId") in codecs
    }


def total(stats: list[dict[str, Any]], type_: str, kind: str, field: str) -> int:
    return sum(int(s.get(field) or 0) for s in rtp_streams(stats, type_, kind))


def notify_of(event_type: str, connection_id: str | None) -> Callable[[dict[str, Any]], bool]:
    def match(e: dict[str, Any]) -> bool:
        m = e["message"]
        return m.get("event_type") == event_type and m.get("connection_id") == connection_id

    match.__name__ = f"notify {event_type} of {connection_id}"
    return match


def signaling(type_: str, direction: str) -> Callable[[dict[str, Any]], bool]:
    def match(e: dict[str, Any]) -> bool:
        m = e["message"]
        return e["direction"] == direction and isinstance(m, dict) and m.get("type") == type_

    match.__name__ = f"{direction} {type_}"
    return match


def counters(message: dict[str, Any]) -> tuple[Any, ...]:
    return (
        message.get("channel_connections"),
        message.get("channel_sendrecv_connections"),
        message.get("channel_sendonly_connections"),
        message.get("channel_recvonly_connections"),
    )
