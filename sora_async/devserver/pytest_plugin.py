"""pytest fixtures that start a dev server (registered as the ``sora_async_devserver`` plugin).

Async tests (needs pytest-asyncio)::

    async def test_join(sora_devserver):
        url = sora_devserver.signaling_url

    async def test_cluster(sora_devserver_factory):
        b = await sora_devserver_factory()
        a = await sora_devserver_factory(redirect_to=b.signaling_url)

Synchronous tests (the server runs on its own loop in a thread)::

    def test_with_official_client(sora_devserver_thread):
        url = sora_devserver_thread.signaling_url

Each fixture stops its servers at teardown, closing every connection.
This module is loaded by every pytest run in an environment where
sora_async is installed, so the async fixtures are only defined when
pytest-asyncio is there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from .server import BackgroundDevServer, DevServer

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - async fixtures need pytest-asyncio
    pytest_asyncio = None  # type: ignore[assignment]

__all__ = ["sora_devserver_thread"]

DevServerFactory = Callable[..., Awaitable[DevServer]]


@pytest.fixture
def sora_devserver_thread() -> Iterator[BackgroundDevServer]:
    """A started :class:`BackgroundDevServer` with default options (for sync tests)."""
    with BackgroundDevServer() as server:
        yield server


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def sora_devserver_factory() -> AsyncIterator[DevServerFactory]:
        """``await factory(**options)`` starts a :class:`DevServer` on the test's loop."""
        servers: list[DevServer] = []

        async def factory(**options: Any) -> DevServer:
            server = DevServer(**options)
            await server.start()
            servers.append(server)
            return server

        try:
            yield factory
        finally:
            for server in reversed(servers):
                await server.stop()

    @pytest_asyncio.fixture
    async def sora_devserver(sora_devserver_factory: DevServerFactory) -> DevServer:
        """A started :class:`DevServer` with default options on ``127.0.0.1`` and a free port."""
        return await sora_devserver_factory()

    __all__ += ["sora_devserver", "sora_devserver_factory"]
