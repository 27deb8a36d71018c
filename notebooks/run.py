r"""Executes the notebooks and saves them with their outputs.

  python notebooks/run.py                      # every notebooks/*.ipynb
  python notebooks/run.py quickstart convert   # some of them (.ipynb optional)

Each notebook runs top to bottom in a fresh kernel of the Python that runs this script
(the venv's, whatever kernels Jupyter has registered elsewhere), with the repository
root as the working directory, and is written back with its outputs. A cell that fails
or runs past --timeout stops that notebook: the file is left as it was, the notebook
and cell are named on stderr, and the exit status is 1 once the others have run.

The notebooks keep their files under $BERTJAX_NOTEBOOK_WORK. Unset, each notebook gets
a fresh temporary directory, deleted afterwards, so that the saved outputs are those of
a first run (a notebook re-run in the same directory resumes instead); set, every
notebook shares it and it is kept. tests/test_notebooks.py runs `execute` on a copy of
each notebook.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
WORK_VARIABLE = "BERTJAX_NOTEBOOK_WORK"
CELL_TIMEOUT_S = 600  # per cell; a `train` cell takes a minute or two on a busy 2-core CPU


class NotebookError(Exception):
    """A cell of a notebook failed; the message names the notebook and the cell."""


def notebook_paths(names: Sequence[str] = ()) -> list[str]:
    """notebooks/NAME.ipynb for each name (a path or a bare name), or every notebook."""
    if not names:
        return sorted(glob.glob(os.path.join(NOTEBOOKS, "*.ipynb")))
    paths = []
    for name in names:
        path = name if os.sep in name else os.path.join(NOTEBOOKS, name)
        path = path if path.endswith(".ipynb") else path + ".ipynb"
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such notebook")
        paths.append(os.path.abspath(path))
    return paths


class ThisPythonKernel(AsyncKernelManager):
    """A kernel manager that only knows ipykernel's own spec (it searches no kernel
    directories), whose argv[0] is sys.executable: the kernel is this interpreter, never
    a `python3` kernel that Jupyter has registered for another environment."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("kernel_spec_manager", KernelSpecManager(kernel_dirs=[]))
        super().__init__(**kwargs)


def execute(
    nb: nbformat.NotebookNode,
    name: str,
    env: Mapping[str, str] | None = None,
    timeout: int = CELL_TIMEOUT_S,
) -> nbformat.NotebookNode:
    """Runs every cell of `nb` in place (its outputs replaced) and returns it.

    The kernel starts in the repository root with os.environ updated by `env`.
    Raises NotebookError naming `name` and the cell (its index and first line) when a
    cell raises, times out or kills the kernel.
    """
    current = {"index": -1}

    def on_cell_start(cell: nbformat.NotebookNode, cell_index: int) -> None:
        current["index"] = cell_index

    client = NotebookClient(
        nb,
        kernel_name="python3",
        kernel_manager_class=ThisPythonKernel,
        timeout=timeout,
        record_timing=False,
        resources={"metadata": {"path": ROOT}},
        on_cell_start=on_cell_start,
    )
    try:
        client.execute(env={**os.environ, **(env or {})})
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
        index = current["index"]
        first = nb.cells[index].source.strip().splitlines()[0] if index >= 0 else ""
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # the traceback's terminal colours
        raise NotebookError(f"{name}: cell {index} ({first[:60]!r}) failed:\n{text}") from e
    return nb


def run_file(path: str, timeout: int = CELL_TIMEOUT_S) -> None:
    """Executes the notebook at `path` and writes it back with its outputs."""
    nb = nbformat.read(path, as_version=4)
    work = os.environ.get(WORK_VARIABLE)
    own = None if work else tempfile.mkdtemp(prefix="bertjax_notebook_")
    try:
        execute(nb, os.path.relpath(path, ROOT), {WORK_VARIABLE: work or own}, timeout)
    finally:
        if own:
            shutil.rmtree(own, ignore_errors=True)
    tmp = path + ".tmp"
    nbformat.write(nb, tmp)
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks (default: all)")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S, help="seconds per cell")
    args = parser.parse_args()
    failed = 0
    for path in notebook_paths(args.names):
        rel = os.path.relpath(path, ROOT)
        print(f"running {rel}", flush=True)
        try:
            run_file(path, args.timeout)
        except NotebookError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
        else:
            print(f"wrote {rel}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
