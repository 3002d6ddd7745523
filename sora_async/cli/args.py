"""Command-line options of ``sora-async``: the connection keywords, media and output.

Every option of the "connection" group maps to the ``Connection`` keyword of
the same name (``--video-codec-type`` → ``video_codec_type``), so the
official reference (``Sora.create_connection``) documents them too. JSON
options take JSON text or ``@file.json``. The official examples'
environment variables give the defaults: ``SORA_SIGNALING_URLS``
(comma-separated), ``SORA_CHANNEL_ID`` and ``SORA_METADATA`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import CliError, ExitCode

VIDEO_CODECS = ("VP8", "VP9", "AV1", "H264", "H265")
RIDS = ("r0", "r1", "r2")
DEGRADATION_PREFERENCES = ("DISABLED", "MAINTAIN_FRAMERATE", "MAINTAIN_RESOLUTION", "BALANCED")
DEFAULT_CHANNEL = "sora-async"


def json_value(text: str) -> Any:
    """Parse ``text`` as JSON, or read ``@path`` as a JSON file (an argparse ``type``)."""
    source = text
    if text.startswith("@"):
        try:
            source = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {exc.strerror}") from exc
    try:
        return json.loads(source)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None


def _resolution(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 640x360, got {text!r}"
        ) from None
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError("the resolution must be at least 16x16")
    return width, height


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


#: (flag, keyword, argparse options): the connection keywords offered as options.
CONNECTION_OPTIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--client-id", "client_id", {"metavar": "ID"}),
    ("--bundle-id", "bundle_id", {"metavar": "ID"}),
    (
        "--metadata",
        "metadata",
        {"type": json_value, "metavar": "JSON", "help": "JSON or @file (default: $SORA_METADATA)"},
    ),
    (
        "--signaling-notify-metadata",
        "signaling_notify_metadata",
        {"type": json_value, "metavar": "JSON"},
    ),
    (
        "--video",
        "video",
        {"action": argparse.BooleanOptionalAction, "help": "--no-video: no video at all"},
    ),
    (
        "--audio",
        "audio",
        {"action": argparse.BooleanOptionalAction, "help": "--no-audio: no audio at all"},
    ),
    (
        "--video-codec-type",
        "video_codec_type",
        {"choices": VIDEO_CODECS, "type": str.upper, "help": "default: Sora's (VP9)"},
    ),
    ("--audio-codec-type", "audio_codec_type", {"choices": ("OPUS",), "type": str.upper}),
    ("--video-bit-rate", "video_bit_rate", {"type": int, "metavar": "KBPS"}),
    ("--audio-bit-rate", "audio_bit_rate", {"type": int, "metavar": "KBPS"}),
    ("--video-vp9-params", "video_vp9_params", {"type": json_value, "metavar": "JSON"}),
    ("--video-av1-params", "video_av1_params", {"type": json_value, "metavar": "JSON"}),
    ("--video-h264-params", "video_h264_params", {"type": json_value, "metavar": "JSON"}),
    ("--video-h265-params", "video_h265_params", {"type": json_value, "metavar": "JSON"}),
    ("--audio-opus-params", "audio_opus_params", {"type": json_value, "metavar": "JSON"}),
    ("--simulcast", "simulcast", {"action": argparse.BooleanOptionalAction}),
    ("--simulcast-rid", "simulcast_rid", {"choices": RIDS}),
    ("--simulcast-request-rid", "simulcast_request_rid", {"choices": ("none", *RIDS)}),
    ("--spotlight", "spotlight", {"action": argparse.BooleanOptionalAction}),
    ("--spotlight-number", "spotlight_number", {"type": int, "metavar": "N"}),
    ("--spotlight-focus-rid", "spotlight_focus_rid", {"choices": ("none", *RIDS)}),
    ("--spotlight-unfocus-rid", "spotlight_unfocus_rid", {"choices": ("none", *RIDS)}),
    ("--forwarding-filter", "forwarding_filter", {"type": json_value, "metavar": "JSON"}),
    ("--forwarding-filters", "forwarding_filters", {"type": json_value, "metavar": "JSON"}),
    (
        "--data-channel-signaling",
        "data_channel_signaling",
        {"action": argparse.BooleanOptionalAction},
    ),
    (
        "--ignore-disconnect-websocket",
        "ignore_disconnect_websocket",
        {"action": argparse.BooleanOptionalAction},
    ),
    (
        "--data-channels",
        "data_channels",
        {
            "type": json_value,
            "metavar": "JSON",
            "help": 'e.g. [{"label":"#x","direction":"sendrecv"}]',
        },
    ),
    ("--connect-timeout", "connect_timeout", {"type": _positive, "metavar": "SECONDS"}),
    (
        "--openh264",
        "openh264",
        {"metavar": "PATH", "help": "Cisco's libopenh264: H.264 is then encoded and decoded by it"},
    ),
    (
        "--websocket-connection-timeout",
        "websocket_connection_timeout",
        {"type": _positive, "metavar": "SECONDS"},
    ),
    (
        "--websocket-close-timeout",
        "websocket_close_timeout",
        {"type": _positive, "metavar": "SECONDS"},
    ),
    (
        "--disconnect-wait-timeout",
        "disconnect_wait_timeout",
        {"type": _positive, "metavar": "SECONDS"},
    ),
    ("--audio-streaming-language-code", "audio_streaming_language_code", {"metavar": "CODE"}),
    (
        "--insecure",
        "insecure",
        {"action": "store_true", "default": None, "help": "do NOT verify the server's certificate"},
    ),
    ("--ca-cert", "ca_cert", {"metavar": "PEM_FILE", "help": "trust only this CA (PEM file)"}),
    ("--client-cert", "client_cert", {"metavar": "PEM_FILE", "help": "client certificate (mTLS)"}),
    ("--client-key", "client_key", {"metavar": "PEM_FILE", "help": "its private key"}),
    ("--proxy-url", "proxy_url", {"metavar": "URL", "help": "HTTP proxy, http://host:port"}),
    ("--proxy-username", "proxy_username", {"metavar": "NAME"}),
    (
        "--proxy-password",
        "proxy_password",
        {"metavar": "PASSWORD", "help": "(default: $SORA_PROXY_PASSWORD)"},
    ),
    ("--proxy-agent", "proxy_agent", {"metavar": "TEXT"}),
    (
        "--degradation-preference",
        "degradation_preference",
        {"choices": DEGRADATION_PREFERENCES, "type": str.upper},
    ),
    ("--user-agent", "user_agent", {"metavar": "TEXT"}),
)


def add_target_options(parser: argparse.ArgumentParser) -> None:
    """``--signaling-url``, ``--channel-id`` and ``--devserver``: where to connect."""
    group = parser.add_argument_group("where to connect")
    group.add_argument(
        "--signaling-url",
        "-s",
        action="append",
        metavar="URL",
        help="wss://HOST/signaling; repeat for a cluster (default: $SORA_SIGNALING_URLS, "
        "comma-separated)",
    )
    group.add_argument(
        "--channel-id", "-c", metavar="ID", help="the channel (default: $SORA_CHANNEL_ID)"
    )
    group.add_argument(
        "--devserver",
        action="store_true",
        help="start a local Sora-compatible dev server in this process and connect to it",
    )
    group.add_argument(
        "--devserver-port",
        type=int,
        default=0,
        metavar="PORT",
        help="port of the --devserver (default: a free one; its URL is printed)",
    )


def add_connection_options(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """The connection keywords (see :data:`CONNECTION_OPTIONS`)."""
    group = parser.add_argument_group("connection (the Connection keywords of the same name)")
    for flag, keyword, options in CONNECTION_OPTIONS:
        if keyword in skip:
            continue
        group.add_argument(flag, dest=keyword, **options)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """How long to run and what to print."""
    group = parser.add_argument_group("running and output")
    group.add_argument(
        "--duration", "-t", type=_positive, metavar="SECONDS", help="stop after this long"
    )
    group.add_argument(
        "--stats",
        action="store_true",
        help="print a JSON line of stats (codec, fps, kbps, RTT) to stdout every interval",
    )
    group.add_argument(
        "--stats-interval", type=_positive, default=1.0, metavar="SECONDS", help="(default 1)"
    )
    group.add_argument(
        "--expect-media",
        action="store_true",
        help="exit with 6 unless media was received (recvonly/sendrecv) or sent (sendonly)",
    )
    group.add_argument(
        "--plain", action="store_true", help="plain progress lines, no live view on a terminal"
    )
    group.add_argument(
        "--verbose", "-v", action="count", default=0, help="more logging (-vv: debug)"
    )


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """What to send: a file or device read with PyAV, or generated media."""
    group = parser.add_argument_group("what to send (default: a test pattern and a tone)")
    group.add_argument(
        "--video-input",
        metavar="FILE|DEVICE",
        help="a media file, URL, or capture device (/dev/video0) read with PyAV",
    )
    group.add_argument(
        "--video-input-format", metavar="FMT", help="FFmpeg input format (v4l2, avfoundation, ...)"
    )
    group.add_argument(
        "--video-input-option",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="FFmpeg input option, e.g. video_size=1280x720 (repeatable)",
    )
    group.add_argument(
        "--audio-input", metavar="FILE|DEVICE", help="a media file or capture device"
    )
    group.add_argument(
        "--audio-input-format", metavar="FMT", help="FFmpeg input format (alsa, pulse, ...)"
    )
    group.add_argument(
        "--audio-input-option", type=_key_value, action="append", default=[], metavar="KEY=VALUE"
    )
    group.add_argument("--loop", action="store_true", help="play input files again and again")
    group.add_argument("--fake-video", action="store_true", help="send the test pattern")
    group.add_argument("--fake-audio", action="store_true", help="send the 440 Hz tone")
    group.add_argument(
        "--resolution",
        type=_resolution,
        default=(640, 360),
        metavar="WxH",
        help="of the test pattern (default 640x360)",
    )
    group.add_argument(
        "--fps", type=_positive, default=30.0, help="of the test pattern (default 30)"
    )


def add_sink_options(parser: argparse.ArgumentParser) -> None:
    """What to do with received media."""
    group = parser.add_argument_group("what to do with received media")
    group.add_argument(
        "--record",
        metavar="FILE",
        help="record received audio+video with PyAV (.mkv, .mp4, .webm)",
    )
    group.add_argument(
        "--window", action="store_true", help="show received video in a window (needs OpenCV)"
    )


def environment_urls(environ: Mapping[str, str]) -> list[str]:
    """``SORA_SIGNALING_URLS`` split at commas (and blanks), empty parts dropped."""
    raw = environ.get("SORA_SIGNALING_URLS", "")
    return [part for part in raw.replace(" ", ",").split(",") if part]


def connection_keywords(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The ``Connection`` keywords given on the command line (unset ones left out).

    ``$SORA_METADATA`` (JSON) is the default of ``--metadata`` and
    ``$SORA_PROXY_PASSWORD`` of ``--proxy-password``. Raises
    :class:`~sora_async.cli.errors.CliError` for a bad ``$SORA_METADATA``.
    """
    environ = os.environ if environ is None else environ
    keywords: dict[str, Any] = {}
    for _flag, keyword, _options in CONNECTION_OPTIONS:
        value = getattr(args, keyword, None)
        if value is not None:
            keywords[keyword] = value
    if "metadata" not in keywords and environ.get("SORA_METADATA"):
        try:
            keywords["metadata"] = json.loads(environ["SORA_METADATA"])
        except json.JSONDecodeError as exc:
            raise CliError(
                f"SORA_METADATA is not valid JSON ({exc.msg} at column {exc.colno})",
                ExitCode.USAGE,
            ) from None
    if "proxy_password" not in keywords and environ.get("SORA_PROXY_PASSWORD"):
        keywords["proxy_password"] = environ["SORA_PROXY_PASSWORD"]
    if "degradation_preference" in keywords:
        from ..enums import DegradationPreference

        keywords["degradation_preference"] = DegradationPreference[
            keywords["degradation_preference"]
        ]
    if "openh264" in keywords:
        # --openh264 means "encode and decode H.264 with it"; other codecs stay INTERNAL.
        from ..hwaccel import VideoCodecImplementation, VideoCodecPreference

        preference = VideoCodecPreference.default()
        h264 = preference.codecs[preference.get_or_add("H264")]
        h264.encoder = h264.decoder = VideoCodecImplementation.CISCO_OPENH264
        keywords["video_codec_preference"] = preference
    return keywords
