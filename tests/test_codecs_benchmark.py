"""``python -m sora_async.codecs.benchmark`` runs (tiny sizes here; it is not a test itself)."""

from __future__ import annotations

import pytest

from sora_async.codecs import benchmark
from tests.openh264_support import OPENH264, needs_openh264


def test_the_benchmark_prints_a_row_per_codec_and_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert benchmark.main(["--sizes", "64x64,96x64", "--frames", "4"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split()[:6] == ["codec", "size", "encoder", "decoder", "enc", "ms"]
    assert [r.split()[:2] for r in rows[1:]] == [
        [codec, size] for size in ("64x64", "96x64") for codec in benchmark.DEFAULT_CODECS
    ]
    # First output for frame 1 (delay 0) everywhere (SVT-AV1 needs 64x64 at least).
    assert all(r.split()[-2] == "0" for r in rows[1:])


@needs_openh264
def test_the_benchmark_runs_openh264(capsys: pytest.CaptureFixture[str]) -> None:
    assert OPENH264 is not None
    argv = ["--sizes", "64x48", "--frames", "4", "--codecs", "H264"]
    argv += ["--implementation", "CISCO_OPENH264", "--openh264", OPENH264]
    assert benchmark.main(argv) == 0
    (row,) = capsys.readouterr().out.splitlines()[1:]
    assert row.split()[:4] == ["H264", "64x48", "OpenH264", "OpenH264"]
