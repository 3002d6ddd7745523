"""Finding out which backends really work here: open them, in a child process, once.

A backend is available when a tiny encode (one 320x240 frame) or decode (one
key frame made by the software encoder) succeeds. Failures such as
``PermissionError`` (``h264_nvenc`` without NVENC), ``ArgumentError``
(``hevc_qsv`` without QSV) or ``UnknownError`` (``h264_amf`` without AMF)
mean "unavailable" (``aiortc-notes.md`` A.1).

Probes run in a child process (``_probe_worker.py``) with a timeout, so a
driver that crashes or hangs cannot take the application down; a batch that
dies is re-run one probe at a time to isolate the culprit. Results are
cached per backend for the life of the process (:func:`clear_probe_cache`).
Backends whose FFmpeg codec or hardware device type is missing from the
PyAV build are ruled out without a child process.

Tests replace the prober (:func:`set_prober`) to exercise selection logic
without hardware.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .backends import Backend

logger = logging.getLogger("sora_async.hwaccel")

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_probe_worker.py")

#: Pixel formats hardware encoders are opened with (they reject yuv420p).
_ENCODER_PIX_FMT = {"qsv": "nv12", "amf": "nv12", "vaapi": "nv12", "videotoolbox": "nv12"}


@dataclass(frozen=True)
class ProbeResult:
    """Outcome of opening one backend."""

    ok: bool
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


#: ``prober(backends, openh264_path) -> {backend.key: ProbeResult}``.
Prober = Callable[[Sequence[Backend], str | None], dict[str, ProbeResult]]

_cache: dict[str, ProbeResult] = {}
_lock = threading.Lock()
_prober: Prober | None = None


def cache_key(backend: Backend, openh264: str | None = None) -> str:
    """Cache key; OpenH264 results depend on the library path."""
    return f"{backend.key}@{openh264}" if backend.engine == "openh264" else backend.key


def set_prober(prober: Prober | None) -> None:
    """Replace the prober (None restores the subprocess one) and clear the cache."""
    global _prober
    with _lock:
        _prober = prober
        _cache.clear()


def clear_probe_cache() -> None:
    """Forget every probe result (hardware plugged in, driver updated...)."""
    with _lock:
        _cache.clear()


def probe_backends(
    backends: Iterable[Backend],
    openh264: str | None = None,
    *,
    refresh: bool = False,
) -> dict[str, ProbeResult]:
    """Probe ``backends`` (cached); returns ``{backend.key: ProbeResult}``.

    Blocking (runs a child process): call it from a thread, e.g.
    ``await asyncio.to_thread(probe_backends, ...)``, in asyncio code.
    """
    wanted = list(dict.fromkeys(backends))
    with _lock:
        if refresh:
            for backend in wanted:
                _cache.pop(cache_key(backend, openh264), None)
        missing = [b for b in wanted if cache_key(b, openh264) not in _cache]
        prober = _prober or subprocess_prober
        if missing:
            found = prober(missing, openh264)
            for backend in missing:
                result = found.get(backend.key) or ProbeResult(False, "not probed")
                _cache[cache_key(backend, openh264)] = result
        return {b.key: _cache[cache_key(b, openh264)] for b in wanted}


def _precheck(backend: Backend, openh264: str | None) -> ProbeResult | None:
    """Rule a backend out cheaply, without a child process, when it cannot work."""
    if backend.engine == "openh264":
        if not openh264:
            return ProbeResult(False, "no libopenh264 path given (openh264=...)")
        if not os.path.exists(openh264):
            return ProbeResult(False, f"{openh264} does not exist")
        return None
    import av
    from av.codec.hwaccel import hwdevices_available

    if backend.pyav_name not in av.codecs_available:
        return ProbeResult(False, f"{backend.pyav_name} is not in this FFmpeg build")
    if backend.hwaccel and backend.hwaccel not in hwdevices_available():
        return ProbeResult(
            False, f"hardware device type {backend.hwaccel} not in this FFmpeg build"
        )
    if not backend.applies_to():
        return ProbeResult(False, f"{backend.pyav_name} does not exist on {sys.platform}")
    return None


def _spec(backend: Backend, openh264: str | None) -> dict[str, Any]:
    family = backend.pyav_name.rsplit("_", 1)[-1] if "_" in backend.pyav_name else ""
    return {
        "key": backend.key,
        "role": backend.role,
        "codec": backend.codec.name,
        "pyav_name": backend.pyav_name,
        "hwaccel": backend.hwaccel,
        "pix_fmt": _ENCODER_PIX_FMT.get(family, "yuv420p"),
        "engine": backend.engine,
        "openh264": openh264,
    }


def _run_worker(specs: list[dict[str, Any]], timeout: float) -> dict[str, ProbeResult]:
    request = json.dumps({"width": 320, "height": 240, "probes": specs})
    env = dict(os.environ)
    env.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration otherwise
    results: dict[str, ProbeResult] = {}
    try:
        completed = subprocess.run(
            [sys.executable, _WORKER],
            input=request,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        stdout, failure = (
            completed.stdout,
            (f"probe process exited with {completed.returncode}" if completed.returncode else None),
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout
        stdout = out.decode(errors="replace") if isinstance(out, bytes) else (out or "")
        failure = f"probe timed out after {timeout:.0f} s"
    except OSError as exc:
        return {s["key"]: ProbeResult(False, f"probe process failed: {exc}") for s in specs}
    for line in stdout.splitlines():
        try:
            item = json.loads(line)
            results[item["key"]] = ProbeResult(
                bool(item["ok"]), item.get("error"), item.get("detail") or {}
            )
        except (ValueError, KeyError, TypeError):
            continue
    if failure:
        for spec in specs:
            results.setdefault(spec["key"], ProbeResult(False, failure))
    return results


def subprocess_prober(
    backends: Sequence[Backend],
    openh264: str | None,
    *,
    timeout: float = 20.0,
    per_probe_timeout: float = 10.0,
) -> dict[str, ProbeResult]:
    """The default prober: one child process for the batch, one per probe after a crash."""
    results: dict[str, ProbeResult] = {}
    specs: list[dict[str, Any]] = []
    for backend in backends:
        early = _precheck(backend, openh264)
        if early is not None:
            results[backend.key] = early
        else:
            specs.append(_spec(backend, openh264))
    if not specs:
        return results
    batch = _run_worker(specs, timeout + per_probe_timeout * len(specs) / 4)
    crashed = [s for s in specs if s["key"] not in batch or _is_process_failure(batch[s["key"]])]
    results.update({k: v for k, v in batch.items() if not _is_process_failure(v)})
    for spec in crashed:
        # Isolate: whatever killed the batch shows up on its own probe.
        results.update(_run_worker([spec], per_probe_timeout))
    for backend in backends:
        if backend.key in results:
            logger.debug("probe %s: %s", backend.key, results[backend.key])
    return results


def _is_process_failure(result: ProbeResult) -> bool:
    return not result.ok and (result.error or "").startswith("probe ")
