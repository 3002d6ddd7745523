"""The ``sora-async`` command line, and the pieces it is built from.

    sora-async demo
    sora-async sendonly --devserver --duration 10
    sora-async recvonly -s wss://sora.example.com/signaling -c ch --record out.mkv --stats

Subcommands: ``sendonly``, ``recvonly``, ``sendrecv``, ``messaging``,
``devserver``, ``capability``, ``demo`` (``sora-async COMMAND --help``; the
full reference is ``docs/cli.md``). Exit codes: :class:`ExitCode`.

The pieces are usable on their own:

- :mod:`.media`: ``TestPatternTrack``, ``ToneTrack``, ``MediaInput`` (files and devices via PyAV);
- :mod:`.record`: ``Recorder`` (received audio+video into .mkv/.mp4/.webm);
- :mod:`.stats`: ``StatsTracker`` (codec, fps, kbps, RTT out of ``get_stats()``);
- :mod:`.live`: ``LiveView`` (a rich live table, or plain lines when not a terminal);
- :mod:`.window`: ``VideoWindow`` (OpenCV).
"""

from __future__ import annotations

from .app import build_parser, main
from .errors import CliError, ExitCode

__all__ = ["CliError", "ExitCode", "build_parser", "main"]
