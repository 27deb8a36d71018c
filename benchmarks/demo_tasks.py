"""Fine-tunes a pretrained model on the built-in demo tasks and, for comparison, the same
architecture from scratch; prints each task's best dev score beside the trivial
baseline's (bertjax/data/demo_tasks.py).

  python benchmarks/demo_tasks.py --init_from=/tmp/bertjax_tiny_run/model \
      --workdir=/tmp/bertjax_demo_tasks [--tasks=demo_next,demo_boundary,demo_intruder]
      [--preset=bert_tiny] [--seeds=K] [--set KEY=VALUE ...]

Each run is `python -m bertjax train --config=configs/finetune.py:TASK,PRESET,runlocal`
in WORKDIR/TASK/{pretrained,scratch} (re-running resumes or skips finished runs); the
scratch run uses the pretrained model's tokenizer and architecture with fresh weights.
With --seeds=K each is K seeds (`finetune.seeds`) and the score is their median, the
range beside it. The last lines are one table row per task:
  TASK METRIC baseline=B scratch=S pretrained=P best_step=N
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = {"demo_next": "accuracy", "demo_boundary": "f1", "demo_intruder": "f1"}


def run(
    task: str,
    preset: str,
    init_from: str,
    workdir: str,
    scratch: bool,
    seeds: int,
    overrides: list[str],
) -> tuple[list[float], list[int]]:
    """The best dev score of the task's main metric and its step, one per seed."""
    args = [
        sys.executable,
        "-m",
        "bertjax",
        "train",
        f"--config={ROOT}/configs/finetune.py:{task},{preset},runlocal",
        f"--workdir={workdir}",
        f"--config.init_from={init_from}",
    ]
    if scratch:
        args.append("--config.finetune.from_scratch=True")
    if seeds > 1:
        args.append(f"--config.finetune.seeds={seeds}")
    args += [f"--config.{kv}" for kv in overrides]
    code = subprocess.run(args, cwd=ROOT).returncode
    if code:  # the run printed its one-line error; stop with its status, no traceback
        raise SystemExit(code)
    if seeds > 1:
        with open(os.path.join(workdir, "results.json")) as f:
            runs = json.load(f)["runs"]
    else:
        with open(os.path.join(workdir, "best", "config.json")) as f:
            best = json.load(f)
        runs = [{"scores": best["scores"], "best_step": best["best"]["step"]}]
    return ([r["scores"]["validation"][MAIN[task]] for r in runs], [r["best_step"] for r in runs])


def summary(scores: list[float]) -> str:
    if len(scores) == 1:
        return f"{scores[0]:.4g}"
    return f"{float(np.median(scores)):.4g} [{min(scores):.4g}-{max(scores):.4g}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init_from", required=True, help="a pretrained model directory")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--tasks", default=",".join(MAIN))
    parser.add_argument("--preset", default="bert_tiny", help="the family's recipe")
    parser.add_argument(
        "--seeds", type=int, default=1, help="fine-tuning seeds per run; the median is reported"
    )
    parser.add_argument("--set", nargs="*", default=[], help="KEY=VALUE config overrides")
    a = parser.parse_args()
    if a.seeds < 1:
        parser.error(f"--seeds={a.seeds}: must be at least 1")
    if "://" not in a.init_from and not os.path.isdir(a.init_from):
        sys.exit(f"error: --init_from={a.init_from}: no such directory")
    sys.path.insert(0, ROOT)
    from bertjax.data import demo_tasks

    rows = []
    for task in a.tasks.split(","):
        if task not in MAIN:
            parser.error(f"--tasks: {task!r} is not one of {', '.join(MAIN)}")
        metric = MAIN[task]
        scores, steps = {}, []
        for kind in ("scratch", "pretrained"):
            scores[kind], steps = run(
                task,
                a.preset,
                a.init_from,
                os.path.join(a.workdir, task, kind),
                kind == "scratch",
                a.seeds,
                a.set,
            )
        baseline = demo_tasks.majority_baseline(task)[metric]
        rows.append(
            f"{task} {metric} baseline={baseline:.4g} "
            f"scratch={summary(scores['scratch'])} "
            f"pretrained={summary(scores['pretrained'])} "
            f"best_step={','.join(map(str, steps))}"
        )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
