#!/usr/bin/env python3
"""Project task runner; needs nothing but Python 3.11+.

    python3 dev.py demo            # dev server + clients, real media flowing
    python3 dev.py test [ARGS]     # the whole test suite (pytest ARGS)
    python3 dev.py lint            # ruff + mypy

Each task creates (or reuses) the virtual environment in .venv and installs
this package with its test extras into it, so a fresh clone needs no set-up.
The official ``sora_sdk`` referee only ships a CPython 3.11 wheel; when a
python3.11 is on PATH the environment is built with it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed"


def _base_python() -> str:
    # sora_sdk==2025.4.0 (the test referee) is published for CPython 3.11 only.
    for name in ("python3.11",):
        found = shutil.which(name)
        if found:
            return found
    return sys.executable


def _requirements_digest() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_env() -> None:
    if not PY.exists():
        print(f"[dev] creating {VENV}", flush=True)
        subprocess.check_call([_base_python(), "-m", "venv", str(VENV)])
    digest = _requirements_digest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    print("[dev] installing sora_async[test] into .venv", flush=True)
    pip = [str(PY), "-m", "pip", "--disable-pip-version-check"]
    subprocess.check_call([*pip, "install", "-q", "--upgrade", "pip"])
    subprocess.check_call([*pip, "install", "-q", "-e", f"{ROOT}[test]"])
    STAMP.write_text(digest)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    task, rest = argv[0], argv[1:]
    ensure_env()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if task == "test":
        return subprocess.call([str(PY), "-m", "pytest", *rest], cwd=ROOT, env=env)
    if task == "demo":
        return subprocess.call([str(PY), "-m", "sora_async.demo", *rest], cwd=ROOT, env=env)
    if task == "lint":
        rc = subprocess.call([str(PY), "-m", "ruff", "check", "sora_async", "tests"], cwd=ROOT)
        return rc or subprocess.call([str(PY), "-m", "mypy"], cwd=ROOT)
    print(f"unknown task {task!r}; try: demo, test, lint", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
