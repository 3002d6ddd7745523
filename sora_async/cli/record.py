"""``Recorder``: received audio and video muxed into one file with PyAV.

The container follows the file name: ``.mkv`` (H.264 + Opus), ``.mp4``/``.mov``
(H.264 + AAC), ``.webm`` (VP8 + Opus); anything else gets FFmpeg's defaults
for that format. Audio and video of a Sora channel run on unrelated RTP
clocks, so frames are stamped with their arrival time: the file plays with
the timing the receiver saw. Encoding and muxing run in a worker thread
behind a bounded queue (``max_queue`` frames; when it is full new frames
are dropped and counted), so recording never blocks the event loop.

The file's streams are fixed when the first frames arrive: the recorder waits
up to ``settle`` seconds for a frame of each expected kind, then writes the
header with the kinds it has (later frames of a missing kind are dropped).
Video keeps the first frame's size (later frames are scaled to it).

Example::

    recorder = Recorder("out.mkv")
    conn.on("track", recorder.add_track)        # any number of audio/video tracks: first of each
    ...
    await recorder.close()                      # flushes the encoders and finalises the file
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError

from .errors import CliError, ExitCode

logger = logging.getLogger("sora_async.cli")

#: container suffix -> (video codecs, audio codecs), the first available wins.
_CODECS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    ".mkv": (("libx264", "libvpx", "mpeg4"), ("libopus", "aac", "pcm_s16le")),
    ".mp4": (("libx264", "mpeg4"), ("aac",)),
    ".mov": (("libx264", "mpeg4"), ("aac", "pcm_s16le")),
    ".webm": (("libvpx", "libvpx-vp9"), ("libopus",)),
}
_MS = fractions.Fraction(1, 1000)


def _first_available(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            av.Codec(name, "w")
        except Exception:
            continue
        return name
    return None


class Recorder:
    """Record audio and video frames into ``path``.

    Args:
        path: the output file; its suffix picks the container (see the module doc).
        video, audio: which kinds to expect (the other is never recorded).
        settle: seconds to wait for the second kind after the first frame.
        max_queue: frames queued for the writer thread before new ones are dropped.

    Feed it with :meth:`add_track` (reads a track in a task) or
    :meth:`write` (any ``av.VideoFrame``/``av.AudioFrame``, from the event
    loop). Counters: ``video_frames``, ``audio_frames`` (written) and
    ``dropped``. :meth:`close` finalises the file and raises
    :class:`~sora_async.cli.errors.CliError` if writing failed.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        video: bool = True,
        audio: bool = True,
        settle: float = 1.5,
        max_queue: int = 120,
    ) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        video_codecs, audio_codecs = _CODECS.get(suffix, ((), ()))
        self.video_codec = _first_available(video_codecs) if video_codecs else None
        self.audio_codec = _first_available(audio_codecs) if audio_codecs else None
        self.want_video, self.want_audio = video, audio
        self.settle = settle
        self.video_frames = 0
        self.audio_frames = 0
        self.dropped = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue[tuple[str, Any, float] | None] = queue.Queue(max_queue)
        self._tracks: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._origin: float | None = None
        self._closed = False
        self._opened = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Fail now, in plain words, rather than after the first frame.
            with open(self.path, "wb"):
                pass
        except OSError as exc:
            raise CliError(f"cannot write {self.path}: {exc.strerror}", ExitCode.MEDIA_IO) from exc
        self._thread = threading.Thread(target=self._run, name="Recorder", daemon=True)
        self._thread.start()

    def add_track(self, track: Any) -> None:
        """Record ``track`` (a remote track or any ``MediaStreamTrack``) until it ends.

        Only the first audio and the first video track are recorded; later
        ones are ignored with a log message. Needs a running event loop.
        """
        kind = getattr(track, "kind", None)
        if kind not in ("audio", "video") or (kind == "video" and not self.want_video):
            return
        if kind == "audio" and not self.want_audio:
            return
        if kind in self._tracks:
            logger.info("recording: already recording a %s track; ignoring another", kind)
            return
        self._tracks.add(kind)
        task = asyncio.get_running_loop().create_task(self._pump(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while not self._closed:
                self.write(await track.recv())

    def write(self, frame: av.VideoFrame | av.AudioFrame) -> None:
        """Queue one frame, stamped now (never blocks; dropped if the queue is full)."""
        if self._closed:
            return
        kind = "video" if isinstance(frame, av.VideoFrame) else "audio"
        now = time.monotonic()
        if self._origin is None:
            self._origin = now
        try:
            self._queue.put_nowait((kind, frame, now - self._origin))
        except queue.Full:
            self.dropped += 1

    async def close(self) -> None:
        """Stop recording, flush the encoders and close the file."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self._queue.put, None)
        await asyncio.to_thread(self._thread.join)
        if not self._opened:
            # Nothing arrived: leave no empty or half-written file behind.
            with contextlib.suppress(OSError):
                self.path.unlink()
        if self.error is not None:
            raise CliError(f"recording to {self.path} failed: {self.error}", ExitCode.MEDIA_IO)

    # -- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        pending: list[tuple[str, Any, float]] = []
        writer: _Writer | None = None
        try:
            while True:
                timeout = None
                if writer is None and pending:
                    timeout = max(0.0, pending[0][2] + self.settle - self._elapsed())
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    item = ()  # type: ignore[assignment]
                if item is None:
                    break
                if item:
                    pending.append(item)
                if writer is None:
                    kinds = {kind for kind, _, _ in pending}
                    expected = {
                        k for k, w in (("video", self.want_video), ("audio", self.want_audio)) if w
                    }
                    waited = pending and self._elapsed() - pending[0][2] >= self.settle
                    if pending and (kinds >= expected or waited):
                        writer = _Writer(self, pending)
                    else:
                        continue
                for kind, frame, at in pending:
                    writer.write(kind, frame, at)
                pending.clear()
            if writer is None and pending:
                writer = _Writer(self, pending)
                for kind, frame, at in pending:
                    writer.write(kind, frame, at)
            if writer is not None:
                writer.close()
        except Exception as exc:
            logger.warning("recording to %s failed: %s", self.path, exc)
            self.error = exc
            # Keep draining so producers never block on a dead writer.
            while self._queue.get() is not None:
                pass

    def _elapsed(self) -> float:
        return 0.0 if self._origin is None else time.monotonic() - self._origin


class _Writer:
    """The open container (writer thread only); streams are made from the first frames."""

    def __init__(self, recorder: Recorder, pending: list[tuple[str, Any, float]]) -> None:
        self.recorder = recorder
        recorder._opened = True
        first_video = next((f for kind, f, _ in pending if kind == "video"), None)
        has_audio = any(kind == "audio" for kind, _, _ in pending)
        self.container: Any = av.open(str(recorder.path), "w")
        self.video: Any = None
        self.audio: Any = None
        self.size: tuple[int, int] | None = None
        self.last_video_pts = -1
        self.audio_pts: int | None = None
        self.audio_resampler: av.AudioResampler | None = None
        if first_video is not None:
            self._open_video(first_video)
        if has_audio:
            self._open_audio()

    def _open_video(self, frame: av.VideoFrame) -> None:
        name = self.recorder.video_codec or self.container.default_video_codec
        stream = self.container.add_stream(name, rate=30)
        width, height = frame.width - frame.width % 2, frame.height - frame.height % 2
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = _MS
        stream.codec_context.time_base = _MS
        if name == "libx264":
            stream.codec_context.options = {"preset": "veryfast", "tune": "zerolatency"}
        self.video, self.size = stream, (width, height)

    def _open_audio(self) -> None:
        name = self.recorder.audio_codec or self.container.default_audio_codec
        stream = self.container.add_stream(name, rate=48000)
        stream.layout = "stereo"
        self.audio = stream
        self.audio_resampler = av.AudioResampler(
            format=stream.codec_context.format or "s16", layout="stereo", rate=48000
        )

    def write(self, kind: str, frame: Any, at: float) -> None:
        if kind == "video" and self.video is not None:
            self._write_video(frame, at)
        elif kind == "audio" and self.audio is not None:
            self._write_audio(frame, at)

    def _write_video(self, frame: av.VideoFrame, at: float) -> None:
        assert self.size is not None
        width, height = self.size
        if (frame.width, frame.height) != (width, height) or frame.format.name != "yuv420p":
            frame = frame.reformat(width=width, height=height, format="yuv420p")
        pts = max(self.last_video_pts + 1, round(at * 1000))
        self.last_video_pts = pts
        frame.pts, frame.time_base = pts, _MS
        for packet in self.video.encode(frame):
            self.container.mux(packet)
        self.recorder.video_frames += 1

    def _write_audio(self, frame: av.AudioFrame, at: float) -> None:
        assert self.audio_resampler is not None
        frame.pts = None
        for out in self.audio_resampler.resample(frame):
            if self.audio_pts is None:
                self.audio_pts = round(at * 48000)
            out.pts = self.audio_pts
            out.time_base = fractions.Fraction(1, 48000)
            self.audio_pts += out.samples
            for packet in self.audio.encode(out):
                self.container.mux(packet)
        self.recorder.audio_frames += 1

    def close(self) -> None:
        for stream in (self.video, self.audio):
            if stream is not None:
                for packet in stream.encode(None):
                    self.container.mux(packet)
        self.container.close()
