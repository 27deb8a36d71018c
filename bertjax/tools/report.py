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
import textwrap
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


def setting_groups(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs by setting: their overrides less `seed` as text, in order of first appearance.
    A run whose seed is not among its overrides stands alone (under its name): runs of
    the same config and seed are repeats, not seeds."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        rest = {k: v for k, v in run.overrides.items() if k != "seed"}
        setting = overrides_text(rest) or "(no other override)"
        groups.setdefault(setting if "seed" in run.overrides else run.name, []).append(run)
    return groups


def seeds_table(runs: Sequence[Run]) -> str | None:
    """Runs that differ only by `seed`, one row per setting: the median [min-max] over
    its seeds of the final train and eval loss and of each downstream median; None when
    no setting has several seeds."""
    groups = setting_groups(runs)
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

# A legend label longer than this is wrapped onto several lines.
_WRAP = 100


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


def plot_groups(runs: Sequence[Run]) -> list[tuple[str, list[Run]]]:
    """What the plots colour alike: when some runs differ only by `seed`, one group per
    setting (its overrides less `seed`, numbered in order of first appearance); else one
    group per run, labelled with its name."""
    groups = setting_groups(runs)
    if all(len(g) < 2 for g in groups.values()):
        return [(run.name, [run]) for run in runs]
    return [(f"{n}: {setting}", group) for n, (setting, group) in enumerate(groups.items(), 1)]


def _legend_below(fig: Any, handles: Sequence[Any], labels: Sequence[str]) -> None:
    """The legend under the axes (outside them: long run names never squeeze the plot)."""
    wrapped = [textwrap.fill(label, _WRAP, subsequent_indent="    ") for label in labels]
    fig.legend(handles, wrapped, loc="outside lower left", fontsize="small", frameon=False)


def _legend_height(labels: Sequence[str]) -> float:
    """Inches the legend below the axes takes, about."""
    lines = sum(len(textwrap.wrap(label, _WRAP)) or 1 for label in labels)
    return 0.3 + 0.19 * lines


def loss_figure(runs: Sequence[Run]) -> Any:
    """train/loss against step per run (solid), eval/loss in the same colour (dashed,
    markers); the runs of a setting (plot_groups) share its colour and legend entry."""
    groups = plot_groups(runs)
    labels = [label for label, _ in groups]
    fig = _figure(8, 5 + _legend_height(labels))
    ax = fig.add_subplot()
    handles = []
    for i, (_, group) in enumerate(groups):
        for run in group:
            steps, losses = zip(*run.train_loss, strict=True)
            # A run with a single point would draw no line: a dot then.
            (line,) = ax.plot(
                steps, losses, color=_colour(i), marker="o" if len(steps) == 1 else None
            )
            if run.eval_loss:
                steps, losses = zip(*run.eval_loss, strict=True)
                ax.plot(steps, losses, color=_colour(i), linestyle="--", marker="o")
        handles.append(line)
    ax.set(xlabel="step", ylabel="loss", title="train loss (solid), eval loss (dashed)")
    ax.grid(alpha=0.3)
    _legend_below(fig, handles, labels)
    return fig


def downstream_figure(runs: Sequence[Run]) -> Any:
    """One panel per downstream (task, metric), a column per group (plot_groups): every
    fine-tuning score of its runs as a dot, the median of its runs' medians as a black
    bar. Columns are numbered when a label is long, the legend below names them."""
    keys = downstream_keys(runs)
    groups = plot_groups(runs)
    labels = [label for label, _ in groups]
    numbered = any(len(label) > 24 for label in labels)
    cols = min(len(keys), 3)
    rows = math.ceil(len(keys) / cols)
    width = max(4.0, (0.4 if numbered else 0.8) * len(groups) + 2) * cols
    fig = _figure(width, 4 * rows + (_legend_height(labels) if numbered else 0))
    handles: list[Any] = [None] * len(groups)
    for n, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, n + 1)
        for i, (_, group) in enumerate(groups):
            found = [run.downstream[key] for run in group if key in run.downstream]
            if not found:
                continue
            scores = [s for d in found for s in d.scores]
            dots = ax.scatter(
                [i] * len(scores), scores, color=_colour(i), s=24, alpha=0.7, zorder=3
            )
            handles[i] = handles[i] or dots
            median = statistics.median(d.median for d in found)
            ax.scatter([i], [median], color="black", marker="_", s=500, linewidths=2, zorder=4)
        ticks = [str(i + 1) for i in range(len(groups))] if numbered else labels
        ax.set_xticks(
            range(len(groups)),
            ticks,
            rotation=0 if numbered else 30,
            ha="center" if numbered else "right",
        )
        ax.set_xlim(-0.5, len(groups) - 0.5)
        ax.set(title=f"{key[0]} ({key[1]})", ylabel=key[1])
        ax.grid(axis="y", alpha=0.3)
    if numbered:
        if all(len(g) == 1 for _, g in groups):  # run names: number them as the ticks
            labels = [f"{i}: {label}" for i, label in enumerate(labels, 1)]
        shown = [(h, label) for h, label in zip(handles, labels, strict=True) if h is not None]
        _legend_below(fig, [h for h, _ in shown], [label for _, label in shown])
    return fig


def plot_loss(runs: Sequence[Run], path: str) -> None:
    loss_figure(runs).savefig(path, dpi=100)


def plot_downstream(runs: Sequence[Run], path: str) -> None:
    downstream_figure(runs).savefig(path, dpi=100)


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
    "starts (a step logged twice keeps the later value). Runs that differ only by "
    "`seed` share a colour and one numbered legend entry (their setting)."
)
_DOWNSTREAM_CAPTION = (
    "downstream.png: one panel per downstream task and metric, a column per run (per "
    "setting when runs differ only by `seed`, numbered as in the legend); a dot for "
    "each fine-tuning score (results.json), a black bar at the median of the runs' "
    "medians."
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
