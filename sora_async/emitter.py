"""A pyee event emitter whose handlers may be coroutines and may not break anything.

The official SDK aborts the process when a callback raises (its pending issue
0092). Here a handler's exception, raised directly or from its coroutine, is
logged on ``sora_async`` and otherwise ignored, so a buggy handler never ends
a connection. Coroutine handlers run as tasks; :meth:`Emitter.wait_for_handlers`
awaits the ones still running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from pyee.asyncio import AsyncIOEventEmitter

logger = logging.getLogger("sora_async")


class Emitter(AsyncIOEventEmitter):
    """``on(event, handler)`` / ``once`` / ``remove_listener`` as in pyee.

    Example::

        conn.on("notify", print)

        @conn.on("message")
        async def on_message(label: str, data: bytes) -> None:
            await queue.put((label, data))
    """

    def _emit_run(
        self, f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        try:
            result = f(*args, **kwargs)
        except Exception:
            logger.exception("event handler %r raised; ignored", f)
            return
        if asyncio.iscoroutine(result):
            task = asyncio.ensure_future(result)
            self._waiting.add(task)
            task.add_done_callback(lambda done: self._handler_done(f, done))

    def _handler_done(self, handler: Callable[..., Any], task: asyncio.Future[Any]) -> None:
        self._waiting.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.error("event handler %r raised; ignored", handler, exc_info=exc)

    def _emit_handle_potential_error(self, event: str, error: Any) -> None:
        # pyee raises an "error" event nobody listens to; we log instead.
        if event == "error":
            logger.error("error event with no handler: %r", error)

    async def wait_for_handlers(self) -> None:
        """Wait until every coroutine handler started so far has finished."""
        while self._waiting:
            await asyncio.wait(set(self._waiting))
