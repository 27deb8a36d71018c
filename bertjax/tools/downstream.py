"""Fine-tuning evaluations after pretraining: `config.downstream` (configs/pretrain.py).

When a pretraining run has finished, `run(config, workdir)` fine-tunes WORKDIR/model on
each of `downstream.tasks`, with the config file `downstream.config` names (`{task}`
filled in; e.g. `configs/finetune.py:{task},bert_tiny,runlocal`) and the
`downstream.overrides` ("KEY=VALUE ..."), `downstream.seeds` seeds each
(bertjax/tools/seeds.py), in WORKDIR/downstream/<task>, and writes WORKDIR/results.json:

  {"format": "bertjax-run-results", "version": 1,
   "downstream": {task: {"split", "metric", "seeds", "scores", "median", "workdir"}}}

`split`/`metric` is the task's main score (what its best checkpoint is kept by) and
`scores` has one entry per seed: the score of that seed's best checkpoint. Every
fine-tuning run resumes as any run does and a task whose seeds all finished is not
touched again, so re-running finishes what a killed run left. results.json is written
last: its presence means every task finished. `compare` reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from bertjax import configfile, paths, train
from bertjax.tools import seeds
from bertjax.tools.compare import RESULTS_FORMAT, RESULTS_VERSION


def tasks(config: Any) -> list[str]:
    """The downstream tasks a config asks for ([] when none)."""
    if "downstream" not in config:
        return []
    return [t.strip() for t in str(config.downstream.tasks).split(",") if t.strip()]


def task_config(config: Any, task: str, model_dir: str) -> Any:
    """The fine-tuning config of one downstream task, starting from `model_dir`."""
    d = config.downstream
    spec = str(d.config)
    if "{task}" not in spec:
        raise ValueError(
            f"downstream.config={spec!r}: it must contain {{task}}, which "
            "each of downstream.tasks replaces"
        )
    c = configfile.load_config(spec.replace("{task}", task), f"downstream.config ({task})")
    c.init_from = model_dir
    for key, value in configfile.parse_overrides(str(d.overrides), "downstream.overrides"):
        configfile.set_key(c, key, value, "downstream.overrides")
    return c


def check(config: Any) -> None:
    """Builds every downstream task's config before pretraining, so that a bad task name,
    config or override fails at once rather than after the pretraining."""
    names = tasks(config)
    if len(set(names)) != len(names):
        raise ValueError(f"downstream.tasks={config.downstream.tasks!r}: a task is repeated")
    if names and int(config.downstream.seeds) < 1:
        raise ValueError(f"downstream.seeds={config.downstream.seeds}: must be at least 1")
    if names and jax.process_count() > 1:
        raise ValueError(
            f"downstream.tasks on {jax.process_count()} hosts: a multi-host run "
            "writes no model directory to fine-tune; pretrain there, then run "
            "the tasks on one host from the exported model"
        )
    for task in names:
        task_config(config, task, "")


def _finished(workdir: str, count: int, first: int) -> dict[str, Any] | None:
    path = paths.join(workdir, "results.json")
    if not paths.exists(path):
        return None
    results = paths.read_json(path)
    return results if results.get("seeds") == list(range(first, first + count)) else None


def run(config: Any, workdir: str, hooks: Sequence[train.Hook] = ()) -> dict[str, Any]:
    """Fine-tunes WORKDIR/model on every downstream task; writes WORKDIR/results.json."""
    names = tasks(config)
    if not names:
        return {}
    check(config)
    count = int(config.downstream.seeds)
    model_dir = paths.join(paths.absolute(workdir), "model")
    if not paths.exists(paths.join(model_dir, "config.json")):
        raise ValueError(
            f"{model_dir}: no model directory to fine-tune (pretraining on "
            "several hosts writes none; run the downstream tasks on one host "
            "from an exported model)"
        )
    # Every task's config is built (and so checked) before the first one trains.
    configs = {task: task_config(config, task, model_dir) for task in names}
    scores: dict[str, Any] = {}
    for task, c in configs.items():
        work = paths.join(paths.absolute(workdir), "downstream", task)
        results = _finished(work, count, int(c.seed))
        if results is None:
            print(
                f"downstream {task}: fine-tuning {model_dir} ({count} seed(s)) in {work}",
                flush=True,
            )
            results = seeds.run_seeds(c, work, count, hooks)
        main = results["runs"][0]["main"]
        values = [float(r["scores"][main["split"]][main["metric"]]) for r in results["runs"]]
        scores[task] = {
            "split": main["split"],
            "metric": main["metric"],
            "seeds": results["seeds"],
            "scores": values,
            "median": float(np.median(values)),
            "workdir": work,
        }
        print(
            f"downstream {task}: {main['split']} {main['metric']} median "
            f"{scores[task]['median']:.4g} over {count} seed(s) {values}",
            flush=True,
        )
    return write_results(workdir, scores)


def write_results(workdir: str, scores: dict[str, Any]) -> dict[str, Any]:
    """WORKDIR/results.json in the format `compare` reads; {} scores: no downstream task."""
    out = {"format": RESULTS_FORMAT, "version": RESULTS_VERSION, "downstream": scores}
    paths.write_json(paths.join(workdir, "results.json"), out)
    return out
