"""The README demo: a local Sora-compatible dev server and two clients, media flowing.

    python3 dev.py demo                    # or: sora-async demo / python -m sora_async.demo
    python -m sora_async.demo --duration 5 --resolution 320x240 --video-codec-type VP9

It starts the dev server in this process, connects a sendonly client that
sends a moving test pattern with a clock and a 440 Hz tone, and a recvonly
client that decodes what the server forwards. For ``--duration`` seconds (15
by default) a live view shows both connections' state, codec, frame rate,
bit rate and round-trip time, with a thumbnail of the received picture (plain
lines instead when the output is not a terminal). Then it writes
``demo-received.png`` (the last received frame) and ``demo-received.wav``
(the received audio) and exits 0 only if video frames of the sent size, the
tone and DataChannel messages really arrived (6 otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio_sink import AudioStreamSink
from .cli.args import VIDEO_CODECS
from .cli.live import ConnectionRow, LiveView
from .cli.media import TONE_HZ, TestPatternTrack, ToneTrack, encode_png
from .cli.stats import StatsTracker
from .connection import Connection
from .devserver import DevServer
from .frames import AudioFrame, VideoFrame
from .runner import run as run_program
from .video_sink import VideoSink

CHANNEL_ID = "sora-async-demo"
#: Received audio kept for the WAV file and the tone check, at most (seconds).
MAX_AUDIO_SECONDS = 60


@dataclass
class Reception:
    """What the receiving client got."""

    frames: int = 0
    sizes: set[tuple[int, int]] = field(default_factory=set)
    last_frame: VideoFrame | None = None
    audio: list[np.ndarray] = field(default_factory=list)
    audio_samples: int = 0
    messages: list[bytes] = field(default_factory=list)

    def add_video(self, frame: VideoFrame) -> None:
        """Count one received video frame and keep it as the newest."""
        self.frames += 1
        self.sizes.add((frame.width, frame.height))
        self.last_frame = frame

    def add_audio(self, frame: AudioFrame) -> None:
        """Keep 10 ms of received audio (mono, 48 kHz)."""
        self.audio.append(frame.data()[:, 0].copy())
        self.audio_samples += frame.samples_per_channel
        while self.audio_samples > MAX_AUDIO_SECONDS * 48000 and self.audio:
            self.audio_samples -= len(self.audio.pop(0))

    def tone_frequency(self) -> float | None:
        """The loudest frequency (Hz) of the last second of audio, or None if silent."""
        if not self.audio:
            return None
        samples = np.concatenate(self.audio[-100:]).astype(np.float64)
        if samples.size < 4800 or not samples.any():
            return None
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
        return float(np.fft.rfftfreq(samples.size, 1 / 48000)[int(np.argmax(spectrum))])


def build_parser() -> argparse.ArgumentParser:
    """The demo's options (also those of ``sora-async demo``)."""
    parser = argparse.ArgumentParser(
        prog="python -m sora_async.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--duration", type=float, default=15.0, metavar="SECONDS", help="(default 15)"
    )
    parser.add_argument(
        "--resolution", default="640x360", metavar="WxH", help="sent size (default 640x360)"
    )
    parser.add_argument(
        "--video-codec-type",
        choices=VIDEO_CODECS,
        type=str.upper,
        default="VP8",
        help="(default VP8)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="where demo-received.png/.wav go (default: the current directory)",
    )
    parser.add_argument("--plain", action="store_true", help="plain lines, no live view")
    parser.add_argument("--verbose", action="store_true", help="log what the clients do")
    return parser


async def run(
    duration: float,
    width: int,
    height: int,
    *,
    codec: str = "VP8",
    output_dir: Path = Path("."),
    plain: bool = False,
) -> bool:
    """Run the demo; True if media arrived as sent (see the module docstring)."""
    reception = Reception()
    sinks: list[Any] = []
    view = LiveView("sora_async demo", file=sys.stdout, plain=plain)
    with view:
        async with DevServer(port=0) as server:
            loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
            view.print(
                f"dev server: {server.signaling_url}  (HTTP API {server.api_url}; "
                f"event loop: {loop})"
            )
            common: dict[str, Any] = {
                "channel_id": CHANNEL_ID,
                "video_codec_type": codec,
                "data_channel_signaling": True,
            }
            sender = Connection(
                server.signaling_url,
                role="sendonly",
                audio_source=ToneTrack(),
                video_source=TestPatternTrack(width, height),
                data_channels=[{"label": "#demo", "direction": "sendonly"}],
                **common,
            )
            receiver = Connection(
                server.signaling_url,
                role="recvonly",
                data_channels=[{"label": "#demo", "direction": "recvonly"}],
                **common,
            )

            def on_track(track: Any) -> None:
                view.print(f"receiver: remote {track.kind} track from {track.stream_id}")
                if track.kind == "video":
                    sink: Any = VideoSink(track)
                    sink.on("frame", reception.add_video)
                else:
                    sink = AudioStreamSink(track, output_frequency=48000, output_channels=1)
                    sink.on("frame", reception.add_audio)
                sinks.append(sink)

            receiver.on("track", on_track)
            receiver.on("message", lambda label, data: reception.messages.append(data))
            trackers = {"sender": StatsTracker(), "receiver": StatsTracker()}
            async with sender, receiver:
                view.print(
                    f"sender {sender.connection_id} and receiver {receiver.connection_id} connected"
                )
                started = time.monotonic()
                next_message = started
                while (elapsed := time.monotonic() - started) < duration:
                    if time.monotonic() >= next_message:
                        await sender.send_data_channel("#demo", f"hello #{int(elapsed)}".encode())
                        next_message += 1.0
                    rows = []
                    for name, conn in (("sender", sender), ("receiver", receiver)):
                        summary = trackers[name].update(await conn.get_stats())
                        rows.append(
                            ConnectionRow(name, conn.state.name, summary, conn.connection_id)
                        )
                    view.update(rows, [_reception_line(reception)], _thumbnail(reception))
                    await asyncio.sleep(0.5)
            for sink in sinks:
                await sink.close()

    ok = _verdict(reception, width, height)
    png, wav = output_dir / "demo-received.png", output_dir / "demo-received.wav"
    if reception.last_frame is not None:
        write_png(png, reception.last_frame.data())
        print(f"wrote {png} (the last received frame)")
    if reception.audio:
        write_wav(wav, np.concatenate(reception.audio), 48000)
        print(f"wrote {wav} ({reception.audio_samples / 48000:.1f} s of received audio)")
    tone = reception.tone_frequency()
    print(
        f"result: {reception.frames} frames {sorted(reception.sizes)}, tone "
        f"{tone or 0:.0f} Hz, {len(reception.messages)} messages -> {'OK' if ok else 'FAILED'}"
    )
    return ok


def _reception_line(reception: Reception) -> str:
    tone = reception.tone_frequency()
    sizes = ", ".join(f"{w}x{h}" for w, h in sorted(reception.sizes)) or "-"
    return (
        f"received: {reception.frames} video frames ({sizes}), "
        f"tone {tone or 0:.0f} Hz, {len(reception.messages)} messages on #demo"
    )


def _thumbnail(reception: Reception) -> np.ndarray | None:
    frame = reception.last_frame
    if frame is None:
        return None
    small = frame.frame.reformat(
        width=96, height=max(2, 96 * frame.height // frame.width), format="bgr24"
    )
    return small.to_ndarray()


def _verdict(reception: Reception, width: int, height: int) -> bool:
    tone = reception.tone_frequency()
    return (
        reception.frames > 0
        and (width, height) in reception.sizes
        and tone is not None
        and abs(tone - TONE_HZ) < TONE_HZ * 0.05
        and bool(reception.messages)
    )


def write_png(path: Path, bgr: np.ndarray) -> None:
    """Write a BGR (H, W, 3) uint8 image as a PNG file (PyAV's PNG encoder)."""
    path.write_bytes(encode_png(bgr))


def write_wav(path: Path, pcm: np.ndarray, sample_rate: int) -> None:
    """Write int16 mono ``pcm`` as a WAV file."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(np.ascontiguousarray(pcm, dtype=np.int16).tobytes())


def _resolution(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"demo: --resolution must be WIDTHxHEIGHT, got {text!r}") from None
    return width, height


def run_from_args(args: argparse.Namespace) -> bool:
    """Run the demo with parsed :func:`build_parser` options (blocking)."""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    width, height = _resolution(args.resolution)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    # uvloop when installed (sora_async.runner): cheaper per-packet work.
    return run_program(
        run(
            args.duration,
            width,
            height,
            codec=args.video_codec_type,
            output_dir=args.output_dir,
            plain=args.plain,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sora_async.demo``: 0 if media arrived, 6 (no media) otherwise."""
    args = build_parser().parse_args(argv)
    try:
        return 0 if run_from_args(args) else 6
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
