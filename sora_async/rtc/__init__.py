"""Our WebRTC media engine on aiortc's transports: the client side of one Sora session.

aiortc's ``RTCPeerConnection`` cannot take what Sora offers (VP9/AV1/H.265,
simulcast, port-0 retirement with mid reuse, several SSRCs per receiver) and
hides the encoded frame (``aiortc-notes.md`` A.0-A.8), so the client answers
Sora with its own engine built on aiortc's ICE, DTLS/SRTP and SCTP objects
and on our codec layer (:mod:`sora_async.codecs`):

- :mod:`.transport`: one BUNDLE transport (also used by the dev server);
- :mod:`.sdp`: the offer model, per-m-section negotiation, the answer;
- :mod:`.sender`: ``RtpSender`` with one layer per encoding (simulcast-ready);
- :mod:`.receiver`: ``RtpReceiver`` (per-SSRC assembly, NACK/PLI, RR) and ``RemoteTrack``;
- :mod:`.peer`: ``RtcPeer``, the facade ``Connection`` drives;
- :mod:`.stats`: W3C stats.

Every aiortc/aioice private member used lives in ``sora_async._aiortc_seam``.
"""

from __future__ import annotations

from .peer import RtcOptions, RtcPeer
from .receiver import RemoteTrack
from .sender import EncodingParameters
from .stats import DataChannelCounters

__all__ = ["DataChannelCounters", "EncodingParameters", "RemoteTrack", "RtcOptions", "RtcPeer"]
