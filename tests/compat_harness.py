"""``OfficialClient`` for either module: the official ``sora_sdk`` or ``sora_async.compat``.

:class:`ModuleClient` is the official-client harness (``tests/official/harness.py``)
with its subprocess running ``tests/compat_runner.py``, so one test function
can drive ``sora_sdk`` and ``sora_async.compat`` through the very same
runner code (same callbacks, sinks, fake media, commands and events).

Example::

    async with ModuleClient("sora_async.compat", signaling_urls=[url],
                            role="recvonly", channel_id="ch") as client:
        await client.connect()
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from tests.official.harness import SORA_SDK_AVAILABLE, OfficialClient

COMPAT_RUNNER = Path(__file__).with_name("compat_runner.py")
OFFICIAL = "sora_sdk"
COMPAT = "sora_async.compat"
#: The modules a differential test runs over (the official one only where importable).
MODULES = [OFFICIAL, COMPAT] if SORA_SDK_AVAILABLE else [COMPAT]


class ModuleClient(OfficialClient):
    """An :class:`OfficialClient` whose process imports ``module`` as ``sora_sdk``."""

    def __init__(self, module: str, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("name", f"{kwargs.get('role')}[{module}]")
        super().__init__(*args, **kwargs)
        self.module = module

    @property
    def is_official(self) -> bool:
        return self.module == OFFICIAL

    async def start(self) -> None:
        """Start the runner process and wait for its ``ready`` event."""
        env = {**os.environ, "SORA_COMPAT_MODULE": self.module}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(COMPAT_RUNNER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
            env=env,
        )
        self._tasks = [
            asyncio.create_task(self._read_stdout(), name=f"{self.name} stdout"),
            asyncio.create_task(self._read_stderr(), name=f"{self.name} stderr"),
        ]
        await self._send(self.config)
        ready = await self.wait_for_any(("ready", "error"), timeout=self.start_timeout)
        if ready["event"] == "error":
            raise AssertionError(
                f"{self.name} failed to start: {ready.get('message')}\n"
                f"{ready.get('traceback', '')}{self._stderr_tail()}"
            )
