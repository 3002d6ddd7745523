"""Sora's HTTP API: ``POST /api`` with an ``x-sora-target`` header and a JSON body.

Implemented targets (request body → response body):

==========================================  =====================================================
``Sora_20151104.DisconnectConnection``      ``{channel_id, connection_id}`` → ``{}``; the WS closes
                                            1000 ``DISCONNECTED-API``
``Sora_20151104.DisconnectChannel``         ``{channel_id}`` → ``{}``; every connection as above
``Sora_20241218.RequestKeyFrame``           ``{channel_id, connection_id, rid?}`` → ``{}``
``Sora_20201013.ListChannelConnections``    ``{channel_id}`` → ``[{connection_id, client_id, ...}]``
``Sora_20170529.GetStatsConnection``        ``{channel_id, connection_id}`` → ``[RTCStats...]``
``Sora_20160711.PushChannel``               ``{channel_id, data}`` → ``{}``
``Sora_20160711.PushConnection``            ``{channel_id, connection_id, data}`` → ``{}``
``Sora_20251217.RequestSimulcastRid``       ``{channel_id, receiver_connection_id, rid,
                                            sender_connection_id?}`` → ``{}``
==========================================  =====================================================

Errors are JSON ``{"error_type": ..., "message": ...}``: 400 for an unknown
target, a body that is not a JSON object or a bad parameter, 404 for an
unknown channel or connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .channel import ChannelRegistry
from .session import SIMULCAST_RIDS, Session, SessionState

__all__ = ["TARGETS", "ApiError", "handle"]

log = logging.getLogger("sora_async.devserver")


class ApiError(Exception):
    """An API request that cannot be served; becomes a JSON error response."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


Body = dict[str, Any]
Handler = Callable[[ChannelRegistry, Body], Awaitable[Any]]


def _string(body: Body, key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(400, "INVALID-PARAMETER", f"{key} must be a non-empty string")
    return value


def _session(registry: ChannelRegistry, body: Body, key: str = "connection_id") -> Session:
    channel_id = _string(body, "channel_id")
    connection_id = _string(body, key)
    assert channel_id is not None and connection_id is not None
    session = registry.find(channel_id, connection_id)
    if session is None or session.state is SessionState.CLOSING:
        raise ApiError(
            404, "CONNECTION-NOT-FOUND", f"no connection {connection_id} in {channel_id!r}"
        )
    return session


def _live_session(registry: ChannelRegistry, body: Body, key: str = "connection_id") -> Session:
    session = _session(registry, body, key)
    if session.peer is None or session.state is not SessionState.CONNECTED:
        raise ApiError(
            404, "CONNECTION-NOT-FOUND", f"connection {session.connection_id} is not connected"
        )
    return session


async def disconnect_connection(registry: ChannelRegistry, body: Body) -> Any:
    _session(registry, body).end(1000, "DISCONNECTED-API")
    return {}


async def disconnect_channel(registry: ChannelRegistry, body: Body) -> Any:
    channel_id = _string(body, "channel_id")
    channel = registry.channels.get(channel_id or "")
    if channel is None:
        raise ApiError(404, "CHANNEL-NOT-FOUND", f"no channel {channel_id!r}")
    for session in list(channel.members.values()):
        session.end(1000, "DISCONNECTED-API")
    return {}


async def request_key_frame(registry: ChannelRegistry, body: Body) -> Any:
    session = _live_session(registry, body)
    rid = body.get("rid")
    if rid is not None and rid not in SIMULCAST_RIDS:
        raise ApiError(400, "INVALID-PARAMETER", f"rid must be one of {list(SIMULCAST_RIDS)}")
    if not session.send_video:
        raise ApiError(400, "INVALID-PARAMETER", "the connection does not send video")
    assert session.peer is not None
    session.peer.request_keyframe(rid)
    return {}


async def list_channel_connections(registry: ChannelRegistry, body: Body) -> Any:
    channel = registry.channels.get(_string(body, "channel_id") or "")
    if channel is None:
        return []
    return [session.api_description() for session in channel.live.values()]


async def get_stats_connection(registry: ChannelRegistry, body: Body) -> Any:
    session = _live_session(registry, body)
    assert session.peer is not None
    return await session.peer.get_stats()


def _push_data(body: Body) -> Any:
    if "data" not in body:
        raise ApiError(400, "INVALID-PARAMETER", "data is required")
    return body["data"]


async def push_channel(registry: ChannelRegistry, body: Body) -> Any:
    data = _push_data(body)
    channel = registry.channels.get(_string(body, "channel_id") or "")
    if channel is not None:
        channel.push(data)
    return {}


async def push_connection(registry: ChannelRegistry, body: Body) -> Any:
    data = _push_data(body)
    _live_session(registry, body).send_push(data)
    return {}


async def request_simulcast_rid(registry: ChannelRegistry, body: Body) -> Any:
    receiver = _live_session(registry, body, "receiver_connection_id")
    rid = body.get("rid")
    if rid not in (*SIMULCAST_RIDS, "none"):
        raise ApiError(400, "INVALID-PARAMETER", f"rid must be one of {[*SIMULCAST_RIDS, 'none']}")
    sender_id = _string(body, "sender_connection_id", required=False)
    if sender_id is not None and registry.find(receiver.channel_id, sender_id) is None:
        raise ApiError(404, "CONNECTION-NOT-FOUND", f"no sender {sender_id}")
    receiver.request_simulcast_rid(rid, sender_id)
    return {}


#: ``x-sora-target`` → handler.
TARGETS: dict[str, Handler] = {
    "Sora_20151104.DisconnectConnection": disconnect_connection,
    "Sora_20151104.DisconnectChannel": disconnect_channel,
    "Sora_20241218.RequestKeyFrame": request_key_frame,
    "Sora_20201013.ListChannelConnections": list_channel_connections,
    "Sora_20170529.GetStatsConnection": get_stats_connection,
    "Sora_20160711.PushChannel": push_channel,
    "Sora_20160711.PushConnection": push_connection,
    "Sora_20251217.RequestSimulcastRid": request_simulcast_rid,
}


def _error(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response({"error_type": error_type, "message": message}, status=status)


async def handle(request: web.Request, registry: ChannelRegistry) -> web.Response:
    """Serve one ``POST /api`` request."""
    target = request.headers.get("x-sora-target", "")
    handler = TARGETS.get(target)
    if handler is None:
        return _error(400, "UNKNOWN-TARGET", f"unknown x-sora-target {target!r}")
    try:
        body = json.loads(await request.text())
    except ValueError as exc:
        return _error(400, "INVALID-JSON", f"body is not JSON: {exc}")
    if not isinstance(body, dict):
        return _error(400, "INVALID-JSON", "body is not a JSON object")
    try:
        result = await handler(registry, body)
    except ApiError as exc:
        return _error(exc.status, exc.error_type, str(exc))
    except Exception as exc:
        log.exception("API %s failed", target)
        return _error(500, "INTERNAL-ERROR", repr(exc))
    log.info("API %s %s", target, json.dumps(body)[:200])
    return web.json_response(result)
