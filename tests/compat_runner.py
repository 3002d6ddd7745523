"""``tests/official/runner.py`` driving the module named by ``SORA_COMPAT_MODULE``.

The official-client runner imports ``sora_sdk``; this script first makes that
name refer to the module under test (``sora_async.compat`` by default, or
``sora_sdk`` itself), then runs the runner unchanged. The differential suite
(``tests/test_compat_differential.py``) runs the same scenarios through it
for both modules.

Usage::

    SORA_COMPAT_MODULE=sora_async.compat python tests/compat_runner.py '<config JSON>'
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def main() -> int:
    module_name = os.environ.get("SORA_COMPAT_MODULE", "sora_async.compat")
    if module_name != "sora_sdk":
        sys.modules["sora_sdk"] = importlib.import_module(module_name)
    from tests.official import runner

    return runner.main(sys.argv)


if __name__ == "__main__":
    sys.exit(main())
