"""W3C webrtc-stats reports from the engine, as libwebrtc shapes them.

JSON-ready dicts with the W3C names (``aiortc-notes.md`` A.5): ``timestamp``
in milliseconds since the Unix epoch, ``jitter`` and round-trip times in
seconds, ids cross-referenced (``transportId``, ``codecId``,
``mediaSourceId``, ``remoteId``, ``localCandidateId``...). The list answers
``get_stats()``, Sora's ``ping`` with ``stats: true`` and ``req-stats``.

Types produced: ``peer-connection``, ``transport``, ``candidate-pair``,
``local-candidate``, ``remote-candidate``, ``codec``, ``outbound-rtp`` (one per
SSRC, i.e. per simulcast rid), ``remote-inbound-rtp``, ``media-source``,
``inbound-rtp`` (one per received SSRC), ``remote-outbound-rtp``,
``data-channel``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .peer import RtcPeer
    from .receiver import InboundStream, RtpReceiver
    from .sdp import NegotiatedCodec
    from .sender import RtpSender, SendLayer

TRANSPORT_ID = "T01"


@dataclass
class DataChannelCounters:
    """What a ``data-channel`` stats entry reports; updated by the connection."""

    label: str
    protocol: str = ""
    channel_id: int | None = None
    state: str = "connecting"
    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0

    def sent(self, size: int) -> None:
        """Count one message of ``size`` bytes sent."""
        self.messages_sent += 1
        self.bytes_sent += size

    def received(self, size: int) -> None:
        """Count one message of ``size`` bytes received."""
        self.messages_received += 1
        self.bytes_received += size


def now_ms() -> float:
    """A W3C ``DOMHighResTimeStamp`` for "now": milliseconds since the Unix epoch."""
    return time.time() * 1000.0


async def collect(
    peer: RtcPeer | None, data_channels: Iterable[DataChannelCounters] = ()
) -> list[dict[str, Any]]:
    """The stats report of ``peer`` (``[]`` before there is one)."""
    if peer is None:
        return []
    return await peer.get_stats(data_channels)


def build(peer: RtcPeer, data_channels: Iterable[DataChannelCounters]) -> list[dict[str, Any]]:
    """Every entry of the report, in libwebrtc's usual order."""
    timestamp = now_ms()
    channels = list(data_channels)
    reports: list[dict[str, Any]] = [
        {
            "id": "P",
            "type": "peer-connection",
            "timestamp": timestamp,
            "dataChannelsOpened": sum(1 for c in channels if c.state in ("open", "closed")),
            "dataChannelsClosed": sum(1 for c in channels if c.state == "closed"),
        }
    ]
    reports += _transport_entries(peer, timestamp)
    codecs: dict[str, dict[str, Any]] = {}
    for sender in peer.senders:
        reports += _sender_entries(sender, timestamp, codecs)
    for receiver in peer.receivers:
        reports += _receiver_entries(receiver, timestamp, codecs)
    reports += codecs.values()
    for channel in channels:
        reports.append(_data_channel_entry(channel, timestamp))
    return reports


def _transport_entries(peer: RtcPeer, timestamp: float) -> list[dict[str, Any]]:
    transport = peer.transport
    if transport is None:
        return []
    entry: dict[str, Any] = {
        "id": TRANSPORT_ID,
        "type": "transport",
        "timestamp": timestamp,
        **transport.counters,
        "dtlsState": transport.dtls.state,
        "iceState": transport.ice.state,
        "iceRole": transport.ice_role,
        "dtlsRole": {"client": "client", "server": "server"}.get(transport.dtls.role, "unknown"),
        "selectedCandidatePairChanges": 0,
    }
    reports = [entry]
    pair = transport.selected_pair()
    if pair is None:
        return reports
    pair_id, local_id, remote_id = "CP01", "I01L", "I01R"
    entry["selectedCandidatePairId"] = pair_id
    entry["selectedCandidatePairChanges"] = 1
    counters = transport.counters
    candidate_pair: dict[str, Any] = {
        "id": pair_id,
        "type": "candidate-pair",
        "timestamp": timestamp,
        "transportId": TRANSPORT_ID,
        "localCandidateId": local_id,
        "remoteCandidateId": remote_id,
        "state": pair.state,
        "nominated": pair.nominated,
        "packetsSent": counters["packetsSent"],
        "packetsReceived": counters["packetsReceived"],
        "bytesSent": counters["bytesSent"],
        "bytesReceived": counters["bytesReceived"],
    }
    rtt = peer.round_trip_time()
    if rtt is not None:
        candidate_pair["currentRoundTripTime"] = rtt
    available = peer.available_outgoing_bitrate()
    if available is not None:
        candidate_pair["availableOutgoingBitrate"] = available
    reports.append(candidate_pair)
    for candidate_id, kind, candidate in (
        (local_id, "local-candidate", pair.local),
        (remote_id, "remote-candidate", pair.remote),
    ):
        reports.append(
            {
                "id": candidate_id,
                "type": kind,
                "timestamp": timestamp,
                "transportId": TRANSPORT_ID,
                "isRemote": kind == "remote-candidate",
                **candidate,
            }
        )
    return reports


def _codec_entry(
    codec: NegotiatedCodec, direction: str, timestamp: float, codecs: dict[str, dict[str, Any]]
) -> str:
    # libwebrtc ids: "CIT01_<pt>" (inbound) / "COT01_<pt>" (outbound), plus the fmtp.
    codec_id = f"C{direction}{TRANSPORT_ID}_{codec.payload_type}"
    if codec.fmtp_line:
        codec_id += "_" + codec.fmtp_line
    if codec_id not in codecs:
        entry: dict[str, Any] = {
            "id": codec_id,
            "type": "codec",
            "timestamp": timestamp,
            "transportId": TRANSPORT_ID,
            "payloadType": codec.payload_type,
            "mimeType": codec.mime_type,
            "clockRate": codec.clock_rate,
        }
        if codec.channels:
            entry["channels"] = codec.channels
        if codec.fmtp_line:
            entry["sdpFmtpLine"] = codec.fmtp_line
        codecs[codec_id] = entry
    return codec_id


def _sender_entries(
    sender: RtpSender, timestamp: float, codecs: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    kind = sender.kind
    source_id = f"S{'A' if kind == 'audio' else 'V'}{sender.mid}"
    source: dict[str, Any] = {
        "id": source_id,
        "type": "media-source",
        "timestamp": timestamp,
        "kind": kind,
        "trackIdentifier": str(getattr(sender.source, "id", "")),
    }
    if kind == "video":
        source.update(
            width=sender.source_width,
            height=sender.source_height,
            frames=sender.source_frames,
            framesPerSecond=sender.source_fps.rate,
        )
    else:
        source.update(
            audioLevel=sender.source_audio_level,
            totalAudioEnergy=sender.source_audio_energy,
            totalSamplesDuration=sender.source_audio_duration,
        )
    reports = [source]
    codec_id = _codec_entry(sender.codec, "O", timestamp, codecs)
    for layer in sender.layers:
        reports += _layer_entries(sender, layer, timestamp, codec_id, source_id)
    return reports


def _layer_entries(
    sender: RtpSender, layer: SendLayer, timestamp: float, codec_id: str, source_id: str
) -> list[dict[str, Any]]:
    kind = sender.kind
    letter = "A" if kind == "audio" else "V"
    outbound_id = f"OT01{letter}{layer.ssrc}"
    remote_id = f"RI{letter}{layer.ssrc}"
    outbound: dict[str, Any] = {
        "id": outbound_id,
        "type": "outbound-rtp",
        "timestamp": timestamp,
        "ssrc": layer.ssrc,
        "kind": kind,
        "mid": sender.mid,
        "transportId": TRANSPORT_ID,
        "codecId": codec_id,
        "mediaSourceId": source_id,
        "packetsSent": layer.packets_sent,
        "bytesSent": layer.bytes_sent,
        "headerBytesSent": layer.header_bytes_sent,
        "retransmittedPacketsSent": layer.retransmitted_packets_sent,
        "retransmittedBytesSent": layer.retransmitted_bytes_sent,
        "nackCount": layer.nack_count,
        "targetBitrate": layer.target_bitrate,
        "active": layer.active,
    }
    if layer.rtx_ssrc is not None:
        outbound["rtxSsrc"] = layer.rtx_ssrc
    if layer.rid:
        outbound["rid"] = layer.rid
    encoder = layer.encoder
    if encoder is not None:
        outbound["encoderImplementation"] = encoder.implementation_name
    if kind == "video":
        outbound.update(
            framesEncoded=layer.frames_encoded,
            keyFramesEncoded=layer.key_frames_encoded,
            framesSent=layer.frames_sent,
            frameWidth=layer.frame_width,
            frameHeight=layer.frame_height,
            framesPerSecond=layer.fps.rate,
            totalEncodeTime=layer.total_encode_time,
            pliCount=layer.pli_count,
            firCount=layer.fir_count,
            qualityLimitationReason=layer.quality.reason,
            qualityLimitationDurations=layer.quality.snapshot(),
            qualityLimitationResolutionChanges=layer.quality.resolution_changes,
            scalabilityMode=layer.params.scalability_mode or "L1T1",
            powerEfficientEncoder=_is_hardware(encoder),
        )
    reports = [outbound]
    if layer.remote_received:
        remote = layer.remote
        outbound["remoteId"] = remote_id
        entry: dict[str, Any] = {
            "id": remote_id,
            "type": "remote-inbound-rtp",
            "timestamp": remote.timestamp,
            "ssrc": layer.ssrc,
            "kind": kind,
            "transportId": TRANSPORT_ID,
            "codecId": codec_id,
            "localId": outbound_id,
            "packetsLost": remote.packets_lost,
            "fractionLost": remote.fraction_lost,
            "jitter": remote.jitter,
            "totalRoundTripTime": remote.total_round_trip_time,
            "roundTripTimeMeasurements": remote.round_trip_time_measurements,
        }
        if remote.round_trip_time is not None:
            entry["roundTripTime"] = remote.round_trip_time
        reports.append(entry)
    return reports


def _is_hardware(coder: Any) -> bool:
    backend = getattr(coder, "backend", None)
    return bool(getattr(backend, "is_hardware", False))


def _receiver_entries(
    receiver: RtpReceiver, timestamp: float, codecs: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []
    for stream in list(receiver.streams.values()):
        reports += _inbound_entries(receiver, stream, timestamp, codecs)
    return reports


def _inbound_entries(
    receiver: RtpReceiver,
    stream: InboundStream,
    timestamp: float,
    codecs: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    kind = receiver.kind
    letter = "A" if kind == "audio" else "V"
    codec_id = _codec_entry(stream.codec, "I", timestamp, codecs)
    inbound_id = f"IT01{letter}{stream.ssrc}"
    inbound: dict[str, Any] = {
        "id": inbound_id,
        "type": "inbound-rtp",
        "timestamp": timestamp,
        "ssrc": stream.ssrc,
        "kind": kind,
        "mid": receiver.mid,
        "trackIdentifier": receiver.track.id,
        "transportId": TRANSPORT_ID,
        "codecId": codec_id,
        "packetsReceived": stream.packets_received,
        "bytesReceived": stream.bytes_received,
        "headerBytesReceived": stream.header_bytes_received,
        "packetsLost": stream.packets_lost,
        "jitter": stream.jitter / stream.codec.clock_rate,
        "nackCount": stream.nack_count,
        "retransmittedPacketsReceived": stream.retransmitted_packets_received,
    }
    if stream.last_packet_ms:
        inbound["lastPacketReceivedTimestamp"] = stream.last_packet_ms
    implementation = receiver.decoder_implementation(stream)
    if implementation is not None:
        inbound["decoderImplementation"] = implementation
    if kind == "video":
        inbound.update(
            framesReceived=stream.assembler.frames_emitted,
            framesDecoded=stream.frames_decoded,
            keyFramesDecoded=stream.key_frames_decoded,
            framesDropped=stream.frames_dropped + stream.assembler.frames_dropped,
            frameWidth=stream.frame_width,
            frameHeight=stream.frame_height,
            framesPerSecond=stream.fps.rate,
            totalDecodeTime=stream.total_decode_time,
            pliCount=stream.pli_count,
            firCount=0,
        )
    else:
        inbound.update(totalSamplesReceived=stream.total_samples_received, concealedSamples=0)
    reports = [inbound]
    if stream.last_sr_time:
        remote_id = f"RO{letter}{stream.ssrc}"
        inbound["remoteId"] = remote_id
        reports.append(
            {
                "id": remote_id,
                "type": "remote-outbound-rtp",
                "timestamp": timestamp,
                "ssrc": stream.ssrc,
                "kind": kind,
                "transportId": TRANSPORT_ID,
                "codecId": codec_id,
                "localId": inbound_id,
                "packetsSent": stream.remote_packets_sent,
                "bytesSent": stream.remote_bytes_sent,
            }
        )
    return reports


def _data_channel_entry(channel: DataChannelCounters, timestamp: float) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": f"D{channel.channel_id if channel.channel_id is not None else channel.label}",
        "type": "data-channel",
        "timestamp": timestamp,
        "label": channel.label,
        "protocol": channel.protocol,
        "state": channel.state,
        "messagesSent": channel.messages_sent,
        "bytesSent": channel.bytes_sent,
        "messagesReceived": channel.messages_received,
        "bytesReceived": channel.bytes_received,
    }
    if channel.channel_id is not None:
        entry["dataChannelIdentifier"] = channel.channel_id
    return entry
