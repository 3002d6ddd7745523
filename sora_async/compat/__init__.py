"""The official Sora Python SDK API (``sora_sdk``) on the ``sora_async`` core.

An application written for the official SDK runs by changing its import::

    from sora_async.compat import Sora, SoraVideoSink   # was: from sora_sdk import ...

    sora = Sora()
    conn = sora.create_connection(signaling_urls=["wss://sora.example.com/signaling"],
                                  role="recvonly", channel_id="sora")
    conn.on_notify = print
    conn.connect()            # returns at once; callbacks arrive on another thread
    ...
    conn.disconnect()         # blocks until on_disconnect was called (10 s at most)

Every public name of ``sora_sdk`` is here, with compatible signatures, the
same enum members and values, and the same semantics (``sora-sdk-reference.md``):
one event-loop thread and one callback thread per ``Sora`` instance, started
by the first ``connect()`` and stopped when its last connection has ended.
Where the official SDK is a known trap, this layer is safer: callback
exceptions are logged with their traceback instead of aborting the process,
``disconnect()`` is bounded and interruptible, methods after ``disconnect()``
raise ``RuntimeError``, and objects can be garbage-collected in any order.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .. import __version__ as _core_version
from ._codec import (
    SoraVideoCodecCapability,
    SoraVideoCodecPreference,
    create_video_codec_preference_from_implementation,
    get_video_codec_capability,
)
from ._connection import Sora, SoraConnection
from ._enums import (
    SoraDegradationPreference,
    SoraLoggingSeverity,
    SoraSignalingDirection,
    SoraSignalingErrorCode,
    SoraSignalingType,
    SoraTrackState,
    SoraTransformableAudioFrameType,
    SoraTransformableFrameDirection,
    SoraVideoCodecImplementation,
    SoraVideoCodecType,
)
from ._log import enable_libwebrtc_log, rtc_log
from ._sinks import (
    SoraAudioFrame,
    SoraAudioSink,
    SoraAudioSinkImpl,
    SoraAudioStreamSink,
    SoraAudioStreamSinkImpl,
    SoraVAD,
    SoraVideoFrame,
    SoraVideoSink,
    SoraVideoSinkImpl,
)
from ._tracks import SoraAudioSource, SoraMediaTrack, SoraTrackInterface, SoraVideoSource
from ._transform import (
    SoraAudioFrameTransformer,
    SoraFrameTransformer,
    SoraTransformableAudioFrame,
    SoraTransformableFrame,
    SoraTransformableVideoFrame,
    SoraVideoFrameTransformer,
)

#: This library's version (``sora_async``), not the official SDK's.
__version__ = _core_version

__all__ = [
    "PackageNotFoundError",
    "Sora",
    "SoraAudioFrame",
    "SoraAudioFrameTransformer",
    "SoraAudioSink",
    "SoraAudioSinkImpl",
    "SoraAudioSource",
    "SoraAudioStreamSink",
    "SoraAudioStreamSinkImpl",
    "SoraConnection",
    "SoraDegradationPreference",
    "SoraFrameTransformer",
    "SoraLoggingSeverity",
    "SoraMediaTrack",
    "SoraSignalingDirection",
    "SoraSignalingErrorCode",
    "SoraSignalingType",
    "SoraTrackInterface",
    "SoraTrackState",
    "SoraTransformableAudioFrame",
    "SoraTransformableAudioFrameType",
    "SoraTransformableFrame",
    "SoraTransformableFrameDirection",
    "SoraTransformableVideoFrame",
    "SoraVAD",
    "SoraVideoCodecCapability",
    "SoraVideoCodecImplementation",
    "SoraVideoCodecPreference",
    "SoraVideoCodecType",
    "SoraVideoFrame",
    "SoraVideoFrameTransformer",
    "SoraVideoSink",
    "SoraVideoSinkImpl",
    "SoraVideoSource",
    "__version__",
    "create_video_codec_preference_from_implementation",
    "enable_libwebrtc_log",
    "get_video_codec_capability",
    "rtc_log",
    "version",
]
