"""Media for the command line and the demo: a test pattern, a tone, files and devices.

- :class:`TestPatternTrack`: moving colour bars, a bouncing square and a
  clock (wall time and frame number) drawn with numpy, paced in real time;
- :class:`ToneTrack`: a 440 Hz tone with an 880 Hz tick at every second;
- :class:`MediaInput`: a file or a capture device opened with PyAV,
  decoded in a thread into a :class:`~sora_async.VideoSource` and/or an
  :class:`~sora_async.AudioSource` (files play in real time, optionally looped).

All of them are tracks (or feed tracks) that ``Connection(video_source=...,
audio_source=...)`` takes.

Example::

    source = MediaInput("movie.mp4", loop=True)
    source.start()
    async with Connection(url, "sendonly", "ch", video_source=source.video_source,
                          audio_source=source.audio_source):
        await source.wait_ended()
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..audio_source import AudioSource
from ..video_source import VideoSource
from .errors import CliError, ExitCode

logger = logging.getLogger("sora_async.cli")

TONE_HZ = 440.0
TICK_HZ = 880.0
_VIDEO_TIME_BASE = fractions.Fraction(1, 90000)

# A 5x7 bitmap font for the clock: digits and a few signs.
_FONT: dict[str, tuple[str, ...]] = {
    "0": ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    "1": ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    "2": ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    "3": ("11111", "00010", "00100", "00010", "00001", "10001", "01110"),
    "4": ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    "5": ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    "6": ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    "7": ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    "8": ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    "9": ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
    ":": ("00000", "01100", "01100", "00000", "01100", "01100", "00000"),
    ".": ("00000", "00000", "00000", "00000", "00000", "01100", "01100"),
    "#": ("01010", "01010", "11111", "01010", "11111", "01010", "01010"),
    "-": ("00000", "00000", "00000", "11111", "00000", "00000", "00000"),
    " ": ("00000",) * 7,
}
_GLYPHS = {
    char: np.array([[bit == "1" for bit in row] for row in rows], dtype=bool)
    for char, rows in _FONT.items()
}
# 75 % colour bars (BGR): white, yellow, cyan, green, magenta, red, blue.
_BARS = np.array(
    [
        (191, 191, 191),
        (0, 191, 191),
        (191, 191, 0),
        (0, 191, 0),
        (191, 0, 191),
        (0, 0, 191),
        (191, 0, 0),
    ],
    dtype=np.uint8,
)


def text_mask(text: str, scale: int) -> np.ndarray:
    """A boolean (7*scale, 6*scale*len(text)) image of ``text`` in the built-in 5x7 font.

    Only digits and ``: . # -`` and space are drawn; other characters are blank.
    """
    blank = _GLYPHS[" "]
    columns = [np.pad(_GLYPHS.get(char, blank), ((0, 0), (0, 1))) for char in text] or [
        np.zeros((7, 1), bool)
    ]
    mask = np.concatenate(columns, axis=1)
    return np.kron(mask, np.ones((scale, scale), dtype=bool))


def draw_test_pattern(width: int, height: int, index: int, fps: float) -> np.ndarray:
    """The test pattern's frame ``index`` as a BGR (height, width, 3) uint8 array.

    Colour bars scroll left, a white square bounces, and the bottom band shows
    the local wall-clock time and the frame number, so a received frame tells
    how late it is and whether frames were lost.
    """
    bar_width = max(1, -(-width // len(_BARS)))
    bars = np.repeat(_BARS, bar_width, axis=0)
    offset = (index * max(1, width // 160)) % len(bars)
    row = np.roll(bars, -offset, axis=0)[:width]
    image = np.broadcast_to(row, (height, width, 3)).copy()
    # A bouncing square: something every encoder has to track.
    side = max(4, min(width, height) // 6)
    span_x, span_y = max(1, width - side), max(1, height - side)
    x = abs((index * 5) % (2 * span_x) - span_x)
    y = abs((index * 3) % (2 * span_y) - span_y)
    image[y : y + side, x : x + side] = 255
    # The clock band.
    scale = max(1, height // 90)
    band = 9 * scale
    image[height - band :] = 0
    now = time.time()
    clock = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
    mask = text_mask(f"{clock}  #{index:06d}", scale)[:, : max(0, width - 2 * scale)]
    top = height - band + scale
    image[top : top + mask.shape[0], scale : scale + mask.shape[1]][mask] = 255
    return image


class TestPatternTrack(MediaStreamTrack):
    """A video track of :func:`draw_test_pattern` frames at ``fps``, paced in real time.

    Args:
        width, height: frame size in pixels (even numbers suit every encoder).
        fps: frames per second.

    ``frames_sent`` counts the frames handed to the encoder.
    """

    __test__ = False  # not a pytest test class, despite the name
    kind = "video"

    def __init__(self, width: int = 640, height: int = 360, fps: float = 30.0) -> None:
        if width < 16 or height < 16:
            raise ValueError(f"test pattern: {width}x{height} is too small (16x16 at least)")
        if not fps > 0:
            raise ValueError(f"test pattern: fps must be > 0, got {fps}")
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._start: float | None = None
        self.frames_sent = 0

    async def recv(self) -> av.VideoFrame:
        """The next frame, as yuv420p with a 90 kHz pts."""
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        index = self.frames_sent
        due = self._start + index / self.fps
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > 1.0:  # the loop stalled: do not burst to catch up
            self._start = now - index / self.fps
        image = draw_test_pattern(self.width, self.height, index, self.fps)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        frame.pts = round(index * 90000 / self.fps)
        frame.time_base = _VIDEO_TIME_BASE
        self.frames_sent += 1
        return frame


class ToneTrack(MediaStreamTrack):
    """An audio track: a 440 Hz tone at -12 dBFS with a 100 ms 880 Hz tick every second.

    20 ms mono frames at 48 kHz, paced in real time. ``frequency`` changes the tone.
    """

    kind = "audio"

    def __init__(self, frequency: float = TONE_HZ, sample_rate: int = 48000) -> None:
        super().__init__()
        self.frequency, self.sample_rate = frequency, sample_rate
        self._start: float | None = None
        self._samples = 0

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms of s16 mono audio."""
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        count = self.sample_rate // 50
        due = self._start + self._samples / self.sample_rate
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > 1.0:
            self._start = now - self._samples / self.sample_rate
        n = np.arange(self._samples, self._samples + count)
        t = n / self.sample_rate
        tick = (n % self.sample_rate) < self.sample_rate // 10
        # At 440 and 880 Hz both sines cross zero where they switch (every 0.1 s): no click.
        phase = 2 * np.pi * np.where(tick, TICK_HZ, self.frequency) * t
        pcm = (np.sin(phase) * 8192).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        self._samples += count
        return frame


def encode_png(bgr: np.ndarray) -> bytes:
    """A BGR (H, W, 3) uint8 image as PNG file bytes (PyAV's PNG encoder, no Pillow needed).

    Example (in a notebook)::

        from IPython.display import Image, display

        display(Image(data=encode_png(frame.data())))
    """
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = frame.width, frame.height, "rgb24"
    packets = codec.encode(frame.reformat(format="rgb24")) + codec.encode(None)
    return b"".join(bytes(packet) for packet in packets)


def guess_device_format(url: str) -> str | None:
    """The FFmpeg input format for a capture device name, or None for a file/URL.

    ``/dev/video0`` → ``v4l2`` (Linux); on macOS a bare number (``"0"``, or
    ``"0:0"``) → ``avfoundation``; on Windows ``video=NAME``/``audio=NAME`` →
    ``dshow``. Pass ``--video-input-format``/``--audio-input-format`` for
    anything else (``alsa``, ``pulse``, ``x11grab``, ``lavfi``...).
    """
    if url.startswith("/dev/video"):
        return "v4l2"
    if sys.platform == "darwin" and url.replace(":", "").isdigit():
        return "avfoundation"
    if sys.platform == "win32" and url.startswith(("video=", "audio=")):
        return "dshow"
    return None


class MediaInput:
    """A file or capture device read with PyAV in a thread.

    Args:
        url: a file path, a URL FFmpeg can read, or a device (``/dev/video0``).
        format: FFmpeg input format (``v4l2``, ``alsa``, ``lavfi``...); guessed
            for devices (:func:`guess_device_format`), None for files.
        options: FFmpeg input options (``{"video_size": "640x480", "framerate": "30"}``).
        video, audio: whether to take this input's video / audio stream.
        loop: play a file again from the start when it ends.
        realtime: pace decoding to the file's timestamps (default: True for
            files, False for devices, which are paced by the hardware).

    :meth:`open` raises :class:`~sora_async.cli.errors.CliError` (exit code
    ``MEDIA_IO``) in plain words when the input cannot be opened or has no
    stream of a wanted kind. ``video_source``/``audio_source`` are the tracks
    to pass to ``Connection``; :meth:`start` begins reading.
    """

    def __init__(
        self,
        url: str,
        *,
        format: str | None = None,
        options: Mapping[str, str] | None = None,
        video: bool = True,
        audio: bool = True,
        loop: bool = False,
        realtime: bool | None = None,
    ) -> None:
        self.url = url
        self.format = format if format is not None else guess_device_format(url)
        self.options = dict(options or {})
        self.want_video, self.want_audio = video, audio
        self.loop = loop
        self.realtime = self.format is None if realtime is None else realtime
        self.video_source: VideoSource | None = None
        self.audio_source: AudioSource | None = None
        self.error: BaseException | None = None
        self.video_frames = 0
        self.audio_frames = 0
        self._container: Any = None
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._thread: threading.Thread | None = None
        self._audio_resampler: av.AudioResampler | None = None

    def open(self) -> None:
        """Open the input and create the sources (blocking: a device may take a moment)."""
        try:
            container = av.open(self.url, format=self.format, options=self.options)
        except FileNotFoundError as exc:
            raise CliError(
                f"cannot open {self.url}: no such file or device", ExitCode.MEDIA_IO
            ) from exc
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise CliError(
                f"cannot open {self.url}: {exc}",
                ExitCode.MEDIA_IO,
                hint="for a device, give its format, e.g. --video-input-format v4l2",
            ) from exc
        self._container = container
        has_video = bool(container.streams.video)
        has_audio = bool(container.streams.audio)
        if self.want_video and not has_video and not (self.want_audio and has_audio):
            container.close()
            raise CliError(f"{self.url} has no video stream", ExitCode.MEDIA_IO)
        if self.want_audio and not has_audio and not (self.want_video and has_video):
            container.close()
            raise CliError(f"{self.url} has no audio stream", ExitCode.MEDIA_IO)
        if self.want_video and has_video:
            self.video_source = VideoSource()
        if self.want_audio and has_audio:
            stream = container.streams.audio[0]
            channels = 1 if stream.codec_context.channels == 1 else 2
            self.audio_source = AudioSource(channels=channels, sample_rate=48000, queue_ms=400)
            self._audio_resampler = av.AudioResampler(
                format="s16", layout="mono" if channels == 1 else "stereo", rate=48000
            )

    def start(self) -> None:
        """Start the reading thread (opens the input first if needed)."""
        if self._container is None:
            self.open()
        self._thread = threading.Thread(
            target=self._run, name=f"MediaInput {self.url}", daemon=True
        )
        self._thread.start()

    @property
    def ended(self) -> bool:
        """True once the input ended (end of file without ``loop``, an error, or :meth:`stop`)."""
        return self._ended.is_set()

    async def wait_ended(self) -> None:
        """Wait until the input ended (forever for a looped file or a device)."""
        # A threading.Event set by the reader thread: polled, so cancelling works.
        while not self._ended.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        if self.audio_source is not None and self.error is None and not self._stop.is_set():
            await self.audio_source.wait_for_playout(timeout=2.0)

    async def stop(self) -> None:
        """Stop reading and close the input and the sources."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
        if self._container is not None:
            self._container.close()
            self._container = None
        for source in (self.video_source, self.audio_source):
            if source is not None:
                source.stop()

    def _run(self) -> None:
        container = self._container
        streams = []
        if self.video_source is not None:
            streams.append(container.streams.video[0])
        if self.audio_source is not None:
            streams.append(container.streams.audio[0])
        for stream in streams:
            stream.thread_type = "AUTO"
        origin = time.monotonic()
        offset = 0.0  # seconds of the file already played (looping)
        try:
            while not self._stop.is_set():
                last = 0.0
                first: float | None = None
                for packet in container.demux(streams):
                    if self._stop.is_set():
                        return
                    for frame in packet.decode():
                        if frame.time is not None:
                            if first is None:
                                first = frame.time
                            last = max(last, frame.time - first)
                            if self.realtime:
                                due = origin + offset + frame.time - first
                                delay = due - time.monotonic()
                                if delay > 0 and self._stop.wait(delay):
                                    return
                        self._deliver(frame)
                if not self.loop:
                    return
                offset += last + 0.04
                container.seek(0)
        except Exception as exc:
            if not self._stop.is_set():
                logger.warning("reading %s failed: %s", self.url, exc)
                self.error = exc
        finally:
            self._ended.set()

    def _deliver(self, frame: Any) -> None:
        if isinstance(frame, av.VideoFrame) and self.video_source is not None:
            self.video_source.write(frame)
            self.video_frames += 1
        elif isinstance(frame, av.AudioFrame) and self.audio_source is not None:
            assert self._audio_resampler is not None
            frame.pts = None  # the resampler keeps its own continuous timeline
            for out in self._audio_resampler.resample(frame):
                pcm = out.to_ndarray().reshape(-1, self.audio_source.channels)
                self.audio_source.write(pcm)
            self.audio_frames += 1
