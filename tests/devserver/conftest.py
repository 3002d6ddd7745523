"""Fixtures for the dev-server control-plane tests (helpers live in ``support.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from sora_async.devserver import DevServer

from .support import DevServerStarter, FakePeerFactory


@pytest.fixture
def peers() -> FakePeerFactory:
    return FakePeerFactory()


@pytest_asyncio.fixture
async def start_server(
    sora_devserver_factory: DevServerStarter, peers: FakePeerFactory
) -> AsyncIterator[DevServerStarter]:
    """Start a dev server on the fake media plane (pings off unless asked)."""

    async def start(**options: Any) -> DevServer:
        options.setdefault("peer_factory", peers)
        options.setdefault("ping_interval", 0)
        return await sora_devserver_factory(**options)

    yield start


@pytest_asyncio.fixture
async def server(start_server: DevServerStarter) -> DevServer:
    return await start_server()
