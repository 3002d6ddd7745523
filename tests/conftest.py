"""Shared pytest configuration.

The official ``sora_sdk`` client (a test-only referee) runs in subprocesses
through ``tests/official/harness.py``; tests marked ``official`` are skipped
where ``sora_sdk`` is not importable (it ships a CPython 3.11 wheel only).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

# Make ``tests.official`` importable however pytest was started.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.official.harness import SORA_SDK_AVAILABLE, OfficialClient  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SORA_SDK_AVAILABLE:
        return
    skip = pytest.mark.skip(reason="sora_sdk (official client, CPython 3.11 only) not importable")
    for item in items:
        if item.get_closest_marker("official"):
            item.add_marker(skip)


@pytest.fixture
async def official_client() -> AsyncIterator[Callable[..., OfficialClient]]:
    """Factory of ``OfficialClient``s; any left open are closed (and checked) at teardown.

    Usage::

        async with official_client(signaling_urls=[url], role="recvonly", channel_id="c") as c:
            await c.connect()
    """
    clients: list[OfficialClient] = []

    def factory(**kwargs: Any) -> OfficialClient:
        client = OfficialClient(**kwargs)
        clients.append(client)
        return client

    yield factory
    errors = []
    for client in reversed(clients):
        try:
            await client.close()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)
