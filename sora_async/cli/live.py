"""The live status view of the demo and the command line.

On a terminal (and with ``rich`` installed: ``pip install sora_async[cli]``)
it is a table redrawn in place: one block per connection with its state and,
per RTP stream, codec, resolution, frame rate, bit rate and round-trip
time, plus a colour thumbnail of the last received frame. Anywhere else (a
pipe, CI, ``TERM=dumb``, ``--plain``) it prints one plain line per
connection per interval, so logs stay readable.

Example::

    with LiveView("demo", file=sys.stdout) as view:
        while running:
            view.update([ConnectionRow("receiver", conn.state.name, summary)], ["42 frames"])
            await asyncio.sleep(1)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

import numpy as np

from .stats import ConnectionStats, StreamStats

try:
    import rich  # noqa: F401

    HAVE_RICH = True
except ImportError:  # pragma: no cover - rich is an optional extra
    HAVE_RICH = False


@dataclass
class ConnectionRow:
    """What the view shows about one connection.

    ``name`` is the label ("sender"), ``state`` the connection state's name,
    ``stats`` the latest :class:`~sora_async.cli.stats.ConnectionStats` (None
    before the first report).
    """

    name: str
    state: str
    stats: ConnectionStats | None = None
    connection_id: str | None = None


def fancy_terminal(file: IO[str]) -> bool:
    """True if ``file`` is a terminal that can redraw in place and ``rich`` is installed."""
    isatty = getattr(file, "isatty", None)
    return bool(
        HAVE_RICH
        and isatty is not None
        and isatty()
        and os.environ.get("TERM", "") != "dumb"
        and "NO_LIVE" not in os.environ
    )


def state_text(state: str) -> str:
    """A connection state's name for people: ``CONNECTED_DC`` -> ``connected (dc)``."""
    name = state.lower()
    if name.startswith("connected_"):
        return f"connected ({name.split('_', 1)[1]})"
    return name


def _number(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}{unit}"


def stream_line(stream: StreamStats) -> str:
    """One stream in words: ``send video VP8 640x360 30.0 fps 1480 kbps``."""
    parts = [stream.direction, stream.kind]
    if stream.rid:
        parts.append(stream.rid)
    parts.append(stream.codec or "?")
    if stream.kind == "video":
        parts += [stream.resolution or "-", _number(stream.fps, 1, " fps")]
    parts.append(_number(stream.bitrate_kbps, 0, " kbps"))
    return " ".join(parts)


def plain_line(row: ConnectionRow) -> str:
    """The plain-text line for one connection (used when not on a terminal)."""
    line = f"{row.name:<9} {state_text(row.state):<14}"
    stats = row.stats
    if stats is not None:
        streams = " | ".join(stream_line(s) for s in stats.streams) or "no media yet"
        line += f" {streams} | rtt {_number(stats.rtt_ms, 1, ' ms')}"
    return line


def thumbnail_text(bgr: np.ndarray, columns: int = 48) -> Any:
    """A rich ``Text`` drawing ``bgr`` (H, W, 3) uint8 with half-block characters.

    Each character cell shows two pixels (upper half: foreground, lower
    half: background), ``columns`` cells wide, keeping the aspect ratio.
    """
    from rich.style import Style
    from rich.text import Text

    height, width = bgr.shape[:2]
    rows = max(2, round(columns * height / width / 2) * 2)
    ys = (np.arange(rows) * height // rows).clip(0, height - 1)
    xs = (np.arange(columns) * width // columns).clip(0, width - 1)
    small = bgr[ys][:, xs][:, :, ::-1]  # nearest neighbour, to RGB
    text = Text()
    for y in range(0, rows, 2):
        for x in range(columns):
            top, bottom = small[y, x], small[y + 1, x]
            style = Style(
                color=f"rgb({top[0]},{top[1]},{top[2]})",
                bgcolor=f"rgb({bottom[0]},{bottom[1]},{bottom[2]})",
            )
            text.append("▀", style)
        if y + 2 < rows:
            text.append("\n")
    return text


class LiveView:
    """A status view redrawn in place on a terminal, or plain lines elsewhere.

    Args:
        title: the heading.
        file: where to draw (default ``sys.stderr``, so stdout stays for data).
        plain: force plain lines even on a terminal.
        interval: seconds between plain lines (the rich view redraws on every update).
    """

    def __init__(
        self,
        title: str,
        *,
        file: IO[str] | None = None,
        plain: bool = False,
        interval: float = 1.0,
    ) -> None:
        self.title = title
        self.file = file if file is not None else sys.stderr
        self.fancy = not plain and fancy_terminal(self.file)
        self.interval = interval
        self._live: Any = None
        self._started = time.monotonic()
        self._last_plain = 0.0

    def __enter__(self) -> LiveView:
        if self.fancy:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.file)
            self._live = Live(console=console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, traceback)
            self._live = None

    def print(self, message: str) -> None:
        """A line above the view (or just a line, when plain)."""
        if self._live is not None:
            self._live.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.file, flush=True)

    def update(
        self,
        rows: Sequence[ConnectionRow],
        notes: Sequence[str] = (),
        thumbnail: np.ndarray | None = None,
    ) -> None:
        """Show ``rows`` (one per connection), ``notes`` lines and an optional frame."""
        elapsed = time.monotonic() - self._started
        if self._live is None:
            if time.monotonic() - self._last_plain < self.interval * 0.95:
                return
            self._last_plain = time.monotonic()
            for row in rows:
                print(f"[{elapsed:5.1f}s] {plain_line(row)}", file=self.file, flush=True)
            for note in notes:
                print(f"[{elapsed:5.1f}s] {note}", file=self.file, flush=True)
            return
        self._live.update(self._render(rows, notes, thumbnail, elapsed))

    def _render(
        self,
        rows: Sequence[ConnectionRow],
        notes: Sequence[str],
        thumbnail: np.ndarray | None,
        elapsed: float,
    ) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        table = Table(expand=False, box=None, padding=(0, 1), header_style="bold")
        for column, justify in (
            ("connection", "left"),
            ("state", "left"),
            ("media", "left"),
            ("codec", "left"),
            ("size", "right"),
            ("fps", "right"),
            ("kbps", "right"),
            ("rtt ms", "right"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for row in rows:
            upper = row.state.upper()
            state_style = (
                "green"
                if upper.startswith("CONNECTED")
                else "red"
                if upper == "CLOSED"
                else "yellow"
            )
            state = Text(state_text(row.state), style=state_style)
            streams = row.stats.streams if row.stats is not None else []
            rtt = _number(row.stats.rtt_ms if row.stats else None, 1)
            if not streams:
                table.add_row(row.name, state, "-", "-", "-", "-", "-", rtt)
            for index, stream in enumerate(streams):
                media = f"{'↑' if stream.direction == 'send' else '↓'} {stream.kind}"
                if stream.rid:
                    media += f" {stream.rid}"
                table.add_row(
                    row.name if index == 0 else "",
                    state if index == 0 else "",
                    media,
                    stream.codec or "?",
                    stream.resolution or "",
                    _number(stream.fps, 1) if stream.kind == "video" else "",
                    _number(stream.bitrate_kbps, 0),
                    rtt if index == 0 else "",
                )
        parts: list[Any] = [table]
        if notes:
            parts.append(Text("\n".join(notes)))
        body: Any = Group(*parts)
        # The thumbnail gets what the table leaves of the width (none on a narrow terminal).
        columns = min(48, self._live.console.width - 90)
        if thumbnail is not None and columns >= 16:
            grid = Table.grid(padding=(0, 2))
            grid.add_row(thumbnail_text(thumbnail, columns), body)
            body = grid
        return Panel(body, title=f"{self.title}  {elapsed:4.1f}s", title_align="left")
