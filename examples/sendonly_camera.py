"""Send a camera (OpenCV) and, if sounddevice is installed, the microphone.

    pip install opencv-python sounddevice        # sounddevice is optional
    python examples/sendonly_camera.py --devserver --duration 10
    SORA_SIGNALING_URLS=wss://sora.example.com/signaling SORA_CHANNEL_ID=ch \
        python examples/sendonly_camera.py --camera 0 --video-codec-type VP9

Like the official ``media_sendonly.py``: frames from ``cv2.VideoCapture`` go to a
``VideoSource`` (``write`` never blocks: the newest frame wins if the encoder is
behind), microphone blocks from a sounddevice callback to an ``AudioSource``.
With ``--devserver`` a companion receiver checks that the video arrived.
"""

from __future__ import annotations

import asyncio
import time

import _common
import cv2

from sora_async import AudioSource, VideoSource


async def main() -> int:
    parser = _common.parser(__doc__.splitlines()[0])
    parser.add_argument("--camera", type=int, default=0, help="OpenCV camera index (default 0)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--video-codec-type", default="VP8")
    parser.add_argument("--no-audio", action="store_true", help="do not open the microphone")
    args = parser.parse_args()

    camera = cv2.VideoCapture(args.camera)
    camera.set(cv2.CAP_PROP_FRAME_WIDTH, args.width)
    camera.set(cv2.CAP_PROP_FRAME_HEIGHT, args.height)
    camera.set(cv2.CAP_PROP_FPS, args.fps)
    if not camera.isOpened():
        print(f"cannot open camera {args.camera}")
        return 5
    video = VideoSource()
    audio, microphone = open_microphone(args.no_audio)

    async with _common.target(args) as where, _common.companion_receiver(where) as receiver:
        conn = where.connection(
            "sendonly",
            video_source=video,
            audio_source=audio,
            audio=audio is not None,
            video_codec_type=args.video_codec_type,
        )
        async with conn:
            print(f"connected as {conn.connection_id}; sending camera {args.camera}", flush=True)
            started = time.monotonic()
            while time.monotonic() - started < args.duration:
                # read() blocks until the camera has a frame: keep it off the event loop.
                ok, bgr = await asyncio.to_thread(camera.read)
                if not ok:
                    print("the camera stopped")
                    break
                video.write(bgr)
            got = await _common.received(receiver)
    camera.release()
    if microphone is not None:
        microphone.close()
    print(f"sent {video.frames_sent} frames ({video.frames_dropped} replaced by newer ones)")
    if receiver is not None:
        print(f"the companion received {got['video']} bytes of video")
        return 0 if got["video"] > 0 else 6
    return 0 if video.frames_sent > 0 else 6


def open_microphone(disabled: bool) -> tuple[AudioSource | None, object | None]:
    """An AudioSource fed by the default microphone, if sounddevice is installed."""
    if disabled:
        return None, None
    try:
        import sounddevice
    except ImportError:
        print("sounddevice is not installed: sending video only")
        return None, None
    source = AudioSource(channels=1, sample_rate=16000)

    def on_block(indata, frames, time_info, status):  # a PortAudio thread: write() is thread-safe
        source.write(indata)

    stream = sounddevice.InputStream(
        samplerate=16000, channels=1, dtype="int16", blocksize=160, callback=on_block
    )
    stream.start()
    return source, stream


if __name__ == "__main__":
    _common.run(main)
