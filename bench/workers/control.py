"""Commands from the parent on stdin: ``go <monotonic time>`` and ``stop`` (or EOF)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable


class Control:
    """Reads stdin in a thread: ``go T`` sets :attr:`go_at`; ``stop`` or EOF sets :attr:`stop`."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.go = threading.Event()
        self.go_at = 0.0
        #: Called on the reader thread after every change (e.g. to wake an event loop).
        self.listeners: list[Callable[[], None]] = []
        threading.Thread(target=self._read, name="control", daemon=True).start()

    def _read(self) -> None:
        try:
            for line in sys.stdin:
                words = line.split()
                if words[:1] == ["go"] and len(words) == 2:
                    self.go_at = float(words[1])
                    self.go.set()
                    self._notify()
                elif words[:1] == ["stop"]:
                    break
        except (OSError, ValueError):
            pass
        self.stop.set()
        self.go.set()
        self._notify()

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener()

    def wait_go(self, timeout: float) -> float:
        """Wait for ``go`` (or stop); the monotonic time to start at."""
        if not self.go.wait(timeout):
            raise TimeoutError("no go from the parent")
        if self.stop.is_set() and not self.go_at:
            raise RuntimeError("stopped before go")
        return self.go_at
