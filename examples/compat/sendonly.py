"""sendonly: send a test tone and a moving test picture to a Sora channel.

The structure of the official SDK's sendonly sample (fake audio and video
threads feeding ``SoraAudioSource.on_data`` / ``SoraVideoSource.on_captured``,
connection established on the own ``connection.created`` notify), written
against ``sora_sdk``'s API: to run it with the official SDK, change only the
import line to ``from sora_sdk import ...``.

    SORA_SIGNALING_URLS=wss://sora.example.com/signaling SORA_CHANNEL_ID=sora \\
        python examples/compat/sendonly.py

Environment: ``SORA_SIGNALING_URLS`` (comma separated), ``SORA_CHANNEL_ID``,
``SORA_METADATA`` (JSON), ``SORA_VIDEO_CODEC_TYPE`` (default VP8),
``SORA_VIDEO_WIDTH``/``SORA_VIDEO_HEIGHT`` (320x240), ``SORA_RUN_SECONDS``
(default: until Ctrl-C).
"""

import json
import math
import os
import threading
import time
from typing import Any

import numpy as np

from sora_async.compat import Sora, SoraConnection, SoraSignalingErrorCode


class Sendonly:
    def __init__(
        self,
        signaling_urls: list[str],
        channel_id: str,
        metadata: dict[str, Any] | None = None,
        video_codec_type: str = "VP8",
        width: int = 320,
        height: int = 240,
    ) -> None:
        self._channel_id = channel_id
        self._width, self._height = width, height
        self._sora = Sora()
        self._audio_source = self._sora.create_audio_source(1, 16000)
        self._video_source = self._sora.create_video_source()
        self._connection: SoraConnection = self._sora.create_connection(
            signaling_urls=signaling_urls,
            role="sendonly",
            channel_id=channel_id,
            metadata=metadata,
            audio=True,
            video=True,
            video_codec_type=video_codec_type,
            audio_source=self._audio_source,
            video_source=self._video_source,
        )
        self._connection_id: str | None = None
        self._connected = threading.Event()
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connection.on_set_offer = self._on_set_offer
        self._connection.on_notify = self._on_notify
        self._connection.on_disconnect = self._on_disconnect

    def connect(self) -> None:
        for target in (self._fake_audio_loop, self._fake_video_loop):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._connection.connect()
        assert self._connected.wait(10), "Could not connect to Sora."

    def disconnect(self) -> None:
        self._connection.disconnect()

    def get_stats(self) -> list[dict[str, Any]]:
        return json.loads(self._connection.get_stats())

    def _fake_audio_loop(self) -> None:
        # 20 ms of a 440 Hz tone at 16 kHz mono, paced in real time.
        n = 0
        while not self._closed.is_set():
            t = np.arange(n, n + 320) / 16000
            tone = (0.3 * 32767 * np.sin(2 * math.pi * 440 * t)).astype(np.int16)
            self._audio_source.on_data(tone.reshape(-1, 1))
            n += 320
            time.sleep(0.02)

    def _fake_video_loop(self) -> None:
        y, x = np.mgrid[0 : self._height, 0 : self._width]
        n = 0
        while not self._closed.is_set():
            frame = np.empty((self._height, self._width, 3), np.uint8)
            frame[:, :, 0] = (x + 4 * n) % 256
            frame[:, :, 1] = (y + 2 * n) % 256
            frame[:, :, 2] = (x + y) % 256
            self._video_source.on_captured(frame)
            n += 1
            time.sleep(1 / 15)

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

    def run(self, seconds: float | None) -> None:
        self.connect()
        try:
            deadline = None if seconds is None else time.monotonic() + seconds
            while self._connected.is_set():
                if deadline is not None and time.monotonic() > deadline:
                    break
                self._closed.wait(0.5)
            sent = {
                s["kind"]: s.get("bytesSent", 0)
                for s in self.get_stats()
                if s.get("type") == "outbound-rtp"
            }
            print(f"Sent bytes: {json.dumps(sent, sort_keys=True)}")
        except KeyboardInterrupt:
            pass
        finally:
            self.disconnect()
            self._closed.set()
            for thread in self._threads:
                thread.join(5)


def main() -> None:
    signaling_urls = os.environ["SORA_SIGNALING_URLS"].split(",")
    channel_id = os.environ["SORA_CHANNEL_ID"]
    metadata = json.loads(os.environ["SORA_METADATA"]) if os.environ.get("SORA_METADATA") else None
    seconds = float(os.environ["SORA_RUN_SECONDS"]) if os.environ.get("SORA_RUN_SECONDS") else None
    Sendonly(
        signaling_urls,
        channel_id,
        metadata,
        video_codec_type=os.environ.get("SORA_VIDEO_CODEC_TYPE", "VP8"),
        width=int(os.environ.get("SORA_VIDEO_WIDTH", "320")),
        height=int(os.environ.get("SORA_VIDEO_HEIGHT", "240")),
    ).run(seconds)


if __name__ == "__main__":
    main()
