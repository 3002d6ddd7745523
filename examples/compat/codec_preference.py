"""codec_preference: list what this machine can encode/decode, then send with a chosen codec.

``get_video_codec_capability()`` probes every codec engine;
``create_video_codec_preference_from_implementation`` makes a preference
from one engine (here INTERNAL, the software codecs), which is narrowed to
one codec and given to ``Sora(video_codec_preference=...)``. The sendonly
connection then sends that codec (checked in ``get_stats()``). Only the import
line differs from code for ``sora_sdk``.

    SORA_SIGNALING_URLS=wss://sora.example.com/signaling SORA_CHANNEL_ID=sora \\
        python examples/compat/codec_preference.py

Environment: ``SORA_SIGNALING_URLS``, ``SORA_CHANNEL_ID``, ``SORA_METADATA``,
``SORA_VIDEO_CODEC_TYPE`` (default VP8), ``SORA_RUN_SECONDS`` (default 5).
"""

import json
import os
import threading
import time

import numpy as np

from sora_async.compat import (
    Sora,
    SoraSignalingErrorCode,
    SoraVideoCodecImplementation,
    SoraVideoCodecPreference,
    SoraVideoCodecType,
    create_video_codec_preference_from_implementation,
    get_video_codec_capability,
)


def print_capability() -> None:
    capability = get_video_codec_capability()
    for engine in capability.engines:
        codecs = ", ".join(
            f"{codec.type.name}({'E' if codec.encoder else '-'}{'D' if codec.decoder else '-'})"
            for codec in engine.codecs
        )
        print(f"Engine {engine.name.name}: {codecs}")


def internal_preference(codec_type: SoraVideoCodecType) -> SoraVideoCodecPreference:
    capability = get_video_codec_capability()
    preference = create_video_codec_preference_from_implementation(
        capability, SoraVideoCodecImplementation.INTERNAL
    )
    index = preference.find(codec_type)
    assert index is not None, f"{codec_type.name} is not available"
    chosen = preference.codecs[index]
    assert chosen.encoder is not None, f"{codec_type.name} cannot be encoded here"
    return SoraVideoCodecPreference([chosen])


def main() -> None:
    signaling_urls = os.environ["SORA_SIGNALING_URLS"].split(",")
    channel_id = os.environ["SORA_CHANNEL_ID"]
    metadata = json.loads(os.environ["SORA_METADATA"]) if os.environ.get("SORA_METADATA") else None
    seconds = float(os.environ.get("SORA_RUN_SECONDS", "5"))
    codec_name = os.environ.get("SORA_VIDEO_CODEC_TYPE", "VP8")

    print_capability()
    preference = internal_preference(next(t for t in SoraVideoCodecType if t.name == codec_name))
    print(f"Preference: {json.dumps(preference.to_json(), sort_keys=True)}")

    sora = Sora(video_codec_preference=preference)
    video_source = sora.create_video_source()
    connection = sora.create_connection(
        signaling_urls=signaling_urls,
        role="sendonly",
        channel_id=channel_id,
        metadata=metadata,
        audio=False,
        video_codec_type=codec_name,
        video_source=video_source,
    )
    connected = threading.Event()
    closed = threading.Event()
    offer: dict[str, str] = {}

    def on_set_offer(raw: str) -> None:
        offer.update(connection_id=json.loads(raw)["connection_id"])

    def on_notify(raw: str) -> None:
        message = json.loads(raw)
        if message.get("event_type") == "connection.created" and message.get(
            "connection_id"
        ) == offer.get("connection_id"):
            connected.set()

    def on_disconnect(error_code: SoraSignalingErrorCode, message: str) -> None:
        print(f"Disconnected: error_code={error_code.name} message={message!r}")
        closed.set()

    connection.on_set_offer = on_set_offer
    connection.on_notify = on_notify
    connection.on_disconnect = on_disconnect
    connection.connect()
    try:
        assert connected.wait(10), "Could not connect to Sora."
        print(f"Connected: connection_id={offer['connection_id']}")
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline and not closed.is_set():
            video_source.on_captured(np.full((240, 320, 3), (n * 3) % 256, np.uint8))
            n += 1
            time.sleep(1 / 15)
        stats = json.loads(connection.get_stats())
        codecs = {s["id"]: s for s in stats if s.get("type") == "codec"}
        for s in stats:
            if s.get("type") == "outbound-rtp" and s.get("kind") == "video":
                mime = codecs.get(s.get("codecId"), {}).get("mimeType")
                print(f"Sending: {mime} frames_encoded={s.get('framesEncoded')}")
    finally:
        connection.disconnect()


if __name__ == "__main__":
    main()
