"""A bandwidth-limited link (issue 6): ``tc tbf`` at 300 kbps between two namespaces.

Two private network namespaces joined by a veth pair (10.254.254.1/30 and .2,
addresses that exist only inside them): the dev server (transport-cc on) runs
in one, a ``sora_async`` sendonly in the other, and the client's side of the
veth is shaped with ``tc qdisc ... tbf rate 300kbit``. The source is noise
(640x360, 15 fps), which an encoder would spend megabits on: the estimate has
to come down from its 1.7 Mbps start. Everything is created and removed by the
test; it is skipped, with the reason, where namespaces or ``tc`` are not
allowed (it needs root).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

LIMIT_BPS = 300_000
ROOT = str(Path(__file__).resolve().parent.parent)
SERVER_ADDRESS = "10.254.254.1"
CLIENT_ADDRESS = "10.254.254.2"

_SERVER_CHILD = r"""
import asyncio, json, sys
from sora_async.devserver import DevServer

async def main():
    async with DevServer(host=sys.argv[1], ping_interval=0, transport_cc=True) as server:
        print(json.dumps({"url": server.signaling_url}), flush=True)
        await asyncio.sleep(float(sys.argv[2]))

asyncio.run(main())
"""

_CLIENT_CHILD = r"""
import asyncio, fractions, json, sys, time
import av, numpy as np
from aiortc.mediastreams import MediaStreamTrack
from sora_async import Connection
from sora_async.enums import DegradationPreference

class NoiseTrack(MediaStreamTrack):
    kind = "video"
    def __init__(self, width, height, fps):
        super().__init__()
        self.size, self.fps, self.index, self.start = (width, height), fps, 0, None
        self.rng = np.random.default_rng(6)
    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        await asyncio.sleep(max(0.0, self.start + self.index / self.fps - time.monotonic()))
        width, height = self.size
        # 8x8-pixel noise blocks, new every frame: megabits at full quality, yet an
        # encoder can squeeze it under 300 kbps (pixel noise it cannot)
        blocks = self.rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        image = np.ascontiguousarray(blocks.repeat(8, axis=0).repeat(8, axis=1))
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = self.index * 6000, fractions.Fraction(1, 90000)
        self.index += 1
        return frame

def estimator_state(conn):
    e = conn._peer.congestion.estimator
    return [int(e.delay_based or 0), int(e.loss_based), int(e.acked_bitrate or 0),
            e.detector.state, round(e.loss_fraction, 3)]

async def main():
    url, seconds = sys.argv[1], float(sys.argv[2])
    width, height = int(sys.argv[4]), int(sys.argv[5])
    preference = DegradationPreference[sys.argv[6]] if sys.argv[6] else None
    conn = Connection(url, "sendonly", "bandwidth", video_codec_type=sys.argv[3], audio=False,
                      video_source=NoiseTrack(width, height, int(sys.argv[7])),
                      degradation_preference=preference)
    await asyncio.wait_for(conn.connect(), 20)
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        await asyncio.sleep(0.5)
        stats = await conn.get_stats()
        out = [s for s in stats if s["type"] == "outbound-rtp" and s.get("kind") == "video"]
        pairs = [s for s in stats if s["type"] == "candidate-pair"]
        if not out:
            continue
        o = out[0]
        print(json.dumps({
            "t": round(time.monotonic() - start, 2),
            "target": o.get("targetBitrate"),
            "available": max((p.get("availableOutgoingBitrate") or 0) for p in pairs),
            "reason": o.get("qualityLimitationReason"),
            "durations": o.get("qualityLimitationDurations"),
            "bytes": o.get("bytesSent"),
            "width": o.get("frameWidth"),
            "height": o.get("frameHeight"),
            "fps": o.get("framesPerSecond"),
            "feedback": conn._peer.congestion.feedback_seen if conn._peer else None,
            "bwe": estimator_state(conn),
        }), flush=True)
    await asyncio.wait_for(conn.disconnect(), 15)

asyncio.run(main())
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


@pytest.fixture
def shaped_pair() -> Iterator[tuple[str, str]]:
    """(server namespace, client namespace), the client's egress at 300 kbps."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces and tc need root")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} (iproute2) is not installed")
    tag = uuid.uuid4().hex[:6]
    server_ns, client_ns = f"sa_srv_{tag}", f"sa_cli_{tag}"
    created: list[str] = []
    try:
        for namespace in (server_ns, client_ns):
            added = _run("ip", "netns", "add", namespace)
            if added.returncode != 0:
                pytest.skip(f"network namespaces are not allowed here: {added.stderr.strip()}")
            created.append(namespace)
        steps = [
            ("ip", "link", "add", f"vs{tag}", "netns", server_ns, "type", "veth", "peer", "name",
             f"vc{tag}", "netns", client_ns),
            ("ip", "netns", "exec", server_ns, "ip", "addr", "add", f"{SERVER_ADDRESS}/30",
             "dev", f"vs{tag}"),
            ("ip", "netns", "exec", client_ns, "ip", "addr", "add", f"{CLIENT_ADDRESS}/30",
             "dev", f"vc{tag}"),
            ("ip", "netns", "exec", server_ns, "ip", "link", "set", f"vs{tag}", "up"),
            ("ip", "netns", "exec", client_ns, "ip", "link", "set", f"vc{tag}", "up"),
            ("ip", "netns", "exec", server_ns, "ip", "link", "set", "lo", "up"),
            ("ip", "netns", "exec", client_ns, "ip", "link", "set", "lo", "up"),
        ]  # fmt: skip
        for step in steps:
            done = _run(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot build the veth pair ({' '.join(step)}): {done.stderr.strip()}")
        shaped = _run(
            "ip", "netns", "exec", client_ns, "tc", "qdisc", "add", "dev", f"vc{tag}", "root",
            "tbf", "rate", "300kbit", "burst", "4kb", "latency", "100ms",
        )  # fmt: skip
        if shaped.returncode != 0:
            pytest.skip(f"tc qdisc is not allowed here: {shaped.stderr.strip()}")
        yield server_ns, client_ns
    finally:
        for namespace in created:  # removing a namespace removes its veth end and qdisc
            _run("ip", "netns", "del", namespace)


def _run_client(
    shaped_pair: tuple[str, str],
    codec: str,
    size: tuple[int, int],
    preference: str = "",
    fps: int = 15,
) -> list[dict[str, Any]]:
    """Run the dev server and a sender 16 s over the shaped link; the stats samples."""
    server_ns, client_ns = shaped_pair
    env = {**os.environ, "PYTHONPATH": ROOT}
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, sys.executable, "-c", _SERVER_CHILD, SERVER_ADDRESS,
         "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("{"), server.stderr.read() if server.stderr else ""
        url = json.loads(line)["url"]
        command = ["ip", "netns", "exec", client_ns, sys.executable, "-c", _CLIENT_CHILD]
        client = subprocess.run(
            [*command, url, "16", codec, str(size[0]), str(size[1]), preference, str(fps)],
            capture_output=True,
            text=True,
            timeout=80,
            env=env,
        )
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    samples = [json.loads(line) for line in client.stdout.splitlines() if line.startswith("{")]
    assert samples, client.stderr[-3000:]
    print("\n".join(json.dumps(s) for s in samples))
    assert any(s["feedback"] for s in samples), "no transport-cc feedback came back"
    return samples


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_target_bitrate_settles_under_a_300_kbps_link(
    shaped_pair: tuple[str, str], codec: str
) -> None:
    samples = _run_client(shaped_pair, codec, (640, 360))
    settled = [s for s in samples if s["t"] >= 10.0]
    assert settled, samples
    targets = [s["target"] for s in settled]
    # The AIMD sawtooth overshoots the capacity by a few % before each back-off.
    assert statistics.median(targets) < LIMIT_BPS, targets
    assert max(targets) < 1.1 * LIMIT_BPS, targets
    assert settled[-1]["reason"] == "bandwidth", settled[-1]
    assert settled[-1]["durations"]["bandwidth"] > 5.0, settled[-1]


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "preference", ["MAINTAIN_RESOLUTION", "MAINTAIN_FRAMERATE", "BALANCED", "DISABLED"]
)
def test_degradation_preference_at_300_kbps(shaped_pair: tuple[str, str], preference: str) -> None:
    """960x540 at 30 fps into 300 kbps (H.264), as the official tests describe it
    (x264 crops 540 to 536; libwebrtc reports 528)."""
    samples = _run_client(shaped_pair, "H264", (960, 540), preference, fps=30)
    last = [s for s in samples if s["t"] >= 12.0]
    assert last, samples
    sizes = {(s["width"], s["height"]) for s in last}
    fps = statistics.median(s["fps"] or 0 for s in last)
    assert all(s["reason"] == "bandwidth" for s in last), last[-1]
    full = {(960, h) for h in range(524, 541)}
    if preference == "MAINTAIN_RESOLUTION":
        assert sizes <= full, sizes
        assert fps < 27, fps  # the frame-rate cap
    elif preference == "DISABLED":
        # No adaptation. libwebrtc's fps drop here comes from its encoders' own frame
        # droppers; x264 meets 300 kbps at 960x536 (at a terrible QP) and drops nothing,
        # so only the frame dropper (encoded bits over the target) could drop here.
        assert sizes <= full, sizes
    elif preference == "MAINTAIN_FRAMERATE":
        assert all(w * h <= 640 * 360 for w, h in sizes), sizes
        assert fps > 20, fps
    else:
        assert all(w * h < 960 * 524 for w, h in sizes), sizes
        assert fps < 27, fps
