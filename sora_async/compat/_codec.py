"""``SoraVideoCodecCapability`` / ``SoraVideoCodecPreference`` on :mod:`sora_async.hwaccel`.

The core's capability and preference objects already have the official
shape (same nested ``Engine``/``Codec``/``Parameters``, same JSON, same
``find``/``get_or_add``/``has_implementation``/``merge`` semantics); the compat
names are those classes, with ``SoraVideoCodecPreference.Codec()`` also
accepting no argument as the official overload does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..hwaccel.capability import (
    PreferenceCodec,
    PreferenceParameters,
    VideoCodecCapability,
    VideoCodecPreference,
)
from ..hwaccel.capability import (
    create_video_codec_preference_from_implementation as _create_preference,
)
from ..hwaccel.capability import get_video_codec_capability as _get_capability
from ._enums import SoraVideoCodecImplementation, SoraVideoCodecType

SoraVideoCodecCapability = VideoCodecCapability


class _PreferenceCodec(PreferenceCodec):
    """``SoraVideoCodecPreference.Codec(type, encoder=None, decoder=None, parameters=None)``.

    ``Codec()`` (the official no-argument overload) makes a VP8 entry with no
    encoder and no decoder; the official one leaves ``type`` unset (reading
    it raises ``ValueError``) until assigned.
    """

    def __init__(
        self,
        type: SoraVideoCodecType | None = None,  # the official keyword
        encoder: SoraVideoCodecImplementation | None = None,
        decoder: SoraVideoCodecImplementation | None = None,
        parameters: PreferenceParameters | None = None,
    ) -> None:
        super().__init__(
            SoraVideoCodecType.VP8 if type is None else type,
            encoder,
            decoder,
            parameters if parameters is not None else PreferenceParameters(),
        )


class SoraVideoCodecPreference(VideoCodecPreference):
    """The codecs a connection offers, and which implementation runs each.

    Example::

        pref = SoraVideoCodecPreference([
            SoraVideoCodecPreference.Codec(SoraVideoCodecType.VP8,
                                           SoraVideoCodecImplementation.INTERNAL,
                                           SoraVideoCodecImplementation.INTERNAL)])
        sora = Sora(video_codec_preference=pref)
    """

    Codec = _PreferenceCodec
    Parameters = PreferenceParameters

    def __init__(self, codecs: Iterable[PreferenceCodec] = ()) -> None:
        super().__init__(codecs)

    @property
    def codecs(self) -> list[PreferenceCodec]:
        """The entries, in preference order (the list itself: changes to it count)."""
        return self._codecs

    @codecs.setter
    def codecs(self, codecs: Iterable[PreferenceCodec]) -> None:
        self._codecs = list(codecs)

    @classmethod
    def _of(cls, preference: VideoCodecPreference) -> SoraVideoCodecPreference:
        return cls(preference.codecs)


def get_video_codec_capability(openh264: str | None = None) -> SoraVideoCodecCapability:
    """What each codec engine can encode and decode on this machine (probed once, cached).

    Example::

        capability = get_video_codec_capability()
        [e.name for e in capability.engines]   # [SoraVideoCodecImplementation.INTERNAL, ...]
    """
    if openh264 is not None and not isinstance(openh264, str):
        raise TypeError("get_video_codec_capability: openh264 must be a str path or None")
    return _get_capability(openh264)


def create_video_codec_preference_from_implementation(
    capability: SoraVideoCodecCapability, implementation: SoraVideoCodecImplementation, /
) -> SoraVideoCodecPreference:
    """Every codec of ``implementation``'s engine, with that engine wherever it works.

    Example::

        pref = create_video_codec_preference_from_implementation(
            get_video_codec_capability(), SoraVideoCodecImplementation.INTERNAL)
    """
    if not isinstance(capability, VideoCodecCapability):
        raise TypeError(
            "create_video_codec_preference_from_implementation: expected a "
            f"SoraVideoCodecCapability, got {type(capability).__name__}"
        )
    return SoraVideoCodecPreference._of(_create_preference(capability, implementation))


def _as_core_preference(value: Any) -> Any:
    """``video_codec_preference`` for :class:`sora_async.Connection` (None stays None)."""
    if value is None or isinstance(value, VideoCodecPreference):
        return value
    return VideoCodecPreference.coerce(value)
