"""What every example shares: where to connect, and a peer to talk to on the dev server.

Each example runs in one of two ways:

- ``python examples/NAME.py --devserver``: a local Sora-compatible dev server is
  started in the same process, plus (where the example needs one) a companion
  client on the other side: a test-pattern sender for the receiving
  examples, a receiver that checks what arrived for the sending ones.
- ``python examples/NAME.py``: against a real Sora, configured like the
  official examples (shiguredo/sora-python-sdk-examples) by environment
  variables or a ``.env`` file in the current directory:
  ``SORA_SIGNALING_URLS`` (comma-separated), ``SORA_CHANNEL_ID``,
  ``SORA_METADATA`` (JSON, e.g. ``{"access_token": "..."}``). Run the other
  side yourself, e.g. ``sora-async sendonly`` or ``sora-async recvonly``.

The examples exit 0 when they did what they say (the tests rely on it),
7 when the feature they show is not in this build.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sora_async import Connection
from sora_async.cli.media import TestPatternTrack, ToneTrack
from sora_async.devserver import DevServer

#: Exit status of an example whose feature is not in this build (like ``sora-async``'s).
UNSUPPORTED = 7


def load_dotenv(path: Path = Path(".env")) -> None:
    """Read ``KEY=VALUE`` lines of ``.env`` into ``os.environ`` (set variables win)."""
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            os.environ.setdefault(key.strip(), value.strip().strip("'\""))


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--devserver``, ``--channel-id`` and ``--duration``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--devserver",
        action="store_true",
        help="start a local dev server (and a companion client) instead of using SORA_* settings",
    )
    parser.add_argument("--channel-id", help="(default: $SORA_CHANNEL_ID, or sora-examples)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run (default 10)")
    return parser


@dataclass
class Target:
    """Where to connect: ``signaling_urls``, ``channel_id`` and the other keywords."""

    signaling_urls: list[str]
    channel_id: str
    keywords: dict[str, Any] = field(default_factory=dict)
    devserver: DevServer | None = None

    def connection(self, role: str, channel_id: str | None = None, **keywords: Any) -> Connection:
        """``Connection(urls, role, channel, metadata=..., **keywords)``."""
        return Connection(
            self.signaling_urls,
            role,
            channel_id or self.channel_id,
            **{**self.keywords, **keywords},
        )


@contextlib.asynccontextmanager
async def target(args: argparse.Namespace) -> AsyncIterator[Target]:
    """The dev server (``--devserver``) or the ``SORA_*`` settings."""
    load_dotenv()
    channel_id = args.channel_id or os.environ.get("SORA_CHANNEL_ID") or "sora-examples"
    if args.devserver:
        async with DevServer(port=0) as server:
            print(f"dev server: {server.signaling_url}", flush=True)
            yield Target([server.signaling_url], channel_id, devserver=server)
        return
    urls = [u for u in os.environ.get("SORA_SIGNALING_URLS", "").split(",") if u.strip()]
    if not urls:
        sys.exit("set SORA_SIGNALING_URLS (and SORA_CHANNEL_ID, SORA_METADATA), or use --devserver")
    keywords: dict[str, Any] = {}
    if os.environ.get("SORA_METADATA"):
        keywords["metadata"] = json.loads(os.environ["SORA_METADATA"])
    yield Target([u.strip() for u in urls], channel_id, keywords)


@contextlib.asynccontextmanager
async def companion_sender(
    where: Target,
    channel_id: str | None = None,
    *,
    width: int = 320,
    height: int = 240,
    fps: float = 15,
    audio: bool = True,
    role: str = "sendonly",
) -> AsyncIterator[Connection | None]:
    """On the dev server, a client sending a test pattern (and a tone); elsewhere nothing."""
    if where.devserver is None:
        yield None
        return
    conn = where.connection(
        role,
        channel_id,
        video_source=TestPatternTrack(width, height, fps),
        audio_source=ToneTrack() if audio else None,
        audio=audio,
        video_codec_type="VP8",
    )
    async with conn:
        print(f"companion: sending a {width}x{height} test pattern", flush=True)
        yield conn


@contextlib.asynccontextmanager
async def companion_receiver(
    where: Target, channel_id: str | None = None, **keywords: Any
) -> AsyncIterator[Connection | None]:
    """On the dev server, a recvonly client (check what it got with :func:`received`)."""
    if where.devserver is None:
        yield None
        return
    async with where.connection("recvonly", channel_id, **keywords) as conn:
        yield conn


async def received(conn: Connection | None) -> dict[str, int]:
    """Bytes received per kind (``{"audio": n, "video": n}``) from ``get_stats()``."""
    totals = {"audio": 0, "video": 0}
    if conn is not None:
        for entry in await conn.get_stats():
            if entry.get("type") == "inbound-rtp":
                totals[entry["kind"]] += int(entry.get("bytesReceived", 0))
    return totals


def run(main: Any) -> None:
    """``asyncio.run(main())`` and exit with what it returns; Ctrl-C ends quietly."""
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(0)
