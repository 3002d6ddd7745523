"""W3C webrtc-stats shaped reports from an aiortc peer connection.

aiortc's ``getStats()`` returns dataclasses with ``datetime`` timestamps and
jitter in RTP clock units, and has no ``data-channel``, ``candidate-pair`` or
``peer-connection`` entries (``aiortc-notes.md`` A.5). This module turns what
aiortc has into JSON-ready dicts with the W3C names: ``timestamp`` in
milliseconds since the Unix epoch, ``jitter`` in seconds, plus the entries a
Sora ``pong``/``stats`` reply is expected to carry. Full RTP coverage
(codec, frames, bitrate...) belongs to the media layer.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection

from . import _aiortc_seam as seam

#: RTP clock rates of the codecs aiortc negotiates (Opus 48 kHz, video 90 kHz).
_CLOCK_RATE = {"audio": 48000, "video": 90000}


@dataclass
class DataChannelCounters:
    """What a ``data-channel`` stats entry reports; updated by the connection."""

    label: str
    protocol: str = ""
    channel_id: int | None = None
    state: str = "connecting"
    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0

    def sent(self, size: int) -> None:
        """Count one message of ``size`` bytes sent."""
        self.messages_sent += 1
        self.bytes_sent += size

    def received(self, size: int) -> None:
        """Count one message of ``size`` bytes received."""
        self.messages_received += 1
        self.bytes_received += size


def now_ms() -> float:
    """A W3C ``DOMHighResTimeStamp`` for "now": milliseconds since the Unix epoch."""
    return time.time() * 1000.0


async def collect(
    pc: RTCPeerConnection | None, data_channels: Iterable[DataChannelCounters] = ()
) -> list[dict[str, Any]]:
    """A stats report for ``pc`` as a list of W3C-shaped dicts (``[]`` without a PC)."""
    if pc is None:
        return []
    timestamp = now_ms()
    channels = list(data_channels)
    reports: list[dict[str, Any]] = [
        {
            "id": "P",
            "type": "peer-connection",
            "timestamp": timestamp,
            "dataChannelsOpened": sum(1 for c in channels if c.state in ("open", "closed")),
            "dataChannelsClosed": sum(1 for c in channels if c.state == "closed"),
        }
    ]
    for transport in seam.transports(pc):
        reports.extend(_transport_entries(transport, timestamp))
    for channel in channels:
        reports.append(_data_channel_entry(channel, timestamp))
    try:
        rtp = list((await pc.getStats()).values())
    except Exception:  # closed while collecting: report what we have
        rtp = []
    for stats in rtp:
        if stats.type != "transport":  # already reported, with more detail
            reports.append(_rtp_entry(stats))
    return reports


def _transport_entries(transport: Any, timestamp: float) -> list[dict[str, Any]]:
    transport_id = seam.transport_stats_id(transport)
    entry: dict[str, Any] = {"id": transport_id, "type": "transport", "timestamp": timestamp}
    counters = seam.transport_stats(transport)
    for key in ("packetsSent", "packetsReceived", "bytesSent", "bytesReceived", "iceRole"):
        if key in counters:
            entry[key] = counters[key]
    entry["dtlsState"] = transport.state
    ice = transport.transport
    entry["iceState"] = ice.state
    reports = [entry]
    pair = seam.nominated_pair(ice)
    if pair is not None:
        pair_id = f"CP{transport_id}"
        local_id, remote_id = f"I{transport_id}L", f"I{transport_id}R"
        entry["selectedCandidatePairId"] = pair_id
        reports.append(
            {
                "id": pair_id,
                "type": "candidate-pair",
                "timestamp": timestamp,
                "transportId": transport_id,
                "localCandidateId": local_id,
                "remoteCandidateId": remote_id,
                "state": pair.state,
                "nominated": pair.nominated,
            }
        )
        for candidate_id, kind, candidate in (
            (local_id, "local-candidate", pair.local),
            (remote_id, "remote-candidate", pair.remote),
        ):
            reports.append(
                {
                    "id": candidate_id,
                    "type": kind,
                    "timestamp": timestamp,
                    "transportId": transport_id,
                    **candidate,
                }
            )
    return reports


def _data_channel_entry(channel: DataChannelCounters, timestamp: float) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": f"D{channel.channel_id if channel.channel_id is not None else channel.label}",
        "type": "data-channel",
        "timestamp": timestamp,
        "label": channel.label,
        "protocol": channel.protocol,
        "state": channel.state,
        "messagesSent": channel.messages_sent,
        "bytesSent": channel.bytes_sent,
        "messagesReceived": channel.messages_received,
        "bytesReceived": channel.bytes_received,
    }
    if channel.channel_id is not None:
        entry["dataChannelIdentifier"] = channel.channel_id
    return entry


def _rtp_entry(stats: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for field in dataclasses.fields(stats):
        value = getattr(stats, field.name)
        if value is None:
            continue
        if isinstance(value, datetime.datetime):
            value = value.timestamp() * 1000.0
        entry[field.name] = value
    if "jitter" in entry and entry.get("kind") in _CLOCK_RATE:
        # aiortc reports RFC 3550 jitter in timestamp units; W3C wants seconds.
        entry["jitter"] = entry["jitter"] / _CLOCK_RATE[entry["kind"]]
    return entry
