"""The code stays ruff-clean and ``mypy --strict``-clean (pyproject's settings), in CI too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "command",
    # mypy's configured target is the package; the benchmarks (bench/) are checked too.
    [["ruff", "check", "."], ["mypy"], ["mypy", "bench"]],
    ids=["ruff", "mypy-strict", "mypy-strict-bench"],
)
def test_tool_is_clean(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
