"""The raw cost floor: the same encode and decode done directly with PyAV.

    python -m bench.workers.pyav_worker '{"task": "codec_floor", "codec": "VP8",
                                          "width": 640, "height": 480, "video_bit_rate": 1000}'

The encoder is the FFmpeg codec ``sora_async`` picks first for the codec
(``sora_async.hwaccel.backends``), set up by ``sora_async``'s own configurator
(``sora_async.codecs.pyav.configurator_for``: libvpx/libvpx-vp9/libsvtav1
real-time CBR options, thread count) at the bit rate the clients are asked
for; the decoder is ``sora_async``'s first decoder with its options. Only
settings are taken from ``sora_async``: the frames go through ``av`` calls
here, with no RTP, no packetization, no asyncio.

Per frame, as a sender and a receiver do it: BGR ndarray -> ``av.VideoFrame``
-> yuv420p -> encode; decode -> BGR ndarray. Frames are processed as fast as
possible and the CPU time per frame is scaled to ``fps`` (``cpu_pct`` at 30 fps,
100 % = one core), comparable with the clients' process CPU.
"""

from __future__ import annotations

import fractions
import os
import sys
import time
import traceback
from typing import Any

import av
from av.video.codeccontext import VideoCodecContext

from bench import support
from sora_async.codecs import registry  # noqa: F401 - registers the configurators
from sora_async.codecs.pyav import (
    EncoderSettings,
    PyAVVideoDecoder,
    configurator_for,
    thread_count,
)
from sora_async.hwaccel.backends import backends_for

emit = support.Emitter()


def open_encoder(codec: str, width: int, height: int, bitrate: int, fps: int) -> VideoCodecContext:
    backend = backends_for("INTERNAL", codec, "encoder")[0]
    configure = configurator_for(backend.pyav_name)
    if configure is None:
        raise RuntimeError(f"no configurator for {backend.pyav_name}")
    settings = EncoderSettings(bitrate=bitrate, framerate=fps)
    ctx = av.CodecContext.create(backend.pyav_name, "w")
    assert isinstance(ctx, VideoCodecContext)
    ctx.width, ctx.height = width, height
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.framerate = fractions.Fraction(fps, 1)
    ctx.bit_rate = bitrate
    ctx.gop_size = settings.keyframe_interval
    ctx.max_b_frames = 0
    ctx.thread_count = thread_count(width, height)
    setup = configure(ctx, settings, bitrate)
    ctx.pix_fmt = setup.pix_fmt
    ctx.options = dict(setup.options)
    ctx.open()
    return ctx


def open_decoder(codec: str) -> Any:
    backend = backends_for("INTERNAL", codec, "decoder")[0]
    ctx = av.CodecContext.create(backend.pyav_name, "r")
    options = PyAVVideoDecoder.DECODER_OPTIONS.get(backend.pyav_name)
    if options:
        ctx.options = dict(options)
    ctx.open()
    return ctx


def codec_floor(cfg: dict[str, Any]) -> dict[str, Any]:
    codec, width, height = str(cfg["codec"]), int(cfg["width"]), int(cfg["height"])
    fps = int(cfg.get("fps", 30))
    count, warmup = int(cfg.get("frames", 120)), int(cfg.get("warmup_frames", 15))
    bitrate = int(cfg["video_bit_rate"]) * 1000
    frames = support.make_frames(width, height, int(cfg.get("frame_count", 30)))
    encoder = open_encoder(codec, width, height, bitrate, fps)
    packets: list[Any] = []
    enc_cpu = 0.0
    for n in range(warmup + count):
        image = frames[n % len(frames)]
        support.paint_code(image, n, support.monotonic_ms())
        t0 = time.process_time()
        frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        frame.pts = n
        frame.time_base = encoder.time_base
        out = list(encoder.encode(frame))
        if n >= warmup:
            enc_cpu += time.process_time() - t0
        packets.extend(out)
    packets.extend(encoder.encode(None))  # drain (SVT-AV1 complains otherwise)
    total_bytes = sum(p.size for p in packets[warmup : warmup + count])
    decoder = open_decoder(codec)
    dec_cpu = 0.0
    decoded = 0
    for i, packet in enumerate(packets):
        t0 = time.process_time()
        for frame in decoder.decode(av.Packet(bytes(packet))):
            frame.to_ndarray(format="bgr24")
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
