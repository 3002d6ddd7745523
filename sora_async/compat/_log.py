"""``enable_libwebrtc_log`` and ``rtc_log`` on Python logging.

The official functions drive libwebrtc's log (stderr, with timestamps and
thread ids). Here the media stack is ``sora_async`` + aiortc + aioice, so
``enable_libwebrtc_log(severity)`` sets those loggers' level and gives them a
stderr handler in the same spirit; ``rtc_log`` writes ``[file:line] message``
with the Python caller's position, at the matching level, on
``sora_async.compat``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from ._enums import SoraLoggingSeverity

#: Loggers of the stack under the compat layer (the "libwebrtc" of this implementation).
LOGGERS = ("sora_async", "aiortc", "aioice")
#: VERBOSE..ERROR to Python levels; NONE silences everything.
LEVELS = {
    SoraLoggingSeverity.VERBOSE: logging.DEBUG,
    SoraLoggingSeverity.INFO: logging.INFO,
    SoraLoggingSeverity.WARNING: logging.WARNING,
    SoraLoggingSeverity.ERROR: logging.ERROR,
    SoraLoggingSeverity.NONE: logging.CRITICAL + 10,
}
_FORMAT = "[%(asctime)s.%(msecs)03d] [%(threadName)s] (%(name)s) %(levelname)s: %(message)s"
_rtc_logger = logging.getLogger("sora_async.compat")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``enable_libwebrtc_log`` installs (once per logger).

    Writes to the *current* ``sys.stderr`` at emit time, so redirections
    (pytest's capture, ``contextlib.redirect_stderr``) are honoured.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _severity(value: Any, what: str) -> SoraLoggingSeverity:
    if isinstance(value, bool):
        raise TypeError(f"{what}: expected a SoraLoggingSeverity, got {value!r}")
    try:
        return SoraLoggingSeverity(int(value))
    except (TypeError, ValueError):
        raise TypeError(f"{what}: expected a SoraLoggingSeverity, got {value!r}") from None


def enable_libwebrtc_log(severity: SoraLoggingSeverity, /) -> None:
    """Log the media stack at ``severity`` and above to stderr.

    Sets the level of the ``sora_async``, ``aiortc`` and ``aioice`` loggers
    (VERBOSE=DEBUG, INFO, WARNING, ERROR; NONE turns them off). When the
    application has not configured logging (the root logger has no handler),
    it also adds a stderr handler to each (timestamps and thread names, as
    libwebrtc's log); otherwise the application's handlers print the records.
    Calling it again changes the level.

    Example::

        enable_libwebrtc_log(SoraLoggingSeverity.INFO)
    """
    level = LEVELS[_severity(severity, "enable_libwebrtc_log")]
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        configured = logging.getLogger().handlers
        if not configured and not any(isinstance(h, _StderrHandler) for h in logger.handlers):
            logger.addHandler(_StderrHandler())


def rtc_log(severity: SoraLoggingSeverity, message: str, /) -> None:
    """Write ``[file:line] message`` into the log at ``severity``, ``file:line``
    being where this was called from.

    Example::

        rtc_log(SoraLoggingSeverity.INFO, "camera opened")
        # ... (sora_async.compat) INFO: [app.py:12] camera opened
    """
    level = LEVELS[_severity(severity, "rtc_log")]
    if not isinstance(message, str):
        raise TypeError(f"rtc_log: message must be a str, got {type(message).__name__}")
    if level > logging.CRITICAL or not _rtc_logger.isEnabledFor(level):
        return
    caller = sys._getframe(1)
    where = f"{os.path.basename(caller.f_code.co_filename)}:{caller.f_lineno}"
    _rtc_logger.log(level, "[%s] %s", where, message, stacklevel=2)
