"""A bandwidth-limited link (issue 6): ``tc tbf`` at 300 kbps between two namespaces.

Two private network namespaces joined by a veth pair (10.254.254.1/30 and .2,
addresses that exist only inside them): the dev server (transport-cc on) runs
in one, a ``sora_async`` sendonly in the other, and the client's side of the
veth is shaped with ``tc qdisc ... tbf rate 300kbit``. The source is noise
(640x360, 15 fps), which an encoder would spend megabits on: the estimate has
to come down from its 1.7 Mbps start. On that link: the estimate settles, the
four degradation preferences adapt as the official tests describe (DISABLED:
full size, fewer frames, by the frame droppers), and a simulcast sender turns
r2 off, then back on once the shaping is removed. Everything is created and
removed by the test; it is skipped, with the reason, where namespaces or ``tc``
are not allowed (it needs root).
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
    def __init__(self, width, height, fps, block):
        super().__init__()
        self.size, self.fps, self.index, self.start = (width, height), fps, 0, None
        self.block = block
        self.rng = np.random.default_rng(6)
    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        await asyncio.sleep(max(0.0, self.start + self.index / self.fps - time.monotonic()))
        width, height = self.size
        # noise blocks (8x8 pixels by default), new every frame: megabits at full
        # quality, yet x264 can squeeze 8x8 blocks under 300 kbps (2x2 ones it cannot)
        b = self.block
        blocks = self.rng.integers(0, 256, (height // b, width // b, 3), dtype=np.uint8)
        image = np.ascontiguousarray(blocks.repeat(b, axis=0).repeat(b, axis=1))
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
    track = NoiseTrack(width, height, int(sys.argv[7]), int(sys.argv[8]))
    conn = Connection(url, "sendonly", "bandwidth", video_codec_type=sys.argv[3], audio=False,
                      video_source=track, degradation_preference=preference)
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
            "encoded": o.get("framesEncoded"),
            "source": track.index,
            "feedback": conn._peer.congestion.feedback_seen if conn._peer else None,
            "bwe": estimator_state(conn),
        }), flush=True)
    await asyncio.wait_for(conn.disconnect(), 15)

asyncio.run(main())
"""


def _kept(samples: list[dict[str, Any]]) -> float:
    """Frames encoded over frames the source delivered, first sample to last: what the
    adaptation let through, whatever rate a loaded host let the source reach (a CI
    run on a saturated host saw 1-3 fps out of a source it also starved)."""
    offered = samples[-1]["source"] - samples[0]["source"]
    assert offered > 0, samples
    return (samples[-1]["encoded"] - samples[0]["encoded"]) / offered


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
    block: int = 8,
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
            [*command, url, "16", codec, *map(str, (*size, preference, fps, block))],
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
    # The AIMD sawtooth overshoots the capacity before each back-off: near the
    # capacity it adds ~17-26 kbps/s (libwebrtc's near-max rate), and the delay
    # detector only sees a queue once the encoder really sends more than the link
    # carries; x264 stays ~10 % under its target, so a peak reaches 1.1-1.16x
    # (346 kbps seen in CI) as it would with libwebrtc's AIMD. Without the
    # estimator the target stays at the 1.7 Mbps start.
    assert statistics.median(targets) < LIMIT_BPS, targets
    assert statistics.mean(targets) < LIMIT_BPS, targets
    assert max(targets) < 1.3 * LIMIT_BPS, targets
    assert settled[-1]["reason"] == "bandwidth", settled[-1]
    assert settled[-1]["durations"]["bandwidth"] > 5.0, settled[-1]


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "preference", ["MAINTAIN_RESOLUTION", "MAINTAIN_FRAMERATE", "BALANCED", ""]
)
def test_degradation_preference_at_300_kbps(shaped_pair: tuple[str, str], preference: str) -> None:
    """960x540 at 30 fps into 300 kbps (H.264), as the official tests describe it
    (the noise source's 8-pixel blocks make it 960x536, 16-pixel ones 960x528). Unset
    ("") is libwebrtc's default, MAINTAIN_FRAMERATE."""
    samples = _run_client(shaped_pair, "H264", (960, 540), preference, fps=30)
    last = [s for s in samples if s["t"] >= 12.0]
    assert last, samples
    sizes = {(s["width"], s["height"]) for s in last}
    kept = _kept(last)
    assert all(s["reason"] == "bandwidth" for s in last), last[-1]
    if preference == "MAINTAIN_RESOLUTION":
        assert sizes <= FULL_SIZE, sizes
        assert kept < 0.9, kept  # the frame-rate cap
    elif preference in ("MAINTAIN_FRAMERATE", ""):
        assert all(w * h <= 640 * 360 for w, h in sizes), sizes
        assert kept > 0.7, kept
    else:
        assert all(w * h < 960 * 524 for w, h in sizes), sizes
        assert kept < 0.9, kept


#: 960x540 as the noise source makes it: whole blocks of 8 (960x536) or 16 pixels (960x528).
FULL_SIZE = {(960, h) for h in range(524, 541)}


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("codec", "block"), [("H264", 2), ("VP8", 16)])
def test_disabled_keeps_the_resolution_and_drops_frames_at_300_kbps(
    shaped_pair: tuple[str, str], codec: str, block: int
) -> None:
    """DISABLED: no adaptation, yet the frame rate falls where the encoder cannot
    meet the target at full size (the official test: VP8, 960x528, fps < 30).

    * H.264 on 2x2-pixel noise: x264 at its coarsest quantizer still makes ~370 kbps
      at 30 fps (measured) and has no frame dropper: only the media-optimization
      :class:`~sora_async.rtc.degradation.FrameDropper` (encoded sizes against the
      target) can drop frames;
    * VP8 on 16x16 noise: libvpx's own ``rc_dropframe_thresh`` and the dropper.
    """
    samples = _run_client(shaped_pair, codec, (960, 540), "DISABLED", fps=30, block=block)
    last = [s for s in samples if s["t"] >= 12.0]
    assert last, samples
    sizes = {(s["width"], s["height"]) for s in last}
    kept = _kept(last)
    assert all(s["reason"] == "bandwidth" for s in last), last[-1]
    assert sizes <= FULL_SIZE, sizes
    assert kept < 0.8, kept
    assert last[-1]["bytes"] > last[0]["bytes"], last  # dropping frames, not stalled
    targets = [s["target"] for s in last]
    assert statistics.median(targets) < LIMIT_BPS, targets
    # what left the sender over the last seconds: about the target, not the encoder's floor
    seconds = last[-1]["t"] - last[0]["t"]
    sent = (last[-1]["bytes"] - last[0]["bytes"]) * 8 / seconds
    assert sent < 1.15 * LIMIT_BPS, (sent, targets)


_SIMULCAST_CHILD = r"""
import asyncio, fractions, json, sys, time
import av, numpy as np
from aiortc.mediastreams import MediaStreamTrack
from sora_async import Connection

class BarTrack(MediaStreamTrack):
    kind = "video"
    def __init__(self):
        super().__init__()
        self.index, self.start = 0, None
    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        await asyncio.sleep(max(0.0, self.start + self.index / 30 - time.monotonic()))
        image = np.zeros((540, 960, 3), np.uint8)
        x = (self.index * 12) % 960
        image[:, x : x + 96] = (0, 160, 255)
        image[(self.index * 5) % 540 :][:40] = (255, 255, 255)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = self.index * 3000, fractions.Fraction(1, 90000)
        self.index += 1
        return frame

async def main():
    url, seconds = sys.argv[1], float(sys.argv[2])
    conn = Connection(url, "sendonly", "simulcast-bw", video_codec_type="VP8", audio=False,
                      simulcast=True, video_source=BarTrack())
    await asyncio.wait_for(conn.connect(), 20)
    peer = conn._peer
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        await asyncio.sleep(0.5)
        (sender,) = [s for s in peer.senders if s.kind == "video"]
        e = peer.congestion.estimator
        print(json.dumps({
            "t": round(time.monotonic() - start, 2),
            "estimate": peer.congestion.estimate,
            "padding": peer.congestion.padding_bytes_sent,
            "bwe": [int(e.delay_based or 0), int(e.loss_based), int(e.acked_bitrate or 0),
                    int(e.link_capacity or 0), e.detector.state, round(e.loss_fraction, 3)],
            "layers": {layer.rid: {"bytes": layer.bytes_sent, "off": layer.suspended,
                                   "target": layer.target_bitrate}
                       for layer in sender.layers},
        }), flush=True)
    await asyncio.wait_for(conn.disconnect(), 15)

asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_simulcast_turns_r2_off_at_300_kbps_and_back_on_when_the_link_opens(
    shaped_pair: tuple[str, str],
) -> None:
    """Three VP8 layers (960x540, Sora's default 250/750/1500 kbps) into 300 kbps: r2
    is turned off (its 350 kbps min does not fit, libwebrtc's allocator), not squeezed.
    Then the shaping goes: the estimate climbs (padded up to r0 + r1's targets + 1.2 x
    r2's min, as libwebrtc pads simulcast; media alone would cap it at 1.5 x what r0 +
    r1 carry) and r2 comes back."""
    server_ns, client_ns = shaped_pair
    device = f"vc{client_ns.rsplit('_', 1)[-1]}"
    env = {**os.environ, "PYTHONPATH": ROOT}
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, sys.executable, "-c", _SERVER_CHILD, SERVER_ADDRESS,
         "90"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    samples: list[dict[str, Any]] = []
    opened_at: float | None = None
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("{"), server.stderr.read() if server.stderr else ""
        url = json.loads(line)["url"]
        client = subprocess.Popen(
            ["ip", "netns", "exec", client_ns, sys.executable, "-c", _SIMULCAST_CHILD, url, "45"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert client.stdout is not None
            for out in client.stdout:
                if not out.startswith("{"):
                    continue
                sample = json.loads(out)
                samples.append(sample)
                if opened_at is None and sample["t"] >= 15.0:
                    # the link opens: no more shaping
                    removed = _run("ip", "netns", "exec", client_ns, "tc", "qdisc", "del", "dev",
                                   device, "root")  # fmt: skip
                    assert removed.returncode == 0, removed.stderr
                    opened_at = sample["t"]
            client.wait(30)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        stderr = client.stderr.read() if client.stderr else ""
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    print("\n".join(json.dumps(s) for s in samples))
    assert opened_at is not None, stderr[-3000:]
    shaped = [s for s in samples if 8.0 <= s["t"] <= opened_at]
    assert shaped, samples
    # at 300 kbps: r2 off (and nothing sent on it), r0 running
    assert all(s["layers"]["r2"]["off"] for s in shaped), shaped[-1]
    assert shaped[-1]["layers"]["r2"]["bytes"] == shaped[0]["layers"]["r2"]["bytes"]
    assert shaped[-1]["layers"]["r0"]["bytes"] > shaped[0]["layers"]["r0"]["bytes"]
    # the link opens: r2 back on within 25 s, and sending
    back = [s for s in samples if s["t"] > opened_at and not s["layers"]["r2"]["off"]]
    assert back, samples[-1]
    assert back[0]["t"] - opened_at < 25.0, back[0]
    assert samples[-1]["layers"]["r2"]["bytes"] > back[0]["layers"]["r2"]["bytes"]
    assert samples[-1]["padding"] > 0
