"""Fine-tunes a pretrained model on the built-in demo tasks and, for comparison, the same
architecture from scratch; prints each task's best dev score beside the trivial
baseline's (bertjax/data/demo_tasks.py).

  python benchmarks/demo_tasks.py --init_from=/tmp/bertjax_tiny_run/model \
      --workdir=/tmp/bertjax_demo_tasks [--tasks=demo_next,demo_boundary,demo_intruder]
      [--preset=bert_tiny] [--set KEY=VALUE ...]

Each run is `python -m bertjax train --config=configs/finetune.py:TASK,PRESET,runlocal`
in WORKDIR/TASK/{pretrained,scratch} (re-running resumes or skips finished runs); the
scratch run uses the pretrained model's tokenizer and architecture with fresh weights.
The last lines are one table row per task:
  TASK METRIC baseline=B scratch=S pretrained=P steps=N
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = {"demo_next": "accuracy", "demo_boundary": "f1", "demo_intruder": "f1"}


def run(task: str, preset: str, init_from: str, workdir: str, scratch: bool,
        overrides: list[str]) -> dict:
    best = os.path.join(workdir, "best", "config.json")
    args = [sys.executable, "-m", "bertjax", "train",
            f"--config={ROOT}/configs/finetune.py:{task},{preset},runlocal",
            f"--workdir={workdir}", f"--config.init_from={init_from}"]
    if scratch:
        args.append("--config.finetune.from_scratch=True")
    args += [f"--config.{kv}" for kv in overrides]
    subprocess.run(args, check=True, cwd=ROOT)
    with open(best) as f:
        return json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init_from", required=True, help="a pretrained model directory")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--tasks", default=",".join(MAIN))
    parser.add_argument("--preset", default="bert_tiny", help="the family's recipe")
    parser.add_argument("--set", nargs="*", default=[], help="KEY=VALUE config overrides")
    a = parser.parse_args()
    sys.path.insert(0, ROOT)
    from bertjax.data import demo_tasks

    rows = []
    for task in a.tasks.split(","):
        if task not in MAIN:
            parser.error(f"--tasks: {task!r} is not one of {', '.join(MAIN)}")
        metric = MAIN[task]
        scores = {}
        for kind in ("scratch", "pretrained"):
            best = run(task, a.preset, a.init_from, os.path.join(a.workdir, task, kind),
                       kind == "scratch", a.set)
            scores[kind] = best["scores"]["validation"][metric]
            scores["steps"] = best["best"]["step"]
        baseline = demo_tasks.majority_baseline(task)[metric]
        rows.append(f"{task} {metric} baseline={baseline:.4g} scratch={scores['scratch']:.4g} "
                    f"pretrained={scores['pretrained']:.4g} best_step={scores['steps']}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
