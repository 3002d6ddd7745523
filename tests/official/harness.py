"""asyncio wrapper around ``runner.py``: one official ``sora_sdk`` client per subprocess.

Example::

    async with OfficialClient(
        signaling_urls=[server.signaling_url], role="sendonly", channel_id="ch",
        video_codec_type="VP8", fake_video={"width": 320, "height": 240, "fps": 15},
    ) as sender:
        await sender.connect()
        stats = await sender.get_stats()
        event = await sender.disconnect()
        assert event["name"] == "CLOSE_SUCCEEDED"

Every keyword that is not a harness option goes to ``Sora.create_connection``
(see runner.py for the conversions). Events are dicts as written by the
runner (``event``, ``t`` and the event's fields) plus ``seq``, their index in
``client.events()``.

On exit the client quits the runner (which disconnects first if needed) and
the test fails if the process crashed (non-zero exit, e.g. SIGABRT from
libwebrtc), did not exit in time, or reported an ``error`` event (an exception
inside a sora_sdk callback), with the process's stderr tail in the message.
"""

# The API takes explicit timeouts (wait_for(..., timeout=10)) by design: every
# wait on the official client is bounded and says so in its failure message.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import importlib.util
import itertools
import json
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

RUNNER = Path(__file__).with_name("runner.py")


#: True when the official SDK can be imported by the interpreter running the tests
#: (sora_sdk 2025.4.0 ships a CPython 3.11 wheel only).
def _sora_sdk_available() -> bool:
    try:
        return importlib.util.find_spec("sora_sdk") is not None
    except (ImportError, ValueError):
        return False


SORA_SDK_AVAILABLE = _sora_sdk_available()

Event = dict[str, Any]
Predicate = Callable[[Event], bool]

_SEND_ROLES = {"sendonly", "sendrecv"}
_STDERR_LINES = 2000
# libwebrtc warnings that say nothing about the session: a recvonly without an
# audio device logs the first one every 20 ms, which would flush everything
# useful out of the stderr tail.
_STDERR_NOISE = (
    "failed to retrieve the playout delay",
    "NVENC library file is not found",
    "Will not log any `WebRTC.Audio.Apm",
    "Unable to set playout device",
)


def _describe_returncode(rc: int | None) -> str:
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return f"killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def _abbreviate(event: Event, limit: int = 300) -> str:
    text = json.dumps(event, separators=(",", ":"), default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class OfficialClient:
    """One official client (``sora_sdk``) in a subprocess, driven from asyncio.

    Args:
        signaling_urls, role, channel_id: as for ``Sora.create_connection``.
        name: label used in failure messages (default: role + channel).
        fake_video: ``{"width", "height", "fps"}`` or False; sent when the role
            sends. Default 320x240 at 15 fps.
        fake_audio: ``{"frequency", "sample_rate", "channels", "amplitude"}`` or
            False; default a 440 Hz tone, 48 kHz mono.
        audio_sink: ``{"sample_rate", "channels", "window"}`` for remote audio.
        video_report_every: report every N-th decoded frame (default 30).
        libwebrtc_log: ``SoraLoggingSeverity`` name for libwebrtc logs on stderr
            (default "WARNING"; None for none).
        start_timeout: seconds to wait for the runner to come up.
        exit_timeout: seconds to wait for the runner to exit after ``quit``
            (it disconnects first), then it is killed and the test fails.
        allow_error_events: do not fail on ``error`` events.
        settle_before_disconnect: (runner option, default True) let a re-offer
            in flight be answered before ``disconnect()``: sora_sdk 2025.4.0
            crashes (SIGSEGV) about one time in five when it disconnects while
            applying a re-offer and the server closes at once.
        **kwargs: any other ``create_connection`` keyword. For send roles that
            send video, ``degradation_preference`` defaults to
            ``"MAINTAIN_RESOLUTION"`` (libwebrtc otherwise starts below the
            captured size while its bandwidth estimate ramps up); pass None to
            leave it unset.
    """

    def __init__(
        self,
        signaling_urls: list[str],
        role: str,
        channel_id: str,
        *,
        name: str | None = None,
        libwebrtc_log: str | None = "WARNING",
        start_timeout: float = 20.0,
        exit_timeout: float = 30.0,
        allow_error_events: bool = False,
        **kwargs: Any,
    ) -> None:
        self.name = name or f"{role}@{channel_id}"
        config: dict[str, Any] = {
            "signaling_urls": list(signaling_urls),
            "role": role,
            "channel_id": channel_id,
            "name": self.name,
            **kwargs,
        }
        if libwebrtc_log:
            config["libwebrtc_log"] = libwebrtc_log
        sends_video = (
            role in _SEND_ROLES
            and kwargs.get("video", True) is not False
            and kwargs.get("fake_video", True) is not False
        )
        if sends_video and "degradation_preference" not in kwargs:
            config["degradation_preference"] = "MAINTAIN_RESOLUTION"
        if config.get("degradation_preference", "") is None:
            del config["degradation_preference"]
        self.config = config
        self.start_timeout = start_timeout
        self.exit_timeout = exit_timeout
        self.allow_error_events = allow_error_events
        self.connection_id: str | None = None
        self.returncode: int | None = None
        self._events: list[Event] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._changed = asyncio.Condition()
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ids = itertools.count(1)
        self._stdout_done = False
        self._closed = False

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> OfficialClient:
        await self.start()
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            await self.close()
            return
        # The test already failed: clean up, and attach what the process did
        # instead of replacing the original error.
        try:
            await self.close()
        except AssertionError as cleanup_error:
            if isinstance(exc, BaseException):
                exc.add_note(f"[official client {self.name}] {cleanup_error}")

    async def start(self) -> None:
        """Start the runner process and wait for its ``ready`` event."""
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(RUNNER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,  # offers and stats are long lines
        )
        self._tasks = [
            asyncio.create_task(self._read_stdout(), name=f"{self.name} stdout"),
            asyncio.create_task(self._read_stderr(), name=f"{self.name} stderr"),
        ]
        await self._send(self.config)
        ready = await self.wait_for_any(("ready", "error"), timeout=self.start_timeout)
        if ready["event"] == "error":
            raise AssertionError(
                f"official client {self.name} failed to start: {ready.get('message')}\n"
                f"{ready.get('traceback', '')}{self._stderr_tail()}"
            )

    async def close(self, check: bool = True) -> None:
        """Quit the runner; fail (when ``check``) if it crashed, hung, or
        reported callback errors."""
        if self._closed or self._proc is None:
            return
        self._closed = True
        proc = self._proc
        killed = False
        if proc.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._send({"cmd": "quit"})
                assert proc.stdin is not None
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), self.exit_timeout)
            except TimeoutError:
                killed = True
                proc.kill()
                await proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 5)
        for task in self._tasks:
            task.cancel()
        self.returncode = proc.returncode
        problems = []
        if killed:
            problems.append(f"did not exit within {self.exit_timeout}s after quit (killed)")
        elif proc.returncode != 0:
            problems.append(f"crashed: {_describe_returncode(proc.returncode)}")
        if not self.allow_error_events:
            for e in self.events("error"):
                problems.append(
                    f"error in {e.get('where')}: {e.get('message')}\n{e.get('traceback')}"
                )
        if problems and check:
            raise AssertionError(
                f"official client {self.name}: "
                + "\n".join(problems)
                + self._recent_events()
                + self._stderr_tail()
            )

    # -- commands ------------------------------------------------------------

    async def connect(self, timeout: float = 10.0) -> Event:
        """Start signalling; return the own ``connection.created`` notify event.

        The own connection id is the offer's ``connection_id`` (the SDK's own
        tests do the same); it is stored in ``self.connection_id``.
        """
        mark = len(self._events)
        await self.command("connect", timeout=timeout)
        offer = await self.wait_for_any(("set_offer", "disconnect"), timeout=timeout, start=mark)
        if offer["event"] == "disconnect":
            raise AssertionError(
                f"official client {self.name} disconnected while connecting: "
                f"{offer.get('name')} {offer.get('message')!r}"
                + self._recent_events()
                + self._stderr_tail()
            )
        self.connection_id = offer["message"].get("connection_id")
        created = await self.wait_for_any(
            ("notify", "disconnect"),
            lambda e: (
                e["event"] == "disconnect"
                or (
                    e["message"].get("event_type") == "connection.created"
                    and e["message"].get("connection_id") == self.connection_id
                )
            ),
            timeout=timeout,
            start=mark,
        )
        if created["event"] == "disconnect":
            raise AssertionError(
                f"official client {self.name} disconnected before its connection.created: "
                f"{created.get('name')} {created.get('message')!r}"
                + self._recent_events()
                + self._stderr_tail()
            )
        return created

    async def send_data_channel(self, label: str, data: bytes, timeout: float = 5.0) -> bool:
        """``SoraConnection.send_data_channel``; returns what it returned."""
        result = await self.command(
            "send_data_channel",
            timeout=timeout,
            label=label,
            data_b64=base64.b64encode(data).decode(),
        )
        return bool(result.get("value"))

    async def get_stats(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """``SoraConnection.get_stats()``, parsed (bare inf/nan become None)."""
        result = await self.command("get_stats", timeout=timeout)
        stats = await self.wait_for("stats", lambda e: e.get("id") == result["id"], timeout=1)
        return stats["stats"]

    async def disconnect(self, timeout: float = 15.0) -> Event:
        """``SoraConnection.disconnect()`` (blocking, run in a worker); return
        the ``disconnect`` event (``code``, ``name``, ``message``)."""
        await self.command("disconnect", timeout=timeout)
        return await self.wait_for("disconnect", timeout=1)

    async def command(self, cmd: str, timeout: float = 10.0, **fields: Any) -> Event:
        """Send one command and wait for its ``result``; raise if it failed."""
        cid = next(self._ids)
        try:
            await self._send({"cmd": cmd, "id": cid, **fields})
        except ConnectionError as e:
            rc = self._proc.returncode if self._proc else None
            raise AssertionError(
                f"official client {self.name}: cannot send {cmd} ({e}); process "
                f"{_describe_returncode(rc)}" + self._recent_events() + self._stderr_tail()
            ) from None
        result = await self.wait_for("result", lambda e: e.get("id") == cid, timeout=timeout)
        if not result.get("ok"):
            raise AssertionError(
                f"official client {self.name}: command {cmd} failed: {result.get('error')}"
                + self._recent_events()
            )
        return result

    # -- events --------------------------------------------------------------

    def events(
        self, event_type: str | None = None, predicate: Predicate | None = None
    ) -> list[Event]:
        """Events received so far, optionally of one type and matching ``predicate``."""
        return [
            e
            for e in self._events
            if (event_type is None or e["event"] == event_type)
            and (predicate is None or predicate(e))
        ]

    def mark(self) -> int:
        """Index to pass as ``start=`` to only see events received from now on."""
        return len(self._events)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and not self._stdout_done

    async def wait_for(
        self,
        event_type: str,
        predicate: Predicate | None = None,
        timeout: float = 10.0,
        start: int = 0,
    ) -> Event:
        """First event (from index ``start``) of ``event_type`` matching ``predicate``.

        Raises AssertionError with the recent events and stderr on timeout or
        when the process ends before such an event arrives.
        """
        return await self.wait_for_any((event_type,), predicate, timeout, start)

    async def wait_for_any(
        self,
        event_types: Iterable[str],
        predicate: Predicate | None = None,
        timeout: float = 10.0,
        start: int = 0,
    ) -> Event:
        types = tuple(event_types)

        def find() -> Event | None:
            for e in itertools.islice(self._events, start, None):
                if e["event"] in types and (predicate is None or predicate(e)):
                    return e
            return None

        async def wait() -> Event | None:
            async with self._changed:
                while True:
                    found = find()
                    if found is not None or self._stdout_done:
                        return found
                    await self._changed.wait()

        what = "/".join(types) + (f" matching {_predicate_name(predicate)}" if predicate else "")
        try:
            found = await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"official client {self.name}: no {what} within {timeout}s"
                + self._recent_events()
                + self._stderr_tail()
            ) from None
        if found is None:
            if self._proc is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._proc.wait(), 5)
            rc = self._proc.returncode if self._proc else None
            raise AssertionError(
                f"official client {self.name}: process ended ({_describe_returncode(rc)}) "
                f"before {what}" + self._recent_events() + self._stderr_tail()
            )
        return found

    # -- internals -----------------------------------------------------------

    async def _send(self, obj: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        if self._proc.stdin.is_closing():
            raise ConnectionError("runner stdin closed")
        self._proc.stdin.write((json.dumps(obj) + "\n").encode())
        await self._proc.stdin.drain()

    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            async for raw in self._proc.stdout:
                line = raw.decode(errors="replace").strip()
                if not line:
                    continue
                try:
                    event = json.loads(line)
                    if not isinstance(event, dict) or "event" not in event:
                        raise ValueError
                except ValueError:
                    event = {"event": "stdout", "line": line}
                event["seq"] = len(self._events)
                async with self._changed:
                    self._events.append(event)
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self._stdout_done = True
                self._changed.notify_all()

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        async for raw in self._proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line and not any(noise in line for noise in _STDERR_NOISE):
                self._stderr.append(line)

    def stderr_lines(self) -> list[str]:
        """The last lines the process wrote to stderr (libwebrtc logs, crashes)."""
        return list(self._stderr)

    def _stderr_tail(self, lines: int = 60) -> str:
        tail = list(self._stderr)[-lines:]
        if not tail:
            return "\n--- stderr: (empty)"
        return f"\n--- stderr of {self.name} (last {len(tail)} lines):\n" + "\n".join(tail)

    def _recent_events(self, count: int = 25) -> str:
        recent = self._events[-count:]
        body = "\n".join("  " + _abbreviate(e) for e in recent) or "  (none)"
        return f"\n--- last {len(recent)} of {len(self._events)} events of {self.name}:\n{body}"


def _predicate_name(predicate: Predicate | None) -> str:
    if predicate is None:
        return ""
    name = getattr(predicate, "__name__", repr(predicate))
    if name == "<lambda>":
        code = getattr(predicate, "__code__", None)
        if code is not None:
            return f"<lambda at {Path(code.co_filename).name}:{code.co_firstlineno}>"
    return name
