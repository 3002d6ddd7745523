"""Send-side bandwidth estimation: delay- and loss-based, after libwebrtc's GCC.

One :class:`BandwidthEstimator` per transport. Its inputs:

* transport-cc feedback (:meth:`on_packet_results`), when the offer negotiated
  transport-cc: packets are grouped into 5 ms send bursts (with the arrival
  bursts that follow them, see :class:`TrendlineDetector`); the growth of the
  one-way delay between groups feeds a trendline filter (linear regression of
  the smoothed accumulated delay over the last 20 groups, as
  ``TrendlineEstimator``) compared with an adaptive threshold
  (``OveruseDetector``); an AIMD controller (``AimdRateControl``) then
  multiplies the rate by 1.08 per second while the link is normal and drops it
  to 0.85 x the acknowledged bit rate on overuse. The same feedback gives the
  loss fraction;
* REMB (:meth:`on_remb`): the receiver's own delay-based estimate, a cap;
* receiver reports (:meth:`on_loss_report`): the loss fraction where there is
  no transport-cc;
* probe results (:meth:`on_probe_result`, :mod:`.probing`): the measured rate of a
  burst of padding, taken as the estimate.

The loss-based part is libwebrtc's classic ``SendSideBandwidthEstimation``:
under 2 % loss +8 % (at most once per second, and not beyond 1.5 x the
acknowledged rate), over 10 % loss ``rate * (1 - 0.5 * loss)`` (at most every
300 ms + RTT), hold in between. The target is the smallest of the three, within
``[min_bitrate, max_bitrate]``.
"""

from __future__ import annotations

import collections
import logging
import math
import operator
import time
from collections.abc import Iterable
from dataclasses import dataclass

from .pacer import BURST_WINDOW, Pacer
from .probing import (
    START_BITRATE,
    ProbeBitrateEstimator,
    ProbeCluster,
    ProbeController,
)
from .twcc import (
    Feedback,
    FeedbackRecorder,
    PacketResult,
    SendHistory,
    parse_feedback,
    split_compound,
    stamp_transport_sequence,
)

logger = logging.getLogger("sora_async.rtc")

MIN_BITRATE = 30_000
#: Send bursts closer than this form one group (libwebrtc ``kBurstDeltaThresholdMs``).
BURST_TIME = 0.005
#: A burst of arrivals joins the group before it for at most this long
#: (``kMaxBurstDuration``).
MAX_BURST_DURATION = 0.1
#: After this many packets in a row close a group that arrived before the one sent
#: ahead of it, the grouping starts over (``kReorderedResetThreshold``).
REORDERED_RESET = 3
#: Arrival times that moved this much (s) further than the local clock between two
#: groups mean the receiver's clock jumped: the grouping starts over
#: (``kArrivalTimeOffsetThreshold``).
ARRIVAL_OFFSET_RESET = 3.0
#: Trendline parameters (``TrendlineEstimatorSettings``).
WINDOW = 20
#: libwebrtc waits for a full window; a transport that cannot probe (no RTX to pad
#: with) starts at its maximum, so the trend is computed from a few groups on (a
#: queue that fills within the first window would otherwise go unseen).
MIN_POINTS = 5
SMOOTHING = 0.9
THRESHOLD_GAIN = 4.0
#: Overuse detector (``OveruseDetector``): initial threshold (ms) and adaptation.
INITIAL_THRESHOLD = 12.5
K_UP = 0.0087
K_DOWN = 0.039
OVERUSE_TIME = 0.010
#: AIMD: decrease to this times the acknowledged rate; increase 8 % per second.
BETA = 0.85
INCREASE_PER_SECOND = 1.08
#: Additive increase near the link's known capacity: at least this (bps per second).
NEAR_MAX_INCREASE = 4_000
#: A probe result lowers the estimate to no less than this share of the acknowledged
#: rate (libwebrtc ``kProbeDropThroughputFraction``).
PROBE_DROP_THROUGHPUT = 0.85
#: Acknowledged bit rate window (s).
ACKED_WINDOW = 1.0
#: Loss-based thresholds (``SendSideBandwidthEstimation``).
LOW_LOSS = 0.02
HIGH_LOSS = 0.10


class Usage:
    NORMAL = "normal"
    OVERUSE = "overuse"
    UNDERUSE = "underuse"


@dataclass
class _Group:
    first_send: float
    last_send: float
    first_arrival: float
    last_arrival: float
    size: int
    #: local time the group's last packet was reported (feedback processing time)
    last_local: float


class TrendlineDetector:
    """Delay-gradient trendline with an adaptive threshold (libwebrtc's GCC).

    Packets are grouped as libwebrtc's ``InterArrivalDelta`` does: a group is what
    was sent within :data:`BURST_TIME`, plus what arrives in a burst right after it
    (within :data:`BURST_TIME` of the group's last arrival and earlier than its
    send spacing says, at most :data:`MAX_BURST_DURATION` after the group's first
    arrival). A receiver that stalls and then takes a backlog of packets at once
    (a busy host's event loop, a Wi-Fi driver) thus shows one late group instead
    of a delay spike followed by a run of negative ones, which the trendline
    would read as overuse and then underuse. A packet sent before its group began
    is dropped, a group that arrived before the one sent ahead of it gives no
    sample, and arrival times that jump :data:`ARRIVAL_OFFSET_RESET` beyond the
    local clock (the receiver's clock was reset) start the grouping over.
    """

    def __init__(self) -> None:
        self.state = Usage.NORMAL
        self.threshold = INITIAL_THRESHOLD
        self.trend = 0.0
        self._group: _Group | None = None
        self._previous: _Group | None = None
        self._reordered = 0
        self._accumulated = 0.0
        self._smoothed = 0.0
        self._first_arrival: float | None = None
        self._history: collections.deque[tuple[float, float]] = collections.deque(maxlen=WINDOW)
        self._deltas = 0
        self._overuse_since: float | None = None
        self._overuse_count = 0
        self._last_update: float | None = None
        self._previous_trend = 0.0

    def update(self, result: PacketResult, now: float | None = None) -> None:
        """One acknowledged packet, reported at local time ``now`` (the arrival if
        None); feed them in arrival order (as libwebrtc sorts a feedback's packets by
        receive time)."""
        arrival = result.arrival
        if arrival is None:
            return
        local = arrival if now is None else now
        send = result.send_time
        group = self._group
        if group is None:
            self._group = _Group(send, send, arrival, arrival, result.size, local)
            return
        if send < group.first_send:
            return  # sent before the group it arrived in: reordered, no delta from it
        if self._belongs_to(group, send, arrival):
            group.last_send = max(group.last_send, send)
            group.last_arrival = arrival
            group.size += result.size
            group.last_local = local
            return
        previous = self._previous
        if previous is not None:
            send_delta = group.last_send - previous.last_send
            arrival_delta = group.last_arrival - previous.last_arrival
            if arrival_delta - (group.last_local - previous.last_local) >= ARRIVAL_OFFSET_RESET:
                # the receiver's clock jumped ahead (a feedback sender restarted its
                # reference time): no delay sample spans the jump
                self._restart_grouping()
                return
            if arrival_delta < 0:
                # the group arrived before the one sent ahead of it: reordered on the
                # way; this packet is dropped, and a run of them starts the grouping over
                self._reordered += 1
                if self._reordered >= REORDERED_RESET:
                    self._restart_grouping()
                return
            self._reordered = 0
            self._on_delta(arrival_delta - send_delta, group.last_arrival)
        self._previous = group
        self._group = _Group(send, send, arrival, arrival, result.size, local)

    def _restart_grouping(self) -> None:
        """libwebrtc's ``InterArrivalDelta::Reset``: the trendline keeps its history."""
        self._reordered = 0
        self._group = self._previous = None

    @staticmethod
    def _belongs_to(group: _Group, send: float, arrival: float) -> bool:
        send_delta = send - group.last_send
        if send_delta == 0:
            return True
        arrival_delta = arrival - group.last_arrival
        if (
            arrival_delta - send_delta < 0
            and arrival_delta <= BURST_TIME
            and arrival - group.first_arrival < MAX_BURST_DURATION
        ):
            return True
        return send - group.first_send <= BURST_TIME

    def _on_delta(self, delay_delta: float, arrival: float) -> None:
        self._deltas = min(self._deltas + 1, 1000)
        if self._first_arrival is None:
            self._first_arrival = arrival
        self._accumulated += delay_delta * 1000.0  # ms
        self._smoothed = SMOOTHING * self._smoothed + (1 - SMOOTHING) * self._accumulated
        self._history.append(((arrival - self._first_arrival) * 1000.0, self._smoothed))
        if len(self._history) >= MIN_POINTS:
            self.trend = _slope(self._history)
        modified = min(self._deltas, 60) * self.trend * THRESHOLD_GAIN
        self._detect(modified, arrival)

    def _detect(self, modified: float, now: float) -> None:
        if modified > self.threshold:
            if self._overuse_since is None:
                self._overuse_since = now
                self._overuse_count = 0
            self._overuse_count += 1
            if (
                now - self._overuse_since > OVERUSE_TIME
                and self._overuse_count > 1
                and self.trend >= self._previous_trend
            ):
                self.state = Usage.OVERUSE
        elif modified < -self.threshold:
            self._overuse_since = None
            self.state = Usage.UNDERUSE
        else:
            self._overuse_since = None
            self.state = Usage.NORMAL
        self._previous_trend = self.trend
        self._adapt_threshold(modified, now)

    def _adapt_threshold(self, modified: float, now: float) -> None:
        if self._last_update is None:
            self._last_update = now
        if abs(modified) > self.threshold + 15.0:
            self._last_update = now
            return  # a spike: do not adapt to it
        k = K_DOWN if abs(modified) < self.threshold else K_UP
        elapsed_ms = min((now - self._last_update) * 1000.0, 100.0)
        self.threshold += k * (abs(modified) - self.threshold) * elapsed_ms
        self.threshold = min(max(self.threshold, 6.0), 600.0)
        self._last_update = now


def _slope(points: Iterable[tuple[float, float]]) -> float:
    xs, ys = zip(*points, strict=True)
    mean_x = sum(xs) / len(xs)
    mean_y = sum(ys) / len(ys)
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    denominator = sum((x - mean_x) ** 2 for x in xs)
    return numerator / denominator if denominator else 0.0


def near_max_increase(rate: float, round_trip_time: float) -> float:
    """Additive increase (bps per second) near the link's capacity, as libwebrtc's
    ``GetNearMaxIncreaseRateBpsPerSecond``: about one packet of a 30 fps frame per
    twice the response time (RTT + 100 ms), at least :data:`NEAR_MAX_INCREASE`."""
    frame_bytes = rate / 30 / 8
    packets = max(1.0, math.ceil(frame_bytes / 1200))
    response_time = 2 * (round_trip_time + 0.1)
    return max(float(NEAR_MAX_INCREASE), frame_bytes / packets * 8 / response_time)


class BandwidthEstimator:
    """The target send bit rate of one transport (bps)."""

    def __init__(
        self,
        start_bitrate: int = 1_000_000,
        *,
        min_bitrate: int = MIN_BITRATE,
        max_bitrate: int = 10_000_000,
        clock: collections.abc.Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_bitrate = min_bitrate
        self.max_bitrate = max_bitrate
        self._clock = clock
        self.delay_based: float | None = None  # only with transport-cc feedback
        self.loss_based = float(start_bitrate)
        self.remb: int | None = None
        self.loss_fraction = 0.0
        self.detector = TrendlineDetector()
        #: the acknowledged bit rate when overuse was last detected (EWMA), if known
        self.link_capacity: float | None = None
        self.round_trip_time = 0.1
        self._acked: collections.deque[tuple[float, int]] = collections.deque()
        self._last_increase: float | None = None
        self._last_loss_decrease = -math.inf
        self._last_loss_increase = -math.inf
        self.start_bitrate = float(start_bitrate)
        #: packets reported since the last loss update (transport-cc)
        self._lost = 0
        self._reported = 0

    # --- inputs -----------------------------------------------------------------------

    def on_packet_results(self, results: list[PacketResult]) -> None:
        """One transport-cc feedback, matched with what was sent."""
        if not results:
            return
        now = self._clock()
        self._reported += len(results)
        received = [(r.arrival, r) for r in results if r.arrival is not None]
        self._lost += len(results) - len(received)
        received.sort(key=operator.itemgetter(0))
        for arrival, result in received:
            self._acked.append((arrival, result.size))
            self.detector.update(result, now)
        if self._acked:
            newest = self._acked[-1][0]
            while self._acked and self._acked[0][0] < newest - ACKED_WINDOW:
                self._acked.popleft()
        self._update_delay_based(now)
        if self._reported >= 20:
            self.on_loss_report(self._lost / self._reported, now=now)
            self._lost = self._reported = 0

    def on_remb(self, bitrate: int) -> None:
        self.remb = int(bitrate)

    def on_probe_result(self, bitrate: float, now: float | None = None) -> None:
        """A probe cluster's measured rate (:mod:`.probing`) becomes the estimate,
        delay- and loss-based, up or down, unless the link is overusing
        (libwebrtc: ``AimdRateControl::SetEstimate``, ``SetSendBitrate``)."""
        if self.detector.state == Usage.OVERUSE:
            return
        now = self._clock() if now is None else now
        rate = min(max(float(bitrate), self.min_bitrate), self.max_bitrate)
        self.delay_based = self.loss_based = rate
        self._last_increase = now

    def on_loss_report(self, fraction: float, *, now: float | None = None) -> None:
        """Loss fraction (0..1) over the last report interval."""
        now = self._clock() if now is None else now
        self.loss_fraction = fraction
        current = self.loss_based
        if fraction < LOW_LOSS:
            if now - self._last_loss_increase >= 1.0:
                increased = current * 1.08 + 1000
                acked = self.acked_bitrate
                if acked is not None:
                    # an application-limited sender does not push the estimate up
                    # (libwebrtc caps its increase by the acknowledged rate, too)
                    increased = max(current, min(increased, 1.5 * acked + 10_000))
                self.loss_based = min(self.max_bitrate, increased)
                self._last_loss_increase = now
        elif fraction > HIGH_LOSS:
            if now - self._last_loss_decrease >= 0.3 + self.round_trip_time:
                self.loss_based = max(self.min_bitrate, current * (1 - 0.5 * fraction))
                self._last_loss_decrease = now
        # 2..10 %: hold

    # --- the delay-based part ---------------------------------------------------------

    @property
    def acked_bitrate(self) -> float | None:
        if len(self._acked) < 2:
            return None
        span = self._acked[-1][0] - self._acked[0][0]
        if span < 0.1:
            return None
        # n packets arrived over n - 1 gaps: the first one's bytes precede the span
        return sum(size for _, size in list(self._acked)[1:]) * 8 / span

    def _update_delay_based(self, now: float) -> None:
        rate = self.delay_based if self.delay_based is not None else self.start_bitrate
        previous = rate
        acked = self.acked_bitrate
        state = self.detector.state
        if state == Usage.OVERUSE:
            if acked is not None:
                if rate > BETA * acked:
                    # the acknowledged rate at overuse: the link's capacity (EWMA)
                    capacity = self.link_capacity
                    self.link_capacity = (
                        acked if capacity is None else 0.95 * capacity + 0.05 * acked
                    )
                rate = min(rate, BETA * acked)
            else:
                rate *= BETA
            self._last_increase = None
        elif state == Usage.NORMAL:
            if self._last_increase is None:
                self._last_increase = now
            elapsed = min(now - self._last_increase, 1.0)
            capacity = self.link_capacity
            if capacity is not None and acked is not None and acked > 1.1 * capacity:
                # the link carried more than its known capacity: it got faster, forget it
                # (libwebrtc: throughput above the capacity's upper bound; the rate alone
                # creeping past it is the additive increase probing the same link)
                self.link_capacity = capacity = None
            if capacity is not None and rate >= 0.8 * capacity:
                # near the known capacity: additive increase (AimdRateControl near max)
                rate += near_max_increase(rate, self.round_trip_time) * elapsed
            else:
                rate *= INCREASE_PER_SECOND**elapsed
            if acked is not None:
                # no increase beyond what the link has shown it carries (an
                # application-limited sender does not lower the estimate, though)
                rate = min(rate, max(1.5 * acked + 10_000, previous))
            self._last_increase = now
        else:  # underuse: hold while the queues drain
            self._last_increase = None
        self.delay_based = min(max(rate, self.min_bitrate), self.max_bitrate)

    # --- output -----------------------------------------------------------------------

    @property
    def target(self) -> int:
        candidates = [self.loss_based]
        if self.delay_based is not None:
            candidates.append(self.delay_based)
        if self.remb is not None:
            candidates.append(float(self.remb))
        return int(min(max(min(candidates), self.min_bitrate), self.max_bitrate))


#: libwebrtc's simulcast table (``kSimulcastFormats``): for a layer of at least this
#: many pixels, its (min, target) bit rate in kbps; the max is the layer's own.
SIMULCAST_LIMITS_KBPS = (
    (1920 * 1080, 800, 4000),
    (1280 * 720, 600, 2500),
    (960 * 540, 350, 1200),
    (640 * 360, 150, 500),
    (480 * 270, 150, 350),
    (320 * 180, 30, 150),
    (0, 30, 150),
)
#: A suspended layer comes back only when its min bit rate fits this many times over
#: (``SimulcastRateAllocator``'s ``kDefaultHysteresis``).
SIMULCAST_HYSTERESIS = 1.2


def simulcast_limits(width: int, height: int, max_bitrate: int) -> tuple[int, int, int]:
    """(min, target, max) bit rate (bps) of a simulcast layer of this size."""
    pixels = width * height
    low, target = SIMULCAST_LIMITS_KBPS[-1][1:]
    for minimum, min_kbps, target_kbps in SIMULCAST_LIMITS_KBPS:
        if pixels >= minimum:
            low, target = min_kbps * 1000, target_kbps * 1000
            break
    high = max(int(max_bitrate), 1)
    return min(low, high), min(target, high), high


def allocate_simulcast(
    budget: int, limits: list[tuple[int, int, int]], enabled: list[bool]
) -> list[int]:
    """Split ``budget`` (bps) over simulcast layers, lowest first, as libwebrtc's
    ``SimulcastRateAllocator``: each layer up to its target; a layer whose min bit
    rate does not fit any more is turned off (0) with every layer above it (one that
    is off needs its min x :data:`SIMULCAST_HYSTERESIS` to come back); the lowest
    layer always runs, at its min at least; what is left goes to the highest layer
    running, up to its max.

    Example::

        allocate_simulcast(400_000, [(30_000, 150_000, 200_000),
                                     (150_000, 350_000, 450_000),
                                     (350_000, 1_200_000, 1_200_000)], [True] * 3)
        # [150000, 250000, 0]: r2 (min 350 kbps) does not fit
    """
    shares = [0] * len(limits)
    left = int(budget)
    top = -1
    for index, (low, target, _high) in enumerate(limits):
        if index == 0:
            share = max(low, min(left, target))
        else:
            need = low if enabled[index] else int(low * SIMULCAST_HYSTERESIS)
            if left < need:
                break
            share = min(left, target)
        shares[index] = share
        left = max(0, left - share)
        top = index
    if top >= 0 and left > 0:
        extra = min(left, limits[top][2] - shares[top])
        shares[top] += max(0, extra)
    return shares


def simulcast_padding(limits: list[tuple[int, int, int]]) -> int:
    """The rate (bps) libwebrtc pads a simulcast sender up to (``CalculateMaxPadBitrateBps``
    without ALR probing): the targets of the lower active layers plus the top one's min x
    :data:`SIMULCAST_HYSTERESIS` (at most its target), what the top layer needs to come
    back (:func:`allocate_simulcast`); 0 for one layer."""
    if len(limits) < 2:
        return 0
    low, target, _ = limits[-1]
    top = min(int(low * SIMULCAST_HYSTERESIS), target)
    return sum(t for _, t, _ in limits[:-1]) + top


class TransportCongestion:
    """Congestion control of one BUNDLE transport, as the peer uses it.

    * send side: :meth:`pace` paces video packets (:class:`~.pacer.Pacer` at
      2.5 x the target) and stamps the transport-wide sequence number where
      transport-cc was negotiated (:attr:`extension_id`); feedback
      (:meth:`on_rtcp`), REMB (:meth:`on_remb`) and receiver-report loss
      (:meth:`on_report_loss`, used while no transport-cc feedback came) feed
      the :class:`BandwidthEstimator`;
    * receive side: :meth:`on_rtp` records transport sequence numbers and
      :meth:`feedback` turns them into feedback packets (every ~100 ms);
    * padding (:meth:`padding_due`): up to :attr:`padding_bitrate` within the
      estimate, for simulcast senders with a layer turned off;
    * probing (:mod:`.probing`): where transport-cc was negotiated and the peer can
      pad (:attr:`can_probe`: a video sender with RTX), the estimate starts at
      :data:`~.probing.START_BITRATE` and probe clusters (:meth:`probe_due`, sent by
      the peer) find the link's rate within a few feedback round trips.

    Without probing, :attr:`estimate` is None until a congestion signal arrived:
    until then the encoders keep their configured maximum bit rates (as before
    REMB).
    """

    #: Feedback interval (libwebrtc sends one per 50-250 ms depending on rate).
    FEEDBACK_INTERVAL = 0.1

    def __init__(self, clock: collections.abc.Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.estimator = BandwidthEstimator(clock=clock)
        self.pacer = Pacer()
        self.extension_id: int | None = None
        self.history = SendHistory()
        self.recorder = FeedbackRecorder()
        self.signalled = False
        self.feedback_seen = False
        self._last_feedback = 0.0
        #: Seconds between feedback packets: :attr:`FEEDBACK_INTERVAL`, or longer where
        #: the peer says so (audio only: libwebrtc's 250 ms at Opus rates).
        self.feedback_interval = self.FEEDBACK_INTERVAL
        self.max_bitrate = 0
        #: pad the video up to this rate (bps, never above the estimate); see :meth:`padding_due`
        self.padding_bitrate = 0
        self.padding_bytes_sent = 0
        self._padding_budget = 0.0
        self._padding_time: float | None = None
        #: set by the peer: a video sender can send padding (RTX) for probe clusters
        self.can_probe = False
        self.prober = ProbeController()
        self.probe_estimator = ProbeBitrateEstimator()
        #: the cluster being sent: what :meth:`stamp` stamps belongs to it
        self.sending_cluster: ProbeCluster | None = None
        self.probe_bytes_sent = 0

    # --- configuration ---------------------------------------------------------

    def configure(self, max_bitrate: int) -> None:
        """The sum of the senders' maximum bit rates: the estimate's ceiling. Where
        the transport can probe (:attr:`can_probe` and transport-cc), the estimate
        starts at :data:`~.probing.START_BITRATE` and probing begins; otherwise it
        starts at the ceiling and backs off on overuse, loss or REMB."""
        max_bitrate = max(int(max_bitrate), MIN_BITRATE)
        probing = self.can_probe and self.extension_id is not None
        if max_bitrate == self.max_bitrate and (not probing or self.prober.state != "init"):
            return
        self.max_bitrate = max_bitrate
        estimator = self.estimator
        estimator.max_bitrate = max_bitrate
        now = self._clock()
        if probing and self.prober.state == "init":
            if not self.signalled:
                start = float(min(START_BITRATE, max_bitrate))
                estimator.loss_based = estimator.start_bitrate = start
                self.signalled = True
            self.prober.start(estimator.target, max_bitrate, now)
        elif probing:
            self.prober.on_max_bitrate(max_bitrate, estimator.target, now)
        elif not self.signalled:
            estimator.loss_based = float(max_bitrate)
            estimator.start_bitrate = float(max_bitrate)
        self.pacer.set_target(self.estimate or max_bitrate)

    # --- probing ---------------------------------------------------------------------

    def probe_due(self) -> ProbeCluster | None:
        """The next probe cluster to send, if any (the peer sends it: :meth:`begin_probe`,
        padding through :meth:`stamp`, :meth:`end_probe`)."""
        prober = self.prober
        if prober.state == "init":
            return None
        prober.tick(self._clock())
        return prober.pending[0] if prober.pending else None

    def begin_probe(self, cluster: ProbeCluster, first_size: int) -> None:
        """``cluster`` starts with a packet of ``first_size`` bytes. The estimate leaves
        the last packet out of the send interval (exact for evenly spaced packets);
        sent in bursts, the cluster must not count the first one against its rate
        either, or it goes out a packet short (900 kbit/s probes measured 780)."""
        cluster.started = self._clock() - first_size * 8 / cluster.bitrate
        self.sending_cluster = cluster

    def end_probe(self, cluster: ProbeCluster) -> None:
        self.sending_cluster = None
        self.prober.cluster_sent(cluster, self._clock())

    @property
    def estimate(self) -> int | None:
        """The target bit rate of the transport (bps), once something was signalled."""
        return self.estimator.target if self.signalled else None

    # --- send side --------------------------------------------------------------

    def pace(self, size: int) -> float:
        """Pace one outgoing video RTP packet: take ``size`` bytes off the padding
        budget and reserve the packet's pacer slot. Returns the seconds to wait
        before sending it (0.0: now, within the burst); the caller sends it now or
        leaves it to a :class:`~.pacer.PacedQueue`."""
        if self.padding_bitrate > 0:  # media fills the padding budget first
            self._padding_budget -= size
        delay = self.pacer.reserve(size)
        return delay if delay > BURST_WINDOW else 0.0

    def stamp(self, data: bytes) -> bytes:
        """Stamp one outgoing RTP packet right before it leaves (after :meth:`pace`):
        its transport-wide sequence number, with the send time recorded now."""
        if self.extension_id is None:
            return data
        packet = bytearray(data)
        cluster = self.sending_cluster
        if cluster is not None:
            cluster.sent_bytes += len(data)
            cluster.sent_packets += 1
            sequence = self.history.next(self._clock(), len(data), cluster)
        else:
            sequence = self.history.next(self._clock(), len(data))
        if not stamp_transport_sequence(packet, self.extension_id, sequence):
            return data
        return bytes(packet)

    # --- padding ---------------------------------------------------------------------

    def padding_due(self) -> int:
        """Bytes of padding to send now (libwebrtc's pacer padding budget).

        libwebrtc pads a simulcast sender up to the targets of its lower layers plus
        1.2 x the top layer's min bit rate (``CalculateMaxPadBitrateBps``), within the
        estimate: with an upper layer turned off, the media alone would cap the
        estimate at 1.5 x what it carries (the delay-based increase is bounded by
        the acknowledged rate), and the layer could never come back. The peer sets
        :attr:`padding_bitrate`; media packets fill the budget before padding does.
        """
        now = self._clock()
        last, self._padding_time = self._padding_time, now
        estimate = self.estimate
        rate = min(self.padding_bitrate, estimate) if estimate is not None else 0
        if rate <= 0 or last is None:
            self._padding_budget = 0.0
            return 0
        per_second = rate / 8
        budget = self._padding_budget + per_second * min(now - last, 0.1)
        # at most 100 ms ahead, at most 500 ms of media over the rate carried along
        self._padding_budget = min(max(budget, -0.5 * per_second), 0.1 * per_second)
        return int(self._padding_budget) if self._padding_budget > 0 else 0

    def padding_sent(self, size: int) -> None:
        """A padding packet of ``size`` bytes left (:meth:`pace` took it off the budget)."""
        self.padding_bytes_sent += size

    def on_rtcp(self, data: bytes) -> bytes:
        """Take the transport-cc feedback out of a compound RTCP packet; returns the rest."""
        packets = split_compound(data)
        if not any(_is_feedback(packet) for packet in packets):
            return data
        rest = bytearray()
        for packet in packets:
            if _is_feedback(packet):
                try:
                    feedback = parse_feedback(packet)
                except ValueError as exc:
                    logger.debug("bad transport-cc feedback: %s", exc)
                    continue
                self.on_feedback(feedback)
            else:
                rest += packet
        return bytes(rest)

    def on_feedback(self, feedback: Feedback) -> None:
        results = self.history.results(feedback)
        if results:
            self.feedback_seen = self.signalled = True
            estimator = self.estimator
            estimator.on_packet_results(results)
            probed = self._probe_result(results) if self.prober.state != "init" else None
            acked = estimator.acked_bitrate
            if probed is not None and acked is not None:
                # A probe that read low (a receiver that stalled through it) lowers the
                # estimate no further than just under what the link carried: libwebrtc's
                # limit_probes_lower_than_throughput_estimate (kProbeDropThroughputFraction).
                current = estimator.delay_based or estimator.start_bitrate
                probed = max(probed, min(current, PROBE_DROP_THROUGHPUT * acked))
            if probed is not None:
                logger.debug("probe result %d bps (estimate %d bps)", probed, estimator.target)
                estimator.on_probe_result(probed)
            if self.prober.state == "waiting":
                self.prober.on_estimate(estimator.target, self._clock())
            self._update_pacer()

    def _probe_result(self, results: list[PacketResult]) -> float | None:
        """The latest probe estimate these results complete (libwebrtc applies one per
        feedback: ``FetchAndResetLastEstimatedBitrate``)."""
        now = self._clock()
        found = None
        for result in results:
            cluster = result.cluster
            if cluster is None or result.arrival is None:
                continue
            rate = self.probe_estimator.on_packet(
                cluster, result.sequence, result.send_time, result.size, result.arrival, now
            )
            if rate is not None:
                found = rate
        return found

    def on_remb(self, bitrate: int) -> None:
        self.signalled = True
        self.estimator.on_remb(bitrate)
        self._update_pacer()

    def on_report_loss(self, fraction: float) -> None:
        """Loss from receiver reports; transport-cc feedback, when it comes, is finer."""
        if self.feedback_seen:
            return
        self.signalled = True
        self.estimator.on_loss_report(fraction)
        self._update_pacer()

    def on_round_trip_time(self, rtt: float) -> None:
        self.estimator.round_trip_time = rtt

    def _update_pacer(self) -> None:
        self.pacer.set_target(self.estimator.target)

    # --- receive side ----------------------------------------------------------------

    def on_rtp(self, sequence: int | None, ssrc: int) -> bool:
        """Record a received packet's transport-wide sequence number; True when feedback
        is due (:meth:`feedback` has packets to give now)."""
        if sequence is not None and self.extension_id is not None:
            now = self._clock()
            self.recorder.record(sequence, int(now * 1e6), ssrc)
            return now - self._last_feedback >= self.feedback_interval
        return False

    def feedback(self, sender_ssrc: int) -> list[bytes]:
        """Feedback packets due now (every :attr:`feedback_interval`)."""
        now = self._clock()
        if self.extension_id is None or now - self._last_feedback < self.feedback_interval:
            return []
        self._last_feedback = now
        return self.recorder.build(sender_ssrc)


def _is_feedback(packet: bytes) -> bool:
    return len(packet) > 1 and packet[1] == 205 and packet[0] & 0x1F == 15


__all__ = [
    "BandwidthEstimator",
    "TransportCongestion",
    "TrendlineDetector",
    "Usage",
    "allocate_simulcast",
    "simulcast_limits",
    "simulcast_padding",
]
