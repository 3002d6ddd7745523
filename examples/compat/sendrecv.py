"""sendrecv: send fake audio/video from threads and receive everyone else's.

As in the official sendrecv sample: ``connect()`` starts the fake media
threads, the connection is up on the own ``connection.created``, received
video frames are kept per sender (by the track's ``stream_id``) and audio is
pulled from a ``SoraAudioSink``. Only the import line differs from code for
``sora_sdk``.

    SORA_SIGNALING_URLS=wss://sora.example.com/signaling SORA_CHANNEL_ID=sora \\
        python examples/compat/sendrecv.py

Environment: ``SORA_SIGNALING_URLS``, ``SORA_CHANNEL_ID``, ``SORA_METADATA``,
``SORA_VIDEO_CODEC_TYPE`` (VP8), ``SORA_RUN_SECONDS`` (default: until Ctrl-C).
"""

import json
import os
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


class Sendrecv:
    def __init__(
        self,
        signaling_urls: list[str],
        channel_id: str,
        metadata: dict[str, Any] | None = None,
        video_codec_type: str = "VP8",
    ) -> None:
        self._channel_id = channel_id
        self._sora = Sora()
        self._audio_source = self._sora.create_audio_source(1, 16000)
        self._video_source = self._sora.create_video_source()
        self._connection = self._sora.create_connection(
            signaling_urls=signaling_urls,
            role="sendrecv",
            channel_id=channel_id,
            metadata=metadata,
            video_codec_type=video_codec_type,
            audio_source=self._audio_source,
            video_source=self._video_source,
        )
        self._connection_id: str | None = None
        self._connected = threading.Event()
        self._closed = threading.Event()
        self._fake_threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._video_sinks: dict[str, SoraVideoSink] = {}
        self._audio_sinks: dict[str, SoraAudioSink] = {}
        self._frame_counts: dict[str, int] = {}
        self._connection.on_set_offer = self._on_set_offer
        self._connection.on_notify = self._on_notify
        self._connection.on_disconnect = self._on_disconnect
        self._connection.on_track = self._on_track

    def connect(self, fake_audio: bool = True, fake_video: bool = True) -> None:
        self._connection.connect()
        if fake_audio:
            self._fake_threads.append(threading.Thread(target=self._fake_audio_loop, daemon=True))
        if fake_video:
            self._fake_threads.append(threading.Thread(target=self._fake_video_loop, daemon=True))
        for thread in self._fake_threads:
            thread.start()
        assert self._connected.wait(10), "Could not connect to Sora."

    def disconnect(self) -> None:
        self._connection.disconnect()

    def _fake_audio_loop(self) -> None:
        # 20 ms of silence at 16 kHz mono.
        while not self._closed.is_set():
            time.sleep(0.02)
            self._audio_source.on_data(np.zeros((320, 1), dtype=np.int16))

    def _fake_video_loop(self) -> None:
        # A solid colour that changes every frame, 15 fps.
        rng = np.random.default_rng()
        while not self._closed.is_set():
            time.sleep(1 / 15)
            colour = rng.integers(0, 256, 3, dtype=np.uint8)
            self._video_source.on_captured(np.full((240, 320, 3), colour, dtype=np.uint8))

    def _on_set_offer(self, raw_message: str) -> None:
        message = json.loads(raw_message)
        if message["type"] == "offer":
            self._connection_id = message["connection_id"]

    def _on_notify(self, raw_message: str) -> None:
        message = json.loads(raw_message)
        if message["type"] != "notify":
            return
        if message["event_type"] == "connection.created":
            if message["connection_id"] == self._connection_id:
                print(f"Connected: connection_id={self._connection_id}")
                self._connected.set()
            else:
                print(f"Joined: connection_id={message['connection_id']}")
        elif message["event_type"] == "connection.destroyed":
            print(f"Left: connection_id={message['connection_id']}")

    def _on_disconnect(self, error_code: SoraSignalingErrorCode, message: str) -> None:
        print(f"Disconnected: error_code={error_code.name} message={message!r}")
        self._connected.clear()
        self._closed.set()
        for thread in self._fake_threads:
            thread.join(timeout=10)

    def _on_track(self, track: SoraMediaTrack) -> None:
        sender = track.stream_id
        if track.kind == "audio":
            self._audio_sinks[sender] = SoraAudioSink(track, 16000, 1)
        elif track.kind == "video":
            sink = SoraVideoSink(track)
            sink.on_frame = lambda frame, sender=sender: self._on_frame(sender, frame)
            self._video_sinks[sender] = sink

    def _on_frame(self, sender: str, frame: SoraVideoFrame) -> None:
        with self._lock:
            self._frame_counts[sender] = self._frame_counts.get(sender, 0) + 1
            count = self._frame_counts[sender]
        if count == 1:
            height, width = frame.data().shape[:2]
            print(f"First frame from {sender}: {width}x{height}")

    def run(self, seconds: float | None) -> None:
        self.connect()
        try:
            deadline = None if seconds is None else time.monotonic() + seconds
            while self._connected.is_set():
                if deadline is not None and time.monotonic() > deadline:
                    break
                for sink in list(self._audio_sinks.values()):
                    sink.read(0)  # drain: a speaker would play this
                self._closed.wait(0.2)
            with self._lock:
                print(f"Frames received: {json.dumps(self._frame_counts, sort_keys=True)}")
        except KeyboardInterrupt:
            pass
        finally:
            self.disconnect()


def main() -> None:
    signaling_urls = os.environ["SORA_SIGNALING_URLS"].split(",")
    channel_id = os.environ["SORA_CHANNEL_ID"]
    metadata = json.loads(os.environ["SORA_METADATA"]) if os.environ.get("SORA_METADATA") else None
    seconds = float(os.environ["SORA_RUN_SECONDS"]) if os.environ.get("SORA_RUN_SECONDS") else None
    Sendrecv(
        signaling_urls,
        channel_id,
        metadata,
        video_codec_type=os.environ.get("SORA_VIDEO_CODEC_TYPE", "VP8"),
    ).run(seconds)


if __name__ == "__main__":
    main()
