r"""`python -m bertjax compare`: runs side by side, as a table and plots.

  python -m bertjax compare /runs/sweep --out=/runs/sweep_report
  python -m bertjax compare /runs/base /runs/whole_word /runs/sweep --out=/tmp/report

Each DIR is a run directory (a train WORKDIR: config.json, logs/, optionally
results.json) or a sweep directory whose subdirectories are run directories. Writes
REPORT/report.md, report.csv, loss.png and downstream.png (when a run has downstream
results) and prints the table. An existing REPORT is replaced once the new report is
complete, and only if it is a previous report. The library is bertjax/tools/compare.py.
"""

from __future__ import annotations

import os
import sys

from bertjax.commands import flags as common

HELP = {"compare": common.Usage((common.OUT,), "ablations.md", "DIR...")}


def main(argv: list[str]) -> None:
    from bertjax.tools import compare

    dirs = argv[1:]
    if not dirs:
        raise ValueError("no run directories: python -m bertjax compare DIR... --out=REPORT")
    out = os.path.abspath(common.required(common.OUT))
    print(compare.compare(dirs, out))
    print(f"wrote {os.path.join(out, 'report.md')}", file=sys.stderr)
