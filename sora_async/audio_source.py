"""``AudioSource``: int16 PCM in, an audio track out (the official ``SoraAudioSource``).

An ``AudioSource`` is an aiortc ``MediaStreamTrack``: pass it as
``Connection(audio_source=...)``.

Input, like the official ``on_data`` (sora-sdk-reference.md §1.4): int16
``(samples, channels)`` chunks of any size at the source's rate. They are cut
into 10 ms chunks; a partial chunk waits for the next write and is joined to
it when the two are continuous, i.e. the next write's ``timestamp`` is within
±2 ms of where the previous data ended (no timestamp: continuous), and is
dropped otherwise.

Output: ``recv()`` runs on the media clock. Every 20 ms it returns 20 ms of
audio resampled to 48 kHz (Opus' rate, libswresample through PyAV), or
silence when less than 20 ms is queued when the frame is due, so the RTP
clock keeps running through gaps, as a microphone would. A frame whose audio
is all queued goes out as soon as it is, up to 40 ms ahead of the clock (a
producer writing in real time sets the pace). A short tail (the end of a
stream) goes out padded with silence once nothing more arrived for 20 ms.

Two ways to feed it:

- :meth:`AudioSource.write`: sync, thread-safe, never blocks (a sounddevice
  callback, a capture thread). While nothing consumes the track (not
  connected yet), only the newest ``queue_ms`` are kept, as a live source
  whose audio nobody hears; when the sender starts (or starts again after
  the event loop stalled for more than 100 ms), what was written more than
  40 ms before is dropped too (the official source drops audio written
  before it is connected), so a capture that started before connecting, or
  kept writing through a stall, carries no standing delay; once connected,
  everything written is played.
- ``await`` :meth:`AudioSource.send`: back-pressure; it waits while more than
  ``queue_ms`` is queued (a TTS producer runs as fast as playout, and waits
  until connected).

Example::

    source = AudioSource(channels=1, sample_rate=16000)
    async with Connection(url, "sendonly", "ch", audio_source=source, video=False):
        for chunk in tts.stream("hello"):          # int16 (n, 1) at 16 kHz
            await source.send(chunk)
        await source.wait_for_playout()
"""

# Waits take an explicit timeout and report it (False/None) instead of raising,
# like the official read(frames, timeout).
# ruff: noqa: ASYNC109

from __future__ import annotations

import collections
import fractions
import threading
import time
from typing import Any, cast

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError

from ._media import LocalTrack, Resampler, as_pcm

#: Opus runs at 48 kHz (RFC 7587 §4.1); the RTP clock is 48 kHz whatever the input.
OUTPUT_RATE = 48000
#: 20 ms per frame, the WebRTC default packet time.
PTIME = 0.020
OUTPUT_SAMPLES = int(OUTPUT_RATE * PTIME)
OUTPUT_TIME_BASE = fractions.Fraction(1, OUTPUT_RATE)
#: Official continuity tolerance for joining a partial 10 ms chunk (±2 ms).
CONTINUITY_TOLERANCE_S = 0.002
#: recv() is considered consuming when it was called this recently.
_CONSUMER_IDLE_S = 0.1
#: When recv() falls this far behind the clock it resynchronises instead of bursting.
_MAX_LAG_S = 0.1
#: How far ahead of the clock recv() hands over a frame that is already all queued. Two
#: frames: a producer writing in real time (10 or 20 ms chunks, any phase against the
#: clock) then sets the pace by itself, as it does for libwebrtc (which encodes when
#: the data comes), and recv() needs no timer of its own.
_EARLY_S = 2 * PTIME


class AudioSource(LocalTrack):
    """A local audio track fed with int16 PCM.

    Args:
        channels: channels of the input (1..8); mono stays mono, more are sent as stereo.
        sample_rate: input rate in Hz (8000..192000).
        queue_ms: how much audio :meth:`send` lets queue before it waits (> 0).
        stream_id: the local stream id (random by default).

    Raises ``ValueError`` for invalid parameters (like the official source
    since 2026) and ``TypeError`` for non-int ones.
    """

    kind = "audio"

    def __init__(
        self,
        channels: int,
        sample_rate: int,
        queue_ms: float = 200,
        *,
        stream_id: str | None = None,
    ) -> None:
        for name, value in (("channels", channels), ("sample_rate", sample_rate)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"AudioSource: {name} must be an int, got {value!r}")
        if not 1 <= channels <= 8:
            raise ValueError(f"AudioSource: channels must be 1..8, got {channels}")
        if not 8000 <= sample_rate <= 192000:
            raise ValueError(f"AudioSource: sample_rate must be 8000..192000, got {sample_rate}")
        if isinstance(queue_ms, bool) or not isinstance(queue_ms, int | float):
            raise TypeError("AudioSource: queue_ms must be a number")
        if not queue_ms > 0:
            raise ValueError(f"AudioSource: queue_ms must be > 0, got {queue_ms}")
        super().__init__(stream_id)
        self.channels = channels
        self.sample_rate = sample_rate
        self.queue_ms = float(queue_ms)
        self._chunk = sample_rate // 100  # the official 10 ms chunk (sample_rate / 100)
        self._per_frame = round(sample_rate * PTIME)
        self._out_channels = 1 if channels == 1 else 2
        self._layout = "mono" if channels == 1 else "stereo"
        self._lock = threading.Lock()
        # 10 ms chunks: (int16 (n, channels), capture time in epoch ms or None,
        # time.monotonic() of the write() that queued it; None for send())
        self._queue: collections.deque[tuple[np.ndarray, int | None, float | None]] = (
            collections.deque()
        )
        self._queued = 0  # samples per channel in _queue
        self._partial = np.zeros((0, channels), np.int16)
        self._partial_ts: float | None = None  # capture time of the partial's first sample
        self._next_ts: float | None = None  # where the written data ends, on the caller's clock
        self._stalled = False  # the tail in the queue did not grow since the last recv()
        self._resampler = Resampler(sample_rate, OUTPUT_RATE, channels)
        self._remix = channels > 2
        self._clock_start: float | None = None
        self._emitted = 0  # samples at 48 kHz
        self._last_recv = -1.0
        self._in_recv = False
        #: recv() waits for a frame's audio (not for the clock): a write completing
        #: a frame wakes it. Read without the lock: recv() re-checks its predicate
        #: after registering, so a write that saw False cannot be missed.
        self._awaiting_data = False
        self.samples_dropped = 0

    # -- producer side --------------------------------------------------------------------

    @property
    def queued_ms(self) -> float:
        """Audio queued for sending, in ms (complete 10 ms chunks; not a pending partial)."""
        return self._queued * 1000 / self.sample_rate

    def write(self, data: np.ndarray, timestamp: float | None = None) -> None:
        """Queue ``data``: int16 ``(samples, channels)`` (mono also ``(samples,)``;
        float32/64 in [-1, 1] is scaled and clipped). Copied, so non-contiguous
        arrays are fine.

        ``timestamp``: capture time of the first sample in seconds, on the
        ``time.time()`` clock as the official ``on_data`` (sent as the
        absolute capture time); it decides whether a pending partial chunk
        is joined (see the module docstring).

        Thread-safe, never blocks. ``TypeError``/``ValueError`` for bad data,
        ``RuntimeError`` once stopped.
        """
        self._append(data, timestamp, trim=not self._consuming(), written_at=time.monotonic())

    async def send(
        self, data: np.ndarray, timestamp: float | None = None, *, timeout: float | None = None
    ) -> bool:
        """:meth:`write`, then wait while more than ``queue_ms`` is queued.

        Returns False when ``timeout`` seconds passed first or the source was
        stopped (the data stays queued either way).
        """
        self._append(data, timestamp, trim=False, written_at=None)
        ok = await self._changed.wait_for(
            lambda: self._ended or self.queued_ms <= self.queue_ms, timeout
        )
        return ok and not self._ended

    def clear(self) -> None:
        """Drop everything queued, including a pending partial chunk."""
        with self._lock:
            self._queue.clear()
            self._queued = 0
            self._partial = self._partial[:0]
            self._partial_ts = None
            self._stalled = False
        self._changed.notify()

    async def wait_for_playout(self, timeout: float | None = None) -> bool:
        """Wait until everything queued went out; False on ``timeout`` or when stopped.

        Waits as long as nothing consumes the track (not connected): bound it
        with ``timeout``.
        """
        ok = await self._changed.wait_for(lambda: self._ended or self._queued == 0, timeout)
        return ok and not self._ended

    def _append(
        self, data: Any, timestamp: float | None, *, trim: bool, written_at: float | None
    ) -> None:
        self._check_open()
        pcm = as_pcm(data, self.channels, owner="AudioSource.write")
        if timestamp is not None:
            if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
                raise TypeError("AudioSource: timestamp must be seconds (float) or None")
            timestamp = float(timestamp)
            if not np.isfinite(timestamp):
                raise ValueError("AudioSource: timestamp must be finite")
        rate, chunk = self.sample_rate, self._chunk
        written = len(pcm)
        with self._lock:
            start_ts = timestamp
            if len(self._partial):
                continuous = True
                if timestamp is not None and self._next_ts is not None:
                    continuous = abs(timestamp - self._next_ts) <= CONTINUITY_TOLERANCE_S
                if continuous:
                    start_ts = (
                        self._partial_ts
                        if timestamp is None
                        else timestamp - len(self._partial) / rate
                    )
                    pcm = np.concatenate([self._partial, pcm])
                else:
                    self.samples_dropped += len(self._partial)
                self._partial = self._partial[:0]
                self._partial_ts = None
            if timestamp is not None:
                self._next_ts = timestamp + written / rate
            elif self._next_ts is not None:
                self._next_ts += written / rate  # no timestamp: continuity assumed
            whole = len(pcm) - len(pcm) % chunk
            for offset in range(0, whole, chunk):
                ts_ms = None if start_ts is None else round((start_ts + offset / rate) * 1000)
                self._queue.append((pcm[offset : offset + chunk], ts_ms, written_at))
            self._queued += whole
            if whole < len(pcm):
                self._partial = pcm[whole:].copy()
                self._partial_ts = None if start_ts is None else start_ts + whole / rate
            if whole:
                self._stalled = False
            if trim:
                limit = max(int(self.queue_ms * rate / 1000), chunk)
                while self._queued > limit and self._queue:
                    dropped = self._queue.popleft()[0]
                    self._queued -= len(dropped)
                    self.samples_dropped += len(dropped)
        if whole:
            self._changed.notify()
            if self._awaiting_data and self._queued >= self._per_frame:
                self._paced.notify()

    def _consuming(self) -> bool:
        return self._in_recv or time.monotonic() - self._last_recv < _CONSUMER_IDLE_S

    # -- encoder side ---------------------------------------------------------------------

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms at 48 kHz (s16, mono or stereo), paced in real time."""
        if self._ended:
            raise MediaStreamError
        starting = not self._consuming()
        self._in_recv = True
        try:
            now = time.monotonic()
            if starting:
                self._drop_stale(now)
            if self._clock_start is None:
                self._clock_start = now
            due = self._clock_start + self._emitted / OUTPUT_RATE
            if due - now > 0:
                # A whole frame goes out as soon as it is queued, woken by the write that
                # completed it: a timer wake-up of its own costs ~130 µs of CPU on an
                # otherwise idle loop, as much as the rest of the frame's Python work.
                self._awaiting_data = True
                try:
                    await self._paced.wait_for(
                        lambda: self._ended or self._queued >= self._per_frame, due - now
                    )
                finally:
                    self._awaiting_data = False
                now = time.monotonic()
                if due - now > _EARLY_S and not self._ended:
                    # A producer with a backlog: at most _EARLY_S ahead of the clock.
                    # Only then, once the audio is there, a timer (the data is waited
                    # for first: a producer 20-40 ms ahead would otherwise cost a timer
                    # and a write's wake-up per frame). Writes do not wake this wait.
                    await self._paced.wait_for(lambda: self._ended, due - _EARLY_S - now)
            elif now - due > _MAX_LAG_S:
                # The loop stalled: restart the clock rather than send a burst.
                self._clock_start = now - self._emitted / OUTPUT_RATE
            if self._ended:
                raise MediaStreamError
            pcm, ts_ms = self._take()
        finally:
            self._in_recv = False
            self._last_recv = time.monotonic()
        self._changed.notify()
        if pcm is None or not self._enabled:
            out = np.zeros((OUTPUT_SAMPLES, self._out_channels), np.int16)
        else:
            out = self._resampler.resample(pcm)
            if self._remix:
                out = np.ascontiguousarray(out[:, :2])
            if not len(out):  # the resampler's first call can hold everything back
                out = np.zeros((OUTPUT_SAMPLES, self._out_channels), np.int16)
        # An empty frame filled through its buffer: from_ndarray's checks cost more than
        # the copy (3.6 against 1.9 µs per 20 ms).
        frame = av.AudioFrame(format="s16", layout=self._layout, samples=len(out))
        plane = frame.planes[0]
        if plane.buffer_size == out.nbytes and out.flags.c_contiguous:
            plane.update(cast(bytes, out))  # any contiguous buffer; the stub says bytes
        else:  # a padded plane
            np.frombuffer(memoryview(plane), np.int16, out.size)[:] = out.reshape(-1)
        frame.sample_rate = OUTPUT_RATE
        frame.pts = self._emitted
        frame.time_base = OUTPUT_TIME_BASE
        if ts_ms is not None:
            frame.opaque = {"absolute_capture_timestamp_ms": ts_ms}
        self._emitted += len(out)
        return frame

    def _drop_stale(self, now: float) -> None:
        """A consumer (the sender) starts: drop what :meth:`write` queued more than
        ``_EARLY_S`` ago. Audio captured in real time before connecting would
        otherwise stay queued ahead of every later frame, a delay (up to
        ``queue_ms``) for the whole call. :meth:`send`'s audio is kept."""
        with self._lock:
            queue = self._queue
            while queue:
                written = queue[0][2]
                if written is None or now - written <= _EARLY_S:
                    break
                dropped = queue.popleft()[0]
                self._queued -= len(dropped)
                self.samples_dropped += len(dropped)

    def _take(self) -> tuple[np.ndarray | None, int | None]:
        """Pop 20 ms of input; a shorter tail only once it stopped growing."""
        need = self._per_frame
        with self._lock:
            if self._queued == 0:
                return None, None
            if self._queued < need:
                if not self._stalled:
                    self._stalled = True
                    return None, None
                need = self._queued
            parts: list[np.ndarray] = []
            got = 0
            ts_ms = self._queue[0][1]
            while got < need:
                chunk, chunk_ts, written = self._queue.popleft()
                take = min(len(chunk), need - got)
                parts.append(chunk[:take])
                if take < len(chunk):
                    rest_ts = (
                        None if chunk_ts is None else chunk_ts + take * 1000 // self.sample_rate
                    )
                    self._queue.appendleft((chunk[take:], rest_ts, written))
                got += take
            self._queued -= got
            self._stalled = False
        pcm = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if len(pcm) < self._per_frame:
            pad = np.zeros((self._per_frame - len(pcm), self.channels), np.int16)
            pcm = np.concatenate([pcm, pad])
        return pcm, ts_ms
