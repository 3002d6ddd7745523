"""A leaky-bucket pacer: spreads each frame's packets instead of bursting them.

libwebrtc's ``PacingController`` sends at ``pacing_factor`` (2.5) times the
target bit rate; a 30 kB key frame at 300 kbps then takes ~320 ms on the wire
instead of leaving in one burst that overflows the bottleneck queue. Here the
senders await :meth:`Pacer.wait` before each video packet: it reserves the
packet's slot on the budget and sleeps until that slot. Audio is not paced
(libwebrtc gives it priority). A queue longer than ``max_queue`` seconds is
not allowed to build: the slot is moved forward (libwebrtc raises the pacing
rate so that the queue drains within its ``max_queue_time``).
"""

from __future__ import annotations

import asyncio
import time

#: libwebrtc ``kDefaultPacingFactor``.
PACING_FACTOR = 2.5
#: Sleeps shorter than this are skipped (asyncio timers are ~1 ms anyway).
_MIN_SLEEP = 0.002


class Pacer:
    """Budget of one transport. ``rate`` is bits per second (0 = not paced)."""

    def __init__(self, rate: float = 0.0, *, max_queue: float = 0.5) -> None:
        self.rate = rate
        self.max_queue = max_queue
        self._next = 0.0
        #: Seconds packets waited in total, and how many (for tests and stats).
        self.total_delay = 0.0
        self.packets = 0

    def set_target(self, target_bitrate: float) -> None:
        self.rate = PACING_FACTOR * target_bitrate

    def reserve(self, size: int, now: float | None = None) -> float:
        """Reserve ``size`` bytes on the budget; returns the delay (s) before sending."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        start = max(self._next, now)
        if start - now > self.max_queue:
            start = now + self.max_queue
        self._next = start + size * 8 / self.rate
        delay = start - now
        self.total_delay += delay
        self.packets += 1
        return delay

    async def wait(self, size: int) -> None:
        delay = self.reserve(size)
        if delay >= _MIN_SLEEP:
            await asyncio.sleep(delay)


__all__ = ["PACING_FACTOR", "Pacer"]
