"""``examples/notebook.ipynb`` executes headless and shows what it promises.

Two ways: with Jupyter itself (nbclient + ipykernel, the ``notebook`` extra;
skipped where they are not installed), and always as a script: the code cells
run in order on one event loop with top-level ``await``, as IPython runs
them, with ``IPython.display`` and matplotlib stood in for when missing.
"""

from __future__ import annotations

import ast
import base64
import inspect
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "notebook.ipynb"
PNG = b"\x89PNG\r\n\x1a\n"


def code_cells() -> list[str]:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]


def test_notebook_is_stored_without_outputs() -> None:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


async def test_notebook_code_runs_as_a_script(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[Any] = []
    try:
        import IPython.display as display_module
    except ImportError:  # no IPython: a stand-in with what the notebook and matplotlib touch
        display_module = types.ModuleType("IPython.display")

        class _Image:
            def __init__(self, data: bytes) -> None:
                self.data = data

        display_module.Image = _Image  # type: ignore[attr-defined]
        ipython = types.ModuleType("IPython")
        ipython.display = display_module  # type: ignore[attr-defined]
        ipython.get_ipython = lambda: None  # type: ignore[attr-defined]
        ipython.version_info = (8, 0, 0)  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "IPython", ipython)
        monkeypatch.setitem(sys.modules, "IPython.display", display_module)
    monkeypatch.setattr(display_module, "display", shown.append, raising=False)
    Image = display_module.Image
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        plt = types.ModuleType("matplotlib.pyplot")

        class _Anything:
            def __getattr__(self, name: str) -> Any:
                return lambda *args, **kwargs: self

            def __iter__(self) -> Any:
                return iter((self, self))

        plt.subplots = lambda *a, **k: (_Anything(), _Anything())  # type: ignore[attr-defined]
        plt.show = lambda *a, **k: None  # type: ignore[attr-defined]
        package = types.ModuleType("matplotlib")
        package.pyplot = plt  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "matplotlib", package)
        monkeypatch.setitem(sys.modules, "matplotlib.pyplot", plt)

    namespace: dict[str, Any] = {"__name__": "__notebook__"}
    for index, source in enumerate(code_cells()):
        code = compile(source, f"<cell {index}>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, namespace)
        if inspect.iscoroutine(result):
            await result

    images = [item.data for item in shown if isinstance(item, Image)]
    assert len(images) == 3 and all(data.startswith(PNG) for data in images)
    assert len(namespace["seconds"]) >= 3
    assert min(namespace["video_kbps"]) > 0
    assert namespace["receiver"].disconnect_code.name == "CLOSE_SUCCEEDED"


def test_notebook_executes_in_jupyter() -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    notebook = nbformat.read(str(NOTEBOOK), as_version=4)
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    pngs_by_cell = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        pngs = [o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]
        errors = [o for o in cell.outputs if o["output_type"] == "error"]
        assert not errors, errors
        pngs_by_cell.append(pngs)
    frames = next(p for p in pngs_by_cell if len(p) == 3)  # the inline frames
    assert all(base64.b64decode(data).startswith(PNG) for data in frames)
    assert sum(len(p) for p in pngs_by_cell) == 4  # three frames and the bit-rate plot
