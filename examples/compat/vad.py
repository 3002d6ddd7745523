"""vad: voice activity of a received audio stream.

As in the official VAD sample: recvonly, audio only; each remote audio track
gets a ``SoraAudioStreamSink(track, 24000, 1)`` whose 10 ms frames go through
``SoraVAD.analyze``; a probability above 0.95 is voice. Only the import line
differs from code for ``sora_sdk``.

    SORA_SIGNALING_URLS=wss://sora.example.com/signaling SORA_CHANNEL_ID=sora \\
        python examples/compat/vad.py

Environment: ``SORA_SIGNALING_URLS``, ``SORA_CHANNEL_ID``, ``SORA_METADATA``,
``SORA_RUN_SECONDS`` (default: until Ctrl-C).
"""

import json
import os
import threading
import time
from typing import Any

from sora_async.compat import (
    Sora,
    SoraAudioFrame,
    SoraAudioStreamSink,
    SoraMediaTrack,
    SoraSignalingErrorCode,
    SoraVAD,
)

VOICE_THRESHOLD = 0.95


class VAD:
    def __init__(
        self, signaling_urls: list[str], channel_id: str, metadata: dict[str, Any] | None = None
    ) -> None:
        self._sora = Sora()
        self._connection = self._sora.create_connection(
            signaling_urls=signaling_urls,
            role="recvonly",
            channel_id=channel_id,
            metadata=metadata,
            audio=True,
            video=False,
        )
        self._connection_id: str | None = None
        self._connected = threading.Event()
        self._closed = threading.Event()
        self._sinks: list[SoraAudioStreamSink] = []
        self._vad = SoraVAD()
        self._frames = 0
        self._voiced = False
        self._connection.on_set_offer = self._on_set_offer
        self._connection.on_notify = self._on_notify
        self._connection.on_disconnect = self._on_disconnect
        self._connection.on_track = self._on_track

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
            print(f"Connected: connection_id={self._connection_id}")
            self._connected.set()

    def _on_disconnect(self, error_code: SoraSignalingErrorCode, message: str) -> None:
        print(f"Disconnected: error_code={error_code.name} message={message!r}")
        self._connected.clear()
        self._closed.set()

    def _on_track(self, track: SoraMediaTrack) -> None:
        if track.kind == "audio":
            sink = SoraAudioStreamSink(track, 24000, 1)
            sink.on_frame = self._on_frame
            self._sinks.append(sink)

    def _on_frame(self, frame: SoraAudioFrame) -> None:
        probability = self._vad.analyze(frame)
        self._frames += 1
        if self._frames % 50 == 0:  # twice a second
            print(f"Voice probability: {probability:.3f}", flush=True)
        voiced = probability > VOICE_THRESHOLD
        if voiced and not self._voiced:
            print("Voice!", flush=True)
        self._voiced = voiced

    def run(self, seconds: float | None) -> None:
        self._connection.connect()
        assert self._connected.wait(10), "Could not connect to Sora."
        try:
            deadline = None if seconds is None else time.monotonic() + seconds
            while self._connected.is_set():
                if deadline is not None and time.monotonic() > deadline:
                    break
                self._closed.wait(0.2)
            print(f"Frames analysed: {self._frames}")
        except KeyboardInterrupt:
            pass
        finally:
            self._connection.disconnect()


def main() -> None:
    signaling_urls = os.environ["SORA_SIGNALING_URLS"].split(",")
    channel_id = os.environ["SORA_CHANNEL_ID"]
    metadata = json.loads(os.environ["SORA_METADATA"]) if os.environ.get("SORA_METADATA") else None
    seconds = float(os.environ["SORA_RUN_SECONDS"]) if os.environ.get("SORA_RUN_SECONDS") else None
    VAD(signaling_urls, channel_id, metadata).run(seconds)


if __name__ == "__main__":
    main()
