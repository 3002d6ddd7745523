"""Benchmark worker for ``sora_async`` (one task per process).

    python -m bench.workers.sora_async_worker '<config JSON>'

The same tasks, config keys and result fields as
``bench/workers/sora_sdk_worker.py``, written the way an asyncio application
uses ``sora_async``: ``VideoSource.write`` from a paced task,
``VideoSink(track, format="bgr24")`` iterated with ``async for``,
``await AudioSink.read(160)``, ``conn.on("message", ...)``. Every wait has a
timeout; a watchdog thread ends the process if the task hangs anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import numpy as np

from bench import support
from bench.workers.control import Control
from sora_async import AudioSink, AudioSource, Connection, VideoSink, VideoSource, runner
from sora_async import __version__ as sora_async_version
from sora_async.enums import DegradationPreference

CONNECT_TIMEOUT_S = 20.0
DISCONNECT_TIMEOUT_S = 20.0

emit = support.Emitter()


class AsyncControl:
    """The parent's ``go``/``stop`` as asyncio events."""

    def __init__(self, control: Control) -> None:
        self.control = control
        self.stop = asyncio.Event()
        self.go = asyncio.Event()
        loop = asyncio.get_running_loop()
        control.listeners.append(lambda: self._wake(loop))
        self._sync()

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to wake
            loop.call_soon_threadsafe(self._sync)

    def _sync(self) -> None:
        if self.control.stop.is_set():
            self.stop.set()
        if self.control.go.is_set():
            self.go.set()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` or until stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), max(0.0, seconds))

    async def wait_go(self, limit: float) -> float:
        """Wait up to ``limit`` s for ``go``; the monotonic time to start at."""
        await asyncio.wait_for(self.go.wait(), limit)
        if self.control.stop.is_set() and not self.control.go_at:
            raise RuntimeError("stopped before go")
        return self.control.go_at


async def paced(period: float, step: Callable[[int], Awaitable[None] | None]) -> None:
    """Call ``step(n)`` every ``period`` s until cancelled (no bursts after a stall)."""
    n = 0
    next_t = time.monotonic()
    while True:
        result = step(n)
        if result is not None:
            await result
        n += 1
        next_t += period
        delay = next_t - time.monotonic()
        if delay < -0.2:
            next_t = time.monotonic()
        await asyncio.sleep(max(0.0, delay))


class Tasks:
    """Background tasks of one worker, cancelled together."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=5)


async def connect(conn: Connection) -> float:
    """``await conn.connect()`` within the timeout; the monotonic time it returned."""
    await asyncio.wait_for(conn.connect(), CONNECT_TIMEOUT_S)
    return time.monotonic()


async def disconnect(conn: Connection) -> float:
    t0 = time.monotonic()
    await asyncio.wait_for(conn.disconnect(), DISCONNECT_TIMEOUT_S)
    return time.monotonic() - t0


async def video_stats(conn: Connection) -> dict[str, Any]:
    return support.outbound_video(await asyncio.wait_for(conn.get_stats(), 10))


def video_writer(source: VideoSource, cfg: dict[str, Any]) -> Callable[[int], None]:
    width, height = int(cfg["width"]), int(cfg["height"])
    frames = support.make_frames(width, height, int(cfg.get("frame_count", 30)))

    def step(n: int) -> None:
        frame = frames[n % len(frames)]
        support.paint_code(frame, n, support.monotonic_ms())
        source.write(frame)

    return step


def tone_writer(source: AudioSource, rate: int = 48000) -> Callable[[int], None]:
    chunk = rate // 100
    t = np.arange(rate) / rate
    second = (2000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16).reshape(-1, 1)

    def step(n: int) -> None:
        i = (n % 100) * chunk
        source.write(second[i : i + chunk])

    return step


# --- tasks ---------------------------------------------------------------------------------------


async def task_send_video(cfg: dict[str, Any], control: AsyncControl) -> dict[str, Any]:
    video = VideoSource()
    audio = AudioSource(1, 48000) if cfg.get("audio") else None
    conn = Connection(
        cfg["signaling_url"],
        "sendonly",
        cfg["channel_id"],
        video_source=video,
        audio_source=audio,
        audio=audio is not None,
        video=True,
        video_codec_type=cfg["codec"],
        video_bit_rate=int(cfg["video_bit_rate"]),
        degradation_preference=DegradationPreference.MAINTAIN_RESOLUTION,
    )
    tasks = Tasks()
    tasks.spawn(paced(1.0 / int(cfg.get("fps", 30)), video_writer(video, cfg)))
    if audio is not None:
        tasks.spawn(paced(0.01, tone_writer(audio)))
    try:
        await connect(conn)
        emit("ready", connection_id=conn.connection_id)
        result: dict[str, Any] = {}
        measure = cfg.get("measure_s")
        if measure is not None:
            await control.sleep(float(cfg.get("warmup_s", 2.0)))
            before, window = await video_stats(conn), support.CpuWindow()
            await control.sleep(float(measure))
            cpu, seconds, threads = window.percent(), window.elapsed(), window.by_thread()
            after = await video_stats(conn)
            result = support.send_result(before, after, cpu, seconds)
            result[support.THREAD_CPU] = threads
        else:
            await control.sleep(float(cfg.get("max_s", 600)))
        emit("measured", **result)
        await control.sleep(float(cfg.get("linger_s", 0)))
        await disconnect(conn)
        return result
    finally:
        await tasks.close()
        video.stop()
        if audio is not None:
            audio.stop()


async def task_recv_video(cfg: dict[str, Any], control: AsyncControl) -> dict[str, Any]:
    conn = Connection(cfg["signaling_url"], "recvonly", cfg["channel_id"], audio=False, video=True)
    tracks: asyncio.Queue[Any] = asyncio.Queue()
    conn.on("track", lambda track: tracks.put_nowait(track) if track.kind == "video" else None)
    await connect(conn)
    emit("ready", connection_id=conn.connection_id)
    track = await asyncio.wait_for(tracks.get(), 20)
    frames = 0
    latencies: list[float] = []
    invalid = 0
    measuring = False
    first = asyncio.Event()

    async def consume() -> None:
        nonlocal frames, invalid
        async with VideoSink(track, format="bgr24") as sink:
            async for frame in sink:
                image = frame.data()
                now = time.monotonic() * 1000
                first.set()
                if not measuring:
                    continue
                _counter, code_ms = support.read_code(image)
                latency = now - support.capture_time_ms(code_ms, int(now))
                frames += 1
                if 0 <= latency < 5000:
                    latencies.append(latency)
                else:
                    invalid += 1

    tasks = Tasks()
    tasks.spawn(consume())
    try:
        await asyncio.wait_for(first.wait(), 20)
        await control.sleep(float(cfg.get("warmup_s", 2.0)))
        window = support.CpuWindow()
        measuring = True
        await control.sleep(float(cfg["measure_s"]))
        measuring = False
        seconds = window.elapsed()
        result = {
            "cpu_pct": window.percent(),
            "fps": frames / seconds,
            "latency_p50_ms": support.percentile(latencies, 0.5),
            "latency_p90_ms": support.percentile(latencies, 0.9),
            "invalid_codes": invalid,
            "seconds": seconds,
            support.THREAD_CPU: window.by_thread(),
        }
        emit("measured", **result)
    finally:
        await tasks.close()
    await disconnect(conn)
    return result


async def task_audio(cfg: dict[str, Any], control: AsyncControl) -> dict[str, Any]:
    source = AudioSource(1, 48000)
    conn = Connection(
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
    period = int(float(cfg.get("click_period_s", 1.0)) * 100)
    silence = np.zeros((chunk, 1), np.int16)
    clicks: list[float] = []
    detector = support.OnsetDetector(16000)
    tracks: asyncio.Queue[Any] = asyncio.Queue()
    conn.on("track", lambda track: tracks.put_nowait(track) if track.kind == "audio" else None)

    def audio_step(n: int) -> None:
        k = n % period
        data = silence
        if k * chunk < len(burst):
            data = burst[k * chunk : (k + 1) * chunk].reshape(-1, 1)
            if k == 0:
                clicks.append(time.monotonic())
        source.write(data)

    async def read_sink() -> None:
        track = await tracks.get()
        sink = AudioSink(track, 16000, 1)
        try:
            while True:
                ok, data = await sink.read(160, timeout=1.0)
                if ok and data is not None:
                    detector.feed(data, time.monotonic())
                    continue
                # Once the track ended with less than 160 samples left, read(160) returns
                # (False, None) at once and `ended` stays False until the tail is read:
                # take the tail, and never spin on the event loop.
                await sink.read(0)
                if sink.ended:
                    return
                await asyncio.sleep(0.01)
        finally:
            await sink.close()

    tasks = Tasks()
    tasks.spawn(paced(0.01, audio_step))
    tasks.spawn(read_sink())
    try:
        await connect(conn)
        emit("ready", connection_id=conn.connection_id)
        go_at = await control.wait_go(60)
        await control.sleep(go_at - time.monotonic())
        window = support.CpuWindow()
        start = time.monotonic()
        await control.sleep(float(cfg["measure_s"]))
        result = {
            "cpu_pct": window.percent(),
            "seconds": window.elapsed(),
            support.THREAD_CPU: window.by_thread(),
            "clicks": [t for t in clicks if t >= start],
            "onsets": [t for t in detector.onsets if t >= start],
        }
        emit("measured", **result)
        await control.sleep(float(cfg.get("max_s", 60)))
        await disconnect(conn)
        return result
    finally:
        await tasks.close()
        source.stop()


async def task_connect_cycle(cfg: dict[str, Any], control: AsyncControl) -> dict[str, Any]:
    connect_s: list[float] = []
    disconnect_s: list[float] = []
    for i in range(int(cfg["count"])):
        if control.stop.is_set():
            break
        t0 = time.monotonic()
        conn = Connection(
            cfg["signaling_url"], "recvonly", f"{cfg['channel_id']}-{i}", audio=True, video=True
        )
        connect_s.append(await connect(conn) - t0)
        disconnect_s.append(await disconnect(conn))
        await asyncio.sleep(0.2)
    return {"connect_s": connect_s, "disconnect_s": disconnect_s}


async def task_messaging(cfg: dict[str, Any], control: AsyncControl) -> dict[str, Any]:
    label = "#bench"
    conn = Connection(
        cfg["signaling_url"],
        "sendrecv",
        cfg["channel_id"],
        audio=False,
        video=False,
        data_channel_signaling=True,
        data_channels=[{"label": label, "direction": "sendrecv"}],
    )
    received: list[tuple[int, int, float, float, int]] = []
    done = asyncio.Event()
    opened = asyncio.Event()
    burst_count = int(cfg["burst_count"])

    def on_message(got: str, data: bytes) -> None:
        now = time.monotonic()
        if got != label:
            return
        parsed = support.parse_payload(data)
        if parsed is None:
            return
        phase, seq, sent = parsed
        received.append((phase, seq, sent, now, len(data)))
        if phase == 1 and seq == burst_count - 1:
            done.set()

    conn.on("message", on_message)
    switched = asyncio.Event()
    conn.on("data_channel", lambda got: opened.set() if got == label else None)
    conn.on("switched", lambda _message: switched.set())
    await connect(conn)
    await asyncio.wait_for(opened.wait(), 20)
    if not conn.switched:
        await asyncio.wait_for(switched.wait(), 20)
    emit("ready", connection_id=conn.connection_id)
    go_at = await control.wait_go(60)
    await control.sleep(go_at - time.monotonic())
    result: dict[str, Any]
    if cfg["side"] == "send":
        size = int(cfg["size"])
        interval = float(cfg["latency_interval_s"])
        failed = 0
        for seq in range(int(cfg["latency_count"])):
            t = time.monotonic()
            payload = support.message_payload(size, 0, seq, t)
            if not await asyncio.wait_for(conn.send_data_channel(label, payload), 10):
                failed += 1
            await asyncio.sleep(max(0.0, t + interval - time.monotonic()))
        await asyncio.sleep(0.3)
        for seq in range(burst_count):
            payload = support.message_payload(size, 1, seq, time.monotonic())
            if not await asyncio.wait_for(conn.send_data_channel(label, payload), 10):
                failed += 1
        result = {"failed_sends": failed}
    else:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), float(cfg.get("receive_timeout_s", 60)))
        result = support.summarize_messages(received)
    emit("measured", **result)
    await control.sleep(float(cfg.get("max_s", 120)))
    await disconnect(conn)
    return result


async def receive_totals(conns: list[Connection]) -> dict[str, float] | None:
    """The connections' summed video receive counters (None if stats did not come)."""
    try:
        reports = await asyncio.wait_for(asyncio.gather(*(c.get_stats() for c in conns)), 20)
    except Exception as exc:
        emit("warning", where="get_stats", message=repr(exc))
        return None
    return support.inbound_video_totals(reports)


async def task_scale_recv(cfg: dict[str, Any], control: AsyncControl) -> dict[str, Any]:
    n = int(cfg["n"])
    counts = [0] * n
    firsts = [asyncio.Event() for _ in range(n)]
    measuring = False
    tasks = Tasks()
    audio_sinks: list[AudioSink] = []

    # "sink": VideoSink(format="bgr24") converts (in an executor); "loop": frame.data() on the
    # event loop; "none": no BGR conversion at all (for diagnosis).
    conversion = str(cfg.get("bgr", "sink"))

    async def consume_video(i: int, track: Any) -> None:
        async with VideoSink(track, format="bgr24" if conversion == "sink" else None) as sink:
            async for frame in sink:
                if conversion != "none":
                    frame.data()
                firsts[i].set()
                if measuring:
                    counts[i] += 1

    def on_track(i: int, track: Any) -> None:
        if track.kind == "video":
            tasks.spawn(consume_video(i, track))
        else:
            audio_sinks.append(AudioSink(track, 16000, 1))

    async def drain(_n: int) -> None:
        for sink in list(audio_sinks):
            await sink.read(0)

    tasks.spawn(paced(0.1, drain))
    conns: list[Connection] = []
    try:
        batch = int(cfg.get("connect_batch", 10))
        for start in range(0, n, batch):
            group = []
            for i in range(start, min(n, start + batch)):
                conn = Connection(
                    cfg["signaling_url"], "recvonly", cfg["channel_id"], audio=True, video=True
                )
                conn.on("track", lambda track, i=i: on_track(i, track))
                group.append(conn)
            await asyncio.wait_for(
                asyncio.gather(*(c.connect() for c in group)), CONNECT_TIMEOUT_S + n * 0.2
            )
            conns.extend(group)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in firsts)), 30)
        emit("ready", connected=len(conns))
        await control.sleep(float(cfg.get("warmup_s", 2.0)))
        before = await receive_totals(conns)
        stats_start = time.monotonic()
        window = support.CpuWindow()
        measuring = True
        await control.sleep(float(cfg["measure_s"]))
        measuring = False
        cpu, seconds, threads = window.percent(), window.elapsed(), window.by_thread()
        after = await receive_totals(conns)
        rates = support.receive_rates(before, after, time.monotonic() - stats_start, len(conns))
        fps = [c / seconds for c in counts]
        min_fps = float(cfg.get("min_fps", 25))
        result = {
            "n": n,
            "cpu_pct": cpu,
            "rss_mb": support.rss_bytes() / 1e6,
            "min_fps": min(fps),
            "median_fps": statistics.median(fps),
            "ok": sum(1 for f in fps if f >= min_fps),
            "holds": min(fps) >= min_fps,
            "seconds": seconds,
            support.THREAD_CPU: threads,
            **rates,
        }
        emit("measured", **result)
        return result
    finally:
        await tasks.close()
        for sink in audio_sinks:
            await asyncio.wait_for(sink.close(), 5)
        await asyncio.wait_for(
            asyncio.gather(*(c.disconnect() for c in conns), return_exceptions=True),
            DISCONNECT_TIMEOUT_S,
        )


TASKS: dict[str, Callable[[dict[str, Any], AsyncControl], Awaitable[dict[str, Any]]]] = {
    "send_video": task_send_video,
    "recv_video": task_recv_video,
    "audio": task_audio,
    "connect_cycle": task_connect_cycle,
    "messaging": task_messaging,
    "scale_recv": task_scale_recv,
}


async def run(cfg: dict[str, Any]) -> dict[str, Any]:
    control = AsyncControl(Control())
    return await TASKS[cfg["task"]](cfg, control)


def main(argv: list[str]) -> int:
    cfg = support.read_config(argv)
    support.hard_exit_after(float(cfg.get("hard_timeout_s", 300)), emit)
    code = 0
    try:
        # The library's runner: what a user's program calls (uvloop only when asked).
        result = runner.run(run(cfg), uvloop=cfg.get("loop", "asyncio") == "uvloop")
        emit("result", client="sora_async", version=sora_async_version, **result)
    except BaseException as exc:
        emit("error", where=cfg.get("task"), message=repr(exc), traceback=traceback.format_exc())
        code = 1
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv)
