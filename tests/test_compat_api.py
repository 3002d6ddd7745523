"""``sora_async.compat`` has the public API of ``sora_sdk``: names, signatures, enums.

The official module is a nanobind extension: ``inspect.signature`` cannot read
its callables, but each carries ``__nb_signature__`` (one entry per
overload). Every overload is parsed and bound against the compat callable's
``inspect.signature``, positionally and by keyword as the official one
allows, with and without its optional arguments.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
from collections.abc import Iterator
from typing import Any

import pytest

import sora_async.compat as compat
from tests.official.harness import SORA_SDK_AVAILABLE

needs_official = pytest.mark.skipif(not SORA_SDK_AVAILABLE, reason="sora_sdk not importable")

#: Names ``sora_sdk/__init__.py`` leaves in its namespace that are not its API.
NOT_API = {"sora_sdk_ext"}
#: Enum members this library knows and sora_sdk 2025.4.0 does not (newer official releases).
NEWER_MEMBERS = {
    ("SoraSignalingErrorCode", "DATACHANNEL_CLOSED"),  # C++ SDK after 2025.6 (issue 0070)
    ("SoraVideoCodecImplementation", "RASPI_V4L2M2M"),  # sora_sdk 2025.5.0
}
#: Keywords that newer official releases added (accepted keyword-only here).
NEWER_KEYWORDS = {
    ("Sora.__init__", "force_i420_conversion"),  # 2025.5
    ("Sora.create_connection", "simulcast_request_rid"),  # 2025.5.0
    ("Sora.create_connection", "video_h265_params"),  # 2025.5.2
}


@pytest.fixture(scope="module")
def sora_sdk() -> Any:
    if not SORA_SDK_AVAILABLE:
        pytest.skip("sora_sdk not importable")
    import sora_sdk

    return sora_sdk


def official_names(module: Any) -> list[str]:
    return sorted(n for n in dir(module) if not n.startswith("_") and n not in NOT_API)


# -- parsing nanobind signatures --------------------------------------------------------------


@dataclasses.dataclass
class Param:
    name: str
    has_default: bool
    positional_only: bool
    keyword_only: bool


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


def _top_level_default(item: str) -> bool:
    depth = 0
    for ch in item:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "=" and depth == 0:
            return True
    return False


def parse_overloads(func: Any) -> list[list[Param]]:
    """The parameters (without self) of each overload of a nanobind callable."""
    overloads = []
    for entry in func.__nb_signature__:
        text = entry[0]
        match = re.match(r"def \w+\((.*)\)(?: -> .*)?$", text, re.S)
        assert match, text
        raw = _split_top_level(match.group(1))
        params: list[Param] = []
        slash = "/" in raw
        keyword_only = False
        before_slash = True
        for item in raw:
            if item == "/":
                before_slash = False
                continue
            if item == "*":
                keyword_only = True
                continue
            name = re.split(r"[:=]", item, maxsplit=1)[0].strip()
            if name == "self":
                continue
            params.append(
                Param(
                    name=name,
                    has_default=_top_level_default(item),
                    positional_only=slash and before_slash,
                    keyword_only=keyword_only,
                )
            )
        overloads.append(params)
    return overloads


def calls(params: list[Param]) -> Iterator[tuple[tuple[Any, ...], dict[str, Any], str]]:
    """Calls the official overload accepts: each optional prefix, positionally and by keyword."""
    required = [p for p in params if not p.has_default]
    optional = [p for p in params if p.has_default]
    for n in range(len(optional) + 1):
        used = required + optional[:n]
        positional = [p for p in used if not p.keyword_only]
        keywords = {p.name: object() for p in used if p.keyword_only}
        yield tuple(object() for _ in positional), keywords, "positional"
        if all(not p.positional_only for p in used):
            yield (), {p.name: object() for p in used}, "keywords"
    # Each optional one alone, by keyword.
    if all(not p.positional_only for p in required):
        for p in optional:
            if not p.positional_only:
                kw = {q.name: object() for q in required}
                kw[p.name] = object()
                yield (), kw, f"keywords with {p.name}"


def assert_accepts(ours: Any, official: Any, where: str) -> None:
    signature = inspect.signature(ours)
    params = list(signature.parameters.values())
    if params and params[0].name in ("self", "cls") and inspect.isfunction(ours):
        signature = signature.replace(parameters=params[1:])
    for overload in parse_overloads(official):
        for args, kwargs, how in calls(overload):
            try:
                signature.bind(*args, **kwargs)
            except TypeError as exc:
                names = [p.name for p in overload]
                raise AssertionError(
                    f"{where}: the official overload ({', '.join(names)}) called {how} "
                    f"with {len(args)} positional and {sorted(kwargs)} keywords is refused by "
                    f"{signature}: {exc}"
                ) from None


def callables_of(cls: type) -> Iterator[tuple[str, Any]]:
    for name, value in vars(cls).items():
        if hasattr(value, "__nb_signature__") and (
            not name.startswith("_") or name in ("__init__", "__del__", "__getstate__")
        ):
            yield name, value


def classes_of(module: Any) -> Iterator[tuple[str, type, type]]:
    """(qualified name, official class, compat class), nested classes included."""

    def walk(prefix: str, official: type, ours: type) -> Iterator[tuple[str, type, type]]:
        yield prefix, official, ours
        for name, value in vars(official).items():
            if isinstance(value, type) and not name.startswith("_"):
                assert hasattr(ours, name), f"{prefix}.{name} is missing"
                yield from walk(f"{prefix}.{name}", value, getattr(ours, name))

    for name in official_names(module):
        value = getattr(module, name)
        if isinstance(value, type) and not issubclass(value, enum.Enum | BaseException):
            yield from walk(name, value, getattr(compat, name))


# -- the tests ------------------------------------------------------------------------------------


def test_every_public_name_exists(sora_sdk) -> None:
    missing = [n for n in official_names(sora_sdk) if not hasattr(compat, n)]
    assert missing == []
    assert set(official_names(sora_sdk)) <= set(compat.__all__)
    assert isinstance(compat.__version__, str) and compat.__version__


def test_enums_have_the_official_members_and_values(sora_sdk) -> None:
    checked = 0
    for name in official_names(sora_sdk):
        official = getattr(sora_sdk, name)
        if not (isinstance(official, type) and issubclass(official, enum.Enum)):
            continue
        ours = getattr(compat, name)
        assert issubclass(ours, enum.IntEnum), name
        theirs = {m.name: m.value for m in official}
        mine = {m.name: m.value for m in ours}
        extra = {k: v for k, v in mine.items() if k not in theirs}
        assert {k: mine.get(k) for k in theirs} == theirs, name
        assert {(name, k) for k in extra} <= NEWER_MEMBERS, (name, extra)
        for member in official:  # interchangeable by value
            value = member.value
            assert ours[member.name] == value and ours(value).name == member.name
        checked += 1
    assert checked == 10


def test_module_functions_accept_every_official_call(sora_sdk) -> None:
    for name in official_names(sora_sdk):
        official = getattr(sora_sdk, name)
        if hasattr(official, "__nb_signature__"):
            assert_accepts(getattr(compat, name), official, name)


def test_every_method_and_property_of_every_class(sora_sdk) -> None:
    for qualname, official, ours in classes_of(sora_sdk):
        for name, method in callables_of(official):
            ours_method = getattr(ours, name, None)
            assert callable(ours_method), f"{qualname}.{name} is missing"
            if name == "__init__" and f"{qualname}.__init__" in {
                "SoraVideoCodecCapability.__init__"
            }:
                continue
            assert_accepts(ours_method, method, f"{qualname}.{name}")
        fields = set()
        for klass in ours.__mro__:
            fields |= set(getattr(klass, "__dataclass_fields__", {}))
        for name, value in vars(official).items():
            if isinstance(value, property):
                ours_attr = inspect.getattr_static(ours, name, None)
                assert ours_attr is not None or name in fields, f"{qualname}.{name} is missing"
                if value.fset is not None and isinstance(ours_attr, property):
                    assert ours_attr.fset is not None, f"{qualname}.{name} is read-only here"


def test_wrapper_sinks_take_three_required_arguments(sora_sdk) -> None:
    """The official pure-Python wrappers (``SoraAudioSink`` & co.) require every argument."""
    for name in ("SoraAudioSink", "SoraAudioStreamSink", "SoraVideoSink"):
        theirs = inspect.signature(getattr(sora_sdk, name).__init__)
        mine = inspect.signature(getattr(compat, name).__init__)
        assert [p.name for p in mine.parameters.values()] == [
            p.name for p in theirs.parameters.values()
        ], name
        assert all(p.default is inspect.Parameter.empty for p in mine.parameters.values())


def test_create_connection_keeps_the_official_positional_order(sora_sdk) -> None:
    (official,) = parse_overloads(sora_sdk.Sora.create_connection)
    mine = [
        p
        for p in inspect.signature(compat.Sora.create_connection).parameters.values()
        if p.name != "self"
    ]
    positional = [p.name for p in mine if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert positional == [p.name for p in official]
    newer = {("Sora.create_connection", p.name) for p in mine if p.name not in positional}
    assert newer <= NEWER_KEYWORDS
    sora_init = [p.name for p in inspect.signature(compat.Sora).parameters.values()]
    (official_init,) = parse_overloads(sora_sdk.Sora.__init__)
    assert sora_init[: len(official_init)] == [p.name for p in official_init]
    assert {("Sora.__init__", n) for n in sora_init[len(official_init) :]} <= NEWER_KEYWORDS


def test_connection_callbacks_are_settable_properties(sora_sdk) -> None:
    official = [n for n, v in vars(sora_sdk.SoraConnection).items() if isinstance(v, property)]
    assert len(official) == 11
    for name in official:
        prop = inspect.getattr_static(compat.SoraConnection, name)
        assert isinstance(prop, property) and prop.fset is not None, name


def test_objects_without_official_constructors_cannot_be_constructed() -> None:
    for cls in (
        compat.SoraConnection,
        compat.SoraTrackInterface,
        compat.SoraMediaTrack,
        compat.SoraAudioSource,
        compat.SoraVideoSource,
        compat.SoraVideoFrame,
        compat.SoraTransformableFrame,
        compat.SoraFrameTransformer,
    ):
        with pytest.raises(TypeError, match="no constructor"):
            cls()


def test_nanobind_signature_parser_reads_overloads(sora_sdk) -> None:
    overloads = parse_overloads(sora_sdk.SoraAudioSource.on_data)
    assert [[p.name for p in o] for o in overloads] == [
        ["data", "samples_per_channel", "timestamp"],
        ["data", "samples_per_channel"],
        ["ndarray", "timestamp"],
        ["ndarray"],
    ]
    (log,) = parse_overloads(sora_sdk.rtc_log)
    assert [p.positional_only for p in log] == [True, True]
    (read,) = parse_overloads(sora_sdk.SoraAudioSinkImpl.read)
    assert [(p.name, p.has_default) for p in read] == [("frames", True), ("timeout", True)]


def _preference_story(m: Any) -> list[Any]:
    """The same operations on a SoraVideoCodecPreference of module ``m``; what they return."""
    t, i = m.SoraVideoCodecType, m.SoraVideoCodecImplementation
    story: list[Any] = []
    pref = m.SoraVideoCodecPreference()
    story += [pref.to_json(), pref.find(t.VP9), pref.get_or_add(t.VP9), pref.get_or_add(t.VP9)]
    pref.codecs[0].encoder = i.INTERNAL
    story += [
        pref.to_json(),
        pref.has_implementation(i.INTERNAL),
        pref.has_implementation(i.AMD_AMF),
    ]
    other = m.SoraVideoCodecPreference(
        [
            m.SoraVideoCodecPreference.Codec(t.VP9, None, i.INTERNAL),
            m.SoraVideoCodecPreference.Codec(type=t.H264, encoder=i.CISCO_OPENH264),
        ]
    )
    pref.merge(other)
    story += [pref.to_json(), pref.find(t.H264), pref.find(int(t.H264))]
    copy = pref.codecs
    pref.codecs = copy[:1]
    story += [pref.to_json()]
    return story


@needs_official
def test_codec_preference_behaves_like_the_official(sora_sdk) -> None:
    assert _preference_story(compat) == _preference_story(sora_sdk)


@needs_official
def test_codec_capability_has_the_official_shape(sora_sdk) -> None:
    theirs = sora_sdk.get_video_codec_capability().to_json()
    mine = compat.get_video_codec_capability().to_json()
    internal = [e for e in mine["engines"] if e["name"] == "internal"]
    assert [c["type"] for c in internal[0]["codecs"]] == [
        c["type"] for c in theirs["engines"][0]["codecs"]
    ]
    assert set(internal[0]["codecs"][0]) == set(theirs["engines"][0]["codecs"][0])
    pref = compat.create_video_codec_preference_from_implementation(
        compat.get_video_codec_capability(), compat.SoraVideoCodecImplementation.INTERNAL
    )
    assert isinstance(pref, compat.SoraVideoCodecPreference)
    # A legitimate difference: this INTERNAL engine also has H.264/H.265 (x264/x265 +
    # FFmpeg); libwebrtc's INTERNAL without OpenH264 has neither.
    index = pref.find(compat.SoraVideoCodecType.H264)
    assert index is not None
    h264 = pref.codecs[index]
    official_h264 = next(c for c in theirs["engines"][0]["codecs"] if c["type"] == "H264")
    assert official_h264["encoder"] is False
    assert h264.decoder is compat.SoraVideoCodecImplementation.INTERNAL
