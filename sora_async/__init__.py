"""sora_async: a pure-Python asyncio client for WebRTC SFU Sora.

>>> import asyncio
>>> from sora_async import Connection
>>> async def main() -> None:
...     async with Connection("wss://sora.example.com/signaling", "recvonly", "ch") as conn:
...         conn.on("notify", print)
...         await conn.wait_closed()
"""

__version__ = "0.1.0"

from .connection import Connection
from .enums import (
    DisconnectCode,
    Role,
    SignalingDirection,
    SignalingType,
    TrackState,
)
from .errors import SoraConnectionError
from .rtc import RemoteTrack

__all__ = [
    "Connection",
    "DisconnectCode",
    "RemoteTrack",
    "Role",
    "SignalingDirection",
    "SignalingType",
    "SoraConnectionError",
    "TrackState",
    "__version__",
]

# Media I/O (issue 4): numpy in and out; encoded transform (issue 7).
from .audio_sink import AudioSink, AudioStreamSink
from .audio_source import AudioSource
from .frames import AudioFrame, VideoFrame
from .transform import (
    AudioFrameTransformer,
    TransformableAudioFrame,
    TransformableVideoFrame,
    VideoFrameTransformer,
)
from .vad import VAD
from .video_sink import VideoSink
from .video_source import VideoSource

__all__ += [
    "VAD",
    "AudioFrame",
    "AudioFrameTransformer",
    "AudioSink",
    "AudioSource",
    "AudioStreamSink",
    "TransformableAudioFrame",
    "TransformableVideoFrame",
    "VideoFrame",
    "VideoFrameTransformer",
    "VideoSink",
    "VideoSource",
]
