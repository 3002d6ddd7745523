"""``degradation_preference``: what a video sender gives up when bits or CPU run short.

After libwebrtc's ``VideoStreamAdapter`` + ``BalancedDegradationSettings`` +
``OveruseFrameDetector`` + the media-optimization frame dropper, simplified:

* signals — the target bit rate against the resolution's minimum start bit
  rate (libwebrtc's default singlecast bit-rate limits; libwebrtc's QP-based
  quality scaler has no equivalent here), and the encode time against the
  frame interval, checked as libwebrtc's ``OveruseFrameDetector`` checks it
  (:class:`CpuOveruseDetector`: every 5 s, from the 4th check and 120 frames
  on; overuse at two checks in a row at 85 % or more, underuse under 42 % once
  the ramp-up delay passed);
* adaptations, one step at a time: for bandwidth at most one per second down
  and one per five seconds up, for CPU one per overuse / underuse verdict:

  - ``MAINTAIN_FRAMERATE``: the resolution steps down to at most 3/5 of the
    pixels (``GetLowerResolutionThan``), never below 320x180, and back up towards
    5/3 (``GetHigherResolutionThan``); no frame-rate cap. The size is one of
    libwebrtc's ``VideoAdapter`` scales, 3/4 and 2/3 in turn (2/3 first where both
    sides divide by 3): 960x540 steps to 640x360, 480x270, 320x180, as the
    official client's do;
  - ``MAINTAIN_RESOLUTION``: the frame rate is capped (down to 2 fps);
  - ``BALANCED``: the frame rate goes down to the balanced table's rate for the
    resolution (7 fps up to 320x240, 10 up to 480x360, 15 up to 640x480, no
    limit above), then the resolution, whose new table rate applies at once;
  - ``DISABLED``: neither; the frame dropper alone keeps the rate.

* a frame dropper (:class:`FrameDropper`, libwebrtc's media-optimization
  ``FrameDropper``) for every preference, ``DISABLED`` included: in libwebrtc
  ``DISABLED`` turns off the resolution / frame-rate adaptation, not the
  dropper that holds the target when the encoder overshoots it. A leaky bucket
  of the encoded sizes (key frames and unusually large delta frames spread
  over several frames) leaks the target per frame; above half a second of the
  target the drop ratio rises and source frames are dropped before the
  encoder, in an even pattern;
* an initial frame dropper (libwebrtc ``InitialFrameDropper`` and
  ``VideoStreamEncoder::DropDueToSize``) for the preferences that scale the
  resolution: while the target is under the minimum start bit rate of the frame
  size, up to four of the first frames are dropped, each stepping the resolution
  down at once, so that the first key frame is encoded at a size the start rate
  can carry (a 960x540 source at a 300 kbit/s start goes out at 640x360 from its first encoded
  frame (one dropped), not at 960x540 for a second and then a step down). The first
  frame let through ends it; a new source size starts it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..enums import DegradationPreference

#: (max pixels, min start bps): libwebrtc ``GetDefaultSinglecastBitrateLimits``-like.
MIN_START_BITRATE = (
    (320 * 180, 0),
    (480 * 270, 150_000),
    (640 * 360, 300_000),
    (960 * 540, 500_000),
    (1280 * 720, 900_000),
    (1 << 40, 1_500_000),
)
#: BALANCED: (max pixels, frame rate) (``BalancedDegradationSettings`` defaults).
BALANCED_FPS = ((320 * 240, 7.0), (480 * 360, 10.0), (640 * 480, 15.0))
MIN_PIXELS = 320 * 180
MIN_FPS = 2.0
DOWN_INTERVAL = 1.0
UP_INTERVAL = 5.0
#: Hysteresis: step up once the target is this much above the higher size's need.
UP_MARGIN = 1.3
#: libwebrtc ``CpuOveruseOptions`` (``overuse_frame_detector.cc``): encode time over
#: the frame interval at or above this is overuse, under ``CPU_LOW`` underuse.
CPU_HIGH = 0.85
CPU_LOW = 0.42
#: Seconds between checks (``kCheckForOveruseIntervalMs``); the first comes 0.1 s after
#: the first frame (``kTimeToFirstCheckForOveruseMs``).
CPU_CHECK_INTERVAL = 5.0
CPU_FIRST_CHECK = 0.1
#: Checks that count for nothing after a start or a size change (``min_process_count``).
CPU_MIN_CHECKS = 3
#: Frames measured before the usage counts (``min_frame_samples``); until then it is
#: taken as midway between the thresholds (``InitialUsageInPercent``).
CPU_MIN_FRAMES = 120
#: Checks in a row at or above ``CPU_HIGH`` that make an overuse
#: (``high_threshold_consecutive_count``).
CPU_HIGH_CHECKS = 2
#: Ramp-up delays (``kStandardRampUpDelayMs``, ``kQuickRampUpDelayMs``,
#: ``kMaxRampUpDelayMs``, ``kRampUpBackoffFactor``, ``kMaxOverusesBeforeApplyRampupDelay``).
RAMP_UP_DELAY = 40.0
QUICK_RAMP_UP_DELAY = 10.0
MAX_RAMP_UP_DELAY = 240.0
RAMP_UP_BACKOFF = 2.0
MAX_OVERUSES_BEFORE_RAMP_UP_DELAY = 4
#: The frame dropper's bucket: this many seconds of the target before it drops
#: (libwebrtc ``kLeakyBucketSizeSeconds``), capped at 3 s (``kAccumulatorCapBufferSizeSecs``).
DROPPER_WINDOW = 0.5
DROPPER_CAP = 3.0
#: A delta frame this many times the average delta frame is spread like a key frame.
LARGE_DELTA_FACTOR = 3.0
#: At most this many seconds of consecutive drops (``kDefaultMaxDropDurationSecs``).
MAX_DROP_SECONDS = 4.0
#: At most this many frames dropped at the start for their size (``kMaxInitialFramedrop``).
MAX_INITIAL_DROPS = 4


def find_scale(width: int, height: int, target: int, most: int) -> tuple[int, int]:
    """libwebrtc ``VideoAdapter::FindScale`` (with its default variable start scale
    factor): of the scales 3/4 and 2/3 applied in turn, the one whose pixel count is
    nearest ``target`` and at most ``most``; ``(numerator, denominator)``."""
    pixels = width * height
    numerator = denominator = 1
    if width % 3 == 0 and height % 3 == 0:
        numerator = denominator = 6  # 2/3 first
    if width % 9 == 0 and height % 9 == 0:
        numerator = denominator = 36  # 2/3, 2/3 first
    best = (1, 1)
    best_diff = abs(pixels - target) if pixels <= most else None
    while pixels * numerator * numerator // (denominator * denominator) > target:
        if numerator % 3 == 0 and denominator % 2 == 0:
            numerator, denominator = numerator // 3, denominator // 2
        else:
            numerator, denominator = numerator * 3, denominator * 4
        out = pixels * numerator * numerator // (denominator * denominator)
        if out <= most and (best_diff is None or abs(target - out) < best_diff):
            best, best_diff = (numerator, denominator), abs(target - out)
    return best


def min_start_bitrate(pixels: int) -> int:
    for limit, bitrate in MIN_START_BITRATE:
        if pixels <= limit:
            return bitrate
    return MIN_START_BITRATE[-1][1]


def balanced_fps(pixels: int) -> float | None:
    for limit, fps in BALANCED_FPS:
        if pixels <= limit:
            return fps
    return None


class _ExpFilter:
    """libwebrtc ``rtc::ExpFilter``: ``y = a**exp * y + (1 - a**exp) * sample``."""

    def __init__(self, alpha: float, value: float | None = None) -> None:
        self.alpha = alpha
        self.value = value

    def apply(self, exp: float, sample: float) -> float:
        if self.value is None:
            self.value = sample
        else:
            factor = self.alpha if exp == 1.0 else self.alpha**exp
            self.value = factor * self.value + (1 - factor) * sample
        return self.value

    @property
    def filtered(self) -> float:
        return -1.0 if self.value is None else self.value


class FrameDropper:
    """libwebrtc's media-optimization ``FrameDropper`` (``frame_dropper.cc``).

    :meth:`fill` with each encoded frame's size, :meth:`leak` once per source
    frame that reaches the dropper, then :meth:`drop_frame` says whether that
    frame is dropped. Rates are bits per second (libwebrtc counts kbit).

    Example::

        dropper = FrameDropper()
        dropper.set_rates(300_000, 30.0)
        dropper.leak(30.0)
        if not dropper.drop_frame():
            dropper.fill(len(encoded), delta_frame=True)
    """

    def __init__(self) -> None:
        self.accumulator = 0.0
        self.accumulator_max = 300_000 * DROPPER_WINDOW
        self.target = 300_000.0
        self.incoming_fps = 30.0
        self._key_frame_ratio = _ExpFilter(0.99, 1 / 300)
        self._delta_size = _ExpFilter(0.9)
        self._drop_ratio = _ExpFilter(0.9, 0.0)
        self._large_count = 0
        self._large_chunk = 0.0
        self._large_spread = 0.5 * 30.0
        self._drop_next = False
        self._drop_count = 0
        self._was_below_max = True

    def set_rates(self, bitrate: float, incoming_fps: float) -> None:
        if bitrate <= 0:
            return
        self.accumulator_max = bitrate * DROPPER_WINDOW
        if bitrate < self.target and self.accumulator > self.accumulator_max:
            self.accumulator *= bitrate / self.target  # the bucket shrinks with the target
        self.target = float(bitrate)
        self._cap()
        if incoming_fps > 0:
            self.incoming_fps = incoming_fps

    def fill(self, size_bytes: int, delta_frame: bool) -> None:
        bits = 8.0 * size_bytes
        if not delta_frame:
            self._key_frame_ratio.apply(1.0, 1.0)
            if self._large_count == 0:
                ratio = self._key_frame_ratio.filtered
                if ratio > 1e-5 and 1 / ratio < self._large_spread:
                    self._large_count = int(1 / ratio + 0.5)
                else:
                    self._large_count = int(self._large_spread + 0.5)
                self._large_count = max(1, self._large_count)
                self._large_chunk = bits / self._large_count
                bits = 0.0
        else:
            average = self._delta_size.filtered
            if average != -1.0 and bits > LARGE_DELTA_FACTOR * average and self._large_count == 0:
                self._large_count = max(1, int(self._large_spread + 0.5))
                self._large_chunk = bits / self._large_count
                bits = 0.0
            else:
                self._delta_size.apply(1.0, bits)
            self._key_frame_ratio.apply(1.0, 0.0)
        self.accumulator += bits
        self._cap()

    def leak(self, input_fps: float) -> None:
        if input_fps < 1:
            return
        self._large_spread = max(0.5 * input_fps, 5.0)
        expected = self.target / input_fps
        if self._large_count > 0:
            expected -= self._large_chunk
            self._large_count -= 1
        self.accumulator = max(0.0, self.accumulator - expected)
        self._update_ratio()

    def _update_ratio(self) -> None:
        ratio = self._drop_ratio
        ratio.alpha = 0.8 if self.accumulator > 1.3 * self.accumulator_max else 0.9
        if self.accumulator > self.accumulator_max:
            if self._was_below_max:
                self._drop_next = True
            ratio.apply(1.0, 1.0)
            ratio.alpha = 0.9
        else:
            ratio.apply(1.0, 0.0)
        self._was_below_max = self.accumulator < self.accumulator_max

    def drop_frame(self) -> bool:
        if self._drop_next:
            self._drop_next = False
            self._drop_count = 0
        ratio = self._drop_ratio.filtered
        if ratio >= 0.5:  # drops per kept frame
            limit = int(1.0 / max(1.0 - ratio, 1e-5) - 1.0 + 0.5)
            limit = min(limit, int(self.incoming_fps * MAX_DROP_SECONDS))
            self._drop_count = abs(self._drop_count)
            if self._drop_count < limit:
                self._drop_count += 1
                return True
            self._drop_count = 0
            return False
        if 0.0 < ratio < 0.5:  # kept frames per drop
            limit = -int(1.0 / max(ratio, 1e-5) - 1.0 + 0.5)
            self._drop_count = -abs(self._drop_count)
            if self._drop_count > limit:
                dropped = self._drop_count == 0
                self._drop_count -= 1
                return dropped
            self._drop_count = 0
            return False
        self._drop_count = 0
        return False

    def _cap(self) -> None:
        self.accumulator = min(self.accumulator, self.target * DROPPER_CAP)


class CpuOveruseDetector:
    """libwebrtc's ``OveruseFrameDetector`` timing around an encode-time usage.

    The usage is the encode time (an exponential average over frames) against the
    frame interval. libwebrtc judges it rarely on purpose: every 5 s, never in the
    first three checks after a start or a size change nor before 120 frames, and
    overuse only at two checks in a row; a busy moment (a key frame, another
    process) must not cost the stream its frame rate or its resolution. Underuse
    waits for a ramp-up delay that grows when going up was soon followed by
    overuse again (the system cannot take the higher load).
    """

    def __init__(self) -> None:
        self._encode_ewma = 0.0
        self._frames = 0
        self._pixels = 0
        self._next_check: float | None = None
        self._checks = 0
        self._checks_above = 0
        self._last_overuse = -1e9
        self._last_rampup = -1e9
        self._rampup_delay = RAMP_UP_DELAY
        self._quick_rampup = False
        self._overuses = 0

    def on_encoded(self, encode_time: float) -> None:
        """One frame's encode time (s)."""
        ewma = self._encode_ewma
        self._encode_ewma = 0.9 * ewma + 0.1 * encode_time if ewma else encode_time
        self._frames += 1

    def on_size(self, pixels: int) -> None:
        """The encoded size; a change starts the measurement again (``ResetAll``)."""
        if pixels != self._pixels:
            self._pixels = pixels
            self._encode_ewma = 0.0
            self._frames = 0
            self._checks = 0

    def usage(self, fps: float) -> float:
        """Encode time over the frame interval (midway until enough frames)."""
        if self._frames < CPU_MIN_FRAMES:
            return (CPU_LOW + CPU_HIGH) / 2
        return self._encode_ewma * max(fps, 1.0)

    def check(self, now: float, fps: float) -> str | None:
        """``"overuse"``, ``"underuse"`` or None: a verdict only at a check time."""
        if self._next_check is None:
            self._next_check = now + CPU_FIRST_CHECK
        if now < self._next_check:
            return None
        self._next_check = now + CPU_CHECK_INTERVAL
        self._checks += 1
        if self._checks <= CPU_MIN_CHECKS:
            return None
        usage = self.usage(fps)
        self._checks_above = self._checks_above + 1 if usage >= CPU_HIGH else 0
        if self._checks_above >= CPU_HIGH_CHECKS:
            if self._last_rampup > self._last_overuse:  # went up, and now has to come down
                if (
                    now - self._last_rampup < RAMP_UP_DELAY
                    or self._overuses > MAX_OVERUSES_BEFORE_RAMP_UP_DELAY
                ):
                    self._rampup_delay = min(
                        MAX_RAMP_UP_DELAY, self._rampup_delay * RAMP_UP_BACKOFF
                    )
                else:
                    self._rampup_delay = RAMP_UP_DELAY
            self._last_overuse = now
            self._quick_rampup = False
            self._checks_above = 0
            self._overuses += 1
            return "overuse"
        delay = QUICK_RAMP_UP_DELAY if self._quick_rampup else self._rampup_delay
        if now >= self._last_rampup + delay and usage < CPU_LOW:
            self._last_rampup = now
            self._quick_rampup = True
            return "underuse"
        return None


class DegradationAdapter:
    """Resolution / frame-rate adaptation of one video layer."""

    def __init__(
        self,
        preference: DegradationPreference,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.preference = preference
        self._clock = clock
        #: at most this many pixels per frame (None: the source's), and the count
        #: wanted under it (libwebrtc's ``max_pixels_per_frame`` and
        #: ``target_pixels_per_frame``)
        self.pixel_cap: int | None = None
        self.pixel_target: int | None = None
        #: at most this many frames per second (None: the source's)
        self.fps_cap: float | None = None
        self.target = 0
        self.source_pixels = 0
        self.source_fps = 0.0
        self.cpu_limited = False
        self.cpu = CpuOveruseDetector()
        self._last_down = -1e9
        self._last_up = -1e9
        self._good_since: float | None = None
        self.dropper = FrameDropper()
        self._last_accept = -1e9
        self.adaptations = 0
        self.frames_dropped = 0
        #: frames dropped for their size at the start (:data:`MAX_INITIAL_DROPS`: over)
        self.initial_drops = 0
        self._source_size: tuple[int, int] | None = None

    # --- inputs ----------------------------------------------------------------------

    def on_target(self, bitrate: int) -> None:
        self.target = int(bitrate)

    def on_source(self, width: int, height: int, fps: float) -> None:
        if self._source_size is not None and self._source_size != (width, height):
            # libwebrtc OnEncoderSettingsUpdated: a source that changed size on its own
            # may be far too big for the estimate again
            self.initial_drops = 0
        self._source_size = (width, height)
        self.source_pixels = width * height
        self.source_fps = fps

    def on_encoded(self, size_bytes: int, encode_time: float, *, keyframe: bool = False) -> None:
        """An encoded frame's size (0: the encoder dropped it) and encode time."""
        if size_bytes > 0:
            self.dropper.fill(size_bytes, delta_frame=not keyframe)
        self.cpu.on_encoded(encode_time)

    # --- outputs --------------------------------------------------------------------

    def limit_size(self, width: int, height: int) -> tuple[int, int]:
        """The encoded size: ``(width, height)`` at the scale :func:`find_scale` picks
        under :attr:`pixel_cap` (even sides, for 4:2:0)."""
        return self._scaled(width, height, self.pixel_cap, self.pixel_target)

    @staticmethod
    def _scaled(width: int, height: int, cap: int | None, target: int | None) -> tuple[int, int]:
        if cap is None:
            return width, height
        numerator, denominator = find_scale(width, height, cap if target is None else target, cap)
        if numerator == denominator:
            return width, height
        return (
            max(2, width * numerator // denominator & ~1),
            max(2, height * numerator // denominator & ~1),
        )

    def accept(self) -> bool:
        """Whether the next source frame goes to the encoder (frame-rate cap, dropper)."""
        now = self._clock()
        if self._drop_due_to_size():
            # libwebrtc OnFrameDroppedDueToSize: one resolution step down per frame
            # dropped, without waiting for DOWN_INTERVAL
            self.initial_drops += 1
            self.frames_dropped += 1
            if self._resolution_step():
                self._last_down = now
            return False
        self.initial_drops = MAX_INITIAL_DROPS  # OnMaybeEncodeFrame: a frame goes on
        self._evaluate(now)
        if self.fps_cap is not None and now - self._last_accept < 0.9 / self.fps_cap:
            self.frames_dropped += 1
            return False
        if self.target > 0:
            # libwebrtc VideoStreamEncoder: SetRates on rate updates, Leak per frame
            # at the input frame rate (after the adaptation's cap), then DropFrame
            self.dropper.set_rates(self.target, self.fps)
            self.dropper.leak(self.fps)
            if self.dropper.drop_frame():
                self.frames_dropped += 1
                return False
        self._last_accept = now
        return True

    # --- adaptation --------------------------------------------------------------------

    @property
    def pixels(self) -> int:
        return self._pixels_at(self.pixel_cap, self.pixel_target)

    def _pixels_at(self, cap: int | None, target: int | None) -> int:
        if cap is None or self._source_size is None:
            return self.source_pixels
        width, height = self._scaled(*self._source_size, cap, target)
        return width * height

    @property
    def fps(self) -> float:
        fps = self.source_fps or 30.0
        return min(fps, self.fps_cap) if self.fps_cap is not None else fps

    def _evaluate(self, now: float) -> None:
        if self.preference == DegradationPreference.DISABLED or not self.source_pixels:
            return
        self.cpu.on_size(self.pixels)
        verdict = self.cpu.check(now, self.fps)
        overuse = verdict == "overuse"
        need = self._need(self.pixels, self.fps)
        short = self.target > 0 and self.target < need
        # a CPU verdict acts at once (it comes every 5 s at most); bandwidth at most
        # once per DOWN_INTERVAL
        if overuse or (short and now - self._last_down >= DOWN_INTERVAL):
            if self._step_down():
                self._last_down = now
                self._good_since = None
                self.cpu_limited = overuse
            return
        if short or not self._degraded():
            self._good_since = None
            return
        higher_pixels, higher_fps = self._higher()
        if self.target and self.target < UP_MARGIN * self._need(higher_pixels, higher_fps):
            self._good_since = None
            return
        if self.cpu_limited:
            # back up only on underuse, as libwebrtc's AdaptUp
            if verdict == "underuse":
                self._step_up()
                self._last_up = now
                if not self._degraded():
                    self.cpu_limited = False
            return
        if self._good_since is None:
            self._good_since = now
        if now - self._good_since >= UP_INTERVAL and now - self._last_up >= UP_INTERVAL:
            self._step_up()
            self._last_up = now
            self._good_since = None

    def _drop_due_to_size(self) -> bool:
        """``DropDueToSize``: the start rate cannot carry a frame of this size."""
        return (
            self.initial_drops < MAX_INITIAL_DROPS
            and self.preference
            in (DegradationPreference.MAINTAIN_FRAMERATE, DegradationPreference.BALANCED)
            and self.source_pixels > 0
            and 0 < self.target < min_start_bitrate(self.pixels)
        )

    def _resolution_step(self) -> bool:
        """``GetAdaptDownResolution``: BALANCED steps twice when its first step only
        capped the frame rate."""
        pixels = self.pixels
        if not self._step_down():
            return False
        if self.preference == DegradationPreference.BALANCED and self.pixels == pixels:
            self._step_down()
        return True

    def _need(self, pixels: int, fps: float) -> float:
        """Bit rate a size needs at a frame rate (the min start bit rate is for 30 fps)."""
        return min_start_bitrate(pixels) * min(1.0, fps / 30.0)

    def _degraded(self) -> bool:
        return self.pixel_cap is not None or self.fps_cap is not None

    def _step_down(self) -> bool:
        preference = self.preference
        if preference == DegradationPreference.MAINTAIN_RESOLUTION:
            return self._fps_down()
        if preference == DegradationPreference.MAINTAIN_FRAMERATE:
            return self._resolution_down()
        # BALANCED: the table's frame rate for this size first, then the size
        wanted = balanced_fps(self.pixels)
        if wanted is not None and self.fps > wanted:
            self.fps_cap = wanted
            self.adaptations += 1
            return True
        if self._resolution_down():
            wanted = balanced_fps(self.pixels)  # and the table's rate for the new size
            if wanted is not None and self.fps > wanted:
                self.fps_cap = wanted
            return True
        return self._fps_down()

    def _resolution_down(self) -> bool:
        pixels = self.pixels * 3 // 5
        if pixels < MIN_PIXELS:
            return False
        self.pixel_cap = pixels
        self.pixel_target = None
        self.adaptations += 1
        return True

    def _fps_down(self) -> bool:
        fps = max(MIN_FPS, self.fps * 2 / 3)
        if fps >= self.fps:
            return False
        self.fps_cap = fps
        self.adaptations += 1
        return True

    def _higher(self) -> tuple[int, float]:
        """Size and rate after one step up."""
        pixels, fps = self.pixels, self.fps
        if self.preference == DegradationPreference.MAINTAIN_RESOLUTION or (
            self.preference == DegradationPreference.BALANCED
            and self.fps_cap is not None
            and self.pixel_cap is None
        ):
            return pixels, min(self.source_fps or 30.0, fps * 3 / 2)
        cap, target = self._up_restriction()
        return self._pixels_at(cap, target), fps

    def _up_restriction(self) -> tuple[int | None, int | None]:
        """``IncreaseResolution``: 5/3 of the pixels wanted, at most 4 times as many
        (``GetHigherResolutionThan``, ``max_pixels_wanted``); none at the source's."""
        target = self.pixels * 5 // 3
        if target >= self.source_pixels:
            return None, None
        return target * 12 // 5, target

    def _step_up(self) -> None:
        pixels, fps = self._higher()
        if pixels != self.pixels:
            self.pixel_cap, self.pixel_target = self._up_restriction()
            if self.pixels >= self.source_pixels:
                self.pixel_cap = self.pixel_target = None
            if self.preference == DegradationPreference.BALANCED and self.fps_cap is not None:
                wanted = balanced_fps(self.pixels)
                self.fps_cap = None if wanted is None else max(self.fps_cap, wanted)
        else:
            self.fps_cap = None if fps >= (self.source_fps or 30.0) else fps
        self.adaptations += 1


__all__ = [
    "CpuOveruseDetector",
    "DegradationAdapter",
    "FrameDropper",
    "balanced_fps",
    "min_start_bitrate",
]
