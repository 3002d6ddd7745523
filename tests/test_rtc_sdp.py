"""The engine's answers to Sora-shaped offers (``sora_async.rtc.sdp`` and ``RtcPeer``).

The offers below follow what Sora sends (``sora-protocol.md`` §3.1, §3.3, §6.2):
BUNDLE over every m-section, the client's own m-sections ``recvonly`` (named in
``offer["mid"]``), other connections' streams ``sendonly`` with
``a=msid:<connection id> <track id>`` and ``a=ssrc``, simulcast ``a=rid``/
``a=simulcast:recv`` with ``~`` for an inactive layer, port-0 m-sections for
streams that left, and mids coming back with a new stream.
"""

from __future__ import annotations

import asyncio
import fractions
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from aiortc.sdp import SessionDescription

from sora_async.codecs import CodecUnavailableError
from sora_async.enums import Role
from sora_async.hwaccel import VideoCodecImplementation as Impl
from sora_async.hwaccel import VideoCodecPreference, VideoCodecType
from sora_async.rtc import RemoteTrack, RtcOptions, RtcPeer
from sora_async.rtc.sdp import (
    EXT_RID,
    EXT_TRANSPORT_CC,
    answer_setup,
    negotiate,
    parse_offer,
)
from sora_async.rtc.transport import select_ice_servers

FINGERPRINT = "sha-256 " + ":".join(["AB"] * 32)
TRANSPORT = (
    "c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"
    "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n"
    "a=ice-ufrag:sora\r\na=ice-pwd:0123456789abcdef012345\r\na=ice-options:trickle\r\n"
    f"a=fingerprint:{FINGERPRINT}\r\na=setup:actpass\r\n"
)
SESSION = (
    "v=0\r\no=- 7000 {version} IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "a=group:BUNDLE {bundle}\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS *\r\n"
)
VIDEO_EXTMAPS = (
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n"
    f"a=extmap:3 {EXT_TRANSPORT_CC}\r\n"
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"
    "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n"
)
VIDEO_FEEDBACK = "goog-remb transport-cc ccm+fir nack nack+pli".split()


def video_codec(pt: int, name: str, fmtp: str, rtx: int | None) -> str:
    lines = f"a=rtpmap:{pt} {name}/90000\r\n"
    lines += "".join(f"a=rtcp-fb:{pt} {fb.replace('+', ' ')}\r\n" for fb in VIDEO_FEEDBACK)
    if fmtp:
        lines += f"a=fmtp:{pt} {fmtp}\r\n"
    if rtx is not None:
        lines += f"a=rtpmap:{rtx} rtx/90000\r\na=fmtp:{rtx} apt={pt}\r\n"
    return lines


def own_audio(mid: str) -> str:
    return (
        f"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{TRANSPORT}a=mid:{mid}\r\n"
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n"
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
        "a=recvonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n"
        "a=rtcp-fb:111 transport-cc\r\n"
        "a=fmtp:111 minptime=10;useinbandfec=1;stereo=1;usedtx=1\r\n"
    )


def own_video(mid: str, *, simulcast: str | None = None) -> str:
    text = (
        f"m=video 9 UDP/TLS/RTP/SAVPF 98 99\r\n{TRANSPORT}a=mid:{mid}\r\n{VIDEO_EXTMAPS}"
        "a=recvonly\r\na=rtcp-mux\r\na=rtcp-rsize\r\n" + video_codec(98, "VP9", "profile-id=0", 99)
    )
    if simulcast:
        rids = [layer.lstrip("~") for layer in simulcast.split(";")]
        text += "".join(f"a=rid:{rid} recv\r\n" for rid in rids)
        text += f"a=simulcast:recv {simulcast}\r\n"
    return text


def application(mid: str) -> str:
    return (
        f"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n{TRANSPORT}a=mid:{mid}\r\n"
        "a=sctp-port:5000\r\na=max-message-size:262144\r\n"
    )


def remote_stream(
    kind: str, mid: str, sender: str, ssrc: int, *, codec: str = "VP9", port: int = 9
) -> str:
    """Another connection's stream, as Sora offers it to a receiving client."""
    if kind == "audio":
        formats, codecs = "111", "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10\r\n"
    else:
        fmtp = {"VP9": "profile-id=0", "H265": "level-id=93;profile-id=1;tier-flag=0"}.get(
            codec, ""
        )
        formats, codecs = "98 99", video_codec(98, codec, fmtp, 99)
    text = f"m={kind} {port} UDP/TLS/RTP/SAVPF {formats}\r\n{TRANSPORT}a=mid:{mid}\r\n"
    if port == 0:
        return text + "a=inactive\r\na=rtcp-mux\r\n" + codecs
    text += "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    text += f"a=sendonly\r\na=msid:{sender} {sender}-{kind}\r\na=rtcp-mux\r\n" + codecs
    if kind == "video":
        text += f"a=ssrc-group:FID {ssrc} {ssrc + 1}\r\n"
        text += f"a=ssrc:{ssrc} cname:{sender}\r\na=ssrc:{ssrc + 1} cname:{sender}\r\n"
    else:
        text += f"a=ssrc:{ssrc} cname:{sender}\r\n"
    text += f"a=ssrc:{ssrc} msid:{sender} {sender}-{kind}\r\n"
    return text


def offer_sdp(*sections: str, version: int = 2) -> str:
    mids = [
        s.split("a=mid:")[1].split("\r\n")[0] for s in sections if not s.startswith("m=video 0")
    ]
    return SESSION.format(version=version, bundle=" ".join(mids)) + "".join(sections)


def sections_by_mid(sdp: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for chunk in sdp.split("\r\nm=")[1:]:
        lines = ("m=" + chunk).strip().split("\r\n")
        mid = next(line[6:] for line in lines if line.startswith("a=mid:"))
        out[mid] = lines
    return out


SENDER_A = "A" * 26
SENDER_B = "B" * 26
SENDER_C = "C" * 26


@pytest.fixture
async def peers() -> Any:
    created: list[RtcPeer] = []

    def make(**options: Any) -> RtcPeer:
        peer = RtcPeer(RtcOptions(ice_addresses=["127.0.0.1"], **options))
        created.append(peer)
        return peer

    yield make
    async with asyncio.timeout(10):
        for peer in created:
            await peer.close()


# -- the offer model ---------------------------------------------------------------


def test_parse_reads_what_aiortc_drops() -> None:
    offer = parse_offer(
        offer_sdp(
            own_video("1", simulcast="r0;r1;~r2"),
            remote_stream("video", "3", SENDER_A, 1000),
            remote_stream("video", "4", SENDER_B, 2000, port=0),
        )
    )
    video, remote, retired = offer.sections
    assert offer.bundle == ["1", "3"] and offer.extmap_allow_mixed
    assert [(r.rid, r.direction) for r in video.rids] == [
        ("r0", "recv"),
        ("r1", "recv"),
        ("r2", "recv"),
    ]
    assert [(layer.rid, layer.paused) for layer in video.simulcast["recv"]] == [
        ("r0", False),
        ("r1", False),
        ("r2", True),
    ]
    assert video.extmap_id(EXT_RID) == 10 and video.rtcp_rsize
    assert [c.name for c in video.codecs] == ["VP9", "rtx"] and video.codecs[0].fmtp == {
        "profile-id": "0"
    }
    assert "nack pli" in video.codecs[0].feedback and "transport-cc" in video.codecs[0].feedback
    assert remote.stream_id == SENDER_A and remote.track_id == f"{SENDER_A}-video"
    assert remote.media_ssrcs == [1000] and remote.rtx_ssrcs == {1000: 1001}
    assert retired.rejected and not remote.rejected
    assert video.candidates and video.end_of_candidates and video.setup == "actpass"


def test_answer_setup_follows_rfc_8842() -> None:
    assert answer_setup("actpass") == ("active", "client")
    assert answer_setup(None) == ("active", "client")
    assert answer_setup("active") == ("passive", "server")
    assert answer_setup("passive") == ("active", "client")


def test_a_section_without_a_usable_codec_is_rejected_alone() -> None:
    offer = parse_offer(
        offer_sdp(
            remote_stream("audio", "0", SENDER_A, 10),
            remote_stream("video", "1", SENDER_A, 20).replace("VP9/90000", "FOO/90000"),
        )
    )

    def check(codec: Any, kind: str, role: str) -> str | None:
        return {"opus": "OPUS", "VP9": "VP9"}.get(codec.name)

    audio = negotiate(offer.sections[0], can_send=False, can_receive=True, codec_check=check)
    video = negotiate(offer.sections[1], can_send=False, can_receive=True, codec_check=check)
    assert audio.accepted and audio.direction == "recvonly"
    assert not video.accepted and "FOO" in video.reason


# -- RtcPeer answers -----------------------------------------------------------------


async def test_sendrecv_answer_to_a_sora_offer(peers: Any) -> None:
    """Own audio, own simulcast video (r2 inactive), the DataChannel section, a
    remote stream, a retired stream, and an H.265 stream our preference cannot
    decode: the answer mirrors order and mids and rejects only what it must."""
    preference = VideoCodecPreference(
        [
            VideoCodecPreference.Codec(VideoCodecType.VP9, Impl.INTERNAL, Impl.INTERNAL),
            VideoCodecPreference.Codec(VideoCodecType.VP8, Impl.INTERNAL, Impl.INTERNAL),
        ]
    )
    peer = peers(
        role=Role.SENDRECV,
        audio_source=AudioStreamTrack(),
        video_source=VideoStreamTrack(),
        video_codec_preference=preference,
    )
    tracks: list[RemoteTrack] = []
    peer.on("track", tracks.append)
    sdp = offer_sdp(
        own_audio("0"),
        own_video("1", simulcast="r0;r1;~r2"),
        application("2"),
        remote_stream("video", "3", SENDER_A, 1000),
        remote_stream("video", "4", SENDER_B, 2000, port=0),
        remote_stream("video", "5", SENDER_C, 3000, codec="H265"),
    )
    message = {
        "type": "offer",
        "sdp": sdp,
        "mid": {"audio": "0", "video": "1"},
        "simulcast": True,
        "encodings": [
            {"rid": "r0", "active": True, "scaleResolutionDownBy": 4, "maxBitrate": 150_000},
            {"rid": "r1", "active": True, "scaleResolutionDownBy": 2, "maxBitrate": 500_000},
            {"rid": "r2", "active": False, "maxBitrate": 1_500_000},
        ],
        "config": {"iceServers": []},
    }
    async with asyncio.timeout(10):
        answer = await peer.apply_offer(sdp, message)
    sections = sections_by_mid(answer)
    assert list(sections) == ["0", "1", "2", "3", "4", "5"]
    assert "a=group:BUNDLE 0 1 2 3" in answer.split("\r\n")  # rejected mids leave it
    assert "a=extmap-allow-mixed" in answer

    audio = sections["0"]
    assert audio[0] == "m=audio 9 UDP/TLS/RTP/SAVPF 111"
    assert "a=sendonly" in audio and "a=setup:active" in audio
    assert any(line.startswith("a=candidate:") and " 127.0.0.1 " in line for line in audio)
    assert any(line.startswith("a=msid:") for line in audio)
    assert [line for line in audio if line.startswith("a=ssrc:")]
    assert "a=rtcp-fb:111 transport-cc" in audio  # send-side estimation (issue 6)

    video = sections["1"]
    assert video[0] == "m=video 9 UDP/TLS/RTP/SAVPF 98 99"
    assert "a=sendonly" in video and "a=simulcast:send r0;r1;~r2" in video
    assert [line for line in video if line.startswith("a=rid:")] == [
        "a=rid:r0 send",
        "a=rid:r1 send",
        "a=rid:r2 send",
    ]
    assert not any(line.startswith(("a=ssrc", "a=msid")) for line in video)
    assert f"a=extmap:10 {EXT_RID}" in video
    assert f"a=extmap:3 {EXT_TRANSPORT_CC}" in video
    assert "a=rtcp-fb:98 nack pli" in video and "a=rtcp-fb:98 goog-remb" in video
    assert "a=fmtp:99 apt=98" in video

    assert sections["2"][0] == "m=application 9 UDP/DTLS/SCTP webrtc-datachannel"
    assert "a=sctp-port:5000" in sections["2"] and "a=max-message-size:262144" in sections["2"]

    remote = sections["3"]
    assert "a=recvonly" in remote and not any(line.startswith("a=ssrc") for line in remote)
    assert sections["4"][0].startswith("m=video 0 ")
    assert sections["5"][0].startswith("m=video 0 ")  # H.265: no decoder in the preference
    assert "a=inactive" in sections["5"]

    # The simulcast sender has one layer per rid, r2 inactive.
    (video_sender,) = [s for s in peer.senders if s.kind == "video"]
    assert [(layer.rid, layer.active) for layer in video_sender.layers] == [
        ("r0", True),
        ("r1", True),
        ("r2", False),
    ]
    assert [layer.params.scale_resolution_down_by for layer in video_sender.layers][:2] == [4, 2]
    assert len({layer.ssrc for layer in video_sender.layers}) == 3

    assert [(t.kind, t.mid, t.stream_id) for t in tracks] == [("video", "3", SENDER_A)]
    assert tracks[0].id == f"{SENDER_A}-video"
    # The dev server reads answers with aiortc's parser: it must take ours.
    parsed = SessionDescription.parse(answer)
    assert [m.port for m in parsed.media] == [9, 9, 9, 9, 0, 0]


async def test_reoffers_retire_port_0_and_give_reused_mids_a_fresh_track(peers: Any) -> None:
    peer = peers(role=Role.RECVONLY)
    tracks: list[RemoteTrack] = []
    peer.on("track", tracks.append)
    message = {"type": "offer", "config": {"iceServers": []}}
    first = offer_sdp(
        remote_stream("audio", "0", SENDER_A, 100),
        remote_stream("video", "1", SENDER_A, 200),
    )
    async with asyncio.timeout(10):
        await peer.apply_offer(first, message)
        assert [(t.mid, t.stream_id) for t in tracks] == [("0", SENDER_A), ("1", SENDER_A)]
        a_audio, a_video = tracks

        # B joins: kept mids keep their receivers (no new track for A).
        second = offer_sdp(
            remote_stream("audio", "0", SENDER_A, 100),
            remote_stream("video", "1", SENDER_A, 200),
            remote_stream("video", "2", SENDER_B, 300),
            version=3,
        )
        answer = await peer.apply_reoffer(second)
        assert [t.stream_id for t in tracks] == [SENDER_A, SENDER_A, SENDER_B]
        assert list(sections_by_mid(answer)) == ["0", "1", "2"]

        # A leaves: its m-sections come back with port 0, its tracks end.
        third = offer_sdp(
            remote_stream("audio", "0", SENDER_A, 100, port=0),
            remote_stream("video", "1", SENDER_A, 200, port=0),
            remote_stream("video", "2", SENDER_B, 300),
            version=4,
        )
        answer = await peer.apply_reoffer(third)
        await a_audio.ended()
        await a_video.ended()
        answered = sections_by_mid(answer)
        assert answered["0"][0].startswith("m=audio 0 ") and answered["1"][0].startswith(
            "m=video 0 "
        )
        assert tracks[2].readyState == "live"

        # C joins on A's retired mid 1: a new receiver and a new track.
        fourth = offer_sdp(
            remote_stream("audio", "0", SENDER_A, 100, port=0),
            remote_stream("video", "1", SENDER_C, 400),
            remote_stream("video", "2", SENDER_B, 300),
            version=5,
        )
        answer = await peer.apply_reoffer(fourth)
    assert [(t.mid, t.stream_id) for t in tracks[3:]] == [("1", SENDER_C)]
    assert tracks[3] is not a_video and a_video.readyState == "ended"
    assert "a=recvonly" in sections_by_mid(answer)["1"]
    assert {r.mid for r in peer.receivers} == {"1", "2"}


async def test_a_recvonly_whose_preference_cannot_decode_the_channel_codec_fails_clearly(
    peers: Any,
) -> None:
    vp8_only = VideoCodecPreference(
        [VideoCodecPreference.Codec(VideoCodecType.VP8, None, Impl.INTERNAL)]
    )
    peer = peers(role=Role.RECVONLY, video_codec_preference=vp8_only)
    message = {"type": "offer", "video": True, "video_codec_type": "VP9", "config": {}}
    with pytest.raises(CodecUnavailableError, match="no decoder for VP9"):
        async with asyncio.timeout(10):
            await peer.apply_offer(offer_sdp(remote_stream("video", "0", SENDER_A, 1)), message)


def test_ice_servers_one_stun_and_every_turn_url_udp_then_tcp_then_tls() -> None:
    config = {
        "iceServers": [
            {
                "urls": [
                    "turns:turn.example.com:443?transport=tcp",
                    "turn:turn.example.com:3478?transport=tcp",
                    "turn:turn.example.com:3478?transport=udp",
                ],
                "username": "u",
                "credential": "p",
            },
            {"urls": "stun:stun.example.com:3478"},
            {"urls": ["bogus:url"]},
        ],
        "iceTransportPolicy": "relay",
    }
    servers, policy = select_ice_servers(config)
    assert [s.urls for s in servers] == [
        "stun:stun.example.com:3478",
        "turn:turn.example.com:3478?transport=udp",
        "turn:turn.example.com:3478?transport=tcp",
        "turns:turn.example.com:443?transport=tcp",
    ]
    assert all(s.username == "u" and s.credential == "p" for s in servers[1:])
    assert policy.name == "RELAY"
    several = {
        "iceServers": [
            {
                "urls": [
                    "turns:a:443?transport=tcp",
                    "turn:a?transport=tcp",
                    "turns:a?transport=udp",
                ]
            },
            {"urls": ["turn:b?transport=tcp", "turn:b", "turn:a?transport=tcp"]},
        ]
    }
    # every server, UDP first, then TCP, then TLS, the offer's order in each, no duplicates
    # (turns: over UDP, i.e. DTLS, is not supported by aioice)
    assert [s.urls for s in select_ice_servers(several)[0]] == [
        "turn:b",
        "turn:a?transport=tcp",
        "turn:b?transport=tcp",
        "turns:a:443?transport=tcp",
    ]
    assert select_ice_servers(None)[0] == []


async def test_opus_follows_the_offer_fmtp_and_the_connect_audio_bit_rate(peers: Any) -> None:
    peer = peers(role=Role.SENDONLY, audio_source=AudioStreamTrack(), audio_bit_rate=24)
    audio = own_audio("0").replace(
        "stereo=1;usedtx=1", "stereo=1;usedtx=1;ptime=40;maxplaybackrate=16000"
    )
    message = {"type": "offer", "mid": {"audio": "0"}, "config": {}}
    async with asyncio.timeout(10):
        await peer.apply_offer(offer_sdp(audio), message)
    (sender,) = peer.senders
    (layer,) = sender.layers
    assert layer.encoder is not None and layer.encoder.target_bitrate == 24_000
    packets = []
    for index in range(4):
        pcm = (np.sin(np.arange(960) / 5) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, index * 960
        frame.time_base = fractions.Fraction(1, 48000)
        packets += layer.encoder.encode(frame)
    # ptime=40: 40 ms packets; stereo=1: the receiver asked for stereo.
    assert [p.samples for p in packets] == [1920, 1920]
    assert {p.channels for p in packets} == {2}
