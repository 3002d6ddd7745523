"""Bandwidth probing: how a sender finds its link's capacity at the start of a call.

A sender that starts at its configured maximum floods a narrow link: the queue
builds, the delay-based estimator sees overuse while the encoder, dropping
frames, sends little, and the estimate falls to 0.85 x that small acknowledged
rate (a 300 kbit/s link read 190 kbit/s this way, and climbed back at 8 % a
second). libwebrtc starts at 300 kbit/s instead and sends short bursts of
padding at higher rates ("probe clusters"); what the receiver's transport-cc
feedback says about their arrival is the link's rate. This module is that part
of libwebrtc's GoogCC, sans-I/O:

* :class:`ProbeController` (``ProbeController``) decides the clusters: at the
  start, 3 x and 6 x the start rate; while a result comes back above 70 % of
  the highest rate probed, again at twice the result; once more when the
  configured maximum rises above the estimate. Each cluster is at least
  :data:`MIN_PROBE_PACKETS` packets over :data:`PROBE_DURATION`.
* :class:`ProbeBitrateEstimator` (``ProbeBitrateEstimator``) turns a cluster's
  feedback into a rate: the bytes over the send interval and over the receive
  interval, the smaller of the two; a receive rate under 90 % of the send rate
  means the probe saturated the link, and the estimate is then 95 % of the
  receive rate.

``TransportCongestion`` owns both; the peer sends the clusters
(``RtcPeer._send_probe``).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

#: libwebrtc's default start bit rate (``BitrateConstraints::start_bitrate_bps``).
START_BITRATE = 300_000
#: The initial clusters, times the start rate (``first/second_exponential_probe_scale``).
INITIAL_PROBE_SCALES = (3.0, 6.0)
#: A result above this share of the rate probed asks for another cluster at
#: :data:`FURTHER_PROBE_SCALE` times the result (``further_probe_threshold``,
#: ``further_exponential_probe_scale``).
FURTHER_PROBE_THRESHOLD = 0.7
FURTHER_PROBE_SCALE = 2.0
#: A cluster lasts at least this long and has at least this many packets
#: (``min_probe_duration``, ``min_probe_packets_sent``).
PROBE_DURATION = 0.015
MIN_PROBE_PACKETS = 5
#: Without a result this long after its clusters went out, probing is over
#: (``kMaxWaitingTimeForProbingResult``).
RESULT_TIMEOUT = 1.0
#: A cluster's result needs this share of its packets and bytes to have arrived
#: (``kMinReceivedProbesRatio``, ``kMinReceivedBytesRatio``).
MIN_RECEIVED_RATIO = 0.8
#: Send or receive intervals longer than this are no probe (``kMaxProbeInterval``).
MAX_PROBE_INTERVAL = 1.0
#: A receive rate above this times the send rate is a measuring error (``kMaxValidRatio``).
MAX_VALID_RATIO = 2.0
#: Received under this share of the send rate: the link is saturated
#: (``kMinRatioForUnsaturatedLink``); the estimate is then this share of the
#: receive rate (``kTargetUtilizationFraction``).
SATURATED_RATIO = 0.9
TARGET_UTILIZATION = 0.95
#: Clusters are forgotten this long after they were sent (``kMaxClusterHistory``).
CLUSTER_HISTORY = 1.0


@dataclass
class ProbeCluster:
    """One burst of probing at ``bitrate`` (bps)."""

    id: int
    bitrate: int
    #: bytes and packets it needs (``PacedPacketInfo``'s probe_cluster_min_*)
    min_bytes: int
    min_packets: int = MIN_PROBE_PACKETS
    #: filled in by the sending side
    started: float | None = None
    sent_bytes: int = 0
    sent_packets: int = 0

    @property
    def complete(self) -> bool:
        return self.sent_bytes >= self.min_bytes and self.sent_packets >= self.min_packets

    def bytes_due(self, now: float) -> int:
        """What must have left by ``now`` to keep the cluster at its rate."""
        started = now if self.started is None else self.started
        elapsed = max(now - started, 0.0)
        return int(self.bitrate * elapsed / 8) - self.sent_bytes


class ProbeController:
    """Which probe clusters to send, and when probing is over."""

    def __init__(self) -> None:
        self.max_bitrate = 0
        #: "init" (not started), "waiting" (clusters out, a result may ask for more),
        #: "complete"
        self.state = "init"
        self.pending: deque[ProbeCluster] = deque()
        self._ids = itertools.count(1)
        self._probe_further_above: float | None = None
        self._waiting_since: float | None = None

    def start(self, estimate: int, max_bitrate: int, now: float) -> None:
        """Probe at 3 x and 6 x the estimate (the start rate, or what an earlier
        signal, audio's feedback, made of it), within ``max_bitrate``."""
        self.max_bitrate = max_bitrate
        rates = [scale * estimate for scale in INITIAL_PROBE_SCALES]
        self._initiate(rates, now, further=True)

    def on_max_bitrate(self, max_bitrate: int, estimate: int, now: float) -> None:
        """The senders' maximum changed (a source's size known, a layer turned on):
        probe at the new maximum if the estimate is below it (libwebrtc's
        ``OnMaxTotalAllocatedBitrate``). Initial clusters not sent yet are re-capped."""
        previous, self.max_bitrate = self.max_bitrate, max_bitrate
        if self.state == "init":
            return
        for cluster in self.pending:
            if cluster.started is None and cluster.bitrate > max_bitrate:
                cluster.bitrate = max_bitrate
                cluster.min_bytes = _min_bytes(max_bitrate)
        if self.state == "complete" and max_bitrate > previous and estimate < max_bitrate:
            self._initiate([max_bitrate], now, further=False)

    def on_estimate(self, estimate: int, now: float) -> None:
        """A new estimate: probe further while results keep close to the rate probed."""
        self.tick(now)
        if self.state != "waiting" or self.pending:
            return
        if self._probe_further_above is not None and estimate > self._probe_further_above:
            self._initiate([FURTHER_PROBE_SCALE * estimate], now, further=True)

    def tick(self, now: float) -> None:
        """Probing ends when its last clusters got no answer in :data:`RESULT_TIMEOUT`."""
        waiting = self._waiting_since
        if self.state == "waiting" and not self.pending and waiting is not None:
            if now - waiting > RESULT_TIMEOUT:
                self.state = "complete"
                self._probe_further_above = None

    def cluster_sent(self, cluster: ProbeCluster, now: float) -> None:
        """The sending side finished ``cluster`` (the result timeout counts from here)."""
        if self.pending and self.pending[0] is cluster:
            self.pending.popleft()
        self._waiting_since = now

    def _initiate(self, rates: list[float], now: float, *, further: bool) -> None:
        clusters = []
        for rate in rates:
            bitrate = int(min(rate, self.max_bitrate))
            if bitrate <= 0:
                continue
            clusters.append(ProbeCluster(next(self._ids), bitrate, _min_bytes(bitrate)))
            if bitrate >= self.max_bitrate:
                further = False  # nothing to find above the maximum
                break
        self.pending.extend(clusters)
        self._waiting_since = now
        if further and clusters:
            self.state = "waiting"
            self._probe_further_above = FURTHER_PROBE_THRESHOLD * clusters[-1].bitrate
        else:
            self.state = "complete"
            self._probe_further_above = None


def _min_bytes(bitrate: int) -> int:
    return int(bitrate * PROBE_DURATION / 8)


@dataclass
class _Aggregate:
    first_send: float
    last_send: float
    first_arrival: float
    last_arrival: float
    size_last_send: int
    size_first_arrival: int
    size: int = 0
    packets: int = 0
    created: float = 0.0
    sequences: set[int] = field(default_factory=set)


class ProbeBitrateEstimator:
    """The rate a probe cluster's packets arrived at (libwebrtc's ``ProbeBitrateEstimator``)."""

    def __init__(self) -> None:
        self._clusters: dict[int, _Aggregate] = {}

    def on_packet(
        self,
        cluster: ProbeCluster,
        sequence: int,
        send_time: float,
        size: int,
        arrival: float,
        now: float,
    ) -> float | None:
        """One received packet of ``cluster``; its estimate (bps) once enough arrived."""
        self._forget_old(now)
        aggregate = self._clusters.get(cluster.id)
        if aggregate is None:
            aggregate = _Aggregate(send_time, send_time, arrival, arrival, size, size, created=now)
            self._clusters[cluster.id] = aggregate
        if sequence in aggregate.sequences:
            return None
        aggregate.sequences.add(sequence)
        if send_time < aggregate.first_send:
            aggregate.first_send = send_time
        if send_time >= aggregate.last_send:
            aggregate.last_send, aggregate.size_last_send = send_time, size
        if arrival < aggregate.first_arrival:
            aggregate.first_arrival, aggregate.size_first_arrival = arrival, size
        aggregate.last_arrival = max(aggregate.last_arrival, arrival)
        aggregate.size += size
        aggregate.packets += 1
        if aggregate.packets < MIN_RECEIVED_RATIO * cluster.min_packets:
            return None
        if aggregate.size < MIN_RECEIVED_RATIO * cluster.min_bytes:
            return None
        send_interval = aggregate.last_send - aggregate.first_send
        receive_interval = aggregate.last_arrival - aggregate.first_arrival
        if not 0 < send_interval <= MAX_PROBE_INTERVAL:
            return None
        if not 0 < receive_interval <= MAX_PROBE_INTERVAL:
            return None
        # the last packet sent and the first received delimit the intervals: their
        # own bytes took no time within them
        send_rate = (aggregate.size - aggregate.size_last_send) * 8 / send_interval
        receive_rate = (aggregate.size - aggregate.size_first_arrival) * 8 / receive_interval
        if receive_rate > MAX_VALID_RATIO * send_rate:
            return None
        if receive_rate < SATURATED_RATIO * send_rate:
            return TARGET_UTILIZATION * receive_rate
        return min(send_rate, receive_rate)

    def _forget_old(self, now: float) -> None:
        old = [key for key, a in self._clusters.items() if now - a.created > CLUSTER_HISTORY]
        for key in old:
            del self._clusters[key]


__all__ = [
    "START_BITRATE",
    "ProbeBitrateEstimator",
    "ProbeCluster",
    "ProbeController",
]
