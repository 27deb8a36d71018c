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
TensorFlow is never imported (DESIGN.md: TensorFlow only in bertjax/data). This module
reads the runs; bertjax/tools/report.py writes the report.
"""

from __future__ import annotations

import math
import os
import sys
import types
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bertjax import paths
from bertjax.tools.report import check_out, markdown_table, overrides, write_report

RESULTS_FORMAT = "bertjax-run-results"
RESULTS_VERSION = 1


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
    return paths.isfile(paths.join(path, "config.json")) or paths.isdir(paths.join(path, "logs"))


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
                raise ValueError(
                    f"{d}: no run directories (a run directory holds config.json "
                    "and logs/; a sweep directory holds run directories)"
                )
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
    parts = [
        p.split("://", 1)[1].strip("/").split("/")
        if "://" in p
        else os.path.abspath(p).strip(os.sep).split(os.sep)
        for p in run_dirs
    ]
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
        sys.modules.setdefault(
            "tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf")
        )
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
        raise ValueError(
            f"{logdir}: no TensorBoard event files (not a run directory, or the "
            "run has not started logging)"
        )
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
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_results(path: str) -> dict[tuple[str, str], Downstream]:
    """results.json -> {(task, metric): Downstream}; {} when there is no file. Errors
    name the file and the key."""
    if not paths.exists(path):
        return {}
    results = paths.read_json(path)
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise ValueError(f'{path}: not a {RESULTS_FORMAT} file ("format" is missing or different)')
    if results.get("version") != RESULTS_VERSION:
        raise ValueError(
            f"{path}: version {results.get('version')!r}; this bertjax reads "
            f"version {RESULTS_VERSION}"
        )
    downstream = results.get("downstream")
    if not isinstance(downstream, dict):
        raise ValueError(f'{path}: "downstream": expected an object of task -> results')
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
    return Run(
        path=path,
        name=name,
        config=config,
        train_loss=train_loss,
        eval_loss=series(logs, "eval/loss"),
        tokens_per_s=throughput(logs, "train/tokens_per_s"),
        mfu=throughput(logs, "train/mfu"),
        wall_time_s=wall_time(logs),
        downstream=read_results(paths.join(path, "results.json")),
    )


def load_runs(dirs: Sequence[str]) -> list[Run]:
    """Every run that `dirs` name (find_runs), read, named and with its overrides."""
    paths = find_runs(dirs)
    runs = [load_run(p, n) for p, n in zip(paths, run_names(paths), strict=True)]
    for run, diff in zip(runs, overrides([r.config for r in runs]), strict=True):
        run.overrides = diff
    return runs


def compare(dirs: Sequence[str], out: str) -> str:
    """Reads the runs `dirs` name, writes the report to `out`, returns the markdown table.
    Every input is read and checked before anything is written."""
    if not dirs:
        raise ValueError("no run directories given")
    check_out(out)
    runs = load_runs(dirs)
    write_report(runs, out)
    return markdown_table(runs)
