"""Where the tests find Cisco's libopenh264 (Debian's ``libopenh264-7`` has the same API).

``OPENH264_PATH`` overrides the search. ``OPENH264`` is None, and
``needs_openh264`` skips with the reason, when no library is found or the one
found cannot be used (``.ci/run`` installs ``libopenh264-7`` when it can).
"""

from __future__ import annotations

import glob
import os

import pytest

from sora_async.codecs.openh264 import OpenH264Error, OpenH264Library

_PATTERNS = (
    "/usr/lib/*/libopenh264.so*",
    "/usr/lib/libopenh264.so*",
    "/usr/local/lib/libopenh264*.so*",
)


def find_openh264() -> tuple[str | None, str]:
    """``(path, "")`` for a loadable libopenh264, else ``(None, why)``."""
    explicit = os.environ.get("OPENH264_PATH")
    candidates = [explicit] if explicit else [p for g in _PATTERNS for p in sorted(glob.glob(g))]
    if not candidates:
        return None, "no libopenh264 found (apt install libopenh264-7, or set OPENH264_PATH)"
    errors = []
    for path in candidates:
        try:
            OpenH264Library.load(path)
        except OpenH264Error as exc:
            errors.append(str(exc))
            continue
        return path, ""
    return None, f"no usable libopenh264: {'; '.join(errors)}"


OPENH264, _WHY = find_openh264()
needs_openh264 = pytest.mark.skipif(OPENH264 is None, reason=_WHY)
#: ``(major, minor, revision)`` of :data:`OPENH264` (None without one).
OPENH264_VERSION = OpenH264Library.load(OPENH264).version if OPENH264 else None
