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
from typing import Any

import pytest

from sora_async import Connection
from sora_async.devserver import DevServer
from tests.rtc_support import PatternTrack, of_type, wait_stats

TWCC = "transport-wide-cc-extensions-01"


def _sent_answers(conn: Connection) -> list[str]:
    answers: list[str] = []

    def on_signaling(transport: Any, direction: Any, message: Any) -> None:
        if isinstance(message, dict) and message.get("type") == "answer":
            answers.append(str(message.get("sdp")))

    conn.on("signaling_message", on_signaling)
    return answers


async def test_sora_async_sender_runs_on_transport_cc_feedback() -> None:
    async with DevServer(transport_cc=True) as server:
        sender = Connection(
            server.signaling_url,
            "sendonly",
            "twcc",
            video_codec_type="VP8",
            audio=False,
            video_source=PatternTrack(320, 240, fps=15),
        )
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


async def test_without_transport_cc_remb_and_loss_drive_the_estimate(
    sora_devserver: DevServer,
) -> None:
    sender = Connection(
        sora_devserver.signaling_url,
        "sendonly",
        "remb",
        video_codec_type="VP8",
        audio=False,
        video_source=PatternTrack(320, 240, fps=15),
    )
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
