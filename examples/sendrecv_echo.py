"""Echo: send back, mirrored, the video and audio received from the first other client.

    python examples/sendrecv_echo.py --devserver
    SORA_SIGNALING_URLS=... SORA_CHANNEL_ID=ch python examples/sendrecv_echo.py

A ``sendrecv`` connection whose sources are fed by its own sinks: each
received video frame is flipped left-right (numpy) and written to a
``VideoSource``; received audio (48 kHz mono) goes straight into an
``AudioSource``. With ``--devserver`` a companion sendrecv client sends a test
pattern and counts the echo it gets back.
"""

from __future__ import annotations

import asyncio

import _common

from sora_async import AudioSource, AudioStreamSink, VideoSink, VideoSource


async def main() -> int:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    video = VideoSource()
    audio = AudioSource(channels=1, sample_rate=48000)
    echoing: dict[str, str] = {}  # kind -> the stream we echo (the first one of each kind)
    tasks: list[asyncio.Task[None]] = []
    echoed = {"video": 0, "audio": 0}

    async def echo_video(track):
        async for frame in VideoSink(track):
            video.write(frame.data()[:, ::-1])  # mirror; write() copies
            echoed["video"] += 1

    async def echo_audio(track):
        async for frame in AudioStreamSink(track, output_frequency=48000, output_channels=1):
            audio.write(frame.data())
            echoed["audio"] += 1

    def on_track(track):
        if echoing.setdefault(track.kind, track.stream_id) != track.stream_id:
            return  # echo one client only
        print(f"echoing {track.kind} of {track.stream_id}", flush=True)
        echo = echo_video if track.kind == "video" else echo_audio
        tasks.append(asyncio.create_task(echo(track)))

    async with _common.target(args) as where:
        conn = where.connection(
            "sendrecv", video_source=video, audio_source=audio, video_codec_type="VP8"
        )
        conn.on("track", on_track)
        async with conn:
            print(f"connected as {conn.connection_id}", flush=True)
            async with _common.companion_sender(where, role="sendrecv") as peer:
                await asyncio.sleep(args.duration)
                got = await _common.received(peer)
        for task in tasks:
            task.cancel()
    print(f"echoed {echoed['video']} video frames and {echoed['audio'] / 100:.1f} s of audio")
    if peer is not None:
        print(f"the companion got back {got['video']} bytes of video, {got['audio']} of audio")
        return 0 if got["video"] > 0 and got["audio"] > 0 else 6
    return 0


if __name__ == "__main__":
    _common.run(main)
