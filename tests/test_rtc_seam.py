"""The seam to aiortc's internals (``sora_async._aiortc_seam``) and the transport on it.

If aiortc moves a private member the engine relies on, the first test names
it; the second runs the real thing: an offering and an answering
``BundleTransport`` on loopback exchanging raw SRTP/SRTCP and opening a
DataChannel the offerer created (as Sora does).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

import aioice
import aioice.ice
import aiortc
from aiortc.rtcdatachannel import RTCDataChannel, RTCDataChannelParameters
from aiortc.rtcdtlstransport import RTCDtlsParameters, RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceParameters, RTCIceTransport
from aiortc.rtp import RtcpPsfbPacket, RtpPacket

from sora_async import _aiortc_seam as seam
from sora_async.rtc.transport import BundleTransport


def test_the_private_members_the_seam_uses_exist_in_the_pinned_aiortc() -> None:
    assert seam.aiortc_version() == seam.PINNED_AIORTC, aiortc.__version__
    for name in ("_handle_rtp_data", "_handle_rtcp_data", "_send_rtp", "_set_role"):
        assert inspect.iscoroutinefunction(getattr(RTCDtlsTransport, name)) or callable(
            getattr(RTCDtlsTransport, name)
        ), name
    dtls = RTCDtlsTransport.__init__
    source = inspect.getsource(dtls)
    for counter in ("__tx_packets", "__rx_packets", "__tx_bytes", "__rx_bytes", "_role"):
        assert f"self.{counter}" in source, counter
    gatherer = RTCIceGatherer(iceServers=[])
    ice = RTCIceTransport(gatherer)
    assert isinstance(ice._connection, aioice.Connection)
    assert hasattr(gatherer, "_RTCIceGatherer__setState")
    assert hasattr(ice, "_role_set")
    connection = ice._connection
    for name in (
        "_local_candidates",
        "_local_candidates_end",
        "_nominated",
        "_protocols",
        "ice_controlling",
    ):
        assert hasattr(connection, name), name
    assert callable(aioice.ice.StunProtocol.datagram_received)
    assert inspect.iscoroutinefunction(connection.get_component_candidates)


async def test_offerer_and_answerer_exchange_srtp_and_open_a_datachannel() -> None:
    states: dict[str, list[str]] = {"offerer": [], "answerer": []}
    changed = asyncio.Event()

    def recorder(name: str) -> Callable[[str], None]:
        def record(state: str) -> None:
            states[name].append(state)
            changed.set()

        return record

    offerer = BundleTransport(
        ice_addresses=["127.0.0.1"], on_state=recorder("offerer"), ice_controlling=True
    )
    answerer = BundleTransport(
        ice_addresses=["127.0.0.1"], on_state=recorder("answerer"), ice_controlling=False
    )
    received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def on_rtp(data: bytes, arrival_ms: int) -> None:
        received.put_nowait(("rtp", data))

    async def on_rtcp(data: bytes) -> None:
        received.put_nowait(("rtcp", data))

    answerer.dtls.rtp_handler = on_rtp
    answerer.dtls.rtcp_handler = on_rtcp
    channels: asyncio.Queue[RTCDataChannel] = asyncio.Queue()
    try:
        async with asyncio.timeout(20):
            await asyncio.gather(offerer.gather(), answerer.gather())
            assert [c.ip for c in answerer.local_candidates] == ["127.0.0.1"]

            def remote(t: BundleTransport) -> tuple[RTCIceParameters, RTCDtlsParameters]:
                return t.local_ice, RTCDtlsParameters(fingerprints=t.local_dtls.fingerprints)

            offerer.start(
                *remote(answerer),
                answerer.local_candidates,
                dtls_role="server",  # the answer said a=setup:active
                sctp_port=5000,
                sctp_max_message_size=262144,
                candidates_complete=True,
            )
            answerer.start(
                *remote(offerer),
                offerer.local_candidates,
                dtls_role="client",
                sctp_port=5000,
                sctp_max_message_size=262144,
                candidates_complete=True,
            )
            assert answerer.sctp is not None and offerer.sctp is not None
            answerer.sctp.on("datachannel", channels.put_nowait)
            while answerer.state != "connected" or offerer.state != "connected":
                changed.clear()
                await changed.wait()
            assert answerer.ice_role == "controlled" and offerer.ice_role == "controlling"
            assert answerer.dtls.role == "client" and offerer.dtls.role == "server"

            packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=2, ssrc=3)
            packet.payload = b"media"
            assert await offerer.send_rtp(packet.serialize())
            pli = RtcpPsfbPacket(fmt=1, ssrc=4, media_ssrc=3)
            assert await offerer.send_rtp(bytes(pli))
            kind, data = await received.get()
            assert kind == "rtp" and RtpPacket.parse(data).payload == b"media"
            kind, data = await received.get()
            assert (kind, data) == ("rtcp", bytes(pli))

            RTCDataChannel(offerer.sctp, RTCDataChannelParameters(label="signaling"))
            channel = await channels.get()
            assert channel.label == "signaling" and channel.readyState == "open"

            # Every datagram is seen first (liveness): STUN, DTLS and SRTP alike.
            assert time.monotonic() - answerer.last_activity < 1.0
            pair = answerer.selected_pair()
            assert pair is not None and pair.remote["address"] == "127.0.0.1"
            counters = answerer.counters
            assert counters["packetsReceived"] >= 2 and counters["bytesSent"] > 0
    finally:
        async with asyncio.timeout(10):
            await offerer.stop()
            await answerer.stop()
    assert states["answerer"] == ["connecting", "connected", "closed"]
    assert states["offerer"][-1] == "closed"
