"""Exceptions raised by :mod:`sora_async`."""

from __future__ import annotations

from .enums import DisconnectCode


class SoraConnectionError(Exception):
    """A connection could not be established or ended while being established.

    ``code`` and ``message`` are what the ``disconnect`` event reported, e.g.
    ``DisconnectCode.WEBSOCKET_HANDSHAKE_FAILED`` and
    ``"Failed Websocket handshake: last_ec=... last_url=..."``.
    """

    def __init__(self, code: DisconnectCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[SoraConnectionError], tuple[DisconnectCode, str]]:
        return (type(self), (self.code, self.message))
