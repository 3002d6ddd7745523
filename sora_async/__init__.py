"""sora_async: a pure-Python asyncio client for WebRTC SFU Sora."""

__version__ = "0.1.0"
