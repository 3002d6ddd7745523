"""Simulcast: send three layers (r0/r1/r2) of one video and show what each one carries.

    python examples/simulcast_sender.py --devserver
    SORA_SIGNALING_URLS=... SORA_CHANNEL_ID=ch \\
        python examples/simulcast_sender.py --video-codec-type VP9

``simulcast=True`` asks Sora for simulcast; Sora's offer lists the encodings
(r0 = 1/4, r1 = 1/2, r2 = full size by default) and the sender encodes the
same frames once per layer. ``get_stats()`` has one ``outbound-rtp`` per layer
with its ``rid``. Receivers pick a layer with ``simulcast_request_rid`` (the
dev-server companion asks for r1). If this build sends a single stream
(no ``rid`` in the stats), the example says so and exits 7.
"""

from __future__ import annotations

import asyncio

import _common

from sora_async.cli.media import TestPatternTrack


async def main() -> int:
    parser = _common.parser(__doc__.splitlines()[0])
    parser.add_argument("--resolution", default="960x540")
    parser.add_argument("--video-codec-type", default="VP8")
    args = parser.parse_args()
    width, height = (int(n) for n in args.resolution.split("x"))

    async with _common.target(args) as where:
        sender = where.connection(
            "sendonly",
            video_source=TestPatternTrack(width, height, fps=15),
            audio=False,
            simulcast=True,
            video_codec_type=args.video_codec_type,
        )
        async with sender:
            print(f"connected as {sender.connection_id}; simulcast {width}x{height}", flush=True)
            async with _common.companion_receiver(
                where, simulcast=True, simulcast_request_rid="r1", audio=False
            ) as viewer:
                layers = await report(sender, args.duration)
                viewer_sizes = {
                    (e.get("frameWidth"), e.get("frameHeight"))
                    for e in (await viewer.get_stats() if viewer else [])
                    if e.get("type") == "inbound-rtp" and e.get("frameWidth")
                }
    if not layers:
        print("simulcast send is not available in this build: one stream was sent, no rid layers")
        return _common.UNSUPPORTED
    if viewer is not None:
        print(f"the companion asked for r1 and received {sorted(viewer_sizes)}")
    sending = [rid for rid, (_, sent) in layers.items() if sent > 0]
    return 0 if len(sending) >= 2 else 6


async def report(sender, duration: float) -> dict[str, tuple[str, int]]:
    """Print each layer once a second; returns {rid: (size, bytes sent)}."""
    layers: dict[str, tuple[str, int]] = {}
    previous: dict[str, int] = {}
    for _ in range(max(1, round(duration))):
        await asyncio.sleep(1)
        for entry in await sender.get_stats():
            if entry.get("type") != "outbound-rtp" or entry.get("kind") != "video":
                continue
            rid = entry.get("rid")
            if not rid:
                continue
            sent = int(entry.get("bytesSent", 0))
            size = f"{entry.get('frameWidth', 0)}x{entry.get('frameHeight', 0)}"
            kbps = (sent - previous.get(rid, sent)) * 8 / 1000
            previous[rid] = sent
            layers[rid] = (size, sent)
            print(
                f"  {rid}: {size:>9} {entry.get('framesPerSecond') or 0:5.1f} fps {kbps:7.0f} kbps",
                flush=True,
            )
    return layers


if __name__ == "__main__":
    _common.run(main)
