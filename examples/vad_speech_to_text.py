"""Voice activity detection on received audio, with a speech-to-text hook per utterance.

    python examples/vad_speech_to_text.py --devserver                 # espeak-ng speaks
    python examples/vad_speech_to_text.py --devserver --speech-file talk.flac
    SORA_SIGNALING_URLS=... SORA_CHANNEL_ID=ch python examples/vad_speech_to_text.py

Like the official ``vad.py``: an ``AudioStreamSink(track, 16000, 1)`` yields
10 ms frames and ``VAD.analyze(frame) > 0.95`` means voice. Voiced frames are
gathered into utterances; when one ends, ``transcribe()`` gets its PCM. Plug
your engine in there (an example with faster-whisper is in its docstring);
the default only reports the utterance. With ``--devserver`` a companion
speaks with espeak-ng (or plays ``--speech-file``).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path

import _common
import av
import numpy as np

from sora_async import VAD, AudioSource, AudioStreamSink

VOICE = 0.95  # the official examples' threshold
SENTENCES = ["Hello from Sora.", "This sentence is a test of voice activity detection."]


async def transcribe(pcm: np.ndarray, sample_rate: int) -> str | None:
    """Speech-to-text for one utterance (int16 ``(samples, 1)``); None = no engine.

    With faster-whisper (``pip install faster-whisper``; it downloads a model)::

        from faster_whisper import WhisperModel
        model = WhisperModel("small", compute_type="int8")

        async def transcribe(pcm, sample_rate):
            audio = pcm[:, 0].astype(np.float32) / 32768    # 16 kHz float, as Whisper wants
            segments, _ = await asyncio.to_thread(model.transcribe, audio, language="en")
            return "".join(segment.text for segment in segments)
    """
    return None


async def listen(track, utterances: list[float]) -> None:
    """Cut the track's audio into utterances with the VAD and hand each to transcribe()."""
    vad = VAD()
    voiced: list[np.ndarray] = []
    async for frame in AudioStreamSink(track, output_frequency=16000, output_channels=1):
        if vad.analyze(frame) > VOICE:
            voiced.append(frame.data())
        elif voiced:  # the VAD holds 200 ms after speech: this is the end of an utterance
            pcm = np.concatenate(voiced)
            voiced = []
            seconds = len(pcm) / 16000
            if seconds < 0.3:
                continue  # a click, not speech
            utterances.append(seconds)
            text = await transcribe(pcm, 16000)
            text = text or "(plug a speech-to-text engine into transcribe())"
            print(f"utterance {len(utterances)}: {seconds:.1f} s: {text}", flush=True)


async def speak(conn_source: AudioSource, speech: list[np.ndarray]) -> None:
    """The dev-server companion: say each utterance, with a second of silence between."""
    for pcm in speech:
        for start in range(0, len(pcm), 960):
            await conn_source.send(pcm[start : start + 960])  # waits when 200 ms are queued
        await conn_source.wait_for_playout(timeout=10)
        await asyncio.sleep(1.0)


def load_speech(path: str | None) -> list[np.ndarray]:
    """Utterances as 48 kHz mono int16: from ``path``, or spoken by espeak-ng."""
    files: list[Path] = []
    if path:
        files = [Path(path)]
    elif shutil.which("espeak-ng"):
        tmp = Path(tempfile.mkdtemp())
        for index, sentence in enumerate(SENTENCES):
            files.append(tmp / f"{index}.wav")
            subprocess.run(["espeak-ng", "-w", str(files[-1]), sentence], check=True)
    else:
        raise SystemExit("no espeak-ng: give --speech-file FILE (any audio FFmpeg reads)")
    speech = []
    for file in files:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        with av.open(str(file)) as container:
            chunks = [
                out.to_ndarray().reshape(-1, 1)
                for frame in container.decode(audio=0)
                for out in resampler.resample(frame)
            ]
        speech.append(np.concatenate(chunks))
    return speech


async def main() -> int:
    parser = _common.parser(__doc__.splitlines()[0])
    parser.add_argument("--speech-file", help="what the --devserver companion says")
    args = parser.parse_args()
    utterances: list[float] = []
    tasks: list[asyncio.Task[None]] = []

    def on_track(track):
        if track.kind == "audio":
            tasks.append(asyncio.create_task(listen(track, utterances)))

    async with _common.target(args) as where:
        conn = where.connection("recvonly", video=False)
        conn.on("track", on_track)
        async with conn:
            print(f"connected as {conn.connection_id}; listening", flush=True)
            if where.devserver is not None:
                mouth = AudioSource(channels=1, sample_rate=48000)
                speech = load_speech(args.speech_file)
                async with where.connection("sendonly", audio_source=mouth, video=False):
                    await asyncio.wait_for(speak(mouth, speech), timeout=args.duration + 30)
                    await asyncio.sleep(0.5)
            else:
                await asyncio.sleep(args.duration)
        for task in tasks:
            task.cancel()
    print(f"{len(utterances)} utterances detected")
    return 0 if utterances else 6


if __name__ == "__main__":
    _common.run(main)
