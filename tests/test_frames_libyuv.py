"""BGR <-> I420 through the system's libyuv (``sora_async.frames``), and its fallback."""

from __future__ import annotations

import fractions
from collections.abc import Callable

import av
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter

from sora_async import frames
from sora_async.frames import (
    VideoFrame,
    bgr24_to_i420,
    i420_to_bgr24,
    libyuv_available,
    reformat_with,
)

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


def _fast_and_slow(
    convert: Callable[[av.VideoFrame], av.VideoFrame | None], frame: av.VideoFrame, format: str
) -> tuple[av.VideoFrame, av.VideoFrame]:
    """libyuv's conversion of ``frame`` (size, format and timing checked) and libswscale's."""
    frame.pts, frame.time_base = 1234, fractions.Fraction(1, 90000)
    fast = convert(frame)
    assert fast is not None
    assert (fast.format.name, fast.width, fast.height) == (format, frame.width, frame.height)
    assert (fast.pts, fast.time_base) == (1234, fractions.Fraction(1, 90000))
    return fast, VideoReformatter().reformat(frame, format=format, threads=1)


@needs_libyuv
@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (34, 18)])
def test_libyuv_matches_libswscale_within_one(size: tuple[int, int]) -> None:
    source = av.VideoFrame.from_numpy_buffer(_image(*size), format="bgr24")
    fast, slow = _fast_and_slow(bgr24_to_i420, source, "yuv420p")
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
    monkeypatch.setattr(frames, "_libyuv_functions", None)  # looked up again
    assert not libyuv_available()
    source = av.VideoFrame.from_numpy_buffer(_image(64, 48), format="bgr24")
    assert bgr24_to_i420(source) is None
    out = frames.reformat_video(source, format="yuv420p")
    assert (out.format.name, out.width, out.height) == ("yuv420p", 64, 48)
    assert i420_to_bgr24(out) is None
    back = frames.reformat_video(out, format="bgr24")
    assert (back.format.name, back.width, back.height) == ("bgr24", 64, 48)
    # the next load (after monkeypatch restores the cache) is unaffected


# --- I420 -> BGR (the receive side) ---------------------------------------------------


def _decoded(width: int, height: int, image: np.ndarray | None = None) -> av.VideoFrame:
    """A VP8-decoded frame (the decoder's own line sizes and colour tags)."""
    if image is None:
        image = _image(width, height)
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.bit_rate, encoder.time_base = 2_000_000, fractions.Fraction(1, 30)
    decoder = av.CodecContext.create("vp8", "r")
    source = VideoReformatter().reformat(
        av.VideoFrame.from_ndarray(image, format="bgr24"), format="yuv420p"
    )
    source.pts = 0
    packets = [*encoder.encode(source), *encoder.encode(None)]
    decoded = [frame for packet in packets for frame in decoder.decode(packet)]
    assert len(decoded) == 1 and decoded[0].format.name == "yuv420p"
    frame: av.VideoFrame = decoded[0]
    return frame


def _bt601(frame: av.VideoFrame) -> np.ndarray:
    """BGR by the BT.601 limited-range formula, chroma point-sampled (float)."""
    height, width = frame.height, frame.width
    y, u, v = (plane.astype(float) for plane in _planes(frame))
    u = u.repeat(2, 0).repeat(2, 1)[:height, :width] - 128
    v = v.repeat(2, 0).repeat(2, 1)[:height, :width] - 128
    y = (y - 16) * 1.164
    bgr = np.stack([y + 2.018 * u, y - 0.391 * u - 0.813 * v, y + 1.596 * v], -1)
    return np.clip(bgr.round(), 0, 255)


@needs_libyuv
@pytest.mark.parametrize("size", [(640, 480), (1280, 720)])
def test_i420_to_bgr24_matches_libswscale_on_decoded_frames(size: tuple[int, int]) -> None:
    decoded = _decoded(*size)
    fast, slow = _fast_and_slow(i420_to_bgr24, decoded, "bgr24")
    difference = np.abs(fast.to_ndarray().astype(int) - slow.to_ndarray().astype(int))
    assert difference.max() <= 3  # measured: 3 (mean 1.1)
    assert np.abs(fast.to_ndarray() - _bt601(decoded)).max() <= 2
    # the flat blue block comes back blue
    assert np.abs(fast.to_ndarray()[8, 8].astype(int) - (255, 0, 0)).max() <= 6


@needs_libyuv
@pytest.mark.parametrize("size", [(33, 17), (641, 361), (3, 5), (1, 1)])
def test_i420_to_bgr24_odd_sizes_and_padded_line_sizes(size: tuple[int, int]) -> None:
    width, height = size
    decoded = _decoded(width, height)
    assert decoded.planes[0].line_size > width or width % 64 == 0  # decoder row padding
    fast = i420_to_bgr24(decoded)
    assert fast is not None
    bgr = fast.to_ndarray()
    assert bgr.shape == (height, width, 3)
    assert np.abs(bgr - _bt601(decoded)).max() <= 2
    # and through the public frame: data() is libyuv's output
    assert np.array_equal(VideoFrame(decoded).data(), bgr)


@needs_libyuv
def test_i420_to_bgr24_agrees_with_libswscale_on_smooth_odd_frames() -> None:
    # At odd sizes libswscale filters chroma; on smooth content that changes little.
    width, height = 161, 91
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack(
        [xx * 255 // (width - 1), yy * 255 // (height - 1), (xx + yy) * 255 // (width + height)],
        -1,
    ).astype(np.uint8)
    decoded = _decoded(width, height, image)
    fast = i420_to_bgr24(decoded)
    assert fast is not None
    slow = VideoReformatter().reformat(decoded, format="bgr24", threads=1)
    difference = np.abs(fast.to_ndarray().astype(int) - slow.to_ndarray().astype(int))
    # measured: max 7 (where VP8 left chroma steps), 97 % of samples within 3
    assert difference.max() <= 12
    assert (difference <= 3).mean() >= 0.95


def test_i420_to_bgr24_leaves_other_colours_and_scaling_to_libswscale() -> None:
    decoded = _decoded(64, 48)
    full = _decoded(64, 48)
    full.color_range = 2  # AVCOL_RANGE_JPEG: not libyuv's constants
    assert i420_to_bgr24(full) is None
    hd = _decoded(64, 48)
    hd.colorspace = 1  # AVCOL_SPC_BT709
    assert i420_to_bgr24(hd) is None
    reformatter = VideoReformatter()
    for frame in (full, hd):
        out = reformat_with(reformatter, frame, format="bgr24")
        slow = VideoReformatter().reformat(frame, format="bgr24")
        assert np.array_equal(out.to_ndarray(), slow.to_ndarray())
    # full range really converts differently (so falling back matters)
    assert not np.array_equal(
        reformat_with(reformatter, full, format="bgr24").to_ndarray(),
        reformat_with(reformatter, decoded, format="bgr24").to_ndarray(),
    )
    scaled = reformat_with(reformatter, decoded, format="bgr24", width=32, height=24)
    assert (scaled.format.name, scaled.width, scaled.height) == ("bgr24", 32, 24)
    rgb = reformat_with(reformatter, decoded, format="rgb24")
    assert rgb.format.name == "rgb24"


@needs_libyuv
def test_i420_to_rgb24_is_the_channel_reverse_of_bgr24() -> None:
    decoded = _decoded(65, 49)
    bgr, rgb = i420_to_bgr24(decoded), i420_to_bgr24(decoded, "rgb24")
    assert bgr is not None and rgb is not None and rgb.format.name == "rgb24"
    assert np.array_equal(rgb.to_ndarray()[..., ::-1], bgr.to_ndarray())
    assert i420_to_bgr24(decoded, "gray") is None  # libswscale's
    wrapped = VideoFrame(decoded)
    assert np.array_equal(wrapped.to_ndarray("rgb24")[..., ::-1], wrapped.data())


@needs_libyuv
def test_bgr_output_buffers_are_reused_only_once_nothing_uses_them() -> None:
    """The packed output buffers of 640x480 and up come from a pool: a frame (or an
    array of it) a consumer still holds is never written again; one nobody holds is."""
    images = [_image(640, 480, seed) for seed in (1, 2, 3)]
    sources = [
        av.VideoFrame.from_numpy_buffer(image, format="bgr24").reformat(format="yuv420p")
        for image in images
    ]
    expected = [VideoReformatter().reformat(s, format="bgr24").to_ndarray() for s in sources]

    def tolerance(a: np.ndarray, b: np.ndarray) -> int:
        return int(np.abs(a.astype(int) - b.astype(int)).max())

    kept = i420_to_bgr24(sources[0])
    assert kept is not None
    kept_array = kept.to_ndarray()
    del kept
    seen = set()
    for i in range(3 * frames._PackedBuffers.KEEP):
        out = i420_to_bgr24(sources[1 + i % 2])
        assert out is not None
        array = out.to_ndarray()
        assert tolerance(array, expected[1 + i % 2]) <= 3
        seen.add(array.ctypes.data)
        del out, array  # dropped: its buffer may be taken again
    # The held array still shows the first image, and its buffer was never handed out.
    assert tolerance(kept_array, expected[0]) <= 3
    assert kept_array.ctypes.data not in seen
    assert len(seen) == 1  # every later frame reused one buffer
    # Below 512 KiB frames keep their own allocation.
    small = av.VideoFrame(width=320, height=240, format="yuv420p")
    assert frames._packed_buffers.take(240, 320) is None
    assert i420_to_bgr24(small) is not None
