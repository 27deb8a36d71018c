r"""`python -m bertjax train`: run or resume the training a config describes.

  python -m bertjax prepare data --config=configs/pretrain.py:bert_tiny,runlocal \
      --config.data.dir=/tmp/demo_data
  python -m bertjax train --config=configs/pretrain.py:bert_tiny,runlocal \
      --config.data.dir=/tmp/demo_data --workdir=/tmp/bert_tiny_run

With --config.finetune.seeds=K (fine-tuning configs) it trains K seeds in
WORKDIR/seed_<s> and writes their scores and median to WORKDIR/results.json
(bertjax/tools/seeds.py). With --config.downstream.tasks=TASK,... (pretraining configs) the
finished model is then fine-tuned on each task and the scores go to WORKDIR/results.json
(bertjax/tools/downstream.py). Multi-host: the distributed flags (bertjax/distributed.py) or
Cloud TPU / Slurm detection. The loop is bertjax/train.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bertjax import distributed
from bertjax.commands import flags as common

if TYPE_CHECKING:
    from bertjax import train

HELP = {
    "train": common.Usage(
        (
            common.CONFIG,
            common.WORKDIR,
            distributed.COORDINATOR,
            distributed.NUM_PROCESSES,
            distributed.PROCESS_ID,
            distributed.LOCAL_DEVICE_IDS,
            distributed.CPU_COLLECTIVES,
        ),
        "training.md",
    )
}

# Hooks every run of this command gets (tests/faults.py adds fault injection here).
HOOKS: list[train.Hook] = []


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(
            f"unexpected arguments {argv[1:]}; usage: python -m bertjax train "
            "--config=configs/pretrain.py:PRESET --workdir=DIR"
        )
    from bertjax import train
    from bertjax.tools import downstream

    config = common.required(common.CONFIG)
    workdir = common.required(common.WORKDIR)
    if config.get("init_from"):
        common.check_model_dir(config.init_from, "config.init_from")
    distributed.initialize_from_flags()
    seeds = int(config.finetune.get("seeds", 1)) if "finetune" in config else 1
    if seeds > 1:
        from bertjax.tools.seeds import run_seeds

        run_seeds(config, workdir, seeds, HOOKS)
    else:
        downstream.check(config)
        result = train.train(config, workdir, HOOKS)
        if result["status"] == "done":
            downstream.run(config, workdir, HOOKS)
