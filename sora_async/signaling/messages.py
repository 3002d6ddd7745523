"""Building and parsing Sora signaling messages (no I/O).

Everything here is a pure function of its arguments: JSON text in, Python
values out, and the reverse. The wire formats are described in
``sora-protocol.md`` §2-§3 and §7; the exact strings of the disconnect
messages were read off the official client (``sora_sdk`` 2025.4.0, i.e. the
Sora C++ SDK) by running it against small local servers.
"""

from __future__ import annotations

import json
import urllib.parse
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..enums import SORA_MANAGED_LABELS

#: Message types reported through the ``signaling_message`` event. The official
#: client reports exactly these (observed: ``ping``/``pong``/``notify``/``push``/
#: ``switched`` never reach ``on_signaling_message``).
SIGNALING_MESSAGE_TYPES = frozenset(
    {
        "connect",
        "redirect",
        "offer",
        "answer",
        "candidate",
        "re-offer",
        "re-answer",
        "update",
        "disconnect",
        "close",
    }
)

#: Boost.Beast's text for ``websocket::error::closed``: the official client
#: prints it as ``ec=`` whenever the server closed the WebSocket with a close
#: frame (observed with 1000 and 4490).
EC_GRACEFULLY_CLOSED = "The WebSocket stream was gracefully closed at both endpoints"
#: Boost.Asio's text for ``error::eof``: the official client prints it when the
#: TCP connection ended without a close frame (observed: ``wscode=0``).
EC_END_OF_FILE = "End of file"
#: Boost.Asio's text for ``error::operation_aborted``: printed when a wait timed
#: out and the socket was cancelled (observed after ``websocket_close_timeout``).
EC_OPERATION_CANCELED = "Operation canceled"

#: ``ws_close`` reported when the client closed the WebSocket itself (after
#: ``switched`` with ``ignore_disconnect_websocket`` or after ``redirect``).
SELF_CLOSED = (1000, "SELF-CLOSED")
#: ``ws_close`` reported when Sora did not close the WebSocket in time.
DISCONNECT_WAIT_TIMEOUT = (4999, "DISCONNECT-WAIT-TIMEOUT-ERROR")


#: Largest DataChannel message accepted after zlib inflation (a zlib bomb guard).
MAX_INFLATED_SIZE = 8 << 20


class MessageError(ValueError):
    """A received message is not valid JSON or lacks a required member."""


@dataclass(frozen=True)
class DataChannelSpec:
    """One entry of the offer's ``data_channels``: how Sora set up a label.

    ``direction`` is from the client's point of view. ``compress`` means every
    message on the label, both ways, is one zlib stream (RFC 1950).
    """

    label: str
    direction: str = "sendrecv"
    compress: bool = False
    header: tuple[Mapping[str, Any], ...] = ()

    @property
    def managed(self) -> bool:
        """True for labels Sora itself uses (``signaling``, ``notify``, ...)."""
        return not self.label.startswith("#")


def dumps(message: Mapping[str, Any]) -> str:
    """Serialize a message the way the SDKs do: compact JSON, UTF-8 kept."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def loads(text: str | bytes) -> dict[str, Any]:
    """Parse one signaling message; it must be a JSON object with a string ``type``.

    Raises :class:`MessageError` naming the problem (never quoting the text).
    """
    try:
        message = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise MessageError("not UTF-8") from None
    except RecursionError:
        raise MessageError("invalid JSON: nested too deeply") from None
    except ValueError as exc:
        raise MessageError(f"invalid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise MessageError(f"not a JSON object but {json_type(message)}")
    if not isinstance(message.get("type"), str):
        raise MessageError(
            f"'type' must be a string, got {json_type(message.get('type'), 'type' in message)}"
        )
    return message


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_type(value: Any, present: bool = True) -> str:
    """The JSON type of ``value`` in words, for error messages (never the value itself)."""
    if not present:
        return "nothing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# -- validation of received messages --------------------------------------------


def _problem(where: str, expected: str, container: Mapping[str, Any], key: str) -> str:
    return f"'{where}' must be {expected}, got {json_type(container.get(key), key in container)}"


def _optional(container: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> bool:
    value = container.get(key)
    if value is None:
        return True
    if kind is int or kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind)


def offer_problem(message: Mapping[str, Any]) -> str | None:
    """What is wrong with an ``offer`` (§3.1), or None.

    Required: ``sdp`` and ``connection_id`` strings (the C++ SDK requires both).
    Optional members the client reads must have the right type when present;
    ``null`` counts as absent; unknown members are ignored.
    """
    if not isinstance(message.get("sdp"), str):
        return _problem("sdp", "a string", message, "sdp")
    connection_id = message.get("connection_id")
    if not isinstance(connection_id, str) or not connection_id:
        return _problem("connection_id", "a non-empty string", message, "connection_id")
    for key in ("client_id", "bundle_id", "session_id", "channel_id", "version"):
        if not _optional(message, key, str):
            return _problem(key, "a string", message, key)
    for key in ("simulcast", "spotlight", "data_channel_signaling", "ignore_disconnect_websocket"):
        if not _optional(message, key, bool):
            return _problem(key, "a boolean", message, key)
    return (
        _config_problem(message)
        or _mid_problem(message)
        or _data_channels_problem(message)
        or _encodings_problem(message)
    )


def _config_problem(message: Mapping[str, Any]) -> str | None:
    config = message.get("config")
    if config is None:
        return None
    if not isinstance(config, dict):
        return _problem("config", "an object", message, "config")
    if not _optional(config, "iceTransportPolicy", str):
        return _problem("config.iceTransportPolicy", "a string", config, "iceTransportPolicy")
    servers = config.get("iceServers")
    if servers is None:
        return None
    if not isinstance(servers, list):
        return _problem("config.iceServers", "an array", config, "iceServers")
    for index, server in enumerate(servers):
        where = f"config.iceServers[{index}]"
        if not isinstance(server, dict):
            return f"'{where}' must be an object, got {json_type(server)}"
        urls = server.get("urls")
        if not (
            isinstance(urls, str)
            or (isinstance(urls, list) and all(isinstance(url, str) for url in urls))
        ):
            return _problem(f"{where}.urls", "a string or an array of strings", server, "urls")
        for key in ("username", "credential"):
            if not _optional(server, key, str):
                return _problem(f"{where}.{key}", "a string", server, key)
    return None


def _mid_problem(message: Mapping[str, Any]) -> str | None:
    mid = message.get("mid")
    if mid is None:
        return None
    if not isinstance(mid, dict):
        return _problem("mid", "an object", message, "mid")
    for kind in mid:
        if not _optional(mid, kind, str):
            return _problem(f"mid.{kind}", "a string", mid, kind)
    return None


def _data_channels_problem(message: Mapping[str, Any]) -> str | None:
    entries = message.get("data_channels")
    if entries is None:
        return None
    if not isinstance(entries, list):
        return _problem("data_channels", "an array", message, "data_channels")
    for index, entry in enumerate(entries):
        where = f"data_channels[{index}]"
        if not isinstance(entry, dict):
            return f"'{where}' must be an object, got {json_type(entry)}"
        label = entry.get("label")
        if not isinstance(label, str) or not label:
            return _problem(f"{where}.label", "a non-empty string", entry, "label")
        if not _optional(entry, "direction", str):
            return _problem(f"{where}.direction", "a string", entry, "direction")
        if not _optional(entry, "compress", bool):
            return _problem(f"{where}.compress", "a boolean", entry, "compress")
        if not _optional(entry, "header", list):
            return _problem(f"{where}.header", "an array", entry, "header")
    return None


def _encodings_problem(message: Mapping[str, Any]) -> str | None:
    encodings = message.get("encodings")
    if encodings is None:
        return None
    if not isinstance(encodings, list):
        return _problem("encodings", "an array", message, "encodings")
    for index, encoding in enumerate(encodings):
        if not isinstance(encoding, dict):
            return f"'encodings[{index}]' must be an object, got {json_type(encoding)}"
    return None


def reoffer_problem(message: Mapping[str, Any]) -> str | None:
    """What is wrong with a ``re-offer``/``update`` (§3.3), or None."""
    if not isinstance(message.get("sdp"), str):
        return _problem("sdp", "a string", message, "sdp")
    return None


def notify_problem(message: Mapping[str, Any]) -> str | None:
    """What is wrong with a ``notify`` (§3.6), or None.

    Every notify has a string ``event_type``; unknown event types and keys are
    fine. A ``connection_id``, when present, is a string (the client compares
    it with its own to know it joined).
    """
    if not isinstance(message.get("event_type"), str):
        return _problem("event_type", "a string", message, "event_type")
    if not _optional(message, "connection_id", str):
        return _problem("connection_id", "a string", message, "connection_id")
    return None


def encode_data_channel_payload(payload: bytes, *, compress: bool) -> bytes:
    """Frame one DataChannel message: zlib (RFC 1950) when the label is compressed.

    ``zlib.compress`` writes the 2-byte header and the Adler-32 trailer that the
    C++ SDK's ``compress2`` and the JS SDK's ``CompressionStream("deflate")``
    produce (``sora-protocol.md`` §7.3).
    """
    return zlib.compress(payload) if compress else payload


def decode_data_channel_payload(payload: bytes | str, *, compress: bool) -> bytes:
    """Undo :func:`encode_data_channel_payload`; text frames are taken as UTF-8.

    Sora sends uncompressed messages as text and compressed ones as binary; a
    robust client accepts either on every label (``sora-protocol.md`` §7.3).
    Raises :class:`MessageError` for a payload that is not a zlib stream.
    """
    data = payload.encode() if isinstance(payload, str) else bytes(payload)
    if not compress:
        return data
    inflater = zlib.decompressobj()
    try:
        inflated = inflater.decompress(data, MAX_INFLATED_SIZE + 1)
    except zlib.error as exc:
        raise MessageError(f"invalid zlib payload: {exc}") from None
    if len(inflated) > MAX_INFLATED_SIZE:
        raise MessageError(f"zlib payload inflates to more than {MAX_INFLATED_SIZE} bytes")
    if not inflater.eof:
        raise MessageError("invalid zlib payload: incomplete or truncated stream")
    return inflated


def parse_data_channel_specs(offer: Mapping[str, Any]) -> dict[str, DataChannelSpec]:
    """Read ``offer["data_channels"]`` into ``label -> DataChannelSpec``.

    The offer is authoritative: it may differ from what the client asked for
    (``sora-protocol.md`` §7.2). Malformed entries are skipped.
    """
    specs: dict[str, DataChannelSpec] = {}
    entries = offer.get("data_channels")
    if not isinstance(entries, list):
        return specs
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("label"), str):
            continue
        header = entry.get("header")
        specs[entry["label"]] = DataChannelSpec(
            label=entry["label"],
            direction=entry.get("direction", "sendrecv")
            if isinstance(entry.get("direction"), str)
            else "sendrecv",
            compress=entry.get("compress") is True,
            header=tuple(h for h in header if isinstance(h, dict))
            if isinstance(header, list)
            else (),
        )
    return specs


def is_signaling_url(url: object) -> bool:
    """True for a ``ws://``/``wss://`` URL with a host: the SDKs accept nothing else (§1.1)."""
    if not isinstance(url, str):
        return False
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in ("ws", "wss") and bool(parts.hostname)


def is_managed_label(label: str) -> bool:
    """True for a label Sora manages itself (``signaling``, ``notify``, ...)."""
    return label in SORA_MANAGED_LABELS


def candidates_from_sdp(sdp: str) -> list[str]:
    """The ``candidate:...`` attribute values of an SDP, in order, without duplicates.

    aiortc gathers before ``setLocalDescription`` returns and writes the
    candidates into every BUNDLE m-section; the C++ SDK trickles each one as
    ``{"type":"candidate","candidate":"candidate:..."}`` (``sora-protocol.md`` §2.3).
    """
    seen: dict[str, None] = {}
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            seen.setdefault(line[2:].strip(), None)
    return list(seen)


def with_redirect_flag(connect: Mapping[str, Any]) -> dict[str, Any]:
    """The connect message re-sent after ``redirect``: the same plus ``"redirect": true``.

    The C++ SDK puts ``redirect`` right after ``environment``
    (``sora-protocol.md`` §5.3, §8.2).
    """
    result: dict[str, Any] = {}
    for key, value in connect.items():
        if key == "redirect":
            continue
        result[key] = value
        if key == "environment":
            result["redirect"] = True
    result.setdefault("redirect", True)
    return result


# -- messages the client sends ------------------------------------------------


def answer_message(sdp: str) -> dict[str, Any]:
    """``{"type":"answer","sdp":...}``, sent once on the WebSocket (§2.2)."""
    return {"type": "answer", "sdp": sdp}


def candidate_message(candidate: str) -> dict[str, Any]:
    """``{"type":"candidate","candidate":"candidate:..."}`` as the C++ SDK sends it (§2.3)."""
    return {"type": "candidate", "candidate": candidate}


def reanswer_message(sdp: str, *, answer_type: str = "re-answer") -> dict[str, Any]:
    """``re-answer`` (or legacy ``update``) for a re-offer (§2.4)."""
    return {"type": answer_type, "sdp": sdp}


def pong_message(reports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``{"type":"pong"}``, with ``stats`` when the ping asked for it (§2.5)."""
    return {"type": "pong"} if reports is None else {"type": "pong", "stats": reports}


def stats_message(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"type":"stats","reports":[...]}`` answering ``req-stats`` on DC ``stats`` (§2.7)."""
    return {"type": "stats", "reports": reports}


def disconnect_message(reason: str = "NO-ERROR") -> dict[str, Any]:
    """``{"type":"disconnect","reason":...}`` (§2.6)."""
    return {"type": "disconnect", "reason": reason}


# -- disconnect reports (code, message) as the official client words them -----


def server_closed_websocket(code: int | None, reason: str, *, with_data_channel: bool) -> str:
    """Message of ``CLOSE_SUCCEEDED`` when Sora closed the WebSocket with 1000 (observed)."""
    what = "WebSocket and DataChannel" if with_data_channel else "WebSocket"
    return f"Succeeded to close {what} from server: {_ws_details(code, reason)}"


def failed_to_read_websocket(code: int | None, reason: str, error: str | None = None) -> str:
    """Message of ``WEBSOCKET_ONCLOSE``/``_ONERROR`` (observed with 4490 and a TCP reset).

    ``error`` describes a failure the client detected itself (a message over
    the size limit, keepalive timeout...); it takes the place of ``ec`` as the
    C++ SDK's error text does.
    """
    return f"Failed to read WebSocket: {_ws_details(code, reason, error)}"


def failed_to_read_websocket_dc(
    code: int | None, reason: str, *, dc_closed: bool, error: str | None = None
) -> str:
    """Message when the WebSocket died after ``switched`` (ignore=false) (C++ ``OnRead``)."""
    if dc_closed:
        return (
            "Failed to read WebSocket and succeeded to close DataChannel: "
            f"{_ws_details(code, reason, error)}"
        )
    return (
        f"Failed to read WebSocket and to close DataChannel: ec={_ec(code, error)} "
        f"ec2={EC_OPERATION_CANCELED} wscode={code or 0} wsreason={reason}"
    )


def failed_to_close_websocket(
    code: int | None, reason: str, *, timed_out: bool, error: str | None = None
) -> str:
    """Message of ``CLOSE_FAILED`` when the WebSocket did not close cleanly (observed)."""
    ec = EC_OPERATION_CANCELED if timed_out else (error or EC_END_OF_FILE)
    wscode = 0 if timed_out else (code or 0)
    wsreason = "" if timed_out else reason
    return f"Failed to close WebSocket: ec={ec} wscode={wscode} wsreason={wsreason}"


def _ec(code: int | None, error: str | None = None) -> str:
    if error:
        return error
    return EC_END_OF_FILE if code is None else EC_GRACEFULLY_CLOSED


def _ws_details(code: int | None, reason: str, error: str | None = None) -> str:
    return f"ec={_ec(code, error)} wscode={code or 0} wsreason={reason if code is not None else ''}"


def invalid_websocket_message(problem: str, kind: str | None = None) -> str:
    """Message of ``INTERNAL_ERROR`` when Sora sent something unusable on the WebSocket."""
    if kind is None:
        return f"Invalid signaling message via WebSocket: {problem}"
    return f"Invalid {kind} message via WebSocket: {problem}"


def invalid_data_channel_message(label: str, problem: str, kind: str | None = None) -> str:
    """Message of ``INTERNAL_ERROR`` when Sora sent something unusable on a DataChannel."""
    what = "message" if kind is None else f"{kind} message"
    return f"Invalid {what} on DataChannel {label!r}: {problem}"


def unexpected_message(kind: str, transport: str) -> str:
    """Message of ``INTERNAL_ERROR`` for a message that cannot come at this point."""
    return f"Unexpected {kind} message via {transport} before the offer"


CLOSED_WEBSOCKET_ONLY = "Succeeded to close WebSocket (DC signaling is not enabled)"
# The lowercase "s" in "Websocket" is the official client's spelling.
CLOSED_HYBRID = "Succeeded to close Websocket (DC signaling is enabled)"
CLOSED_DATACHANNEL_ONLY = "Succeeded to close DataChannel"
FAILED_DATACHANNEL_ONLY = f"Failed to close DataChannel: ec={EC_OPERATION_CANCELED}"
FAILED_HYBRID_DATACHANNEL = f"Failed to close DataChannel and WebSocket: ec={EC_OPERATION_CANCELED}"
CLOSE_IN_CONNECTING = "Close was called in connecting"
CONNECTION_TIMEOUT = "Connection timeout"
CONNECTION_TIMEOUT_IN_REDIRECTION = "Connection timeout in redirection"
PEER_CONNECTION_FAILED = "PeerConnectionState is failed"
PEER_CONNECTION_CLOSED = "PeerConnection was closed"
NO_TRANSPORT = "Unknown state. WS and DC is already released."


def server_closed_data_channel(code: Any, reason: Any) -> str:
    """Message after a DC ``{"type":"close"}`` (§3.9).

    The code stays CLOSE_SUCCEEDED even when ``code`` is not 1000 (C++ quirk, §5.11).
    """
    if code == 1000:
        return f"Succeeded to close DataChannel: reason={reason}"
    return f"Failed to close DataChannel: code={code} reason={reason}"


def data_channel_closed(label: str) -> str:
    """Message of ``DATACHANNEL_CLOSED`` (C++ issue 0070)."""
    return f"DataChannel was closed unexpectedly: label={label}"


def handshake_failed(error: str, url: str) -> str:
    """Message of ``WEBSOCKET_HANDSHAKE_FAILED`` when every URL failed (observed)."""
    return f"Failed Websocket handshake: last_ec={error} last_url={url}"


def handshake_failed_in_redirecting(error: str, url: str) -> str:
    """Message of ``WEBSOCKET_HANDSHAKE_FAILED`` for the redirect target (observed)."""
    return f"Failed Websocket handshake in redirecting: ec={error} url={url}"


def invalid_redirect_url(url: str) -> str:
    """Message of ``INVALID_PARAMETER`` for a bad ``location`` (C++ ``Redirect``)."""
    return f"Invalid URL: url={url}"


def with_internal_message(root: str, message: str) -> str:
    """How the C++ SDK words a forced code: ``<root>, internal_message=<close result>``."""
    return f"{root}, internal_message={message}"


def join_labels(labels: Iterable[str]) -> str:
    """Stable text for a set of labels in log lines."""
    return ",".join(sorted(labels))
