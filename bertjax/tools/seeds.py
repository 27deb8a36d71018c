"""The same run with several seeds, and the median of their scores.

Fine-tuning results on small tasks swing by several points with the seed; papers
report the median of 5 to 10 runs. `run_seeds` trains `config` once per seed
(config.seed, config.seed + 1, ...) in WORKDIR/seed_<s> (each resumable as any run)
and writes WORKDIR/results.json:

  {"seeds": [...], "runs": [{"seed", "workdir", "best_step", "main": {"split", "metric"},
                             "scores": {split: {metric}}}],
   "median": {split: {metric: median over the runs}}}

where a run's scores are those of its best checkpoint (WORKDIR/seed_<s>/best), kept by
its task's main score (`main`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from bertjax import paths, train


def run_seeds(
    config: Any, workdir: str, count: int, hooks: Sequence[train.Hook] = ()
) -> dict[str, Any]:
    if count < 1:
        raise ValueError(f"seeds={count}: must be at least 1")
    first = int(config.seed)
    runs = []
    for seed in range(first, first + count):
        c = config.copy_and_resolve_references()
        c.seed = seed
        work = paths.join(paths.absolute(workdir), f"seed_{seed}")
        train.train(c, work, hooks)
        best = paths.join(work, "best", "config.json")
        if not paths.exists(best):
            raise ValueError(f"{work}: the run kept no best checkpoint (did it evaluate?)")
        meta = paths.read_json(best)
        runs.append(
            {
                "seed": seed,
                "workdir": work,
                "best_step": meta["best"]["step"],
                "main": {"split": meta["best"]["evaluator"], "metric": meta["best"]["metric"]},
                "scores": meta["scores"],
            }
        )
    median = {
        split: {m: float(np.median([r["scores"][split][m] for r in runs])) for m in scores}
        for split, scores in runs[0]["scores"].items()
    }
    results = {"seeds": list(range(first, first + count)), "runs": runs, "median": median}
    paths.write_json(paths.join(workdir, "results.json"), results)
    print(f"median over {count} seeds: " + json.dumps(median))
    return results
