"""Codec benchmark (not a test): encode/decode ms per frame and CPU, per codec and size.

Usage::

    python -m sora_async.codecs.benchmark                      # 640x480 and 1280x720
    python -m sora_async.codecs.benchmark --sizes 320x240 --frames 30 --codecs VP9,AV1
    python -m sora_async.codecs.benchmark --implementation NVIDIA_VIDEO_CODEC_SDK
    python -m sora_async.codecs.benchmark --codecs H264 --implementation CISCO_OPENH264 \
        --openh264 /usr/lib/x86_64-linux-gnu/libopenh264.so.7

For each codec it prints the encoder and decoder in use, ms/frame (mean and
95th percentile), CPU (process CPU time over wall time, so 100 % = one core),
the bit rate reached, the output delay in frames (packets missing after frame
1) and how many frames a forced key frame took to appear.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

from .base import CodecUnavailableError
from .pattern import video_frame
from .pyav import EncoderSettings
from .registry import create_decoder, create_depacketizer, create_encoder, create_packetizer

DEFAULT_CODECS = ("VP8", "VP9", "AV1", "H264", "H265")


@dataclass
class Result:
    codec: str
    size: str
    encoder: str
    decoder: str
    encode_ms: float
    encode_p95_ms: float
    encode_cpu: float
    decode_ms: float
    decode_cpu: float
    kbps: float
    output_delay: int
    keyframe_delay: int | None


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def run(
    codec: str,
    width: int,
    height: int,
    frames: int,
    bitrate: int,
    implementation: str = "INTERNAL",
    openh264: str | None = None,
) -> Result:
    """Encode ``frames`` frames of the test pattern, packetize, depacketize and decode them."""
    source = [video_frame(width, height, i) for i in range(frames)]
    encoder = create_encoder(
        codec, implementation, settings=EncoderSettings(bitrate=bitrate), openh264=openh264
    )
    decoder = create_decoder(codec, implementation, openh264=openh264)
    packetizer, depacketizer = create_packetizer(codec), create_depacketizer(codec)
    force_at = frames // 2
    encode_times: list[float] = []
    encoded = []
    keyframe_delay: int | None = None
    output_delay = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for index, frame in enumerate(source):
        t0 = time.perf_counter()
        out = encoder.encode(frame, force_keyframe=index == force_at)
        encode_times.append((time.perf_counter() - t0) * 1000)
        if index == 0 and not out:
            output_delay += 1
        for item in out:
            if item.is_keyframe and index >= force_at and keyframe_delay is None:
                keyframe_delay = index - force_at
        encoded.extend(out)
    encode_wall, encode_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    rebuilt = [
        depacketizer.depacketize(packetizer.packetize(item), item.timestamp) for item in encoded
    ]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    decode_times: list[float] = []
    for item in rebuilt:
        t0 = time.perf_counter()
        decoder.decode(item)
        decode_times.append((time.perf_counter() - t0) * 1000)
    decode_wall, decode_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    encoder.close()
    total_bits = sum(len(item.data) for item in encoded) * 8
    return Result(
        codec=codec,
        size=f"{width}x{height}",
        encoder=encoder.implementation_name,
        decoder=decoder.implementation_name,
        encode_ms=statistics.fmean(encode_times),
        encode_p95_ms=_p95(encode_times),
        encode_cpu=100 * encode_cpu / max(encode_wall, 1e-9),
        decode_ms=statistics.fmean(decode_times) if decode_times else 0.0,
        decode_cpu=100 * decode_cpu / max(decode_wall, 1e-9),
        kbps=total_bits / (frames / 30) / 1000,
        output_delay=output_delay,
        keyframe_delay=keyframe_delay,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="640x480,1280x720")
    parser.add_argument("--codecs", default=",".join(DEFAULT_CODECS))
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--bitrate", type=int, default=1_500_000)
    parser.add_argument("--implementation", default="INTERNAL")
    parser.add_argument("--openh264", metavar="PATH", help="libopenh264 for CISCO_OPENH264")
    args = parser.parse_args(argv)
    header = (
        f"{'codec':5} {'size':>9} {'encoder':>12} {'decoder':>9} {'enc ms':>7} {'p95':>6} "
        f"{'enc CPU':>8} {'dec ms':>7} {'dec CPU':>8} {'kbps':>7} {'delay':>5} {'kf':>3}"
    )
    print(header)
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.lower().split("x"))
        for codec in args.codecs.split(","):
            try:
                r = run(
                    codec.strip().upper(),
                    width,
                    height,
                    args.frames,
                    args.bitrate,
                    args.implementation,
                    args.openh264,
                )
            except CodecUnavailableError as exc:
                print(f"{codec:5} {size:>9} unavailable: {exc}")
                continue
            keyframe = "-" if r.keyframe_delay is None else str(r.keyframe_delay)
            print(
                f"{r.codec:5} {r.size:>9} {r.encoder:>12} {r.decoder:>9} {r.encode_ms:7.2f} "
                f"{r.encode_p95_ms:6.2f} {r.encode_cpu:7.0f}% {r.decode_ms:7.2f} "
                f"{r.decode_cpu:7.0f}% {r.kbps:7.0f} {r.output_delay:5d} {keyframe:>3}"
            )
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
