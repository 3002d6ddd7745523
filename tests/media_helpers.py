"""Test media shared by the media tests and the official-client runner variant.

Numpy only (``tests/media_official_runner.py`` must not import the package
under test):

- a moving BGR test pattern with a frame counter painted into it as 16
  black/white blocks (big enough to survive VP8 at a low bit rate), and the
  reader of that counter;
- tones, the FFT peak of a signal, the resident memory of this process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

COUNTER_BITS = 16


def _block(width: int) -> int:
    return max(8, width // (COUNTER_BITS + 4))


def pattern(width: int, height: int, n: int) -> np.ndarray:
    """Frame ``n`` of a moving gradient with a bar, counter ``n`` in the top band."""
    y, x = np.ogrid[0:height, 0:width]
    image = np.empty((height, width, 3), np.uint8)
    image[:, :, 0] = (x + 3 * n) & 0xFF
    image[:, :, 1] = (y + 2 * n) & 0xFF
    image[:, :, 2] = ((x + y) // 2 - 5 * n) & 0xFF
    bar = (7 * n) % max(width - 16, 1)
    image[:, bar : bar + 16] = 255
    paint_counter(image, n)
    return image


def paint_counter(image: np.ndarray, n: int) -> None:
    """Paint ``n`` (mod 2**16) into the top band of a BGR image, in place."""
    width = image.shape[1]
    b = _block(width)
    image[: 2 * b, :] = 128
    for i in range(COUNTER_BITS):
        bit = (n >> (COUNTER_BITS - 1 - i)) & 1
        x0 = (i + 2) * b
        image[b // 2 : b // 2 + b, x0 : x0 + b] = 255 if bit else 0


def read_counter(image: np.ndarray) -> int:
    """The counter painted by :func:`paint_counter` (BGR or single-channel luma image)."""
    luma = image if image.ndim == 2 else image.mean(axis=2)
    width = luma.shape[1]
    b = _block(width)
    n = 0
    for i in range(COUNTER_BITS):
        x0 = (i + 2) * b
        centre = luma[b // 2 + b // 4 : b // 2 + 3 * b // 4, x0 + b // 4 : x0 + 3 * b // 4]
        n = (n << 1) | int(centre.mean() > 128)
    return n


def tone(
    frequency: float, rate: int, start: int, count: int, amplitude: float = 8000.0
) -> np.ndarray:
    """int16 (count,) samples ``start..start+count`` of a sine."""
    t = (np.arange(start, start + count)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    """Frequency of the strongest FFT bin (Hann window, parabolic refinement)."""
    x = np.asarray(samples, np.float64).ravel()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[0] = 0
    k = int(np.argmax(spectrum))
    if 0 < k < len(spectrum) - 1:
        a, b, c = spectrum[k - 1 : k + 2]
        denom = a - 2 * b + c
        if denom:
            return float((k + 0.5 * (a - c) / denom) * rate / len(x))
    return float(k * rate / len(x))


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    fields = Path("/proc/self/statm").read_text().split()
    import os

    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def stale_deliveries(counters: list[int], fps: float, limit_s: float) -> list[tuple[int, int]]:
    """(counter, newest seen before it) pairs where a frame older than ``limit_s``
    was delivered after a newer one."""
    stale = []
    newest = -1
    for c in counters:
        if newest >= 0 and c < newest and (newest - c) / fps > limit_s:
            stale.append((c, newest))
        newest = max(newest, c)
    return stale
