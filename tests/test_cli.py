"""``sora-async``: every subcommand, headless, against the dev server, as a user runs it.

The end-to-end tests run the real command in a subprocess (``python -m
sora_async``) against a dev server of the ``sora_devserver_thread`` fixture
(or the command's own ``--devserver``), with short, small media (320x240 or
less) so they stay quick on two cores.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from sora_async.cli import ExitCode, build_parser, main
from sora_async.cli.args import CONNECTION_OPTIONS, connection_keywords, environment_urls
from sora_async.cli.live import ConnectionRow, LiveView, plain_line
from sora_async.cli.stats import StatsTracker
from sora_async.options import ConnectionKeywords

SUBCOMMANDS = ("sendonly", "recvonly", "sendrecv", "messaging", "devserver", "capability", "demo")
SMALL = ("--resolution", "320x240", "--fps", "15")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sora_async", *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SORA_")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def run(*args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("env", clean_env())
    return subprocess.run(
        cli(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def wait_for_line(stream: Any, needle: str, timeout: float = 30) -> list[str]:
    """Read ``stream`` until a line containing ``needle``; returns the lines read."""
    lines: list[str] = []
    found = threading.Event()

    def reader() -> None:
        for line in stream:
            lines.append(line)
            if needle in line:
                found.set()
                return

    threading.Thread(target=reader, daemon=True).start()
    assert found.wait(timeout), f"no line with {needle!r} in {lines}"
    return lines


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_clip(path: Path, seconds: float = 2.0) -> None:
    """A 160x120 15 fps H.264 + AAC file: a moving bar and a 440 Hz tone."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=15)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "mono"
        for index in range(int(seconds * 15)):
            image = np.zeros((120, 160, 3), np.uint8)
            image[:, (index * 8) % 160 :][:, :16] = 255
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = index
            for packet in video.encode(frame):
                container.mux(packet)
        t = np.arange(int(seconds * 48000)) / 48000
        pcm = (np.sin(2 * np.pi * 440 * t) * 0.3).astype(np.float32).reshape(1, -1)
        for start in range(0, pcm.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                pcm[:, start : start + 1024], format="flt", layout="mono"
            )
            frame.sample_rate, frame.pts = 48000, start
            for packet in audio.encode(frame):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)


# -- the command line itself ---------------------------------------------------------------


def test_help_lists_every_subcommand_and_the_exit_codes() -> None:
    text = build_parser().format_help()
    for command in SUBCOMMANDS:
        assert command in text
    for code in ExitCode:
        assert f"  {code.value}  {code.name.lower().replace('_', '-')}:" in text
    assert "SORA_SIGNALING_URLS" in text


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: sora-async" in capsys.readouterr().out


def test_every_connection_option_is_a_connection_keyword() -> None:
    keywords = set(ConnectionKeywords.__annotations__)
    offered = {keyword for _flag, keyword, _options in CONNECTION_OPTIONS}
    assert offered <= keywords
    # Everything a user types is there, except the media objects and internal knobs.
    not_options = {
        "audio_source",
        "video_source",
        "audio_frame_transformer",
        "video_frame_transformer",
        "video_codec_preference",
        "data_channel_signaling_timeout",
    }
    assert keywords - offered <= not_options


def test_options_become_connection_keywords() -> None:
    args = build_parser().parse_args(
        [
            "sendonly",
            "--video-codec-type",
            "vp9",
            "--metadata",
            '{"access_token": "t"}',
            "--simulcast",
            "--no-audio",
            "--video-bit-rate",
            "800",
            "--data-channel-signaling",
            "--degradation-preference",
            "balanced",
            "--spotlight-number",
            "2",
        ]
    )
    keywords = connection_keywords(args, environ={})
    from sora_async.enums import DegradationPreference

    assert keywords == {
        "video_codec_type": "VP9",
        "metadata": {"access_token": "t"},
        "simulcast": True,
        "audio": False,
        "video_bit_rate": 800,
        "data_channel_signaling": True,
        "degradation_preference": DegradationPreference.BALANCED,
        "spotlight_number": 2,
    }


def test_the_official_environment_variables_are_the_defaults() -> None:
    args = build_parser().parse_args(["recvonly"])
    environ = {"SORA_METADATA": '{"access_token": "x"}', "SORA_PROXY_PASSWORD": "p"}
    assert connection_keywords(args, environ) == {
        "metadata": {"access_token": "x"},
        "proxy_password": "p",
    }
    assert environment_urls({"SORA_SIGNALING_URLS": "wss://a/signaling, wss://b/signaling"}) == [
        "wss://a/signaling",
        "wss://b/signaling",
    ]


def test_no_signaling_url_is_explained(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("SORA_SIGNALING_URLS", "SORA_CHANNEL_ID", "SORA_METADATA"):
        monkeypatch.delenv(name, raising=False)
    assert main(["recvonly", "--duration", "1"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "sora-async: no signaling URL given" in err
    assert "--devserver" in err  # the hint


def test_bad_json_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["recvonly", "--metadata", "{oops"])
    assert exit_info.value.code == ExitCode.USAGE
    assert "not valid JSON" in capsys.readouterr().err


def test_invalid_keyword_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["recvonly", "-s", "ws://127.0.0.1:9/signaling", "-c", "x", "--spotlight-number", "-3"]
    )
    assert code == ExitCode.USAGE
    assert "invalid option" in capsys.readouterr().err


def test_connection_refused_exits_3_with_a_hint() -> None:
    port = free_port()
    result = run(
        "recvonly", "-s", f"ws://127.0.0.1:{port}/signaling", "-c", "x", "--connect-timeout", "10"
    )
    assert result.returncode == ExitCode.CONNECT_FAILED, result.stderr
    assert "could not connect" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_input_file_exits_5() -> None:
    result = run(
        "sendonly", "--devserver", "--video-input", "/nonexistent/clip.mp4", "--duration", "1"
    )
    assert result.returncode == ExitCode.MEDIA_IO, result.stderr
    assert "cannot open /nonexistent/clip.mp4" in result.stderr


def test_window_without_opencv_says_how_to_get_it() -> None:
    pytest.importorskip("sora_async")  # keep the order of imports stable
    try:
        import cv2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("OpenCV is installed here")
    result = run("recvonly", "--devserver", "--window", "--duration", "1")
    assert result.returncode == ExitCode.UNSUPPORTED
    assert "pip install opencv-python" in result.stderr


# -- end to end against the dev server --------------------------------------------------------


def test_sendonly_from_a_file_to_recvonly_recording_mkv(
    sora_devserver_thread: Any, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    make_clip(clip)
    url = sora_devserver_thread.signaling_url
    sender = subprocess.Popen(
        cli(
            "sendonly",
            "-s",
            url,
            "-c",
            "cli-e2e",
            "--video-input",
            str(clip),
            "--audio-input",
            str(clip),
            "--loop",
            "--video-codec-type",
            "VP8",
            "--duration",
            "15",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        wait_for_line(sender.stderr, "connected:")
        out = tmp_path / "out.mkv"
        result = run(
            "recvonly",
            "-s",
            url,
            "-c",
            "cli-e2e",
            "--record",
            str(out),
            "--stats",
            "--duration",
            "4",
            "--expect-media",
        )
    finally:
        sender.send_signal(signal.SIGINT)
        _, sender_err = sender.communicate(timeout=30)
    assert result.returncode == 0, result.stderr
    assert sender.returncode == 0, sender_err
    assert "recorded" in result.stderr
    # --stats: JSON lines on stdout with what was received.
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines, result.stdout
    video = [s for s in lines[-1]["streams"] if s["kind"] == "video" and s["direction"] == "recv"]
    assert video and video[0]["codec"] == "VP8" and video[0]["width"] == 160
    # The recording: one video and one audio stream that PyAV decodes.
    with av.open(str(out)) as container:
        kinds = sorted(stream.type for stream in container.streams)
        assert kinds == ["audio", "video"]
        frames = [f for f in container.decode(video=0)]
    assert len(frames) >= 15
    assert (frames[0].width, frames[0].height) == (160, 120)


def test_sendrecv_with_its_own_devserver() -> None:
    result = run("sendrecv", "--devserver", *SMALL, "--duration", "2", "--plain")
    assert result.returncode == 0, result.stderr
    assert "dev server listening: ws://127.0.0.1:" in result.stderr
    assert "sending a test pattern" in result.stderr
    assert "duration elapsed" in result.stderr


def test_expect_media_fails_when_nothing_arrives() -> None:
    result = run("recvonly", "--devserver", "--duration", "1.5", "--expect-media")
    assert result.returncode == ExitCode.NO_MEDIA
    assert "no media was received" in result.stderr


def test_messaging_between_two_command_lines(sora_devserver_thread: Any) -> None:
    url = sora_devserver_thread.signaling_url
    listener = subprocess.Popen(
        cli(
            "messaging",
            "-s",
            url,
            "-c",
            "chat",
            "--direction",
            "sendrecv",
            "--json",
            "--duration",
            "20",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=clean_env(),
    )
    try:
        wait_for_line(listener.stderr, "is open")
        talker = subprocess.run(
            cli("messaging", "-s", url, "-c", "chat", "--linger", "0.5"),
            input="hello\nこんにちは\n",
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
        )
        assert talker.returncode == 0, talker.stderr
        received: list[dict[str, str]] = []
        deadline = time.monotonic() + 10
        assert listener.stdout is not None
        while len(received) < 2 and time.monotonic() < deadline:
            line = listener.stdout.readline()
            if line:
                received.append(json.loads(line))
    finally:
        listener.send_signal(signal.SIGINT)
        listener.communicate(timeout=30)
    assert received == [
        {"label": "#sora-async", "data": "hello"},
        {"label": "#sora-async", "data": "こんにちは"},
    ]
    assert listener.returncode == 0


def test_devserver_subcommand_serves_until_ctrl_c() -> None:
    port = free_port()
    server = subprocess.Popen(
        cli("devserver", "--port", str(port), "--log-level", "WARNING"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        lines = wait_for_line(server.stdout, "api:")
        assert f"signaling: ws://127.0.0.1:{port}/signaling\n" in lines
        result = run(
            "recvonly", "-s", f"ws://127.0.0.1:{port}/signaling", "-c", "x", "--duration", "1"
        )
        assert result.returncode == 0, result.stderr
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
    assert server.returncode == 0


def test_window_shows_received_video(sora_devserver_thread: Any, tmp_path: Path) -> None:
    from tests.test_examples import FAKE_CV2  # an OpenCV stand-in whose windows draw nothing

    (tmp_path / "cv2.py").write_text(FAKE_CV2)
    url = sora_devserver_thread.signaling_url
    sender = subprocess.Popen(
        cli("sendonly", "-s", url, "-c", "window", *SMALL, "--no-audio", "--duration", "30"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        wait_for_line(sender.stderr, "connected:")
        result = run(
            "recvonly", "-s", url, "-c", "window", "--window", "--duration", "3",
            env=clean_env(PYTHONPATH=str(tmp_path)),
        )  # fmt: skip
    finally:
        sender.send_signal(signal.SIGINT)
        sender.communicate(timeout=30)
    assert result.returncode == 0, result.stderr
    shown = re.search(r"showed (\d+) frames in the window", result.stderr)
    assert shown and int(shown.group(1)) > 10, result.stderr


def test_ctrl_c_stops_cleanly_with_exit_0() -> None:
    process = subprocess.Popen(
        cli("sendonly", "--devserver", *SMALL, "--plain"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    wait_for_line(process.stderr, "connected:")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err


def test_capability_reports_the_software_engine() -> None:
    result = run("capability", "--json")
    assert result.returncode == 0, result.stderr
    engines = {engine["name"]: engine for engine in json.loads(result.stdout)["engines"]}
    vp8 = next(c for c in engines["internal"]["codecs"] if c["type"] == "VP8")
    assert vp8["encoder"] and vp8["decoder"]
    table = run("capability")
    assert "internal" in table.stdout and "E = can encode" in table.stdout


# -- the pieces -------------------------------------------------------------------------------


def test_devices_get_their_ffmpeg_input_format() -> None:
    from sora_async.cli.media import guess_device_format

    assert guess_device_format("/dev/video0") == "v4l2"
    assert guess_device_format("clip.mp4") is None
    assert guess_device_format("rtsp://camera.local/stream") is None


def test_stats_tracker_turns_counters_into_rates() -> None:
    def report(sent: int, frames: int) -> list[dict[str, Any]]:
        return [
            {"id": "C1", "type": "codec", "mimeType": "video/VP9"},
            {
                "id": "O1",
                "type": "outbound-rtp",
                "kind": "video",
                "codecId": "C1",
                "bytesSent": sent,
                "framesEncoded": frames,
                "frameWidth": 640,
                "frameHeight": 360,
                "rid": "r1",
            },
            {
                "id": "CP",
                "type": "candidate-pair",
                "nominated": True,
                "currentRoundTripTime": 0.012,
            },
        ]

    tracker = StatsTracker()
    first = tracker.update(report(1000, 10), now=100.0)
    assert first.streams[0].bitrate_kbps is None
    second = tracker.update(report(126_000, 40), now=101.0)
    stream = second.streams[0]
    assert (stream.codec, stream.rid, stream.resolution) == ("VP9", "r1", "640x360")
    assert stream.bitrate_kbps == pytest.approx(1000.0)
    assert stream.fps == pytest.approx(30.0)
    assert second.rtt_ms == pytest.approx(12.0)
    assert "send video r1 VP9 640x360 30.0 fps 1000 kbps" in plain_line(
        ConnectionRow("sender", "CONNECTED_DC", second)
    )
    json.dumps(second.to_json())  # JSON-ready


def test_live_view_prints_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    with LiveView("t", file=out) as view:
        assert not view.fancy
        view.update([ConnectionRow("receiver", "CONNECTED_WS")], ["note"])
    assert "receiver  connected (ws)" in out.getvalue()
    assert "note" in out.getvalue()
    assert "\x1b[" not in out.getvalue()
