"""Turn W3C stats reports into what a person wants to read: codec, fps, bit rate, RTT.

``Connection.get_stats()`` returns cumulative counters (``bytesSent``,
``framesDecoded``...). :class:`StatsTracker` keeps the previous report of one
connection and derives rates from the difference, so call it every second or
so. The demo's live view, ``sora-async --stats`` and the notebook use it.

Example::

    tracker = StatsTracker()
    while True:
        summary = tracker.update(await conn.get_stats())
        for stream in summary.streams:
            print(stream.direction, stream.kind, stream.codec, stream.bitrate_kbps, stream.fps)
        await asyncio.sleep(1)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StreamStats:
    """One RTP stream of a connection, as of the last :meth:`StatsTracker.update`.

    ``direction`` is ``"send"`` (an ``outbound-rtp``) or ``"recv"`` (an
    ``inbound-rtp``); ``codec`` is the MIME subtype (``"VP8"``, ``"opus"``);
    ``rid`` is the simulcast layer of a sent stream, if any. Rates are None
    until two reports were seen.
    """

    kind: str
    direction: str
    ssrc: int | None = None
    codec: str | None = None
    rid: str | None = None
    bytes: int = 0
    packets: int = 0
    packets_lost: int = 0
    bitrate_kbps: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    implementation: str | None = None

    @property
    def resolution(self) -> str | None:
        """``"640x360"``, or None for audio and before the first frame."""
        if self.width and self.height:
            return f"{self.width}x{self.height}"
        return None


@dataclass
class ConnectionStats:
    """The summary of one connection's stats report (see :class:`StatsTracker`)."""

    timestamp: float
    streams: list[StreamStats] = field(default_factory=list)
    rtt_ms: float | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    send_kbps: float | None = None
    recv_kbps: float | None = None
    available_outgoing_kbps: float | None = None
    data_channels: dict[str, dict[str, int]] = field(default_factory=dict)

    def stream(self, kind: str, direction: str) -> StreamStats | None:
        """The first stream of that ``kind`` ("audio"/"video") and ``direction`` ("send"/"recv")."""
        return next((s for s in self.streams if s.kind == kind and s.direction == direction), None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``sora-async --stats`` prints, one per line)."""
        return asdict(self)


class StatsTracker:
    """Derives rates from successive ``get_stats()`` reports of one connection."""

    def __init__(self) -> None:
        self._previous: dict[str, tuple[float, Mapping[str, Any]]] = {}
        self._previous_totals: tuple[float, int, int] | None = None

    def update(
        self, reports: Iterable[Mapping[str, Any]], now: float | None = None
    ) -> ConnectionStats:
        """Summarise ``reports`` (one ``get_stats()`` result) against the previous call.

        ``now`` is seconds on any monotonic clock (default ``time.monotonic()``).
        """
        now = time.monotonic() if now is None else now
        entries = list(reports)
        codecs = {
            str(e.get("id")): str(e.get("mimeType", "")).split("/")[-1]
            for e in entries
            if e.get("type") == "codec"
        }
        summary = ConnectionStats(timestamp=time.time())
        previous = self._previous
        current: dict[str, tuple[float, Mapping[str, Any]]] = {}
        for entry in entries:
            kind_of_entry = entry.get("type")
            if kind_of_entry in ("outbound-rtp", "inbound-rtp"):
                stream = _stream(entry, codecs)
                key = str(entry.get("id"))
                current[key] = (now, entry)
                if key in previous:
                    _rates(stream, entry, *previous[key], now)
                elif stream.fps is None and entry.get("framesPerSecond") is not None:
                    stream.fps = float(entry["framesPerSecond"])
                summary.streams.append(stream)
                if stream.direction == "send":
                    summary.bytes_sent += stream.bytes
                else:
                    summary.bytes_received += stream.bytes
            elif kind_of_entry == "candidate-pair" and entry.get("nominated", True):
                rtt = entry.get("currentRoundTripTime")
                if rtt is not None:
                    summary.rtt_ms = float(rtt) * 1000
                available = entry.get("availableOutgoingBitrate")
                if available is not None:
                    summary.available_outgoing_kbps = float(available) / 1000
            elif kind_of_entry == "remote-inbound-rtp" and summary.rtt_ms is None:
                rtt = entry.get("roundTripTime")
                if rtt is not None:
                    summary.rtt_ms = float(rtt) * 1000
            elif kind_of_entry == "data-channel":
                summary.data_channels[str(entry.get("label"))] = {
                    "messages_sent": int(entry.get("messagesSent", 0)),
                    "messages_received": int(entry.get("messagesReceived", 0)),
                }
        if self._previous_totals is not None:
            then, sent, received = self._previous_totals
            elapsed = now - then
            if elapsed > 0:
                summary.send_kbps = max(0, summary.bytes_sent - sent) * 8 / elapsed / 1000
                summary.recv_kbps = max(0, summary.bytes_received - received) * 8 / elapsed / 1000
        self._previous = current
        self._previous_totals = (now, summary.bytes_sent, summary.bytes_received)
        summary.streams.sort(key=lambda s: (s.direction, s.kind, s.rid or ""))
        return summary


def _stream(entry: Mapping[str, Any], codecs: Mapping[str, str]) -> StreamStats:
    sending = entry.get("type") == "outbound-rtp"
    width, height = entry.get("frameWidth"), entry.get("frameHeight")
    frames = entry.get("framesEncoded" if sending else "framesDecoded")
    return StreamStats(
        kind=str(entry.get("kind", "")),
        direction="send" if sending else "recv",
        ssrc=entry.get("ssrc"),
        codec=codecs.get(str(entry.get("codecId"))),
        rid=entry.get("rid"),
        bytes=int(entry.get("bytesSent" if sending else "bytesReceived", 0)),
        packets=int(entry.get("packetsSent" if sending else "packetsReceived", 0)),
        packets_lost=int(entry.get("packetsLost", 0) or 0),
        width=int(width) if width else None,
        height=int(height) if height else None,
        frames=int(frames) if frames is not None else None,
        implementation=entry.get("encoderImplementation" if sending else "decoderImplementation"),
    )


def _rates(
    stream: StreamStats,
    entry: Mapping[str, Any],
    then: float,
    before: Mapping[str, Any],
    now: float,
) -> None:
    elapsed = now - then
    if elapsed <= 0:
        return
    sending = stream.direction == "send"
    byte_key = "bytesSent" if sending else "bytesReceived"
    delta = int(entry.get(byte_key, 0)) - int(before.get(byte_key, 0))
    stream.bitrate_kbps = max(0, delta) * 8 / elapsed / 1000
    if stream.kind == "video":
        frame_key = "framesEncoded" if sending else "framesDecoded"
        if frame_key in entry and frame_key in before:
            stream.fps = max(0, int(entry[frame_key]) - int(before[frame_key])) / elapsed
        elif entry.get("framesPerSecond") is not None:
            stream.fps = float(entry["framesPerSecond"])
