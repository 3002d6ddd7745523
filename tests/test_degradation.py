"""``degradation_preference`` (issue 6) on a virtual clock: at 300 kbps a 960x540
30 fps source adapts as libwebrtc does in the official tests — MAINTAIN_RESOLUTION
keeps 960x540 and lowers the frame rate, MAINTAIN_FRAMERATE keeps the frame rate at
640x360 or less, BALANCED lowers both, DISABLED changes neither (its frame dropper
alone drops frames); CPU overuse adapts too and recovers."""

from __future__ import annotations

import pytest

from sora_async.enums import DegradationPreference as DP
from sora_async.rtc.degradation import DegradationAdapter


def run(
    preference: DP,
    target: int,
    seconds: float,
    *,
    frame_bytes: int = 2500,
    encode_time: float = 0.005,
    adapter: DegradationAdapter | None = None,
    now: list[float] | None = None,
    meets_target: bool = True,
) -> tuple[DegradationAdapter, float, tuple[int, int], list[float]]:
    """Feed 30 fps 960x540 frames; returns (adapter, accepted fps, size, clock)."""
    clock = now if now is not None else [0.0]
    if adapter is None:
        adapter = DegradationAdapter(preference, clock=lambda: clock[0])
    adapter.on_target(target)
    accepted = 0
    start = clock[0]
    while clock[0] - start < seconds:
        adapter.on_source(960, 540, 30.0)
        if adapter.accept():
            accepted += 1
            # an encoder meeting its target at this size and rate
            per_frame = min(frame_bytes, target / 8 / adapter.fps) if meets_target else frame_bytes
            adapter.on_encoded(int(per_frame), encode_time)
        clock[0] += 1 / 30
    return adapter, accepted / seconds, adapter.limit_size(960, 540), clock


@pytest.mark.parametrize("preference", list(DP))
def test_no_adaptation_with_enough_bandwidth(preference: DP) -> None:
    adapter, fps, size, _ = run(preference, 2_000_000, 10)
    assert size == (960, 540) and fps > 28 and adapter.adaptations == 0


def test_maintain_resolution_lowers_only_the_frame_rate() -> None:
    adapter, fps, size, _ = run(DP.MAINTAIN_RESOLUTION, 300_000, 10)
    assert size == (960, 540)
    assert adapter.fps_cap is not None and fps < 25


def test_maintain_framerate_lowers_only_the_resolution() -> None:
    adapter, fps, size, _ = run(DP.MAINTAIN_FRAMERATE, 300_000, 10)
    assert size[0] * size[1] <= 640 * 360 and fps > 28
    assert adapter.fps_cap is None


def test_balanced_lowers_both() -> None:
    _, fps, size, _ = run(DP.BALANCED, 300_000, 10)
    assert size[0] * size[1] < 960 * 540 and fps < 25


def test_disabled_keeps_resolution_and_the_dropper_drops_frames() -> None:
    # an encoder that overshoots (10 kB frames against 300 kbps): frames are dropped
    adapter, fps, size, _ = run(DP.DISABLED, 300_000, 10, frame_bytes=10_000, meets_target=False)
    assert size == (960, 540) and adapter.adaptations == 0
    assert fps < 10 and adapter.frames_dropped > 100


def test_maintain_framerate_recovers_when_bandwidth_returns() -> None:
    adapter, _, size, clock = run(DP.MAINTAIN_FRAMERATE, 300_000, 10)
    assert size != (960, 540)
    adapter, fps, size, _ = run(DP.MAINTAIN_FRAMERATE, 3_000_000, 40, adapter=adapter, now=clock)
    assert size == (960, 540) and adapter.pixel_cap is None and fps > 28


def test_cpu_overuse_steps_down_and_underuse_back_up() -> None:
    # 40 ms encodes against a 33 ms frame interval
    adapter, _, size, clock = run(DP.MAINTAIN_FRAMERATE, 3_000_000, 5, encode_time=0.04)
    assert size[0] < 960 and adapter.cpu_limited
    adapter, _, size, _ = run(
        DP.MAINTAIN_FRAMERATE, 3_000_000, 40, encode_time=0.005, adapter=adapter, now=clock
    )
    assert size == (960, 540) and not adapter.cpu_limited
