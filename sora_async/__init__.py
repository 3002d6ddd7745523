"""sora_async: a pure-Python asyncio client for WebRTC SFU Sora.

>>> import asyncio
>>> from sora_async import Connection
>>> async def main() -> None:
...     async with Connection("wss://sora.example.com/signaling", "recvonly", "ch") as conn:
...         conn.on("notify", print)
...         await conn.wait_closed()
"""

__version__ = "0.1.0"

from .connection import Connection, RemoteTrack
from .enums import (
    DisconnectCode,
    Role,
    SignalingDirection,
    SignalingType,
    TrackState,
)
from .errors import SoraConnectionError

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
