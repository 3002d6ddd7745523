"""What both workers share: test media, the pixel time code, clicks, CPU and JSON lines.

Only the standard library and numpy: the official client's worker imports this
module too and must not load ``sora_async``.

- Video frames are precomputed (a moving gradient and bar, so that encoders see
  real motion); just before a frame is handed to a client, :func:`paint_code`
  writes a frame counter and the capture time (``time.monotonic()`` in ms, mod
  2**24) into its top band as two rows of big black/white blocks that survive
  VP8/VP9/AV1 at low bit rates. ``CLOCK_MONOTONIC`` is one clock for every
  process on Linux, so the receiver's ``time.monotonic()`` minus the decoded
  capture time is the capture-to-delivery latency.
- Audio: a 1 kHz burst ("click") every second on silence; :class:`OnsetDetector`
  finds click onsets in received 16 kHz mono audio.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO, TypeGuard

import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]

#: Bits per row of the pixel code; two rows: frame counter, capture time (ms).
CODE_BITS = 24
CODE_MOD = 1 << CODE_BITS


def code_block(width: int) -> int:
    """Side of one code block in pixels (two blocks of margin on each side)."""
    return max(8, width // (CODE_BITS + 4))


def code_band_height(width: int) -> int:
    """Height of the grey band at the top that holds the code."""
    return 4 * code_block(width)


def make_frames(width: int, height: int, count: int) -> list[Image]:
    """``count`` BGR frames of a moving gradient with a bar (the code band left grey)."""
    y, x = np.ogrid[0:height, 0:width]
    frames: list[Image] = []
    band = code_band_height(width)
    for n in range(count):
        image = np.empty((height, width, 3), np.uint8)
        image[:, :, 0] = (x + 3 * n) & 0xFF
        image[:, :, 1] = (y + 2 * n) & 0xFF
        image[:, :, 2] = ((x + y) // 2 - 5 * n) & 0xFF
        bar = (7 * n) % max(width - 16, 1)
        image[:, bar : bar + 16] = 255
        image[:band] = 128
        frames.append(image)
    return frames


def paint_code(image: Image, counter: int, time_ms: int) -> None:
    """Write ``counter`` and ``time_ms`` (each mod 2**24) into the top band, in place."""
    b = code_block(image.shape[1])
    for row, value in enumerate((counter % CODE_MOD, time_ms % CODE_MOD)):
        y0 = b // 2 + row * (3 * b // 2)
        for i in range(CODE_BITS):
            bit = (value >> (CODE_BITS - 1 - i)) & 1
            x0 = (i + 2) * b
            image[y0 : y0 + b, x0 : x0 + b] = 255 if bit else 0


def read_code(image: npt.NDArray[Any]) -> tuple[int, int]:
    """``(counter, time_ms mod 2**24)`` painted by :func:`paint_code` (BGR or luma image)."""
    b = code_block(image.shape[1])
    # Only the band, and only one channel of BGR (the code is grey): cheap.
    band = image[: 4 * b, :, 1] if image.ndim == 3 else image[: 4 * b]
    q = max(1, b // 4)
    values = []
    for row in range(2):
        y0 = b // 2 + row * (3 * b // 2)
        cells = band[y0 + q : y0 + b - q, 2 * b : (CODE_BITS + 2) * b]
        # Mean of the centre of each block: (rows, CODE_BITS, b) -> CODE_BITS means.
        strips = cells[:, : CODE_BITS * b].reshape(cells.shape[0], CODE_BITS, b)
        means = strips[:, :, q : b - q].mean(axis=(0, 2))
        value = 0
        for m in means:
            value = (value << 1) | int(m > 128)
        values.append(value)
    return values[0], values[1]


def capture_time_ms(code_ms: int, now_ms: int) -> int:
    """The full capture time (ms) for a 24-bit ``code_ms``, the latest one not after now."""
    return now_ms - ((now_ms - code_ms) % CODE_MOD)


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


# --- audio -------------------------------------------------------------------------------------

CLICK_HZ = 1000.0
CLICK_MS = 30
CLICK_AMPLITUDE = 16000


def click(rate: int, ms: int = CLICK_MS) -> npt.NDArray[np.int16]:
    """A tone burst of ``ms`` at :data:`CLICK_HZ` (int16 mono)."""
    t = np.arange(rate * ms // 1000) / rate
    return (CLICK_AMPLITUDE * np.sin(2 * np.pi * CLICK_HZ * t)).astype(np.int16)


class OnsetDetector:
    """Onsets of clicks in a stream of mono int16 blocks.

    An onset is the first sample above ``threshold`` after at least ``quiet_s``
    of samples below it; its time is the time the block holding it was read
    (what "delivered to the application" means for a pulled sink).
    """

    def __init__(self, rate: int, threshold: int = 4000, quiet_s: float = 0.3) -> None:
        self.rate = rate
        self.threshold = threshold
        self.quiet_samples = int(quiet_s * rate)
        self._quiet = self.quiet_samples
        self.onsets: list[float] = []

    def feed(self, samples: npt.NDArray[Any], read_time: float) -> None:
        mono = np.abs(np.asarray(samples, np.int32).reshape(len(samples), -1)[:, 0])
        loud = np.flatnonzero(mono > self.threshold)
        if len(loud) == 0:
            self._quiet += len(mono)
            return
        if self._quiet + int(loud[0]) >= self.quiet_samples:
            self.onsets.append(read_time)
        self._quiet = len(mono) - 1 - int(loud[-1])


def match_latencies(
    sent: Sequence[float], received: Sequence[float], window: float = 0.8
) -> list[float]:
    """For each received onset, its delay after the latest click sent before it (within window)."""
    ordered = sorted(sent)
    out: list[float] = []
    for t in received:
        before = [s for s in ordered if s <= t]
        if before and t - before[-1] <= window:
            out.append(t - before[-1])
    return out


# --- measurement -------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident memory of this process (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``; None elsewhere
    or once it exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The fields after the command name, which is in parentheses and may hold spaces.
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steal_seconds() -> float | None:
    """CPU time the hypervisor gave to others while this machine's vCPUs wanted to
    run ("steal", summed over all CPUs) since boot (Linux ``/proc/stat``; None
    elsewhere). On a VM whose host is busy it grows, and every process here runs
    slower for it, the clients, the dev server and the sender alike."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    # "cpu user nice system idle iowait irq softirq steal ...": steal is the 8th value
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


class CpuTrace:
    """``(time.monotonic(), CPU seconds)`` samples of a CPU-time counter (another
    process's CPU, :meth:`of_process`; the machine's steal, :func:`steal_seconds`),
    so that its rate over a worker's measurement window can be read afterwards."""

    def __init__(self, read: Callable[[], float | None]) -> None:
        self.read = read
        self.samples: list[tuple[float, float]] = []

    @classmethod
    def of_process(cls, pid: int) -> CpuTrace:
        """The CPU time of process ``pid`` (the dev server)."""
        return cls(functools.partial(process_cpu_seconds, pid))

    def sample(self) -> None:
        cpu = self.read()
        if cpu is not None:
            self.samples.append((time.monotonic(), cpu))

    def percent(self, start: float, end: float) -> float | None:
        """CPU % (100 = one core) between the samples nearest ``start`` and ``end``;
        None without two distinct samples in the window."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] <= 0:
            return None
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return 100.0 * (c1 - c0) / (t1 - t0)


#: The workers' result key for :meth:`CpuWindow.by_thread` (``bench/report.py`` reads it).
THREAD_CPU = "thread_cpu_pct"


class CpuWindow:
    """Process CPU (all threads) over wall time: 100 % = one core busy; and, with
    :meth:`by_thread`, the same split by thread (where the two clients differ)."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.threads0 = thread_run_seconds()
        self.wall0 = time.monotonic()
        self.cpu0 = time.process_time()

    def elapsed(self) -> float:
        return time.monotonic() - self.wall0

    def percent(self) -> float:
        wall = max(time.monotonic() - self.wall0, 1e-9)
        return 100.0 * (time.process_time() - self.cpu0) / wall

    def by_thread(self) -> dict[str, float]:
        """CPU % of the window per thread label (:func:`thread_label`; threads of one
        label summed, their count appended as ``×N``); empty where ``/proc`` is not there.
        A thread that ended during the window is left out."""
        wall = max(time.monotonic() - self.wall0, 1e-9)
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        for tid, (label, seconds) in thread_run_seconds().items():
            before = self.threads0.get(tid)
            # a thread started during the window ran only inside it
            ran = seconds - (before[1] if before is not None else 0.0)
            totals[label] = totals.get(label, 0.0) + ran
            counts[label] = counts.get(label, 0) + 1
        return {
            (label if counts[label] == 1 else f"{label}×{counts[label]}"): 100.0 * ran / wall
            for label, ran in sorted(totals.items(), key=lambda item: -item[1])
        }


#: A trailing thread number after a separator: ``sora-codec_3``, ``Thread 0x0x5591``,
#: ``ThreadPoolExecutor-0_1`` (twice); hex digits only with a digit among them.
_THREAD_NUMBER = re.compile(r"[ _-]+(?:0x)*(?=[0-9a-fA-F]*[0-9])[0-9a-fA-F]+$")


def thread_label(name: str) -> str:
    """A thread's name without its numbers, so that a pool's threads share a label."""
    while True:
        shorter = _THREAD_NUMBER.sub("", name)
        if shorter == name or not shorter:
            return name
        name = shorter


def thread_run_seconds() -> dict[int, tuple[str, float]]:
    """Thread id -> (label, seconds on a CPU so far) for this process's threads, from
    ``/proc/self/task/*/schedstat`` (nanoseconds; finer than ``stat``'s 10 ms ticks).
    Python threads are named by ``threading``, others by the kernel (``comm``: libwebrtc's
    ``EncoderQueue``, FFmpeg's ``dav1d-worker``)."""
    python_names = {t.native_id: t.name for t in threading.enumerate() if t.native_id}
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for entry in tids:
        tid = int(entry)
        try:
            with open(f"/proc/self/task/{entry}/schedstat") as f:
                run_ns = int(f.read().split()[0])
            name = python_names.get(tid)
            if name is None:
                with open(f"/proc/self/task/{entry}/comm") as f:
                    name = f.read().strip()
        except (OSError, ValueError, IndexError):  # the thread ended meanwhile
            continue
        out[tid] = (thread_label(name), run_ns / 1e9)
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1, linear interpolation), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# --- stats -------------------------------------------------------------------------------------

# libwebrtc's ToJson() may write a bare -inf/nan (official-client-notes.md).
_NONFINITE = re.compile(r'"(?:[^"\\]|\\.)*"|-?\b(?:inf|nan)\b', re.IGNORECASE)


def parse_stats(text: str) -> list[dict[str, Any]]:
    """``get_stats()`` JSON (a list of dicts) parsed leniently: bare inf/nan become null."""

    def repl(m: re.Match[str]) -> str:
        token = m.group(0)
        return token if token.startswith('"') else "null"

    value = json.loads(_NONFINITE.sub(repl, text))
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def outbound_video(stats: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The (first) video ``outbound-rtp`` entry, or {}."""
    for entry in stats:
        if entry.get("type") == "outbound-rtp" and entry.get("kind") == "video":
            return entry
    return {}


#: A video ``inbound-rtp`` entry's counters that say why frames a connection received
#: did not reach its consumer, and the per-connection rates they become.
RECEIVE_COUNTERS = {
    "framesReceived": "received_fps",
    "framesDecoded": "decoded_fps",
    "framesDropped": "dropped_fps",
    "pliCount": "pli_per_s",
    "keyFramesDecoded": "keyframes_per_s",
}


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or a float, not a bool (JSON's numbers; True is an int to Python)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def inbound_video_totals(reports: Iterable[Iterable[dict[str, Any]]]) -> dict[str, float]:
    """:data:`RECEIVE_COUNTERS` summed over every video ``inbound-rtp`` entry of every
    connection's ``get_stats()``; a counter an entry lacks counts 0."""
    totals = dict.fromkeys(RECEIVE_COUNTERS, 0.0)
    for stats in reports:
        for entry in stats:
            if entry.get("type") != "inbound-rtp" or entry.get("kind") != "video":
                continue
            for key in RECEIVE_COUNTERS:
                value = entry.get(key)
                if is_number(value):
                    totals[key] += value
    return totals


def receive_rates(
    before: dict[str, float] | None,
    after: dict[str, float] | None,
    seconds: float,
    connections: int,
) -> dict[str, float | None]:
    """Per connection and second between two :func:`inbound_video_totals` (None where a
    snapshot is missing): frames received (assembled from RTP), decoded and dropped, PLIs
    sent, key frames decoded."""
    if before is None or after is None or seconds <= 0 or connections <= 0:
        return dict.fromkeys(RECEIVE_COUNTERS.values())
    return {
        name: (after[key] - before[key]) / seconds / connections
        for key, name in RECEIVE_COUNTERS.items()
    }


def rate_between(
    before: dict[str, Any], after: dict[str, Any], key: str, seconds: float
) -> float | None:
    """(after[key] - before[key]) / seconds, None where missing."""
    a, b = after.get(key), before.get(key)
    if not isinstance(a, int | float) or not isinstance(b, int | float) or seconds <= 0:
        return None
    return (float(a) - float(b)) / seconds


def send_result(
    before: dict[str, Any], after: dict[str, Any], cpu: float, seconds: float
) -> dict[str, Any]:
    """Sender metrics from two ``outbound-rtp`` snapshots ``seconds`` apart (either client)."""
    kbps = rate_between(before, after, "bytesSent", seconds)
    return {
        "cpu_pct": cpu,
        "fps": rate_between(before, after, "framesEncoded", seconds),
        "kbps": kbps * 8 / 1000 if kbps is not None else None,
        "width": after.get("frameWidth"),
        "height": after.get("frameHeight"),
        "encoder": after.get("encoderImplementation"),
        "seconds": seconds,
        # MAINTAIN_RESOLUTION lowers the frame rate on "cpu" or "bandwidth": a client
        # that sent fewer frames says here why
        "quality_limitation": after.get("qualityLimitationReason"),
        "quality_limitation_s": after.get("qualityLimitationDurations"),
    }


# --- worker plumbing ---------------------------------------------------------------------------


class Emitter:
    """Thread-safe JSON-lines writer on stdout (``event`` plus fields); never raises."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        record = {"event": event, "t": time.monotonic(), **fields}
        line = json.dumps(_finite(record), separators=(",", ":"), default=repr)
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def read_config(argv: Sequence[str]) -> dict[str, Any]:
    """The worker's config: a JSON object in ``argv[1]``."""
    if len(argv) < 2:
        raise SystemExit(f"usage: {argv[0]} '<config JSON>'")
    config = json.loads(argv[1])
    if not isinstance(config, dict):
        raise SystemExit("config must be a JSON object")
    return config


def hard_exit_after(seconds: float, emit: Emitter) -> None:
    """Kill this process after ``seconds`` whatever it is doing (a hung client never lingers)."""

    def body() -> None:
        time.sleep(seconds)
        emit("error", where="watchdog", message=f"worker exceeded {seconds:.0f} s")
        os._exit(70)

    threading.Thread(target=body, name="watchdog", daemon=True).start()


def message_payload(size: int, phase: int, seq: int, sent: float) -> bytes:
    """A ``#bench`` message: phase, sequence number and send time, padded to ``size``."""
    header = b"BM" + phase.to_bytes(1, "big") + b"\0" + seq.to_bytes(4, "big")
    header += np.float64(sent).tobytes()
    return header + bytes(max(0, size - len(header)))


def parse_payload(data: bytes) -> tuple[int, int, float] | None:
    """``(phase, seq, sent)`` of a :func:`message_payload`, None for anything else."""
    if len(data) < 16 or data[:2] != b"BM":
        return None
    sent = float(np.frombuffer(data[8:16], np.float64)[0])
    return data[2], int.from_bytes(data[4:8], "big"), sent


def summarize_messages(
    received: Sequence[tuple[int, int, float, float, int]],
) -> dict[str, Any]:
    """Latency (phase 0) and throughput (phase 1) of ``(phase, seq, sent, recv, size)`` records."""
    latency = [(r - s) * 1000 for p, _q, s, r, _n in received if p == 0]
    burst = [(s, r, n) for p, _q, s, r, n in received if p == 1]
    out: dict[str, Any] = {
        "latency_count": len(latency),
        "p50_ms": percentile(latency, 0.5),
        "p99_ms": percentile(latency, 0.99),
        "burst_count": len(burst),
    }
    if len(burst) >= 2:
        start = min(s for s, _r, _n in burst)
        end = max(r for _s, r, _n in burst)
        seconds = max(end - start, 1e-6)
        out["msgs_per_s"] = len(burst) / seconds
        out["mb_per_s"] = sum(n for _s, _r, n in burst) / seconds / 1e6
    return out
