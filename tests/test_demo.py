"""The README's first command: ``python3 dev.py demo`` runs ``python -m sora_async.demo``.

What a person sees: a live view on a terminal, plain lines in CI; then
``demo-received.png`` (a frame of the test pattern) and ``demo-received.wav``
(the 440 Hz tone); exit status 0 only if media really arrived.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from sora_async import runner
from sora_async.cli.live import ConnectionRow, LiveView
from sora_async.cli.media import TONE_HZ, draw_test_pattern
from sora_async.cli.stats import ConnectionStats, StreamStats
from sora_async.demo import Reception, _verdict


def run_demo(*args: str, cwd: Path, uvloop: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env[runner.ENV_UVLOOP] = "1" if uvloop else "0"
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


# The demo runs through sora_async.runner: on uvloop where it is installed (the test
# extra installs it), which the rest of the suite (pytest-asyncio) never uses.
@pytest.mark.parametrize(
    "loop",
    [
        "asyncio",
        pytest.param(
            "uvloop",
            marks=pytest.mark.skipif(not runner.uvloop_available(), reason="no uvloop"),
        ),
    ],
)
def test_demo_media_arrives_and_is_written_to_png_and_wav(tmp_path: Path, loop: str) -> None:
    result = run_demo(
        "-m",
        "sora_async.demo",
        "--duration",
        "3",
        "--resolution",
        "320x240",
        cwd=tmp_path,
        uvloop=loop == "uvloop",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"event loop: {loop}" in out
    # Not a terminal: plain lines, no escape sequences, every second.
    assert "\x1b[" not in out
    assert "sender    connected" in out and "receiver  connected" in out
    assert "send video VP8 320x240" in out and "recv video VP8 320x240" in out
    assert "kbps" in out and "rtt" in out
    assert "-> OK" in out
    # The PNG is a received frame of the sent size, and looks like the pattern.
    png = tmp_path / "demo-received.png"
    with av.open(str(png)) as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (320, 240)
    image = frame.to_ndarray(format="bgr24").astype(int)
    assert image[:200].std() > 40  # colour bars, not a flat or black picture
    assert image[-10:].mean() < 90  # the black clock band at the bottom
    # The WAV holds the tone.
    with wave.open(str(tmp_path / "demo-received.wav")) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (1, 48000)
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), np.int16).astype(float)
    assert len(pcm) > 48000
    spectrum = np.abs(np.fft.rfft(pcm[-48000:] * np.hanning(48000)))
    assert abs(np.fft.rfftfreq(48000, 1 / 48000)[int(np.argmax(spectrum))] - TONE_HZ) < 5


def test_demo_through_the_cli_with_another_codec(tmp_path: Path) -> None:
    result = run_demo(
        "-m",
        "sora_async",
        "demo",
        "--duration",
        "2",
        "--resolution",
        "160x120",
        "--video-codec-type",
        "VP9",
        "--output-dir",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "recv video VP9 160x120" in result.stdout
    assert (tmp_path / "out" / "demo-received.png").is_file()


def test_the_verdict_needs_video_of_the_sent_size_the_tone_and_messages() -> None:
    reception = Reception()
    assert not _verdict(reception, 320, 240)
    reception.frames, reception.sizes = 10, {(320, 240)}
    reception.messages.append(b"hello #0")
    assert not _verdict(reception, 320, 240)  # no tone yet
    t = np.arange(48000) / 48000
    reception.audio = [(np.sin(2 * np.pi * TONE_HZ * t) * 8000).astype(np.int16)]
    assert _verdict(reception, 320, 240)
    assert not _verdict(reception, 640, 360)  # not the size that was sent


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_view_is_a_live_table_with_a_thumbnail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("rich")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLORTERM", "truecolor")
    monkeypatch.setenv("COLUMNS", "140")
    monkeypatch.delenv("NO_LIVE", raising=False)
    out = _Terminal()
    stats = ConnectionStats(
        timestamp=0.0,
        rtt_ms=0.8,
        streams=[
            StreamStats(
                "video", "send", codec="VP8", bitrate_kbps=612.0, fps=29.9, width=640, height=360
            )
        ],
    )
    with LiveView("sora_async demo", file=out) as view:
        assert view.fancy
        view.update(
            [ConnectionRow("sender", "CONNECTED_DC", stats)],
            ["received: 42 video frames"],
            draw_test_pattern(96, 54, 0, 30.0),
        )
    text = out.getvalue()
    for expected in ("sora_async demo", "connected (dc)", "VP8", "640x360", "29.9", "612", "0.8"):
        assert expected in text
    assert "▀" in text  # the thumbnail
    assert "\x1b[38;2;" in text  # drawn in 24-bit colour


def test_on_a_narrow_terminal_the_table_keeps_its_room(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("NO_LIVE", raising=False)
    out = _Terminal()
    with LiveView("demo", file=out) as view:
        view.update(
            [ConnectionRow("receiver", "CONNECTED_WS")], [], draw_test_pattern(96, 54, 0, 30.0)
        )
    assert "connected (ws)" in out.getvalue()
    assert "▀" not in out.getvalue()
