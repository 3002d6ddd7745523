"""The aiortc workarounds: rejecting m-sections aiortc cannot take, port-0
retirement, and fresh receivers for reused mids (``aiortc-notes.md`` A.8)."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack, VideoStreamTrack

from sora_async import _aiortc_seam as seam

SESSION = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "a=group:BUNDLE 0 1 2\r\na=msid-semantic: WMS *\r\n"
)
TRANSPORT = (
    "c=IN IP4 127.0.0.1\r\na=ice-ufrag:uf\r\na=ice-pwd:0123456789012345678901\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\na=rtcp-mux\r\n"
)
AUDIO = (
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" + TRANSPORT + "a=mid:0\r\na=sendonly\r\n"
    "a=msid:SENDER1 audio-track\r\na=rtpmap:111 opus/48000/2\r\na=ssrc:11 cname:x\r\n"
)
VP9 = (
    "m=video 9 UDP/TLS/RTP/SAVPF 98 99\r\n" + TRANSPORT + "a=mid:1\r\na=sendonly\r\n"
    "a=msid:SENDER1 video-track\r\na=rtpmap:98 VP9/90000\r\na=fmtp:98 profile-id=0\r\n"
    "a=rtcp-fb:98 nack\r\na=rtpmap:99 rtx/90000\r\na=fmtp:99 apt=98\r\n"
    "a=ssrc-group:FID 21 22\r\na=ssrc:21 cname:x\r\na=ssrc:22 cname:x\r\n"
)
# A retired section as a minimal Sora might send it: port 0, no transport attributes.
RETIRED = "m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=rtpmap:96 VP8/90000\r\na=inactive\r\n"


def lines_of(sdp: str, mid: str) -> list[str]:
    sections = re.split(r"\r\n(?=m=)", sdp)
    return next(s for s in sections if f"a=mid:{mid}\r\n" in s + "\r\n").split("\r\n")


def test_media_sections_read_port_mid_and_msid() -> None:
    sections = seam.media_sections(SESSION + AUDIO + VP9 + RETIRED)
    assert [(s.kind, s.port, s.mid) for s in sections] == [
        ("audio", 9, "0"),
        ("video", 9, "1"),
        ("video", 0, "2"),
    ]
    assert sections[0].stream_id == "SENDER1" and sections[1].ssrcs == ("21", "22")
    assert sections[2].retired and not sections[0].retired


def test_a_section_without_a_common_codec_gets_a_placeholder_and_is_rejected() -> None:
    prepared = seam.prepare_offer(SESSION + AUDIO + VP9 + RETIRED)
    assert prepared.rejected_mids == {"1", "2"}
    video = lines_of(prepared.sdp, "1")
    assert video[0] == "m=video 9 UDP/TLS/RTP/SAVPF 98"
    assert "a=rtpmap:98 VP8/90000" in video and "a=inactive" in video
    assert not any(line.startswith(("a=ssrc", "a=msid", "a=fmtp", "a=sendonly")) for line in video)
    audio = lines_of(prepared.sdp, "0")
    assert "a=sendonly" in audio and "a=msid:SENDER1 audio-track" in audio  # untouched
    retired = lines_of(prepared.sdp, "2")
    # Transport attributes aiortc insists on are borrowed from a live section.
    assert any(line.startswith("a=ice-ufrag:") for line in retired)
    assert any(line.startswith("a=fingerprint:") for line in retired)
    assert "a=rtcp-mux" in retired and "a=rtpmap:96 VP8/90000" in retired


async def test_aiortc_applies_the_prepared_offer_and_the_answer_rejects_those_mids() -> None:
    pc = RTCPeerConnection()
    try:
        # Unprepared, aiortc fails the whole negotiation over the VP9 section.
        with pytest.raises(Exception, match=r"Failed to set remote video description"):
            await pc.setRemoteDescription(RTCSessionDescription(SESSION + AUDIO + VP9, "offer"))
        await pc.close()
        pc = RTCPeerConnection()
        offer = SESSION + AUDIO + VP9 + RETIRED
        prepared = seam.prepare_offer(offer)
        await pc.setRemoteDescription(RTCSessionDescription(prepared.sdp, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        answer = seam.finalize_answer(pc.localDescription.sdp, prepared.rejected_mids)
        assert lines_of(answer, "0")[0].startswith("m=audio ") and not lines_of(answer, "0")[
            0
        ].startswith("m=audio 0 ")
        for mid in ("1", "2"):
            section = lines_of(answer, mid)
            assert section[0].split()[1] == "0" and "a=inactive" in section
        assert "a=group:BUNDLE 0\r\n" in answer
    finally:
        await pc.close()


def test_finalize_answer_leaves_an_answer_without_rejections_alone() -> None:
    assert seam.finalize_answer("v=0\r\n", ()) == "v=0\r\n"


async def test_a_reused_mid_gets_a_fresh_receiver_and_a_new_track() -> None:
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    tracks: list[MediaStreamTrack] = []
    receiver.on("track", tracks.append)
    try:
        sender.addTransceiver(VideoStreamTrack(), direction="sendonly")
        await sender.setLocalDescription(await sender.createOffer())
        first = sender.localDescription.sdp

        async def apply(previous: str | None, offer: str) -> list[object]:
            ended = await seam.recycle_receivers(receiver, previous, offer)
            prepared = seam.prepare_offer(offer)
            await receiver.setRemoteDescription(RTCSessionDescription(prepared.sdp, "offer"))
            await receiver.setLocalDescription(await receiver.createAnswer())
            return list(ended)

        assert await apply(None, first) == []
        [old_track] = tracks
        old_receiver = receiver.getTransceivers()[0].receiver

        retired = re.sub(r"m=video \d+", "m=video 0", first)
        assert await apply(first, retired) == [old_track]
        assert old_track.readyState == "ended"

        [(stream_id, track_id)] = re.findall(r"a=msid:(\S+) (\S+)", first)
        reused = first.replace(stream_id, "NEW-STREAM").replace(track_id, "new-track")
        assert await apply(retired, reused) == []
        assert len(tracks) == 2 and tracks[1].id == "new-track"
        transceiver = receiver.getTransceivers()[0]
        assert transceiver.receiver is not old_receiver and transceiver.mid == "0"
        assert len(receiver.getTransceivers()) == 1  # same mid, same transceiver
    finally:
        await asyncio.gather(sender.close(), receiver.close())
