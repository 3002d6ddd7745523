"""``Sora`` and ``SoraConnection``: the official blocking, callback-style API on the asyncio core.

``Sora.create_connection(...)`` builds a :class:`sora_async.Connection` with
the same keywords. ``connect()`` schedules it on the ``Sora`` instance's
event-loop thread and returns at once; its events come back as the official
``on_*`` callbacks, with the official argument types (JSON strings, enums,
``bytes``), on the callback thread (see :mod:`._runtime`).

Differences that make it safer than the original (``sora-sdk-reference.md``
§4): an exception in a callback is logged, never fatal; ``disconnect()`` is
bounded (10 s) and Ctrl-C interrupts it; methods called after
``disconnect()`` raise ``RuntimeError`` instead of crashing; a connection
dropped without ``disconnect()`` disconnects in the background.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from ..connection import Connection
from ..errors import SoraConnectionError
from ._codec import SoraVideoCodecPreference, _as_core_preference
from ._enums import (
    SoraDegradationPreference,
    SoraSignalingDirection,
    SoraSignalingErrorCode,
    SoraSignalingType,
)
from ._runtime import Runtime, RuntimeManager, call_user
from ._tracks import SoraAudioSource, SoraMediaTrack, SoraTrackInterface, SoraVideoSource
from ._transform import (
    SoraAudioFrameTransformer,
    SoraFrameTransformer,
    SoraVideoFrameTransformer,
    send_transform_supported,
)

logger = logging.getLogger("sora_async.compat")

#: The official text (``src/sora_connection.cpp``).
ALREADY_DISCONNECTED = (
    "Already disconnected. Please create another Sora instance to establish a new connection."
)
#: ``disconnect()`` waits at most this long for ``on_disconnect`` (official 2026 behaviour).
DISCONNECT_TIMEOUT_S = 10.0
#: ``get_stats()`` gives up after this long and returns ``"[]"``.
STATS_TIMEOUT_S = 10.0
#: ``send_data_channel()`` waits at most this long for a congested channel to drain.
SEND_TIMEOUT_S = 30.0
#: At interpreter exit, how long live connections get to disconnect.
EXIT_DISCONNECT_S = 5.0

#: The callbacks of ``SoraConnection``, in the order of the official type stub.
CALLBACKS = (
    "on_set_offer",
    "on_ws_close",
    "on_disconnect",
    "on_signaling_message",
    "on_notify",
    "on_push",
    "on_message",
    "on_rpc",
    "on_switched",
    "on_track",
    "on_data_channel",
)


class _Session:
    """The state of one connection, shared by the application's ``SoraConnection``
    and the event loop (so that the former can be garbage-collected)."""

    def __init__(self, manager: RuntimeManager, core: Connection) -> None:
        self.manager = manager
        self.core = core
        self.callbacks: dict[str, Callable[..., Any] | None] = dict.fromkeys(CALLBACKS)
        self.runtime: Runtime | None = None
        self.lock = threading.Lock()
        #: "new" -> "connecting" (connect() called) -> "ended" (disconnect() returned)
        self.state = "new"
        self.disconnect_requested = False
        #: Set once the on_disconnect callback has returned.
        self.disconnect_fired = threading.Event()
        #: Set once the core connection is closed and the runtime released.
        self.finished = threading.Event()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._listen()

    # -- core events -> official callbacks (these handlers run on the event loop) -------

    def _listen(self) -> None:
        on = self.core.on
        on("set_offer", lambda offer: self._post("on_set_offer", _json(offer)))
        on("ws_close", lambda code, reason: self._post("on_ws_close", int(code), str(reason)))
        on("disconnect", self._on_disconnect)
        on(
            "signaling_message",
            lambda type_, direction, message: self._post(
                "on_signaling_message",
                SoraSignalingType(int(type_)),
                SoraSignalingDirection(int(direction)),
                _json(message),
            ),
        )
        on("notify", lambda message: self._post("on_notify", _json(message)))
        on("push", lambda message: self._post("on_push", _json(message)))
        on("message", lambda label, data: self._post("on_message", label, bytes(data)))
        on("rpc", lambda data: self._post("on_rpc", bytes(data)))
        on("switched", lambda message: self._post("on_switched", _json(message)))
        on("track", self._on_track)
        on("data_channel", lambda label: self._post("on_data_channel", label))

    def _post(self, name: str, *args: Any) -> None:
        runtime = self.runtime
        if runtime is not None:
            runtime.dispatcher.post(self._deliver, name, args)

    def _deliver(self, name: str, args: tuple[Any, ...]) -> None:
        callback = self.callbacks.get(name)
        if callback is not None:
            call_user(name, callback, *args)

    def _on_track(self, track: Any) -> None:
        runtime = self.runtime
        if runtime is not None:
            self._post("on_track", SoraMediaTrack._create(track, runtime))

    def _on_disconnect(self, code: Any, message: str) -> None:
        runtime = self.runtime
        if runtime is not None:
            runtime.dispatcher.post(self._fire_disconnect, _error_code(code), str(message))

    def _fire_disconnect(self, code: SoraSignalingErrorCode, message: str) -> None:
        try:
            self._deliver("on_disconnect", (code, message))
        finally:
            self.disconnect_fired.set()

    # -- lifecycle ---------------------------------------------------------------------

    def connect(self) -> None:
        with self.lock:
            if self.state == "ended" or self.disconnect_requested:
                raise RuntimeError(ALREADY_DISCONNECTED)
            if self.state != "new":
                raise RuntimeError("connect() has already been called on this connection")
            runtime = self.manager.acquire()
            self.runtime = runtime
            self.state = "connecting"
            _LIVE.add(self)
        try:
            runtime.submit(self._run(runtime))
        except RuntimeError:
            self._finish(runtime)
            raise

    async def _run(self, runtime: Runtime) -> None:
        try:
            try:
                await self.core.connect()
            except SoraConnectionError:
                pass  # reported through on_disconnect
            await self.core.wait_closed()
        except asyncio.CancelledError:
            pass  # the loop is stopping (interpreter exit)
        except Exception:
            logger.exception("connection task failed")
        finally:
            runtime.dispatcher.post(self._finish, runtime)

    def _finish(self, runtime: Runtime) -> None:
        # On the callback thread, after every callback of this connection.
        self.disconnect_fired.set()
        if not self.finished.is_set():
            self.finished.set()
            _LIVE.discard(self)
            self.manager.release(runtime)

    def request_disconnect(self) -> Runtime | None:
        """Start disconnecting (non-blocking); the runtime to wait on, if any."""
        with self.lock:
            if self.state == "new":
                # Nothing was started: nothing to close (the official client
                # waits forever for an on_disconnect that never comes).
                self.state = "ended"
                self.disconnect_requested = True
                return None
            first = not self.disconnect_requested
            self.disconnect_requested = True
            runtime = self.runtime
        if first and runtime is not None:
            runtime.call_soon(self._spawn_disconnect)
        return runtime

    def _spawn_disconnect(self) -> None:
        task = asyncio.ensure_future(self.core.disconnect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def disconnect(self) -> None:
        runtime = self.request_disconnect()
        try:
            if runtime is not None:
                self._wait_disconnect_fired(runtime)
        finally:
            with self.lock:
                self.state = "ended"

    def _wait_disconnect_fired(self, runtime: Runtime) -> None:
        if runtime.on_loop_thread():
            return  # cannot wait on the loop itself
        if runtime.dispatcher.on_thread():
            # Called from a callback: run the callbacks queued behind it.
            fired = runtime.dispatcher.pump(self.disconnect_fired.is_set, DISCONNECT_TIMEOUT_S)
        else:
            deadline = time.monotonic() + DISCONNECT_TIMEOUT_S
            fired = self.disconnect_fired.is_set()
            while not fired:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # Short waits: Ctrl-C is handled between them on every platform.
                fired = self.disconnect_fired.wait(min(remaining, 0.1))
        if not fired:
            logger.warning(
                "disconnect(): on_disconnect did not fire within %.0f s; returning",
                DISCONNECT_TIMEOUT_S,
            )

    def check_usable(self, method: str) -> Runtime | None:
        """The runtime to run ``method`` on (None: not connected); raises once disconnected."""
        with self.lock:
            if self.state == "ended":
                raise RuntimeError(ALREADY_DISCONNECTED)
            runtime = self.runtime
        if runtime is None or not runtime.running:
            return None
        if runtime.on_loop_thread():
            raise RuntimeError(f"{method}() cannot be called from the event-loop thread")
        return runtime


def _abandon(session: _Session) -> None:
    """The application dropped its ``SoraConnection``: disconnect in the background."""
    try:
        session.request_disconnect()
    except Exception:  # pragma: no cover - interpreter shutdown
        pass


#: Connections between connect() and their end (for the exit hook).
_LIVE: weakref.WeakSet[_Session] = weakref.WeakSet()
_MANAGERS: weakref.WeakSet[RuntimeManager] = weakref.WeakSet()


@atexit.register
def _disconnect_at_exit() -> None:
    sessions = list(_LIVE)
    for session in sessions:
        session.request_disconnect()
    deadline = time.monotonic() + EXIT_DISCONNECT_S
    for session in sessions:
        session.finished.wait(max(0.0, deadline - time.monotonic()))
    for manager in list(_MANAGERS):
        manager.close()


def _callback_property(name: str, doc: str) -> property:
    def getter(self: SoraConnection) -> Callable[..., Any] | None:
        return self._session.callbacks[name]

    def setter(self: SoraConnection, callback: Callable[..., Any] | None) -> None:
        if callback is not None and not callable(callback):
            raise TypeError(f"{name} must be callable, got {type(callback).__name__}")
        self._session.callbacks[name] = callback

    return property(getter, setter, doc=doc)


class SoraConnection:
    """One connection to a Sora channel (``Sora.create_connection(...)``).

    Set the ``on_*`` callbacks, then ``connect()``. Callbacks run on the
    ``Sora`` instance's callback thread, one at a time, in order.

    Example::

        conn = sora.create_connection(["wss://sora.example.com/signaling"], "recvonly", "ch")
        conn.on_notify = lambda message: print(message)
        conn.connect()
        ...
        conn.disconnect()
    """

    _session: _Session

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("SoraConnection: no constructor defined! Use Sora.create_connection()")

    @classmethod
    def _create(cls, session: _Session) -> SoraConnection:
        self = cls.__new__(cls)
        self._session = session
        weakref.finalize(self, _abandon, session)
        return self

    def connect(self) -> None:
        """Start connecting and return at once; progress comes through the callbacks.

        The connection is up when ``on_notify`` delivers the
        ``connection.created`` of this connection's id (from ``on_set_offer``).
        Raises ``RuntimeError`` after ``disconnect()`` (single use).
        """
        self._session.connect()

    def disconnect(self) -> None:
        """Leave the channel; returns once ``on_disconnect`` has been called
        (at most 10 s; Ctrl-C interrupts the wait). A second call does nothing."""
        self._session.disconnect()

    def send_data_channel(self, label: str, data: bytes) -> bool:
        """Send ``data`` on the messaging label ``label``; True if it was sent.

        False before ``on_data_channel(label)`` fired, and for labels Sora
        manages or that were not offered. ``RuntimeError`` after ``disconnect()``.
        """
        if not isinstance(label, str):
            raise TypeError(f"send_data_channel: label must be a str, got {type(label).__name__}")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"send_data_channel: data must be bytes, got {type(data).__name__}")
        runtime = self._session.check_usable("send_data_channel")
        if runtime is None:
            return False
        try:
            return bool(
                runtime.run(
                    self._session.core.send_data_channel(label, bytes(data)), SEND_TIMEOUT_S
                )
            )
        except TimeoutError:
            logger.warning("send_data_channel(%r): the channel did not drain in time", label)
            return False
        except RuntimeError:
            if runtime.running:
                raise
            return False

    def get_stats(self) -> str:
        """The connection's W3C stats as a JSON array string (``"[]"`` before connecting).

        Non-finite numbers are written as ``null`` (the official client
        writes a bare ``-inf``, which is not JSON). ``RuntimeError`` after
        ``disconnect()``.
        """
        runtime = self._session.check_usable("get_stats")
        if runtime is None:
            return "[]"
        try:
            reports = runtime.run(self._session.core.get_stats(), STATS_TIMEOUT_S)
        except TimeoutError:
            logger.warning("get_stats(): no stats within %.0f s", STATS_TIMEOUT_S)
            return "[]"
        except RuntimeError:
            if runtime.running:
                raise
            return "[]"
        return json.dumps(_finite(reports), ensure_ascii=False)

    on_set_offer = _callback_property(
        "on_set_offer", "``(offer_json: str)``: the offer, once applied."
    )
    on_ws_close = _callback_property(
        "on_ws_close",
        '``(code: int, reason: str)``: the signaling WebSocket closed (1000 "SELF-CLOSED" '
        "when the client closed it).",
    )
    on_disconnect = _callback_property(
        "on_disconnect",
        "``(error_code: SoraSignalingErrorCode, message: str)``: the end, called once.",
    )
    on_signaling_message = _callback_property(
        "on_signaling_message",
        "``(type: SoraSignalingType, direction: SoraSignalingDirection, message_json: str)``.",
    )
    on_notify = _callback_property("on_notify", "``(json: str)``: a ``notify`` message.")
    on_push = _callback_property("on_push", "``(json: str)``: a ``push`` message.")
    on_message = _callback_property(
        "on_message", "``(label: str, data: bytes)``: a message on a ``#`` label."
    )
    on_rpc = _callback_property("on_rpc", "``(data: bytes)``: a message on the ``rpc`` label.")
    on_switched = _callback_property(
        "on_switched", "``(json: str)``: signaling moved to the DataChannels."
    )
    on_track = _callback_property(
        "on_track", "``(track: SoraMediaTrack)``: a remote track arrived."
    )
    on_data_channel = _callback_property(
        "on_data_channel", "``(label: str)``: a DataChannel opened."
    )

    def __repr__(self) -> str:
        return f"<SoraConnection {self._session.core!r}>"


class Sora:
    """The factory of connections and sources (the official ``Sora``).

    Args:
        openh264: path of Cisco's OpenH264 library for ``CISCO_OPENH264``; every
            connection gets it (``Connection(openh264=...)``). Unlike the official
            client, which ignores a library it cannot load, ``create_connection``
            then raises ``ValueError`` naming ``openh264``.
        video_codec_preference: the codecs every connection offers and who runs them.
        force_i420_conversion: accepted (official 2025.5 keyword); frames are
            always converted to I420 here.

    Example::

        sora = Sora()
        source = sora.create_video_source()
        conn = sora.create_connection(signaling_urls=[url], role="sendonly",
                                      channel_id="ch", video_source=source, audio=False)
    """

    def __init__(
        self,
        openh264: str | None = None,
        video_codec_preference: SoraVideoCodecPreference | None = None,
        force_i420_conversion: bool | None = None,
    ) -> None:
        if openh264 is not None and not isinstance(openh264, str):
            raise TypeError("Sora: openh264 must be a str path or None")
        if video_codec_preference is not None:
            _as_core_preference(video_codec_preference)  # TypeError for anything else
        self.openh264 = openh264
        self.video_codec_preference = video_codec_preference
        self.force_i420_conversion = force_i420_conversion
        self._runtime = RuntimeManager()
        _MANAGERS.add(self._runtime)

    def create_connection(
        self,
        signaling_urls: list[str],
        role: str,
        channel_id: str,
        client_id: str | None = None,
        bundle_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        signaling_notify_metadata: dict[str, Any] | None = None,
        audio_source: SoraTrackInterface | None = None,
        video_source: SoraTrackInterface | None = None,
        audio_frame_transformer: SoraAudioFrameTransformer | None = None,
        video_frame_transformer: SoraVideoFrameTransformer | None = None,
        audio: bool | None = None,
        video: bool | None = None,
        audio_codec_type: str | None = None,
        video_codec_type: str | None = None,
        video_bit_rate: int | None = None,
        audio_bit_rate: int | None = None,
        video_vp9_params: dict[str, Any] | None = None,
        video_av1_params: dict[str, Any] | None = None,
        video_h264_params: dict[str, Any] | None = None,
        audio_opus_params: dict[str, Any] | None = None,
        simulcast: bool | None = None,
        spotlight: bool | None = None,
        spotlight_number: int | None = None,
        simulcast_rid: str | None = None,
        spotlight_focus_rid: str | None = None,
        spotlight_unfocus_rid: str | None = None,
        forwarding_filter: dict[str, Any] | None = None,
        forwarding_filters: list[dict[str, Any]] | None = None,
        data_channels: list[dict[str, Any]] | None = None,
        data_channel_signaling: bool | None = None,
        ignore_disconnect_websocket: bool | None = None,
        data_channel_signaling_timeout: int | None = None,
        disconnect_wait_timeout: int | None = None,
        websocket_close_timeout: int | None = None,
        websocket_connection_timeout: int | None = None,
        audio_streaming_language_code: str | None = None,
        insecure: bool | None = None,
        client_cert: bytes | None = None,
        client_key: bytes | None = None,
        ca_cert: bytes | None = None,
        proxy_url: str | None = None,
        proxy_username: str | None = None,
        proxy_password: str | None = None,
        proxy_agent: str | None = None,
        degradation_preference: SoraDegradationPreference | None = None,
        user_agent: str | None = None,
        *,
        simulcast_request_rid: str | None = None,
        video_h265_params: dict[str, Any] | None = None,
    ) -> SoraConnection:
        """A new connection (not connected yet); every keyword of the official
        ``create_connection`` (2025.4.0 order), plus ``simulcast_request_rid``
        (2025.5.0) and ``video_h265_params`` (2025.5.2) as keywords.

        ``None`` leaves the official default. Bad values raise ``TypeError``
        or ``ValueError`` at once, naming the keyword.
        """
        if not isinstance(signaling_urls, list) or not all(
            isinstance(url, str) for url in signaling_urls
        ):
            raise TypeError("create_connection: signaling_urls must be a list of str")
        if not signaling_urls:
            raise TypeError("create_connection: signaling_urls must not be empty")
        for name, value, cls in (
            ("audio_frame_transformer", audio_frame_transformer, SoraAudioFrameTransformer),
            ("video_frame_transformer", video_frame_transformer, SoraVideoFrameTransformer),
        ):
            if value is not None and not isinstance(value, cls):
                raise TypeError(f"create_connection: {name} must be a {cls.__name__}")
        transformers: dict[str, SoraFrameTransformer] = {
            name: value
            for name, value in (
                ("audio_frame_transformer", audio_frame_transformer),
                ("video_frame_transformer", video_frame_transformer),
            )
            if value is not None
        }
        if transformers and not send_transform_supported():
            raise NotImplementedError(
                "create_connection: sender-side encoded transform (audio_frame_transformer/"
                "video_frame_transformer) needs the core's send-side encoded-frame hook "
                "(sora_async issue 7), which this sora_async does not have yet"
            )
        keywords: dict[str, Any] = {
            "client_id": client_id,
            "bundle_id": bundle_id,
            "metadata": metadata,
            "signaling_notify_metadata": signaling_notify_metadata,
            "audio_source": audio_source,
            "video_source": video_source,
            "audio": audio,
            "video": video,
            "audio_codec_type": audio_codec_type,
            "video_codec_type": video_codec_type,
            "video_bit_rate": video_bit_rate,
            "audio_bit_rate": audio_bit_rate,
            "video_vp9_params": video_vp9_params,
            "video_av1_params": video_av1_params,
            "video_h264_params": video_h264_params,
            "video_h265_params": video_h265_params,
            "audio_opus_params": audio_opus_params,
            "simulcast": simulcast,
            "spotlight": spotlight,
            "spotlight_number": spotlight_number,
            "simulcast_rid": simulcast_rid,
            "simulcast_request_rid": simulcast_request_rid,
            "spotlight_focus_rid": spotlight_focus_rid,
            "spotlight_unfocus_rid": spotlight_unfocus_rid,
            "forwarding_filter": forwarding_filter,
            "forwarding_filters": forwarding_filters,
            "data_channels": data_channels,
            "data_channel_signaling": data_channel_signaling,
            "ignore_disconnect_websocket": ignore_disconnect_websocket,
            "data_channel_signaling_timeout": data_channel_signaling_timeout,
            "disconnect_wait_timeout": disconnect_wait_timeout,
            "websocket_close_timeout": websocket_close_timeout,
            "websocket_connection_timeout": websocket_connection_timeout,
            "audio_streaming_language_code": audio_streaming_language_code,
            "insecure": insecure,
            "client_cert": client_cert,
            "client_key": client_key,
            "ca_cert": ca_cert,
            "proxy_url": proxy_url,
            "proxy_username": proxy_username,
            "proxy_password": proxy_password,
            "proxy_agent": proxy_agent,
            "degradation_preference": degradation_preference,
            "user_agent": user_agent,
            **transformers,
        }
        for name in ("audio_source", "video_source"):
            if keywords[name] is not None and not isinstance(keywords[name], SoraTrackInterface):
                raise TypeError(
                    f"create_connection: {name} must come from Sora.create_{name}(), got "
                    f"{type(keywords[name]).__name__}"
                )
        if self.video_codec_preference is not None:
            keywords["video_codec_preference"] = _as_core_preference(self.video_codec_preference)
        if self.openh264 is not None:
            keywords["openh264"] = self.openh264  # core Connection(openh264=...)
        given = {name: value for name, value in keywords.items() if value is not None}
        core = Connection(signaling_urls, role, channel_id, **given)
        return SoraConnection._create(_Session(self._runtime, core))

    def create_audio_source(self, channels: int, sample_rate: int) -> SoraAudioSource:
        """A local audio track fed with int16 PCM of ``channels`` at ``sample_rate`` Hz.

        ``ValueError`` outside 1..8 channels or 8000..192000 Hz.
        """
        return SoraAudioSource._create(channels, sample_rate)

    def create_video_source(self) -> SoraVideoSource:
        """A local video track fed with BGR frames (``on_captured``)."""
        return SoraVideoSource._create()

    def create_libcamera_source(
        self,
        width: int,
        height: int,
        fps: int,
        native_frame_output: bool,
        controls: list[tuple[str, str]] | None = None,
    ) -> SoraTrackInterface:
        """Raspberry Pi camera source (official ``sora-sdk-rpi`` only): not supported here."""
        for control in controls or []:
            if not isinstance(control, tuple) or len(control) != 2:
                raise ValueError(
                    "create_libcamera_source: each control must be a (key, value) pair"
                )
        raise RuntimeError("Libcamera is not supported on this platform")

    def __repr__(self) -> str:
        return f"<Sora openh264={self.openh264!r}>"


def _error_code(code: Any) -> SoraSignalingErrorCode:
    try:
        return SoraSignalingErrorCode(int(code))
    except (TypeError, ValueError):
        return SoraSignalingErrorCode.INTERNAL_ERROR


def _json(message: Any) -> str:
    if isinstance(message, str):
        return message
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
