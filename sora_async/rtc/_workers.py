"""Shared helpers of the engine: the codec thread pool, ids, RTP arithmetic, mailboxes."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import os
import random
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

_T = TypeVar("_T")

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def codec_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The bounded thread pool every encoder and decoder runs on.

    PyAV releases the GIL inside FFmpeg (``aiortc-notes.md`` A.7), so codec
    work runs in parallel with the event loop. One pool for the process keeps
    the thread count bounded however many connections, layers and receivers
    exist (threads are started lazily and reused). Each sender layer and each
    receiver keeps at most one job in it at a time, which also keeps their
    frames in order.
    """
    global _pool
    with _pool_lock:
        if _pool is None:
            workers = min(16, max(4, 2 * (os.cpu_count() or 2)))
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="sora-codec"
            )
        return _pool


#: How long teardown waits for a codec job still running (one frame: milliseconds).
DRAIN_LIMIT = 5.0


class CodecJobs:
    """The codec-pool jobs of one sender layer or receiver, so that teardown can
    wait for the one still running before closing the codec under it (FFmpeg
    contexts must not be used from two threads at once)."""

    def __init__(self) -> None:
        self._running: concurrent.futures.Future[object] | None = None

    async def run(self, function: Callable[..., _T], *args: object) -> _T:
        job = codec_executor().submit(function, *args)
        self._running = job  # type: ignore[assignment]
        return await asyncio.wrap_future(job)

    async def drain(self) -> None:
        """Wait (at most :data:`DRAIN_LIMIT` s) until no job of ours runs on the pool."""
        job = self._running
        if job is not None and not job.done():
            await asyncio.wait([asyncio.wrap_future(job)], timeout=DRAIN_LIMIT)


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
