"""Results to a Markdown table: medians per client, the ratio, the PyAV floor, the targets.

A *measurement* is one worker run: ``{"scenario", "case", "client", "rep",
"metrics": {name: value}}`` (what ``bench/run.py --json`` saves). :func:`rows`
takes the median of every metric per (scenario, case, client) and
:func:`markdown` prints them with ``sora_async / sora_sdk`` and, where a
scenario has one, the raw PyAV cost floor. The clients alternate, so each
repetition is a pair run back to back: :func:`paired_ratios` gives the ratio of
every pair, whose range shows how far one run's ratio can move on this machine.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import itertools
import os
import platform
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench import support, wakeups

SDK, ASYNC, PYAV = "sora_sdk", "sora_async", "pyav"
#: sora_async on uvloop (``run.py --loop uvloop`` or ``both``).
ASYNC_UVLOOP = "sora_async+uvloop"
#: The sora_async clients, each compared with sora_sdk in a table of its own.
OURS = (ASYNC, ASYNC_UVLOOP)


@dataclass(frozen=True)
class Metric:
    """One row kind: the metric key in the workers' results and how to show and judge it."""

    key: str
    label: str
    fmt: str = "{:.1f}"
    #: ``"ratio<=X"``: sora_async / sora_sdk at most X; ``"ratio>=X"``; ``"abs<=X"``:
    #: sora_async's value at most X; ``"delta<=X"``: at most sora_sdk's + X; "" none.
    target: str = ""
    #: Metric of the PyAV floor measurement (same case) to compare sora_async with.
    floor: str = ""


#: The machine's steal over the measurement window (``run.DevServerProcess.window``):
#: where it is high, the host took CPU from every process of the run.
STEAL = Metric("steal_pct", "host steal % (same window; 100 = a core)")

#: The rows of each scenario, in order.
METRICS: dict[str, tuple[Metric, ...]] = {
    "sendonly": (
        Metric("cpu_pct", "CPU %", target="ratio<=1.0"),
        Metric("cpu_ms_per_frame", "CPU ms per frame sent", "{:.2f}", floor="enc_ms"),
        Metric("fps", "fps sent"),
        Metric("kbps", "kbit/s sent", "{:.0f}"),
        STEAL,
    ),
    "recvonly": (
        Metric("cpu_pct", "CPU %", target="ratio<=1.0"),
        Metric("cpu_ms_per_frame", "CPU ms per frame delivered", "{:.2f}", floor="dec_ms"),
        Metric("fps", "fps delivered (BGR)"),
        Metric("latency_p50_ms", "capture→delivery p50 ms", target="delta<=20"),
        Metric("latency_p90_ms", "capture→delivery p90 ms"),
        Metric("devserver_cpu_pct", "dev server CPU % (same window)"),
        STEAL,
    ),
    "audio": (
        Metric("cpu_pct", "CPU % (per process)", target="ratio<=1.0"),
        Metric("m2e_p50_ms", "mouth-to-ear p50 ms"),
        Metric("m2e_p90_ms", "mouth-to-ear p90 ms"),
        STEAL,
    ),
    "connect": (
        Metric("connect_p50_ms", "connect p50 ms", "{:.0f}", target="ratio<=1.0"),
        Metric("disconnect_p50_ms", "disconnect p50 ms", "{:.0f}", target="ratio<=1.0"),
    ),
    "messaging": (
        Metric("msgs_per_s", "messages/s", "{:.0f}", target="ratio>=1.0"),
        Metric("mb_per_s", "MB/s", "{:.2f}", target="ratio>=1.0"),
        Metric("p50_ms", "one-way p50 ms", "{:.2f}", target="abs<=5"),
        Metric("p99_ms", "one-way p99 ms", "{:.2f}"),
    ),
    "scale": (
        Metric("cpu_pct", "CPU %"),
        Metric("rss_mb", "RSS MB", "{:.0f}"),
        Metric("min_fps", "slowest connection fps"),
        Metric("ok", "connections ≥ 25 fps", "{:.0f}"),
        Metric("received_fps", "frames received per s (per connection)"),
        Metric("decoded_fps", "frames decoded per s (per connection)"),
        Metric("dropped_fps", "frames dropped per s (per connection)", "{:.2f}"),
        Metric("pli_per_s", "PLIs sent per s (per connection)", "{:.2f}"),
        Metric("keyframes_per_s", "key frames decoded per s (per connection)", "{:.2f}"),
        Metric("devserver_cpu_pct", "dev server CPU % (same window)"),
        STEAL,
    ),
    "raw": (
        Metric("enc_cpu_pct", "encode CPU % at 30 fps"),
        Metric("dec_cpu_pct", "decode+BGR CPU % at 30 fps"),
        Metric("enc_ms", "encode ms/frame", "{:.2f}"),
        Metric("dec_ms", "decode+BGR ms/frame", "{:.2f}"),
        Metric("kbps", "kbit/s", "{:.0f}"),
    ),
}

#: Overhead of sora_async above the PyAV floor that the targets allow.
FLOOR_OVERHEAD_TARGET = 0.25


def median(values: Iterable[float | None]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, int | float)]
    return statistics.median(numbers) if numbers else None


def derived(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The worker's metrics plus CPU time per frame (CPU % alone hides a lower frame rate)."""
    out = dict(metrics)
    cpu, fps = metrics.get("cpu_pct"), metrics.get("fps")
    if isinstance(cpu, int | float) and isinstance(fps, int | float) and fps > 0:
        out["cpu_ms_per_frame"] = 10 * cpu / fps  # (cpu / 100) s per s * 1000 / fps
    return out


def medians(measurements: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str, str], float]:
    """(scenario, case, client, metric) -> median over repetitions."""
    grouped: dict[tuple[str, str, str, str], list[float | None]] = {}
    for m in measurements:
        for name, value in derived(m.get("metrics", {})).items():
            key = (m["scenario"], m["case"], m["client"], name)
            grouped.setdefault(key, []).append(value)
    out: dict[tuple[str, str, str, str], float] = {}
    for key, values in grouped.items():
        med = median(values)
        if med is not None:
            out[key] = med
    return out


def paired_ratios(
    measurements: Sequence[Mapping[str, Any]], ours: str = ASYNC, base: str = SDK
) -> dict[tuple[str, str, str], list[float]]:
    """(scenario, case, metric) -> ``ours`` / ``base`` (sora_async / sora_sdk) of each
    repetition that has a value from both clients, in repetition order."""
    pairs: dict[tuple[str, str, str], dict[int, dict[str, float]]] = {}
    for m in measurements:
        client, rep = m.get("client"), m.get("rep")
        if client not in (base, ours) or isinstance(rep, bool) or not isinstance(rep, int):
            continue
        for name, value in derived(m.get("metrics", {})).items():
            if support.is_number(value):
                by_rep = pairs.setdefault((m["scenario"], m["case"], name), {})
                by_rep.setdefault(rep, {})[client] = float(value)
    out: dict[tuple[str, str, str], list[float]] = {}
    for key, by_rep in pairs.items():
        ratios = [
            pair[ours] / pair[base]
            for _rep, pair in sorted(by_rep.items())
            if pair.get(base) and ours in pair
        ]
        if ratios:
            out[key] = ratios
    return out


def ratio_range(ratios: Sequence[float] | None) -> str:
    """``"0.97–1.12x"``: the lowest and highest paired ratio; "" for fewer than two."""
    if not ratios or len(ratios) < 2:
        return ""
    return f"{min(ratios):.2f}–{max(ratios):.2f}x"


def judge(metric: Metric, sdk: float | None, ours: float | None) -> str:
    """ "ok"/"miss" against the metric's target, "" when there is none or no data."""
    if not metric.target or ours is None:
        return ""
    kind, _, limit_text = metric.target.partition("<=")
    op = "<="
    if not limit_text:
        kind, _, limit_text = metric.target.partition(">=")
        op = ">="
    limit = float(limit_text)
    if kind == "abs":
        value = ours
    elif sdk is None:
        return ""
    elif kind == "delta":
        value = ours - sdk
    else:
        if sdk == 0:
            return ""
        value = ours / sdk
    passed = value <= limit if op == "<=" else value >= limit
    return "ok" if passed else "miss"


def target_text(metric: Metric) -> str:
    if not metric.target:
        return ""
    kind, sep, limit = metric.target.partition("<=")
    op = "≤" if sep else "≥"
    if not sep:
        kind, _, limit = metric.target.partition(">=")
    if kind == "ratio":
        return f"ratio {op} {limit}x"
    if kind == "delta":
        return f"{op} official + {limit}"
    return f"{op} {limit}"


def _fmt(metric: Metric, value: float | None) -> str:
    return "–" if value is None else metric.fmt.format(value)


def rows(
    measurements: Sequence[Mapping[str, Any]], ours: str = ASYNC, *, raw: bool = True
) -> list[list[str]]:
    """Table rows, one per (scenario, case, metric), in the columns of :func:`header`:
    sora_sdk against ``ours`` (one of :data:`OURS`); the PyAV floor's own rows (the
    ``raw`` scenario) too, unless ``raw`` is False."""
    table = medians(measurements)
    paired = paired_ratios(measurements, ours)
    cases = _cases(measurements)
    out: list[list[str]] = []
    for scenario, metrics in METRICS.items():
        for case in cases.get(scenario, []):
            for metric in metrics:
                if scenario == "raw":
                    if not raw:
                        continue
                    value = table.get((scenario, case, PYAV, metric.key))
                    if value is None:
                        continue
                    out.append([scenario, case, metric.label, "", "", "", "", _fmt(metric, value)])
                    out[-1] += ["", ""]
                    continue
                sdk = table.get((scenario, case, SDK, metric.key))
                value = table.get((scenario, case, ours, metric.key))
                if sdk is None and value is None:
                    continue
                ratio = f"{value / sdk:.2f}x" if sdk and value is not None else "–"
                floor_text = over = ""
                if metric.floor:
                    floor = table.get(("raw", case, PYAV, metric.floor))
                    if floor is not None:
                        floor_text = _fmt(metric, floor)
                        if value is not None and floor > 0:
                            overhead = value / floor - 1
                            verdict = "ok" if overhead <= FLOOR_OVERHEAD_TARGET else "miss"
                            over = f"{round(100 * overhead):+d} % ({verdict})"
                verdict = judge(metric, sdk, value)
                target = target_text(metric) + (f" ({verdict})" if verdict else "")
                out.append(
                    [
                        scenario,
                        case,
                        metric.label,
                        _fmt(metric, sdk),
                        _fmt(metric, value),
                        ratio,
                        ratio_range(paired.get((scenario, case, metric.key))),
                        floor_text,
                        over,
                        target,
                    ]
                )
    return out


def header(ours: str = ASYNC) -> list[str]:
    """The columns of :func:`rows`, ``ours`` named as the client it is."""
    return [
        "scenario",
        "case",
        "metric",
        "sora_sdk",
        ours,
        "async/sdk",
        "async/sdk by repetition",
        "PyAV floor",
        "async over floor",
        "target",
    ]


def loop_rows(measurements: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """sora_async on uvloop against sora_async on asyncio (``--loop both``), one row per
    (scenario, case, metric with a target: the rows the loop could turn around): both
    medians, their ratio, and the range of the ratio of the two runs of each repetition."""
    table = medians(measurements)
    paired = paired_ratios(measurements, ASYNC_UVLOOP, ASYNC)
    cases = _cases(measurements)
    out: list[list[str]] = []
    for scenario, metrics in METRICS.items():
        for case, metric in itertools.product(cases.get(scenario, []), metrics):
            if not metric.target:
                continue
            base = table.get((scenario, case, ASYNC, metric.key))
            value = table.get((scenario, case, ASYNC_UVLOOP, metric.key))
            if base is None or value is None:
                continue
            out.append(
                [
                    scenario,
                    case,
                    metric.label,
                    _fmt(metric, base),
                    _fmt(metric, value),
                    f"{value / base:.2f}x" if base else "–",
                    ratio_range(paired.get((scenario, case, metric.key))),
                ]
            )
    return out


LOOP_HEADER = [
    "scenario",
    "case",
    "metric",
    ASYNC,
    ASYNC_UVLOOP,
    "uvloop/asyncio",
    "uvloop/asyncio by repetition",
]


def _cases(measurements: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """scenario -> its cases, in the order the measurements first name them."""
    cases: dict[str, list[str]] = {}
    for m in measurements:
        seen = cases.setdefault(m["scenario"], [])
        if m["case"] not in seen:
            seen.append(m["case"])
    return cases


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def summary_lines(extra: Mapping[str, Any], client: str = ASYNC) -> list[str]:
    """Derived results that are not one metric per client (e.g. the largest N of scale),
    for sora_sdk against ``client`` (one of :data:`OURS`)."""
    out = []
    largest = extra.get("scale_largest_n")
    if isinstance(largest, dict) and client in largest:
        sdk, ours = largest.get(SDK), largest.get(client)
        verdict = ""
        if isinstance(sdk, int) and isinstance(ours, int):
            if sdk == 0:  # no N of this run held for the official client: nothing to compare
                verdict = " (target ≥ 2x official: not judged, no N held by sora_sdk)"
            else:
                verdict = " (target ≥ 2x official: " + ("ok" if ours >= 2 * sdk else "miss") + ")"
        out.append(
            f"- scale: largest N with every connection ≥ 25 fps: sora_sdk {sdk}, "
            f"{client} {ours}{verdict}"
        )
    return out


#: Threads below this CPU % (median) are left out of the by-thread table.
THREAD_CPU_SHOWN = 0.2


def thread_header(clients: Sequence[str] = (SDK, ASYNC)) -> list[str]:
    """The columns of :func:`thread_rows` for ``clients``."""
    return ["scenario", "case", *(f"{client}: CPU % by thread" for client in clients)]


def mean_threads(results: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The mean per thread label of several processes' :data:`support.THREAD_CPU` (the audio
    scenario's pair, whose CPU % is their mean too); a label one lacks counts 0 there."""
    splits = [r.get(support.THREAD_CPU) for r in results]
    usable = [split for split in splits if isinstance(split, Mapping)]
    if not usable:
        return {}
    labels = sorted({label for split in usable for label in split})
    return {label: statistics.fmean(_number(s.get(label)) for s in usable) for label in labels}


def thread_rows(
    measurements: Sequence[Mapping[str, Any]], clients: Sequence[str] = (SDK, ASYNC)
) -> list[list[str]]:
    """One row per (scenario, case): each of ``clients``' median CPU % per thread label
    over its repetitions (a label missing from a repetition counts 0 there), largest
    first."""
    runs: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    cases: list[tuple[str, str]] = []
    for m in measurements:
        threads = m.get("metrics", {}).get(support.THREAD_CPU)
        if m.get("client") not in clients or not isinstance(threads, Mapping):
            continue
        if (m["scenario"], m["case"]) not in cases:
            cases.append((m["scenario"], m["case"]))
        runs.setdefault((m["scenario"], m["case"], m["client"]), []).append(threads)
    out: list[list[str]] = []
    for scenario, case in cases:
        cells = []
        for client in clients:
            measured = runs.get((scenario, case, client), [])
            labels = {label for run in measured for label in run}
            by_label = {
                label: statistics.median(_number(run.get(label)) for run in measured)
                for label in labels
            }
            shown = sorted(
                ((v, label) for label, v in by_label.items() if v >= THREAD_CPU_SHOWN),
                key=lambda item: (-item[0], item[1]),
            )
            cells.append(", ".join(f"{label} {value:.1f}" for value, label in shown) or "–")
        out.append([scenario, case, *cells])
    return out


def _number(value: Any) -> float:
    return float(value) if support.is_number(value) else 0.0


def markdown(
    measurements: Sequence[Mapping[str, Any]],
    info: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The whole report: machine, a table per sora_async client (sora_async, and
    sora_async+uvloop where it ran) with its derived lines, the two event loops against
    each other where both ran, CPU by thread."""
    present = {m.get("client") for m in measurements}
    ours = [client for client in OURS if client in present] or [ASYNC]
    parts = ["Machine: " + machine_line(info)]
    for client in ours:
        if len(ours) > 1:
            parts += ["", f"{client} against sora_sdk ({LOOP_NAMES[client]}):"]
        # the PyAV floor's rows once, in the first table
        table = rows(measurements, client, raw=client == ours[0])
        parts += ["", markdown_table(header(client), table)]
        lines = summary_lines(extra or {}, client)
        if lines:
            parts += ["", *lines]
    if len(ours) > 1:
        parts += [
            "",
            "sora_async's two event loops against each other (the runs above; each "
            "repetition ran sora_sdk and then both, their order swapped every other one):",
            "",
            markdown_table(LOOP_HEADER, loop_rows(measurements)),
        ]
    clients = [SDK, *ours]
    by_thread = thread_rows(measurements, clients)
    if by_thread:
        parts += [
            "",
            "CPU % by thread (medians over the repetitions; threads of one name summed, ×N "
            f"their count; under {THREAD_CPU_SHOWN} % left out):",
            "",
            markdown_table(thread_header(clients), by_thread),
        ]
    return "\n".join(parts) + "\n"


#: How the tables name each sora_async client's event loop.
LOOP_NAMES = {ASYNC: "asyncio's event loop", ASYNC_UVLOOP: "uvloop"}


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, cores, Python, PyAV/FFmpeg, sora_sdk, load: what the numbers depend on."""
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "av": _version("av"),
        "sora_sdk": _version("sora_sdk"),
        "aiortc": _version("aiortc"),
        "numpy": _version("numpy"),
    }
    try:
        import av

        info["ffmpeg"] = av.ffmpeg_version_info
    except ImportError:
        info["ffmpeg"] = "?"
    try:
        # sora_async converts BGR -> I420 with the system's libyuv when it has one
        from sora_async.frames import libyuv_available

        info["libyuv"] = libyuv_available()
    except ImportError:
        pass
    try:
        info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def machine_line(info: Mapping[str, Any]) -> str:
    load = info.get("load_avg")
    return (
        f"{info.get('date')}; {info.get('cpu')}, {info.get('cores')} cores; "
        f"Python {info.get('python')}; PyAV {info.get('av')} (FFmpeg {info.get('ffmpeg')}); "
        f"aiortc {info.get('aiortc')}; sora_sdk {info.get('sora_sdk')}"
        + (f"; libyuv {'yes' if info['libyuv'] else 'no'}" if "libyuv" in info else "")
        + (f"; sora_async on {_loops(info['loop'])}" if "loop" in info else "")
        + (f"; load average at start {load}" if load else "")
        + (
            "; CPU µs per wake-up (wakeups.py): " + wakeups.line(info["wakeup_cpu_us"])
            if info.get("wakeup_cpu_us")
            else ""
        )
    )


def _loops(loop: Any) -> str:
    return "asyncio and on uvloop" if loop == "both" else str(loop)
