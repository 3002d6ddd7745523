"""Identifiers shaped like Sora's: a UUIDv4 written as 26 Base32 characters.

Sora's ``connection_id`` and ``session_id`` are UUIDv4 values encoded in
Base32 (``DOC:SIGNALING``); clients rely on the connection id being exactly
26 ASCII bytes, because that is the length of the messaging header
(sora-python-sdk ``tests/test_messaging_header.py``). Real ids look like
``S8YEN0TSE13JDC2991NG4XZ150``: Crockford's alphabet (no I, L, O, U), the 16
bytes encoded as a bit string of 130 bits with two zero bits of padding.
"""

from __future__ import annotations

import re
import uuid

#: Crockford's Base32 alphabet.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

#: Length of an encoded id.
ID_LENGTH = 26

_ID_PATTERN = re.compile(f"[{ALPHABET}]{{{ID_LENGTH}}}")


def encode_uuid(value: uuid.UUID) -> str:
    """Encode a UUID as 26 Base32 characters.

    >>> encode_uuid(uuid.UUID(int=0))
    '00000000000000000000000000'
    """
    # 128 bits + 2 padding bits = 130 bits = 26 groups of 5, as base32 of the
    # 16 raw bytes without "=" padding would give.
    bits = value.int << 2
    chars = []
    for _ in range(ID_LENGTH):
        chars.append(ALPHABET[bits & 0x1F])
        bits >>= 5
    return "".join(reversed(chars))


def new_id() -> str:
    """A fresh random id, e.g. ``"S8YEN0TSE13JDC2991NG4XZ150"``."""
    return encode_uuid(uuid.uuid4())


def is_id(text: object) -> bool:
    """True if ``text`` has the shape of an id made by :func:`new_id`."""
    return isinstance(text, str) and _ID_PATTERN.fullmatch(text) is not None
