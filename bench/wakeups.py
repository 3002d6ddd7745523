"""CPU per wake-up on this machine: the price of a thread or an event loop that
sleeps and wakes, which the light scenarios pay a few hundred times a second.

Each measurement runs in a thread of its own and reads that thread's CPU time
(``time.thread_time``: user and system, the kernel's work for the wake-up
included) over a fixed number of wake-ups on an absolute schedule:

- ``thread_sleep``: a thread that sleeps with ``time.sleep`` and wakes (the
  official client's worker pacers and pollers; libwebrtc's threads wake the same
  way, in C++);
- ``asyncio_sleep`` (and ``uvloop_sleep`` where uvloop is installed): a task on
  an otherwise idle event loop that sleeps with ``asyncio.sleep`` (a timer, the
  loop's ``epoll_wait``, the future and the task's step);
- ``handoff_loop`` and ``handoff_thread``: a thread that wakes on its schedule
  and hands a callback to an idle event loop with ``call_soon_threadsafe`` (a
  codec thread returning a frame): the loop's CPU per hand-over, and the
  thread's per wake-up including its post.

On bare metal a wake-up costs a few microseconds; on a VM whose vCPU halts
while idle, the first work after it wakes runs from cold caches, and the
interpreter touches more memory per wake-up than compiled code does. So the
numbers say how much the machine charges a Python client for every wake-up;
``run.py`` records them with each pass (``wakeup_cpu_us`` in the JSON's
machine info, and in the table's "Machine" line).

    python bench/wakeups.py                 # 2 s per measurement, 200 wake-ups/s
    python bench/wakeups.py --seconds 5 --rate 100
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

#: Wake-ups per second: the order of the audio scenario's (about 150 a second).
RATE = 200.0


def _in_thread(body: Callable[[], tuple[float, int]]) -> tuple[float, int]:
    """``body()`` on a fresh thread; its ``(cpu_seconds, wakeups)``."""
    result: list[tuple[float, int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(body())
        except BaseException as exc:  # reported on the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="wakeups", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def _sleep_and_wake(rate: float, count: int, on_wake: Callable[[], object]) -> tuple[float, int]:
    """On the calling thread: ``count`` wake-ups at ``rate`` a second from
    ``time.sleep``, ``on_wake()`` after each; the thread's CPU seconds and ``count``."""
    start_cpu = time.thread_time()
    deadline = time.monotonic()
    for _ in range(count):
        deadline += 1 / rate
        time.sleep(max(0.0, deadline - time.monotonic()))
        on_wake()
    return time.thread_time() - start_cpu, count


def thread_sleep(rate: float, count: int) -> tuple[float, int]:
    """A thread waking ``count`` times at ``rate`` a second with ``time.sleep``:
    its CPU seconds and the wake-ups it made."""
    return _in_thread(lambda: _sleep_and_wake(rate, count, lambda: None))


def loop_sleep(
    rate: float, count: int, new_loop: Callable[[], asyncio.AbstractEventLoop]
) -> tuple[float, int]:
    """A task on a new event loop (``new_loop()``) waking ``count`` times with
    ``asyncio.sleep``: the loop thread's CPU seconds and the wake-ups."""

    async def sleeper() -> tuple[float, int]:
        start_cpu = time.thread_time()
        deadline = time.monotonic()
        for _ in range(count):
            deadline += 1 / rate
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        return time.thread_time() - start_cpu, count

    def body() -> tuple[float, int]:
        loop = new_loop()
        try:
            return loop.run_until_complete(sleeper())
        finally:
            loop.close()

    return _in_thread(body)


def handoff(rate: float, count: int) -> tuple[float, float, int]:
    """A thread waking ``count`` times at ``rate`` a second, each time posting a
    callback to an idle event loop with ``call_soon_threadsafe``: the loop
    thread's CPU seconds, the posting thread's, and the callbacks the loop ran."""
    ran = 0

    def callback() -> None:
        nonlocal ran
        ran += 1

    loop = asyncio.new_event_loop()
    finished: asyncio.Future[None] = loop.create_future()
    loop_cpu: list[float] = []
    started = threading.Event()

    async def idle_until_finished() -> float:
        start_cpu = time.thread_time()
        started.set()
        await finished  # woken by nothing but the posts
        return time.thread_time() - start_cpu

    def run_loop() -> None:
        asyncio.set_event_loop(loop)
        loop_cpu.append(loop.run_until_complete(idle_until_finished()))

    loop_thread = threading.Thread(target=run_loop, name="wakeups-loop", daemon=True)
    loop_thread.start()
    try:
        if not started.wait(10):
            raise RuntimeError("wakeups: the event loop did not start")

        poster_cpu, _posted = _in_thread(
            lambda: _sleep_and_wake(rate, count, lambda: loop.call_soon_threadsafe(callback))
        )
    finally:
        # after every post: the loop runs its callbacks in the order they came
        loop.call_soon_threadsafe(finished.set_result, None)
        loop_thread.join(10)
    if loop_thread.is_alive() or not loop_cpu:
        raise RuntimeError("wakeups: the event loop did not stop")
    loop.close()
    return loop_cpu[0], poster_cpu, ran


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's ``new_event_loop`` where uvloop is installed, else None. Imported by name
    here rather than through ``sora_async.runner.loop_factory``: that would load the
    whole ``sora_async`` package (aiortc, PyAV) into ``run.py`` and ``report.py``, which
    import this module and otherwise stay on the standard library and numpy."""
    try:
        module = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = module.new_event_loop
    return factory


def measure(seconds: float = 2.0, rate: float = RATE) -> dict[str, float]:
    """Microseconds of CPU per wake-up, by kind (see the module docstring)."""
    if not seconds > 0 or not rate > 0:
        raise ValueError("wakeups: seconds and rate must be > 0")
    count = max(1, round(seconds * rate))
    result: dict[str, float] = {}
    cpu, wakeups = thread_sleep(rate, count)
    result["thread_sleep"] = cpu * 1e6 / wakeups
    cpu, wakeups = loop_sleep(rate, count, asyncio.new_event_loop)
    result["asyncio_sleep"] = cpu * 1e6 / wakeups
    factory = _uvloop_factory()
    if factory is not None:
        cpu, wakeups = loop_sleep(rate, count, factory)
        result["uvloop_sleep"] = cpu * 1e6 / wakeups
    loop_cpu, poster_cpu, ran = handoff(rate, count)
    result["handoff_loop"] = loop_cpu * 1e6 / max(ran, 1)
    result["handoff_thread"] = poster_cpu * 1e6 / count
    return {name: round(value, 1) for name, value in result.items()}


#: How the table's "Machine" line and this script's output name each kind.
LABELS = {
    "thread_sleep": "thread time.sleep",
    "asyncio_sleep": "asyncio.sleep",
    "uvloop_sleep": "uvloop asyncio.sleep",
    "handoff_loop": "call_soon_threadsafe (loop)",
    "handoff_thread": "call_soon_threadsafe (posting thread)",
}


def line(costs: dict[str, Any]) -> str:
    """``costs`` (from :func:`measure`) on one line, for the table's machine line."""
    return ", ".join(f"{LABELS.get(name, name)} {value:g}" for name, value in costs.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (2)")
    parser.add_argument("--rate", type=float, default=RATE, help=f"wake-ups per second ({RATE:g})")
    args = parser.parse_args(argv)
    costs = measure(args.seconds, args.rate)
    print("| what wakes | CPU µs per wake-up |")
    print("|---|---|")
    for name, value in costs.items():
        print(f"| {LABELS.get(name, name)} | {value:g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
