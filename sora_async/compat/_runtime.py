"""Threads behind the blocking, callback-style API: one event loop and one callback thread.

The official SDK runs libwebrtc's threads and calls the application back from
them. Here each :class:`~sora_async.compat.Sora` owns a :class:`Runtime`
(started lazily by the first ``connect()``, stopped once its last connection
has ended):

- an event-loop thread that runs the asyncio core (``sora_async.Connection``,
  sinks, sources' encoders);
- a callback thread that calls the application's ``on_*`` callbacks in the
  order the events happened. Callbacks never run on the event loop, so a
  callback that blocks (``disconnect()``, ``get_stats()``, a slow
  ``print``) delays later callbacks but never the media or the signaling.

An exception raised by a callback is logged with its traceback on
``sora_async.compat`` and otherwise ignored (the official SDK aborts the
process: its pending issue 0092).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

logger = logging.getLogger("sora_async.compat")

_T = TypeVar("_T")
_numbers = itertools.count(1)
#: How long stopping a loop waits for its remaining tasks to finish after cancelling them.
_STOP_GRACE_S = 2.0


def call_user(what: str, callback: Callable[..., Any], *args: Any) -> None:
    """Call an application callback; log whatever it raises (never propagate)."""
    try:
        callback(*args)
    except BaseException:  # a callback must never take a thread down
        logger.exception("exception in %s callback %r (ignored)", what, callback)


class Dispatcher:
    """A thread that runs posted calls one at a time, in order.

    ``post()`` never blocks. :meth:`pump` lets code already running on the
    dispatcher thread (a callback calling ``disconnect()``) run the calls
    queued behind it, so that it can wait for them without deadlocking.
    """

    _STOP: Any = object()

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def on_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        self._queue.put((fn, args))

    def close(self) -> None:
        """Stop after the calls already posted."""
        self._queue.put(self._STOP)

    def join(self, timeout: float | None = None) -> bool:
        if not self.on_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            self._invoke(item)

    def pump(self, done: Callable[[], bool], timeout: float) -> bool:
        """On the dispatcher thread: run queued calls until ``done()`` or ``timeout``."""
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                item = self._queue.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue
            if item is self._STOP:
                self._queue.put(item)  # let the thread's own loop see it
                return done()
            self._invoke(item)
        return True

    @staticmethod
    def _invoke(item: tuple[Callable[..., Any], tuple[Any, ...]]) -> None:
        fn, args = item
        try:
            fn(*args)
        except BaseException:
            logger.exception("exception in dispatched call %r (ignored)", fn)


class Runtime:
    """One generation of threads: an event loop and a callback dispatcher.

    Created by :class:`RuntimeManager` when the first user needs it; after
    :meth:`stop` a new generation is created for the next user.
    """

    def __init__(self) -> None:
        number = next(_numbers)
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self.stopped = threading.Event()
        self.dispatcher = Dispatcher(f"sora-compat-callbacks-{number}")
        self.thread = threading.Thread(
            target=self._run, name=f"sora-compat-loop-{number}", daemon=True
        )
        self.thread.start()
        if not self._started.wait(10):  # pragma: no cover - a starved machine
            raise RuntimeError("the compat event-loop thread did not start")

    # -- thread ----------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        try:
            self.loop.run_forever()
            self._drain()
        except BaseException:
            logger.exception("compat event loop failed")
        finally:
            with contextlib.suppress(Exception):
                self.loop.close()
            self.stopped.set()
            self.dispatcher.close()

    def _drain(self) -> None:
        loop = self.loop
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=_STOP_GRACE_S))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())

    # -- API -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return not self.stopped.is_set() and not self.loop.is_closed()

    def on_loop_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def submit(self, coroutine: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Run ``coroutine`` on the loop; raises ``RuntimeError`` once stopped."""
        if not self.running:
            coroutine.close()
            raise RuntimeError("the compat event loop is not running")
        try:
            return asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        except RuntimeError:
            coroutine.close()
            raise

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float) -> _T:
        """Run ``coroutine`` on the loop and wait for its result (from another thread).

        ``TimeoutError`` after ``timeout`` seconds (the coroutine is then
        cancelled); a ``KeyboardInterrupt`` while waiting cancels it too.
        """
        if self.on_loop_thread():
            coroutine.close()
            raise RuntimeError("blocking call from the compat event-loop thread")
        future = self.submit(coroutine)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no result within {timeout} s") from None
        except BaseException:
            future.cancel()
            raise

    def call(self, fn: Callable[[], _T], timeout: float = 10.0) -> _T:
        """Run ``fn()`` on the loop thread and return its result."""
        if self.on_loop_thread():
            return fn()

        async def body() -> _T:
            return fn()

        return self.run(body(), timeout)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Schedule ``fn(*args)`` on the loop; False (and nothing done) once stopped."""
        if not self.running:
            return False
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # closed between the check and the call
            return False
        return True

    def stop(self) -> None:
        """Stop the loop (remaining tasks are cancelled), then the dispatcher. Non-blocking."""
        self.call_soon(self.loop.stop)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until both threads ended (never from one of them); True when they did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.on_loop_thread():
            self.thread.join(timeout)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.dispatcher.join(remaining)
        return not self.thread.is_alive() and not self.dispatcher.thread.is_alive()


class RuntimeManager:
    """Reference-counted access to a :class:`Runtime`: started by the first
    :meth:`acquire`, stopped by the :meth:`release` that leaves no user."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runtime: Runtime | None = None
        self._users = 0
        self._closed = False

    @property
    def current(self) -> Runtime | None:
        """The running generation, if any."""
        runtime = self._runtime
        return runtime if runtime is not None and runtime.running else None

    def acquire(self) -> Runtime:
        with self._lock:
            if self._closed:
                raise RuntimeError("this Sora instance has been closed")
            if self._runtime is None or not self._runtime.running:
                self._runtime = Runtime()
            self._users += 1
            return self._runtime

    def release(self, runtime: Runtime) -> None:
        with self._lock:
            if runtime is not self._runtime:
                return  # an older generation: already stopped
            self._users -= 1
            if self._users > 0:
                return
            self._users = 0
            self._runtime = None
        runtime.stop()

    def close(self) -> None:
        """Stop now whatever runs (used at interpreter exit)."""
        with self._lock:
            self._closed = True
            runtime, self._runtime = self._runtime, None
            self._users = 0
        if runtime is not None:
            runtime.stop()
