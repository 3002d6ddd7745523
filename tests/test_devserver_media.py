"""The dev server's media plane (``ServerPeer``) with plain aiortc peers as clients.

No signaling here: offers and answers are passed by hand, so these tests pin
down the SFU itself: forwarding H.264 (which the official client cannot encode
on this machine), key frames for late subscribers, port-0 retirement and mid
reuse, and clean teardown.
"""

from __future__ import annotations

import asyncio
import fractions
import os
import re

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from sora_async.devserver.peer import Publication, ServerPeer

WIDTH, HEIGHT = 320, 240


class Pattern(MediaStreamTrack):
    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.index = 0

    async def recv(self) -> av.VideoFrame:
        await asyncio.sleep(1 / 30)
        image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        image[:, (self.index * 5) % WIDTH :][:, :16] = 255
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = self.index * 3000, fractions.Fraction(1, 90000)
        self.index += 1
        return frame


async def connect_client(
    server: ServerPeer, subscriptions: list[Publication], *, send: bool
) -> tuple[RTCPeerConnection, list[MediaStreamTrack]]:
    """Offer from ``server``, answer from a fresh aiortc peer, wait for DTLS."""
    client = RTCPeerConnection()
    tracks: list[MediaStreamTrack] = []
    client.on("track", tracks.append)
    offer = await server.create_offer(subscriptions)
    await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    if send:
        video_mid = server.mids["video"]
        transceiver = next(t for t in client.getTransceivers() if t.mid == video_mid)
        transceiver.sender.replaceTrack(Pattern())
        transceiver.direction = "sendonly"
    await client.setLocalDescription(await client.createAnswer())
    connected = asyncio.Event()
    server.on("connectionstatechange", lambda s: s == "connected" and connected.set())
    await server.set_answer(client.localDescription.sdp)
    async with asyncio.timeout(15):
        await connected.wait()
    return client, tracks


async def renegotiate(
    server: ServerPeer, client: RTCPeerConnection, subscriptions: list[Publication]
) -> str:
    offer = await server.create_reoffer(subscriptions)
    await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    await client.setLocalDescription(await client.createAnswer())
    await server.set_reanswer(client.localDescription.sdp)
    return offer


def media_sections(sdp: str) -> dict[str, str]:
    """m-sections of an SDP by mid."""
    sections = {}
    for chunk in sdp.split("m=")[1:]:
        mid = re.search(r"a=mid:(\S+)", chunk)
        assert mid is not None
        sections[mid.group(1)] = "m=" + chunk
    return sections


async def first_video_frame(track: MediaStreamTrack) -> av.VideoFrame:
    async with asyncio.timeout(10):
        while True:
            frame = await track.recv()
            if isinstance(frame, av.VideoFrame):
                return frame


def _server(connection_id: str, *, send: bool, codec: str = "H264") -> ServerPeer:
    return ServerPeer(
        connection_id=connection_id,
        send_audio=False,
        send_video=send,
        recv_audio=not send,
        recv_video=not send,
        video_codec=codec,
    )


async def test_h264_is_forwarded_to_a_late_subscriber_with_a_key_frame() -> None:
    publisher_side = _server("P" * 26, send=True)
    subscriber_side = _server("S" * 26, send=False)
    publisher, _ = await connect_client(publisher_side, [], send=True)
    try:
        # the subscriber joins while the publisher is already sending: the
        # server must ask for a key frame or the subscriber never decodes
        assert [p.codec for p in publisher_side.publications] == ["H264"]
        subscriber, tracks = await connect_client(
            subscriber_side, publisher_side.publications, send=False
        )
        try:
            assert [t.kind for t in tracks] == ["video"]
            frame = await first_video_frame(tracks[0])
            assert (frame.width, frame.height) == (WIDTH, HEIGHT)
            stats = {s["type"]: s for s in await subscriber_side.get_stats()}
            assert stats["outbound-rtp"]["mimeType"] == "video/H264"
            assert stats["outbound-rtp"]["packetsSent"] > 0
            assert stats["outbound-rtp"]["senderConnectionId"] == "P" * 26
        finally:
            await subscriber.close()
    finally:
        await publisher.close()
        await publisher_side.close()
        await subscriber_side.close()


async def test_retired_streams_get_port_zero_and_their_mid_is_reused() -> None:
    first_side, second_side = _server("A" * 26, send=True), _server("B" * 26, send=True)
    subscriber_side = _server("S" * 26, send=False)
    first, _ = await connect_client(first_side, [], send=True)
    second, _ = await connect_client(second_side, [], send=True)
    subscriber, tracks = await connect_client(
        subscriber_side, first_side.publications + second_side.publications, send=False
    )
    try:
        assert len(tracks) == 2
        # the first publisher leaves: its m-line (mid 0, the BUNDLE tag) goes
        # inactive, the second's stays
        await first.close()
        await first_side.close()
        offer = await renegotiate(subscriber_side, subscriber, second_side.publications)
        sections = media_sections(offer)
        assert sections["0"].startswith("m=video 9 ") and "a=inactive" in sections["0"]
        assert "a=sendonly" in sections["1"]
        # a third publisher takes the retired slot, keeping its mid
        third_side = _server("C" * 26, send=True)
        third, _ = await connect_client(third_side, [], send=True)
        try:
            offer = await renegotiate(
                subscriber_side, subscriber, second_side.publications + third_side.publications
            )
            sections = media_sections(offer)
            assert list(sections) == ["0", "1"]
            assert f"a=msid:{'C' * 26} " in sections["0"]
            # aiortc (unlike libwebrtc) cannot receive on a recycled mid, so the
            # server's own counters prove the forwarding here; the official
            # client decodes it in tests/test_devserver_official.py.
            async with asyncio.timeout(10):
                while True:
                    stats = await subscriber_side.get_stats()
                    recycled = [s for s in stats if s.get("mid") == "0"]
                    if recycled and recycled[0]["packetsSent"] > 10:
                        break
                    await asyncio.sleep(0.1)
            assert recycled[0]["senderConnectionId"] == "C" * 26
        finally:
            await third.close()
            await third_side.close()
    finally:
        await subscriber.close()
        await second.close()
        await subscriber_side.close()
        await second_side.close()


async def test_offers_that_are_never_answered_leak_nothing() -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    baseline_fds, baseline_tasks = open_fds(), len(asyncio.all_tasks())
    for index in range(30):
        peer = _server(f"{index:026d}", send=True)
        await peer.create_offer([])
        await peer.close()
    assert open_fds() <= baseline_fds + 2
    assert len(asyncio.all_tasks()) <= baseline_tasks


@pytest.mark.parametrize(
    ("codec", "rtpmap"),
    [
        ("VP8", "a=rtpmap:96 VP8/90000"),
        ("VP9", "a=rtpmap:98 VP9/90000"),
        ("AV1", "a=rtpmap:45 AV1/90000"),
        ("H264", "a=rtpmap:102 H264/90000"),
        ("H265", "a=rtpmap:104 H265/90000"),
    ],
)
async def test_publisher_offer_names_only_the_requested_codec(codec: str, rtpmap: str) -> None:
    peer = _server("X" * 26, send=True, codec=codec)
    try:
        offer = await peer.create_offer([])
    finally:
        await peer.close()
    video = offer[offer.index("m=video") :]
    assert rtpmap in video
    assert video.count("a=rtpmap:") == 2  # the codec and its RTX


def test_unknown_codecs_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported video codec"):
        _server("X" * 26, send=True, codec="MPEG2")
