"""Runs side by side: one table and two plots from the runs' logs, configs and results.

  python -m bertjax compare /runs/sweep --out=/runs/sweep/report
  python -m bertjax compare /runs/base /runs/whole_word --out=/tmp/report

A run directory is what `train` leaves in its WORKDIR: config.json (the resolved config
of the latest start), logs/ (TensorBoard scalars from bertjax.metrics.MetricWriter, one
event file per process start) and, once downstream fine-tuning ran, results.json:

  {"format": "bertjax-run-results", "version": 1,
   "downstream": {TASK: {"split", "metric", "seeds": [...], "scores": [...], "median",
                         "workdir"}}}

The report directory holds report.md (the table, the plots and how each figure is
computed), report.csv (the same rows, numbers unformatted), loss.png and, when some run
has results.json, downstream.png. It is built next to --out and renamed into place, so
a failure leaves the previous report (or nothing) behind; every input is read and
checked before anything is written. TensorBoard's own reader reads the event files;
TensorFlow is never imported (DESIGN.md: TensorFlow only in bertjax/data).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import types
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bertjax import paths

RESULTS_FORMAT = "bertjax-run-results"
RESULTS_VERSION = 1
# Every file a report directory may hold: an existing --out is replaced only when it
# holds nothing else (a previous report), never an unrelated directory.
REPORT_FILES = ("report.md", "report.csv", "loss.png", "downstream.png")
# Config keys that name a run's own files: they differ between runs by construction and
# say nothing about what was compared. Besides these, any key whose last part is `dir`
# or `path` or ends in `_dir` / `_path` (phase2.data_dir, distill.teacher_path).
PATH_KEYS = frozenset({"data.dir", "tokenizer.path", "init_from"})


@dataclass(frozen=True)
class Downstream:
    """One downstream (task, metric) of a run: every seed's score and their median."""

    scores: tuple[float, ...]
    median: float


@dataclass
class Run:
    """What the report shows of one run directory."""

    path: str  # the run directory, absolute
    name: str  # its basename, or as much of its path as makes it unique
    config: dict[str, Any]  # config.json flattened to dotted keys
    train_loss: list[tuple[int, float]]  # (step, train/loss), by step
    eval_loss: list[tuple[int, float]]  # (step, eval/loss), by step; may be empty
    tokens_per_s: float | None  # see throughput()
    mfu: float | None
    wall_time_s: float  # summed over process starts, gaps excluded
    downstream: dict[tuple[str, str], Downstream] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)  # set by load_runs

    @property
    def steps(self) -> int:
        return self.train_loss[-1][0]


# --------------------------------------------------------------------------- discovery


def _is_run(path: str) -> bool:
    return (paths.isfile(paths.join(path, "config.json"))
            or paths.isdir(paths.join(path, "logs")))


def find_runs(dirs: Sequence[str]) -> list[str]:
    """The run directories that `dirs` name, absolute, each once, in the order given.

    A DIR is a run directory (config.json or logs/ in it) or a sweep: its immediate
    subdirectories with a logs/ directory are its runs (by name); the others (prepared
    data, a teacher model) are skipped.
    """
    found: dict[str, str] = {}  # realpath -> abspath: a run named twice is shown once
    for d in dirs:
        if not paths.isdir(d):
            what = "not a directory" if paths.exists(d) else "no such directory"
            raise ValueError(f"{d}: {what}")
        if _is_run(d):
            runs = [d]
        else:
            subdirs = (paths.join(d, n) for n in _sweep_order(d) if not n.startswith("."))
            runs = [s for s in subdirs if paths.isdir(paths.join(s, "logs"))]
            if not runs:
                raise ValueError(f"{d}: no run directories (a run directory holds config.json "
                                 "and logs/; a sweep directory holds run directories)")
        for run in runs:
            real = run if paths.is_remote(run) else os.path.realpath(run)
            found.setdefault(real, paths.absolute(run))
    return list(found.values())


def _sweep_order(d: str) -> list[str]:
    """A sweep's subdirectories: its runs in the order of DIR/sweep.json (written by
    `sweep`), then the rest by name."""
    names = paths.listdir(d)
    try:
        order = [r["name"] for r in paths.read_json(paths.join(d, "sweep.json"))["runs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return names
    return [n for n in order if n in names] + [n for n in names if n not in order]


def run_names(run_dirs: Sequence[str]) -> list[str]:
    """Basenames, lengthened by parent directories where two would be the same
    (/a/x/run, /b/x/run -> a/x/run, b/x/run)."""
    parts = [p.split("://", 1)[1].strip("/").split("/") if "://" in p
             else os.path.abspath(p).strip(os.sep).split(os.sep) for p in run_dirs]
    depth = [1] * len(parts)
    while True:
        names = ["/".join(p[-k:]) for p, k in zip(parts, depth, strict=True)]
        counts = Counter(names)
        clashing = [i for i, n in enumerate(names) if counts[n] > 1]
        if not clashing:  # distinct absolute paths differ at full depth at the latest
            return names
        for i in clashing:
            depth[i] += 1


# --------------------------------------------------------------------------- reading


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"data": {"dir": x}} -> {"data.dir": x}; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _read_config(run: str) -> dict[str, Any]:
    path = paths.join(run, "config.json")
    config = paths.read_json(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object (the run's config)")
    return flatten(config)


def _tensorboard_reader() -> tuple[Any, Any]:
    """(EventFileLoader, tensor_util) from `tensorboard`, without importing TensorFlow:
    the marker module makes tensorboard use its bundled file I/O rather than TF's (why,
    at length: bertjax.metrics._tensorboard, which writes these files)."""
    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf",
                               types.ModuleType("tensorboard.compat.notf"))
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    return EventFileLoader, tensor_util


@dataclass
class EventLog:
    """The scalars of one event file (one process start of a run)."""

    start: float  # wall time of its first event (the file's header: the writer opened)
    end: float  # wall time of its last event
    scalars: dict[str, list[tuple[int, float]]]  # tag -> (step, value) in the file's order


def read_event_file(path: str) -> EventLog:
    """Every scalar of an event file. The reader turns `simple_value` summaries (what
    MetricWriter writes) into scalar tensors, so both forms read alike; a truncated last
    record (a killed process) ends the file."""
    loader_cls, tensor_util = _tensorboard_reader()
    times: list[float] = []
    scalars: dict[str, list[tuple[int, float]]] = {}
    for event in loader_cls(path).Load():
        times.append(event.wall_time)
        for value in event.summary.value:
            if value.HasField("tensor"):
                array = tensor_util.make_ndarray(value.tensor)
            elif value.HasField("simple_value"):
                array = np.asarray(value.simple_value)
            else:
                continue
            if array.size == 1 and array.dtype.kind in "biuf":
                scalars.setdefault(value.tag, []).append((int(event.step), float(array.item())))
    if not times:
        return EventLog(0.0, 0.0, scalars)
    return EventLog(min(times), max(times), scalars)


def read_logs(run: str) -> list[EventLog]:
    """The run's event files, oldest process start first."""
    logdir = paths.join(run, "logs")
    try:
        names = [n for n in paths.listdir(logdir) if n.startswith("events.out.tfevents.")]
    except OSError:
        names = []
    if not names:
        raise ValueError(f"{logdir}: no TensorBoard event files (not a run directory, or the "
                         "run has not started logging)")
    logs = []
    for n in names:
        with paths.local_copy(paths.join(logdir, n)) as local:  # gs://: downloaded
            logs.append(read_event_file(local))
    return sorted(logs, key=lambda log: log.start)


def series(logs: Sequence[EventLog], tag: str) -> list[tuple[int, float]]:
    """(step, value) of `tag` by step over all process starts; a step logged again after
    a resume keeps the later process's value."""
    by_step: dict[int, float] = {}
    for log in logs:
        by_step.update(log.scalars.get(tag, []))
    return sorted(by_step.items())


def throughput(logs: Sequence[EventLog], tag: str) -> float | None:
    """Mean of `tag` over the logged points, leaving out the first point of each process
    start (its window includes compilation and warm-up); over all points when that
    leaves none; None when there are none."""
    later = [v for log in logs for _, v in log.scalars.get(tag, [])[1:]]
    points = later or [v for log in logs for _, v in log.scalars.get(tag, [])]
    return float(np.mean(points)) if points else None


def wall_time(logs: Sequence[EventLog]) -> float:
    """Seconds the run's processes ran: per event file, its last event's wall time minus
    its first's, summed, so the gap between a run and its resume does not count."""
    return float(sum(log.end - log.start for log in logs))


def _number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def read_results(path: str) -> dict[tuple[str, str], Downstream]:
    """results.json -> {(task, metric): Downstream}; {} when there is no file. Errors
    name the file and the key."""
    if not paths.exists(path):
        return {}
    results = paths.read_json(path)
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{path}: not a {RESULTS_FORMAT} file (\"format\" is missing or "
                         "different)")
    if results.get("version") != RESULTS_VERSION:
        raise ValueError(f"{path}: version {results.get('version')!r}; this bertjax reads "
                         f"version {RESULTS_VERSION}")
    downstream = results.get("downstream")
    if not isinstance(downstream, dict):
        raise ValueError(f"{path}: \"downstream\": expected an object of task -> results")
    out: dict[tuple[str, str], Downstream] = {}
    for task, entry in downstream.items():
        where = f"{path}: downstream.{task}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object")
        metric, scores = entry.get("metric"), entry.get("scores")
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"{where}.metric: expected the metric's name")
        if not isinstance(scores, list) or not scores or not all(map(_number, scores)):
            raise ValueError(f"{where}.scores: expected a non-empty list of numbers")
        seeds = entry.get("seeds")
        if seeds is not None and (not isinstance(seeds, list) or len(seeds) != len(scores)):
            raise ValueError(f"{where}.seeds: expected one seed per score ({len(scores)})")
        median = entry.get("median", float(np.median(scores)))
        if not _number(median):
            raise ValueError(f"{where}.median: expected a number")
        out[(task, metric)] = Downstream(tuple(float(s) for s in scores), float(median))
    return out


def load_run(path: str, name: str) -> Run:
    """One run directory, read and checked; errors name the file."""
    config = _read_config(path)
    logs = read_logs(path)
    train_loss = series(logs, "train/loss")
    if not train_loss:
        raise ValueError(f"{paths.join(path, 'logs')}: no train/loss point")
    return Run(path=path, name=name, config=config, train_loss=train_loss,
               eval_loss=series(logs, "eval/loss"),
               tokens_per_s=throughput(logs, "train/tokens_per_s"),
               mfu=throughput(logs, "train/mfu"), wall_time_s=wall_time(logs),
               downstream=read_results(paths.join(path, "results.json")))


def is_path_key(key: str) -> bool:
    """Whether a flattened config key names a file or directory of the run's own."""
    last = key.rsplit(".", 1)[-1]
    return (key in PATH_KEYS or last in ("dir", "path")
            or last.endswith(("_dir", "_path")))


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


def load_runs(dirs: Sequence[str]) -> list[Run]:
    """Every run that `dirs` name (find_runs), read, named and with its overrides."""
    paths = find_runs(dirs)
    runs = [load_run(p, n) for p, n in zip(paths, run_names(paths), strict=True)]
    for run, diff in zip(runs, overrides([r.config for r in runs]), strict=True):
        run.overrides = diff
    return runs


# --------------------------------------------------------------------------- table


def downstream_keys(runs: Iterable[Run]) -> list[tuple[str, str]]:
    """Every (task, metric) of any run, in order of first appearance."""
    return list(dict.fromkeys(k for run in runs for k in run.downstream))


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def overrides_text(diff: Mapping[str, Any]) -> str:
    """{"data.mask_strategy": "whole_word"} -> "data.mask_strategy=whole_word"."""
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
        row: list[Any] = [run.name, overrides_text(run.overrides), run.steps,
                          run.train_loss[-1][1], run.eval_loss[-1][1] if run.eval_loss else ""]
        for key in keys:
            d = run.downstream.get(key)
            row += ([d.median, min(d.scores), max(d.scores), len(d.scores)] if d
                    else ["", "", "", ""])
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
    header = ["run", "overrides", "steps", "train loss", "eval loss",
              *[f"{task}/{metric}" for task, metric in keys], "tokens/s", "MFU", "wall time"]
    right = {"steps", "train loss", "eval loss", "tokens/s", "MFU", "wall time"}
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if h in right else "---" for h in header) + "|"]
    for run in runs:
        cells = [run.name, overrides_text(run.overrides), f"{run.steps:,d}",
                 f"{run.train_loss[-1][1]:.4f}",
                 f"{run.eval_loss[-1][1]:.4f}" if run.eval_loss else ""]
        for key in keys:
            d = run.downstream.get(key)
            cells.append(f"{d.median:.4g} ({min(d.scores):.4g}-{max(d.scores):.4g}, "
                         f"n={len(d.scores)})" if d else "")
        cells += ["" if run.tokens_per_s is None else f"{run.tokens_per_s:,.0f}",
                  "" if run.mfu is None else f"{100 * run.mfu:.3g}%",
                  _duration(run.wall_time_s)]
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
        ax.plot(steps, losses, color=_colour(i), label=run.name,
                marker="o" if len(steps) == 1 else None)
        if run.eval_loss:
            steps, losses = zip(*run.eval_loss, strict=True)
            ax.plot(steps, losses, color=_colour(i), linestyle="--", marker="o",
                    label=f"{run.name} (eval)")
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
            ax.scatter([i] * len(d.scores), d.scores, color=_colour(i), s=24, alpha=0.7,
                       zorder=3)
            ax.scatter([i], [d.median], color="black", marker="_", s=500, linewidths=2,
                       zorder=4)
        ax.set_xticks(range(len(runs)), [r.name for r in runs], rotation=30, ha="right")
        ax.set_xlim(-0.5, len(runs) - 0.5)
        ax.set(title=f"{key[0]} ({key[1]})", ylabel=key[1])
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=100)


# --------------------------------------------------------------------------- report

# How each column is computed, in the table's order (column names, text); the downstream
# note is left out when the table has no downstream columns.
_NOTES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("steps",),
     "the last step with a `train/loss` point."),
    (("train loss", "eval loss"),
     "the `train/loss` and `eval/loss` values at the last step that has one (blank: the run "
     "logged no evaluation); a step logged again after a resume counts with the later "
     "process's value."),
    (("TASK/METRIC",),
     "the run's downstream fine-tuning scores (results.json): the median over seeds "
     "(min-max of the seeds' scores, n = the number of seeds)."),
    (("tokens/s", "MFU"),
     "the mean of `train/tokens_per_s` and `train/mfu` over the logged points, leaving out "
     "the first point of each process start (its window includes compilation); the only "
     "point when there is just one."),
    (("wall time",),
     "per event file (one per process start), the last event's wall time minus the "
     "first's, summed over the files: the gaps between a run and its resumes do not count."),
    (("overrides",),
     "the config keys (config.json, flattened) whose values differ among these runs, "
     "leaving out keys that name a run's own files ({paths}, and any key whose last part "
     "is `dir` or `path` or ends in `_dir` or `_path`)."),
)

_LOSS_CAPTION = ("loss.png: each run's `train/loss` against step (solid line) and its "
                 "`eval/loss` in the same colour (dashed line, markers), over all process "
                 "starts (a step logged twice keeps the later value).")
_DOWNSTREAM_CAPTION = ("downstream.png: one panel per downstream task and metric; a dot for "
                       "each seed's fine-tuning score of each run (results.json), a black bar "
                       "at their median.")


def markdown_report(runs: Sequence[Run]) -> str:
    """report.md: the table, the notes, the plots with their captions, the runs' paths."""
    paths = ", ".join(f"`{k}`" for k in sorted(PATH_KEYS))
    notes = [f"- {', '.join(f'**{c}**' for c in columns)}: {text.format(paths=paths)}"
             for columns, text in _NOTES
             if columns != ("TASK/METRIC",) or downstream_keys(runs)]
    parts = ["# Compared runs", markdown_table(runs),
             "How each figure is computed:\n\n" + "\n".join(notes),
             "![loss curves](loss.png)", _LOSS_CAPTION]
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
        raise ValueError(f"{out}: exists and is not a compare report (it holds {others[0]}); "
                         "choose another --out")


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


def compare(dirs: Sequence[str], out: str) -> str:
    """Reads the runs `dirs` name, writes the report to `out`, returns the markdown table.
    Every input is read and checked before anything is written."""
    if not dirs:
        raise ValueError("no run directories given")
    check_out(out)
    runs = load_runs(dirs)
    write_report(runs, out)
    return markdown_table(runs)
