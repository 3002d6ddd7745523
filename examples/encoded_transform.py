"""Encoded transform: carry metadata inside each encoded video frame, in lock-step with it.

    python examples/encoded_transform.py --devserver

The sender's ``VideoFrameTransformer`` appends a small trailer to every
encoded frame (after encoding, before packetizing): JSON with a sequence
number and the capture time, then its length in 2 bytes. The receiver's
transformer, set on the remote track, strips it before decoding and prints
it, so every decoded frame comes with the data sent alongside it. This is
the official ``SoraVideoFrameTransformer`` style: ``on_transform`` gets each
frame, ``enqueue`` hands it back (possibly later, from any thread).

The asyncio alternatives (a coroutine ``transform(frame) -> frame | None``, or
``async for frame in transformer`` + ``await transformer.put(frame)``) are in
:mod:`sora_async.transform`.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time

import _common

import sora_async
from sora_async.cli.media import TestPatternTrack


def add_trailer(data: bytes, seq: int) -> bytes:
    meta = json.dumps({"seq": seq, "t": round(time.time(), 3)}).encode()
    return data + meta + struct.pack("!H", len(meta))


def strip_trailer(data: bytes) -> tuple[bytes, dict | None]:
    if len(data) < 2:
        return data, None
    (size,) = struct.unpack("!H", data[-2:])
    if size + 2 > len(data):
        return data, None
    try:
        meta = json.loads(data[-2 - size : -2])
    except ValueError:
        return data, None
    return data[: -2 - size], meta


async def main() -> int:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    transformer_class = sora_async.VideoFrameTransformer
    sent = 0
    received: list[dict] = []

    outgoing = transformer_class()

    def on_outgoing(frame):
        nonlocal sent
        sent += 1
        frame.set_data(add_trailer(bytes(frame.get_data()), sent))
        outgoing.enqueue(frame)

    outgoing.on_transform = on_outgoing

    def on_track(track):
        if track.kind != "video":
            return
        incoming = transformer_class()

        def on_incoming(frame):
            data, meta = strip_trailer(bytes(frame.get_data()))
            if meta is not None:
                frame.set_data(data)
                received.append(meta)
            incoming.enqueue(frame)

        incoming.on_transform = on_incoming
        track.set_frame_transformer(incoming)

    async with _common.target(args) as where:
        sender = where.connection(
            "sendonly",
            video_source=TestPatternTrack(320, 240, fps=15),
            audio=False,
            video_frame_transformer=outgoing,
            video_codec_type="VP8",
        )
        receiver = where.connection("recvonly", audio=False)
        receiver.on("track", on_track)
        async with sender, receiver:
            await asyncio.sleep(args.duration)
    if received:
        last = received[-1]
        print(f"sent {sent} frames with metadata; received {len(received)}, last {last}")
    return 0 if received else 6


if __name__ == "__main__":
    _common.run(main)
