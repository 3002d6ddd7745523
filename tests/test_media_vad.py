"""``VAD`` against labelled audio the test builds, and next to the official ``SoraVAD``.

The audio: the four espeak-ng utterances of ``fixtures/speech_16k.flac``
(``fixtures/make_speech.py``), twice, each followed by 2 s of something that
is not speech (white, pink and brown noise, a 440 Hz and a 1 kHz tone, a
C major chord, a melody of 150-500 ms notes with harmonics, silence) and
0.5 s of silence, all under a -64 dBFS noise floor; 48 kHz stereo 10 ms
frames, as a sink delivers them, so resampling and downmixing are exercised.

Labels, per 10 ms: speech where the utterance's 110 ms energy envelope is
within 35 dB of its peak, with pauses shorter than 300 ms inside an
utterance counted as speech (an annotator marks utterances, not syllables);
everything else is non-speech. A frame is "voice" when ``analyze`` > 0.95,
the official examples' threshold.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest

from sora_async import VAD, AudioFrame
from tests.official.harness import SORA_SDK_AVAILABLE

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "speech_16k.flac"
RATE = 48000
FRAME = RATE // 100
THRESHOLD = 0.95


def load_utterances() -> list[np.ndarray]:
    """The fixture's four utterances (split at its 0.5 s digital silences), at 48 kHz."""
    with av.open(str(FIXTURE)) as container:
        pcm = np.concatenate([f.to_ndarray().ravel() for f in container.decode(audio=0)])
    silent = pcm == 0
    # Runs of exact zeros >= 0.45 s are the generator's gaps (FLAC is lossless).
    utterances, start, i = [], 0, 0
    for value, group in itertools.groupby(silent):
        length = len(list(group))
        if value and length >= 0.45 * 16000:
            if i > start:
                utterances.append(pcm[start:i])
            start = i + length
        i += length
    if i > start and not silent[start:].all():
        utterances.append(pcm[start:])
    assert len(utterances) == 4, "the fixture has four utterances"
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    out = []
    for utterance in utterances:
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(utterance, np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = 16000
        parts = [f.to_ndarray().ravel() for f in resampler.resample(frame)]
        out.append(np.concatenate(parts).astype(np.float64))
    return out


def non_speech(rng: np.random.Generator) -> list[np.ndarray]:
    t = np.arange(2 * RATE) / RATE

    def colored(exponent: float, level: float) -> np.ndarray:
        spectrum = np.fft.rfft(rng.normal(size=len(t)))
        f = np.fft.rfftfreq(len(t), 1 / RATE)
        f[0] = f[1]
        x = np.fft.irfft(spectrum / f ** (exponent / 2), len(t))
        return x / np.std(x) * level

    def melody() -> np.ndarray:
        notes: list[np.ndarray] = []
        while sum(len(n) for n in notes) < len(t):
            f0 = 220 * 2 ** (rng.integers(0, 12) / 12)
            tt = np.arange(int(rng.uniform(0.15, 0.5) * RATE)) / RATE
            envelope = np.minimum(1, np.minimum(tt / 0.01, (tt[-1] - tt) / 0.02))
            notes.append(
                envelope
                * np.sum(
                    [
                        a * np.sin(2 * np.pi * f0 * k * tt)
                        for k, a in ((1, 4000), (2, 2000), (3, 1000))
                    ],
                    axis=0,
                )
            )
        return np.concatenate(notes)[: len(t)]

    return [
        colored(0, 2000),  # white
        6000 * np.sin(2 * np.pi * 440 * t),
        melody(),
        colored(1, 3000),  # pink
        np.sum([2500 * np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)], axis=0),  # chord
        colored(2, 3000),  # brown
        5000 * np.sin(2 * np.pi * 1000 * t),
        np.zeros(len(t)),
    ]


def labelled_audio() -> tuple[np.ndarray, np.ndarray]:
    """(int16 (samples, 2) at 48 kHz, bool per 10 ms frame: speech)."""
    rng = np.random.default_rng(4)
    utterances = load_utterances()
    others = non_speech(rng)
    pieces: list[tuple[np.ndarray, bool]] = [(np.zeros(RATE), False)]
    for i, speech in enumerate(utterances * 2):
        pieces += [(speech, True), (others[i % len(others)], False), (np.zeros(RATE // 2), False)]
    signal = np.concatenate([p for p, _ in pieces])
    is_speech = np.concatenate([np.full(len(p), s) for p, s in pieces])
    signal = np.clip(signal + rng.normal(0, 20, len(signal)), -32768, 32767)
    frames = len(signal) // FRAME
    signal, is_speech = signal[: frames * FRAME], is_speech[: frames * FRAME]
    rms = np.sqrt((signal.reshape(frames, FRAME) ** 2).mean(axis=1))
    envelope = np.convolve(rms, np.ones(11) / 11, "same")
    in_utterance = is_speech.reshape(frames, FRAME).mean(axis=1) > 0.5
    labels = in_utterance & (envelope > rms[in_utterance].max() * 10 ** (-35 / 20))
    start = 0
    for value, group in itertools.groupby(labels.copy()):
        length = len(list(group))
        if not value and 0 < start and start + length < frames and length < 30:
            labels[start : start + length] = in_utterance[start : start + length]
        start += length
    mono = signal.astype(np.int16)
    return np.stack([mono, mono], axis=1), labels


def agreement(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    voice = probabilities > THRESHOLD
    return (
        float((voice == labels).mean()),
        float(voice[labels].mean()),  # speech frames found
        float(voice[~labels].mean()),  # false alarms
    )


def test_vad_agrees_with_labels_on_90_percent_of_10ms_frames() -> None:
    pcm, labels = labelled_audio()
    vad = VAD()
    probabilities = np.array(
        [
            vad.analyze(AudioFrame(pcm[i * FRAME : (i + 1) * FRAME], RATE))
            for i in range(len(labels))
        ]
    )
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    accuracy, recall, false_alarms = agreement(probabilities, labels)
    # The 200 ms hold (and the 300 ms feature window) make "voice" outlast an
    # utterance by up to 0.4 s: count false alarms away from speech separately.
    since_speech = np.full(len(labels), 10**6)
    last = -(10**6)
    for i, is_speech in enumerate(labels):
        last = i if is_speech else last
        since_speech[i] = i - last
    sounds = ~labels & (since_speech > 40)
    sound_alarms = float((probabilities[sounds] > THRESHOLD).mean())
    print(
        f"\nVAD vs labels over {len(labels)} frames ({labels.mean():.0%} speech): "
        f"agreement {accuracy:.1%}, speech found {recall:.1%}, false alarms {false_alarms:.1%} "
        f"({sound_alarms:.1%} more than 0.4 s after speech)"
    )
    assert accuracy >= 0.90
    assert recall >= 0.85
    assert sound_alarms <= 0.05


def test_vad_is_near_zero_on_silence_noise_and_tones_and_high_on_speech() -> None:
    rng = np.random.default_rng(7)
    for name, signal in zip(
        ["white", "440 Hz", "melody", "pink", "chord", "brown", "1 kHz", "silence"],
        non_speech(rng),
        strict=True,
    ):
        vad = VAD()
        pcm = signal.astype(np.int16).reshape(-1, 1)
        values = [
            vad.analyze(AudioFrame(pcm[i : i + FRAME], RATE)) for i in range(0, len(pcm), FRAME)
        ]
        assert np.median(values[50:]) < 0.2, name
    vad = VAD()
    speech = load_utterances()[0].astype(np.int16).reshape(-1, 1)
    values = [
        vad.analyze(AudioFrame(speech[i : i + FRAME], RATE)) for i in range(0, len(speech), FRAME)
    ]
    assert np.median(values) > THRESHOLD


def test_vad_takes_any_rate_channels_and_frame_length() -> None:
    vad = VAD()
    for rate, channels, ms in [(16000, 1, 10), (8000, 2, 20), (44100, 1, 30), (24000, 2, 10)]:
        frame = AudioFrame(np.zeros((rate * ms // 1000, channels), np.int16), rate)
        assert 0.0 <= vad.analyze(frame) <= 1.0
    with pytest.raises(TypeError):
        vad.analyze(AudioFrame(np.zeros((160, 1), np.int16), 16000).data())  # not a frame


_OFFICIAL = """
import json, sys
import numpy as np
import sora_sdk
pcm = np.load(sys.argv[1])
rate, size = int(sys.argv[2]), int(sys.argv[3])
vad = sora_sdk.SoraVAD()
out = []
for i in range(len(pcm) // size):
    chunk = np.ascontiguousarray(pcm[i * size:(i + 1) * size])
    frame = sora_sdk.SoraAudioFrame.__new__(sora_sdk.SoraAudioFrame)
    frame.__setstate__((chunk.view(np.uint16).ravel().tolist(), size, chunk.shape[1], rate, None))
    out.append(vad.analyze(frame))
print(json.dumps(out))
"""


@pytest.mark.official
@pytest.mark.skipif(not SORA_SDK_AVAILABLE, reason="sora_sdk not importable")
def test_vad_next_to_the_official_sora_vad() -> None:
    """Prints how often ``VAD`` and ``sora_sdk.SoraVAD`` (libwebrtc's RNN VAD,
    in a subprocess) agree on the labelled audio; only sanity is asserted,
    since the two detectors differ by design."""
    pcm, labels = labelled_audio()
    vad = VAD()
    ours = np.array(
        [
            vad.analyze(AudioFrame(pcm[i * FRAME : (i + 1) * FRAME], RATE))
            for i in range(len(labels))
        ]
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pcm.npy"
        np.save(path, pcm)
        result = subprocess.run(
            [sys.executable, "-c", _OFFICIAL, str(path), str(RATE), str(FRAME)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    official = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    assert len(official) == len(labels)
    both = (ours > THRESHOLD) == (official > THRESHOLD)
    o_acc, o_recall, o_false = agreement(official, labels)
    a_acc, a_recall, a_false = agreement(ours, labels)
    print(
        f"\nVAD vs sora_sdk.SoraVAD on {len(labels)} frames: same decision on {both.mean():.1%}"
        f"\n  VAD:     labels {a_acc:.1%} (speech found {a_recall:.1%}, false alarms {a_false:.1%})"
        f"\n  SoraVAD: labels {o_acc:.1%} (speech found {o_recall:.1%}, false alarms {o_false:.1%})"
    )
    assert ((official >= 0) & (official <= 1)).all()
