"""Media plane of the dev server: the server side of one client's WebRTC session.

INTERFACE STUB: the implementation lands in this module; the control plane
(session/channel/api) codes against exactly these names.

A ``ServerPeer`` owns one BUNDLE transport (aiortc ICE + DTLS/SRTP + SCTP
objects driven directly, not ``RTCPeerConnection``), writes Sora-shaped offer
SDP itself and forwards RTP between peers without decoding (an SFU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyee.asyncio import AsyncIOEventEmitter


@dataclass(frozen=True)
class DataChannelSpec:
    """A server-created DataChannel as it appears in the offer's ``data_channels``.

    ``direction`` is from the client's point of view, as in Sora.
    """

    label: str
    direction: str = "sendrecv"
    compress: bool = False
    ordered: bool | None = None
    max_packet_life_time: int | None = None
    max_retransmits: int | None = None
    protocol: str | None = None
    header: list[dict[str, Any]] | None = None


@dataclass(eq=False)
class Publication:
    """One upstream media stream (audio or video) that a client sends to the server.

    Other peers subscribe to it; its stream id in their SDP is the publisher's
    connection id (``a=msid:<connection_id> <track id>``), as with Sora.
    """

    connection_id: str
    kind: str  # "audio" | "video"
    codec: str  # "OPUS", "VP8", "VP9", "AV1", "H264", "H265"
    track_id: str
    rids: list[str] = field(default_factory=list)  # ["r0","r1","r2"] when simulcast

    def request_keyframe(self, rid: str | None = None) -> None:
        """Send PLI upstream for one layer (``rid``) or for every layer."""
        raise NotImplementedError


class ServerPeer(AsyncIOEventEmitter):
    """Server side of one client's session.

    Events (pyee):
      ``"connectionstatechange"(state)``: "connecting" | "connected" | "failed" | "closed"
      ``"datachannel_open"(label)``, ``"datachannel_close"(label)``
      ``"datachannel_message"(label, data: bytes | str)``
      ``"publication"(Publication)``: upstream media of this client became available
    """

    def __init__(
        self,
        *,
        connection_id: str,
        send_audio: bool,
        send_video: bool,
        recv_audio: bool,
        recv_video: bool,
        audio_codec: str = "OPUS",
        video_codec: str = "VP9",
        video_bit_rate: int | None = None,  # kbps, caps REMB we send upstream
        simulcast: bool = False,
        encodings: list[dict[str, Any]] | None = None,
        data_channels: Sequence[DataChannelSpec] = (),
    ) -> None:
        super().__init__()
        raise NotImplementedError

    #: mids of the m-lines where the client sends: {"audio": "0", "video": "1"}
    mids: dict[str, str]
    #: upstream streams of this client (filled once the answer is applied)
    publications: list[Publication]

    async def create_offer(self, subscriptions: Sequence[Publication]) -> str:
        """Gather, then return the initial offer SDP (recv m-lines for the client's own
        media, one send m-line per subscription, and m=application when there are
        data channels)."""
        raise NotImplementedError

    async def set_answer(self, sdp: str) -> None:
        """Apply the client's answer; starts ICE, DTLS and (if any) SCTP."""
        raise NotImplementedError

    def add_ice_candidate(self, candidate: str) -> None:
        """Add a trickled remote candidate (``candidate:...``, ``a=`` prefix tolerated)."""
        raise NotImplementedError

    async def create_reoffer(self, subscriptions: Sequence[Publication]) -> str:
        """Offer SDP for a new subscription set: kept streams keep their mid, removed
        ones go to port 0, retired mids are reused for new ones (as Sora does)."""
        raise NotImplementedError

    async def set_reanswer(self, sdp: str) -> None:
        """Apply the client's re-answer; starts forwarding to new subscriptions and
        asks their publishers for a key frame."""
        raise NotImplementedError

    def send_data(self, label: str, data: bytes | str) -> bool:
        """Send on an open server-created DataChannel; False if it is not open."""
        raise NotImplementedError

    async def close_data_channels(self) -> None:
        """Close every DataChannel (SCTP stream reset), as Sora does on disconnect."""
        raise NotImplementedError

    def set_simulcast_rid(self, publisher_connection_id: str | None, rid: str) -> None:
        """Choose the simulcast layer this client receives ("r0".."r2", or "none"
        to stop video) from one publisher, or from all when None. Switches on the
        next key frame of the new layer."""
        raise NotImplementedError

    def request_keyframe(self, rid: str | None = None) -> None:
        """Ask this client (as a sender) for a key frame."""
        raise NotImplementedError

    async def get_stats(self) -> list[dict[str, Any]]:
        """W3C-shaped stats of this server-side session."""
        raise NotImplementedError

    async def close(self) -> None:
        """Stop forwarding, close DataChannels, SCTP, DTLS and ICE. Idempotent."""
        raise NotImplementedError
