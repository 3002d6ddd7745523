"""``sora-async``: the command-line client (also ``python -m sora_async``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from ..enums import Role
from ..runner import run
from .args import (
    add_connection_options,
    add_output_options,
    add_sink_options,
    add_source_options,
    add_target_options,
)
from .errors import EXIT_CODE_HELP, CliError, ExitCode

DESCRIPTION = """\
A command-line client for WebRTC SFU Sora, and a local Sora-compatible dev server.

examples:
  sora-async demo                                    # everything local, 15 s, checks media flows
  sora-async devserver --port 5000                   # a dev server for other clients
  sora-async sendonly --devserver --duration 10      # a test pattern and a tone to a local server
  sora-async sendonly -s wss://sora.example.com/signaling -c my-channel \\
      --metadata '{"access_token": "..."}' --video-input /dev/video0 --video-codec-type VP9
  sora-async recvonly -s ws://127.0.0.1:5000/signaling -c sora --record out.mkv --stats
  echo hello | sora-async messaging -s ws://127.0.0.1:5000/signaling -c sora
  sora-async capability                              # which codecs this machine encodes/decodes
"""

EPILOG = f"""\
environment (the official examples' names, used when the option is not given):
  SORA_SIGNALING_URLS   comma-separated signaling URLs      (--signaling-url)
  SORA_CHANNEL_ID       the channel                          (--channel-id)
  SORA_METADATA         JSON metadata, e.g. an access token  (--metadata)

exit codes:
{EXIT_CODE_HELP}
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``sora-async`` argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="sora-async",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sora-async {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for role, summary in (
        (Role.SENDONLY, "send media (a file, a device, or a test pattern and tone)"),
        (Role.RECVONLY, "receive media: record it, show it, print stats"),
        (Role.SENDRECV, "send and receive media"),
    ):
        sub = commands.add_parser(
            role.value,
            help=summary,
            description=f"{role.value}: {summary}.",
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_target_options(sub)
        if role.sends:
            add_source_options(sub)
        if role.receives:
            add_sink_options(sub)
        add_output_options(sub)
        add_connection_options(sub)
        sub.set_defaults(role=role)

    messaging = commands.add_parser(
        "messaging",
        help="send lines from stdin on a DataChannel label, print what arrives",
        description="messaging: lines read from stdin (or --send) go out on --label; "
        "messages received on it are printed to stdout.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_options(messaging)
    group = messaging.add_argument_group("messaging")
    group.add_argument("--label", "-l", default="#sora-async", help="(default #sora-async)")
    group.add_argument(
        "--direction", choices=("sendrecv", "sendonly", "recvonly"), default="sendrecv"
    )
    group.add_argument(
        "--role", choices=[r.value for r in Role], default="sendrecv", help="(default sendrecv)"
    )
    group.add_argument(
        "--send",
        action="append",
        default=[],
        metavar="TEXT",
        help="send TEXT (repeatable) instead of reading stdin",
    )
    group.add_argument("--json", action="store_true", help="print messages as JSON lines")
    group.add_argument(
        "--linger",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="after the input ended, wait this long for replies (default 1)",
    )
    add_output_options(messaging)
    add_connection_options(messaging)

    from ..devserver.__main__ import build_parser as devserver_parser

    commands.add_parser(
        "devserver",
        parents=[devserver_parser()],
        add_help=False,
        help="run the Sora-compatible dev server (signaling, SFU, HTTP API)",
        description="Local Sora-compatible signaling server, SFU and HTTP API "
        "(see docs/devserver.md).",
    )

    capability = commands.add_parser(
        "capability",
        help="which video codecs this machine can encode and decode, per engine",
        description="Probe every codec engine (software, OpenH264, NVIDIA, Intel, AMD, "
        "Raspberry Pi) by opening it, as get_video_codec_capability() does.",
    )
    capability.add_argument("--json", action="store_true", help="print the official JSON shape")
    capability.add_argument("--openh264", metavar="PATH", help="Cisco's libopenh264 to probe too")

    from ..demo import build_parser as demo_parser

    commands.add_parser(
        "demo",
        parents=[demo_parser()],
        add_help=False,
        help="the README demo: a local dev server and two clients, media flowing",
        description="A local dev server, a sendonly and a recvonly client; a live view "
        "for ~15 s; writes demo-received.png and demo-received.wav; exits 0 only if "
        "media arrived.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sora-async``; returns the exit code (see :class:`ExitCode`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _logging(getattr(args, "verbose", 0))
    try:
        return int(_dispatch(args))
    except CliError as exc:
        print(f"sora-async: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return int(exc.code)
    except KeyboardInterrupt:
        print("sora-async: interrupted", file=sys.stderr)
        return int(ExitCode.OK)
    except Exception:
        traceback.print_exc()
        print(
            "sora-async: internal error (the traceback is above; please report it)",
            file=sys.stderr,
        )
        return int(ExitCode.INTERNAL)


def _logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _dispatch(args: argparse.Namespace) -> ExitCode:
    command = args.command
    if command in ("sendonly", "recvonly", "sendrecv"):
        from .session import run_media

        return run(run_media(args, args.role))
    if command == "messaging":
        from .session import run_messaging

        return run(run_messaging(args))
    if command == "devserver":
        from ..devserver.__main__ import main as devserver_main

        return ExitCode(devserver_main(_devserver_argv(args)))
    if command == "capability":
        return _capability(args)
    if command == "demo":
        from ..demo import run_from_args

        return ExitCode.OK if run_from_args(args) else ExitCode.NO_MEDIA
    raise CliError(f"unknown command {command!r}", ExitCode.USAGE)  # pragma: no cover


def _devserver_argv(args: argparse.Namespace) -> list[str]:
    """Re-create the dev server's own argv from the parsed options (it validates them)."""
    from ..devserver.__main__ import build_parser as devserver_parser

    argv: list[str] = []
    for action in devserver_parser()._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest, None)
        if value is None or value is False or value == action.default:
            continue
        flag = action.option_strings[-1]
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def _capability(args: argparse.Namespace) -> ExitCode:
    from ..hwaccel import get_video_codec_capability

    capability = get_video_codec_capability(args.openh264)
    if args.json:
        print(json.dumps(capability.to_json(), indent=2))
        return ExitCode.OK
    codecs = ("VP8", "VP9", "AV1", "H264", "H265")
    print(f"{'engine':<26}" + "".join(f"{c:>8}" for c in codecs))
    for engine in capability.engines:
        cells = []
        for codec in codecs:
            entry = engine.codec(codec)
            mark = ""
            if entry is not None:
                mark = ("E" if entry.encoder else "") + ("D" if entry.decoder else "")
            cells.append(f"{mark or '-':>8}")
        print(f"{engine.name.json_name:<26}" + "".join(cells))
    print("E = can encode, D = can decode (each engine was opened to check)")
    return ExitCode.OK
