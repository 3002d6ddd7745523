"""Benchmark worker for the official ``sora_sdk`` client (one task per process).

    python -m bench.workers.sora_sdk_worker '<config JSON>'

Imports the standard library, numpy, ``bench.support`` and ``sora_sdk`` only
(never ``sora_async``), so this process's CPU is the official client's. The
tasks and their results are those of ``bench/workers/sora_async_worker.py``
(same config keys, same result fields); ``bench/run.py`` drives both.

``sora_sdk`` runs callbacks on its own threads and aborts the process when an
exception escapes one (sora-sdk-reference.md §1.6): every callback here is
wrapped. ``disconnect()`` has no time bound in 2025.4.0, so it runs in a thread
that is given up on after ``DISCONNECT_TIMEOUT_S``, and the process leaves with
``os._exit`` (no interpreter teardown that could wait on libwebrtc threads).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from bench import support
from bench.workers.control import Control

sora_sdk: Any = None

CONNECT_TIMEOUT_S = 20.0
DISCONNECT_TIMEOUT_S = 20.0

emit = support.Emitter()


def _guard(fn: Callable[..., None]) -> Callable[..., None]:
    """A callback that never lets an exception reach libwebrtc."""

    def wrapped(*args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:
            try:
                emit("error", where=getattr(fn, "__name__", "callback"), message=repr(exc))
            except BaseException:
                pass

    return wrapped


class Client:
    """One official connection with the events the tasks wait for."""

    def __init__(self, sora: Any, url: str, role: str, channel_id: str, **keywords: Any) -> None:
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.switched = threading.Event()
        self.labels: set[str] = set()
        self.label_open = threading.Condition()
        self.connection_id: str | None = None
        self.on_track: Callable[[Any], None] | None = None
        self.on_message: Callable[[str, bytes], None] | None = None
        self.connected_at: float | None = None
        self.conn: Any = sora.create_connection(
            signaling_urls=[url], role=role, channel_id=channel_id, **keywords
        )
        c = self.conn
        c.on_set_offer = _guard(self._on_set_offer)
        c.on_notify = _guard(self._on_notify)
        c.on_disconnect = _guard(lambda code, message: self.disconnected.set())
        c.on_switched = _guard(lambda message: self.switched.set())
        c.on_data_channel = _guard(self._on_data_channel)
        c.on_track = _guard(self._track)
        c.on_message = _guard(self._message)

    def _on_set_offer(self, text: str) -> None:
        self.connection_id = json.loads(text).get("connection_id")

    def _on_notify(self, text: str) -> None:
        message = json.loads(text)
        if (
            message.get("event_type") == "connection.created"
            and message.get("connection_id") == self.connection_id
            and not self.connected.is_set()
        ):
            self.connected_at = time.monotonic()
            self.connected.set()

    def _on_data_channel(self, label: str) -> None:
        with self.label_open:
            self.labels.add(label)
            self.label_open.notify_all()

    def _track(self, track: Any) -> None:
        if self.on_track is not None:
            self.on_track(track)

    def _message(self, label: str, data: bytes) -> None:
        if self.on_message is not None:
            self.on_message(label, data)

    def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.conn.connect()
        if not self.connected.wait(timeout):
            raise TimeoutError("no connection.created notify")

    def wait_label(self, label: str, timeout: float) -> bool:
        with self.label_open:
            return self.label_open.wait_for(lambda: label in self.labels, timeout)

    def stats(self) -> list[dict[str, Any]]:
        return support.parse_stats(self.conn.get_stats())

    def disconnect(self) -> float:
        """Blocking ``disconnect()`` in a thread; seconds it took (raises on a hang)."""
        t0 = time.monotonic()
        thread = threading.Thread(target=self.conn.disconnect, daemon=True)
        thread.start()
        thread.join(DISCONNECT_TIMEOUT_S)
        if thread.is_alive():
            raise TimeoutError("disconnect() hung")
        return time.monotonic() - t0


class Pacer:
    """Calls ``step(n)`` every ``period`` s in a thread until stopped (no bursts after a stall)."""

    def __init__(self, period: float, step: Callable[[int], None], name: str) -> None:
        self.period = period
        self.step = step
        self.stop = threading.Event()
        self.thread = threading.Thread(target=_guard(self._run), name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        n = 0
        next_t = time.monotonic()
        while not self.stop.is_set():
            self.step(n)
            n += 1
            next_t += self.period
            delay = next_t - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            elif delay < -0.2:
                next_t = time.monotonic()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def video_pacer(source: Any, cfg: dict[str, Any]) -> Pacer:
    width, height, fps = int(cfg["width"]), int(cfg["height"]), int(cfg.get("fps", 30))
    frames = support.make_frames(width, height, int(cfg.get("frame_count", 30)))

    def step(n: int) -> None:
        frame = frames[n % len(frames)]
        support.paint_code(frame, n, support.monotonic_ms())
        source.on_captured(frame)

    return Pacer(1.0 / fps, step, "video")


def tone_pacer(source: Any, rate: int = 48000) -> Pacer:
    """A quiet 440 Hz tone in 10 ms chunks (the scale scenario's audio)."""
    chunk = rate // 100
    t = np.arange(rate) / rate
    second = (2000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16).reshape(-1, 1)

    def step(n: int) -> None:
        i = (n % 100) * chunk
        source.on_data(np.ascontiguousarray(second[i : i + chunk]))

    return Pacer(0.01, step, "audio")


# --- tasks ---------------------------------------------------------------------------------------


def task_send_video(cfg: dict[str, Any], control: Control) -> dict[str, Any]:
    sora = sora_sdk.Sora()
    video = sora.create_video_source()
    with_audio = bool(cfg.get("audio", False))
    keywords: dict[str, Any] = {
        "video_source": video,
        "audio": with_audio,
        "video": True,
        "video_codec_type": cfg["codec"],
        "video_bit_rate": int(cfg["video_bit_rate"]),
        "degradation_preference": sora_sdk.SoraDegradationPreference.MAINTAIN_RESOLUTION,
    }
    audio: Any = None
    if with_audio:
        audio = sora.create_audio_source(1, 48000)
        keywords["audio_source"] = audio
    client = Client(sora, cfg["signaling_url"], "sendonly", cfg["channel_id"], **keywords)
    pacers = [video_pacer(video, cfg)]
    if audio is not None:
        pacers.append(tone_pacer(audio))
    for p in pacers:
        p.start()
    try:
        client.connect()
        emit("ready", connection_id=client.connection_id)
        result: dict[str, Any] = {}
        measure = cfg.get("measure_s")
        if measure is not None:
            control.stop.wait(float(cfg.get("warmup_s", 2.0)))
            before, window = support.outbound_video(client.stats()), support.CpuWindow()
            control.stop.wait(float(measure))
            cpu, seconds, threads = window.percent(), window.elapsed(), window.by_thread()
            after = support.outbound_video(client.stats())
            result = support.send_result(before, after, cpu, seconds)
            result[support.THREAD_CPU] = threads
        else:
            control.stop.wait(float(cfg.get("max_s", 600)))
        emit("measured", **result)
        control.stop.wait(float(cfg.get("linger_s", 0)))
        client.disconnect()
        return result
    finally:
        for p in pacers:
            p.close()


class VideoProbe:
    """Counts delivered frames and decodes the pixel code (capture-to-delivery latency)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.first = threading.Event()
        self.measuring = False
        self.frames = 0
        self.latencies: list[float] = []
        self.invalid = 0

    def frame(self, image: Any) -> None:
        now = time.monotonic() * 1000
        self.first.set()
        if not self.measuring:
            return
        _counter, code_ms = support.read_code(image)
        latency = now - support.capture_time_ms(code_ms, int(now))
        with self.lock:
            self.frames += 1
            if 0 <= latency < 5000:
                self.latencies.append(latency)
            else:
                self.invalid += 1


def recv_result(probe: VideoProbe, cpu: float, seconds: float) -> dict[str, Any]:
    with probe.lock:
        lat = list(probe.latencies)
        return {
            "cpu_pct": cpu,
            "fps": probe.frames / seconds,
            "latency_p50_ms": support.percentile(lat, 0.5),
            "latency_p90_ms": support.percentile(lat, 0.9),
            "invalid_codes": probe.invalid,
            "seconds": seconds,
        }


def task_recv_video(cfg: dict[str, Any], control: Control) -> dict[str, Any]:
    sora = sora_sdk.Sora()
    client = Client(
        sora, cfg["signaling_url"], "recvonly", cfg["channel_id"], audio=False, video=True
    )
    probe = VideoProbe()
    sinks: list[Any] = []

    def on_track(track: Any) -> None:
        if track.kind != "video":
            return
        sink = sora_sdk.SoraVideoSink(track)
        sink.on_frame = _guard(lambda frame: probe.frame(frame.data()))
        sinks.append(sink)

    client.on_track = on_track
    client.connect()
    emit("ready", connection_id=client.connection_id)
    if not probe.first.wait(20):
        raise TimeoutError("no video frame in 20 s")
    control.stop.wait(float(cfg.get("warmup_s", 2.0)))
    window = support.CpuWindow()
    probe.measuring = True
    control.stop.wait(float(cfg["measure_s"]))
    probe.measuring = False
    result = recv_result(probe, window.percent(), window.elapsed())
    result[support.THREAD_CPU] = window.by_thread()
    emit("measured", **result)
    client.disconnect()
    sinks.clear()
    return result


def task_audio(cfg: dict[str, Any], control: Control) -> dict[str, Any]:
    """sendrecv Opus: clicks out every second, click onsets found in the 16 kHz mono sink."""
    sora = sora_sdk.Sora()
    source = sora.create_audio_source(1, 48000)
    client = Client(
        sora,
        cfg["signaling_url"],
        "sendrecv",
        cfg["channel_id"],
        audio=True,
        video=False,
        audio_codec_type="OPUS",
        audio_source=source,
    )
    rate, chunk = 48000, 480
    burst = support.click(rate)
    period = int(float(cfg.get("click_period_s", 1.0)) * 100)  # in 10 ms chunks
    silence = np.zeros((chunk, 1), np.int16)
    clicks: list[float] = []
    detector = support.OnsetDetector(16000)
    sinks: list[Any] = []
    sink_lock = threading.Lock()

    def audio_step(n: int) -> None:
        k = n % period
        data = silence
        if k * chunk < len(burst):
            data = np.ascontiguousarray(burst[k * chunk : (k + 1) * chunk].reshape(-1, 1))
            if k == 0:
                clicks.append(time.monotonic())
        source.on_data(data)

    def reader_step(_n: int) -> None:
        with sink_lock:
            current = list(sinks)
        for sink in current[:1]:
            ok, data = sink.read(0, 0)
            if ok and data is not None and len(data):
                detector.feed(data, time.monotonic())

    def on_track(track: Any) -> None:
        if track.kind == "audio":
            with sink_lock:
                sinks.append(sora_sdk.SoraAudioSink(track, 16000, 1))

    client.on_track = on_track
    pacers = [Pacer(0.01, audio_step, "audio"), Pacer(0.01, reader_step, "sink")]
    for p in pacers:
        p.start()
    try:
        client.connect()
        emit("ready", connection_id=client.connection_id)
        go_at = control.wait_go(60)
        control.stop.wait(max(0.0, go_at - time.monotonic()))
        window = support.CpuWindow()
        start = time.monotonic()
        control.stop.wait(float(cfg["measure_s"]))
        result = {
            "cpu_pct": window.percent(),
            "seconds": window.elapsed(),
            support.THREAD_CPU: window.by_thread(),
            "clicks": [t for t in clicks if t >= start],
            "onsets": [t for t in detector.onsets if t >= start],
        }
        emit("measured", **result)
        control.stop.wait(float(cfg.get("max_s", 60)))
        client.disconnect()
        return result
    finally:
        for p in pacers:
            p.close()
        with sink_lock:
            sinks.clear()


def task_connect_cycle(cfg: dict[str, Any], control: Control) -> dict[str, Any]:
    sora = sora_sdk.Sora()
    connect_s: list[float] = []
    disconnect_s: list[float] = []
    for i in range(int(cfg["count"])):
        if control.stop.is_set():
            break
        t0 = time.monotonic()
        client = Client(
            sora,
            cfg["signaling_url"],
            "recvonly",
            f"{cfg['channel_id']}-{i}",
            audio=True,
            video=True,
        )
        client.connect()
        assert client.connected_at is not None
        connect_s.append(client.connected_at - t0)
        disconnect_s.append(client.disconnect())
        del client
        gc.collect()
        time.sleep(0.2)
    return {"connect_s": connect_s, "disconnect_s": disconnect_s}


def task_messaging(cfg: dict[str, Any], control: Control) -> dict[str, Any]:
    sora = sora_sdk.Sora()
    label = "#bench"
    client = Client(
        sora,
        cfg["signaling_url"],
        "sendrecv",
        cfg["channel_id"],
        audio=False,
        video=False,
        data_channel_signaling=True,
        data_channels=[{"label": label, "direction": "sendrecv"}],
    )
    received: list[tuple[int, int, float, float, int]] = []
    done = threading.Event()
    burst_count = int(cfg["burst_count"])

    def on_message(got: str, data: bytes) -> None:
        now = time.monotonic()
        if got != label:
            return
        parsed = support.parse_payload(bytes(data))
        if parsed is None:
            return
        phase, seq, sent = parsed
        received.append((phase, seq, sent, now, len(data)))
        if phase == 1 and seq == burst_count - 1:
            done.set()

    client.on_message = on_message
    client.connect()
    if not client.wait_label(label, 20) or not client.switched.wait(20):
        raise TimeoutError(f"{label} did not open")
    emit("ready", connection_id=client.connection_id)
    go_at = control.wait_go(60)
    control.stop.wait(max(0.0, go_at - time.monotonic()))
    result: dict[str, Any]
    if cfg["side"] == "send":
        size = int(cfg["size"])
        interval = float(cfg["latency_interval_s"])
        failed = 0
        for seq in range(int(cfg["latency_count"])):
            t = time.monotonic()
            if not client.conn.send_data_channel(label, support.message_payload(size, 0, seq, t)):
                failed += 1
            time.sleep(max(0.0, t + interval - time.monotonic()))
        time.sleep(0.3)
        for seq in range(burst_count):
            payload = support.message_payload(size, 1, seq, time.monotonic())
            if not client.conn.send_data_channel(label, payload):
                failed += 1
        result = {"failed_sends": failed}
    else:
        done.wait(float(cfg.get("receive_timeout_s", 60)))
        result = support.summarize_messages(received)
    emit("measured", **result)
    control.stop.wait(float(cfg.get("max_s", 120)))
    client.disconnect()
    return result


def task_scale_recv(cfg: dict[str, Any], control: Control) -> dict[str, Any]:
    """N recvonly audio+video connections in this process."""
    sora = sora_sdk.Sora()
    n = int(cfg["n"])
    counts = [0] * n
    measuring = threading.Event()
    firsts = [threading.Event() for _ in range(n)]
    audio_sinks: list[Any] = []
    video_sinks: list[Any] = []
    lock = threading.Lock()
    clients: list[Client] = []

    def track_handler(i: int) -> Callable[[Any], None]:
        def on_frame(frame: Any) -> None:
            frame.data()
            firsts[i].set()
            if measuring.is_set():
                counts[i] += 1

        def on_track(track: Any) -> None:
            with lock:
                if track.kind == "video":
                    sink = sora_sdk.SoraVideoSink(track)
                    sink.on_frame = _guard(on_frame)
                    video_sinks.append(sink)
                else:
                    audio_sinks.append(sora_sdk.SoraAudioSink(track, 16000, 1))

        return on_track

    def drain(_n: int) -> None:
        with lock:
            current = list(audio_sinks)
        for sink in current:
            sink.read(0, 0)

    drainer = Pacer(0.1, drain, "drain")
    drainer.start()
    try:
        batch = int(cfg.get("connect_batch", 10))
        for start in range(0, n, batch):
            group = []
            for i in range(start, min(n, start + batch)):
                client = Client(
                    sora,
                    cfg["signaling_url"],
                    "recvonly",
                    cfg["channel_id"],
                    audio=True,
                    video=True,
                )
                client.on_track = track_handler(i)
                client.conn.connect()
                group.append(client)
            for client in group:
                if not client.connected.wait(CONNECT_TIMEOUT_S + n * 0.2):
                    raise TimeoutError("a connection did not connect")
            clients.extend(group)
        deadline = time.monotonic() + 30
        for event in firsts:
            event.wait(max(0.1, deadline - time.monotonic()))
        emit("ready", connected=len(clients))
        control.stop.wait(float(cfg.get("warmup_s", 2.0)))
        before = receive_totals(clients)
        stats_start = time.monotonic()
        window = support.CpuWindow()
        measuring.set()
        control.stop.wait(float(cfg["measure_s"]))
        measuring.clear()
        cpu, seconds, threads = window.percent(), window.elapsed(), window.by_thread()
        after = receive_totals(clients)
        result = scale_result(counts, seconds, cpu, float(cfg.get("min_fps", 25)))
        result[support.THREAD_CPU] = threads
        result.update(
            support.receive_rates(before, after, time.monotonic() - stats_start, len(clients))
        )
        emit("measured", **result)
        _disconnect_all(clients)
        return result
    finally:
        drainer.close()
        with lock:
            audio_sinks.clear()
            video_sinks.clear()


def receive_totals(clients: list[Client]) -> dict[str, float] | None:
    """The clients' summed video receive counters (None if stats did not come)."""
    try:
        return support.inbound_video_totals([c.stats() for c in clients])
    except Exception as exc:
        emit("warning", where="get_stats", message=repr(exc))
        return None


def scale_result(counts: list[int], seconds: float, cpu: float, min_fps: float) -> dict[str, Any]:
    fps = [c / seconds for c in counts]
    return {
        "n": len(counts),
        "cpu_pct": cpu,
        "rss_mb": support.rss_bytes() / 1e6,
        "min_fps": min(fps) if fps else None,
        "median_fps": statistics.median(fps) if fps else None,
        "ok": sum(1 for f in fps if f >= min_fps),
        "holds": bool(fps) and min(fps) >= min_fps,
        "seconds": seconds,
    }


def _disconnect_all(clients: list[Client]) -> None:
    threads = [threading.Thread(target=c.conn.disconnect, daemon=True) for c in clients]
    for t in threads:
        t.start()
    deadline = time.monotonic() + DISCONNECT_TIMEOUT_S
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))


TASKS: dict[str, Callable[[dict[str, Any], Control], dict[str, Any]]] = {
    "send_video": task_send_video,
    "recv_video": task_recv_video,
    "audio": task_audio,
    "connect_cycle": task_connect_cycle,
    "messaging": task_messaging,
    "scale_recv": task_scale_recv,
}


def main(argv: list[str]) -> int:
    global sora_sdk
    cfg = support.read_config(argv)
    support.hard_exit_after(float(cfg.get("hard_timeout_s", 300)), emit)
    import sora_sdk as module

    sora_sdk = module
    control = Control()
    code = 0
    try:
        result = TASKS[cfg["task"]](cfg, control)
        emit("result", client="sora_sdk", version=module.__version__, **result)
    except BaseException as exc:
        emit("error", where=cfg.get("task"), message=repr(exc), traceback=traceback.format_exc())
        code = 1
    sys.stdout.flush()
    gc.collect()
    # Leave without interpreter teardown: libwebrtc threads can keep it waiting.
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv)
