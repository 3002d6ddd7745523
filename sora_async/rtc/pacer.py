"""A leaky-bucket pacer: spreads what a frame sends beyond a short burst.

libwebrtc's ``PacingController`` sends at ``pacing_factor`` (2.5) times the
target bit rate; a 30 kB key frame at 300 kbps then takes ~320 ms on the wire
instead of leaving in one burst that overflows the bottleneck queue. Here each
video packet reserves its slot on the budget (:meth:`Pacer.reserve`, through
``TransportCongestion.pace``) and waits for it in the :class:`PacedQueue`, which
sends it when the slot comes; the sender itself never waits. Audio is not paced
(libwebrtc gives it priority). A queue longer than ``max_queue`` seconds is
not allowed to build: the slot is moved forward (libwebrtc raises the pacing
rate so that the queue drains within its ``max_queue_time``).

A packet may leave as soon as the budget is less than :data:`BURST_INTERVAL`
behind (libwebrtc's ``send_burst_interval``, 40 ms by default since its pacer
allows bursts, capped at :data:`MAX_BURST_BYTES`): a frame smaller than 40 ms
of the pacing rate goes out at once, in one event-loop pass, as the official
client sends it (a VGA frame at 1 Mbit/s, 4 packets: 0.24 ms from first to
last packet at the dev server, where a 5 ms window spread them over 8.6 ms and
one timer wake-up per frame). Larger frames (key frames, a constrained link)
leave the first 40 ms at once and the rest at the pacing rate. Packets queued
for later are sent by one timer, everything due within :data:`BURST_WINDOW`
in the same wake-up (libwebrtc's 5 ms process interval).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

#: libwebrtc ``kDefaultPacingFactor``.
PACING_FACTOR = 2.5
#: libwebrtc ``PacingController::kDefaultBurstInterval``: how far (in time at the
#: pacing rate) the budget may run behind while packets still leave at once.
BURST_INTERVAL = 0.040
#: libwebrtc ``PacingController::kMaxBurstSize``: a burst never exceeds this many
#: bytes (socket buffers), which shortens the interval above 12.6 Mbit/s.
MAX_BURST_BYTES = 63_000
#: Queued packets due within this many seconds of each other are sent in one
#: wake-up (libwebrtc's 5 ms pacer process interval).
BURST_WINDOW = 0.005


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

    @property
    def burst_interval(self) -> float:
        """Seconds of the pacing rate that may leave in one burst (0 when not paced)."""
        if self.rate <= 0:
            return 0.0
        return min(BURST_INTERVAL, MAX_BURST_BYTES * 8 / self.rate)

    def reserve(self, size: int, now: float | None = None) -> float:
        """Reserve ``size`` bytes on the budget; returns the delay (s) before sending:
        0.0 while the budget is less than :attr:`burst_interval` behind."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        start = max(self._next, now)
        if start - now > self.max_queue:
            start = now + self.max_queue
        self._next = start + size * 8 / self.rate
        delay = max(0.0, start - now - self.burst_interval)
        self.total_delay += delay
        self.packets += 1
        return delay


class PacedQueue:
    """Packets waiting for their pacer slot, sent by a loop timer (libwebrtc's
    ``PacingController`` queue).

    Whoever hands a packet over does not wait for its slot: a sender's loop goes
    on to its next frame while the previous one drains, as libwebrtc's encoder
    does. When the send loop awaited each packet's slot, a frame that took longer
    to pace than a frame interval (a 720p frame, a key frame) held the encoder up
    and source frames were dropped (720p senders at 25-28 fps). One timer serves
    the whole queue, and everything due within :data:`BURST_WINDOW` of the head's
    slot leaves in the same wake-up. Order is kept (first in, first out).
    """

    def __init__(self, send: Callable[[bytes], None]) -> None:
        self._send = send
        self._queue: deque[tuple[float, bytes]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, delay: float, data: bytes) -> None:
        """Queue ``data`` to be sent ``delay`` seconds from now (after the packets
        queued before it)."""
        self._queue.append((time.monotonic() + delay, data))
        if self._timer is None:
            self._arm(delay)

    def close(self) -> None:
        """Drop what waits, the timer and ``send`` (the transport is closing; ``send``
        is its owner's method, a reference cycle otherwise). Later pushes are dropped."""
        self._send = _dropped
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._drain)

    def _drain(self) -> None:
        self._timer = None
        queue, send = self._queue, self._send
        limit = time.monotonic() + BURST_WINDOW
        while queue and queue[0][0] <= limit:
            send(queue.popleft()[1])
        if queue:
            self._arm(queue[0][0] - time.monotonic())


def _dropped(data: bytes) -> None:
    """``send`` of a closed :class:`PacedQueue`."""


__all__ = [
    "BURST_INTERVAL",
    "BURST_WINDOW",
    "MAX_BURST_BYTES",
    "PACING_FACTOR",
    "PacedQueue",
    "Pacer",
]
