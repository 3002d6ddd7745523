"""The keywords of :class:`sora_async.Connection`: validation and the ``connect`` message.

:class:`Connection` takes every keyword of the official
``Sora.create_connection`` (``sora-sdk-reference.md`` §1.5) with the same name,
type and meaning, plus ``video_h265_params`` (official 2025.5.2),
``video_codec_preference``, ``openh264`` (the official ``Sora(openh264=...)``)
and ``connect_timeout``. Everything is checked here,
before any network activity: an unknown keyword raises ``TypeError``; a wrong
type or value raises ``ValueError`` naming the keyword.

:meth:`ConnectionOptions.connect_message` builds ``{"type":"connect",...}``
exactly as the C++ SDK does (key order included, as observed from the
official client): snake_case keys, ``audio``/``video`` as ``true``/``false``
/object, bit rates in kbps, unset keys omitted rather than ``null``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import platform
import ssl
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import Any, Final, TypedDict

from aiortc.mediastreams import MediaStreamTrack

from .enums import SORA_MANAGED_LABELS, DegradationPreference, Role
from .signaling.machine import SignalingConfig
from .signaling.messages import is_signaling_url

AUDIO_CODEC_TYPES: Final = frozenset({"OPUS"})
#: What Sora accepts; :mod:`sora_async.codecs` encodes and decodes all five.
VIDEO_CODEC_TYPES: Final = frozenset({"VP8", "VP9", "AV1", "H264", "H265"})
SIMULCAST_RIDS: Final = frozenset({"r0", "r1", "r2"})
REQUEST_RIDS: Final = frozenset({"none", "r0", "r1", "r2"})
DIRECTIONS: Final = frozenset({"sendonly", "recvonly", "sendrecv"})
#: Bytes, the limit Sora documents for ids (``sora-protocol.md`` §1.1).
MAX_ID_BYTES: Final = 255

# Defaults of the official SDK (C++ SoraSignalingConfig, §5.10), except the
# overall connect deadline, which the official client does not have.
DEFAULT_CONNECT_TIMEOUT: Final = 30.0
DEFAULT_WEBSOCKET_CONNECTION_TIMEOUT: Final = 30.0
DEFAULT_WEBSOCKET_CLOSE_TIMEOUT: Final = 3.0
DEFAULT_DISCONNECT_WAIT_TIMEOUT: Final = 5.0

_DATA_CHANNEL_KEYS: Final = (
    "label",
    "direction",
    "ordered",
    "max_packet_life_time",
    "max_retransmits",
    "protocol",
    "compress",
    "header",
)
#: Keywords whose values are secrets: never logged, never in ``repr()`` or error messages.
SECRET_KEYWORDS: Final = frozenset(
    {"metadata", "signaling_notify_metadata", "client_key", "proxy_password"}
)

logger = logging.getLogger("sora_async")

_FORWARDING_FILTER_KEYS: Final = ("name", "priority", "action", "rules", "version", "metadata")
_FORWARDING_RULE_KEYS: Final = ("field", "operator", "values")


class ConnectionKeywords(TypedDict, total=False):
    """Optional keywords of :class:`sora_async.Connection` (see the official reference §1.5)."""

    client_id: str | None
    bundle_id: str | None
    metadata: Any
    signaling_notify_metadata: Any
    audio_source: Any
    video_source: Any
    audio_frame_transformer: Any
    video_frame_transformer: Any
    audio: bool | None
    video: bool | None
    audio_codec_type: str | None
    video_codec_type: str | None
    video_bit_rate: int | None
    audio_bit_rate: int | None
    video_vp9_params: dict[str, Any] | None
    video_av1_params: dict[str, Any] | None
    video_h264_params: dict[str, Any] | None
    video_h265_params: dict[str, Any] | None
    audio_opus_params: dict[str, Any] | None
    simulcast: bool | None
    spotlight: bool | None
    spotlight_number: int | None
    simulcast_rid: str | None
    simulcast_request_rid: str | None
    spotlight_focus_rid: str | None
    spotlight_unfocus_rid: str | None
    forwarding_filter: dict[str, Any] | None
    forwarding_filters: list[dict[str, Any]] | None
    data_channels: list[dict[str, Any]] | None
    data_channel_signaling: bool | None
    ignore_disconnect_websocket: bool | None
    data_channel_signaling_timeout: float | None
    disconnect_wait_timeout: float | None
    websocket_close_timeout: float | None
    websocket_connection_timeout: float | None
    audio_streaming_language_code: str | None
    insecure: bool | None
    client_cert: bytes | str | None
    client_key: bytes | str | None
    ca_cert: bytes | str | None
    proxy_url: str | None
    proxy_username: str | None
    proxy_password: str | None
    proxy_agent: str | None
    degradation_preference: DegradationPreference | int | None
    user_agent: str | None
    video_codec_preference: Any
    openh264: str | None
    connect_timeout: float | None


@dataclass(frozen=True)
class ConnectionOptions:
    """Validated keywords of one :class:`sora_async.Connection`.

    Build it with :meth:`from_arguments`; fields keep the official names.
    ``None`` means "not given" and keeps the official default. Timeouts are
    seconds.
    """

    signaling_urls: tuple[str, ...]
    role: Role
    channel_id: str
    client_id: str | None = None
    bundle_id: str | None = None
    metadata: Any = None
    signaling_notify_metadata: Any = None
    audio_source: Any = None
    video_source: Any = None
    #: Sender-side encoded transforms (:mod:`sora_async.transform`, issue 7).
    audio_frame_transformer: Any = None
    video_frame_transformer: Any = None
    audio: bool | None = None
    video: bool | None = None
    audio_codec_type: str | None = None
    video_codec_type: str | None = None
    video_bit_rate: int | None = None
    audio_bit_rate: int | None = None
    video_vp9_params: dict[str, Any] | None = None
    video_av1_params: dict[str, Any] | None = None
    video_h264_params: dict[str, Any] | None = None
    video_h265_params: dict[str, Any] | None = None
    audio_opus_params: dict[str, Any] | None = None
    simulcast: bool | None = None
    spotlight: bool | None = None
    spotlight_number: int | None = None
    simulcast_rid: str | None = None
    simulcast_request_rid: str | None = None
    spotlight_focus_rid: str | None = None
    spotlight_unfocus_rid: str | None = None
    forwarding_filter: dict[str, Any] | None = None
    forwarding_filters: tuple[dict[str, Any], ...] | None = None
    data_channels: tuple[dict[str, Any], ...] | None = None
    data_channel_signaling: bool | None = None
    ignore_disconnect_websocket: bool | None = None
    #: Accepted for compatibility; unused, as in the C++ SDK (§5.10).
    data_channel_signaling_timeout: float | None = None
    disconnect_wait_timeout: float | None = None
    websocket_close_timeout: float | None = None
    websocket_connection_timeout: float | None = None
    audio_streaming_language_code: str | None = None
    #: Skip TLS certificate verification (a warning is logged once per connection).
    insecure: bool | None = None
    #: PEM contents (``bytes``); a ``str`` given to the constructor is read as a
    #: file path (or taken as PEM text if it contains ``-----BEGIN``).
    client_cert: bytes | None = None
    client_key: bytes | None = None
    ca_cert: bytes | None = None
    #: ``http://host:port`` (or ``https://``) proxy for the signaling WebSocket.
    proxy_url: str | None = None
    proxy_username: str | None = None
    proxy_password: str | None = None
    #: ``User-Agent`` of the proxy ``CONNECT`` request (default: the handshake's).
    proxy_agent: str | None = None
    #: What the video sender gives up first when bits or CPU run short (issue 6,
    #: :mod:`sora_async.rtc.degradation`); None: libwebrtc's default for camera
    #: video, ``MAINTAIN_FRAMERATE``.
    degradation_preference: DegradationPreference | None = None
    user_agent: str | None = None
    #: Which codecs are offered and who encodes/decodes them: a
    #: :class:`~sora_async.hwaccel.VideoCodecPreference`, an official
    #: ``sora_sdk.SoraVideoCodecPreference`` (same shape), or its ``to_json()``.
    video_codec_preference: Any = None
    #: Path of Cisco's libopenh264 for ``CISCO_OPENH264`` (not a ``create_connection``
    #: keyword: the official API takes it as ``Sora(openh264=...)``).
    openh264: str | None = None
    #: Overall deadline of ``Connection.connect()`` (not an official keyword).
    connect_timeout: float | None = None

    @classmethod
    def from_arguments(
        cls, signaling_urls: Any, role: Any, channel_id: Any, **keywords: Any
    ) -> ConnectionOptions:
        """Validate the arguments of :class:`sora_async.Connection`.

        >>> ConnectionOptions.from_arguments("wss://sora/signaling", "recvonly", "ch").role
        <Role.RECVONLY: 'recvonly'>
        """
        unknown = sorted(set(keywords) - _KEYWORD_NAMES)
        if unknown:
            raise TypeError(
                f"Connection() got unexpected keyword argument(s): {', '.join(unknown)}"
            )
        values: dict[str, Any] = {
            "signaling_urls": _signaling_urls(signaling_urls),
            "role": _role(role),
            "channel_id": _identifier("channel_id", channel_id, required=True),
        }
        for name, value in keywords.items():
            values[name] = _VALIDATORS[name](name, value)
        options = cls(**values)
        options._check_transport()
        return options

    def _check_transport(self) -> None:
        # TLS material is loaded once here, so that a bad PEM fails before any I/O.
        from .websocket import tls_context

        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key needs client_cert")
        if self.ca_cert is not None or self.client_cert is not None:
            try:
                tls_context(
                    ca_cert=self.ca_cert, client_cert=self.client_cert, client_key=self.client_key
                )
            except (ssl.SSLError, ValueError) as exc:
                what = "ca_cert" if self.client_cert is None else "client_cert/client_key"
                if self.ca_cert is not None and self.client_cert is not None:
                    what = "ca_cert or client_cert/client_key"
                raise ValueError(f"{what} cannot be used: {_ssl_reason(exc)}") from None
        if (self.proxy_username or self.proxy_password) and not self.proxy_url:
            # Credentials without a proxy: the user believes traffic goes through one.
            raise ValueError("proxy_username/proxy_password need proxy_url")
        if self.insecure:
            logger.warning(
                "insecure=True: TLS certificates of the signaling server and of TURN "
                "servers (turns:) are NOT verified"
            )

    def __repr__(self) -> str:
        # Secrets (access tokens in metadata, the private key, the proxy
        # password) never appear; see docs/security.md.
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name in SECRET_KEYWORDS:
                shown.append(f"{f.name}=<redacted>")
            elif f.name in ("ca_cert", "client_cert"):
                shown.append(f"{f.name}=<{len(value)} bytes>")
            else:
                shown.append(f"{f.name}={value!r}")
        return f"ConnectionOptions({', '.join(shown)})"

    # -- derived values -------------------------------------------------------

    def signaling_config(self) -> SignalingConfig:
        """What the signaling state machine needs, with the official default timeouts."""
        return SignalingConfig(
            signaling_urls=self.signaling_urls,
            connect_message=self.connect_message(),
            connect_timeout=_or(self.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
            websocket_connection_timeout=_or(
                self.websocket_connection_timeout, DEFAULT_WEBSOCKET_CONNECTION_TIMEOUT
            ),
            websocket_close_timeout=_or(
                self.websocket_close_timeout, DEFAULT_WEBSOCKET_CLOSE_TIMEOUT
            ),
            disconnect_wait_timeout=_or(
                self.disconnect_wait_timeout, DEFAULT_DISCONNECT_WAIT_TIMEOUT
            ),
        )

    def connect_message(self) -> dict[str, Any]:
        """The ``connect`` message, keys in the C++ SDK's order (observed).

        Optional keys are omitted rather than sent as ``null``; ``client_id``,
        ``bundle_id`` and the rid strings only when non-empty;
        ``spotlight_number`` only when positive (``sora-sdk-reference.md`` §1.5).
        """
        message: dict[str, Any] = {
            "type": "connect",
            "role": self.role.value,
            "channel_id": self.channel_id,
            "sora_client": sora_client(),
            "libwebrtc": libwebrtc(),
            "environment": environment(),
        }
        put = _Putter(message)
        put.nonempty("client_id", self.client_id)
        put.nonempty("bundle_id", self.bundle_id)
        put.given("simulcast", self.simulcast)
        put.nonempty("simulcast_rid", self.simulcast_rid)
        put.nonempty("simulcast_request_rid", self.simulcast_request_rid)
        put.given("spotlight", self.spotlight)
        if self.spotlight_number:
            message["spotlight_number"] = self.spotlight_number
        put.nonempty("spotlight_focus_rid", self.spotlight_focus_rid)
        put.nonempty("spotlight_unfocus_rid", self.spotlight_unfocus_rid)
        put.given("metadata", _json_copy(self.metadata))
        put.given("signaling_notify_metadata", _json_copy(self.signaling_notify_metadata))
        message["video"] = _media(
            self.video,
            codec_type=self.video_codec_type,
            bit_rate=self.video_bit_rate,
            vp9_params=self.video_vp9_params,
            av1_params=self.video_av1_params,
            h264_params=self.video_h264_params,
            h265_params=self.video_h265_params,
        )
        message["audio"] = _media(
            self.audio,
            codec_type=self.audio_codec_type,
            bit_rate=self.audio_bit_rate,
            opus_params=self.audio_opus_params,
        )
        put.nonempty("audio_streaming_language_code", self.audio_streaming_language_code)
        put.given("data_channel_signaling", self.data_channel_signaling)
        put.given("ignore_disconnect_websocket", self.ignore_disconnect_websocket)
        if self.data_channels:
            message["data_channels"] = [
                _ordered(entry, _DATA_CHANNEL_KEYS) for entry in self.data_channels
            ]
        if self.forwarding_filter is not None:
            message["forwarding_filter"] = _forwarding_filter_json(self.forwarding_filter)
        if self.forwarding_filters is not None:
            message["forwarding_filters"] = [
                _forwarding_filter_json(f) for f in self.forwarding_filters
            ]
        return message

    def audio_track(self) -> MediaStreamTrack | None:
        """The aiortc track behind ``audio_source``, if any."""
        return _unwrap_track(self.audio_source)

    def video_track(self) -> MediaStreamTrack | None:
        """The aiortc track behind ``video_source``, if any."""
        return _unwrap_track(self.video_source)

    def user_agent_header(self) -> str:
        """``User-Agent`` of the signaling WebSocket handshake."""
        from .websocket import default_user_agent

        return self.user_agent if self.user_agent is not None else default_user_agent()

    def proxy(self) -> str | None:
        """The proxy URL for ``websockets`` (credentials embedded), or None.

        Like the official client, environment proxy variables are not used.
        The result contains the password: never log it.
        """
        from .websocket import proxy_url

        return proxy_url(self.proxy_url, self.proxy_username, self.proxy_password)

    def ssl_context(self) -> ssl.SSLContext:
        """TLS for ``wss://`` from ``ca_cert``, ``client_cert``/``client_key`` and ``insecure``."""
        from .websocket import tls_context

        return tls_context(
            ca_cert=self.ca_cert,
            client_cert=self.client_cert,
            client_key=self.client_key,
            insecure=bool(self.insecure),
        )

    def turn_ssl_context(self) -> ssl.SSLContext:
        """TLS for ``turns:`` servers of the offer: ``ca_cert`` and ``insecure`` as
        for ``wss://`` (the system trust store by default); no client certificate."""
        from .websocket import tls_context

        return tls_context(ca_cert=self.ca_cert, insecure=bool(self.insecure))


# -- client identification (sora-protocol.md §8.3) ----------------------------


def sora_client() -> str:
    """``sora_client``: this library and its version, e.g. ``"sora_async 0.1.0"``."""
    from . import __version__

    return f"sora_async {__version__}"


@functools.cache
def libwebrtc() -> str:
    """``libwebrtc``: the WebRTC stack in use, e.g. ``"aiortc 1.16.0"``."""
    # cached: reading the installed metadata took ~0.3 ms of every Connection()
    try:
        return f"aiortc {importlib_metadata.version('aiortc')}"
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover - aiortc is a dependency
        return "aiortc"


def environment() -> str:
    """``environment`` as the C++ SDK writes it: ``"[<machine>] <OS>"``."""
    machine = platform.machine() or "unknown"
    system = platform.system()
    name = ""
    if system == "Linux":
        try:
            name = platform.freedesktop_os_release().get("PRETTY_NAME", "")
        except OSError:
            name = ""
    elif system == "Darwin":
        name = f"macOS {platform.mac_ver()[0]}".strip()
    elif system == "Windows":
        version = platform.version().split(".")
        if len(version) >= 3:
            name = f"Windows {version[0]}.{version[1]} Build {version[2]}"
    if not name:
        return "Unknown Environment"
    return f"[{machine}] {name}"


# -- validators --------------------------------------------------------------


def _fail(name: str, expected: str, value: Any) -> ValueError:
    if name.partition("[")[0] in SECRET_KEYWORDS:
        # A secret's value is never echoed, not even a wrong one.
        return ValueError(f"{name} must be {expected}, got a value of type {type(value).__name__}")
    return ValueError(f"{name} must be {expected}, got {value!r}")


def _signaling_urls(value: Any) -> tuple[str, ...]:
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, Sequence) or isinstance(urls, bytes | bytearray):
        raise _fail("signaling_urls", "a ws:// or wss:// URL or a list of them", value)
    if not urls:
        raise ValueError("signaling_urls must not be empty")
    for url in urls:
        if not is_signaling_url(url):
            raise _fail("signaling_urls", "ws:// or wss:// URLs with a host", url)
    return tuple(urls)


def _role(value: Any) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise _fail("role", '"sendrecv", "sendonly" or "recvonly"', value) from None


def _identifier(name: str, value: Any, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise _fail(name, "a non-empty string" if required else "a string or None", value)
    if len(value.encode()) > MAX_ID_BYTES:
        raise ValueError(f"{name} must be at most {MAX_ID_BYTES} bytes in UTF-8")
    return value


def _optional_str(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _fail(name, "a string or None", value)
    return value


def _optional_bool(name: str, value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise _fail(name, "True, False or None", value)
    return value


def _optional_count(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(name, "a non-negative int or None", value)
    return value


def _optional_seconds(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise _fail(name, "a positive number of seconds or None", value)
    if not math.isfinite(value):
        raise _fail(name, "a finite number of seconds", value)
    return float(value)


def _pem(name: str, value: Any) -> bytes | None:
    # bytes: PEM contents, as the official API takes them. str: a file path
    # (a convenience), or PEM text when it contains a BEGIN line.
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    elif isinstance(value, str):
        if "-----BEGIN" in value:
            data = value.encode()
        else:
            try:
                with open(value, "rb") as file:
                    data = file.read()
            except OSError as exc:
                # The path is not echoed: a mistaken str may be key material.
                raise ValueError(
                    f"{name}: cannot read the file it names ({exc.strerror or exc})"
                ) from None
    else:
        raise _fail(name, "bytes (PEM contents), a str path or None", value)
    if not data.strip():
        raise ValueError(f"{name} is empty")
    return data


def _header_value(name: str, value: Any) -> str | None:
    # An HTTP header value: no CR/LF (header injection), ISO-8859-1 on the wire.
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(name, "a string or None", value)
    if any(ord(c) < 0x20 or ord(c) == 0x7F or ord(c) > 0xFF for c in value):
        raise ValueError(f"{name} must be printable ISO-8859-1 without control characters")
    return value


def _proxy_url(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _fail(name, "an http:// URL or None", value)
    if "@" in value:
        # Not echoed: it contains a password.
        raise ValueError(f"{name} must not contain credentials; use proxy_username/proxy_password")
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError(f"{name} must be an http:// URL with a host and a valid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(name, "an http:// (or https://) URL with a host", value)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _fail(name, "an http:// URL without path, query or fragment", value)
    if port == 0:
        raise _fail(name, "a URL with a non-zero port", value)
    return value


def _proxy_username(name: str, value: Any) -> str | None:
    checked = _header_value(name, value)
    if checked is not None and ":" in checked:
        raise ValueError(f"{name} must not contain ':' (HTTP Basic authentication)")
    return checked


def _secret_str(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _fail(name, "a string or None", value)
    if value is not None and any(c in value for c in "\r\n\0"):
        raise ValueError(f"{name} must not contain CR, LF or NUL")
    return value


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.strerror or exc)
    return str(exc)


def _choice(choices: frozenset[str]) -> Any:
    def validate(name: str, value: Any) -> str | None:
        if value is None or value == "":
            return None
        if value not in choices:
            raise _fail(name, " or ".join(sorted(choices)) + " or None", value)
        return str(value)

    return validate


def _json(name: str, value: Any) -> Any:
    _check_json(name, value)
    return value


def _json_object(name: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _fail(name, "a dict or None", value)
    _check_json(name, value)
    return dict(value)


def _check_json(name: str, value: Any, depth: int = 0) -> None:
    # Same value domain as the official ConvertJsonValue: None/bool/int/float/str/list/dict.
    if depth > 64:
        raise ValueError(f"{name} is nested too deeply")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(name, "JSON (finite numbers only)", value)
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_json(name, item, depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _fail(name, "JSON (object keys must be strings)", key)
            _check_json(name, item, depth + 1)
        return
    raise _fail(name, "JSON (None, bool, int, float, str, list or dict)", value)


def _track_source(kind: str) -> Any:
    def validate(name: str, value: Any) -> Any:
        if value is None:
            return None
        track = _unwrap_track(value)
        if track is None:
            raise _fail(name, "an aiortc MediaStreamTrack or an object with a .track one", value)
        if track.kind != kind:
            raise ValueError(f"{name} must be an {kind} track, got a {track.kind} track")
        return value

    return validate


def _unwrap_track(source: Any) -> MediaStreamTrack | None:
    if source is None:
        return None
    if isinstance(source, MediaStreamTrack):
        return source
    track = getattr(source, "track", None)
    return track if isinstance(track, MediaStreamTrack) else None


def _anything(name: str, value: Any) -> Any:
    return value


def _frame_transformer(name: str, value: Any) -> Any:
    """Issue 7: an Audio/VideoFrameTransformer of the keyword's kind, or an async callable."""
    from .transform import as_transformer

    try:
        return as_transformer(value, name.split("_", 1)[0], name)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def _video_codec_preference(name: str, value: Any) -> Any:
    """None, ours, its ``to_json()`` dict, or an object of the official shape.

    The object itself is kept (the engine converts it when the offer comes);
    here it is converted once so that a wrong one fails before any I/O.
    """
    if value is None:
        return None
    from .hwaccel.capability import VideoCodecPreference

    if not isinstance(value, VideoCodecPreference | Mapping) and (
        isinstance(value, str | bytes | int | float | list | tuple) or not hasattr(value, "codecs")
    ):
        raise _fail(
            name, "a VideoCodecPreference (or sora_sdk.SoraVideoCodecPreference) or None", value
        )
    try:
        VideoCodecPreference.coerce(value)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f"{name} cannot be used: {exc}") from None
    return value


def _openh264(name: str, value: Any) -> str | None:
    """The path of Cisco's libopenh264, loaded here so that a wrong one fails at once."""
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise _fail(name, "the path of libopenh264 (a str) or None", value)
    from .codecs.openh264 import OpenH264Error, OpenH264Library

    try:
        OpenH264Library.load(value)
    except OpenH264Error as exc:
        raise ValueError(f"{name} cannot be used: {exc}") from None
    return value


def _degradation_preference(name: str, value: Any) -> DegradationPreference | None:
    if value is None:
        return None
    try:
        return DegradationPreference(int(value))
    except (TypeError, ValueError):
        raise _fail(name, "a DegradationPreference (0-3) or None", value) from None


def _data_channels(name: str, value: Any) -> tuple[dict[str, Any], ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise _fail(name, "a list of dicts or None", value)
    entries: list[dict[str, Any]] = []
    labels: set[str] = set()
    for index, entry in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(entry, Mapping):
            raise _fail(where, "a dict", entry)
        unknown = sorted(set(entry) - set(_DATA_CHANNEL_KEYS))
        if unknown:
            raise ValueError(f"{where} has unknown key(s): {', '.join(unknown)}")
        label = entry.get("label")
        if not isinstance(label, str) or not label:
            raise _fail(f"{where}['label']", "a non-empty string", label)
        if not label.startswith("#") and label not in SORA_MANAGED_LABELS:
            # Messaging labels must start with "#" (DOC:MESSAGING, §7.1).
            raise ValueError(
                f"{where}['label'] must start with '#' or be a Sora-managed label "
                f"({', '.join(sorted(SORA_MANAGED_LABELS))}), got {label!r}"
            )
        if label in labels:
            raise ValueError(f"{name} lists label {label!r} twice")
        labels.add(label)
        if entry.get("direction") not in DIRECTIONS:
            raise _fail(
                f"{where}['direction']", "sendonly, recvonly or sendrecv", entry.get("direction")
            )
        for key in ("ordered", "compress"):
            _optional_bool(f"{where}[{key!r}]", entry.get(key))
        for key in ("max_packet_life_time", "max_retransmits"):
            _optional_count(f"{where}[{key!r}]", entry.get(key))
        if (
            entry.get("max_packet_life_time") is not None
            and entry.get("max_retransmits") is not None
        ):
            # WebRTC: the two partial-reliability limits are mutually exclusive.
            raise ValueError(f"{where} cannot set both max_packet_life_time and max_retransmits")
        _optional_str(f"{where}['protocol']", entry.get("protocol"))
        header = entry.get("header")
        if header is not None:
            if not isinstance(header, list | tuple) or not all(
                isinstance(h, Mapping) and isinstance(h.get("type"), str) for h in header
            ):
                raise _fail(
                    f"{where}['header']", 'a list like [{"type": "sender_connection_id"}]', header
                )
            _check_json(f"{where}['header']", header)
        entries.append(
            {key: entry[key] for key in _DATA_CHANNEL_KEYS if entry.get(key) is not None}
        )
    return tuple(entries)


def _forwarding_filter(name: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _fail(name, "a dict or None", value)
    unknown = sorted(set(value) - set(_FORWARDING_FILTER_KEYS))
    if unknown:
        raise ValueError(f"{name} has unknown key(s): {', '.join(unknown)}")
    if value.get("action") not in (None, "block", "allow"):
        raise _fail(f"{name}['action']", '"block", "allow" or absent', value.get("action"))
    for key in ("name", "version"):
        _optional_str(f"{name}[{key!r}]", value.get(key))
    priority = value.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise _fail(f"{name}['priority']", "an int", priority)
    _check_json(f"{name}['metadata']", value.get("metadata"))
    rules = value.get("rules")
    if not isinstance(rules, list | tuple):
        raise _fail(f"{name}['rules']", "a list of lists of rules", rules)
    for i, group in enumerate(rules):
        if not isinstance(group, list | tuple):
            raise _fail(f"{name}['rules'][{i}]", "a list of rules", group)
        for j, rule in enumerate(group):
            where = f"{name}['rules'][{i}][{j}]"
            if not isinstance(rule, Mapping) or set(rule) != set(_FORWARDING_RULE_KEYS):
                raise _fail(where, "a dict with field, operator and values", rule)
            if rule["field"] not in ("connection_id", "client_id", "kind"):
                raise _fail(f"{where}['field']", "connection_id, client_id or kind", rule["field"])
            if rule["operator"] not in ("is_in", "is_not_in"):
                raise _fail(f"{where}['operator']", "is_in or is_not_in", rule["operator"])
            values = rule["values"]
            if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
                raise _fail(f"{where}['values']", "a list of strings", values)
    return dict(value)


def _forwarding_filters(name: str, value: Any) -> tuple[dict[str, Any], ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise _fail(name, "a list of dicts or None", value)
    result = []
    for i, item in enumerate(value):
        checked = _forwarding_filter(f"{name}[{i}]", item)
        assert checked is not None
        result.append(checked)
    return tuple(result)


_VALIDATORS: Final[Mapping[str, Any]] = {
    "client_id": lambda n, v: _identifier(n, v),
    "bundle_id": lambda n, v: _identifier(n, v),
    "metadata": _json,
    "signaling_notify_metadata": _json,
    "audio_source": _track_source("audio"),
    "video_source": _track_source("video"),
    "audio_frame_transformer": _frame_transformer,
    "video_frame_transformer": _frame_transformer,
    "audio": _optional_bool,
    "video": _optional_bool,
    "audio_codec_type": _choice(AUDIO_CODEC_TYPES),
    "video_codec_type": _choice(VIDEO_CODEC_TYPES),
    "video_bit_rate": _optional_count,
    "audio_bit_rate": _optional_count,
    "video_vp9_params": _json_object,
    "video_av1_params": _json_object,
    "video_h264_params": _json_object,
    "video_h265_params": _json_object,
    "audio_opus_params": _json_object,
    "simulcast": _optional_bool,
    "spotlight": _optional_bool,
    "spotlight_number": _optional_count,
    "simulcast_rid": _choice(SIMULCAST_RIDS),
    "simulcast_request_rid": _choice(REQUEST_RIDS),
    "spotlight_focus_rid": _choice(REQUEST_RIDS),
    "spotlight_unfocus_rid": _choice(REQUEST_RIDS),
    "forwarding_filter": _forwarding_filter,
    "forwarding_filters": _forwarding_filters,
    "data_channels": _data_channels,
    "data_channel_signaling": _optional_bool,
    "ignore_disconnect_websocket": _optional_bool,
    "data_channel_signaling_timeout": _optional_seconds,
    "disconnect_wait_timeout": _optional_seconds,
    "websocket_close_timeout": _optional_seconds,
    "websocket_connection_timeout": _optional_seconds,
    "audio_streaming_language_code": _optional_str,
    "insecure": _optional_bool,
    "client_cert": _pem,
    "client_key": _pem,
    "ca_cert": _pem,
    "proxy_url": _proxy_url,
    "proxy_username": _proxy_username,
    "proxy_password": _secret_str,
    "proxy_agent": _header_value,
    "degradation_preference": _degradation_preference,
    "user_agent": _header_value,
    "video_codec_preference": _video_codec_preference,
    "openh264": _openh264,
    "connect_timeout": _optional_seconds,
}
_KEYWORD_NAMES: Final = frozenset(_VALIDATORS)

#: The keywords of the official ``create_connection`` (48, §1.5) plus ``video_h265_params``.
OFFICIAL_KEYWORDS: Final = frozenset(f.name for f in dataclasses.fields(ConnectionOptions)) - {
    "video_codec_preference",
    "openh264",
    "connect_timeout",
}


# -- connect message helpers -------------------------------------------------


class _Putter:
    def __init__(self, message: dict[str, Any]) -> None:
        self._message = message

    def given(self, key: str, value: Any) -> None:
        if value is not None:
            self._message[key] = value

    def nonempty(self, key: str, value: str | None) -> None:
        if value:
            self._message[key] = value


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _json_copy(value: Any) -> Any:
    # Normalizes tuples to lists and detaches the message from the caller's objects.
    return None if value is None else json.loads(json.dumps(value))


def _media(enabled: bool | None, **options: Any) -> bool | dict[str, Any]:
    # false stays false; enabled with no option is true; otherwise an object (§2.1.1).
    if enabled is False:
        return False
    given = {key: _json_copy(value) for key, value in options.items() if value}
    return given or True


def _ordered(entry: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {key: _json_copy(entry[key]) for key in keys if entry.get(key) is not None}


def _forwarding_filter_json(value: Mapping[str, Any]) -> dict[str, Any]:
    result = _ordered(value, _FORWARDING_FILTER_KEYS)
    result["rules"] = [
        [_ordered(rule, _FORWARDING_RULE_KEYS) for rule in group] for group in value["rules"]
    ]
    return result
