"""Run an asyncio program on `uvloop <https://github.com/MagicStack/uvloop>`_ when it is installed.

uvloop is optional (``pip install uvloop``) and never required. Importing
``sora_async`` never changes the event loop policy: only :func:`run` (and the
``sora-async`` command and the demo, which use it) pick uvloop, for the loop
they create (``pip install "sora_async[uvloop]"``; the ``cli`` extra has it too).
aiortc, aioice and sora_async's engine work unchanged on it. It makes the event
loop's own work per readiness event cheaper, and libuv reads a readable socket
until it is empty: in the benchmarks, run by run against asyncio's loop on a
2-core machine, 4-29 % more DataChannel messages a second and about 4 % less
CPU to receive video; sending costs the same (``bench/README.md``).

``SORA_ASYNC_UVLOOP=0`` in the environment turns the automatic choice off.

Example::

    from sora_async.runner import run

    async def main() -> None:
        async with Connection(url, "recvonly", "sora") as conn:
            ...

    run(main())                # uvloop if importable, else asyncio's own loop
    run(main(), uvloop=False)  # always asyncio's loop
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")

#: Environment variable: "0" (or "false"/"no"/"off") keeps asyncio's loop in ``run(uvloop=None)``.
ENV_UVLOOP = "SORA_ASYNC_UVLOOP"


def uvloop_available() -> bool:
    """True if uvloop can be imported (it is not imported by this check)."""
    return importlib.util.find_spec("uvloop") is not None


def loop_factory(uvloop: bool | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The ``loop_factory`` for ``asyncio.Runner``: uvloop's, or None for asyncio's.

    Args:
        uvloop: True: uvloop (``ImportError`` if it is not installed); False:
            asyncio's loop; None: uvloop when installed, unless the environment
            variable ``SORA_ASYNC_UVLOOP`` is "0".
    """
    if uvloop is None:
        disabled = os.environ.get(ENV_UVLOOP, "").strip().lower() in ("0", "false", "no", "off")
        uvloop = not disabled and uvloop_available()
    if not uvloop:
        return None
    try:
        # By name: uvloop is optional, also for type checking.
        module = importlib.import_module("uvloop")
    except ImportError as exc:
        raise ImportError("uvloop is not installed (pip install uvloop)") from exc
    factory: Callable[[], asyncio.AbstractEventLoop] = module.new_event_loop
    return factory


def run(
    main: Coroutine[Any, Any, _T], *, uvloop: bool | None = None, debug: bool | None = None
) -> _T:
    """``asyncio.run(main)`` on a new uvloop loop when available (see :func:`loop_factory`).

    The loop is created for this call only: the global event loop policy is
    left alone, so other code in the process is not affected.
    """
    try:
        factory = loop_factory(uvloop)
    except BaseException:
        main.close()  # never started: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
        return runner.run(main)


__all__ = ["ENV_UVLOOP", "loop_factory", "run", "uvloop_available"]
