"""HS256 JSON Web Tokens (RFC 7519) with the standard library only.

Sora Cloud and the official SDK test suites authenticate with a JWT carried in
``connect.metadata.access_token`` whose claims also override connection
settings (sora-python-sdk ``tests/test_authz_simulcast.py``). The dev server
verifies such tokens when it is started with a secret; :func:`encode_jwt` is
there so that tests and users can mint them without PyJWT.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["AuthError", "decode_jwt", "encode_jwt"]


class AuthError(Exception):
    """A token was missing, malformed, badly signed, expired or not for this channel."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.urlsafe_b64decode(padded.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise AuthError(f"bad base64url segment: {exc}") from exc


def _sign(signing_input: bytes, secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, signing_input, hashlib.sha256).digest()


def encode_jwt(claims: Mapping[str, Any], secret: str | bytes) -> str:
    """Sign ``claims`` with HS256.

    >>> token = encode_jwt({"channel_id": "ch"}, "secret")
    >>> decode_jwt(token, "secret")
    {'channel_id': 'ch'}
    """
    header = _b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64encode(json.dumps(dict(claims), separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    return f"{header}.{payload}.{_b64encode(_sign(signing_input, secret))}"


def _numeric_claim(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(f"claim {name!r} is not a number")
    return float(value)


def decode_jwt(
    token: object, secret: str | bytes, *, now: float | None = None, leeway: float = 0.0
) -> dict[str, Any]:
    """Verify an HS256 token and return its claims.

    Checks the signature (constant time), ``alg`` (only HS256: "none" and
    asymmetric algorithms are refused), and ``exp`` / ``nbf`` when present.
    Raises :class:`AuthError` with a human-readable detail otherwise.
    """
    if not isinstance(token, str):
        raise AuthError("access_token is not a string")
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthError("access_token is not a JWS compact serialization")
    header_b64, payload_b64, signature_b64 = parts
    try:
        header = json.loads(_b64decode(header_b64))
        claims = json.loads(_b64decode(payload_b64))
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuthError(f"access_token is not JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise AuthError("access_token alg is not HS256")
    expected = _sign(f"{header_b64}.{payload_b64}".encode("ascii"), secret)
    if not hmac.compare_digest(expected, _b64decode(signature_b64)):
        raise AuthError("access_token signature mismatch")
    if not isinstance(claims, dict):
        raise AuthError("access_token claims are not an object")
    current = time.time() if now is None else now
    exp = _numeric_claim(claims, "exp")
    if exp is not None and current > exp + leeway:
        raise AuthError("access_token expired")
    nbf = _numeric_claim(claims, "nbf")
    if nbf is not None and current + leeway < nbf:
        raise AuthError("access_token not yet valid")
    return claims
