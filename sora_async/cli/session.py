"""The subcommands that connect: ``sendonly``, ``recvonly``, ``sendrecv`` and ``messaging``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import IO, Any

from ..connection import Connection
from ..enums import DisconnectCode, Role
from ..errors import SoraConnectionError
from .args import DEFAULT_CHANNEL, connection_keywords, environment_urls
from .errors import CliError, ExitCode
from .live import ConnectionRow, LiveView
from .media import MediaInput, TestPatternTrack, ToneTrack
from .record import Recorder
from .stats import ConnectionStats, StatsTracker

logger = logging.getLogger("sora_async.cli")


@dataclass
class Target:
    """Where to connect: signaling URLs and a channel (and the dev server, if we run one)."""

    signaling_urls: list[str]
    channel_id: str
    devserver: Any = None


@contextlib.asynccontextmanager
async def open_target(
    args: argparse.Namespace, say: Callable[[str], None], environ: dict[str, str] | None = None
) -> AsyncIterator[Target]:
    """The URLs and channel from the options, ``$SORA_*``, or a ``--devserver`` we start."""
    environ = dict(os.environ) if environ is None else environ
    channel_id = args.channel_id or environ.get("SORA_CHANNEL_ID")
    if args.devserver:
        from ..devserver import DevServer

        try:
            server = DevServer(host="127.0.0.1", port=args.devserver_port)
            await server.start()
        except OSError as exc:
            raise CliError(
                f"cannot start the dev server on port {args.devserver_port}: {exc.strerror}",
                ExitCode.MEDIA_IO,
            ) from exc
        try:
            say(f"dev server listening: {server.signaling_url}")
            yield Target([server.signaling_url], channel_id or DEFAULT_CHANNEL, server)
        finally:
            await server.stop()
        return
    urls = args.signaling_url or environment_urls(environ)
    if not urls:
        raise CliError(
            "no signaling URL given",
            ExitCode.USAGE,
            hint="use --signaling-url wss://HOST/signaling (or set SORA_SIGNALING_URLS), "
            "or --devserver to try a local dev server",
        )
    if not channel_id:
        raise CliError(
            "no channel given",
            ExitCode.USAGE,
            hint="use --channel-id NAME (or set SORA_CHANNEL_ID)",
        )
    yield Target(list(urls), channel_id)


def make_connection(target: Target, role: Role, **keywords: Any) -> Connection:
    """``Connection(...)``, with invalid keywords reported as a usage error in plain words."""
    try:
        return Connection(target.signaling_urls, role, target.channel_id, **keywords)
    except (TypeError, ValueError) as exc:
        raise CliError(f"invalid option: {exc}", ExitCode.USAGE) from None


async def connect(connection: Connection, target: Target, say: Callable[[str], None]) -> None:
    """Connect, turning a failure into ``CliError(CONNECT_FAILED)``."""
    where = ", ".join(target.signaling_urls)
    say(
        f"connecting to {where} as {connection.options.role.value} "
        f"in channel {target.channel_id!r}..."
    )
    try:
        await connection.connect()
    except SoraConnectionError as exc:
        raise CliError(
            f"could not connect to {where}: {exc.message or exc.code.name}",
            ExitCode.CONNECT_FAILED,
            hint=_connect_hint(exc),
        ) from None
    say(f"connected: connection id {connection.connection_id}")


def _connect_hint(exc: SoraConnectionError) -> str | None:
    text = exc.message.lower()
    if "certificate" in text or "ssl" in text or "tls" in text:
        return "check --ca-cert, or --insecure to skip verification (test servers only)"
    if "refused" in text:
        return "is the server running at that address and port?"
    if exc.code is DisconnectCode.WEBSOCKET_ONCLOSE:
        return "Sora rejected the connect message: check --channel-id and --metadata"
    return None


class StopSignal:
    """Ctrl-C / SIGTERM as an event: the first asks for a clean stop, the second interrupts."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._installed: list[int] = []

    def __enter__(self) -> StopSignal:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.add_signal_handler(signum, self._stop, signum)
                self._installed.append(signum)
        return self

    def _stop(self, signum: int) -> None:
        self.event.set()
        # A second Ctrl-C is not swallowed.
        with contextlib.suppress(Exception):
            self._loop.remove_signal_handler(signum)

    def __exit__(self, *exc_info: object) -> None:
        for signum in self._installed:
            with contextlib.suppress(Exception):
                self._loop.remove_signal_handler(signum)


@dataclass
class _Reception:
    tracks: list[Any] = field(default_factory=list)
    messages: int = 0


async def _until(
    stop: asyncio.Event,
    duration: float | None,
    connection: Connection,
    extra: list[asyncio.Future[Any]],
) -> str:
    """Wait for the first reason to stop; returns it in words."""
    closed = asyncio.ensure_future(connection.wait_closed())
    stopped = asyncio.ensure_future(stop.wait())
    waiters: list[asyncio.Future[Any]] = [closed, stopped, *extra]
    try:
        done, _ = await asyncio.wait(waiters, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (closed, stopped):
            waiter.cancel()
    if closed in done:
        return "closed"
    if stopped in done:
        return "interrupted"
    if done:
        return "input"
    return "duration"


async def run_media(args: argparse.Namespace, role: Role) -> ExitCode:
    """``sendonly``/``recvonly``/``sendrecv``: send sources, receive into sinks, show stats."""
    out: IO[str] = sys.stdout
    view = LiveView(f"sora-async {role.value}", file=sys.stderr, plain=args.plain or args.stats)
    say = view.print
    keywords = connection_keywords(args)
    inputs: list[MediaInput] = []
    recorder: Recorder | None = None
    window: Any = None
    if role.sends:
        video_source, audio_source = _sources(args, keywords, inputs, say)
        if video_source is not None:
            keywords["video_source"] = video_source
        if audio_source is not None:
            keywords["audio_source"] = audio_source
    record = getattr(args, "record", None)
    show = getattr(args, "window", False)
    if role.receives:
        if record:
            recorder = Recorder(
                record,
                video=keywords.get("video") is not False,
                audio=keywords.get("audio") is not False,
            )
        if show:
            from .window import VideoWindow

            window = VideoWindow()
    reception = _Reception()
    tracker = StatsTracker()
    summary: ConnectionStats | None = None
    exit_code = ExitCode.OK
    with view, StopSignal() as stop:
        async with open_target(args, say) as target:
            connection = make_connection(target, role, **keywords)

            def on_track(track: Any) -> None:
                reception.tracks.append(track)
                say(f"receiving {track.kind} from {track.stream_id}")
                if recorder is not None:
                    recorder.add_track(track)
                if window is not None:
                    window.add_track(track)

            connection.on("track", on_track)
            connection.on("notify", lambda message: _notify(message, say))
            try:
                for media_input in inputs:
                    await asyncio.to_thread(media_input.start)
                await connect(connection, target, say)
                extra: list[asyncio.Future[Any]] = []
                if inputs and not args.loop:
                    extra += [asyncio.ensure_future(i.wait_ended()) for i in inputs]
                if window is not None:
                    extra.append(asyncio.ensure_future(window.run()))
                reporter = asyncio.ensure_future(
                    _report(connection, tracker, view, args, out, reception)
                )
                try:
                    reason = await _until(stop.event, args.duration, connection, extra)
                finally:
                    reporter.cancel()
                    for waiter in extra:
                        waiter.cancel()
                    await asyncio.gather(reporter, *extra, return_exceptions=True)
                summary = tracker.update(await connection.get_stats())
                if reason == "closed":
                    exit_code = _closed_code(connection, say)
                else:
                    say(
                        {
                            "interrupted": "stopping (Ctrl-C)",
                            "input": "input ended",
                            "duration": "duration elapsed",
                        }[reason]
                    )
            finally:
                await connection.disconnect()
                for media_input in inputs:
                    await media_input.stop()
                if recorder is not None:
                    await recorder.close()
                    if recorder.video_frames or recorder.audio_frames:
                        say(
                            f"recorded {recorder.video_frames} video and "
                            f"{recorder.audio_frames} audio frames to {recorder.path}"
                        )
                    else:
                        say(f"nothing was received: {recorder.path} not written")
                if window is not None:
                    await window.close()
                    say(f"showed {window.frames_shown} frames in the window")
            for media_input in inputs:
                if media_input.error is not None:
                    raise CliError(
                        f"reading {media_input.url} failed: {media_input.error}", ExitCode.MEDIA_IO
                    )
    if exit_code is ExitCode.OK and args.expect_media:
        exit_code = _check_media(role, summary, say)
    return exit_code


def _sources(
    args: argparse.Namespace,
    keywords: dict[str, Any],
    inputs: list[MediaInput],
    say: Callable[[str], None],
) -> tuple[Any, Any]:
    want_video = keywords.get("video") is not False
    want_audio = keywords.get("audio") is not False
    video: Any = None
    audio: Any = None
    named = args.video_input or args.audio_input
    if args.video_input and want_video:
        same = args.audio_input == args.video_input and want_audio
        media_input = MediaInput(
            args.video_input,
            format=args.video_input_format,
            options=dict(args.video_input_option),
            video=True,
            audio=same,
            loop=args.loop,
        )
        media_input.open()
        inputs.append(media_input)
        video = media_input.video_source
        if same:
            audio = media_input.audio_source
    if args.audio_input and want_audio and audio is None:
        media_input = MediaInput(
            args.audio_input,
            format=args.audio_input_format,
            options=dict(args.audio_input_option),
            video=False,
            audio=True,
            loop=args.loop,
        )
        media_input.open()
        inputs.append(media_input)
        audio = media_input.audio_source
    fake_video = args.fake_video or not named
    fake_audio = args.fake_audio or not named
    if video is None and want_video and fake_video:
        width, height = args.resolution
        video = TestPatternTrack(width, height, args.fps)
    if audio is None and want_audio and fake_audio:
        audio = ToneTrack()
    if not named and not (args.fake_video or args.fake_audio):
        say("nothing to send was named: sending a test pattern and a 440 Hz tone")
    return video, audio


def _notify(message: dict[str, Any], say: Callable[[str], None]) -> None:
    event = message.get("event_type")
    if event in ("connection.created", "connection.destroyed"):
        who = message.get("connection_id")
        say(f"{event.split('.')[1]}: {who} ({message.get('role', '?')})")


def _closed_code(connection: Connection, say: Callable[[str], None]) -> ExitCode:
    code = connection.disconnect_code
    reason = connection.disconnect_message or (code.name if code is not None else "?")
    if code is DisconnectCode.CLOSE_SUCCEEDED:
        say(f"the server closed the connection: {reason}")
        return ExitCode.OK
    say(f"the connection ended: {reason}")
    return ExitCode.DISCONNECTED


def _check_media(
    role: Role, summary: ConnectionStats | None, say: Callable[[str], None]
) -> ExitCode:
    if summary is None:
        return ExitCode.NO_MEDIA
    received = summary.bytes_received > 0
    sent = summary.bytes_sent > 0
    ok = received if role.receives else sent
    if not ok:
        what = "received" if role.receives else "sent"
        say(f"no media was {what} (--expect-media)")
        return ExitCode.NO_MEDIA
    return ExitCode.OK


async def _report(
    connection: Connection,
    tracker: StatsTracker,
    view: LiveView,
    args: argparse.Namespace,
    out: IO[str],
    reception: _Reception,
) -> None:
    while True:
        await asyncio.sleep(args.stats_interval)
        try:
            summary = tracker.update(await connection.get_stats())
        except Exception:  # stats are best effort; never end the session over them
            logger.debug("get_stats failed", exc_info=True)
            continue
        if args.stats:
            line = {"connection_id": connection.connection_id, **summary.to_json()}
            print(json.dumps(line), file=out, flush=True)
        view.update(
            [
                ConnectionRow(
                    connection.options.role.value,
                    connection.state.name,
                    summary,
                    connection.connection_id,
                )
            ]
        )


async def run_messaging(args: argparse.Namespace) -> ExitCode:
    """``messaging``: lines from stdin (or ``--send``) out on a label, messages in to stdout."""
    say = _stderr_say
    keywords = connection_keywords(args)
    label = args.label
    if not label.startswith("#"):
        raise CliError(f"a messaging label starts with '#', got {label!r}", ExitCode.USAGE)
    keywords.setdefault("data_channel_signaling", True)
    keywords.setdefault("audio", False)
    keywords.setdefault("video", False)
    keywords.setdefault("data_channels", [{"label": label, "direction": args.direction}])
    role = Role(args.role)
    exit_code = ExitCode.OK
    opened = asyncio.Event()
    received = 0
    with StopSignal() as stop:
        async with open_target(args, say) as target:
            connection = make_connection(target, role, **keywords)

            def on_data_channel(opened_label: str) -> None:
                if opened_label == label:
                    opened.set()

            def on_message(message_label: str, data: bytes) -> None:
                nonlocal received
                received += 1
                text = data.decode("utf-8", errors="replace")
                if args.json:
                    print(json.dumps({"label": message_label, "data": text}), flush=True)
                else:
                    print(f"{message_label}: {text}", flush=True)

            connection.on("data_channel", on_data_channel)
            connection.on("message", on_message)
            try:
                await connect(connection, target, say)
                if args.direction != "recvonly":
                    try:
                        await asyncio.wait_for(opened.wait(), 10)
                    except TimeoutError:
                        raise CliError(
                            f"the DataChannel {label} did not open", ExitCode.CONNECT_FAILED
                        ) from None
                    say(f"{label} is open; type a line and Enter to send it (Ctrl-D to end)")
                sender = asyncio.ensure_future(_send_lines(connection, label, args, say))
                # Without --duration, the session ends when the input does (after
                # --linger seconds for the replies); with it, it runs that long.
                waiters: list[asyncio.Future[Any]] = []
                if args.direction != "recvonly" and args.duration is None:
                    waiters.append(sender)
                try:
                    reason = await _until(stop.event, args.duration, connection, waiters)
                    if reason == "input":
                        await _until(stop.event, args.linger, connection, [])
                finally:
                    sender.cancel()
                    await asyncio.gather(sender, return_exceptions=True)
                if reason == "closed":
                    exit_code = _closed_code(connection, say)
            finally:
                await connection.disconnect()
    if exit_code is ExitCode.OK and args.expect_media and received == 0:
        say("no message was received (--expect-media)")
        exit_code = ExitCode.NO_MEDIA
    return exit_code


def _stderr_say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _send_lines(
    connection: Connection, label: str, args: argparse.Namespace, say: Callable[[str], None]
) -> None:
    # Sora relays only to channels it has opened; "switched" says ours are all open.
    for _ in range(50):
        if connection.switched:
            break
        await asyncio.sleep(0.1)
    for text in args.send:
        if not await connection.send_data_channel(label, text.encode()):
            say(f"could not send on {label}")
    if args.send:
        return
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    while (line := await lines.get()) is not None:
        if line and not await connection.send_data_channel(label, line.encode()):
            say(f"could not send on {label}")
