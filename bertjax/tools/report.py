"""The report `compare` writes of runs read by bertjax/tools/compare.py: the table
(markdown and csv), the plots and report.md, written atomically.

Which config keys a run is shown with (its overrides: those whose values differ among
the compared runs, the runs' own paths left out) is decided here too.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bertjax import paths

if TYPE_CHECKING:
    from bertjax.tools.compare import Run

# Every file a report directory may hold: an existing --out is replaced only when it
# holds nothing else (a previous report), never an unrelated directory.
REPORT_FILES = ("report.md", "report.csv", "loss.png", "downstream.png")
# Config keys that name a run's own files: they differ between runs by construction and
# say nothing about what was compared. Besides these, any key whose last part is `dir`
# or `path` or ends in `_dir` / `_path` (phase2.data_dir, distill.teacher_path).
PATH_KEYS = frozenset({"data.dir", "tokenizer.path", "init_from"})


def is_path_key(key: str) -> bool:
    """Whether a flattened config key names a file or directory of the run's own."""
    last = key.rsplit(".", 1)[-1]
    return key in PATH_KEYS or last in ("dir", "path") or last.endswith(("_dir", "_path"))


_MISSING = object()


def overrides(configs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per config, its keys (and values) whose values differ among `configs`, path keys
    left out; a key a config lacks is left out of that config's. All empty for one."""
    if len(configs) < 2:
        return [{} for _ in configs]
    keys = sorted({k for c in configs for k in c if not is_path_key(k)})

    def canonical(value: Any) -> str:
        return "<missing>" if value is _MISSING else json.dumps(value, sort_keys=True)

    differing = [k for k in keys if len({canonical(c.get(k, _MISSING)) for c in configs}) > 1]
    return [{k: c[k] for k in differing if k in c} for c in configs]


# --------------------------------------------------------------------------- table


def downstream_keys(runs: Iterable[Run]) -> list[tuple[str, str]]:
    """Every (task, metric) of any run, in order of first appearance."""
    return list(dict.fromkeys(k for run in runs for k in run.downstream))


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def overrides_text(diff: Mapping[str, Any]) -> str:
    """{"masking.strategy": "whole_word"} -> "masking.strategy=whole_word"."""
    return " ".join(f"{k}={_value_text(v)}" for k, v in diff.items())


def csv_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of report.csv: numbers as they are, "" where a run has none."""
    keys = downstream_keys(runs)
    header = ["run", "overrides", "steps", "final_train_loss", "final_eval_loss"]
    for task, metric in keys:
        header += [f"{task}/{metric} {s}" for s in ("median", "min", "max", "n")]
    header += ["tokens_per_s", "mfu", "wall_time_s"]
    rows = []
    for run in runs:
        row: list[Any] = [
            run.name,
            overrides_text(run.overrides),
            run.steps,
            run.train_loss[-1][1],
            run.eval_loss[-1][1] if run.eval_loss else "",
        ]
        for key in keys:
            d = run.downstream.get(key)
            row += (
                [d.median, min(d.scores), max(d.scores), len(d.scores)] if d else ["", "", "", ""]
            )
        row += [_blank(run.tokens_per_s), _blank(run.mfu), run.wall_time_s]
        rows.append(row)
    return header, rows


def _blank(value: float | None) -> Any:
    return "" if value is None else value


def _duration(seconds: float) -> str:
    """3725.4 -> "1:02:05"."""
    total = round(seconds)
    return f"{total // 3600:d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(runs: Sequence[Run]) -> str:
    """The report's table: one row per run, figures formatted for reading."""
    keys = downstream_keys(runs)
    header = [
        "run",
        "overrides",
        "steps",
        "train loss",
        "eval loss",
        *[f"{task}/{metric}" for task, metric in keys],
        "tokens/s",
        "MFU",
        "wall time",
    ]
    right = {"steps", "train loss", "eval loss", "tokens/s", "MFU", "wall time"}
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if h in right else "---" for h in header) + "|",
    ]
    for run in runs:
        cells = [
            run.name,
            overrides_text(run.overrides),
            f"{run.steps:,d}",
            f"{run.train_loss[-1][1]:.4f}",
            f"{run.eval_loss[-1][1]:.4f}" if run.eval_loss else "",
        ]
        for key in keys:
            d = run.downstream.get(key)
            cells.append(
                f"{d.median:.4g} ({min(d.scores):.4g}-{max(d.scores):.4g}, n={len(d.scores)})"
                if d
                else ""
            )
        cells += [
            "" if run.tokens_per_s is None else f"{run.tokens_per_s:,.0f}",
            "" if run.mfu is None else f"{100 * run.mfu:.3g}%",
            _duration(run.wall_time_s),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _spread(values: Sequence[float]) -> str:
    """ "median [min-max] (n=N)" of `values`."""
    return (
        f"{statistics.median(values):.4g} [{min(values):.4g}-{max(values):.4g}] (n={len(values)})"
    )


def seeds_table(runs: Sequence[Run]) -> str | None:
    """Runs that differ only by `seed`, one row per setting: the median [min-max] over
    its seeds of the final train and eval loss and of each downstream median; None when
    no setting has several seeds."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        rest = {k: v for k, v in run.overrides.items() if k != "seed"}
        groups.setdefault(overrides_text(rest) or "(no other override)", []).append(run)
    if all(len(g) < 2 for g in groups.values()):
        return None
    keys = downstream_keys(runs)
    header = ["setting", "seeds", "train loss", "eval loss"]
    header += [f"{task}/{metric}" for task, metric in keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for setting, group in groups.items():
        evals = [r.eval_loss[-1][1] for r in group if r.eval_loss]
        cells = [
            setting,
            ", ".join(str(r.overrides.get("seed", "")) for r in group),
            _spread([r.train_loss[-1][1] for r in group]),
            _spread(evals) if evals else "",
        ]
        for key in keys:
            scores = [r.downstream[key].median for r in group if key in r.downstream]
            cells.append(_spread(scores) if scores else "")
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas: no display and no pyplot, so the caller's
    own matplotlib backend (a notebook's) is left as it was."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colour(i: int) -> str:
    return f"C{i % 10}"  # matplotlib's default colour cycle


def plot_loss(runs: Sequence[Run], path: str) -> None:
    """train/loss against step per run (solid), eval/loss in the same colour (dashed,
    markers)."""
    fig = _figure(8, 5)
    ax = fig.add_subplot()
    for i, run in enumerate(runs):
        steps, losses = zip(*run.train_loss, strict=True)
        # A run with a single point would draw no line: a dot then.
        ax.plot(
            steps, losses, color=_colour(i), label=run.name, marker="o" if len(steps) == 1 else None
        )
        if run.eval_loss:
            steps, losses = zip(*run.eval_loss, strict=True)
            ax.plot(
                steps,
                losses,
                color=_colour(i),
                linestyle="--",
                marker="o",
                label=f"{run.name} (eval)",
            )
    ax.set(xlabel="step", ylabel="loss", title="train loss (solid), eval loss (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)


def plot_downstream(runs: Sequence[Run], path: str) -> None:
    """One panel per downstream (task, metric): each seed's score as a dot per run, the
    median as a black bar."""
    keys = downstream_keys(runs)
    cols = min(len(keys), 3)
    rows = math.ceil(len(keys) / cols)
    fig = _figure(max(4.0, 0.8 * len(runs) + 2) * cols, 4 * rows)
    for n, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, n + 1)
        for i, run in enumerate(runs):
            d = run.downstream.get(key)
            if d is None:
                continue
            ax.scatter([i] * len(d.scores), d.scores, color=_colour(i), s=24, alpha=0.7, zorder=3)
            ax.scatter([i], [d.median], color="black", marker="_", s=500, linewidths=2, zorder=4)
        ax.set_xticks(range(len(runs)), [r.name for r in runs], rotation=30, ha="right")
        ax.set_xlim(-0.5, len(runs) - 0.5)
        ax.set(title=f"{key[0]} ({key[1]})", ylabel=key[1])
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=100)


# --------------------------------------------------------------------------- report

# How each column is computed, in the table's order (column names, text); the downstream
# note is left out when the table has no downstream columns.
_NOTES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("steps",), "the last step with a `train/loss` point."),
    (
        ("train loss", "eval loss"),
        "the `train/loss` and `eval/loss` values at the last step that has one (blank: the run "
        "logged no evaluation); a step logged again after a resume counts with the later "
        "process's value.",
    ),
    (
        ("TASK/METRIC",),
        "the run's downstream fine-tuning scores (results.json): the median over seeds "
        "(min-max of the seeds' scores, n = the number of seeds).",
    ),
    (
        ("tokens/s", "MFU"),
        "the mean of `train/tokens_per_s` and `train/mfu` over the logged points, leaving out "
        "the first point of each process start (its window includes compilation); the only "
        "point when there is just one.",
    ),
    (
        ("wall time",),
        "per event file (one per process start), the last event's wall time minus the "
        "first's, summed over the files: the gaps between a run and its resumes do not count.",
    ),
    (
        ("overrides",),
        "the config keys (config.json, flattened) whose values differ among these runs, "
        "leaving out keys that name a run's own files ({paths}, and any key whose last part "
        "is `dir` or `path` or ends in `_dir` or `_path`).",
    ),
)

_LOSS_CAPTION = (
    "loss.png: each run's `train/loss` against step (solid line) and its "
    "`eval/loss` in the same colour (dashed line, markers), over all process "
    "starts (a step logged twice keeps the later value)."
)
_DOWNSTREAM_CAPTION = (
    "downstream.png: one panel per downstream task and metric; a dot for "
    "each seed's fine-tuning score of each run (results.json), a black bar "
    "at their median."
)


def markdown_report(runs: Sequence[Run]) -> str:
    """report.md: the table, the notes, the plots with their captions, the runs' paths."""
    paths = ", ".join(f"`{k}`" for k in sorted(PATH_KEYS))
    notes = [
        f"- {', '.join(f'**{c}**' for c in columns)}: {text.format(paths=paths)}"
        for columns, text in _NOTES
        if columns != ("TASK/METRIC",) or downstream_keys(runs)
    ]
    parts = ["# Compared runs", markdown_table(runs)]
    seeds = seeds_table(runs)
    if seeds is not None:
        parts += [
            "Over seeds (runs whose overrides differ only by `seed`): the median [min-max] "
            "of each run's final figure; a downstream cell takes each run's median over "
            "its fine-tuning seeds.",
            seeds,
        ]
    parts += [
        "How each figure is computed:\n\n" + "\n".join(notes),
        "![loss curves](loss.png)",
        _LOSS_CAPTION,
    ]
    if downstream_keys(runs):
        parts += ["![downstream scores](downstream.png)", _DOWNSTREAM_CAPTION]
    parts.append("Runs:\n\n" + "\n".join(f"- {r.name}: `{r.path}`" for r in runs))
    return "\n\n".join(parts) + "\n"


def check_out(out: str) -> None:
    """An existing `out` may be replaced only if it is a previous report (REPORT_FILES
    and nothing else): --out=. or a run directory is never removed."""
    if not (paths.exists(out) or (not paths.is_remote(out) and os.path.lexists(out))):
        return
    if not paths.isdir(out) or (not paths.is_remote(out) and os.path.islink(out)):
        raise ValueError(f"{out}: exists and is not a report directory; choose another --out")
    others = sorted(set(paths.listdir(out)) - set(REPORT_FILES))
    if others:
        raise ValueError(
            f"{out}: exists and is not a compare report (it holds {others[0]}); "
            "choose another --out"
        )


def write_report(runs: Sequence[Run], out: str) -> None:
    """report.md, report.csv, loss.png (and downstream.png) in `out`, atomically."""
    check_out(out)
    header, rows = csv_rows(runs)
    with paths.atomic_directory(out, overwrite=True, marker="report.md") as tmp:
        with open(os.path.join(tmp, "report.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        plot_loss(runs, os.path.join(tmp, "loss.png"))
        if downstream_keys(runs):
            plot_downstream(runs, os.path.join(tmp, "downstream.png"))
        with open(os.path.join(tmp, "report.md"), "w", encoding="utf-8") as f:
            f.write(markdown_report(runs))
