"""The notebooks (notebooks/*.ipynb, every one, picked up by name) run from top to bottom
without an error, in a kernel of the interpreter running the tests, and the copies in the
repository hold the outputs `python notebooks/run.py` saved, plots included.

Each notebook runs on a copy, with its files in a fresh tmp_path (BERTJAX_NOTEBOOK_WORK),
through notebooks/run.py's `execute`, the function that saves the committed outputs.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import sys

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_runner():
    spec = importlib.util.spec_from_file_location(
        "bertjax_notebooks_run", os.path.join(ROOT, "notebooks", "run.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUNNER = _load_runner()
NOTEBOOKS = RUNNER.notebook_paths()


def _has_png(cell: nbformat.NotebookNode) -> bool:
    return any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def _plot_cells(nb: nbformat.NotebookNode) -> list[int]:
    """Cells that show a figure: the saved copy has an image there, or the code calls
    plt.show()."""
    return [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (_has_png(cell) or "plt.show(" in cell.source)
    ]


def test_the_notebooks_are_found():
    names = {os.path.basename(path) for path in NOTEBOOKS}
    assert {"quickstart.ipynb", "finetune.ipynb", "convert.ipynb"} <= names, names


@pytest.mark.parametrize(
    "path", NOTEBOOKS, ids=[os.path.basename(p).removesuffix(".ipynb") for p in NOTEBOOKS]
)
def test_notebook_runs(path: str, tmp_path) -> None:
    name = os.path.relpath(path, ROOT)
    saved = nbformat.read(path, as_version=4)
    code = [cell for cell in saved.cells if cell.cell_type == "code"]
    # Saved after a full run (python notebooks/run.py), not with cleared outputs.
    assert (
        code and all(cell.execution_count for cell in code) and any(cell.outputs for cell in code)
    ), f"{name}: saved without its outputs; run python notebooks/run.py {name}"
    plots = _plot_cells(saved)
    missing = [i for i in plots if not _has_png(saved.cells[i])]
    assert not missing, f"{name}: cells {missing} were saved without their plot (image/png)"

    nb = copy.deepcopy(saved)
    nb.cells.append(
        nbformat.v4.new_code_cell("import sys\nprint(sys.executable)\nprint(sys.prefix)")
    )
    RUNNER.execute(nb, name, {RUNNER.WORK_VARIABLE: str(tmp_path)})

    # The kernel is the interpreter of the tests (a venv's, in CI), not some other python3.
    printed = "".join(out.get("text", "") for out in nb.cells[-1].outputs).splitlines()
    assert printed == [sys.executable, sys.prefix], printed
    missing = [i for i in plots if not _has_png(nb.cells[i])]
    assert not missing, f"{name}: cells {missing} showed no plot (image/png) when run"
