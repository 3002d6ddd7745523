"""``python -m sora_async``: the ``sora-async`` command line (see :mod:`sora_async.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
