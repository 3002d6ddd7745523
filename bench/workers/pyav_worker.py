"""The raw cost floor: the same encode and decode done directly with PyAV.

    python -m bench.workers.pyav_worker '{"task": "codec_floor", "codec": "VP8",
                                          "width": 640, "height": 480, "video_bit_rate": 1000}'

The encoder is the FFmpeg codec ``sora_async`` picks first for the codec
(``sora_async.hwaccel.backends``), set up by ``sora_async``'s own configurator
(``sora_async.codecs.pyav.configurator_for``: libvpx/libvpx-vp9/libsvtav1
real-time CBR options, thread count) at the bit rate the clients are asked
for; the decoder is ``sora_async``'s first decoder with its options. Only
settings and the pixel conversions are taken from ``sora_async``: the frames go
through ``av`` calls here, with no RTP, no packetization, no asyncio.

Per frame, as a sender and a receiver do it: BGR ndarray -> ``av.VideoFrame``
-> yuv420p -> encode; decode -> BGR ndarray. Frames are paced at ``fps`` (as the
clients get them; ``"paced": false`` runs them back to back) and the CPU time
per frame is scaled to ``fps`` (``cpu_pct`` at 30 fps, 100 % = one core),
comparable with the clients' process CPU. Pacing matters: the same libvpx VP8
encode cost 25-30 % more CPU per frame at 30 fps than back to back (VGA: 3.2
against 2.5 ms; the codec's state falls out of the caches between frames),
so a flat-out floor made every client look that much worse above it.

The conversions are ``sora_async``'s own (``sora_async.frames.reformat_with``):
libyuv for BGR -> I420 where the system has it, else libswscale through one
``VideoReformatter`` kept for all frames, single-threaded. A plain
``VideoFrame.reformat`` builds a new libswscale context (and its slice threads)
for every frame, which at 640x480 cost more than the conversion itself (VP8
encode flat out, same settings: 4.5-4.9 ms per frame that way against 3.8-3.9 ms
this way, on the 2-core bench machine).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import av
from av.video.codeccontext import VideoCodecContext
from av.video.reformatter import VideoReformatter

from bench import support
from sora_async.codecs import registry  # noqa: F401 - registers the configurators
from sora_async.codecs.pyav import (
    EncoderSettings,
    open_decoder_context,
    open_encoder_context,
)
from sora_async.frames import reformat_with
from sora_async.hwaccel.backends import backends_for

emit = support.Emitter()


def open_encoder(codec: str, width: int, height: int, bitrate: int, fps: int) -> VideoCodecContext:
    """The encoder sora_async opens for this codec, size and rate (its configurator)."""
    backend = backends_for("INTERNAL", codec, "encoder")[0]
    settings = EncoderSettings(bitrate=bitrate, framerate=fps)
    ctx, _setup = open_encoder_context(backend, settings, width, height, bitrate)
    return ctx


def open_decoder(codec: str, width: int, height: int) -> Any:
    """The decoder sora_async opens for this codec and size (options and threads)."""
    backend = backends_for("INTERNAL", codec, "decoder")[0]
    return open_decoder_context(backend, width, height)


def pacer(fps: float) -> Callable[[], None]:
    """A function that sleeps until the next ``1 / fps`` tick (no-op for ``fps`` 0)."""
    if fps <= 0:
        return lambda: None
    interval = 1.0 / fps
    due = time.monotonic()

    def tick() -> None:
        nonlocal due
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        due = max(due + interval, time.monotonic() - interval)

    return tick


def codec_floor(cfg: dict[str, Any]) -> dict[str, Any]:
    codec, width, height = str(cfg["codec"]), int(cfg["width"]), int(cfg["height"])
    fps = int(cfg.get("fps", 30))
    count, warmup = int(cfg.get("frames", 120)), int(cfg.get("warmup_frames", 15))
    tick = pacer(fps if cfg.get("paced", True) else 0)
    bitrate = int(cfg["video_bit_rate"]) * 1000
    frames = support.make_frames(width, height, int(cfg.get("frame_count", 30)))
    encoder = open_encoder(codec, width, height, bitrate, fps)
    to_yuv, to_bgr = VideoReformatter(), VideoReformatter()
    packets: list[Any] = []
    enc_cpu = 0.0
    for n in range(warmup + count):
        tick()
        image = frames[n % len(frames)]
        support.paint_code(image, n, support.monotonic_ms())
        t0 = time.process_time()
        source = av.VideoFrame.from_numpy_buffer(image, format="bgr24")
        frame = reformat_with(to_yuv, source, format="yuv420p", threads=1)
        frame.pts = n
        frame.time_base = encoder.time_base
        out = list(encoder.encode(frame))
        if n >= warmup:
            enc_cpu += time.process_time() - t0
        packets.extend(out)
    packets.extend(encoder.encode(None))  # drain (SVT-AV1 complains otherwise)
    total_bytes = sum(p.size for p in packets[warmup : warmup + count])
    decoder = open_decoder(codec, width, height)
    dec_cpu = 0.0
    decoded = 0
    tick = pacer(fps if cfg.get("paced", True) else 0)
    for i, packet in enumerate(packets):
        tick()
        t0 = time.process_time()
        for frame in decoder.decode(av.Packet(bytes(packet))):
            reformat_with(to_bgr, frame, format="bgr24", threads=1).to_ndarray()
            decoded += 1
        if i >= warmup:
            dec_cpu += time.process_time() - t0
    measured_frames = max(1, len(packets) - warmup)
    return {
        "encoder": encoder.name,
        "decoder": decoder.name,
        "enc_cpu_pct": 100 * enc_cpu / count * fps,
        "dec_cpu_pct": 100 * dec_cpu / measured_frames * fps,
        "enc_ms": 1000 * enc_cpu / count,
        "dec_ms": 1000 * dec_cpu / measured_frames,
        "kbps": total_bytes * 8 / (count / fps) / 1000,
        "decoded": decoded,
    }


def main(argv: list[str]) -> int:
    cfg = support.read_config(argv)
    support.hard_exit_after(float(cfg.get("hard_timeout_s", 300)), emit)
    code = 0
    try:
        emit("result", client="pyav", version=av.__version__, **codec_floor(cfg))
    except BaseException as exc:
        emit("error", where="codec_floor", message=repr(exc), traceback=traceback.format_exc())
        code = 1
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv)
