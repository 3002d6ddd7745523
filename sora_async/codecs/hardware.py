"""Real-time setups for the hardware encoders in ``hwaccel.backends``.

None of these can run on the CI machine (no GPU); they are exercised when an
NVIDIA/Intel/AMD machine is available, and their selection and fallback are
tested with faked probes. The options come from FFmpeg's encoder sources and
``aiortc-notes.md`` A.1:

- NVENC: ``delay=0`` (otherwise about "surfaces - 1" frames are held),
  ``zerolatency=1``, ``forced-idr=1`` (a forced I frame becomes an IDR),
  ``tune=ull``, CBR, no B-frames. FFmpeg's ``nvenc.c`` re-reads
  ``bit_rate`` before each frame and reconfigures the session when the
  driver supports dynamic bit rate, so the bit rate changes in place
  (:data:`BitrateUpdate.CONTEXT`) — from FFmpeg's source, not measured here.
- QSV: ``async_depth=1`` (one frame in flight), ``look_ahead=0``,
  ``low_delay_brc=1``, ``forced_idr=1``.
- AMF: ``usage=ultralowlatency``, ``rc=cbr``, ``forced_idr=1`` (needed for
  on-demand key frames, FFmpeg commit "amfenc: Add support for on-demand key
  frames").
- V4L2 M2M (Raspberry Pi): the driver has few knobs; repeat sequence headers.
- VideoToolbox: ``realtime=1``, ``allow_sw=0``, ``prio_speed=1``.
- VAAPI: ``low_power`` off, CBR; VAAPI needs hardware frames, which the
  PyAV wheel cannot give it, so these entries exist for other FFmpeg builds.
"""

from __future__ import annotations

from av.video.codeccontext import VideoCodecContext

from .pyav import BitrateUpdate, EncoderSettings, EncoderSetup, register_configurator


def _cbr(bitrate: int) -> dict[str, str]:
    return {"maxrate": str(bitrate), "bufsize": str(bitrate)}


def configure_nvenc(
    ctx: VideoCodecContext, settings: EncoderSettings, bitrate: int
) -> EncoderSetup:
    """NVENC (H.264/H.265/AV1) with no frame delay and in-place bit-rate changes."""
    return EncoderSetup(
        options={
            "preset": "p1",
            "tune": "ull",
            "rc": "cbr",
            "delay": "0",
            "zerolatency": "1",
            "forced-idr": "1",
            "b_ref_mode": "disabled",
            **_cbr(bitrate),
        },
        bitrate_update=BitrateUpdate.CONTEXT,
    )


def configure_qsv(ctx: VideoCodecContext, settings: EncoderSettings, bitrate: int) -> EncoderSetup:
    """Intel QSV/oneVPL: one frame in flight, no look-ahead, low-delay rate control."""
    return EncoderSetup(
        options={
            "preset": "veryfast",
            "async_depth": "1",
            "look_ahead": "0",
            "low_delay_brc": "1",
            "forced_idr": "1",
            **_cbr(bitrate),
        },
        pix_fmt="nv12",
    )


def configure_amf(ctx: VideoCodecContext, settings: EncoderSettings, bitrate: int) -> EncoderSetup:
    """AMD AMF: ultra-low-latency usage, CBR, IDR on demand."""
    return EncoderSetup(
        options={
            "usage": "ultralowlatency",
            "quality": "speed",
            "rc": "cbr",
            "forced_idr": "1",
            **_cbr(bitrate),
        },
        pix_fmt="nv12",
    )


def configure_v4l2m2m(
    ctx: VideoCodecContext, settings: EncoderSettings, bitrate: int
) -> EncoderSetup:
    """Raspberry Pi V4L2 memory-to-memory H.264 encoder."""
    return EncoderSetup(options={"num_capture_buffers": "4"})


def configure_videotoolbox(
    ctx: VideoCodecContext, settings: EncoderSettings, bitrate: int
) -> EncoderSetup:
    """Apple VideoToolbox (macOS wheels only): real-time, hardware only."""
    return EncoderSetup(
        options={"realtime": "1", "allow_sw": "0", "prio_speed": "1", **_cbr(bitrate)},
        pix_fmt="nv12",
    )


def configure_vaapi(
    ctx: VideoCodecContext, settings: EncoderSettings, bitrate: int
) -> EncoderSetup:
    """VAAPI (Intel/AMD on Linux) where the FFmpeg build has it."""
    return EncoderSetup(options={"rc_mode": "CBR", **_cbr(bitrate)}, pix_fmt="nv12")


for _name in ("h264_nvenc", "hevc_nvenc", "av1_nvenc"):
    register_configurator(_name, configure_nvenc)
for _name in ("h264_qsv", "hevc_qsv", "av1_qsv", "vp9_qsv"):
    register_configurator(_name, configure_qsv)
for _name in ("h264_amf", "hevc_amf", "av1_amf"):
    register_configurator(_name, configure_amf)
for _name in ("h264_v4l2m2m", "hevc_v4l2m2m"):
    register_configurator(_name, configure_v4l2m2m)
for _name in ("h264_videotoolbox", "hevc_videotoolbox"):
    register_configurator(_name, configure_videotoolbox)
for _name in ("h264_vaapi", "hevc_vaapi", "av1_vaapi"):
    register_configurator(_name, configure_vaapi)
