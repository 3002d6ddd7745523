"""Exit codes of ``sora-async`` and the error that carries one.

Scripts can rely on these values; they are also listed by ``sora-async --help``
and in ``docs/cli.md``.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What ``sora-async`` returns to the shell.

    Example::

        sora-async recvonly --duration 10 --expect-media ... ; echo $?   # 0, or 6 if nothing came
    """

    #: It ran and ended as asked (``--duration`` elapsed, Ctrl-C, the server closed normally).
    OK = 0
    #: An unexpected internal error (a bug: please report it with the traceback).
    INTERNAL = 1
    #: The command line is wrong (argparse's own status).
    USAGE = 2
    #: Could not connect: refused, unreachable, TLS or proxy failure, rejected by Sora, timeout.
    CONNECT_FAILED = 3
    #: Connected, then the connection ended abnormally (network lost, kicked, server error).
    DISCONNECTED = 4
    #: A local input or output failed: a file, a device, the recording, a missing optional module.
    MEDIA_IO = 5
    #: ``--expect-media``/``demo``: the session ran but no media (or the wrong media) arrived.
    NO_MEDIA = 6
    #: The feature asked for does not exist in this build (e.g. an optional package is missing).
    UNSUPPORTED = 7


EXIT_CODE_HELP = "\n".join(
    f"  {code.value}  {code.name.lower().replace('_', '-')}: {doc}"
    for code, doc in (
        (ExitCode.OK, "done (duration elapsed, Ctrl-C, or the server closed normally)"),
        (ExitCode.INTERNAL, "internal error (a bug; the traceback is printed)"),
        (ExitCode.USAGE, "bad command line"),
        (ExitCode.CONNECT_FAILED, "could not connect (refused, unreachable, TLS, rejected)"),
        (ExitCode.DISCONNECTED, "the connection ended abnormally after connecting"),
        (ExitCode.MEDIA_IO, "a local input/output failed (file, device, recording)"),
        (ExitCode.NO_MEDIA, "no media arrived (--expect-media, demo)"),
        (ExitCode.UNSUPPORTED, "not available here (optional package or feature missing)"),
    )
)


class CliError(Exception):
    """An error to report in plain words, with the exit code to return.

    ``hint`` is an optional second line telling the user what to try.
    """

    def __init__(self, message: str, code: ExitCode, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint
