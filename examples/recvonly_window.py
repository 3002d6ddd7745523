"""Show received video in a window (OpenCV) and play the audio (sounddevice, if installed).

    pip install opencv-python sounddevice        # sounddevice is optional
    python examples/recvonly_window.py --devserver
    SORA_SIGNALING_URLS=wss://sora.example.com/signaling SORA_CHANNEL_ID=ch \
        python examples/recvonly_window.py

Like the official ``media_recvonly.py``: each remote video track gets a
``VideoSink`` that converts frames to BGR in a worker thread; the window is
drawn on the main thread (``cv2.imshow`` does nothing elsewhere on macOS).
Audio goes through an ``AudioSink`` that a sounddevice callback reads without
waiting. Press q or Esc in the window to stop. With ``--devserver`` a
companion sends a test pattern and a tone.
"""

from __future__ import annotations

import asyncio
import time

import _common
import cv2

from sora_async import AudioSink, VideoSink


async def main() -> int:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    latest: dict[str, object] = {}  # window title -> newest VideoFrame
    sinks: list[object] = []
    speakers: list[object] = []

    def on_track(track):
        if track.kind == "video":
            sink = VideoSink(track, format="bgr24")
            sink.on("frame", lambda frame: latest.__setitem__(f"sora {track.stream_id}", frame))
            sinks.append(sink)
        else:
            speaker = play(track)
            if speaker is not None:
                speakers.append(speaker)

    shown = 0
    async with _common.target(args) as where, _common.companion_sender(where):
        conn = where.connection("recvonly")
        conn.on("track", on_track)
        async with conn:
            print(f"connected as {conn.connection_id}; waiting for video", flush=True)
            started = time.monotonic()
            while time.monotonic() - started < args.duration:
                for title, frame in list(latest.items()):
                    cv2.imshow(title, frame.data())
                    shown += 1
                latest.clear()
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
                await asyncio.sleep(1 / 60)
            for sink in sinks:
                await sink.close()
    for speaker in speakers:
        speaker.close()
    cv2.destroyAllWindows()
    print(f"shown {shown} frames")
    return 0 if shown > 0 else 6


def play(track):
    """Play ``track`` on the default output device, if sounddevice is installed."""
    try:
        import sounddevice
    except ImportError:
        print("sounddevice is not installed: not playing audio")
        return None
    sink = AudioSink(track, output_frequency=48000, output_channels=1)

    def callback(outdata, frames, time_info, status):  # a PortAudio thread
        ok, pcm = sink.read_nowait(frames)
        outdata[:] = 0
        if ok and pcm is not None:
            outdata[: len(pcm)] = pcm

    stream = sounddevice.OutputStream(
        samplerate=48000, channels=1, dtype="int16", callback=callback
    )
    stream.start()
    return stream


if __name__ == "__main__":
    _common.run(main)
