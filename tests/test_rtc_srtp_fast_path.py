"""``RawDtlsTransport.receive_srtp``: SRTP handled as the datagram arrives.

The end-to-end path (real DTLS/SRTP between two transports) is covered by
``test_rtc_seam.py`` and the media tests; these check the parts they rarely
reach: the aiortc members it relies on, and the order of packets when a
handler waits (later packets queue behind it).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pylibsrtp
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport

from sora_async._aiortc_seam import RawDtlsTransport


class _PlainSession:
    """Stands in for pylibsrtp's Session: 'unprotects' by returning the data."""

    def unprotect(self, data: bytes) -> bytes:
        if data.endswith(b"bad"):
            raise pylibsrtp.Error("authentication failed")
        return data

    def unprotect_rtcp(self, data: bytes) -> bytes:
        return data


def _rtp(seq: int, tail: bytes = b"") -> bytes:
    return bytes([0x80, 96]) + seq.to_bytes(2, "big") + bytes(8) + tail


def _rtcp() -> bytes:
    return bytes([0x80, 200, 0, 1]) + bytes(4)


def _transport() -> RawDtlsTransport:
    ice = RTCIceTransport(RTCIceGatherer(iceServers=[]))
    dtls = RawDtlsTransport(ice, [RTCCertificate.generateCertificate()])
    return dtls


def test_the_aiortc_members_receive_srtp_uses_exist() -> None:
    source = inspect.getsource(RTCDtlsTransport.__init__)
    for name in ("_rx_srtp", "_state", "__rx_packets", "__rx_bytes"):
        assert f"self.{name}" in source, name
    assert DtlsState.CONNECTED is not None
    assert "_rx_srtp.unprotect(" in inspect.getsource(RTCDtlsTransport._recv_next)


async def test_receive_srtp_keeps_the_order_when_a_handler_waits() -> None:
    dtls = _transport()
    assert not dtls.receive_srtp(_rtp(1))  # SRTP not set up: aiortc's path
    dtls._rx_srtp = _PlainSession()
    assert not dtls.receive_srtp(_rtp(1))  # not connected yet
    dtls._state = DtlsState.CONNECTED
    seen: list[Any] = []

    async def on_rtp(data: bytes, arrival_ms: int) -> None:
        seq = int.from_bytes(data[2:4], "big")
        if seq == 2:
            await asyncio.sleep(0.02)  # e.g. a NACK that waited to be sent
        seen.append(seq)

    async def on_rtcp(data: bytes) -> None:
        seen.append("rtcp")

    dtls.rtp_handler = on_rtp
    dtls.rtcp_handler = on_rtcp
    before = dtls.counters["packetsReceived"]
    assert dtls.receive_srtp(_rtp(1))
    assert seen == [1]  # handled on the caller's stack
    assert dtls.receive_srtp(_rtp(2))  # waits: finished in a task
    assert dtls.receive_srtp(_rtp(3))
    assert dtls.receive_srtp(_rtcp())
    assert dtls.receive_srtp(_rtp(4, b"bad"))  # dropped, as aiortc drops it
    assert dtls.receive_srtp(_rtp(5))
    assert seen == [1]
    for _ in range(100):
        if len(seen) == 5:
            break
        await asyncio.sleep(0.01)
    assert seen == [1, 2, 3, "rtcp", 5]
    assert dtls.counters["packetsReceived"] == before + 6
    assert dtls._backlog is None
    assert dtls.receive_srtp(_rtp(6))
    assert seen[-1] == 6


async def test_receive_srtp_survives_a_failing_handler() -> None:
    dtls = _transport()
    dtls._rx_srtp = _PlainSession()
    dtls._state = DtlsState.CONNECTED
    seen: list[int] = []

    async def on_rtp(data: bytes, arrival_ms: int) -> None:
        seq = int.from_bytes(data[2:4], "big")
        if seq == 1:
            raise RuntimeError("boom")
        if seq == 2:
            await asyncio.sleep(0)
            raise RuntimeError("boom after waiting")
        seen.append(seq)

    dtls.rtp_handler = on_rtp
    for seq in (1, 2, 3):
        assert dtls.receive_srtp(_rtp(seq))
    for _ in range(50):
        if seen:
            break
        await asyncio.sleep(0.01)
    assert seen == [3]


async def test_receive_srtp_stamps_arrival_on_aiortcs_clock() -> None:
    """The arrival time handed to the RTP handler is aiortc's ``clock.current_ms()``
    (ms since the NTP epoch), read more cheaply."""
    from aiortc import clock

    dtls = _transport()
    dtls._rx_srtp = _PlainSession()
    dtls._state = DtlsState.CONNECTED
    arrivals: list[int] = []

    async def on_rtp(data: bytes, arrival_ms: int) -> None:
        arrivals.append(arrival_ms)

    dtls.rtp_handler = on_rtp
    before = clock.current_ms()
    assert dtls.receive_srtp(_rtp(1))
    after = clock.current_ms()
    assert len(arrivals) == 1 and before - 1 <= arrivals[0] <= after + 1
