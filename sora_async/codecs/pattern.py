"""A moving test pattern for codec tests and the benchmark.

Smooth moving waves plus a sliding square: realistic enough for rate
control (random noise is not: libvpx overshot every target with it), cheap
to make with numpy, deterministic.
"""

from __future__ import annotations

import fractions
import functools

import numpy as np
from av.audio.frame import AudioFrame
from av.video.frame import VideoFrame

from .base import OPUS_CLOCK_RATE, VIDEO_CLOCK_RATE

VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)


@functools.lru_cache(maxsize=8)
def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return xx, yy


def video_frame(width: int, height: int, index: int, fps: int = 30) -> VideoFrame:
    """Frame ``index`` of the pattern, yuv420p, pts on the 90 kHz RTP clock.

    Example::

        frame = video_frame(320, 240, 0)  # frame.pts == 0, frame.time_base == 1/90000
    """
    if width % 2 or height % 2:
        raise ValueError("width and height must be even for yuv420p")
    xx, yy = _grid(width, height)
    t = index / fps
    luma = 128 + 60 * np.sin(xx / 17.0 + t * 3) * np.cos(yy / 13.0 - t * 2)
    luma += 30 * np.sin((xx + yy) / 7.0 + t * 5)
    side = max(8, min(width, height) // 6)
    x0 = int((index * 7) % max(1, width - side))
    y0 = int((index * 3) % max(1, height - side))
    luma[y0 : y0 + side, x0 : x0 + side] = 235
    chroma_u = 128 + 40 * np.sin(xx[: height // 2, : width // 2] / 11.0 + t)
    chroma_v = 128 + 40 * np.cos(yy[: height // 2, : width // 2] / 9.0 - t)
    packed = np.concatenate(
        [
            np.clip(luma, 0, 255).astype(np.uint8).ravel(),
            np.clip(chroma_u, 0, 255).astype(np.uint8).ravel(),
            np.clip(chroma_v, 0, 255).astype(np.uint8).ravel(),
        ]
    ).reshape(height * 3 // 2, width)
    frame = VideoFrame.from_ndarray(packed, format="yuv420p")
    frame.pts = index * VIDEO_CLOCK_RATE // fps
    frame.time_base = VIDEO_TIME_BASE
    return frame


def audio_frame(index: int, samples: int = 960, sample_rate: int = OPUS_CLOCK_RATE) -> AudioFrame:
    """A 440 Hz tone, s16 stereo, ``samples`` long, pts in samples."""
    start = index * samples
    t = (np.arange(start, start + samples) / sample_rate).astype(np.float32)
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    frame = AudioFrame.from_ndarray(
        np.stack([tone, tone]).T.reshape(1, -1), format="s16", layout="stereo"
    )
    frame.sample_rate = sample_rate
    frame.pts = start
    frame.time_base = fractions.Fraction(1, sample_rate)
    return frame
