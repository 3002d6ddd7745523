"""``VideoWindow``: received video in OpenCV windows (``sora-async --window``).

One window per remote video track, titled with the sender's connection id.
OpenCV's ``imshow``/``waitKey`` run on the event loop's thread (macOS wants
the main thread); frames are converted to BGR by :class:`~sora_async.VideoSink`
in a worker thread. Pressing ``q`` or Esc in a window ends :meth:`run`.

Example::

    window = VideoWindow()
    conn.on("track", window.add_track)
    await window.run()          # until q/Esc, or cancelled
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ..video_sink import VideoSink
from .errors import CliError, ExitCode


def _import_cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise CliError(
            "--window needs OpenCV, which is not installed",
            ExitCode.UNSUPPORTED,
            hint="pip install opencv-python",
        ) from exc
    return cv2


class VideoWindow:
    """Show remote video tracks with OpenCV (raises ``CliError`` if OpenCV is missing).

    ``frames_shown`` counts frames drawn; ``closed_by_user`` is True after q/Esc.
    """

    def __init__(self, title: str = "sora-async") -> None:
        self.cv2 = _import_cv2()
        self.title = title
        self.frames_shown = 0
        self.closed_by_user = False
        self._latest: dict[str, Any] = {}
        self._sinks: list[VideoSink] = []

    def add_track(self, track: Any) -> None:
        """Show ``track`` if it is video (call from the ``track`` event)."""
        if getattr(track, "kind", None) != "video":
            return
        name = f"{self.title} {getattr(track, 'stream_id', None) or len(self._sinks)}"
        sink = VideoSink(track, format="bgr24")
        sink.on("frame", lambda frame: self._latest.__setitem__(name, frame))
        self._sinks.append(sink)

    async def run(self, fps: float = 60.0) -> None:
        """Draw the newest frame of every track until q/Esc (or until cancelled)."""
        cv2 = self.cv2
        try:
            while True:
                for name, frame in list(self._latest.items()):
                    cv2.imshow(name, frame.data())
                    self.frames_shown += 1
                self._latest.clear()
                key = cv2.waitKey(1) & 0xFF
                if key in (ord("q"), 27):
                    self.closed_by_user = True
                    return
                await asyncio.sleep(1 / fps)
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop reading the tracks and close the windows."""
        sinks, self._sinks = self._sinks, []
        for sink in sinks:
            await sink.close()
        with contextlib.suppress(Exception):
            self.cv2.destroyAllWindows()
