"""encoded_transform: append bytes to every encoded frame on send, check and strip them on receive.

The sender passes a ``SoraAudioFrameTransformer`` and a
``SoraVideoFrameTransformer`` to ``create_connection``; their ``on_transform``
appends ``b"sora"`` to each encoded frame and ``enqueue``s it. The receiver
sets transformers on the remote tracks with ``set_frame_transformer`` that
check the trailer, strip it, and hand the frame on to the decoder (this is
what the official SDK's own encoded-transform test does). Only the import line
differs from code for ``sora_sdk``.

    SORA_ROLE=sendonly SORA_SIGNALING_URLS=... SORA_CHANNEL_ID=sora \\
        python examples/compat/encoded_transform.py
    SORA_ROLE=recvonly SORA_SIGNALING_URLS=... SORA_CHANNEL_ID=sora \\
        python examples/compat/encoded_transform.py

Environment: ``SORA_ROLE`` (sendonly/recvonly), ``SORA_SIGNALING_URLS``,
``SORA_CHANNEL_ID``, ``SORA_METADATA``, ``SORA_VIDEO_CODEC_TYPE`` (VP8),
``SORA_RUN_SECONDS`` (default: until Ctrl-C).
"""

import json
import os
import threading
import time
from typing import Any

import numpy as np

from sora_async.compat import (
    Sora,
    SoraAudioFrameTransformer,
    SoraMediaTrack,
    SoraSignalingErrorCode,
    SoraTransformableAudioFrame,
    SoraTransformableVideoFrame,
    SoraVideoFrame,
    SoraVideoFrameTransformer,
    SoraVideoSink,
)

TRAILER = b"sora"


class EncodedTransform:
    def __init__(
        self,
        role: str,
        signaling_urls: list[str],
        channel_id: str,
        metadata: dict[str, Any] | None = None,
        video_codec_type: str = "VP8",
    ) -> None:
        self._role = role
        self._sora = Sora()
        self._lock = threading.Lock()
        self.counts = {"audio_marked": 0, "video_marked": 0, "unmarked": 0, "decoded": 0}
        self._audio_transformer = SoraAudioFrameTransformer()
        self._video_transformer = SoraVideoFrameTransformer()
        self._audio_source = None
        self._video_source = None
        options: dict[str, Any] = {}
        if role == "sendonly":
            self._audio_transformer.on_transform = self._append_audio
            self._video_transformer.on_transform = self._append_video
            self._audio_source = self._sora.create_audio_source(1, 16000)
            self._video_source = self._sora.create_video_source()
            options = {
                "audio_source": self._audio_source,
                "video_source": self._video_source,
                "audio_frame_transformer": self._audio_transformer,
                "video_frame_transformer": self._video_transformer,
                "video_codec_type": video_codec_type,
            }
        else:
            self._audio_transformer.on_transform = self._strip_audio
            self._video_transformer.on_transform = self._strip_video
        self._connection = self._sora.create_connection(
            signaling_urls=signaling_urls,
            role=role,
            channel_id=channel_id,
            metadata=metadata,
            **options,
        )
        self._connection_id: str | None = None
        self._connected = threading.Event()
        self._closed = threading.Event()
        self._video_sinks: list[SoraVideoSink] = []
        self._threads: list[threading.Thread] = []
        self._connection.on_set_offer = self._on_set_offer
        self._connection.on_notify = self._on_notify
        self._connection.on_disconnect = self._on_disconnect
        self._connection.on_track = self._on_track

    # -- sender: append the trailer ------------------------------------------------------

    def _append_audio(self, frame: SoraTransformableAudioFrame) -> None:
        frame.set_data(np.concatenate([frame.get_data(), np.frombuffer(TRAILER, np.uint8)]))
        self._audio_transformer.enqueue(frame)

    def _append_video(self, frame: SoraTransformableVideoFrame) -> None:
        frame.set_data(np.concatenate([frame.get_data(), np.frombuffer(TRAILER, np.uint8)]))
        self._video_transformer.enqueue(frame)

    # -- receiver: check and strip it ------------------------------------------------------

    def _strip(self, frame: Any, kind: str) -> None:
        data = frame.get_data()
        if data.tobytes().endswith(TRAILER):
            frame.set_data(np.ascontiguousarray(data[: -len(TRAILER)]))
            key = f"{kind}_marked"
        else:
            key = "unmarked"
        with self._lock:
            self.counts[key] += 1

    def _strip_audio(self, frame: SoraTransformableAudioFrame) -> None:
        self._strip(frame, "audio")
        self._audio_transformer.enqueue(frame)

    def _strip_video(self, frame: SoraTransformableVideoFrame) -> None:
        self._strip(frame, "video")
        self._video_transformer.enqueue(frame)

    # -- connection ------------------------------------------------------------------------

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
            print(f"Connected: role={self._role} connection_id={self._connection_id}")
            self._connected.set()

    def _on_disconnect(self, error_code: SoraSignalingErrorCode, message: str) -> None:
        print(f"Disconnected: error_code={error_code.name} message={message!r}")
        self._connected.clear()
        self._closed.set()

    def _on_track(self, track: SoraMediaTrack) -> None:
        if track.kind == "audio":
            track.set_frame_transformer(self._audio_transformer)
        elif track.kind == "video":
            track.set_frame_transformer(self._video_transformer)
            sink = SoraVideoSink(track)
            sink.on_frame = self._on_frame
            self._video_sinks.append(sink)

    def _on_frame(self, frame: SoraVideoFrame) -> None:
        with self._lock:
            self.counts["decoded"] += 1

    def _fake_media(self) -> None:
        assert self._audio_source is not None and self._video_source is not None
        n = 0
        while not self._closed.is_set():
            self._audio_source.on_data(np.zeros((320, 1), np.int16))
            if n % 3 == 0:
                image = np.full((240, 320, 3), (n * 5) % 256, np.uint8)
                self._video_source.on_captured(image)
            n += 1
            time.sleep(0.02)

    def run(self, seconds: float | None) -> None:
        if self._role == "sendonly":
            thread = threading.Thread(target=self._fake_media, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._connection.connect()
        assert self._connected.wait(10), "Could not connect to Sora."
        try:
            deadline = None if seconds is None else time.monotonic() + seconds
            while self._connected.is_set():
                if deadline is not None and time.monotonic() > deadline:
                    break
                self._closed.wait(0.2)
            with self._lock:
                print(f"Counts: {json.dumps(self.counts, sort_keys=True)}", flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            self._connection.disconnect()
            self._closed.set()
            for thread in self._threads:
                thread.join(5)


def main() -> None:
    role = os.environ.get("SORA_ROLE", "sendonly")
    signaling_urls = os.environ["SORA_SIGNALING_URLS"].split(",")
    channel_id = os.environ["SORA_CHANNEL_ID"]
    metadata = json.loads(os.environ["SORA_METADATA"]) if os.environ.get("SORA_METADATA") else None
    seconds = float(os.environ["SORA_RUN_SECONDS"]) if os.environ.get("SORA_RUN_SECONDS") else None
    EncodedTransform(
        role,
        signaling_urls,
        channel_id,
        metadata,
        video_codec_type=os.environ.get("SORA_VIDEO_CODEC_TYPE", "VP8"),
    ).run(seconds)


if __name__ == "__main__":
    main()
