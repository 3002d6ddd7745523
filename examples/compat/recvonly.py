"""recvonly: receive a channel's audio and video, the way the official recvonly sample does.

``on_track`` makes a ``SoraAudioSink`` (16 kHz mono) and a ``SoraVideoSink``
per track; video frames go through a queue to the main thread (where a GUI
would show them), and the main thread pulls audio with
``SoraAudioSink.read(frames)`` as an audio output callback would. Written
against ``sora_sdk``'s API: only the import line differs.

    SORA_SIGNALING_URLS=wss://sora.example.com/signaling SORA_CHANNEL_ID=sora \\
        python examples/compat/recvonly.py

Environment: ``SORA_SIGNALING_URLS``, ``SORA_CHANNEL_ID``, ``SORA_METADATA``,
``SORA_RUN_SECONDS`` (default: until Ctrl-C).
"""

import json
import os
import queue
import threading
import time
from typing import Any

import numpy as np

from sora_async.compat import (
    Sora,
    SoraAudioSink,
    SoraMediaTrack,
    SoraSignalingErrorCode,
    SoraVideoFrame,
    SoraVideoSink,
)


class Recvonly:
    def __init__(
        self, signaling_urls: list[str], channel_id: str, metadata: dict[str, Any] | None = None
    ) -> None:
        self._channel_id = channel_id
        self._sora = Sora()
        self._connection = self._sora.create_connection(
            signaling_urls=signaling_urls,
            role="recvonly",
            channel_id=channel_id,
            metadata=metadata,
        )
        self._connection_id: str | None = None
        self._connected = threading.Event()
        self._closed = threading.Event()
        self._audio_sinks: list[SoraAudioSink] = []
        self._video_sinks: list[SoraVideoSink] = []
        self._frames: queue.Queue[np.ndarray] = queue.Queue(maxsize=30)
        self._connection.on_set_offer = self._on_set_offer
        self._connection.on_notify = self._on_notify
        self._connection.on_disconnect = self._on_disconnect
        self._connection.on_track = self._on_track

    def connect(self) -> None:
        self._connection.connect()
        assert self._connected.wait(10), "Could not connect to Sora."

    def disconnect(self) -> None:
        self._connection.disconnect()

    def _on_set_offer(self, raw_message: str) -> None:
        message = json.loads(raw_message)
        if message["type"] == "offer":
            self._connection_id = message["connection_id"]

    def _on_notify(self, raw_message: str) -> None:
        message = json.loads(raw_message)
        if (
            message["type"] == "notify"
            and message["event_type"] == "connection.created"
            and message["connection_id"] == self._connection_id
        ):
            print(f"Connected: channel_id={self._channel_id} connection_id={self._connection_id}")
            self._connected.set()

    def _on_disconnect(self, error_code: SoraSignalingErrorCode, message: str) -> None:
        print(f"Disconnected: error_code={error_code.name} message={message!r}")
        self._connected.clear()
        self._closed.set()

    def _on_track(self, track: SoraMediaTrack) -> None:
        print(f"Track: kind={track.kind} stream_id={track.stream_id}")
        if track.kind == "audio":
            self._audio_sinks.append(SoraAudioSink(track, 16000, 1))
        elif track.kind == "video":
            sink = SoraVideoSink(track)
            sink.on_frame = self._on_frame
            self._video_sinks.append(sink)

    def _on_frame(self, frame: SoraVideoFrame) -> None:
        # Do not block in a callback: hand the picture to the main thread.
        try:
            self._frames.put_nowait(frame.data())
        except queue.Full:
            pass

    def run(self, seconds: float | None) -> None:
        self.connect()
        video_frames = 0
        audio_samples = 0
        last_size = None
        try:
            deadline = None if seconds is None else time.monotonic() + seconds
            while self._connected.is_set():
                if deadline is not None and time.monotonic() > deadline:
                    break
                try:
                    image = self._frames.get(timeout=0.1)
                    video_frames += 1
                    if image.shape != last_size:
                        last_size = image.shape
                        print(f"Video: {image.shape[1]}x{image.shape[0]}")
                except queue.Empty:
                    pass
                for sink in list(self._audio_sinks):
                    # What a 16 kHz output stream callback asks for: 10 ms at a time.
                    while True:
                        success, data = sink.read(160, 0)
                        if not success or data is None:
                            break
                        audio_samples += len(data)
            print(f"Received: video_frames={video_frames} audio_samples={audio_samples}")
        except KeyboardInterrupt:
            pass
        finally:
            self.disconnect()


def main() -> None:
    signaling_urls = os.environ["SORA_SIGNALING_URLS"].split(",")
    channel_id = os.environ["SORA_CHANNEL_ID"]
    metadata = json.loads(os.environ["SORA_METADATA"]) if os.environ.get("SORA_METADATA") else None
    seconds = float(os.environ["SORA_RUN_SECONDS"]) if os.environ.get("SORA_RUN_SECONDS") else None
    Recvonly(signaling_urls, channel_id, metadata).run(seconds)


if __name__ == "__main__":
    main()
