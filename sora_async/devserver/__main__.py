"""Command line: ``python -m sora_async.devserver`` / ``sora-async-devserver``.

    sora-async-devserver --host 127.0.0.1 --port 5000
    sora-async-devserver --port 5443 --tls-cert cert.pem --tls-key key.pem --secret s3cret

Prints the signaling and API URLs once listening, then serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from .server import DevServer, DevServerOptions


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="sora-async-devserver",
        description="Local Sora-compatible signaling server, SFU and HTTP API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=5000, help="TCP port; 0 picks one (default 5000)"
    )
    parser.add_argument("--secret", help="HS256 key; then metadata.access_token must be a JWT")
    parser.add_argument("--tls-cert", help="PEM certificate (chain): serve wss:// and https://")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument("--client-ca", help="PEM CA bundle: require client certificates (mTLS)")
    parser.add_argument(
        "--redirect-to",
        metavar="URL",
        help="answer every connect without redirect:true with a redirect to URL",
    )
    parser.add_argument(
        "--data-channel-signaling-close-message",
        action="store_true",
        help='send {"type":"close"} on DataChannel "signaling" before a server-side close'
        " of a DataChannel-only session",
    )
    parser.add_argument(
        "--connection-lifetime",
        type=float,
        metavar="SECONDS",
        help="close every connection after this long (1000 LIFETIME-EXPIRED)",
    )
    parser.add_argument(
        "--connection-updated-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds between connection.updated notifies (default 60; 0 disables)",
    )
    parser.add_argument(
        "--ping-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between WebSocket pings (default 5; 0 disables)",
    )
    parser.add_argument(
        "--transport-cc",
        action="store_true",
        help=(
            "transport-cc: offered on upstream media (feedback sent) and on forwarded "
            "media (sequence numbers stamped, feedback read) (default: REMB only)"
        ),
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="log level (default INFO)",
    )
    return parser


def options_from_args(args: argparse.Namespace) -> DevServerOptions:
    """Map parsed arguments to :class:`DevServerOptions`."""
    return DevServerOptions(
        host=args.host,
        port=args.port,
        secret=args.secret,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        client_ca=args.client_ca,
        redirect_to=args.redirect_to,
        data_channel_signaling_close_message=args.data_channel_signaling_close_message,
        connection_lifetime=args.connection_lifetime,
        ping_interval=args.ping_interval,
        connection_updated_interval=args.connection_updated_interval,
        transport_cc=args.transport_cc,
    )


async def serve(options: DevServerOptions) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not available on Windows' event loops; Ctrl-C then raises KeyboardInterrupt.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    async with DevServer.from_options(options) as server:
        print(f"signaling: {server.signaling_url}", flush=True)
        print(f"api: {server.api_url}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sora-async-devserver``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.client_ca and not args.tls_cert:
        parser.error("--client-ca needs --tls-cert/--tls-key")
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(options_from_args(args)))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"sora-async-devserver: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
