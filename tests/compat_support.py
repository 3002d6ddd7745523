"""Helpers for the ``sora_async.compat`` tests: a dev server on its own thread, waiting.

The compat API blocks (``disconnect()``, ``get_stats()``, ``SoraAudioSink.read``),
so its tests are plain functions on the main thread (where Ctrl-C lands) and
the dev server runs on an event loop of its own.

Example::

    with server_thread() as server:
        conn = Sora().create_connection([server.signaling_url], "recvonly", "ch")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import aiohttp

from sora_async.devserver import DevServer

_T = TypeVar("_T")


class ServerThread:
    """A :class:`DevServer` on a background event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, server: DevServer) -> None:
        self.loop = loop
        self.server = server

    @property
    def signaling_url(self) -> str:
        return str(self.server.signaling_url)

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 15) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def api(self, target: str, body: dict[str, Any]) -> tuple[int, Any]:
        """POST to the dev server's Sora HTTP API."""

        async def post() -> tuple[int, Any]:
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    self.server.api_url, headers={"x-sora-target": target}, data=json.dumps(body)
                ) as response:
                    text = await response.text()
                    try:
                        return response.status, json.loads(text)
                    except ValueError:
                        return response.status, text

        return self.run(post())


@contextlib.contextmanager
def server_thread(**options: Any) -> Iterator[ServerThread]:
    """``DevServer(port=0, **options)`` running on its own thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="devserver", daemon=True)
    thread.start()
    server = DevServer(port=0, **options)
    handle = ServerThread(loop, server)
    try:
        handle.run(server.__aenter__())
        yield handle
    finally:
        with contextlib.suppress(Exception):
            handle.run(server.__aexit__(None, None, None))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` (every 20 ms) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


def compat_threads(prefix: str = "sora-compat-") -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


def wait_threads_gone(timeout: float = 10, prefix: str = "sora-compat-") -> None:
    """Every compat thread ended (the runtime stopped cleanly)."""
    wait_until(lambda: not compat_threads(prefix), timeout, f"threads {prefix}* ending")
