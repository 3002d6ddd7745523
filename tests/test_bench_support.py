"""The benchmarks' helpers (bench/support.py, bench/report.py), without the clients."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest

from bench import report, support, wakeups


def test_pixel_code_round_trip_survives_noise_and_blur() -> None:
    for width, height in ((320, 240), (640, 480), (1280, 720)):
        frame = support.make_frames(width, height, 1)[0]
        support.paint_code(frame, 123_456, 9_876_543)
        assert support.read_code(frame) == (123_456, 9_876_543)
        # What a lossy codec does to big blocks: noise and softened edges.
        rng = np.random.default_rng(1)
        noisy = frame.astype(np.int16) + rng.integers(-40, 41, frame.shape)
        blurred = (noisy + np.roll(noisy, 2, axis=1) + np.roll(noisy, 2, axis=0)) // 3
        damaged = np.clip(blurred, 0, 255).astype(np.uint8)
        assert support.read_code(damaged) == (123_456, 9_876_543)


def test_capture_time_unwraps_the_24_bit_code() -> None:
    now = 50_000_000  # ms; beyond 2**24
    captured = now - 37
    assert support.capture_time_ms(captured % support.CODE_MOD, now) == captured


def test_click_onsets_and_matching() -> None:
    detector = support.OnsetDetector(16000)
    silence = np.zeros(160, np.int16)
    burst = support.click(16000)
    blocks = [silence] * 40 + [burst[:160], burst[160:320]] + [silence] * 60 + [burst[:160]]
    for i, block in enumerate(blocks):
        detector.feed(block, i / 100)
    assert detector.onsets == [0.4, 1.02]
    assert support.match_latencies([0.35, 0.98], detector.onsets) == [0.4 - 0.35, 1.02 - 0.98]


def test_message_payload_and_summary() -> None:
    data = support.message_payload(1024, 1, 7, 12.5)
    assert len(data) == 1024
    assert support.parse_payload(data) == (1, 7, 12.5)
    assert support.parse_payload(b"hello") is None
    summary = support.summarize_messages(
        [(0, 0, 1.0, 1.002, 1024), (1, 0, 2.0, 2.5, 1024), (1, 1, 2.0, 3.0, 1024)]
    )
    assert summary["latency_count"] == 1
    assert abs(summary["p50_ms"] - 2.0) < 1e-6
    assert summary["msgs_per_s"] == 2.0


def test_stats_with_bare_infinity() -> None:
    stats = support.parse_stats(
        '[{"type":"outbound-rtp","kind":"video","bytesSent":100,"x":-inf,"s":"-inf"}]'
    )
    assert support.outbound_video(stats)["x"] is None
    assert support.outbound_video(stats)["s"] == "-inf"


def test_send_result_rates_and_why_fewer_frames_were_sent() -> None:
    before = {"bytesSent": 1_000, "framesEncoded": 10}
    after = {
        "bytesSent": 501_000,
        "framesEncoded": 130,
        "frameWidth": 640,
        "frameHeight": 480,
        "encoderImplementation": "libvpx",
        "qualityLimitationReason": "bandwidth",
        "qualityLimitationDurations": {"bandwidth": 1.5, "cpu": 0, "none": 2.5, "other": 0},
    }
    result = support.send_result(before, after, 12.5, 4.0)
    assert result == {
        "cpu_pct": 12.5,
        "fps": 30.0,
        "kbps": 1000.0,
        "width": 640,
        "height": 480,
        "encoder": "libvpx",
        "seconds": 4.0,
        "quality_limitation": "bandwidth",
        "quality_limitation_s": {"bandwidth": 1.5, "cpu": 0, "none": 2.5, "other": 0},
    }
    assert support.send_result({}, {}, 1.0, 4.0)["fps"] is None


def test_markdown_table_medians_ratios_and_floor() -> None:
    def measurement(client: str, rep: int, scenario: str = "sendonly", **metrics: float) -> dict:
        return {
            "scenario": scenario,
            "case": "VP8",
            "client": client,
            "rep": rep,
            "metrics": metrics,
        }

    measurements = [
        measurement("sora_sdk", 0, cpu_pct=10.0, fps=30.0),
        measurement("sora_sdk", 1, cpu_pct=30.0, fps=30.0),
        measurement("sora_sdk", 2, cpu_pct=20.0, fps=30.0),
        measurement("sora_async", 0, cpu_pct=18.0, fps=30.0),
        measurement("pyav", 0, scenario="raw", enc_ms=5.0),
    ]
    text = report.markdown(measurements, {"date": "today"}, {"scale_largest_n": {}})

    def cells(prefix: str) -> list[str]:
        row = next(line for line in text.splitlines() if line.startswith(prefix))
        return [c.strip() for c in row.strip("|").split("|")]

    # Medians 20.0 and 18.0; CPU per frame 6.67 and 6.00 ms against a 5 ms codec floor.
    # One repetition has both clients: no range of paired ratios.
    assert cells("| sendonly | VP8 | CPU % |")[3:10] == [
        "20.0",
        "18.0",
        "0.90x",
        "",
        "",
        "",
        "ratio ≤ 1.0x (ok)",
    ]
    assert cells("| sendonly | VP8 | CPU ms per frame sent |")[3:9] == [
        "6.67",
        "6.00",
        "0.90x",
        "",
        "5.00",
        "+20 % (ok)",
    ]
    assert "| raw | VP8 | encode ms/frame |" in text


def test_each_repetition_pairs_the_two_clients_and_the_table_shows_their_range() -> None:
    def measurement(client: str, rep: int, cpu: float) -> dict:
        return {
            "scenario": "recvonly",
            "case": "VP8",
            "client": client,
            "rep": rep,
            "metrics": {"cpu_pct": cpu, "fps": 30.0},
        }

    measurements = [
        measurement("sora_sdk", 0, 10.0),
        measurement("sora_async", 0, 12.0),
        measurement("sora_sdk", 1, 8.0),
        measurement("sora_async", 1, 7.2),
        measurement("sora_sdk", 2, 10.0),
        # repetition 2 of sora_async failed: no pair, and its sdk run is not paired
    ]
    paired = report.paired_ratios(measurements)
    assert paired[("recvonly", "VP8", "cpu_pct")] == pytest.approx([1.2, 0.9])
    # fps is the same in both runs of every pair
    assert paired[("recvonly", "VP8", "fps")] == pytest.approx([1.0, 1.0])
    text = report.markdown(measurements, {"date": "today"})
    row = next(line for line in text.splitlines() if line.startswith("| recvonly | VP8 | CPU % |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # medians 10.0 and 9.6 (0.96x, a "hit"), while one pair read 1.20x and the other 0.90x
    assert cells[3:7] == ["10.0", "9.6", "0.96x", "0.90–1.20x"]
    assert cells[-1] == "ratio ≤ 1.0x (ok)"
    assert report.ratio_range([1.1]) == ""
    assert report.ratio_range(None) == ""


def test_scale_verdict_needs_an_n_the_official_client_held() -> None:
    def line(sdk: int, ours: int) -> str:
        (out,) = report.summary_lines({"scale_largest_n": {"sora_sdk": sdk, "sora_async": ours}})
        return out

    assert line(50, 100).endswith("(target ≥ 2x official: ok)")
    assert line(50, 50).endswith("(target ≥ 2x official: miss)")
    # a run whose N were all too large for both clients proves nothing either way
    assert line(0, 0).endswith("(target ≥ 2x official: not judged, no N held by sora_sdk)")


def test_process_cpu_seconds_reads_proc_stat_like_process_time() -> None:
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # burn some CPU of our own
        pass
    ours = support.process_cpu_seconds(os.getpid())
    assert ours is not None
    # /proc counts in clock ticks (usually 10 ms); process_time is exact.
    assert abs(ours - time.process_time()) < 0.05
    assert support.process_cpu_seconds(2**22 + 12345) is None  # above pid_max: no process


def test_thread_labels_drop_thread_numbers_only() -> None:
    assert support.thread_label("sora-codec_3") == "sora-codec"
    assert support.thread_label("Thread 0x0x5591") == "Thread"  # libwebrtc's rtc::Thread
    assert support.thread_label("ThreadPoolExecutor-0_1") == "ThreadPoolExecutor"
    for name in ("MainThread", "EncoderQueue", "dav1d-worker", "x264", "libvpx-vp9", "dead-beef"):
        assert support.thread_label(name) == name


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_cpu_window_splits_the_process_cpu_by_thread() -> None:
    burned: list[float] = []
    release = threading.Event()

    def burn() -> None:
        start = time.thread_time()
        while time.thread_time() - start < 0.15:
            pass
        burned.append(time.thread_time())  # this thread's CPU seconds, exactly
        release.wait(10)

    window = support.CpuWindow()
    threads = [threading.Thread(target=burn, name=f"burner_{i}") for i in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(burned) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert len(burned) == 2
        seconds = support.thread_run_seconds()
        ours = {tid: run for tid, (label, run) in seconds.items() if label == "burner"}
        assert set(ours) == {t.native_id for t in threads}
        # schedstat's run time is the clock thread_time reads
        for t in threads:
            assert t.native_id is not None and ours[t.native_id] >= 0.15
        assert sum(ours.values()) == pytest.approx(sum(burned), abs=0.01)
        split = window.by_thread()
        wall = window.elapsed()
        assert "burner×2" in split and "burner" not in split
        assert split["burner×2"] * wall / 100 == pytest.approx(sum(burned), abs=0.02)
        assert "MainThread" in split
        assert sum(split.values()) == pytest.approx(window.percent(), rel=0.25, abs=3)
    finally:
        release.set()
        for t in threads:
            t.join(10)


def test_the_by_thread_table_takes_medians_per_label() -> None:
    def run(client: str, rep: int, threads: dict[str, float]) -> dict:
        metrics = {"cpu_pct": sum(threads.values()), "thread_cpu_pct": threads}
        return {
            "scenario": "recvonly",
            "case": "VP8",
            "client": client,
            "rep": rep,
            "metrics": metrics,
        }

    measurements = [
        run("sora_sdk", 0, {"DecodingQueue": 3.4, "OnFrameQueue": 1.9, "Thread×2": 1.1}),
        run("sora_sdk", 1, {"DecodingQueue": 3.6, "OnFrameQueue": 2.1, "Thread×2": 0.9}),
        run("sora_async", 0, {"MainThread": 3.1, "sora-codec": 4.3, "control": 0.1}),
        # a label missing from a repetition counts 0 there: median of 0.8 and 0 is 0.4
        run("sora_async", 1, {"MainThread": 3.3, "sora-codec": 4.5, "dav1d-worker×2": 0.8}),
    ]
    assert report.thread_rows(measurements) == [
        [
            "recvonly",
            "VP8",
            "DecodingQueue 3.5, OnFrameQueue 2.0, Thread×2 1.0",
            "sora-codec 4.4, MainThread 3.2, dav1d-worker×2 0.4",  # control: under 0.2 %
        ]
    ]
    text = report.markdown(measurements, {"date": "today"})
    assert "| scenario | case | sora_sdk: CPU % by thread | sora_async: CPU % by thread |" in text
    # the audio scenario's two processes of a client make one split: their mean per label
    pair = [{"thread_cpu_pct": {"MainThread": 7.0}}, {"thread_cpu_pct": {"MainThread": 6, "x": 1}}]
    assert report.mean_threads(pair) == {"MainThread": 6.5, "x": 0.5}
    assert report.mean_threads([{"cpu_pct": 1.0}]) == {}
    # a run without the split (an older --json) adds no table
    plain = [{**m, "metrics": {"cpu_pct": 1.0}} for m in measurements]
    assert report.thread_rows(plain) == []
    assert "by thread" not in report.markdown(plain, {"date": "today"})


def test_cpu_trace_reads_the_window_between_samples() -> None:
    trace = support.CpuTrace(lambda: None)
    trace.samples = [(10.0, 1.0), (10.5, 1.2), (11.0, 1.5), (11.5, 1.5), (12.0, 2.5)]
    assert trace.percent(10.4, 11.6) == pytest.approx(30.0)  # samples at 10.5 .. 11.5
    assert trace.percent(9.0, 13.0) == pytest.approx(75.0)
    assert trace.percent(11.9, 13.0) is None  # one sample: no rate


def test_cpu_traces_sample_a_process_and_the_machines_steal() -> None:
    process = support.CpuTrace.of_process(os.getpid())
    steal = support.CpuTrace(support.steal_seconds)
    start = time.monotonic()
    cpu0 = time.process_time()
    process.sample()
    steal.sample()
    burn_until = time.thread_time() + 0.2
    while time.thread_time() < burn_until:
        pass
    process.sample()
    steal.sample()
    cpu1 = time.process_time()
    end = time.monotonic()
    # the trace reads this process's CPU time as process_time() does, in clock ticks (the
    # wall time around it, and so its percent, stretches with the host's steal)
    read = process.samples[-1][1] - process.samples[0][1]
    assert abs(read - (cpu1 - cpu0)) <= 3 / os.sysconf("SC_CLK_TCK")
    busy = process.percent(start, end)
    assert busy is not None and busy > 0
    first, last = steal.samples[0][1], steal.samples[-1][1]
    stolen = steal.percent(start, end)
    # /proc/stat's steal: a counter that only grows, at most all cores' time
    assert first >= 0 and last >= first
    assert stolen is not None and 0 <= stolen <= 100 * (os.cpu_count() or 1) + 20


def test_receive_counters_sum_video_inbound_entries_and_become_per_connection_rates() -> None:
    def video(decoded: int, dropped: int, plis: int, keys: int) -> dict[str, object]:
        return {
            "type": "inbound-rtp",
            "kind": "video",
            "framesReceived": decoded + dropped,
            "framesDecoded": decoded,
            "framesDropped": dropped,
            "pliCount": plis,
            "keyFramesDecoded": keys,
        }

    audio = {"type": "inbound-rtp", "kind": "audio", "framesDecoded": 999, "pliCount": 7}
    other = {"type": "outbound-rtp", "kind": "video", "framesDecoded": 999}
    # the official client's stats may lack a counter, or carry null (bare nan/inf)
    partial = {"type": "inbound-rtp", "kind": "video", "framesDecoded": 10, "pliCount": None}
    before = support.inbound_video_totals(
        [[video(100, 5, 1, 2), audio, other], [video(200, 0, 0, 1)], [partial]]
    )
    assert before == {
        "framesReceived": 305.0,
        "framesDecoded": 310.0,
        "framesDropped": 5.0,
        "pliCount": 1.0,
        "keyFramesDecoded": 3.0,
    }
    after = support.inbound_video_totals([[video(160, 25, 3, 4)], [video(260, 0, 0, 1)], []])
    rates = support.receive_rates(before, after, 2.0, 3)
    expected = {
        "received_fps": 140,
        "decoded_fps": 110,
        "dropped_fps": 20,
        "pli_per_s": 2,
        "keyframes_per_s": 2,
    }
    assert rates == pytest.approx({k: v / 6 for k, v in expected.items()})
    missing = support.receive_rates(None, after, 2.0, 3)
    assert missing == dict.fromkeys(support.RECEIVE_COUNTERS.values())
    assert support.receive_rates(before, after, 0.0, 3) == missing


def test_each_wakeup_probe_sleeps_on_its_schedule_and_reads_its_own_thread() -> None:
    rate, count = 200.0, 40  # 0.2 s each
    for probe in (
        lambda: wakeups.thread_sleep(rate, count),
        lambda: wakeups.loop_sleep(rate, count, asyncio.new_event_loop),
    ):
        start = time.monotonic()
        cpu, woke = probe()
        wall = time.monotonic() - start
        assert woke == count
        assert wall >= (count - 1) / rate  # it followed the schedule
        # it slept: a busy wait would use the whole wall time
        assert 0 < cpu < 0.5 * wall
    start = time.monotonic()
    loop_cpu, poster_cpu, ran = wakeups.handoff(rate, count)
    assert ran == count  # every post ran on the loop before it stopped
    assert 0 < loop_cpu < 0.5 * (time.monotonic() - start)
    assert poster_cpu > 0


def test_wakeup_costs_are_per_wakeup_and_shown_on_the_machine_line() -> None:
    costs = wakeups.measure(seconds=0.1, rate=200)
    assert {"thread_sleep", "asyncio_sleep", "handoff_loop", "handoff_thread"} <= set(costs)
    # per wake-up: far below the 5 ms between two of them, however slow the machine
    assert all(0 < value < 5000 for value in costs.values())
    line = report.machine_line({"date": "d", "wakeup_cpu_us": costs})
    assert f"asyncio.sleep {costs['asyncio_sleep']:g}" in line
    assert "CPU µs per wake-up (wakeups.py): thread time.sleep" in line
    assert "wake-up" not in report.machine_line({"date": "d"})
    with pytest.raises(ValueError):
        wakeups.measure(seconds=0)


def test_the_benchmark_helpers_load_neither_sora_async_nor_aiortc() -> None:
    # The official client's worker imports support.py, and run.py/report.py measure
    # and print: none of them should carry the package under test into its process.
    code = (
        "import sys\n"
        "from bench import report, support, wakeups\n"
        "print(sorted(m for m in ('sora_async', 'aiortc', 'av') if m in sys.modules))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_both_event_loops_get_a_table_each_against_the_same_official_runs() -> None:
    def run(client: str, rep: int, cpu: float, **extra: Any) -> dict:
        return {
            "scenario": "recvonly",
            "case": "VP8",
            "client": client,
            "rep": rep,
            "metrics": {"cpu_pct": cpu, "fps": 30.0, **extra},
        }

    measurements = [
        {"scenario": "raw", "case": "VP8", "client": "pyav", "rep": 0, "metrics": {"dec_ms": 2.0}},
        run("sora_sdk", 0, 10.0, thread_cpu_pct={"DecodingQueue": 4.0}),
        run("sora_async", 0, 12.0),
        run("sora_async+uvloop", 0, 9.0, thread_cpu_pct={"MainThread": 2.5}),
        run("sora_sdk", 1, 8.0),
        run("sora_async", 1, 9.6),
        run("sora_async+uvloop", 1, 8.4),
    ]
    assert report.paired_ratios(measurements, "sora_async+uvloop")[
        ("recvonly", "VP8", "cpu_pct")
    ] == pytest.approx([0.9, 1.05])
    # the two loops against each other, pair by pair: 9/12 and 8.4/9.6
    assert report.paired_ratios(measurements, "sora_async+uvloop", "sora_async")[
        ("recvonly", "VP8", "cpu_pct")
    ] == pytest.approx([0.75, 0.875])
    text = report.markdown(
        measurements,
        {"date": "today", "loop": "both"},
        {"scale_largest_n": {"sora_sdk": 25, "sora_async": 25, "sora_async+uvloop": 50}},
    )
    assert "sora_async on asyncio and on uvloop" in text
    tables = [line for line in text.splitlines() if line.startswith("| recvonly | VP8 | CPU % |")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in tables]
    # medians: sora_sdk 9.0, sora_async 10.8, on uvloop 8.7
    assert cells[0][3:7] == ["9.0", "10.8", "1.20x", "1.20–1.20x"]
    assert cells[0][-1] == "ratio ≤ 1.0x (miss)"
    assert cells[1][3:7] == ["9.0", "8.7", "0.97x", "0.90–1.05x"]
    assert cells[1][-1] == "ratio ≤ 1.0x (ok)"
    assert cells[2] == ["recvonly", "VP8", "CPU %", "10.8", "8.7", "0.81x", "0.75–0.88x"]
    # the floor: in both tables' per-frame rows, its own rows in the first table only
    assert text.count("| raw | VP8 | decode+BGR ms/frame |") == 1
    assert text.count("| 2.00 |") == 3
    assert "| scenario | case | metric | sora_sdk | sora_async+uvloop | async/sdk |" in text
    assert "- scale: largest N with every connection ≥ 25 fps: sora_sdk 25, sora_async 25 " in text
    assert "sora_sdk 25, sora_async+uvloop 50 (target ≥ 2x official: ok)" in text
    assert (
        "| scenario | case | sora_sdk: CPU % by thread | sora_async: CPU % by thread "
        "| sora_async+uvloop: CPU % by thread |" in text
    )
    # a run of one sora_async client (asyncio, or --loop uvloop) has one table, no loop table
    single = [m for m in measurements if m["client"] != "sora_async"]
    text = report.markdown(single, {"date": "today", "loop": "uvloop"})
    assert len([line for line in text.splitlines() if "| CPU % |" in line]) == 1
    assert "uvloop/asyncio" not in text


def test_each_repetition_runs_every_client_of_the_loop_choice_in_turn() -> None:
    from bench import run

    settings = run.settings_from(run.parse_args(["--quick", "--loop", "both"]))
    assert run.alternate(settings) == [
        (0, "sora_sdk"),
        (0, "sora_async"),
        (0, "sora_async+uvloop"),
        (1, "sora_sdk"),  # the two loops swap places every other repetition
        (1, "sora_async+uvloop"),
        (1, "sora_async"),
    ]
    settings = run.settings_from(run.parse_args(["--reps", "1", "--loop", "uvloop"]))
    assert run.alternate(settings) == [(0, "sora_sdk"), (0, "sora_async+uvloop")]
    settings = run.settings_from(run.parse_args(["--reps", "1"]))
    assert run.alternate(settings) == [(0, "sora_sdk"), (0, "sora_async")]
