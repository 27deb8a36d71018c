"""Ablations declared in configs: the runs of a sweep, run locally or printed for launch/.

A config file declares a sweep next to its `get_config`, as a list of override dicts
(configs/ablations/masking.py):

    def get_config(arg=None):  # the base run: pretraining, then `downstream` tasks
        ...
    def get_sweep(arg=None):
        return [{"masking.strategy": "token"}, {"masking.strategy": "whole_word"}]

`python -m bertjax sweep --config=FILE:ARG --workdir=DIR [--config.KEY=VALUE ...]`
runs each run into DIR/<name>/, one after another, where a run is: its data prepared
(when `data.dir` is empty: DIR/data/<digest of the settings preparation reads>, shared
by runs that agree on them), pretraining, the `downstream` fine-tuning evaluations, then
DIR/<name>/results.json (bertjax/tools/downstream.py). Names come from the overrides
(`strategy=whole_word`; the full key where two keys share a last part).

Re-running resumes: a run with results.json is done and skipped; a half-finished one
continues from its checkpoints. A run whose config changed since it started (the sweep
file or the command-line overrides) is refused rather than continued, since its
results would mix two configs. `--print_commands=local|tpu_vm|slurm` prints the
commands instead (data preparation, then one launch/ command per run) and runs nothing.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from bertjax import configfile, paths

if TYPE_CHECKING:
    from bertjax import train

# train and downstream (JAX) are imported where they run: `python -m bertjax sweep --help`
# imports this module for LAUNCHERS and must not load JAX.

# Data keys only the input pipeline or preparation's resources read: they do not change
# what `prepare data` writes.
PIPELINE_ONLY = ("dir", "num_workers", "max_inflight_mb", "shuffle_buffer", "cache_dir", "cache_gb")
LAUNCHERS = {
    "local": "launch/local.sh",
    "tpu_vm": "launch/tpu_vm.sh",
    "slurm": "sbatch launch/slurm.sbatch",
}


class Run(NamedTuple):
    name: str
    overrides: dict[str, Any]


def load_sweep(spec: str) -> list[Run]:
    """The runs `get_sweep(ARG)` of the config file `FILE[:ARG]` declares, named."""
    path, _, arg = spec.partition(":")
    module = configfile.load_module(path, "--config")
    get_sweep = getattr(module, "get_sweep", None)
    if get_sweep is None:
        raise ValueError(f"{path} defines no get_sweep(arg): nothing to sweep")
    runs = get_sweep(arg or None) if inspect.signature(get_sweep).parameters else get_sweep()
    if not isinstance(runs, Sequence) or not runs:
        raise ValueError(
            f"{path}: get_sweep returned {type(runs).__name__}, "
            "expected a non-empty list of override dicts"
        )
    for i, r in enumerate(runs):
        if not isinstance(r, Mapping) or not all(isinstance(k, str) and k for k in r):
            raise ValueError(
                f"{path}: get_sweep()[{i}] is {r!r}, expected a dict of 'dotted.key': value"
            )
    return name_runs([dict(r) for r in runs], path)


def _value_name(value: Any) -> str:
    text = format(value, "g") if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "_"


def name_runs(overrides: list[dict[str, Any]], where: str) -> list[Run]:
    """Each run's name from its overrides: `leaf=value` joined by commas, the full key
    where two keys of the sweep share their last part; `base` for no overrides."""
    keys = {k for o in overrides for k in o}
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    short = {
        k: k.rsplit(".", 1)[-1] if leaves.count(k.rsplit(".", 1)[-1]) == 1 else k for k in keys
    }
    runs, seen = [], {}
    for i, o in enumerate(overrides):
        name = ",".join(f"{short[k]}={_value_name(v)}" for k, v in o.items()) or "base"
        if name in seen:
            raise ValueError(
                f"{where}: runs {seen[name]} and {i} of the sweep are both "
                f"named {name!r} (the same overrides)"
            )
        seen[name] = i
        runs.append(Run(name, o))
    return runs


def run_config(base: Any, run: Run, sweep_dir: str) -> Any:
    """The run's config: the base with the run's overrides, and its data directory."""
    config = base.copy_and_resolve_references()
    for key, value in run.overrides.items():
        configfile.set_key(config, key, value, f"sweep run {run.name}")
    if "data" in config and not config.data.dir:
        config.data.dir = _join(sweep_dir, "data", data_digest(config))
    if "phase2" in config and float(config.phase2.fraction) > 0 and not config.phase2.data_dir:
        raise ValueError(
            f"sweep run {run.name}: phase2.data_dir is empty; the sweep "
            "prepares data.dir only: prepare phase 2's data and set it"
        )
    return config


def _join(root: str, *parts: str) -> str:
    """A path under `root`, absolute unless `root` is a URL (gs://...)."""
    return paths.join(paths.absolute(root), *parts)


def data_digest(config: Any) -> str:
    """12 hex digits over the settings `prepare data` reads, so runs that differ in
    anything else share one prepared directory."""
    data = {k: v for k, v in config.data.to_dict().items() if k not in PIPELINE_ONLY}
    settings = {
        "data": data,
        "masking": config.masking.to_dict() if "masking" in config else None,
        "tokenizer": config.tokenizer.to_dict(),
        "max_seq_length": config.max_seq_length,
        "seed": config.seed,
        "max_predictions_per_seq": config.get("max_predictions_per_seq"),
        "family": config.model.family,
        "vocab_size": config.model.vocab_size,
    }
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def config_digest(config: Any) -> str:
    return hashlib.sha256(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()


def _prepare(config: Any) -> None:
    if "data" not in config or paths.exists(paths.join(config.data.dir, "manifest.json")):
        return
    from bertjax.data.from_config import prepare_data  # TensorFlow: only when preparing

    print(f"sweep: preparing {config.data.dir}", flush=True)
    prepare_data(config)


def _claim(workdir: str, run: Run, config: Any) -> None:
    """WORKDIR/sweep_run.json: the run's overrides and config digest; a different config
    for an existing run is refused."""
    path = paths.join(workdir, "sweep_run.json")
    digest = config_digest(config)
    if paths.exists(path):
        started = paths.read_json(path)
        if started.get("config_sha256") != digest:
            raise ValueError(
                f"{workdir}: this run was started with another config (the "
                "sweep file or its overrides changed since); use another "
                "--workdir, or delete the run to start it again"
            )
        return
    paths.makedirs(workdir)
    paths.write_json(path, {"name": run.name, "overrides": run.overrides, "config_sha256": digest})


def run_sweep(
    base: Any, runs: Sequence[Run], sweep_dir: str, hooks: Sequence[train.Hook] = ()
) -> list[str]:
    """Runs every run not yet done, in order; returns the names of the runs it ran."""
    from bertjax import train
    from bertjax.tools import downstream

    configs = [run_config(base, r, sweep_dir) for r in runs]  # every run checked first
    for c in configs:
        downstream.check(c)
    paths.makedirs(sweep_dir)
    paths.write_json(
        paths.join(sweep_dir, "sweep.json"),
        {"runs": [{"name": r.name, "overrides": r.overrides} for r in runs]},
    )
    ran = []
    for i, (run, config) in enumerate(zip(runs, configs, strict=True)):
        workdir = paths.join(paths.absolute(sweep_dir), run.name)
        done = paths.exists(paths.join(workdir, "results.json"))
        if done:
            _claim(workdir, run, config)  # still refuses a changed config
            print(f"sweep: run {i + 1}/{len(runs)} {run.name}: done", flush=True)
            continue
        print(f"sweep: run {i + 1}/{len(runs)} {run.name} in {workdir}", flush=True)
        _claim(workdir, run, config)
        _prepare(config)
        result = train.train(config, workdir, hooks)
        if result["status"] != "done":  # stopped by a signal: the rest wait for a re-run
            print(f"sweep: stopped during {run.name}; run the same command to resume", flush=True)
            return ran
        if not downstream.run(config, workdir, hooks):
            downstream.write_results(workdir, {})
        ran.append(run.name)
    print(f"sweep: {len(runs)} runs done in {sweep_dir}", flush=True)
    return ran


def _flag(key: str, value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return shlex.quote(f"--config.{key}={text}")


def commands(
    spec: str,
    base: Any,
    runs: Sequence[Run],
    sweep_dir: str,
    launcher: str,
    base_overrides: Mapping[str, Any],
) -> list[str]:
    """Shell commands doing what `run_sweep` does, for launch/: each prepared data
    directory once, then one launch command per run (its overrides as --config flags)."""
    from bertjax.tools import downstream

    if launcher not in LAUNCHERS:
        raise ValueError(f"--print_commands={launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    lines, prepared = [], set()
    common = [_flag(k, v) for k, v in base_overrides.items()]
    for run in runs:
        config = run_config(base, run, sweep_dir)
        downstream.check(config)
        flags = common + [_flag(k, v) for k, v in run.overrides.items()]
        if "data" in config and not base.data.dir:
            flags.append(_flag("data.dir", config.data.dir))
            if config.data.dir not in prepared:
                prepared.add(config.data.dir)
                lines.append(
                    " ".join(
                        ["python -m bertjax prepare data", shlex.quote(f"--config={spec}"), *flags]
                    )
                )
        workdir = _join(sweep_dir, run.name)
        lines.append(
            " ".join([LAUNCHERS[launcher], shlex.quote(spec), shlex.quote(workdir), *flags])
        )
    return lines
