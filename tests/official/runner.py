"""Drive one official ``sora_sdk`` connection in its own process, as JSON lines.

This script is the process half of the official-client harness
(``tests/official/harness.py`` is the asyncio half). It exists because the
official SDK (a libwebrtc build) aborts the whole process when anything goes
wrong inside it, including a Python exception escaping one of its callbacks
(sora-sdk-reference.md §1.6, official-client-notes.md): in a subprocess such a
crash fails one test instead of the whole pytest run.

Usage::

    python tests/official/runner.py '<config JSON>'     # or
    python tests/official/runner.py < commands           # first stdin line = config

Config (one JSON object):
  * ``signaling_urls``, ``role``, ``channel_id`` (required) and any other
    ``Sora.create_connection`` keyword, passed through unchanged, except:
    ``degradation_preference`` by name (``"MAINTAIN_RESOLUTION"``), and
    ``ca_cert`` / ``client_cert`` / ``client_key`` as file paths (read into
    bytes; a string starting with ``-----BEGIN`` is taken as the PEM itself).
  * harness options (never passed to the SDK):
      ``fake_video``: ``{"width", "height", "fps"}`` or false (a moving BGR
      pattern is sent when the role sends and this is not false),
      ``fake_audio``: ``{"frequency", "sample_rate", "channels", "amplitude"}``
      or false (a sine tone in 10 ms chunks, paced in real time),
      ``audio_sink``: ``{"sample_rate", "channels", "window"}`` (analysis of
      every remote audio track over ``window`` seconds),
      ``video_report_every``: report every N-th decoded frame (besides the
      first one and every size change),
      ``libwebrtc_log``: a ``SoraLoggingSeverity`` name, logged to stderr,
      ``name``: a label echoed in the ``ready`` event,
      ``openh264``: a libopenh264 path given to ``Sora(openh264=...)``,
      ``settle_before_disconnect`` (default true): before ``disconnect()``,
      wait up to 3 s until every ``re-offer`` received has been answered;
      sora_sdk 2025.4.0 can crash (SIGSEGV) when it disconnects in the middle
      of applying a re-offer.

Events (stdout, one JSON object per line, each with ``event`` and ``t`` =
``time.time()`` of the runner):
  ``ready`` {sora_sdk_version, name}, ``set_offer`` {message},
  ``signaling_message`` {type, direction, message}, ``notify`` {message},
  ``push`` {message}, ``switched`` {message}, ``ws_close`` {code, reason},
  ``disconnect`` {code, name, message}, ``data_channel`` {label},
  ``message`` {label, size, data_b64}, ``rpc`` {size, data_b64},
  ``track`` {kind, id, stream_id},
  ``video_frame`` {track_id, stream_id, width, height, count, first},
  ``audio_level`` {track_id, stream_id, rms, peak, freq, sample_rate, samples},
  ``stats`` {id, stats}, ``disconnect_returned`` {elapsed},
  ``settle_timeout`` {reoffers, reanswers},
  ``result`` {id, cmd, ok, value?, error?} (one per command that has an id),
  ``error`` {where, message, traceback} (an exception caught in a callback or a
  worker: the harness fails the test on it), ``exit`` {}.

Commands (stdin, one JSON object per line, optional ``id`` echoed in
``result``): ``{"cmd": "connect"}``, ``{"cmd": "send_data_channel", "label":
"#x", "data_b64": "..."}``, ``{"cmd": "get_stats"}``, ``{"cmd":
"disconnect"}`` (the blocking call runs in a worker thread so that stdin keeps
being read), ``{"cmd": "quit"}``. After ``quit`` or stdin EOF the runner
disconnects (if it connected and has not disconnected yet), drops sinks,
sources and the connection before the ``Sora`` object, and exits 0.

Only the standard library, numpy and sora_sdk are imported: the runner must not
depend on the package under test.
"""

from __future__ import annotations

import base64
import faulthandler
import gc
import json
import math
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

# Imported by main() only, so that the pure helpers here (parse_stats,
# dominant_frequency) can be imported without loading libwebrtc.
sora_sdk: Any = None

# Keys of the config that configure the runner, not create_connection().
HARNESS_KEYS = {
    "fake_video",
    "fake_audio",
    "audio_sink",
    "video_report_every",
    "libwebrtc_log",
    "name",
    "settle_before_disconnect",
    "openh264",
}
SEND_ROLES = {"sendonly", "sendrecv"}
DEFAULT_FAKE_VIDEO = {"width": 320, "height": 240, "fps": 15}
DEFAULT_FAKE_AUDIO = {"frequency": 440.0, "sample_rate": 48000, "channels": 1, "amplitude": 0.3}
DEFAULT_AUDIO_SINK = {"sample_rate": 48000, "channels": 1, "window": 0.5}
# disconnect() has no time bound in sora_sdk 2025.4.0 (sora-sdk-reference.md
# §1.4); its own timers (websocket_close_timeout 3 s, disconnect_wait_timeout
# 5 s) normally end it well before this.
DISCONNECT_HANG_S = 20.0
#: Longest wait for a re-offer in flight to be answered before disconnect().
SETTLE_TIMEOUT_S = 3.0

# A JSON string, or a bare non-finite number that libwebrtc's ToJson() writes
# (official-client-notes.md: get_stats() may contain a bare -inf).
_NONFINITE = re.compile(r'"(?:[^"\\]|\\.)*"|-?\b(?:inf|nan)\b', re.IGNORECASE)


def parse_stats(text: str) -> Any:
    """Parse ``get_stats()`` output leniently: bare inf/-inf/nan become null."""

    def repl(m: re.Match[str]) -> str:
        token = m.group(0)
        return token if token.startswith('"') else "null"

    return json.loads(_NONFINITE.sub(repl, text), parse_constant=lambda _c: None)


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {"unparsed": text}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


class Emitter:
    """Thread-safe JSON-lines writer; never raises (it runs inside SDK callbacks)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.broken = False

    def __call__(self, event: str, **fields: Any) -> None:
        record = {"event": event, "t": time.time(), **fields}
        try:
            line = json.dumps(record, separators=(",", ":"), default=repr, allow_nan=False)
        except ValueError:  # a non-finite float somewhere: stringify it
            line = json.dumps(_sanitize(record), separators=(",", ":"), default=repr)
        with self._lock:
            if self.broken:
                return
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.broken = True


def _sanitize(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_sanitize(v) for v in obj]
    return obj


def dominant_frequency(mono: np.ndarray, sample_rate: int) -> float:
    """Frequency (Hz) of the strongest FFT bin, refined by parabolic interpolation."""
    n = len(mono)
    if n < 16:
        return 0.0
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(n)))
    spectrum[0] = 0.0  # ignore DC
    k = int(np.argmax(spectrum))
    if 0 < k < len(spectrum) - 1:
        a, b, c = spectrum[k - 1], spectrum[k], spectrum[k + 1]
        denom = a - 2 * b + c
        if denom != 0:
            k_f = k + 0.5 * (a - c) / denom
            return float(k_f * sample_rate / n)
    return float(k * sample_rate / n)


class Runner:
    def __init__(self, config: dict[str, Any], emit: Emitter) -> None:
        self.emit = emit
        self.config = config
        self.name = config.get("name")
        self.role = config["role"]
        self.stop_media = threading.Event()
        self.stop_readers = threading.Event()
        self.threads: list[threading.Thread] = []
        # get_stats/send_data_channel after disconnect() crash sora_sdk 2025.4.0
        # with SIGSEGV (issue 0058): serialise them with disconnect() and refuse
        # them once disconnect() has been called.
        self.conn_lock = threading.Lock()
        self.connect_called = False
        self.disconnect_called = False
        self.disconnect_thread: threading.Thread | None = None
        self.disconnected = threading.Event()
        self.own_connection_id: str | None = None
        self.video_sinks: dict[str, Any] = {}
        self.audio_sinks: dict[str, tuple[Any, dict[str, Any]]] = {}
        self.tracks: dict[str, Any] = {}
        self.frame_counts: dict[str, int] = {}
        self.frame_sizes: dict[str, tuple[int, int]] = {}
        self.audio_lock = threading.Lock()
        # Re-offers received vs re-answers sent: disconnect() waits for them to
        # match (see _start_disconnect).
        self.renegotiation = threading.Condition()
        self.reoffers_received = 0
        self.reanswers_sent = 0
        self.settle_before_disconnect = bool(config.get("settle_before_disconnect", True))

        log = config.get("libwebrtc_log")
        if log:
            sora_sdk.enable_libwebrtc_log(sora_sdk.SoraLoggingSeverity[log])

        sends = self.role in SEND_ROLES
        fv = config.get("fake_video")
        self.fake_video: dict[str, Any] | None = None
        if sends and config.get("video", True) is not False and fv is not False:
            self.fake_video = {**DEFAULT_FAKE_VIDEO, **(fv if isinstance(fv, dict) else {})}
        fa = config.get("fake_audio")
        self.fake_audio: dict[str, Any] | None = None
        if sends and config.get("audio", True) is not False and fa is not False:
            self.fake_audio = {**DEFAULT_FAKE_AUDIO, **(fa if isinstance(fa, dict) else {})}
        sink = config.get("audio_sink")
        self.audio_sink_cfg = {**DEFAULT_AUDIO_SINK, **(sink if isinstance(sink, dict) else {})}
        self.video_report_every = int(config.get("video_report_every") or 30)

        # ``openh264``: path of libopenh264, for H.264 (libwebrtc has no other H.264 codec).
        openh264 = config.get("openh264")
        if not openh264:
            self.sora: Any = sora_sdk.Sora()
        else:
            impl = sora_sdk.SoraVideoCodecImplementation
            capability = sora_sdk.get_video_codec_capability(openh264)
            preference = sora_sdk.create_video_codec_preference_from_implementation(
                capability, impl.INTERNAL
            )
            preference.merge(
                sora_sdk.create_video_codec_preference_from_implementation(
                    capability, impl.CISCO_OPENH264
                )
            )
            self.sora = sora_sdk.Sora(openh264=openh264, video_codec_preference=preference)
        self.audio_source: Any = None
        self.video_source: Any = None
        if self.fake_audio:
            self.audio_source = self.sora.create_audio_source(
                int(self.fake_audio["channels"]), int(self.fake_audio["sample_rate"])
            )
        if self.fake_video:
            self.video_source = self.sora.create_video_source()

        kwargs = self._connection_kwargs(config)
        self.conn: Any = self.sora.create_connection(**kwargs)
        c = self.conn
        c.on_set_offer = self._cb(self._on_set_offer)
        c.on_ws_close = self._cb(self._on_ws_close)
        c.on_disconnect = self._cb(self._on_disconnect)
        c.on_signaling_message = self._cb(self._on_signaling_message)
        c.on_notify = self._cb(lambda s: self.emit("notify", message=_parse_json(s)))
        c.on_push = self._cb(lambda s: self.emit("push", message=_parse_json(s)))
        c.on_switched = self._cb(lambda s: self.emit("switched", message=_parse_json(s)))
        c.on_message = self._cb(self._on_message)
        c.on_rpc = self._cb(
            lambda data: self.emit(
                "rpc", size=len(data), data_b64=base64.b64encode(bytes(data)).decode()
            )
        )
        c.on_track = self._cb(self._on_track)
        c.on_data_channel = self._cb(lambda label: self.emit("data_channel", label=label))

    # -- configuration -------------------------------------------------------

    def _connection_kwargs(self, config: dict[str, Any]) -> dict[str, Any]:
        kwargs = {k: v for k, v in config.items() if k not in HARNESS_KEYS}
        dp = kwargs.get("degradation_preference")
        if isinstance(dp, str):
            kwargs["degradation_preference"] = sora_sdk.SoraDegradationPreference[dp]
        for key in ("ca_cert", "client_cert", "client_key"):
            value = kwargs.get(key)
            if isinstance(value, str):
                if value.lstrip().startswith("-----BEGIN"):
                    kwargs[key] = value.encode()
                else:
                    with open(value, "rb") as f:
                        kwargs[key] = f.read()
        if self.audio_source is not None:
            kwargs["audio_source"] = self.audio_source
        if self.video_source is not None:
            kwargs["video_source"] = self.video_source
        return kwargs

    # -- callbacks (every body wrapped: an escaping exception aborts) ------------

    def _cb(self, fn: Callable[..., Any]) -> Callable[..., None]:
        where = getattr(fn, "__name__", "callback")

        def wrapped(*args: Any) -> None:
            try:
                fn(*args)
            except BaseException as e:
                self._report_error(where, e)

        return wrapped

    def _report_error(self, where: str, e: BaseException) -> None:
        try:
            self.emit(
                "error",
                where=where,
                message=f"{type(e).__name__}: {e}",
                traceback=traceback.format_exc(),
            )
        except BaseException:
            pass

    def _on_set_offer(self, offer_json: str) -> None:
        offer = _parse_json(offer_json)
        if isinstance(offer, dict):
            self.own_connection_id = offer.get("connection_id")
        self.emit("set_offer", message=offer)

    def _on_ws_close(self, code: int, reason: str) -> None:
        self.emit("ws_close", code=int(code), reason=reason)

    def _on_disconnect(self, error_code: Any, message: str) -> None:
        self.disconnected.set()
        self.stop_media.set()
        self.emit(
            "disconnect",
            code=int(error_code),
            name=getattr(error_code, "name", str(error_code)),
            message=message,
        )

    def _on_signaling_message(self, type_: Any, direction: Any, message: str) -> None:
        parsed = _parse_json(message)
        kind = parsed.get("type") if isinstance(parsed, dict) else None
        if kind in ("re-offer", "re-answer"):
            with self.renegotiation:
                if kind == "re-offer":
                    self.reoffers_received += 1
                else:
                    self.reanswers_sent += 1
                self.renegotiation.notify_all()
        self.emit(
            "signaling_message",
            type=getattr(type_, "name", str(type_)),
            direction=getattr(direction, "name", str(direction)),
            message=parsed,
        )

    def _on_message(self, label: str, data: bytes) -> None:
        data = bytes(data)
        self.emit("message", label=label, size=len(data), data_b64=base64.b64encode(data).decode())

    def _on_track(self, track: Any) -> None:
        kind, track_id, stream_id = track.kind, track.id, track.stream_id
        self.emit("track", kind=kind, id=track_id, stream_id=stream_id)
        self.tracks[track_id] = track
        if kind == "video":
            sink = sora_sdk.SoraVideoSink(track)
            sink.on_frame = self._cb(
                lambda frame, tid=track_id, sid=stream_id: self._on_frame(tid, sid, frame)
            )
            self.video_sinks[track_id] = sink
        elif kind == "audio":
            cfg = self.audio_sink_cfg
            sink = sora_sdk.SoraAudioSink(track, int(cfg["sample_rate"]), int(cfg["channels"]))
            state = {"stream_id": stream_id, "chunks": [], "samples": 0}
            with self.audio_lock:
                self.audio_sinks[track_id] = (sink, state)

    def _on_frame(self, track_id: str, stream_id: str, frame: Any) -> None:
        height, width = frame.data().shape[:2]
        count = self.frame_counts.get(track_id, 0) + 1
        self.frame_counts[track_id] = count
        size = (int(width), int(height))
        changed = self.frame_sizes.get(track_id) != size
        self.frame_sizes[track_id] = size
        if count == 1 or changed or count % self.video_report_every == 0:
            self.emit(
                "video_frame",
                track_id=track_id,
                stream_id=stream_id,
                width=size[0],
                height=size[1],
                count=count,
                first=count == 1,
            )

    # -- threads -------------------------------------------------------------

    def _thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        def body() -> None:
            try:
                target()
            except BaseException as e:
                self._report_error(name, e)

        t = threading.Thread(target=body, name=name, daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def _fake_video_loop(self) -> None:
        assert self.fake_video is not None
        w, h = int(self.fake_video["width"]), int(self.fake_video["height"])
        fps = float(self.fake_video["fps"])
        y, x = np.mgrid[0:h, 0:w].astype(np.int32)
        frame = np.empty((h, w, 3), dtype=np.uint8)
        period = 1.0 / fps
        next_t = time.monotonic()
        n = 0
        while not self.stop_media.is_set():
            # A moving gradient plus a bouncing bar: changes every frame, so
            # encoders produce real inter frames, not a static image.
            frame[:, :, 0] = (x + 3 * n) & 0xFF
            frame[:, :, 1] = (y + 2 * n) & 0xFF
            frame[:, :, 2] = ((x + y) // 2 - 5 * n) & 0xFF
            bar = (7 * n) % max(w - 16, 1)
            frame[:, bar : bar + 16, :] = 255
            self.video_source.on_captured(frame)
            n += 1
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                self.stop_media.wait(delay)
            else:
                next_t = time.monotonic()  # fell behind: do not burst

    def _fake_audio_loop(self) -> None:
        assert self.fake_audio is not None
        rate = int(self.fake_audio["sample_rate"])
        channels = int(self.fake_audio["channels"])
        freq = float(self.fake_audio["frequency"])
        amp = float(self.fake_audio["amplitude"]) * 32767
        chunk = rate // 100  # 10 ms
        phase_step = 2 * math.pi * freq / rate
        n0 = 0
        next_t = time.monotonic()
        while not self.stop_media.is_set():
            idx = np.arange(n0, n0 + chunk)
            tone = (amp * np.sin(phase_step * idx)).astype(np.int16)
            data = np.ascontiguousarray(np.repeat(tone[:, None], channels, axis=1))
            self.audio_source.on_data(data)
            n0 += chunk
            next_t += 0.01
            delay = next_t - time.monotonic()
            if delay > 0:
                self.stop_media.wait(delay)
            elif delay < -0.2:
                next_t = time.monotonic()  # long stall: resync, do not burst

    def _audio_reader_loop(self) -> None:
        rate = int(self.audio_sink_cfg["sample_rate"])
        window = max(int(float(self.audio_sink_cfg["window"]) * rate), 64)
        while not self.stop_readers.wait(0.05):
            with self.audio_lock:
                sinks = list(self.audio_sinks.items())
            for track_id, (sink, state) in sinks:
                # frames=0 returns what is buffered without waiting: read() held
                # the GIL while waiting in sora_sdk 2025.4.0 (PR #293).
                ok, data = sink.read(0, 0)
                if not ok or data is None or len(data) == 0:
                    continue
                state["chunks"].append(np.asarray(data, dtype=np.int16).copy())
                state["samples"] += len(data)
                while state["samples"] >= window:
                    buf = np.concatenate(state["chunks"])
                    head, rest = buf[:window], buf[window:]
                    state["chunks"] = [rest] if len(rest) else []
                    state["samples"] = len(rest)
                    mono = head.astype(np.float64).mean(axis=1) / 32768.0
                    rms = float(np.sqrt(np.mean(mono**2)))
                    self.emit(
                        "audio_level",
                        track_id=track_id,
                        stream_id=state["stream_id"],
                        rms=_finite(rms),
                        peak=float(np.max(np.abs(mono))),
                        freq=dominant_frequency(mono, rate) if rms > 1e-4 else 0.0,
                        sample_rate=rate,
                        samples=window,
                    )

    # -- commands ------------------------------------------------------------

    def handle(self, cmd: dict[str, Any]) -> bool:
        """Run one command; False means stop reading commands."""
        name = cmd.get("cmd")
        cid = cmd.get("id")
        try:
            if name == "connect":
                self._connect()
                self._result(cid, name, True)
            elif name == "send_data_channel":
                data = base64.b64decode(cmd.get("data_b64", ""))
                with self.conn_lock:
                    if self.disconnect_called:
                        self._result(cid, name, False, value=False, error="disconnected")
                        return True
                    sent = bool(self.conn.send_data_channel(cmd["label"], data))
                self._result(cid, name, True, value=sent)
            elif name == "get_stats":
                self._thread(lambda: self._get_stats(cid), "get_stats")
            elif name == "disconnect":
                self._start_disconnect(cid)
            elif name == "quit":
                self._result(cid, name, True)
                return False
            else:
                self._result(cid, name, False, error=f"unknown command {name!r}")
        except Exception as e:
            self._report_error(f"command {name}", e)
            self._result(cid, name, False, error=f"{type(e).__name__}: {e}")
        return True

    def _result(self, cid: Any, cmd: Any, ok: bool, **fields: Any) -> None:
        if cid is not None:
            self.emit("result", id=cid, cmd=cmd, ok=ok, **fields)

    def _connect(self) -> None:
        if self.connect_called:
            raise RuntimeError("connect already called")
        self.connect_called = True
        # Media flows from the start, as in the SDK's own tests/client.py.
        if self.fake_video:
            self._thread(self._fake_video_loop, "fake_video")
        if self.fake_audio:
            self._thread(self._fake_audio_loop, "fake_audio")
        self._thread(self._audio_reader_loop, "audio_reader")
        self.conn.connect()

    def _get_stats(self, cid: Any) -> None:
        with self.conn_lock:
            if self.disconnect_called:
                self._result(cid, "get_stats", False, error="disconnected")
                return
            text = self.conn.get_stats()
        stats = parse_stats(text)
        self.emit("stats", id=cid, stats=stats)
        self._result(cid, "get_stats", True)

    def _start_disconnect(self, cid: Any) -> None:
        if self.disconnect_thread is not None:
            self._result(cid, "disconnect", False, error="disconnect already called")
            return
        if not self.connect_called:
            # disconnect() before connect() waits forever for an on_disconnect
            # that never comes (sora_sdk 2025.4.0, observed).
            self._result(cid, "disconnect", False, error="not connected")
            return

        def body() -> None:
            t0 = time.monotonic()
            if self.settle_before_disconnect:
                # sora_sdk 2025.4.0 can SIGSEGV when disconnect() runs while a
                # re-offer is still being applied and the server then closes at
                # once (observed against the dev server on loopback, about one
                # run in ten). Let the renegotiation in flight finish first.
                with self.renegotiation:
                    settled = self.renegotiation.wait_for(
                        lambda: (
                            self.reanswers_sent >= self.reoffers_received
                            or self.disconnected.is_set()
                        ),
                        timeout=SETTLE_TIMEOUT_S,
                    )
                if not settled:
                    self.emit(
                        "settle_timeout",
                        reoffers=self.reoffers_received,
                        reanswers=self.reanswers_sent,
                    )
            with self.conn_lock:
                self.disconnect_called = True
                self.conn.disconnect()
            self.stop_media.set()
            self.emit("disconnect_returned", elapsed=time.monotonic() - t0)
            self._result(cid, "disconnect", True)

        self.disconnect_thread = self._thread(body, "disconnect")

    # -- teardown ------------------------------------------------------------

    def shutdown(self) -> int:
        """Disconnect, then drop everything in an order libwebrtc tolerates."""
        status = 0
        if not self.connect_called:
            # Dropping a connection that never connected blocks forever in its
            # destructor's disconnect() (sora_sdk 2025.4.0, observed), and so
            # would interpreter exit: nothing has run, so leave without teardown.
            self.emit("exit")
            sys.stdout.flush()
            os._exit(0)
        if self.disconnect_thread is None:
            self._start_disconnect(None)
        if self.disconnect_thread is not None:
            self.disconnect_thread.join(DISCONNECT_HANG_S)
            if self.disconnect_thread.is_alive():
                self.emit("error", where="shutdown", message="disconnect() hung", traceback="")
                # Exiting through the interpreter would wait on libwebrtc
                # threads forever; leave without teardown.
                sys.stdout.flush()
                os._exit(70)
        self.stop_media.set()
        self.stop_readers.set()
        for t in self.threads:
            t.join(5)
        # Sinks first (they hold tracks of the connection), then the connection,
        # then the sources, then the factory (sora-sdk-reference.md §4: the
        # Sora teardown order caused GC-timing-dependent SIGSEGVs).
        with self.audio_lock:
            self.audio_sinks.clear()
        self.video_sinks.clear()
        self.tracks.clear()
        gc.collect()
        self.conn = None
        gc.collect()
        self.audio_source = None
        self.video_source = None
        gc.collect()
        self.sora = None
        gc.collect()
        self.emit("exit")
        return status


def read_config(argv: list[str]) -> dict[str, Any]:
    if len(argv) > 1:
        text = argv[1]
        if text.startswith("@"):
            with open(text[1:]) as f:
                text = f.read()
    else:
        text = sys.stdin.readline()
    config = json.loads(text)
    if not isinstance(config, dict):
        raise ValueError("config must be a JSON object")
    return config


def main(argv: list[str]) -> int:
    global sora_sdk
    # On SIGSEGV/SIGABRT, print where every Python thread was: it tells a crash
    # in our teardown from one inside libwebrtc's own threads.
    faulthandler.enable(all_threads=True)
    import sora_sdk

    emit = Emitter(sys.stdout)
    try:
        config = read_config(argv)
        runner = Runner(config, emit)
    except Exception as e:
        emit(
            "error",
            where="startup",
            message=f"{type(e).__name__}: {e}",
            traceback=traceback.format_exc(),
        )
        # A half-built connection would block interpreter exit (see shutdown()).
        sys.stdout.flush()
        os._exit(2)
    emit("ready", sora_sdk_version=getattr(sora_sdk, "__version__", "unknown"), name=runner.name)
    while True:
        line = sys.stdin.readline()
        if not line:
            break  # EOF: the harness is gone or done
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
        except ValueError as e:
            emit("error", where="command parse", message=str(e), traceback="")
            continue
        if not runner.handle(cmd):
            break
    return runner.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
