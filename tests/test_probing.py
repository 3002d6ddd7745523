"""Bandwidth probing (``sora_async.rtc.probing``): libwebrtc's start-up probing.

Units of the controller and the estimator, then a transport (``TransportCongestion``)
probing through a simulated bottleneck on a virtual clock. The same through the dev
server: ``test_congestion_devserver.py``; a real 300 kbit/s link:
``test_congestion_netns.py``.
"""

from __future__ import annotations

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from sora_async.rtc.congestion import TransportCongestion
from sora_async.rtc.probing import (
    MIN_PROBE_PACKETS,
    PROBE_DURATION,
    RESULT_TIMEOUT,
    START_BITRATE,
    ProbeBitrateEstimator,
    ProbeCluster,
    ProbeController,
)
from sora_async.rtc.twcc import FeedbackRecorder

TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def _cluster(bitrate: int = 1_000_000) -> ProbeCluster:
    return ProbeCluster(1, bitrate, int(bitrate * PROBE_DURATION / 8))


def _feed(
    estimator: ProbeBitrateEstimator,
    cluster: ProbeCluster,
    sizes: list[int],
    send_gap: float,
    arrival_gap: float,
) -> list[float | None]:
    return [
        estimator.on_packet(cluster, i, 1.0 + i * send_gap, size, 5.0 + i * arrival_gap, 1.0)
        for i, size in enumerate(sizes)
    ]


def test_estimate_is_the_bytes_over_the_send_and_the_receive_interval() -> None:
    cluster = _cluster(1_000_000)  # 1875 bytes, 5 packets
    # 8 x 300 bytes, sent 2 ms apart (1.2 Mbit/s) and received 2.1 ms apart (1.14 Mbit/s)
    estimates = _feed(ProbeBitrateEstimator(), cluster, [300] * 8, 0.002, 0.0021)
    # 4 packets (0.8 x 5) and 1500 bytes (0.8 x 1875) are needed first
    assert estimates[:4] == [None] * 4
    send_rate = 7 * 300 * 8 / (7 * 0.002)
    receive_rate = 7 * 300 * 8 / (7 * 0.0021)
    assert receive_rate >= 0.9 * send_rate  # not saturated: the smaller of the two
    assert estimates[-1] == pytest.approx(receive_rate)


def test_a_saturated_link_gives_95_percent_of_the_receive_rate() -> None:
    estimates = _feed(ProbeBitrateEstimator(), _cluster(), [300] * 8, 0.002, 0.004)
    assert estimates[-1] == pytest.approx(0.95 * 7 * 300 * 8 / (7 * 0.004))


@pytest.mark.parametrize(
    ("sizes", "send_gap", "arrival_gap"),
    [
        ([300] * 3, 0.002, 0.002),  # too few packets arrived
        ([100] * 8, 0.002, 0.002),  # too few bytes
        ([300] * 8, 0.0, 0.002),  # all sent at once: no send interval
        ([300] * 8, 0.002, 0.0009),  # arrived faster than twice the send rate: an error
        ([300] * 8, 0.2, 0.2),  # longer than a second: no probe
    ],
)
def test_no_estimate_from_a_cluster_that_measures_nothing(
    sizes: list[int], send_gap: float, arrival_gap: float
) -> None:
    assert _feed(ProbeBitrateEstimator(), _cluster(), sizes, send_gap, arrival_gap)[-1] is None


def test_a_packet_reported_twice_counts_once() -> None:
    estimator = ProbeBitrateEstimator()
    cluster = _cluster()
    for _ in range(6):
        assert estimator.on_packet(cluster, 7, 1.0, 500, 5.0, 1.0) is None


def test_controller_probes_3x_and_6x_the_start_then_twice_a_good_result() -> None:
    controller = ProbeController()
    controller.start(START_BITRATE, 10_000_000, now=0.0)
    first, second = controller.pending
    assert (first.bitrate, second.bitrate) == (900_000, 1_800_000)
    assert first.min_bytes == int(900_000 * 0.015 / 8) and first.min_packets == MIN_PROBE_PACKETS
    assert controller.state == "waiting"
    controller.cluster_sent(first, 0.02)
    controller.on_estimate(900_000, 0.05)  # the second cluster is still to go
    assert list(controller.pending) == [second]
    controller.cluster_sent(second, 0.04)
    controller.on_estimate(1_500_000, 0.15)  # above 0.7 x 1.8 Mbit/s: probe further
    (further,) = controller.pending
    assert further.bitrate == 3_000_000 and further.id == 3
    controller.cluster_sent(further, 0.16)
    controller.on_estimate(1_600_000, 0.3)  # under 0.7 x 3 Mbit/s: the link's rate
    assert not controller.pending and controller.state == "waiting"
    controller.tick(0.16 + RESULT_TIMEOUT + 0.01)
    assert controller.state == "complete"
    controller.on_estimate(5_000_000, 2.0)
    assert not controller.pending


def test_a_result_after_the_timeout_asks_for_no_more_probing() -> None:
    controller = ProbeController()
    controller.start(START_BITRATE, 10_000_000, now=0.0)
    for cluster in list(controller.pending):
        controller.cluster_sent(cluster, 0.05)
    # the AIMD's own increase passes 0.7 x 1.8 Mbit/s long after the last cluster
    controller.on_estimate(1_500_000, 0.05 + RESULT_TIMEOUT + 0.5)
    assert not controller.pending and controller.state == "complete"


def test_controller_stops_at_the_maximum_and_probes_a_raised_one() -> None:
    controller = ProbeController()
    controller.start(START_BITRATE, 1_000_000, now=0.0)
    assert [c.bitrate for c in controller.pending] == [900_000, 1_000_000]
    assert controller.state == "complete"  # nothing to find above the maximum
    for cluster in list(controller.pending):
        controller.cluster_sent(cluster, 0.05)
    controller.on_max_bitrate(2_500_000, estimate=1_000_000, now=1.0)
    assert [c.bitrate for c in controller.pending] == [2_500_000]
    controller.cluster_sent(controller.pending[0], 1.02)
    controller.on_max_bitrate(3_000_000, estimate=3_000_000, now=2.0)  # already there
    assert not controller.pending


def test_clusters_not_sent_yet_follow_a_lowered_maximum() -> None:
    controller = ProbeController()
    controller.start(START_BITRATE, 10_000_000, now=0.0)
    controller.on_max_bitrate(1_000_000, estimate=START_BITRATE, now=0.01)
    assert [c.bitrate for c in controller.pending] == [900_000, 1_000_000]
    assert controller.pending[1].min_bytes == int(1_000_000 * 0.015 / 8)


class Link:
    """A sender's transport through a FIFO bottleneck (``link_bps``, 20 ms one way),
    on a virtual clock: media at the estimate in 1200-byte packets every 5 ms, probe
    clusters sent as ``RtcPeer._send_probe`` does (5 ms bursts of padding packets),
    transport-cc feedback every 100 ms."""

    def __init__(self, link_bps: float, max_bitrate: int, *, media: bool = True) -> None:
        self.now = 0.0
        self.media = media
        self.link_bps = link_bps
        self.congestion = TransportCongestion(clock=lambda: self.now)
        self.congestion.extension_id = 3
        self.congestion.can_probe = True
        self.congestion.configure(max_bitrate)
        self.extensions = HeaderExtensionsMap()
        self.extensions.configure(
            RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(id=3, uri=TWCC_URI)])
        )
        self.recorder = FeedbackRecorder()
        self.queue_free = 0.0
        self.in_flight: list[tuple[float, int]] = []
        self.media_budget = 0.0
        self.estimates: list[tuple[float, int]] = []

    def _send(self, size: int) -> None:
        packet = RtpPacket(payload_type=96, ssrc=7, payload=b"\x00" * (size - 20))
        packet.extensions.transport_sequence_number = 0
        data = self.congestion.stamp(packet.serialize(self.extensions))
        sequence = RtpPacket.parse(data, self.extensions).extensions.transport_sequence_number
        assert sequence is not None
        self.queue_free = max(self.queue_free, self.now) + len(data) * 8 / self.link_bps
        self.in_flight.append((self.queue_free + 0.02, sequence))

    def run(self, seconds: float) -> None:
        step = 0.001
        probe: ProbeCluster | None = None
        next_burst = next_feedback = first_sent = 0.0
        end = self.now + seconds
        while self.now < end:
            congestion = self.congestion
            if probe is None and (probe := congestion.probe_due()) is not None:
                congestion.begin_probe(probe, 285)
                next_burst = first_sent = self.now
            if probe is not None and self.now >= next_burst:
                due = probe.bytes_due(self.now)
                while due > 50 or probe.sent_packets == 0:  # as RtcPeer._send_probe
                    size = 30 + max(100, min(due - 30, 255))  # header and padding
                    self._send(size)
                    due -= size
                if probe.complete and self.now - first_sent >= PROBE_DURATION:
                    congestion.end_probe(probe)
                    probe = None
                next_burst = self.now + 0.005
            if self.media:
                self.media_budget += (congestion.estimate or 0) * step / 8
            if self.media_budget >= 1200 and round(self.now * 1000) % 5 == 0:
                while self.media_budget >= 1200:
                    self._send(1200)
                    self.media_budget -= 1200
            if self.now >= next_feedback:
                next_feedback = self.now + 0.1
                arrived = [p for p in self.in_flight if p[0] <= self.now]
                self.in_flight = [p for p in self.in_flight if p[0] > self.now]
                for arrival, sequence in arrived:
                    self.recorder.record(sequence, int(arrival * 1e6), 7)
                for feedback in self.recorder.build(1):
                    congestion.on_rtcp(feedback)
                self.estimates.append((round(self.now, 3), congestion.estimate or 0))
            self.now += step


def test_a_transport_that_can_probe_starts_at_300_kbps_and_probes_up_to_its_maximum() -> None:
    link = Link(link_bps=50_000_000, max_bitrate=2_500_000)
    assert link.congestion.estimate == START_BITRATE  # the encoders start there
    link.run(1.0)
    reached = [t for t, estimate in link.estimates if estimate >= 0.9 * 2_500_000]
    assert reached and reached[0] < 0.5, link.estimates  # three clusters, three feedbacks
    assert link.congestion.prober.state == "complete"


@pytest.mark.parametrize("link_bps", [600_000, 1_200_000])
def test_probing_finds_a_narrow_link_without_flooding_it(link_bps: int) -> None:
    link = Link(link_bps=link_bps, max_bitrate=5_000_000)
    link.run(2.0)
    after = [estimate for t, estimate in link.estimates if t >= 0.5]
    assert all(0.75 * link_bps <= e <= 1.1 * link_bps for e in after), link.estimates
    assert max(e for _, e in link.estimates) <= 1.1 * link_bps, link.estimates


def test_without_padding_the_transport_keeps_starting_at_its_maximum() -> None:
    congestion = TransportCongestion(clock=lambda: 1.0)
    congestion.extension_id = 3
    congestion.configure(2_000_000)  # can_probe False: no video sender with RTX
    assert congestion.estimate is None and congestion.probe_due() is None


@pytest.mark.parametrize("bitrate", [900_000, 1_800_000, 7_200_000])
def test_a_cluster_sent_in_bursts_measures_its_own_rate_on_a_fast_link(bitrate: int) -> None:
    """The peer sends a cluster in 5 ms bursts; on a link far faster than the probe
    the estimate is the send rate, which must be the cluster's (not a packet short:
    a probe that reads low ends probing early, below the link's rate). No media here:
    media sent meanwhile joins the cluster, as in libwebrtc."""
    link = Link(link_bps=1e9, max_bitrate=10_000_000, media=False)
    congestion = link.congestion
    congestion.prober.pending.clear()
    congestion.prober.pending.append(ProbeCluster(99, bitrate, int(bitrate * PROBE_DURATION / 8)))
    measured: list[float] = []
    original = congestion.estimator.on_probe_result
    congestion.estimator.on_probe_result = lambda rate, now=None: measured.append(rate)  # type: ignore[method-assign]
    try:
        link.run(0.3)
    finally:
        congestion.estimator.on_probe_result = original  # type: ignore[method-assign]
    assert measured and measured[-1] == pytest.approx(bitrate, rel=0.08), measured


def test_a_probe_that_reads_low_lowers_the_estimate_only_to_85_percent_of_the_acked_rate() -> None:
    """A receiver that stalls through a cluster makes it read far under the link (seen:
    163 kbit/s on loopback in a loaded run); libwebrtc floors such a result at 0.85 x the
    acknowledged rate (or the current estimate, if lower)."""
    link = Link(link_bps=50_000_000, max_bitrate=2_500_000)
    link.run(1.0)
    congestion = link.congestion
    before = congestion.estimate
    assert before is not None and before >= 2_000_000
    congestion._probe_result = lambda results: 163_000.0  # type: ignore[method-assign]
    link.run(0.5)  # every feedback now carries that low probe result
    acked = congestion.estimator.acked_bitrate
    assert acked is not None and acked > 1_000_000
    assert congestion.estimate is not None
    assert congestion.estimate >= 0.85 * acked * 0.95, (congestion.estimate, acked)
