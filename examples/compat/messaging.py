"""messaging: send lines to a DataChannel label and print what arrives on it.

As in the official messaging sample: sendrecv with audio and video off,
``data_channel_signaling=True`` and one label; messages are sent with
``send_data_channel`` once ``on_data_channel`` reported the label open, and
``on_message`` prints what others send. Lines come from stdin (or from
``SORA_MESSAGES``, separated by ``|``). Only the import line differs from code
for ``sora_sdk``.

    SORA_SIGNALING_URLS=wss://sora.example.com/signaling SORA_CHANNEL_ID=sora \\
        python examples/compat/messaging.py

Environment: ``SORA_SIGNALING_URLS``, ``SORA_CHANNEL_ID``, ``SORA_METADATA``,
``SORA_MESSAGING_LABEL`` (default ``#example``), ``SORA_MESSAGES``,
``SORA_RUN_SECONDS`` (how long to stay after sending; default: until Ctrl-C).
"""

import json
import os
import sys
import threading
import time
from typing import Any

from sora_async.compat import Sora, SoraSignalingErrorCode


class Messaging:
    def __init__(
        self,
        signaling_urls: list[str],
        channel_id: str,
        label: str,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._label = label
        self._sora = Sora()
        self._connection = self._sora.create_connection(
            signaling_urls=signaling_urls,
            role="sendrecv",
            channel_id=channel_id,
            metadata=metadata,
            audio=False,
            video=False,
            data_channel_signaling=True,
            data_channels=[{"label": label, "direction": "sendrecv"}],
        )
        self._connection_id: str | None = None
        self._connected = threading.Event()
        self._label_open = threading.Event()
        self._switched = threading.Event()
        self._closed = threading.Event()
        self._connection.on_set_offer = self._on_set_offer
        self._connection.on_notify = self._on_notify
        self._connection.on_switched = self._on_switched
        self._connection.on_data_channel = self._on_data_channel
        self._connection.on_message = self._on_message
        self._connection.on_disconnect = self._on_disconnect

    def connect(self) -> None:
        self._connection.connect()
        assert self._connected.wait(10), "Could not connect to Sora."
        # Sora relays to a connection once all its channels are open (it then sends switched).
        assert self._label_open.wait(10) and self._switched.wait(10), "label not open"

    def send(self, data: bytes) -> bool:
        return self._connection.send_data_channel(self._label, data)

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
            print(f"Connected: connection_id={self._connection_id}")
            self._connected.set()

    def _on_switched(self, raw_message: str) -> None:
        self._switched.set()

    def _on_data_channel(self, label: str) -> None:
        if label == self._label:
            print(f"Open: {label}")
            self._label_open.set()

    def _on_message(self, label: str, data: bytes) -> None:
        print(f"Received on {label}: {data.decode(errors='replace')}", flush=True)

    def _on_disconnect(self, error_code: SoraSignalingErrorCode, message: str) -> None:
        print(f"Disconnected: error_code={error_code.name} message={message!r}")
        self._connected.clear()
        self._closed.set()

    def run(self, lines: list[str] | None, seconds: float | None) -> None:
        self.connect()
        try:
            for line in lines if lines is not None else sys.stdin:
                text = line.rstrip("\n")
                if text:
                    print(f"Sent: {text} ({self.send(text.encode())})", flush=True)
            deadline = None if seconds is None else time.monotonic() + seconds
            while self._connected.is_set():
                if deadline is not None and time.monotonic() > deadline:
                    break
                self._closed.wait(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            self.disconnect()


def main() -> None:
    signaling_urls = os.environ["SORA_SIGNALING_URLS"].split(",")
    channel_id = os.environ["SORA_CHANNEL_ID"]
    metadata = json.loads(os.environ["SORA_METADATA"]) if os.environ.get("SORA_METADATA") else None
    label = os.environ.get("SORA_MESSAGING_LABEL", "#example")
    lines = os.environ["SORA_MESSAGES"].split("|") if os.environ.get("SORA_MESSAGES") else None
    seconds = float(os.environ["SORA_RUN_SECONDS"]) if os.environ.get("SORA_RUN_SECONDS") else None
    Messaging(signaling_urls, channel_id, label, metadata).run(lines, seconds)


if __name__ == "__main__":
    main()
