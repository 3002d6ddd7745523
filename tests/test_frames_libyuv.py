"""BGR -> I420 through the system's libyuv (``sora_async.frames``), and its fallback."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter

from sora_async import frames
from sora_async.frames import bgr24_to_i420, libyuv_available, reformat_with

needs_libyuv = pytest.mark.skipif(not libyuv_available(), reason="no libyuv on this system")


def _planes(frame: av.VideoFrame) -> list[np.ndarray]:
    return [
        np.frombuffer(memoryview(p), np.uint8).reshape(p.height, p.line_size)[:, : p.width]
        for p in frame.planes
    ]


def _image(width: int, height: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[: height // 2, : width // 2] = (255, 0, 0)  # a flat blue block: exact colours
    return image


@needs_libyuv
@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (34, 18)])
def test_libyuv_matches_libswscale_within_one(size: tuple[int, int]) -> None:
    width, height = size
    source = av.VideoFrame.from_numpy_buffer(_image(width, height), format="bgr24")
    source.pts, source.time_base = 1234, fractions.Fraction(1, 90000)
    fast = bgr24_to_i420(source)
    assert fast is not None
    assert (fast.format.name, fast.width, fast.height) == ("yuv420p", width, height)
    assert (fast.pts, fast.time_base) == (1234, fractions.Fraction(1, 90000))
    slow = VideoReformatter().reformat(source, format="yuv420p", threads=1)
    for a, b in zip(_planes(fast), _planes(slow), strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    # BT.601 limited range, as libswscale: pure blue is Y=41, U=240, V=110 (libyuv: U=239)
    y, u, v = _planes(fast)
    got = (int(y[0, 0]), int(u[0, 0]), int(v[0, 0]))
    assert all(abs(a - b) <= 1 for a, b in zip(got, (41, 240, 110), strict=True)), got


@needs_libyuv
def test_libyuv_handles_odd_sizes_and_row_padding() -> None:
    # a view with a row stride wider than width * 3 (a crop of a larger image)
    big = _image(64, 40)
    crop = big[3:36, 5:38]  # 33 x 33: odd width and height
    source = av.VideoFrame.from_ndarray(np.ascontiguousarray(crop), format="bgr24")
    fast = bgr24_to_i420(source)
    assert fast is not None and (fast.width, fast.height) == (33, 33)
    slow = VideoReformatter().reformat(source, format="yuv420p", threads=1)
    assert np.abs(_planes(fast)[0].astype(int) - _planes(slow)[0].astype(int)).max() <= 1


def test_reformat_with_falls_back_to_the_reformatter() -> None:
    source = av.VideoFrame.from_numpy_buffer(_image(64, 48), format="bgr24")
    reformatter = VideoReformatter()
    scaled = reformat_with(reformatter, source, width=32, height=24, format="yuv420p")
    assert (scaled.format.name, scaled.width, scaled.height) == ("yuv420p", 32, 24)
    rgb = reformat_with(reformatter, source, format="rgb24")
    assert rgb.format.name == "rgb24"
    assert np.array_equal(rgb.to_ndarray()[..., ::-1], source.to_ndarray())
    same = reformat_with(reformatter, source, format="yuv420p", threads=1)
    assert (same.format.name, same.width, same.height) == ("yuv420p", 64, 48)


def test_libyuv_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SORA_ASYNC_LIBYUV", "0")
    monkeypatch.setattr(frames, "_libyuv_loaded", False)
    monkeypatch.setattr(frames, "_libyuv_convert", None)
    assert not libyuv_available()
    source = av.VideoFrame.from_numpy_buffer(_image(64, 48), format="bgr24")
    assert bgr24_to_i420(source) is None
    out = frames.reformat_video(source, format="yuv420p")
    assert (out.format.name, out.width, out.height) == ("yuv420p", 64, 48)
    # the next load (after monkeypatch restores the cache) is unaffected
