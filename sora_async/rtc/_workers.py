"""Shared helpers of the engine: the codec thread pool, ids, RTP arithmetic, mailboxes."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import queue
import random
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

_T = TypeVar("_T")

logger = logging.getLogger("sora_async.rtc")

#: ``done(ok, result_or_exception)``: how :meth:`CodecJobs.start` reports a job's end.
Completion = Callable[[bool, Any], None]


def _codec_threads(cpu_count: int | None, override: str | None) -> int:
    """Codec threads for a machine with ``cpu_count`` cores, or ``override``
    (``SORA_ASYNC_CODEC_THREADS``) when set to a positive number."""
    if override:
        try:
            return max(1, int(override))
        except ValueError:
            logger.warning("SORA_ASYNC_CODEC_THREADS=%r is not a number", override)
    return min(16, max(4, 2 * (cpu_count or 2)))


#: Codec threads in the process: enough to keep every core busy with codec work
#: while the event loop runs, bounded however many connections exist.
#: ``SORA_ASYNC_CODEC_THREADS`` overrides it. Fewer threads than this lost on a
#: 2-core machine (scale, N=50, interleaved: slowest connection 11.3/8.4/19.7 fps
#: with 2 threads against 19.5/17.3/16.2 with 4; 8 threads no better than 4): the
#: loop thread's waits there are for a core, not the GIL (py-spy --gil), and decode
#: throughput is what the frame rate needs.
MAX_CODEC_THREADS = _codec_threads(os.cpu_count(), os.environ.get("SORA_ASYNC_CODEC_THREADS"))

#: How long teardown waits for a codec job still running (one frame: milliseconds).
DRAIN_LIMIT = 5.0


class _Completions:
    """Results of codec jobs going back to one event loop, in batches.

    ``asyncio.wrap_future`` costs a ``call_soon_threadsafe`` (a self-pipe write
    and an event-loop wake-up) per job. Here a worker appends its result and
    wakes the loop only when no wake-up is pending yet, so when many
    receivers decode at once the loop picks up all finished jobs in one go.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)
        self._items: collections.deque[tuple[Completion, CodecJobs, bool, Any]] = (
            collections.deque()
        )
        self._scheduled = False

    def post(self, done: Completion, jobs: CodecJobs, ok: bool, value: Any) -> None:
        """Called on a worker thread when a job ended."""
        self._items.append((done, jobs, ok, value))
        if not self._scheduled:
            self._scheduled = True
            loop = self._loop()
            if loop is None:
                return
            try:
                loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # the loop is closed: nobody waits any more
                self._items.clear()

    def _deliver(self) -> None:
        # Reset first: a job ending from now on schedules another delivery.
        self._scheduled = False
        items = self._items
        while items:
            done, jobs, ok, value = items.popleft()
            jobs._ended()
            try:
                done(ok, value)
            except Exception:
                logger.exception("a codec job's completion failed")


def settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    """A :data:`Completion` that hands a job's result or exception to ``future``
    (bind it with ``functools.partial``); nothing when its waiter was cancelled."""
    if future.done():
        return
    if ok:
        future.set_result(value)
    elif isinstance(value, StopIteration):  # futures refuse it
        future.set_exception(RuntimeError(repr(value)))
    else:
        future.set_exception(value)


_completions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Completions] = (
    weakref.WeakKeyDictionary()
)
_completions_lock = threading.Lock()


def _completions_for(loop: asyncio.AbstractEventLoop) -> _Completions:
    with _completions_lock:
        completions = _completions.get(loop)
        if completions is None:
            completions = _completions[loop] = _Completions(loop)
        return completions


class CodecPool:
    """The bounded thread pool every encoder and decoder runs on.

    PyAV releases the GIL inside FFmpeg (``aiortc-notes.md`` A.7), so codec
    work runs in parallel with the event loop. One pool for the process keeps
    the thread count bounded however many connections, layers and receivers
    exist (threads are started lazily, when no thread is idle, and reused).
    Each sender layer and each receiver keeps at most one job in it at a time,
    which also keeps their frames in order.

    Lighter than ``concurrent.futures.ThreadPoolExecutor`` on the hot path (no
    ``concurrent.futures.Future``, no per-job loop wake-up, see
    :class:`_Completions`): a job is a tuple on a ``SimpleQueue``.
    """

    def __init__(self, max_workers: int = MAX_CODEC_THREADS) -> None:
        self.max_workers = max(1, max_workers)
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def threads(self) -> int:
        """Worker threads started so far."""
        return len(self._threads)

    def submit(
        self,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        done: Completion,
        jobs: CodecJobs,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Run ``function(*args)`` on a worker; ``done(ok, result_or_exception)`` is
        then called on ``loop``."""
        self._queue.put((function, args, done, jobs, _completions_for(loop)))
        if self._idle.acquire(blocking=False):
            return  # an idle worker takes it
        with self._lock:
            if len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"sora-codec_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _work(self) -> None:
        get = self._queue.get
        while True:
            function, args, done, jobs, completions = get()
            ok = True
            try:
                result = function(*args)
            except BaseException as exc:
                ok, result = False, exc
            # Drop references before sleeping (frames are large).
            function = args = None
            # Idle before the result is posted: the job the loop submits on seeing it
            # then goes to this thread, instead of starting (and alternating with)
            # another one while this one is still on its way back to ``get``.
            self._idle.release()
            completions.post(done, jobs, ok, result)
            done = jobs = completions = result = None


_pool: CodecPool | None = None
_pool_lock = threading.Lock()


def codec_pool() -> CodecPool:
    """The process's :class:`CodecPool` (created on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = CodecPool()
        return _pool


class CodecJobs:
    """The codec-pool jobs of one sender layer or receiver, so that teardown can
    wait for the one still running before closing the codec under it (FFmpeg
    contexts must not be used from two threads at once).

    ``inline=True`` runs each job right away on the calling (event-loop)
    thread instead: for work cheaper than the hand-off itself. A round trip
    through a pool costs about 100-180 µs of CPU when its thread sleeps
    between jobs (a futex wake, the GIL hand-over and a loop wake-up),
    measured on this project's machines; an Opus decode of 20 ms costs ~60 µs.
    """

    def __init__(self, *, inline: bool = False) -> None:
        self.inline = inline
        self._running = 0
        self._idle_waiters: list[asyncio.Future[None]] = []

    async def run(self, function: Callable[..., _T], *args: object) -> _T:
        """``function(*args)`` on the codec pool (or inline); its result."""
        if self.inline:
            return function(*args)
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self.start(functools.partial(settle, future), function, *args)
        return await future

    def start(self, done: Completion, function: Callable[..., Any], *args: object) -> None:
        """:meth:`run` without a coroutine: ``function(*args)`` on the codec pool, then
        ``done(True, result)`` or ``done(False, exception)`` on the event loop (inline:
        at once). For a per-frame pipeline this saves the two task steps (the wake-up
        of a waiting task, and its resumption) that awaiting :meth:`run` costs."""
        if self.inline:
            try:
                result = function(*args)
            except Exception as exc:
                done(False, exc)
            else:
                done(True, result)
            return
        loop = asyncio.get_running_loop()
        self._running += 1
        try:
            codec_pool().submit(function, args, done, self, loop)
        except BaseException:
            self._running -= 1
            raise

    def _ended(self) -> None:
        """A job of ours ended (on the loop)."""
        self._running -= 1
        if self._running <= 0:
            self._running = 0
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def drain(self) -> None:
        """Wait (at most :data:`DRAIN_LIMIT` s) until no job of ours runs on the pool."""
        if self._running <= 0:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        await asyncio.wait([waiter], timeout=DRAIN_LIMIT)


def random_ssrc(taken: set[int]) -> int:
    """A random non-zero SSRC not in ``taken`` (which it is added to)."""
    while True:
        ssrc = random.randint(1, 0xFFFFFFFF)
        if ssrc not in taken:
            taken.add(ssrc)
            return ssrc


def seq_newer(a: int, b: int) -> bool:
    """True if 16-bit sequence number ``a`` comes after ``b`` (RFC 3550 A.1)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000


class Mailbox(Generic[_T]):
    """A bounded queue between a producer that must never wait and one consumer.

    When full, the oldest item is dropped (``dropped`` counts them): with
    ``capacity=1`` the newest item wins, which is what a video encoder or a
    video consumer that falls behind wants; audio uses a few hundred ms.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._items: collections.deque[_T] = collections.deque()
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def put(self, item: _T) -> None:
        if self._closed:
            return
        if len(self._items) >= self.capacity:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    def clear(self) -> int:
        """Drop everything queued; returns how many items were dropped."""
        count = len(self._items)
        self._items.clear()
        self._ready.clear()
        return count

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake the consumer; :meth:`get` raises ``EOFError`` once drained."""
        self._closed = True
        self._ready.set()

    async def get(self) -> _T:
        """The oldest item; raises ``EOFError`` after :meth:`close` once empty."""
        while not self._items:
            if self._closed:
                raise EOFError
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if not self._items and not self._closed:
            self._ready.clear()
        return item

    def get_nowait(self) -> _T | None:
        return self._items.popleft() if self._items else None
