"""A local, Sora-compatible development server.

Run it from the command line (``python -m sora_async.devserver --port 5000``
or ``sora-async-devserver``), from Python::

    from sora_async.devserver import DevServer

    async with DevServer(port=0) as server:
        ...  # clients connect to server.signaling_url; the HTTP API is server.api_url

or in pytest through the ``sora_devserver`` / ``sora_devserver_factory``
fixtures (``sora_async.devserver.pytest_plugin``). See ``docs/devserver.md``.
"""

from .auth import AuthError, decode_jwt, encode_jwt
from .ids import new_id
from .server import SORA_VERSION, BackgroundDevServer, DevServer, DevServerOptions
from .session import ConnectionInfo, default_simulcast_encodings

__all__ = [
    "SORA_VERSION",
    "AuthError",
    "BackgroundDevServer",
    "ConnectionInfo",
    "DevServer",
    "DevServerOptions",
    "decode_jwt",
    "default_simulcast_encodings",
    "encode_jwt",
    "new_id",
]
