"""Relay channel A to channel B, processing the media on the way (grey video, quieter audio).

    python examples/relay.py --devserver
    SORA_SIGNALING_URLS=... python examples/relay.py --channel-id A --to-channel B

A recvonly connection on A and a sendonly one on B, in one process: frames
from A's ``VideoSink`` are turned grey with numpy and written to B's
``VideoSource``; A's audio (10 ms frames) goes to B's ``AudioSource`` at half
volume. Replace ``process_video``/``process_audio`` with your own (face blur,
captions, translation...). With ``--devserver`` a companion sends a colour
test pattern into A and another checks that B's video is grey.
"""

from __future__ import annotations

import asyncio

import _common
import numpy as np

from sora_async import AudioSource, AudioStreamSink, VideoSink, VideoSource


def process_video(bgr: np.ndarray) -> np.ndarray:
    """Greyscale, as an example of per-frame processing."""
    grey = bgr.mean(axis=2, dtype=np.float32).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def process_audio(pcm: np.ndarray) -> np.ndarray:
    """Half volume."""
    return (pcm // 2).astype(np.int16)


async def main() -> int:
    parser = _common.parser(__doc__.splitlines()[0])
    parser.add_argument("--to-channel", help="channel B (default: channel A + '-relayed')")
    args = parser.parse_args()
    video_out = VideoSource()
    audio_out = AudioSource(channels=1, sample_rate=48000)
    relayed = {"video": 0, "audio": 0}
    tasks: list[asyncio.Task[None]] = []

    async def relay_video(track):
        async for frame in VideoSink(track):
            # numpy work on a big frame would hold up the event loop: use a thread.
            video_out.write(await asyncio.to_thread(process_video, frame.data()))
            relayed["video"] += 1

    async def relay_audio(track):
        async for frame in AudioStreamSink(track, output_frequency=48000, output_channels=1):
            audio_out.write(process_audio(frame.data()))
            relayed["audio"] += 1

    def on_track(track):
        if any(task.get_name() == track.kind for task in tasks):
            return  # relay the first sender of each kind only
        relay = relay_video if track.kind == "video" else relay_audio
        tasks.append(asyncio.create_task(relay(track), name=track.kind))

    async with _common.target(args) as where:
        channel_b = args.to_channel or f"{where.channel_id}-relayed"
        source_a = where.connection("recvonly")
        source_a.on("track", on_track)
        sink_b = where.connection(
            "sendonly",
            channel_b,
            video_source=video_out,
            audio_source=audio_out,
            video_codec_type="VP8",
        )
        async with source_a, sink_b:
            print(f"relaying {where.channel_id} -> {channel_b}", flush=True)
            async with (
                _common.companion_sender(where),
                _common.companion_receiver(where, channel_b) as viewer,
            ):
                grey = await watch(viewer, args.duration)
        for task in tasks:
            task.cancel()
    print(f"relayed {relayed['video']} video frames and {relayed['audio'] / 100:.1f} s of audio")
    if viewer is not None:
        print(f"channel B showed {grey} grey frames")
        return 0 if grey > 0 else 6
    return 0


async def watch(viewer, duration: float) -> int:
    """On the dev server: count the grey frames a viewer of channel B gets."""
    if viewer is None:
        await asyncio.sleep(duration)
        return 0
    grey = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    while not (tracks := [t for t in viewer.tracks if t.kind == "video"]):
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.1)
    if tracks:
        async with VideoSink(tracks[0]) as sink:
            while (left := deadline - loop.time()) > 0:
                frame = await sink.get(timeout=left)
                if frame is None:
                    break
                bgr = frame.data().astype(np.int16)
                # Codecs blur colour a little: grey means the channels nearly agree.
                if np.abs(bgr[:, :, 0] - bgr[:, :, 2]).mean() < 8:
                    grey += 1
    return grey


if __name__ == "__main__":
    _common.run(main)
