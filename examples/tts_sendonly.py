"""Text-to-speech into a Sora channel, paced by back-pressure.

    python examples/tts_sendonly.py --devserver "Hello from Python."
    SORA_SIGNALING_URLS=... SORA_CHANNEL_ID=ch python examples/tts_sendonly.py "Hello"

A TTS engine produces audio much faster than real time. ``await
AudioSource.send(chunk)`` waits while more than ``queue_ms`` (200 ms here) is
queued, so the producer runs at playout speed and memory stays flat;
``wait_for_playout()`` waits until the last sample went out. The voice is
espeak-ng's when it is installed, otherwise a generated melody.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import time
import wave

import _common
import numpy as np

from sora_async import AudioSource


def synthesize(text: str) -> tuple[np.ndarray, int]:
    """``(int16 (samples, 1), sample_rate)``: espeak-ng, or a melody if it is missing."""
    if shutil.which("espeak-ng"):
        wav = subprocess.run(
            ["espeak-ng", "--stdout", text], check=True, capture_output=True
        ).stdout
        with wave.open(io.BytesIO(wav)) as reader:
            rate = reader.getframerate()
            # espeak-ng streams a WAV of unknown length: read what is there.
            pcm = np.frombuffer(wav[44:], dtype=np.int16)
        return pcm.reshape(-1, 1), rate
    print("espeak-ng is not installed: sending a melody instead")
    rate = 24000
    notes = [262, 294, 330, 349, 392, 440, 494, 523]
    t = np.arange(int(rate * 0.25)) / rate
    envelope = np.minimum(1, np.minimum(t, t[::-1]) * 40)
    melody = np.concatenate([np.sin(2 * np.pi * f * t) * envelope for f in notes])
    return (melody * 10000).astype(np.int16).reshape(-1, 1), rate


async def main() -> int:
    parser = _common.parser(__doc__.splitlines()[0])
    parser.add_argument(
        "text", nargs="?", default="Hello from sora async. This voice is paced by back pressure."
    )
    args = parser.parse_args()
    pcm, rate = synthesize(args.text)
    source = AudioSource(channels=1, sample_rate=rate, queue_ms=200)

    async with _common.target(args) as where, _common.companion_receiver(where, video=False) as ear:
        async with where.connection("sendonly", audio_source=source, video=False) as conn:
            print(
                f"connected as {conn.connection_id}; speaking {len(pcm) / rate:.1f} s", flush=True
            )
            started = time.monotonic()
            peak_queue = 0.0
            chunk = rate // 50  # 20 ms; any size works
            for offset in range(0, len(pcm), chunk):
                await source.send(pcm[offset : offset + chunk])  # waits while 200 ms are queued
                peak_queue = max(peak_queue, source.queued_ms)
            produced = time.monotonic() - started
            await source.wait_for_playout(timeout=10)
            print(
                f"produced {len(pcm) / rate:.1f} s of audio in {produced:.1f} s "
                f"(paced by back-pressure; queue never above {peak_queue:.0f} ms)"
            )
            await asyncio.sleep(0.5)
            got = await _common.received(ear)
    if ear is not None:
        print(f"the companion received {got['audio']} bytes of audio")
        return 0 if got["audio"] > 0 else 6
    return 0


if __name__ == "__main__":
    _common.run(main)
