"""``tests/official/runner.py`` plus a frame counter, for the media tests.

The media tests need the official client to send video with a frame counter
painted in (``fake_video: {"counter": true, ...}``) and to read the counter of
every frame it receives (``video_counter: true``, one ``video_counter`` event
{track_id, count, width, height} per decoded frame). Everything else is the
shared runner; tests point the harness here with
``monkeypatch.setattr(harness, "RUNNER", ...)``.

Imports only what the shared runner imports, plus ``tests/media_helpers.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "official"), str(HERE)]

import media_helpers  # noqa: E402
import runner  # noqa: E402

runner.HARNESS_KEYS.add("video_counter")


class CounterRunner(runner.Runner):
    def _fake_video_loop(self) -> None:
        assert self.fake_video is not None
        if not self.fake_video.get("counter"):
            super()._fake_video_loop()
            return
        w, h = int(self.fake_video["width"]), int(self.fake_video["height"])
        period = 1.0 / float(self.fake_video["fps"])
        next_t = time.monotonic()
        n = 0
        while not self.stop_media.is_set():
            self.video_source.on_captured(media_helpers.pattern(w, h, n))
            n += 1
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                self.stop_media.wait(delay)
            else:
                next_t = time.monotonic()

    def _on_frame(self, track_id: str, stream_id: str, frame: Any) -> None:
        super()._on_frame(track_id, stream_id, frame)
        if self.config.get("video_counter"):
            image = frame.data()
            self.emit(
                "video_counter",
                track_id=track_id,
                count=media_helpers.read_counter(image),
                width=int(image.shape[1]),
                height=int(image.shape[0]),
            )


runner.Runner = CounterRunner  # type: ignore[misc]

if __name__ == "__main__":
    sys.exit(runner.main(sys.argv))
