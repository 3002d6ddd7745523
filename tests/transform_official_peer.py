"""An official ``sora_sdk`` client with encoded transformers, for tests/test_transform_official.py.

Run as a subprocess (``python tests/transform_official_peer.py``) with a JSON
config on argv[1]: ``signaling_url``, ``channel_id``, ``role`` (sendonly:
append ``b"sora"`` to every encoded frame; recvonly: check and strip it),
``video_codec_type``, ``seconds``, ``transform`` (default true; false: a
receiver without transformers). Prints one JSON line per event:
``{"event": "offer", "connection_id": ...}``, ``{"event": "connected"}``,
``{"event": "fields", ...}`` (the first frame of each kind: every documented
property) and at the end ``{"event": "counts", "counts": {stream: {...}}}``
(per sending connection on receive: frames marked/unmarked, video decoded).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import numpy as np
from sora_sdk import (  # type: ignore[import-not-found,unused-ignore]
    Sora,
    SoraAudioFrameTransformer,
    SoraVideoFrameTransformer,
    SoraVideoSink,
)

TRAILER = b"sora"
#: AV1: libwebrtc's RTP packetizer sends OBUs only (bytes that do not parse as OBUs
#: make it drop the frame), so an AV1 transform appends the trailer as one OBU of
#: the reserved type 14 (header 0x72: has_size_field) and strips that whole OBU,
#: wherever it is: the wire format sora_async uses for bytes appended to AV1 frames.
AV1_TRAILER = bytes([14 << 3 | 0x02, len(TRAILER)]) + TRAILER
_print_lock = threading.Lock()


def emit(**fields: Any) -> None:
    with _print_lock:
        print(json.dumps(fields, default=str), flush=True)


def describe(frame: Any, kind: str) -> dict[str, Any]:
    """Every documented property of ``frame`` (None stays None; arrays as lists)."""
    names = ["payload_type", "ssrc", "rtp_timestamp", "direction", "mine_type"]
    if kind == "audio":
        names += [
            "contributing_sources",
            "sequence_number",
            "absolute_capture_timestamp",
            "type",
            "audio_level",
            "receive_time",
        ]
    else:
        names += [
            "is_key_frame",
            "frame_id",
            "frame_dependencies",
            "width",
            "height",
            "spatial_index",
            "temporal_index",
            "contributing_sources",
        ]
    out: dict[str, Any] = {"kind": kind, "wall_ms": time.time() * 1000}
    for name in names:
        try:
            value = getattr(frame, name)
        except Exception as exc:  # a property the version lacks
            out[name] = f"<{type(exc).__name__}>"
            continue
        if isinstance(value, np.ndarray):
            value = {"dtype": str(value.dtype), "values": value.tolist()}
        elif hasattr(value, "name") and hasattr(value, "value"):
            value = f"{type(value).__name__}.{value.name}"
        elif value is not None and not isinstance(value, bool | int | float | str):
            value = repr(value)
        out[name] = value
    return out


def main() -> None:
    config = json.loads(sys.argv[1])
    role = config["role"]
    sora = Sora()
    lock = threading.Lock()
    #: per sending connection (the remote track's stream id) on receive, "self" on send
    counts: dict[str, dict[str, int]] = {}
    described: set[str] = set()
    transformers: list[Any] = []  # kept alive while the connection runs

    def count(stream: str, key: str) -> None:
        with lock:
            entry = counts.setdefault(
                stream, {"audio_marked": 0, "video_marked": 0, "unmarked": 0, "decoded": 0}
            )
            entry[key] += 1

    def note(frame: Any, kind: str, stream: str) -> None:
        with lock:
            if kind in described:
                return
            described.add(kind)
        emit(event="fields", role=role, stream=stream, **describe(frame, kind))

    def make(kind: str, stream: str) -> Any:
        cls = SoraAudioFrameTransformer if kind == "audio" else SoraVideoFrameTransformer
        transformer = cls()

        def append(frame: Any) -> None:
            note(frame, kind, stream)
            trailer = AV1_TRAILER if frame.mine_type == "video/AV1" else TRAILER
            frame.set_data(np.concatenate([frame.get_data(), np.frombuffer(trailer, np.uint8)]))
            transformer.enqueue(frame)

        def strip(frame: Any) -> None:
            note(frame, kind, stream)
            data = frame.get_data()
            raw = data.tobytes()
            at = raw.rfind(AV1_TRAILER) if frame.mine_type == "video/AV1" else -1
            if at >= 0:  # wherever the sender put the OBU (sora_async: before the frame OBU)
                frame.set_data(np.frombuffer(raw[:at] + raw[at + len(AV1_TRAILER) :], np.uint8))
                count(stream, f"{kind}_marked")
            elif raw.endswith(TRAILER):
                frame.set_data(np.ascontiguousarray(data[: -len(TRAILER)]))
                count(stream, f"{kind}_marked")
            else:
                count(stream, "unmarked")
            transformer.enqueue(frame)

        transformer.on_transform = append if role == "sendonly" else strip
        transformers.append(transformer)
        return transformer

    options: dict[str, Any] = {}
    audio_source = video_source = None
    if role == "sendonly":
        audio_source = sora.create_audio_source(1, 48000)
        video_source = sora.create_video_source()
        options = {
            "audio_source": audio_source,
            "video_source": video_source,
            "audio_frame_transformer": make("audio", "self"),
            "video_frame_transformer": make("video", "self"),
            "video_codec_type": config["video_codec_type"],
        }
    conn = sora.create_connection(
        signaling_urls=[config["signaling_url"]],
        role=role,
        channel_id=config["channel_id"],
        **options,
    )
    connected = threading.Event()
    closed = threading.Event()
    sinks: list[Any] = []

    def on_track(track: Any) -> None:
        stream = str(track.stream_id)
        if config.get("transform", True):
            track.set_frame_transformer(make(track.kind, stream))
        if track.kind == "video":
            sink = SoraVideoSink(track)
            sink.on_frame = lambda frame: count(stream, "decoded")
            sinks.append(sink)

    def on_set_offer(raw: str) -> None:
        message = json.loads(raw)
        emit(event="offer", connection_id=message.get("connection_id"))
        connected.set()

    def on_disconnect(code: Any, message: str) -> None:
        emit(event="disconnected", code=str(code), message=message)
        closed.set()

    conn.on_set_offer = on_set_offer
    conn.on_disconnect = on_disconnect
    conn.on_track = on_track
    stop = threading.Event()

    def fake_media() -> None:
        assert audio_source is not None and video_source is not None
        n = 0
        t = np.arange(960) / 48000
        while not stop.is_set():
            tone = (np.sin(2 * np.pi * 440 * (t + n * 0.02)) * 8000).astype(np.int16)
            audio_source.on_data(tone.reshape(-1, 1))
            if n % 3 == 0:
                image = np.full((240, 320, 3), (n * 5) % 256, np.uint8)
                image[:, (n * 4) % 320] = 255
                video_source.on_captured(image)
            n += 1
            time.sleep(0.02)

    thread = None
    if role == "sendonly":
        thread = threading.Thread(target=fake_media, daemon=True)
        thread.start()
    conn.connect()
    if not connected.wait(10):
        emit(event="error", message="no offer")
    else:
        emit(event="connected")
        closed.wait(float(config["seconds"]))
    with lock:
        emit(event="counts", counts=counts)
    stop.set()
    conn.disconnect()
    closed.wait(5)
    if thread is not None:
        thread.join(5)


if __name__ == "__main__":
    main()
