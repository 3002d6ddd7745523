"""AV1 payload format (AOM AV1 RTP spec): LEB128, aggregation header, OBU rules, garbage."""

from __future__ import annotations

import itertools
import random

import pytest

from sora_async.codecs import (
    EncodedFrame,
    EncoderSettings,
    IncompleteFrameError,
    MalformedPayloadError,
    create_encoder,
)
from sora_async.codecs.av1 import (
    OBU_FRAME,
    OBU_SEQUENCE_HEADER,
    OBU_TEMPORAL_DELIMITER,
    AggregationHeader,
    Av1Depacketizer,
    Av1Packetizer,
    Obu,
    parse_obus,
    split_elements,
)
from sora_async.codecs.bitstream import leb128_decode, leb128_encode, leb128_size
from sora_async.codecs.pattern import video_frame


@pytest.fixture(scope="module")
def encoded() -> list[EncodedFrame]:
    """Real SVT-AV1 output at 160x120: a key frame (TD, sequence header, frame) and inter frames."""
    encoder = create_encoder("AV1", settings=EncoderSettings(bitrate=200_000))
    frames = [encoder.encode(video_frame(160, 120, i))[0] for i in range(3)]
    encoder.close()
    return frames


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**35, 2**56 - 1])
def test_leb128_round_trips(value: int) -> None:
    encoded = leb128_encode(value)
    assert len(encoded) == leb128_size(value)
    assert leb128_decode(encoded + b"\xff") == (value, len(encoded))


def test_leb128_rejects_truncated_and_overlong_values() -> None:
    with pytest.raises(MalformedPayloadError):
        leb128_decode(b"\x80\x80")
    with pytest.raises(MalformedPayloadError):
        leb128_decode(b"\x80" * 9)
    with pytest.raises(ValueError):
        leb128_encode(-1)


def test_aggregation_header_round_trips() -> None:
    for z in (False, True):
        for y in (False, True):
            for w in range(4):
                for n in (False, True):
                    header = AggregationHeader(z, y, w, n)
                    assert AggregationHeader.parse(bytes(header)[0]) == header


def _obus_without_td(data: bytes) -> list[Obu]:
    return [o for o in parse_obus(data) if o.obu_type != OBU_TEMPORAL_DELIMITER]


def test_sender_rules_drop_temporal_delimiters_and_size_fields(encoded: list[EncodedFrame]) -> None:
    key = encoded[0]
    assert parse_obus(key.data)[0].obu_type == OBU_TEMPORAL_DELIMITER  # SVT-AV1 writes one
    payloads = Av1Packetizer().packetize(key, max_payload_size=1200)
    header, elements = split_elements(payloads[0])
    assert header.n and not header.z
    types = [(e[0] >> 3) & 0x0F for e in elements]
    assert OBU_TEMPORAL_DELIMITER not in types and types[0] == OBU_SEQUENCE_HEADER
    assert all(not e[0] & 0x02 for e in elements)  # obu_has_size_field cleared
    assert 1 <= header.w <= 3 and len(elements) == header.w


def test_new_coded_sequence_bit_only_on_the_first_packet_of_a_key_frame(
    encoded: list[EncodedFrame],
) -> None:
    packetizer = Av1Packetizer()
    key_payloads = packetizer.packetize(encoded[0], max_payload_size=100)
    assert [split_elements(p)[0].n for p in key_payloads] == [True] + [False] * (
        len(key_payloads) - 1
    )
    assert not any(split_elements(p)[0].n for p in packetizer.packetize(encoded[1], 100))


@pytest.mark.parametrize("mtu", [3, 7, 64, 200, 1200])
def test_fragmented_obus_are_rebuilt_exactly(encoded: list[EncodedFrame], mtu: int) -> None:
    packetizer, depacketizer = Av1Packetizer(), Av1Depacketizer()
    for original in encoded:
        payloads = packetizer.packetize(original, max_payload_size=mtu)
        assert all(len(p) <= mtu for p in payloads)
        headers = [split_elements(p)[0] for p in payloads]
        # Z of each packet continues Y of the one before.
        assert not headers[0].z and not headers[-1].y
        assert all(a.y == b.z for a, b in itertools.pairwise(headers))
        rebuilt = depacketizer.depacketize(payloads, timestamp=original.timestamp)
        assert _obus_without_td(rebuilt.data) == [
            Obu(o.obu_type, bytes([o.header[0] | 2]) + o.header[1:], o.payload)
            for o in _obus_without_td(original.data)
        ]
        assert rebuilt.data.startswith(bytes([0x12, 0x00]))  # a temporal delimiter first
        assert rebuilt.is_keyframe == original.is_keyframe


def test_frame_start_and_key_frame_helpers(encoded: list[EncodedFrame]) -> None:
    depacketizer = Av1Depacketizer()
    key = Av1Packetizer().packetize(encoded[0], 100)
    inter = Av1Packetizer().packetize(encoded[1], 1200)
    assert depacketizer.is_frame_start(key[0]) and depacketizer.is_keyframe_start(key[0])
    assert not depacketizer.is_frame_start(key[1])  # continues an OBU (Z=1)
    assert depacketizer.is_frame_start(inter[0]) and not depacketizer.is_keyframe_start(inter[0])


def test_missing_fragments_are_incomplete(encoded: list[EncodedFrame]) -> None:
    payloads = Av1Packetizer().packetize(encoded[0], 100)
    assert len(payloads) >= 3
    depacketizer = Av1Depacketizer()
    with pytest.raises(IncompleteFrameError):
        depacketizer.depacketize(payloads[1:])  # starts with Z=1
    with pytest.raises(IncompleteFrameError):
        depacketizer.depacketize(payloads[:-1])  # ends with Y=1
    with pytest.raises(IncompleteFrameError):
        depacketizer.depacketize([payloads[0], payloads[2]])  # middle fragment lost


def test_w_count_and_element_lengths_are_checked() -> None:
    frame_obu = bytes([OBU_FRAME << 3]) + b"\x10\x20"
    assert split_elements(bytes([0x10]) + frame_obu)[1] == [frame_obu]  # W=1: no length
    with pytest.raises(MalformedPayloadError):
        split_elements(bytes([0x20]) + frame_obu)  # W=2 but one element
    with pytest.raises(MalformedPayloadError):
        split_elements(bytes([0x00, 0x00]) + frame_obu)  # zero-length element
    with pytest.raises(MalformedPayloadError):
        split_elements(bytes([0x00, 0x09]) + frame_obu)  # length beyond the payload


def test_elements_that_kept_their_size_field_are_accepted() -> None:
    obu = bytes([OBU_FRAME << 3 | 0x02, 0x02, 0xAB, 0xCD])
    rebuilt = Av1Depacketizer().depacketize([bytes([0x10]) + obu])
    assert rebuilt.data == bytes([0x12, 0x00]) + obu
    with pytest.raises(MalformedPayloadError):
        Av1Depacketizer().depacketize([bytes([0x10]) + obu + b"\x00"])  # size disagrees


def test_garbage_never_escapes_as_anything_but_value_error(encoded: list[EncodedFrame]) -> None:
    rng = random.Random(11)
    depacketizer = Av1Depacketizer()
    valid = Av1Packetizer().packetize(encoded[0], 200)
    cases = [
        [
            bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40)))
            for _ in range(rng.randint(1, 3))
        ]
        for _ in range(300)
    ]
    cases += [[valid[0][:n]] for n in range(60)]
    for payloads in cases:
        depacketizer.is_frame_start(payloads[0])
        depacketizer.is_keyframe_start(payloads[0])
        try:
            depacketizer.depacketize(payloads)
        except ValueError:
            pass
    with pytest.raises(ValueError):
        Av1Packetizer().packetize(EncodedFrame(b"\x12\x00", 0, "AV1"))  # only a TD
