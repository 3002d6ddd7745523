"""Connection keywords: validation before any I/O, and the connect message they produce."""

from __future__ import annotations

import json
import ssl
from types import SimpleNamespace
from typing import Any

import pytest
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from sora_async import Connection
from sora_async.enums import DegradationPreference, Role
from sora_async.options import OFFICIAL_KEYWORDS, ConnectionOptions, environment

URL = "wss://sora.example.com/signaling"

# sora-sdk-reference.md §1.5, in its order, plus video_h265_params (official 2025.5.2).
REFERENCE_KEYWORDS = """
signaling_urls role channel_id client_id bundle_id metadata signaling_notify_metadata
audio_source video_source audio_frame_transformer video_frame_transformer audio video
audio_codec_type video_codec_type video_bit_rate audio_bit_rate video_vp9_params
video_av1_params video_h264_params audio_opus_params simulcast spotlight spotlight_number
simulcast_rid simulcast_request_rid spotlight_focus_rid spotlight_unfocus_rid
forwarding_filter forwarding_filters data_channels data_channel_signaling
ignore_disconnect_websocket data_channel_signaling_timeout disconnect_wait_timeout
websocket_close_timeout websocket_connection_timeout audio_streaming_language_code insecure
client_cert client_key ca_cert proxy_url proxy_username proxy_password proxy_agent
degradation_preference user_agent
""".split()


def options(**keywords: Any) -> ConnectionOptions:
    return ConnectionOptions.from_arguments(URL, "sendrecv", "ch", **keywords)


def connect(**keywords: Any) -> dict[str, Any]:
    return options(**keywords).connect_message()


def test_every_official_keyword_is_accepted() -> None:
    assert len(REFERENCE_KEYWORDS) == 48
    assert set(REFERENCE_KEYWORDS) | {"video_h265_params"} == OFFICIAL_KEYWORDS
    # And the official test suite's SoraClient adds video_codec_preference: a
    # foreign object of the official shape (.codecs of type/encoder/decoder).
    official_shape = SimpleNamespace(
        codecs=[SimpleNamespace(type="VP9", encoder="INTERNAL", decoder="INTERNAL")]
    )
    Connection(URL, "recvonly", "ch", video_codec_preference=official_shape, connect_timeout=5)


@pytest.mark.parametrize(
    "value",
    [
        object(),
        "VP9",
        3,
        ["VP9"],
        {"codecs": [{"type": "VP10"}]},
        SimpleNamespace(codecs=[SimpleNamespace(type="VP9", encoder="NOPE", decoder=None)]),
    ],
)
def test_a_wrong_video_codec_preference_fails_before_io(value: Any) -> None:
    with pytest.raises(ValueError, match="video_codec_preference"):
        Connection(URL, "recvonly", "ch", video_codec_preference=value)


def test_openh264_is_a_path_checked_before_io(tmp_path: Any) -> None:
    for value in (3, b"/x/libopenh264.so", ""):
        with pytest.raises(ValueError, match="openh264 must be"):
            Connection(URL, "recvonly", "ch", openh264=value)
    with pytest.raises(ValueError, match="openh264 cannot be used: cannot load"):
        Connection(URL, "recvonly", "ch", openh264=str(tmp_path / "libopenh264.so"))
    assert "openh264" not in OFFICIAL_KEYWORDS


def test_unknown_keywords_raise_type_error() -> None:
    with pytest.raises(TypeError, match="videocodec_type"):
        Connection(URL, "recvonly", "ch", videocodec_type="VP8")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("arguments", "keywords", "name"),
    [
        (([], "recvonly", "ch"), {}, "signaling_urls"),
        (("https://sora/signaling", "recvonly", "ch"), {}, "signaling_urls"),
        ((["wss://ok/signaling", "ws://"], "recvonly", "ch"), {}, "signaling_urls"),
        ((b"wss://sora/signaling", "recvonly", "ch"), {}, "signaling_urls"),
        ((URL, "upstream", "ch"), {}, "role"),
        ((URL, "recvonly", ""), {}, "channel_id"),
        ((URL, "recvonly", "x" * 256), {}, "channel_id"),
        ((URL, "recvonly", "ch"), {"client_id": 1}, "client_id"),
        ((URL, "recvonly", "ch"), {"metadata": {"f": object()}}, "metadata"),
        ((URL, "recvonly", "ch"), {"metadata": {1: "non-str key"}}, "metadata"),
        ((URL, "recvonly", "ch"), {"signaling_notify_metadata": float("nan")}, "notify"),
        ((URL, "recvonly", "ch"), {"audio": "yes"}, "audio"),
        ((URL, "recvonly", "ch"), {"video_codec_type": "vp8"}, "video_codec_type"),
        ((URL, "recvonly", "ch"), {"audio_codec_type": "AAC"}, "audio_codec_type"),
        ((URL, "recvonly", "ch"), {"video_bit_rate": -1}, "video_bit_rate"),
        ((URL, "recvonly", "ch"), {"video_bit_rate": True}, "video_bit_rate"),
        ((URL, "recvonly", "ch"), {"video_vp9_params": [1]}, "video_vp9_params"),
        ((URL, "recvonly", "ch"), {"simulcast_rid": "r3"}, "simulcast_rid"),
        ((URL, "recvonly", "ch"), {"spotlight_focus_rid": "hd"}, "spotlight_focus_rid"),
        ((URL, "recvonly", "ch"), {"spotlight_number": 1.5}, "spotlight_number"),
        ((URL, "recvonly", "ch"), {"websocket_close_timeout": 0}, "websocket_close_timeout"),
        ((URL, "recvonly", "ch"), {"connect_timeout": float("inf")}, "connect_timeout"),
        ((URL, "recvonly", "ch"), {"client_cert": "PEM as str"}, "client_cert"),
        ((URL, "recvonly", "ch"), {"degradation_preference": 9}, "degradation_preference"),
        ((URL, "recvonly", "ch"), {"audio_source": object()}, "audio_source"),
        ((URL, "recvonly", "ch"), {"audio_source": VideoStreamTrack()}, "audio_source"),
        ((URL, "recvonly", "ch"), {"data_channels": {"label": "#a"}}, "data_channels"),
        (
            (URL, "recvonly", "ch"),
            {"data_channels": [{"label": "chat", "direction": "sendrecv"}]},
            "'#'",
        ),
        ((URL, "recvonly", "ch"), {"data_channels": [{"label": "#a"}]}, "direction"),
        (
            (URL, "recvonly", "ch"),
            {"data_channels": [{"label": "#a", "direction": "both"}]},
            "direction",
        ),
        (
            (URL, "recvonly", "ch"),
            {
                "data_channels": [
                    {
                        "label": "#a",
                        "direction": "sendrecv",
                        "max_packet_life_time": 10,
                        "max_retransmits": 1,
                    }
                ]
            },
            "max_packet_life_time and max_retransmits",
        ),
        (
            (URL, "recvonly", "ch"),
            {"data_channels": [{"label": "#a", "direction": "sendrecv", "compres": True}]},
            "compres",
        ),
        (
            (URL, "recvonly", "ch"),
            {
                "data_channels": [
                    {"label": "#a", "direction": "sendrecv"},
                    {"label": "#a", "direction": "recvonly"},
                ]
            },
            "twice",
        ),
        (
            (URL, "recvonly", "ch"),
            {"data_channels": [{"label": "#a", "direction": "sendrecv", "header": ["x"]}]},
            "header",
        ),
        ((URL, "recvonly", "ch"), {"forwarding_filter": {"rules": "x"}}, "rules"),
        (
            (URL, "recvonly", "ch"),
            {"forwarding_filter": {"rules": [[{"field": "kind", "operator": "eq", "values": []}]]}},
            "operator",
        ),
        (
            (URL, "recvonly", "ch"),
            {"forwarding_filters": [{"action": "drop", "rules": []}]},
            "action",
        ),
    ],
)
def test_bad_values_raise_value_error_naming_the_keyword(
    arguments: tuple[Any, ...], keywords: dict[str, Any], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        Connection(*arguments, **keywords)


def test_accepted_forms() -> None:
    single = options()
    assert single.signaling_urls == (URL,) and single.role is Role.SENDRECV
    many = ConnectionOptions.from_arguments(
        ["ws://a:5000/signaling", "wss://b/signaling"], Role.RECVONLY, "ch"
    )
    assert many.signaling_urls == ("ws://a:5000/signaling", "wss://b/signaling")
    assert options(degradation_preference=2).degradation_preference is (
        DegradationPreference.MAINTAIN_RESOLUTION
    )
    audio, video = AudioStreamTrack(), VideoStreamTrack()

    class Source:  # e.g. a media-layer source object exposing .track
        track = video

    both = options(audio_source=audio, video_source=Source())
    assert both.audio_track() is audio and both.video_track() is video
    for label in ("signaling", "notify", "push", "stats", "rpc", "#chat"):
        options(data_channels=[{"label": label, "direction": "sendrecv"}])


def test_minimal_connect_message() -> None:
    message = connect()
    assert list(message) == [
        "type",
        "role",
        "channel_id",
        "sora_client",
        "libwebrtc",
        "environment",
        "video",
        "audio",
    ]
    assert message["type"] == "connect" and message["role"] == "sendrecv"
    assert message["sora_client"].startswith("sora_async ")
    assert message["libwebrtc"].startswith("aiortc 1.16")
    assert message["environment"] == environment()
    assert message["audio"] is True and message["video"] is True


def test_environment_looks_like_the_cpp_sdk() -> None:
    value = environment()
    assert value == "Unknown Environment" or (value.startswith("[") and "] " in value)


def test_full_connect_message_matches_the_official_client_key_for_key() -> None:
    # The official client's message for the same keywords, as printed by a local
    # server (sora_sdk 2025.4.0; client identification fields left out).
    official = json.loads(
        '{"client_id":"cid","bundle_id":"bid","simulcast":true,"simulcast_rid":"r1",'
        '"spotlight":true,"spotlight_number":2,"spotlight_focus_rid":"r2",'
        '"spotlight_unfocus_rid":"r0","metadata":{"access_token":"t","n":[1,2.5,null,true]},'
        '"signaling_notify_metadata":{"a":1},"video":{"codec_type":"VP8","bit_rate":500,'
        '"vp9_params":{"profile_id":0},"av1_params":{"profile":0},'
        '"h264_params":{"profile_level_id":"42e01f"}},"audio":{"codec_type":"OPUS",'
        '"bit_rate":64,"opus_params":{"usedtx":true}},"audio_streaming_language_code":"ja-JP",'
        '"data_channel_signaling":true,"ignore_disconnect_websocket":false,'
        '"data_channels":[{"label":"#a","direction":"sendrecv","ordered":true,'
        '"max_packet_life_time":10,"protocol":"p","compress":true,'
        '"header":[{"type":"sender_connection_id"}]},{"label":"#b","direction":"recvonly",'
        '"ordered":false,"max_retransmits":0,"compress":false}],'
        '"forwarding_filter":{"name":"n","priority":1,"action":"block","rules":[[{"field":'
        '"kind","operator":"is_in","values":["audio"]}]],"version":"v","metadata":{"m":1}},'
        '"forwarding_filters":[{"action":"allow","rules":[[{"field":"client_id",'
        '"operator":"is_not_in","values":["a"]}]]}]}'
    )
    message = connect(
        client_id="cid",
        bundle_id="bid",
        metadata={"access_token": "t", "n": (1, 2.5, None, True)},
        signaling_notify_metadata={"a": 1},
        audio=True,
        video=True,
        audio_codec_type="OPUS",
        video_codec_type="VP8",
        video_bit_rate=500,
        audio_bit_rate=64,
        video_vp9_params={"profile_id": 0},
        video_av1_params={"profile": 0},
        video_h264_params={"profile_level_id": "42e01f"},
        audio_opus_params={"usedtx": True},
        simulcast=True,
        spotlight=True,
        spotlight_number=2,
        simulcast_rid="r1",
        spotlight_focus_rid="r2",
        spotlight_unfocus_rid="r0",
        forwarding_filter={
            "version": "v",
            "metadata": {"m": 1},
            "action": "block",
            "rules": [[{"values": ["audio"], "field": "kind", "operator": "is_in"}]],
            "name": "n",
            "priority": 1,
        },
        forwarding_filters=[
            {
                "rules": [[{"field": "client_id", "operator": "is_not_in", "values": ["a"]}]],
                "action": "allow",
            }
        ],
        data_channels=[
            {
                "header": [{"type": "sender_connection_id"}],
                "compress": True,
                "protocol": "p",
                "max_packet_life_time": 10,
                "ordered": True,
                "direction": "sendrecv",
                "label": "#a",
            },
            {
                "label": "#b",
                "direction": "recvonly",
                "max_retransmits": 0,
                "compress": False,
                "ordered": False,
            },
        ],
        data_channel_signaling=True,
        ignore_disconnect_websocket=False,
        data_channel_signaling_timeout=100,
        disconnect_wait_timeout=5,
        websocket_close_timeout=3,
        websocket_connection_timeout=30,
        audio_streaming_language_code="ja-JP",
        user_agent="UA/1",
    )
    ours = {
        k: v
        for k, v in message.items()
        if k not in {"type", "role", "channel_id", "sora_client", "libwebrtc", "environment"}
    }
    assert ours == official
    assert list(ours) == list(official)
    assert json.dumps(ours, sort_keys=False) == json.dumps(official, sort_keys=False)


@pytest.mark.parametrize(
    ("keywords", "audio", "video"),
    [
        ({"audio": False, "video": False}, False, False),
        ({"audio": False, "audio_codec_type": "OPUS"}, False, True),  # false wins
        ({"video_codec_type": "VP8"}, True, {"codec_type": "VP8"}),
        (
            {"video_h264_params": {"profile_level_id": "42e01f"}},
            True,
            {"h264_params": {"profile_level_id": "42e01f"}},
        ),
        ({"audio_opus_params": {"usedtx": True}}, {"opus_params": {"usedtx": True}}, True),
        ({"video_bit_rate": 0, "video_vp9_params": {}}, True, True),  # empty options collapse
        ({"video_h265_params": {"level_id": 120}}, True, {"h265_params": {"level_id": 120}}),
    ],
)
def test_audio_and_video_are_true_false_or_an_object(
    keywords: dict[str, Any], audio: Any, video: Any
) -> None:
    message = connect(**keywords)
    assert message["audio"] == audio and message["video"] == video


def test_unset_and_empty_values_are_omitted_never_null() -> None:
    message = connect(
        client_id="",
        bundle_id=None,
        metadata=None,
        spotlight_number=0,
        simulcast_rid="",
        simulcast_request_rid=None,
        audio_streaming_language_code="",
        data_channels=[],
    )
    assert set(message) == {
        "type",
        "role",
        "channel_id",
        "sora_client",
        "libwebrtc",
        "environment",
        "video",
        "audio",
    }
    explicit = connect(
        simulcast=False,
        spotlight=False,
        data_channel_signaling=False,
        ignore_disconnect_websocket=True,
    )
    assert explicit["simulcast"] is False and explicit["spotlight"] is False
    assert explicit["data_channel_signaling"] is False
    assert explicit["ignore_disconnect_websocket"] is True
    assert "null" not in json.dumps(connect(simulcast_request_rid="r2"))
    assert connect(simulcast_request_rid="r2")["simulcast_request_rid"] == "r2"


def test_signaling_config_timeouts_default_to_the_official_values() -> None:
    config = options().signaling_config()
    assert (config.websocket_close_timeout, config.disconnect_wait_timeout) == (3.0, 5.0)
    assert (config.websocket_connection_timeout, config.connect_timeout) == (30.0, 30.0)
    config = options(
        websocket_close_timeout=1, disconnect_wait_timeout=2, connect_timeout=4
    ).signaling_config()
    assert (
        config.websocket_close_timeout,
        config.disconnect_wait_timeout,
        config.connect_timeout,
    ) == (1, 2, 4)


def test_user_agent_proxy_and_tls() -> None:
    assert options().user_agent_header().startswith("Mozilla/5.0 (sora_async/")
    assert options(user_agent="UA/1").user_agent_header() == "UA/1"
    assert options().proxy() is None
    assert options(proxy_url="http://proxy:8080").proxy() == "http://proxy:8080"
    assert (
        options(proxy_url="http://proxy:8080", proxy_username="u@x", proxy_password="p:w").proxy()
        == "http://u%40x:p%3Aw@proxy:8080"
    )
    context = options(insecure=True).ssl_context()
    assert context.verify_mode is ssl.CERT_NONE and not context.check_hostname
    assert options().ssl_context().verify_mode is ssl.CERT_REQUIRED


def test_validation_happens_before_any_io() -> None:
    # No event loop is running here: constructing (and failing) needs none.
    with pytest.raises(ValueError):
        Connection(URL, "recvonly", "ch", data_channels=[{"label": "x", "direction": "sendrecv"}])
    conn = Connection(URL, "recvonly", "ch")
    assert conn.state.name == "INIT" and conn.connection_id is None
