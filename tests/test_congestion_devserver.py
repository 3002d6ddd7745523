"""transport-cc end to end through the dev server (``DevServer(transport_cc=True)``).

* ``sora_async`` as sender: the answer accepts transport-cc, packets carry the
  transport-wide sequence number, the dev server's feedback drives the estimate
  (``availableOutgoingBitrate``), the pacer spreads packets and the encoders follow.
* the official client (libwebrtc) as sender: the dev server's feedback (built by
  ``sora_async.rtc.twcc``) is what libwebrtc's send-side estimator runs on; its
  probing needs it to climb above its 300 kbps start.
* without transport-cc (the default) the answer has no transport-cc and REMB rules.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from sora_async import Connection
from sora_async.devserver import DevServer
from tests.rtc_support import PatternTrack, of_type, wait_stats

TWCC = "transport-wide-cc-extensions-01"


def _vp8_sender(
    url: str,
    channel: str,
    size: tuple[int, int] = (320, 240),
    fps: int = 15,
    video_bit_rate: int | None = None,
) -> Connection:
    """A sendonly VP8 connection without audio (320x240@15 unless told)."""
    return Connection(
        url,
        "sendonly",
        channel,
        video_codec_type="VP8",
        video_bit_rate=video_bit_rate,
        audio=False,
        video_source=PatternTrack(*size, fps=fps),
    )


def _sent_answers(conn: Connection) -> list[str]:
    answers: list[str] = []

    def on_signaling(transport: Any, direction: Any, message: Any) -> None:
        if isinstance(message, dict) and message.get("type") == "answer":
            answers.append(str(message.get("sdp")))

    conn.on("signaling_message", on_signaling)
    return answers


async def test_sora_async_sender_runs_on_transport_cc_feedback() -> None:
    async with DevServer(transport_cc=True) as server:
        sender = _vp8_sender(server.signaling_url, "twcc")
        answers = _sent_answers(sender)
        async with asyncio.timeout(30), sender:
            peer = sender._peer
            assert peer is not None
            await wait_stats(
                sender,
                lambda s: (
                    bool(peer.congestion.feedback_seen)
                    and any(o.get("bytesSent") for o in of_type(s, "outbound-rtp"))
                ),
            )
            await asyncio.sleep(2.0)
            stats = await sender.get_stats()
            (pair,) = [p for p in of_type(stats, "candidate-pair") if p.get("nominated")] or [
                p for p in of_type(stats, "candidate-pair")
            ][:1]
            available = pair.get("availableOutgoingBitrate")
            assert available and available > 100_000, pair
            (outbound,) = of_type(stats, "outbound-rtp", "video")
            assert 0 < outbound["targetBitrate"] <= available
            assert outbound["qualityLimitationReason"] in {"none", "bandwidth", "cpu"}
            assert set(outbound["qualityLimitationDurations"]) >= {"none", "bandwidth", "cpu"}
            # loopback: no overuse, no loss
            assert peer.congestion.estimator.loss_fraction < 0.1
            assert peer.congestion.pacer.packets > 0
    assert answers and any(TWCC in line for line in answers[0].splitlines())
    assert any(line.endswith(" transport-cc") for line in answers[0].splitlines())


async def test_sora_async_sender_probes_from_300_kbps_to_its_maximum() -> None:
    """libwebrtc's start (``sora_async.rtc.probing``): the estimate starts at 300 kbps,
    the first video packets are followed by probe clusters of RTX padding, and the
    dev server's feedback on them takes the estimate to the senders' maximum within
    a few round trips of feedback (the official client: within about a second)."""
    async with DevServer(transport_cc=True) as server:
        sender = _vp8_sender(server.signaling_url, "probe", (640, 360), 30, 2000)
        async with asyncio.timeout(30), sender:
            peer = sender._peer
            assert peer is not None
            congestion = peer.congestion
            assert congestion.can_probe and congestion.estimator.start_bitrate == 300_000
            started = asyncio.get_running_loop().time()
            estimates: list[tuple[float, int | None]] = []
            while (congestion.estimate or 0) < 0.9 * 2_000_000:
                estimates.append((asyncio.get_running_loop().time() - started, congestion.estimate))
                assert len(estimates) < 100, estimates  # 5 s
                await asyncio.sleep(0.05)
            assert estimates[0][1] is not None and estimates[0][1] <= 300_000, estimates
            # (a further cluster may still be on its way: the estimate can reach 90 %
            # of the maximum on the 1.8 Mbit/s cluster's result)
            assert congestion.probe_bytes_sent > 0
            stats = await sender.get_stats()
            (outbound,) = of_type(stats, "outbound-rtp", "video")
            assert outbound["targetBitrate"] >= 0.9 * 2_000_000
            assert congestion.estimator.loss_fraction < 0.1


async def test_without_transport_cc_remb_and_loss_drive_the_estimate(
    sora_devserver: DevServer,
) -> None:
    sender = _vp8_sender(sora_devserver.signaling_url, "remb")
    answers = _sent_answers(sender)
    async with asyncio.timeout(30), sender:
        peer = sender._peer
        assert peer is not None
        stats = await wait_stats(
            sender,
            lambda s: any(p.get("availableOutgoingBitrate") for p in of_type(s, "candidate-pair")),
        )
        assert not peer.congestion.feedback_seen
        assert peer.congestion.estimator.remb is not None
        (outbound,) = of_type(stats, "outbound-rtp", "video")
        assert outbound["targetBitrate"] > 0
    assert answers and not any(TWCC in line for line in answers[0].splitlines())


@pytest.mark.official
async def test_official_sender_estimates_on_dev_server_transport_cc_feedback(
    official_client: Any,
) -> None:
    async with DevServer(transport_cc=True) as server:
        async with official_client(
            signaling_urls=[server.signaling_url],
            role="sendonly",
            channel_id="twcc-official",
            name="official twcc sender",
            video_codec_type="VP8",
            audio=False,
            fake_video={"width": 640, "height": 360, "fps": 15},
        ) as sender:
            await sender.connect()
            answer = sender.events("signaling_message")
            sdp = next(e["message"]["sdp"] for e in answer if e["message"].get("type") == "answer")
            assert TWCC in sdp and "transport-cc" in sdp
            best = 0.0
            async with asyncio.timeout(20):
                while best <= 500_000:
                    await asyncio.sleep(1.0)
                    stats = await sender.get_stats()
                    for pair in stats:
                        if pair.get("type") == "candidate-pair":
                            best = max(best, float(pair.get("availableOutgoingBitrate") or 0))
            # libwebrtc starts at 300 kbps; probing past it needs our feedback
            assert best > 500_000
            await sender.disconnect()


# --- receive side: the dev server stamps what it forwards, subscribers feed back ------


def _subscriber_downstream(server: DevServer) -> Any:
    """The DownstreamCongestion of the one session the server forwards media to."""
    for session in server.registry.sessions.values():
        peer = session.peer
        if peer is not None and peer._subscriptions and peer.downstream is not None:
            return peer.downstream
    return None


async def _wait_feedback(server: DevServer, reports: int, within: float = 20.0) -> Any:
    async with asyncio.timeout(within):
        while True:
            downstream = _subscriber_downstream(server)
            if downstream is not None and downstream.packets_acked >= reports:
                return downstream
            await asyncio.sleep(0.1)


def _check_arrival_deltas(downstream: Any) -> None:
    """The feedback's arrival times against the server's send times, on loopback:
    the same spacing (a wrong delta unit or reference time would scale or shift it)."""
    acked = [r for r in downstream.results if r.arrival is not None]
    assert len(acked) >= 100, len(acked)
    assert downstream.packets_lost <= 0.02 * downstream.packets_acked
    send_span = acked[-1].send_time - acked[0].send_time
    arrival_span = acked[-1].arrival - acked[0].arrival
    assert send_span > 1.0, send_span
    assert abs(arrival_span - send_span) < 0.05 + 0.02 * send_span, (send_span, arrival_span)
    skews = sorted(
        abs((b.arrival - a.arrival) - (b.send_time - a.send_time))
        for a, b in itertools.pairwise(acked)
    )
    print(
        f"acked {len(acked)} lost {downstream.packets_lost} feedback {downstream.feedback_packets}"
        f" spans {send_span:.3f}/{arrival_span:.3f} s, median skew {skews[len(skews) // 2]:.5f} s"
    )
    assert skews[len(skews) // 2] < 0.002, skews[len(skews) // 2]  # median under 2 ms
    # the transport-wide numbers the feedback named are the ones stamped, in order
    sequences = [r.sequence for r in acked]
    assert all((b - a) & 0xFFFF < 0x8000 for a, b in itertools.pairwise(sequences))


async def test_dev_server_stamps_forwarded_packets_and_reads_sora_async_feedback() -> None:
    async with DevServer(transport_cc=True) as server:
        sender = _vp8_sender(server.signaling_url, "twcc-down")
        receiver = Connection(server.signaling_url, "recvonly", "twcc-down", audio=False)
        answers = _sent_answers(receiver)
        async with asyncio.timeout(60), sender, receiver:
            downstream = await _wait_feedback(server, 100)
            assert downstream.extension_id is not None and downstream.feedback_packets > 3
            assert receiver._peer is not None
            assert receiver._peer.congestion.extension_id == downstream.extension_id
            _check_arrival_deltas(downstream)
            assert downstream.estimate is not None and downstream.estimate > 100_000
            stats = await _subscriber_stats(server)
            (transport,) = [s for s in stats if s["type"] == "transport"]
            assert transport["transportCcFeedbackReceived"] == downstream.feedback_packets
    # the recvonly's answer kept the extension and transport-cc feedback
    assert answers and any(TWCC in line for line in answers[0].splitlines())


async def _subscriber_stats(server: DevServer) -> list[dict[str, Any]]:
    for session in server.registry.sessions.values():
        peer = session.peer
        if peer is not None and peer._subscriptions:
            return await peer.get_stats()
    return []


@pytest.mark.official
async def test_dev_server_reads_the_official_receivers_transport_cc_feedback(
    official_client: Any,
) -> None:
    async with DevServer(transport_cc=True) as server:
        sender = Connection(
            server.signaling_url,
            "sendonly",
            "twcc-down-official",
            video_codec_type="VP8",
            audio=False,
            video_source=PatternTrack(320, 240, fps=15),
        )
        async with asyncio.timeout(90), sender:
            async with official_client(
                signaling_urls=[server.signaling_url],
                role="recvonly",
                channel_id="twcc-down-official",
                name="official twcc receiver",
                audio=False,
            ) as receiver:
                await receiver.connect()
                downstream = await _wait_feedback(server, 100, within=30)
                assert downstream.extension_id is not None
                _check_arrival_deltas(downstream)
                await receiver.disconnect()
