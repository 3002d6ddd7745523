"""Record what a channel receives (audio + video) to an MP4 file.

    python examples/record_mp4.py --devserver --output received.mp4 --duration 5
    SORA_SIGNALING_URLS=... SORA_CHANNEL_ID=ch python examples/record_mp4.py -o meeting.mp4

``sora_async.cli.record.Recorder`` muxes with PyAV (H.264 + AAC in MP4, H.264 +
Opus in MKV, VP8 + Opus in WebM), stamping frames with their arrival time
because Sora's audio and video RTP clocks are unrelated; it encodes in a
worker thread so the event loop never waits for x264. ``sora-async recvonly
--record FILE`` is the same thing on the command line.
"""

from __future__ import annotations

import asyncio

import _common
import av

from sora_async.cli.record import Recorder


async def main() -> int:
    parser = _common.parser(__doc__.splitlines()[0])
    parser.add_argument("--output", "-o", default="received.mp4")
    args = parser.parse_args()
    recorder = Recorder(args.output)

    async with _common.target(args) as where, _common.companion_sender(where):
        conn = where.connection("recvonly")
        conn.on("track", recorder.add_track)  # the first audio and the first video track
        async with conn:
            print(f"connected as {conn.connection_id}; recording to {args.output}", flush=True)
            await asyncio.sleep(args.duration)
    await recorder.close()
    print(f"recorded {recorder.video_frames} video and {recorder.audio_frames} audio frames")
    if not recorder.video_frames and not recorder.audio_frames:
        return 6
    with av.open(args.output) as container:
        for stream in container.streams:
            print(f"  {stream.type}: {stream.codec_context.name}")
        print(f"  {container.duration / 1e6:.1f} s")
    return 0


if __name__ == "__main__":
    _common.run(main)
