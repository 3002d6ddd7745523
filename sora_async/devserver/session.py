"""One client connection on the dev server: its signaling state machine.

A :class:`Session` is created when a WebSocket is accepted. It validates the
``connect`` message, creates the media-plane :class:`~.peer.ServerPeer`, sends
the ``offer``, applies the ``answer`` and candidates, and once the peer
connection is up joins its channel, where it receives ``notify``/``push``
and serially answered ``re-offer``\\ s. With DataChannel signaling it moves to
the DataChannels (``switched``) and may outlive its WebSocket.

States (``sora-protocol.md`` §5, seen from the server)::

    waiting_connect --connect ok--> offering --answer--> negotiating --peer connected--> connected
    waiting_connect --connect + redirect_to--> closing (redirect sent)
    any --disconnect / kick / timeout / transport loss--> closing --> closed

How a session ends (``sora-protocol.md`` §4, §5.8, §9):

=============================  ==============================================================
cause                          what the client sees
=============================  ==============================================================
client ``disconnect``          DataChannels closed, then WS closed 1000 ``TYPE-DISCONNECT``
HTTP DisconnectConnection      WS closed 1000 ``DISCONNECTED-API`` (then DataChannels closed);
                               DataChannel-only: ``{"type":"close",...}`` on ``signaling`` if
                               enabled, then DataChannels closed
connection lifetime            as above with ``LIFETIME-EXPIRED``
protocol error                 WS closed 4490 ``INVALID-MESSAGE`` / ``TIMEOUT`` /
                               ``INTERNAL-ERROR`` (details only in the server log, like Sora)
=============================  ==============================================================
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import json
import logging
import time
import zlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..enums import SORA_MANAGED_LABELS, Role
from .auth import AuthError, decode_jwt
from .channel import DEFAULT_SPOTLIGHT_NUMBER, Channel, ChannelRegistry
from .ids import new_id
from .peer import DataChannelSpec, Publication, ServerPeer

if TYPE_CHECKING:
    from .server import DevServerOptions, SignalingWebSocket

__all__ = [
    "ConnectSettings",
    "ConnectionInfo",
    "InvalidMessage",
    "Session",
    "SessionState",
    "apply_access_token",
    "default_simulcast_encodings",
    "parse_connect",
]

log = logging.getLogger("sora_async.devserver")

VIDEO_CODECS = frozenset({"VP8", "VP9", "AV1", "H264", "H265"})
AUDIO_CODECS = frozenset({"OPUS"})
#: Codecs Sora picks when ``codec_type`` is omitted (VP9 per the C++ SDK header doc).
DEFAULT_VIDEO_CODEC = "VP9"
DEFAULT_AUDIO_CODEC = "OPUS"
SIMULCAST_RIDS = ("r0", "r1", "r2")
_REQUEST_RIDS = frozenset({"none", *SIMULCAST_RIDS})
_ROLES = frozenset(role.value for role in Role)
_DC_DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly"})
#: ``channel_id``, ``client_id`` and ``bundle_id`` are at most 255 bytes (DOC:SIGNALING).
MAX_ID_BYTES = 255

#: Sora-managed DataChannels in offer order, with their direction from the
#: client's point of view (notify/push are recvonly: sora-cpp-sdk issue 0107).
MANAGED_DATA_CHANNELS = (
    ("signaling", "sendrecv"),
    ("notify", "recvonly"),
    ("push", "recvonly"),
    ("stats", "sendrecv"),
)

#: Total simulcast bit rate (kbps) when neither ``video.bit_rate`` nor a claim gives one.
DEFAULT_SIMULCAST_BIT_RATE = 2500

#: How long a closing session waits for the client to close its own peer
#: connection after the DataChannels are closed, so that the client sees its
#: DataChannels close before DTLS goes away (it is waiting for exactly that).
PEER_CLOSE_GRACE = 2.0
#: Bound on the DataChannel close (SCTP stream reset) and the peer close.
TEARDOWN_TIMEOUT = 5.0


class _Absent:
    """Marks a JSON field that was not sent (as opposed to one sent as a value)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


class InvalidMessage(Exception):
    """A client message broke the protocol.

    ``reason`` is what the WebSocket close frame carries (kept Sora-like);
    the exception text is the detail, which only goes to the server log.
    """

    def __init__(self, detail: str, reason: str = "INVALID-MESSAGE") -> None:
        super().__init__(detail)
        self.reason = reason


# -- connect parsing ---------------------------------------------------------


@dataclass
class ConnectSettings:
    """A validated ``connect`` message, after access-token claims were applied."""

    role: Role
    channel_id: str
    client_id: str | None = None
    bundle_id: str | None = None
    metadata: Any = ABSENT
    signaling_notify_metadata: Any = ABSENT
    audio: bool = True
    video: bool = True
    audio_codec_type: str = DEFAULT_AUDIO_CODEC
    video_codec_type: str = DEFAULT_VIDEO_CODEC
    audio_bit_rate: int | None = None
    video_bit_rate: int | None = None
    #: ``audio.opus_params`` (visible in the offer's Opus fmtp, as with Sora).
    audio_opus_params: dict[str, Any] | None = None
    simulcast: bool = False
    simulcast_encodings: list[dict[str, Any]] | None = None
    simulcast_request_rid: str | None = None
    spotlight: bool = False
    spotlight_number: int | None = None
    spotlight_focus_rid: str = "r2"
    spotlight_unfocus_rid: str = "r0"
    data_channel_signaling: bool = False
    ignore_disconnect_websocket: bool = False
    data_channels: list[dict[str, Any]] = field(default_factory=list)
    redirect: bool = False
    connection_lifetime: float | None = None
    #: ``metadata`` claim of the access token: the offer's ``metadata`` and the
    #: notify ``authz_metadata`` (what Sora's auth webhook would return).
    auth_metadata: Any = ABSENT
    #: ``rpc_methods`` claim: JSON-RPC methods granted on the ``rpc`` DataChannel
    #: (with DataChannel signaling only; ``sora-protocol.md`` §2.8).
    rpc_methods: list[str] | None = None


def _decode_json_object(data: str | bytes) -> dict[str, Any]:
    if not isinstance(data, str):
        raise InvalidMessage("binary WebSocket frame")
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise InvalidMessage(f"malformed JSON: {exc}") from None
    if not isinstance(message, dict):
        raise InvalidMessage("message is not a JSON object")
    if not isinstance(message.get("type"), str):
        raise InvalidMessage("message has no string 'type'")
    return message


def _optional(message: dict[str, Any], key: str) -> Any:
    # Clients are told to omit rather than send null; treat null as omitted anyway.
    value = message.get(key)
    return ABSENT if value is None else value


def _bool_field(message: dict[str, Any], key: str, default: bool) -> bool:
    value = _optional(message, key)
    if value is ABSENT:
        return default
    if not isinstance(value, bool):
        raise InvalidMessage(f"{key} is not a boolean")
    return value


def _int_field(message: dict[str, Any], key: str, minimum: int = 0) -> int | None:
    value = _optional(message, key)
    if value is ABSENT:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidMessage(f"{key} is not an integer >= {minimum}")
    return value


def _id_field(message: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = _optional(message, key)
    if value is ABSENT:
        if required:
            raise InvalidMessage(f"missing {key}")
        return None
    if not isinstance(value, str) or not value:
        raise InvalidMessage(f"{key} is not a non-empty string")
    if len(value.encode()) > MAX_ID_BYTES:
        raise InvalidMessage(f"{key} is longer than {MAX_ID_BYTES} bytes")
    return value


def _rid_field(message: dict[str, Any], key: str, allowed: frozenset[str]) -> str | None:
    value = _optional(message, key)
    if value is ABSENT:
        return None
    if value not in allowed:
        raise InvalidMessage(f"{key} is not one of {sorted(allowed)}")
    return str(value)


def _media_field(message: dict[str, Any], key: str) -> tuple[bool, dict[str, Any]]:
    """``audio``/``video`` are ``true``, ``false`` or an options object (= enabled)."""
    value = _optional(message, key)
    if value is ABSENT:
        return True, {}
    if isinstance(value, bool):
        return value, {}
    if isinstance(value, dict):
        return True, value
    raise InvalidMessage(f"{key} is neither a boolean nor an object")


def _codec(options: dict[str, Any], allowed: frozenset[str], default: str, kind: str) -> str:
    value = _optional(options, "codec_type")
    if value is ABSENT:
        return default
    if value not in allowed:
        raise InvalidMessage(f"unknown {kind} codec_type {value!r}")
    return str(value)


def _data_channel_entries(value: Any) -> list[dict[str, Any]]:
    if value is ABSENT:
        return []
    if not isinstance(value, list):
        raise InvalidMessage("data_channels is not an array")
    entries: list[dict[str, Any]] = []
    labels: set[str] = set()
    for entry in value:
        if not isinstance(entry, dict):
            raise InvalidMessage("data_channels entry is not an object")
        label = entry.get("label")
        if not isinstance(label, str) or not label:
            raise InvalidMessage("data_channels entry without a label")
        if label in labels:
            raise InvalidMessage(f"data_channels label {label!r} given twice")
        labels.add(label)
        if label.startswith("#"):
            if entry.get("direction") not in _DC_DIRECTIONS:
                raise InvalidMessage(f"data_channels {label!r} has no valid direction")
        elif label not in SORA_MANAGED_LABELS:
            # Application labels must start with "#" (DOC:MESSAGING).
            raise InvalidMessage(f"data_channels label {label!r} does not start with '#'")
        _bool_field(entry, "ordered", True)
        _bool_field(entry, "compress", False)
        lifetime = _int_field(entry, "max_packet_life_time")
        retransmits = _int_field(entry, "max_retransmits")
        if lifetime is not None and retransmits is not None:
            # WebRTC: maxPacketLifeTime and maxRetransmits are mutually exclusive.
            raise InvalidMessage(f"data_channels {label!r} sets both lifetime and retransmits")
        protocol = _optional(entry, "protocol")
        if protocol is not ABSENT and not isinstance(protocol, str):
            raise InvalidMessage(f"data_channels {label!r} protocol is not a string")
        header = _optional(entry, "header")
        if header is not ABSENT and not (
            isinstance(header, list)
            and all(
                isinstance(item, dict) and item.get("type") == "sender_connection_id"
                for item in header
            )
        ):
            raise InvalidMessage(f"data_channels {label!r} has an unknown header")
        entries.append(entry)
    return entries


def parse_connect(data: str | bytes) -> ConnectSettings:
    """Validate the first WebSocket message; raise :class:`InvalidMessage` if Sora would refuse it.

    >>> parse_connect('{"type":"connect","role":"recvonly","channel_id":"ch"}').role
    <Role.RECVONLY: 'recvonly'>
    """
    message = _decode_json_object(data)
    if message["type"] != "connect":
        raise InvalidMessage(f"first message is {message['type']!r}, not 'connect'")
    role = message.get("role")
    if role not in _ROLES:
        raise InvalidMessage(f"missing or unknown role {role!r}")
    channel_id = _id_field(message, "channel_id", required=True)
    assert channel_id is not None
    audio, audio_options = _media_field(message, "audio")
    video, video_options = _media_field(message, "video")
    if role == "recvonly" and not audio and not video:
        # Observed Sora behaviour (sora-ios-sdk issue 0119): nothing to receive.
        raise InvalidMessage("recvonly with audio and video both false")
    spotlight = _bool_field(message, "spotlight", False)
    focus_rid = _rid_field(message, "spotlight_focus_rid", _REQUEST_RIDS)
    unfocus_rid = _rid_field(message, "spotlight_unfocus_rid", _REQUEST_RIDS)
    if not spotlight and (focus_rid or unfocus_rid):
        # sora-rust-sdk e2e disconnect_reason.rs: refused without spotlight.
        raise InvalidMessage("spotlight_focus_rid/unfocus_rid without spotlight")
    request_rid = _rid_field(message, "simulcast_request_rid", _REQUEST_RIDS)
    legacy_rid = _rid_field(message, "simulcast_rid", frozenset(SIMULCAST_RIDS))
    opus_params = _optional(audio_options, "opus_params")
    if opus_params is not ABSENT and not isinstance(opus_params, dict):
        raise InvalidMessage("audio.opus_params is not an object")
    redirect = _optional(message, "redirect")
    if redirect is not ABSENT and redirect is not True:
        raise InvalidMessage("redirect is only ever true")
    settings = ConnectSettings(
        role=Role(role),
        channel_id=channel_id,
        client_id=_id_field(message, "client_id"),
        bundle_id=_id_field(message, "bundle_id"),
        metadata=_optional(message, "metadata"),
        signaling_notify_metadata=_optional(message, "signaling_notify_metadata"),
        audio=audio,
        video=video,
        audio_codec_type=_codec(audio_options, AUDIO_CODECS, DEFAULT_AUDIO_CODEC, "audio"),
        video_codec_type=_codec(video_options, VIDEO_CODECS, DEFAULT_VIDEO_CODEC, "video"),
        audio_bit_rate=_int_field(audio_options, "bit_rate", 1),
        video_bit_rate=_int_field(video_options, "bit_rate", 1),
        audio_opus_params=None if opus_params is ABSENT else opus_params,
        simulcast=_bool_field(message, "simulcast", False),
        simulcast_request_rid=request_rid or legacy_rid,
        spotlight=spotlight,
        spotlight_number=_int_field(message, "spotlight_number", 1),
        spotlight_focus_rid=focus_rid or "r2",
        spotlight_unfocus_rid=unfocus_rid or "r0",
        data_channel_signaling=_bool_field(message, "data_channel_signaling", False),
        ignore_disconnect_websocket=_bool_field(message, "ignore_disconnect_websocket", False),
        data_channels=_data_channel_entries(_optional(message, "data_channels")),
        redirect=redirect is True,
    )
    return settings


def apply_access_token(settings: ConnectSettings, secret: str) -> dict[str, Any]:
    """Verify ``metadata.access_token`` and apply its claims to ``settings``.

    The token must be HS256-signed with ``secret`` and carry the connect's
    ``channel_id``. Claims that override the connect, as Sora's auth webhook
    and JWT-based auth do: ``audio``, ``video``, ``video_codec_type``,
    ``video_bit_rate``, ``simulcast``, ``simulcast_encodings``,
    ``connection_lifetime`` (seconds), ``spotlight``, ``spotlight_number``,
    ``rpc_methods`` (granted JSON-RPC methods) and ``metadata`` (returned to
    the client as the offer's ``metadata``).
    Raises :class:`AuthError`.
    """
    metadata = settings.metadata
    token = metadata.get("access_token") if isinstance(metadata, dict) else None
    if token is None:
        raise AuthError("metadata.access_token is missing")
    claims = decode_jwt(token, secret)
    if claims.get("channel_id") != settings.channel_id:
        raise AuthError("access_token channel_id does not match")

    def claim(name: str, kinds: tuple[type, ...], check: Callable[[Any], bool] = bool) -> Any:
        value = claims.get(name)
        if value is None:
            return None
        if isinstance(value, bool) and bool not in kinds:
            raise AuthError(f"claim {name!r} has the wrong type")
        if not isinstance(value, kinds) or (not isinstance(value, bool) and not check(value)):
            raise AuthError(f"claim {name!r} is invalid")
        return value

    for name in ("audio", "video", "simulcast", "spotlight"):
        value = claim(name, (bool,))
        if value is not None:
            setattr(settings, name, value)
    codec = claim("video_codec_type", (str,), lambda v: v in VIDEO_CODECS)
    if codec is not None:
        settings.video_codec_type = codec
    bit_rate = claim("video_bit_rate", (int,), lambda v: v > 0)
    if bit_rate is not None:
        settings.video_bit_rate = bit_rate
    number = claim("spotlight_number", (int,), lambda v: v > 0)
    if number is not None:
        settings.spotlight_number = number
    lifetime = claim("connection_lifetime", (int, float), lambda v: v > 0)
    if lifetime is not None:
        settings.connection_lifetime = float(lifetime)
    encodings = claim(
        "simulcast_encodings",
        (list,),
        lambda v: all(isinstance(e, dict) and isinstance(e.get("rid"), str) for e in v),
    )
    if encodings is not None:
        settings.simulcast_encodings = encodings
    methods = claim("rpc_methods", (list,), lambda v: all(isinstance(m, str) for m in v))
    if methods is not None:
        settings.rpc_methods = methods
    if "metadata" in claims:
        settings.auth_metadata = claims["metadata"]
    return claims


def default_simulcast_encodings(video_bit_rate: int | None = None) -> list[dict[str, Any]]:
    """Three layers r0 (quarter size), r1 (half), r2 (full), as Sora offers by default.

    ``video_bit_rate`` (kbps) is shared 10/30/60 %; ``maxBitrate`` is in bps
    (W3C ``RTCRtpEncodingParameters`` names, as Sora sends them).

    >>> [e["scaleResolutionDownBy"] for e in default_simulcast_encodings()]
    [4.0, 2.0, 1.0]
    """
    total_bps = (video_bit_rate or DEFAULT_SIMULCAST_BIT_RATE) * 1000
    layers = (("r0", 4.0, 0.1), ("r1", 2.0, 0.3), ("r2", 1.0, 0.6))
    return [
        {
            "rid": rid,
            "active": True,
            "scaleResolutionDownBy": scale,
            "maxBitrate": int(total_bps * share),
        }
        for rid, scale, share in layers
    ]


def _data_channel_specs(settings: ConnectSettings) -> list[DataChannelSpec]:
    requested = {entry["label"]: entry for entry in settings.data_channels}
    specs = [
        DataChannelSpec(
            label=label,
            direction=direction,
            compress=bool(requested.get(label, {}).get("compress") or False),
        )
        for label, direction in MANAGED_DATA_CHANNELS
    ]
    if settings.rpc_methods:
        specs.append(DataChannelSpec(label="rpc", direction="sendrecv", compress=False))
    for label, entry in requested.items():
        if not label.startswith("#"):
            continue
        specs.append(
            DataChannelSpec(
                label=label,
                direction=entry["direction"],
                compress=bool(entry.get("compress") or False),
                ordered=entry.get("ordered"),
                max_packet_life_time=entry.get("max_packet_life_time"),
                max_retransmits=entry.get("max_retransmits"),
                protocol=entry.get("protocol"),
                header=entry.get("header"),
            )
        )
    return specs


def _timestamp() -> str:
    # RFC 3339 UTC with microseconds, as Sora's notify timestamps.
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- session -----------------------------------------------------------------


class SessionState(enum.Enum):
    """Where a connection is in its life (see the module docstring)."""

    WAITING_CONNECT = "waiting_connect"
    OFFERING = "offering"
    NEGOTIATING = "negotiating"
    CONNECTED = "connected"
    CLOSING = "closing"
    CLOSED = "closed"


_ACTIVE = frozenset({SessionState.OFFERING, SessionState.NEGOTIATING, SessionState.CONNECTED})


@dataclass(frozen=True)
class ConnectionInfo:
    """Read-only snapshot of one connection, as :attr:`DevServer.connections` shows it."""

    connection_id: str
    channel_id: str
    session_id: str
    client_id: str
    bundle_id: str
    role: str
    state: str
    audio: bool
    video: bool
    audio_codec_type: str | None
    video_codec_type: str | None
    simulcast: bool
    spotlight: bool
    data_channel_signaling: bool
    ignore_disconnect_websocket: bool
    switched: bool
    websocket_open: bool
    data_channels: tuple[DataChannelSpec, ...]
    open_data_channels: frozenset[str]
    #: ``(publisher connection id, kind)`` of each stream this connection receives.
    subscriptions: tuple[tuple[str, str], ...]
    metadata: Any
    signaling_notify_metadata: Any
    created_at: float
    connected_at: float | None
    #: ``User-Agent`` header of the signaling WebSocket handshake.
    user_agent: str | None = None


class Session:
    """Server side of one client connection (signaling only; media is ``ServerPeer``'s)."""

    def __init__(
        self,
        *,
        options: DevServerOptions,
        registry: ChannelRegistry,
        websocket: SignalingWebSocket,
        peer_factory: Callable[..., ServerPeer],
        on_closed: Callable[[Session], None] | None = None,
    ) -> None:
        self.connection_id = new_id()
        self.options = options
        self.registry = registry
        self.websocket = websocket
        self._peer_factory = peer_factory
        self._on_closed = on_closed
        self.state = SessionState.WAITING_CONNECT
        self.settings = ConnectSettings(role=Role.SENDRECV, channel_id="")
        self.channel: Channel | None = None
        self.peer: ServerPeer | None = None
        self.client_id = self.bundle_id = self.connection_id
        self.send_audio = self.send_video = self.recv_audio = self.recv_video = False
        self.simulcast = False
        self.data_channel_specs: dict[str, DataChannelSpec] = {}
        self.open_data_channels: set[str] = set()
        self.switched = False
        self.subscriptions: list[Publication] = []
        #: Last ``reports`` a client sent on the ``stats`` DataChannel.
        self.last_stats: Any = None
        self.created_at = time.time()
        self.connected_at: float | None = None
        self.closed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        # Timers and loops that a close cancels; sends are left to finish.
        self._background: set[asyncio.Task[Any]] = set()
        self._close_task: asyncio.Task[None] | None = None
        self._offer_sent = False
        self._answer_received = False
        self._answer_applied = False
        self._pending_candidates: list[str] = []
        self._awaiting_pong = False
        self._renegotiation_needed = asyncio.Event()
        self._reanswer: asyncio.Future[str] | None = None
        self._peer_gone = asyncio.Event()
        self._close_grace = PEER_CLOSE_GRACE
        # Simulcast layer choices: from connect / RequestSimulcastRid, and what
        # the peer was last told per publisher ("r0" is the media default).
        self._rid_for_all: str | None = None
        self._rid_by_sender: dict[str, str] = {}
        self._applied_rids: dict[str, str] = {}
        #: RequestSimulcastRid answered by ``simulcast.switched`` once media switches
        self._pending_rid_requests: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<Session {self.connection_id} {self.settings.channel_id!r} {self.state.value}>"

    # -- properties used by the channel --------------------------------------

    @property
    def role(self) -> Role:
        return self.settings.role

    @property
    def channel_id(self) -> str:
        return self.settings.channel_id

    @property
    def session_id(self) -> str:
        return self.channel.session_id if self.channel is not None else ""

    def publications(self) -> list[Publication]:
        """Upstream streams of this connection, once it is live."""
        if self.peer is None or self.state is not SessionState.CONNECTED:
            return []
        return list(self.peer.publications)

    def info(self) -> ConnectionInfo:
        """A snapshot for :attr:`DevServer.connections`."""
        s = self.settings
        return ConnectionInfo(
            connection_id=self.connection_id,
            channel_id=s.channel_id,
            session_id=self.session_id,
            client_id=self.client_id,
            bundle_id=self.bundle_id,
            role=s.role.value,
            state=self.state.value,
            audio=s.audio,
            video=s.video,
            audio_codec_type=s.audio_codec_type if s.audio else None,
            video_codec_type=s.video_codec_type if s.video else None,
            simulcast=self.simulcast,
            spotlight=s.spotlight,
            data_channel_signaling=bool(self.data_channel_specs),
            ignore_disconnect_websocket=s.ignore_disconnect_websocket,
            switched=self.switched,
            websocket_open=self.websocket.is_open,
            data_channels=tuple(self.data_channel_specs.values()),
            open_data_channels=frozenset(self.open_data_channels),
            subscriptions=tuple((p.connection_id, p.kind) for p in self.subscriptions),
            metadata=None if s.metadata is ABSENT else s.metadata,
            signaling_notify_metadata=(
                None if s.signaling_notify_metadata is ABSENT else s.signaling_notify_metadata
            ),
            created_at=self.created_at,
            connected_at=self.connected_at,
            user_agent=getattr(self.websocket, "user_agent", None),
        )

    def api_description(self) -> dict[str, Any]:
        """One entry of ``ListChannelConnections``."""
        entry: dict[str, Any] = {
            "channel_id": self.channel_id,
            "session_id": self.session_id,
            "client_id": self.client_id,
            "bundle_id": self.bundle_id,
            "connection_id": self.connection_id,
            "role": self.role.value,
            "audio": self.settings.audio,
            "video": self.settings.video,
            "simulcast": self.simulcast,
            "spotlight": self.settings.spotlight,
            "data_channel_signaling": bool(self.data_channel_specs),
            "created_time": int(self.created_at),
        }
        self._add_metadata_fields(entry)
        return entry

    # -- task plumbing -------------------------------------------------------

    def _spawn(
        self, coro: Coroutine[Any, Any, Any], name: str, *, background: bool = False
    ) -> None:
        task = asyncio.create_task(coro, name=f"devserver-{name}-{self.connection_id}")
        self._tasks.add(task)
        if background:
            self._background.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: task %s failed", self, task.get_name(), exc_info=task.exception())

    def start(self) -> None:
        """Arm the set-up timeout; call once the WebSocket is accepted."""
        self._spawn(self._setup_watchdog(), "watchdog", background=True)

    async def _setup_watchdog(self) -> None:
        # Connect, answer and ICE/DTLS must all happen within signaling_timeout.
        await asyncio.sleep(self.options.signaling_timeout)
        if self.state in (
            SessionState.WAITING_CONNECT,
            SessionState.OFFERING,
            SessionState.NEGOTIATING,
        ):
            log.info("%s: not connected after %ss", self, self.options.signaling_timeout)
            self.end(4490, "TIMEOUT")

    # -- incoming WebSocket --------------------------------------------------

    def on_websocket_message(self, data: str | bytes) -> None:
        """One text or binary frame from the client's WebSocket."""
        if self.state in (SessionState.CLOSING, SessionState.CLOSED):
            return
        try:
            if self.state is SessionState.WAITING_CONNECT:
                self._on_connect(data)
            else:
                self._on_signaling(_decode_json_object(data), "websocket")
        except InvalidMessage as exc:
            log.info("%s: closing 4490 %s: %s", self, exc.reason, exc)
            self.end(4490, exc.reason)

    def on_websocket_closed(self) -> None:
        """The client's WebSocket is gone (closed by either side, or lost)."""
        if self.state in (SessionState.CLOSING, SessionState.CLOSED):
            return
        if (
            self.state is SessionState.CONNECTED
            and self.switched
            and self.settings.ignore_disconnect_websocket
        ):
            log.info("%s: WebSocket closed, continuing on DataChannels", self)
            return
        log.info("%s: WebSocket lost", self)
        self.end(1000, "WEBSOCKET-ONCLOSE")

    def _on_connect(self, data: str | bytes) -> None:
        settings = parse_connect(data)
        if self.options.redirect_to and not settings.redirect:
            # Cluster redirect happens before authentication (DOC:CLUSTER).
            log.info("%s: redirecting to %s", self, self.options.redirect_to)
            self._send_websocket({"type": "redirect", "location": self.options.redirect_to})
            self.end(1000, "")
            return
        if self.options.secret is not None:
            try:
                apply_access_token(settings, self.options.secret)
            except AuthError as exc:
                log.info("%s: authentication failed: %s", self, exc)
                self.end(4490, "AUTHENTICATION-FAILURE")
                return
        self._admit(settings)

    def _admit(self, settings: ConnectSettings) -> None:
        self.settings = settings
        self.client_id = settings.client_id or self.connection_id
        self.bundle_id = settings.bundle_id or self.connection_id
        sends, receives = settings.role.sends, settings.role.receives
        self.send_audio = sends and settings.audio
        self.send_video = sends and settings.video
        self.recv_audio = receives and settings.audio
        self.recv_video = receives and settings.video
        # Spotlight is built on simulcast (sora-rust-sdk connection.rs docs).
        self.simulcast = settings.simulcast or settings.spotlight
        if settings.simulcast_request_rid is not None:
            self._rid_for_all = settings.simulcast_request_rid
        if settings.data_channel_signaling:
            self.data_channel_specs = {s.label: s for s in _data_channel_specs(settings)}
        self.state = SessionState.OFFERING
        self.channel = self.registry.admit(self)
        log.info(
            "%s: connect role=%s client_id=%s audio=%s video=%s dc=%s",
            self,
            settings.role.value,
            self.client_id,
            settings.audio,
            settings.video,
            settings.data_channel_signaling,
        )
        self._spawn(self._offer(), "offer", background=True)

    @property
    def simulcast_encodings(self) -> list[dict[str, Any]] | None:
        """Encodings for a simulcast sender, in rid order (None when not one)."""
        if not (self.simulcast and self.send_video):
            return None
        return self.settings.simulcast_encodings or default_simulcast_encodings(
            self.settings.video_bit_rate
        )

    def _create_peer(self) -> ServerPeer:
        s = self.settings
        media_options: dict[str, Any] = {
            "ice_addresses": self.options.media_addresses(),
            "connect_timeout": self.options.signaling_timeout,
        }
        if s.audio_opus_params is not None and self.send_audio:
            media_options["audio_opus_params"] = s.audio_opus_params
        if self.options.transport_cc:
            media_options["transport_cc"] = True
        peer = self._peer_factory(
            connection_id=self.connection_id,
            send_audio=self.send_audio,
            send_video=self.send_video,
            recv_audio=self.recv_audio,
            recv_video=self.recv_video,
            audio_codec=s.audio_codec_type,
            video_codec=s.video_codec_type,
            video_bit_rate=s.video_bit_rate,
            simulcast=self.simulcast and self.send_video,
            encodings=self.simulcast_encodings,
            data_channels=list(self.data_channel_specs.values()),
            **media_options,
        )
        peer.on("connectionstatechange", self._guard(self._on_peer_state))
        peer.on("datachannel_open", self._guard(self._on_data_channel_open))
        peer.on("datachannel_close", self._guard(self._on_data_channel_close))
        peer.on("datachannel_message", self._guard(self._on_data_channel_message))
        peer.on("publication", self._guard(self._on_publication))
        peer.on("simulcast_switched", self._guard(self._on_simulcast_switched))
        return peer

    def _guard(self, handler: Callable[..., None]) -> Callable[..., None]:
        # An exception in a pyee handler would surface inside the media plane.
        def guarded(*args: Any) -> None:
            try:
                handler(*args)
            except Exception:
                log.exception("%s: error in %s", self, handler.__name__)
                self.end(4490, "INTERNAL-ERROR")

        return guarded

    async def _offer(self) -> None:
        assert self.channel is not None
        try:
            self.peer = self._create_peer()
            subscriptions = self.channel.subscriptions_for(self)
            sdp = await self.peer.create_offer(subscriptions)
        except Exception:
            log.exception("%s: cannot create the offer", self)
            self.end(4490, "INTERNAL-ERROR")
            return
        if self.state is not SessionState.OFFERING:
            return
        self.subscriptions = subscriptions
        self._offer_sent = True
        await self.websocket.send(self.offer_message(sdp))
        self._spawn(self._keepalive(), "keepalive", background=True)

    def offer_message(self, sdp: str) -> dict[str, Any]:
        """The ``offer`` with every field the official SDKs read (``sora-protocol.md`` §3.1)."""
        s = self.settings
        assert self.channel is not None and self.peer is not None
        offer: dict[str, Any] = {
            "type": "offer",
            "sdp": sdp,
            "version": self.options.version,
            "connection_id": self.connection_id,
            "client_id": self.client_id,
            "bundle_id": self.bundle_id,
            "session_id": self.channel.session_id,
            "channel_id": s.channel_id,
            # sora_sdk aborts without config.iceServers (an empty array is fine).
            "config": {
                "iceServers": [dict(server) for server in self.options.ice_servers],
                **(
                    {"iceTransportPolicy": self.options.ice_transport_policy}
                    if self.options.ice_transport_policy is not None
                    else {}
                ),
            },
            "simulcast": self.simulcast,
            "spotlight": s.spotlight,
            "audio": s.audio,
            "video": s.video,
            "data_channel_signaling": bool(self.data_channel_specs),
            "ignore_disconnect_websocket": bool(
                self.data_channel_specs and s.ignore_disconnect_websocket
            ),
        }
        if s.audio:
            offer["audio_codec_type"] = s.audio_codec_type
            if s.audio_bit_rate is not None:
                offer["audio_bit_rate"] = s.audio_bit_rate
        if s.video:
            offer["video_codec_type"] = s.video_codec_type
            if s.video_bit_rate is not None:
                offer["video_bit_rate"] = s.video_bit_rate
        if s.role.sends:
            # sora_sdk aborts on a send role whose offer has no mid.
            offer["mid"] = dict(self.peer.mids)
        encodings = self.simulcast_encodings
        if encodings is not None:
            offer["encodings"] = encodings
        if s.spotlight:
            offer["spotlight_number"] = self._spotlight_number()
        if self.data_channel_specs:
            offer["data_channels"] = [
                _offer_entry(spec) for spec in self.data_channel_specs.values()
            ]
            if "rpc" in self.data_channel_specs:
                offer["rpc_methods"] = list(s.rpc_methods or [])
        if s.auth_metadata is not ABSENT:
            offer["metadata"] = s.auth_metadata
        return offer

    def _spotlight_number(self) -> int:
        return self.settings.spotlight_number or DEFAULT_SPOTLIGHT_NUMBER

    def _on_signaling(self, message: dict[str, Any], transport: str) -> None:
        kind = message["type"]
        if kind == "answer" and transport == "websocket":
            self._on_answer(message)
        elif kind == "candidate":
            self._on_candidate(message)
        elif kind == "pong":
            self._awaiting_pong = False
        elif kind == "re-answer":
            self._on_reanswer(message)
        elif kind == "disconnect":
            log.info("%s: disconnect (%s) on %s", self, message.get("reason"), transport)
            self.end(1000, "TYPE-DISCONNECT", by_client=True)
        elif kind == "connect":
            raise InvalidMessage("second connect")
        elif kind == "stats":
            self.last_stats = message.get("reports", message.get("stats"))
        else:
            # Newer clients may send types this server does not know; Sora-like
            # servers ignore rather than drop them.
            log.debug("%s: ignored %r on %s", self, kind, transport)

    def _on_answer(self, message: dict[str, Any]) -> None:
        sdp = message.get("sdp")
        if self._answer_received or not self._offer_sent:
            raise InvalidMessage("answer out of order")
        if not isinstance(sdp, str):
            raise InvalidMessage("answer without sdp")
        self._answer_received = True
        self.state = SessionState.NEGOTIATING
        self._spawn(self._apply_answer(sdp), "answer", background=True)

    async def _apply_answer(self, sdp: str) -> None:
        assert self.peer is not None
        try:
            await self.peer.set_answer(sdp)
        except Exception:
            log.exception("%s: cannot apply the answer", self)
            self.end(4490, "INVALID-MESSAGE")
            return
        self._answer_applied = True
        for candidate in self._pending_candidates:
            self._add_candidate(candidate)
        self._pending_candidates.clear()

    def _on_candidate(self, message: dict[str, Any]) -> None:
        # C++ clients send the bare "candidate:..." string, JS clients the
        # RTCIceCandidate JSON; both carry it under "candidate" (§2.3).
        candidate = message.get("candidate")
        if not isinstance(candidate, str) or not candidate.strip():
            return
        if self._answer_applied:
            self._add_candidate(candidate)
        else:
            self._pending_candidates.append(candidate)

    def _add_candidate(self, candidate: str) -> None:
        assert self.peer is not None
        try:
            self.peer.add_ice_candidate(candidate)
        except Exception as exc:
            log.warning("%s: ignored candidate %r: %s", self, candidate, exc)

    def _on_reanswer(self, message: dict[str, Any]) -> None:
        sdp = message.get("sdp")
        if not isinstance(sdp, str):
            raise InvalidMessage("re-answer without sdp")
        if self._reanswer is None or self._reanswer.done():
            log.warning("%s: re-answer without a re-offer in flight", self)
            return
        self._reanswer.set_result(sdp)

    # -- peer events ---------------------------------------------------------

    def _on_peer_state(self, state: str) -> None:
        log.debug("%s: peer %s", self, state)
        if state == "connected" and self.state is SessionState.NEGOTIATING:
            self._on_connected()
        elif state in ("failed", "closed"):
            self._peer_gone.set()
            if self.state in _ACTIVE:
                log.info("%s: peer connection %s", self, state)
                self.end(4490, "INTERNAL-ERROR")

    def _on_connected(self) -> None:
        assert self.channel is not None
        self.state = SessionState.CONNECTED
        self.connected_at = time.time()
        log.info("%s: connected", self)
        lifetime = self.settings.connection_lifetime or self.options.connection_lifetime
        if lifetime:
            self._spawn(self._expire(lifetime), "lifetime", background=True)
        self._spawn(self._renegotiation_loop(), "renegotiation", background=True)
        if self.options.connection_updated_interval > 0:
            self._spawn(self._announce_updates(), "updated", background=True)
        self.channel.on_connected(self)

    def _on_publication(self, publication: Publication) -> None:
        if self.state is SessionState.CONNECTED and self.channel is not None:
            self.channel.on_publication(self)

    def _on_data_channel_open(self, label: str) -> None:
        self.open_data_channels.add(label)
        if not self.switched and self.open_data_channels.issuperset(self.data_channel_specs):
            self.request_renegotiation()  # the renegotiation loop performs the switch

    def _on_data_channel_close(self, label: str) -> None:
        self.open_data_channels.discard(label)
        if (
            label == "signaling"
            and self.state is SessionState.CONNECTED
            and self.switched
            and not self.websocket.is_open
        ):
            # DataChannel-only: the signaling channel is the session (sora-cpp-sdk issue 0070).
            log.info("%s: signaling DataChannel closed by the client", self)
            self.end(1000, "DATA-CHANNEL-ONCLOSE")

    def _on_data_channel_message(self, label: str, data: bytes | str) -> None:
        if self.state is not SessionState.CONNECTED:
            return
        spec = self.data_channel_specs.get(label)
        if spec is None:
            log.debug("%s: message on unknown label %r", self, label)
            return
        if label.startswith("#"):
            assert self.channel is not None
            self.channel.relay_message(self, spec, data)
            return
        if label in ("notify", "push"):
            # Sora drops connections that write on its send-only labels (sora-cpp-sdk issue 0107).
            log.info("%s: client wrote on %r", self, label)
            self.end(4490, "INTERNAL-ERROR")
            return
        if label == "rpc":
            self._on_rpc(data)
            return
        try:
            message = _decode_data_channel_json(data, spec.compress)
            if label == "signaling":
                self._on_signaling(message, "datachannel")
            elif label == "stats" and message["type"] == "stats":
                self.last_stats = message.get("reports")
        except InvalidMessage as exc:
            log.info("%s: bad message on %r: %s", self, label, exc)
            self.end(4490, "INTERNAL-ERROR")

    def _on_rpc(self, data: bytes | str) -> None:
        """One JSON-RPC 2.0 message on ``rpc`` (``sora-protocol.md`` §2.8)."""
        try:
            text = data.decode("utf-8") if isinstance(data, bytes) else data
            request = json.loads(text)
        except (UnicodeDecodeError, ValueError):
            self._rpc_reply(None, error=(-32700, "Parse error"))
            return
        if not isinstance(request, dict) or request.get("jsonrpc") != "2.0":
            self._rpc_reply(None, error=(-32600, "Invalid Request"))
            return
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params", {})
        if not isinstance(method, str) or not isinstance(params, dict | list):
            self._rpc_reply(request_id, error=(-32600, "Invalid Request"))
            return
        handler = _RPC_METHODS.get(method.partition("/")[2])
        if method not in (self.settings.rpc_methods or []) or handler is None:
            self._rpc_reply(request_id, error=(-32601, "Method not found"))
            return
        try:
            result = handler(self, params)
        except InvalidMessage as exc:
            self._rpc_reply(request_id, error=(-32602, f"Invalid params: {exc}"))
            return
        if "id" in request:
            self._rpc_reply(request_id, result=result)

    def _rpc_reply(
        self, request_id: Any, *, result: Any = None, error: tuple[int, str] | None = None
    ) -> None:
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
        if error is None:
            reply["result"] = result
        else:
            reply["error"] = {"code": error[0], "message": error[1]}
        self.send_data("rpc", json.dumps(reply, separators=(",", ":")))

    def _rpc_request_simulcast_rid(self, params: dict[str, Any] | list[Any]) -> Any:
        if not isinstance(params, dict):
            raise InvalidMessage("params must be an object")
        rid = params.get("rid")
        if rid not in _REQUEST_RIDS:
            raise InvalidMessage("rid must be one of none, r0, r1, r2")
        sender = params.get("sender_connection_id")
        if sender is not None and not isinstance(sender, str):
            raise InvalidMessage("sender_connection_id must be a string")
        receiver = params.get("receiver_connection_id", self.connection_id)
        if receiver != self.connection_id:
            raise InvalidMessage("receiver_connection_id is not this connection")
        if not self.recv_video or not self.simulcast:
            raise InvalidMessage("this connection receives no simulcast video")
        self.request_simulcast_rid(str(rid), sender)
        return {}

    # -- outgoing ------------------------------------------------------------

    def _send_websocket(self, message: dict[str, Any]) -> None:
        # Sends start in call order and write synchronously, so order is kept.
        if self.websocket.is_open:
            self._spawn(self.websocket.send(message), f"send-{message.get('type')}")

    def _send_on_data_channel(self, label: str, message: dict[str, Any]) -> bool:
        spec = self.data_channel_specs.get(label)
        if spec is None or self.peer is None:
            return False
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        # compress=True: one zlib stream (RFC 1950) per message, sent as binary (§7.3).
        return self.send_data(label, zlib.compress(text.encode()) if spec.compress else text)

    def send_data(self, label: str, data: bytes | str) -> bool:
        """Send raw data on one of this connection's DataChannels; False if not open."""
        if self.peer is None or label not in self.open_data_channels:
            return False
        try:
            return self.peer.send_data(label, data)
        except Exception as exc:
            log.warning("%s: cannot send on %r: %s", self, label, exc)
            return False

    async def _send_signaling(self, message: dict[str, Any]) -> bool:
        if self.switched:
            return self._send_on_data_channel("signaling", message)
        return await self.websocket.send(message)

    def send_notify(self, message: dict[str, Any]) -> None:
        """Deliver a ``notify``: WebSocket before the switch, DataChannel ``notify`` after."""
        if self.switched:
            self._send_on_data_channel("notify", message)
        else:
            self._send_websocket(message)

    def send_push(self, data: Any) -> None:
        """Deliver ``{"type": "push", "data": data}`` on the current transport."""
        message = {"type": "push", "data": data}
        if self.switched:
            self._send_on_data_channel("push", message)
        else:
            self._send_websocket(message)

    def _add_metadata_fields(self, entry: dict[str, Any]) -> None:
        s = self.settings
        if s.signaling_notify_metadata is not ABSENT:
            entry["metadata"] = s.signaling_notify_metadata
        if s.metadata is not ABSENT:
            entry["authn_metadata"] = s.metadata
        if s.auth_metadata is not ABSENT:
            entry["authz_metadata"] = s.auth_metadata

    def notify_entry(self) -> dict[str, Any]:
        """This connection as an element of a joiner's ``connection.created`` ``data``."""
        entry: dict[str, Any] = {"connection_id": self.connection_id, "client_id": self.client_id}
        self._add_metadata_fields(entry)
        return entry

    def connection_event(self, event_type: str, counters: dict[str, int]) -> dict[str, Any]:
        """A ``connection.*`` notify about this connection (``sora-protocol.md`` §3.6)."""
        minutes = int((time.time() - (self.connected_at or self.created_at)) // 60)
        message: dict[str, Any] = {
            "type": "notify",
            "event_type": event_type,
            "role": self.role.value,
            "session_id": self.session_id,
            "client_id": self.client_id,
            "bundle_id": self.bundle_id,
            "connection_id": self.connection_id,
            "audio": self.settings.audio,
            "video": self.settings.video,
            "minutes": minutes,
            **counters,
            "turn_transport_type": "udp",
            "timestamp": _timestamp(),
        }
        if self.settings.spotlight:
            message["spotlight_number"] = self._spotlight_number()
        self._add_metadata_fields(message)
        return message

    def spotlight_event(self, event_type: str) -> dict[str, Any]:
        """A ``spotlight.*`` notify about this connection."""
        message: dict[str, Any] = {
            "type": "notify",
            "event_type": event_type,
            "client_id": self.client_id,
            "connection_id": self.connection_id,
            "audio": self.settings.audio,
            "video": self.settings.video,
            "fixed": False,
            "timestamp": _timestamp(),
        }
        if event_type == "spotlight.changed":
            message["spotlight_id"] = self.connection_id
        return message

    # -- renegotiation -------------------------------------------------------

    def request_renegotiation(self) -> None:
        """Ask the re-offer queue to bring this peer's subscriptions up to date."""
        self._renegotiation_needed.set()

    async def _renegotiation_loop(self) -> None:
        """The per-peer re-offer queue: one re-offer at a time, each waits for its re-answer.

        Requests that arrive while a re-offer is in flight coalesce into one
        more pass; every pass re-reads what the channel currently wants.
        """
        assert self.channel is not None and self.peer is not None
        while self.state is SessionState.CONNECTED:
            await self._renegotiation_needed.wait()
            self._renegotiation_needed.clear()
            if self.state is not SessionState.CONNECTED:
                return
            await self._switch_if_ready()
            desired = self.channel.subscriptions_for(self)
            if desired != self.subscriptions and not await self._reoffer(desired):
                return
            self.apply_simulcast_rids()

    async def _switch_if_ready(self) -> None:
        specs = self.data_channel_specs
        if self.switched or not specs or not self.open_data_channels.issuperset(specs):
            return
        if not self.websocket.is_open:
            return
        # From here on notify/push/re-offer use DataChannels; "switched" itself
        # is WebSocket-only (sora-js-sdk e2e type_switched.test.ts).
        self.switched = True
        log.info("%s: switched to DataChannel signaling", self)
        await self.websocket.send(
            {
                "type": "switched",
                "ignore_disconnect_websocket": self.settings.ignore_disconnect_websocket,
            }
        )

    async def _reoffer(self, desired: list[Publication]) -> bool:
        assert self.peer is not None
        try:
            sdp = await self.peer.create_reoffer(desired)
        except Exception:
            log.exception("%s: cannot create a re-offer", self)
            self.end(4490, "INTERNAL-ERROR")
            return False
        self._reanswer = asyncio.get_running_loop().create_future()
        try:
            if not await self._send_signaling({"type": "re-offer", "sdp": sdp}):
                log.info("%s: no transport for a re-offer", self)
                return False
            try:
                answer = await asyncio.wait_for(self._reanswer, self.options.signaling_timeout)
            except TimeoutError:
                log.info("%s: no re-answer", self)
                self.end(4490, "TIMEOUT")
                return False
        finally:
            self._reanswer = None
        try:
            await self.peer.set_reanswer(answer)
        except Exception:
            log.exception("%s: cannot apply the re-answer", self)
            self.end(4490, "INVALID-MESSAGE")
            return False
        self.subscriptions = desired
        return True

    # -- simulcast layers ----------------------------------------------------

    def _desired_rid(self, publisher_connection_id: str) -> str:
        if publisher_connection_id in self._rid_by_sender:
            return self._rid_by_sender[publisher_connection_id]
        if self._rid_for_all is not None:
            return self._rid_for_all
        assert self.channel is not None
        # Without a request Sora delivers r0 (sora-cpp-sdk issue 0085).
        return self.channel.spotlight_rid(self, publisher_connection_id) or "r0"

    def apply_simulcast_rids(self) -> None:
        """Tell the peer which layer to forward from each simulcast publisher, where it changed."""
        if self.peer is None or self.state is not SessionState.CONNECTED:
            return
        for publication in self.subscriptions:
            if publication.kind != "video" or not publication.rids:
                continue
            publisher = publication.connection_id
            rid = self._desired_rid(publisher)
            if self._applied_rids.get(publisher, "r0") != rid:
                self._applied_rids[publisher] = rid
                self.peer.set_simulcast_rid(publisher, rid)

    def request_simulcast_rid(self, rid: str, sender_connection_id: str | None = None) -> None:
        """``RequestSimulcastRid``: switch the layer received (from one sender or all).

        ``simulcast.switched`` follows when the media has switched (the peer's
        ``simulcast_switched`` event), or at once when nothing has to switch.
        """
        assert self.peer is not None
        affected = sorted(
            {
                p.connection_id
                for p in self.subscriptions
                if p.kind == "video" and sender_connection_id in (None, p.connection_id)
            }
        )
        if sender_connection_id is None:
            self._rid_for_all = rid
            self._rid_by_sender.clear()
        else:
            self._rid_by_sender[sender_connection_id] = rid
            affected = affected or [sender_connection_id]
        applied = {sender: self._applied_rids.get(sender, "r0") for sender in affected}
        for sender in affected:
            self._applied_rids[sender] = rid
        self.peer.set_simulcast_rid(sender_connection_id, rid)
        for sender in affected:
            forwarded = self.peer.forwarded_rid(sender)
            if rid == "none" or forwarded in (None, rid):
                # nothing will switch (no media yet, or already that layer): answer now
                self._pending_rid_requests.pop(sender, None)
                previous = applied[sender] if forwarded is None else forwarded
                self._notify_simulcast_switched(sender, rid, rid, previous)
            else:
                # notified when the media really switches, at the new layer's key
                # frame, with the layer it got (a lower one when ``rid`` is not sent)
                self._pending_rid_requests[sender] = rid

    def _on_simulcast_switched(self, sender: str, previous: str, current: str) -> None:
        requested = self._pending_rid_requests.pop(sender, None)
        if requested is not None:
            self._notify_simulcast_switched(sender, requested, current, previous)

    def _notify_simulcast_switched(
        self, sender: str, requested: str, current: str, previous: str
    ) -> None:
        self.send_notify(
            {
                "type": "notify",
                "event_type": "simulcast.switched",
                "sender_connection_id": sender,
                "trigger": "receiver",
                "request_rid": requested,
                "current_rid": current,
                "previous_rid": previous,
                "timestamp": _timestamp(),
            }
        )

    # -- keep-alive and lifetime --------------------------------------------

    async def _keepalive(self) -> None:
        """WebSocket ``ping`` until the switch; ``req-stats`` on DataChannel ``stats`` after.

        Ping is WebSocket-only and stops at ``switched`` (``sora-protocol.md``
        §3.7); a libwebrtc client answers a ping with DataChannel ``stats``
        once switched, so pinging then would only time it out.
        """
        interval = self.options.ping_interval
        if interval <= 0:
            return
        tick = 0
        while self.state in _ACTIVE:
            await asyncio.sleep(interval)
            tick += 1
            if self.switched:
                if tick % 2 == 0:
                    self._send_on_data_channel("stats", {"type": "req-stats"})
                continue
            if not self.websocket.is_open:
                return
            if self._awaiting_pong:
                log.info("%s: no pong within %ss", self, interval)
                self.end(4490, "TIMEOUT")
                return
            self._awaiting_pong = True
            await self.websocket.send({"type": "ping", "stats": tick % 2 == 0})

    async def _announce_updates(self) -> None:
        interval = self.options.connection_updated_interval
        while self.state is SessionState.CONNECTED and self.channel is not None:
            await asyncio.sleep(interval)
            if self.state is SessionState.CONNECTED and self.channel is not None:
                self.channel.on_updated(self)

    async def _expire(self, lifetime: float) -> None:
        await asyncio.sleep(lifetime)
        log.info("%s: lifetime of %ss expired", self, lifetime)
        self.end(1000, "LIFETIME-EXPIRED")

    # -- ending --------------------------------------------------------------

    def end(self, code: int, reason: str, *, by_client: bool = False) -> asyncio.Task[None]:
        """Close this connection once (later calls return the same task).

        ``by_client``: the client sent ``disconnect``, so its DataChannels are
        closed before the WebSocket (``sora-protocol.md`` §5.8). Otherwise the
        WebSocket, while open, carries ``code``/``reason``; a DataChannel-only
        session gets ``{"type":"close"}`` when the server option allows it.
        """
        if self._close_task is None:
            # Synchronously, so that frames already queued behind this one
            # (e.g. a second connect after a redirect) are ignored.
            previous, self.state = self.state, SessionState.CLOSING
            self._close_task = asyncio.create_task(
                self._close(code, reason, by_client, previous),
                name=f"devserver-close-{self.connection_id}",
            )
        return self._close_task

    def cut_close_grace(self) -> None:
        """Do not wait for the client's own peer close (server shutdown)."""
        self._close_grace = 0.0
        self._peer_gone.set()

    async def _close(self, code: int, reason: str, by_client: bool, previous: SessionState) -> None:
        log.info("%s: closing (%s %s) from %s", self, code, reason, previous.value)
        for task in list(self._background):
            task.cancel()
        if self._reanswer is not None and not self._reanswer.done():
            self._reanswer.cancel()
        self.registry.leave(self)
        peer = self.peer
        try:
            if by_client:
                await self._close_data_channels()
                await self.websocket.close(code, reason)
            elif self.websocket.is_open:
                await self.websocket.close(code, reason)
                await self._close_data_channels()
            else:
                if (
                    self.options.data_channel_signaling_close_message
                    and self.switched
                    and self.settings.ignore_disconnect_websocket
                ):
                    # DataChannel-only sessions have no close frame to carry the
                    # reason (sora-js-sdk CHANGES 2024.2.0); Sora then closes the DCs.
                    self._send_on_data_channel(
                        "signaling", {"type": "close", "code": code, "reason": reason}
                    )
                await self._close_data_channels()
            if peer is not None:
                if self.data_channel_specs and self.connected_at is not None:
                    try:
                        await asyncio.wait_for(self._peer_gone.wait(), self._close_grace)
                    except TimeoutError:
                        pass
                await asyncio.wait_for(peer.close(), TEARDOWN_TIMEOUT)
        except Exception:
            log.exception("%s: error while closing", self)
        finally:
            await self._finish_tasks()
            if peer is not None:
                peer.remove_all_listeners()
            self.state = SessionState.CLOSED
            self.registry.forget(self)
            self.closed.set()
            log.info("%s: closed", self)
            if self._on_closed is not None:
                self._on_closed(self)

    async def _close_data_channels(self) -> None:
        if self.peer is None or not self.data_channel_specs:
            return
        try:
            await asyncio.wait_for(self.peer.close_data_channels(), TEARDOWN_TIMEOUT)
        except Exception as exc:
            log.warning("%s: closing DataChannels failed: %r", self, exc)
        self.open_data_channels.clear()

    async def _finish_tasks(self) -> None:
        # Sends still in flight get a moment; everything else is cancelled.
        pending = [t for t in self._tasks if t is not asyncio.current_task()]
        if pending:
            _done, still = await asyncio.wait(pending, timeout=1.0)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)


def _offer_entry(spec: DataChannelSpec) -> dict[str, Any]:
    # label/direction/compress are required by the C++ and Rust parsers (sora_sdk
    # aborts without compress); header only when set, never null.
    entry: dict[str, Any] = {
        "label": spec.label,
        "direction": spec.direction,
        "compress": spec.compress,
    }
    if spec.header:
        entry["header"] = list(spec.header)
    return entry


#: JSON-RPC handlers by HTTP API name (the method less its ``"<version>/"`` prefix).
_RPC_METHODS: dict[str, Callable[[Session, dict[str, Any] | list[Any]], Any]] = {
    "RequestSimulcastRid": Session._rpc_request_simulcast_rid,
}


def _decode_data_channel_json(data: bytes | str, compress: bool) -> dict[str, Any]:
    # Clients send text or binary on uncompressed labels (JS text, C++ binary);
    # compressed labels carry one zlib stream per message (§7.3).
    if isinstance(data, bytes):
        if compress:
            try:
                data = zlib.decompress(data)
            except zlib.error as exc:
                raise InvalidMessage(f"bad zlib data: {exc}") from None
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidMessage(f"not UTF-8: {exc}") from None
    return _decode_json_object(data)
