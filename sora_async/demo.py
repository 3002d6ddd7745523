"""The README demo: a local Sora-compatible dev server and two clients, media flowing.

    python3 dev.py demo [--duration 10] [--width 640 --height 360]

A sendonly client sends a moving test pattern and a 440 Hz tone; a recvonly
client joins the same channel, decodes what the dev server forwards and
reports the frame size, frame rate and the tone's frequency. Both exchange a
message over a ``#demo`` DataChannel. The exit status is 0 only if video
frames of the sent size and the tone really arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import AUDIO_PTIME, MediaStreamTrack

from sora_async import Connection
from sora_async.devserver import DevServer

TONE_HZ = 440.0


class PatternTrack(MediaStreamTrack):
    """A moving colour bar pattern, so the encoder has real work to do."""

    kind = "video"

    def __init__(self, width: int, height: int, fps: int = 30) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._start: float | None = None
        self._index = 0

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        target = self._start + self._index / self.fps
        await asyncio.sleep(max(0.0, target - time.monotonic()))
        image = np.zeros((self.height, self.width, 3), np.uint8)
        x = (self._index * 8) % self.width
        image[:, x : x + self.width // 8] = (0, 160, 255)
        image[(self._index * 3) % self.height :: 7, :, 1] = 200
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = self._index * 90000 // self.fps
        frame.time_base = fractions.Fraction(1, 90000)
        self._index += 1
        return frame


class ToneTrack(MediaStreamTrack):
    """A sine tone, 20 ms per frame, paced in real time."""

    kind = "audio"

    def __init__(self, frequency: float = TONE_HZ, sample_rate: int = 48000) -> None:
        super().__init__()
        self.frequency, self.sample_rate = frequency, sample_rate
        self._start: float | None = None
        self._samples = 0

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        count = int(AUDIO_PTIME * self.sample_rate)
        target = self._start + self._samples / self.sample_rate
        await asyncio.sleep(max(0.0, target - time.monotonic()))
        t = (np.arange(count) + self._samples) / self.sample_rate
        pcm = (np.sin(2 * np.pi * self.frequency * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        self._samples += count
        return frame


@dataclass
class Reception:
    frames: int = 0
    sizes: set[tuple[int, int]] = field(default_factory=set)
    audio: list[np.ndarray] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)

    def tone_frequency(self) -> float | None:
        if not self.audio:
            return None
        samples = np.concatenate(self.audio)[-48000:].astype(np.float64)
        if samples.size < 4800 or not samples.any():
            return None
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
        return float(np.fft.rfftfreq(samples.size, 1 / 48000)[int(np.argmax(spectrum))])


async def _consume_video(track: MediaStreamTrack, reception: Reception) -> None:
    while True:
        frame = await track.recv()
        assert isinstance(frame, av.VideoFrame)
        reception.frames += 1
        reception.sizes.add((frame.width, frame.height))


async def _consume_audio(track: MediaStreamTrack, reception: Reception) -> None:
    while True:
        frame = await track.recv()
        assert isinstance(frame, av.AudioFrame)
        pcm = frame.to_ndarray()
        # aiortc's Opus decoder yields packed stereo s16; keep the first channel
        channels = len(frame.layout.channels)
        reception.audio.append(pcm.reshape(-1, channels)[:, 0] if channels > 1 else pcm.ravel())


async def run(duration: float, width: int, height: int) -> bool:
    reception = Reception()
    consumers: list[asyncio.Task[None]] = []
    async with DevServer(port=0) as server:
        print(f"dev server: {server.signaling_url}  (HTTP API {server.api_url})")
        common: dict[str, Any] = {
            "channel_id": "sora-async-demo",
            "video_codec_type": "VP8",
            "data_channel_signaling": True,
        }
        sender = Connection(
            server.signaling_url,
            role="sendonly",
            audio_source=ToneTrack(),
            video_source=PatternTrack(width, height),
            data_channels=[{"label": "#demo", "direction": "sendonly"}],
            **common,
        )
        receiver = Connection(
            server.signaling_url,
            role="recvonly",
            data_channels=[{"label": "#demo", "direction": "recvonly"}],
            **common,
        )

        def on_track(track: object) -> None:
            kind = track.kind  # type: ignore[attr-defined]
            print(f"receiver: remote {kind} track from {track.stream_id}")  # type: ignore[attr-defined]
            consume = _consume_video if kind == "video" else _consume_audio
            consumers.append(asyncio.create_task(consume(track.track, reception)))  # type: ignore[attr-defined]

        receiver.on("track", on_track)
        receiver.on("message", lambda label, data: reception.messages.append(data))
        async with sender, receiver:
            print(f"sender {sender.connection_id} and receiver {receiver.connection_id} connected")
            started = time.monotonic()
            last = 0
            while time.monotonic() - started < duration:
                await sender.send_data_channel("#demo", f"hello #{last}".encode())
                await asyncio.sleep(1)
                print(
                    f"  {time.monotonic() - started:4.1f}s  video frames {reception.frames:4d} "
                    f"(+{reception.frames - last}/s) sizes {sorted(reception.sizes)}  "
                    f"tone {reception.tone_frequency() or 0:.0f} Hz  "
                    f"messages {len(reception.messages)}"
                )
                last = reception.frames
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)

    tone = reception.tone_frequency()
    ok = (
        reception.frames > 0
        and (width, height) in reception.sizes
        and tone is not None
        and abs(tone - TONE_HZ) < TONE_HZ * 0.05
        and bool(reception.messages)
    )
    print(
        f"result: {reception.frames} frames {sorted(reception.sizes)}, tone "
        f"{tone or 0:.0f} Hz, {len(reception.messages)} messages -> {'OK' if ok else 'FAILED'}"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    return 0 if asyncio.run(run(args.duration, args.width, args.height)) else 1


if __name__ == "__main__":
    sys.exit(main())
