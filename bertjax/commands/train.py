r"""`python -m bertjax train`: run or resume the training a config describes.

  python -m bertjax prepare data --config=configs/pretrain.py:bert_tiny,runlocal \
      --config.data.dir=/tmp/demo_data
  python -m bertjax train --config=configs/pretrain.py:bert_tiny,runlocal \
      --config.data.dir=/tmp/demo_data --workdir=/tmp/bert_tiny_run

Multi-host: the distributed flags (bertjax/distributed.py) or Cloud TPU / Slurm
detection. The loop is bertjax/train.py.
"""

from __future__ import annotations

from absl import flags

from bertjax import distributed, train
from bertjax.commands import flags as common

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and the "
                               "final model; re-running with the same one resumes.")

# Hooks every run of this command gets (tests/faults.py adds fault injection here).
HOOKS: list[train.Hook] = []


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}; usage: python -m bertjax train "
                         "--config=configs/pretrain.py:PRESET --workdir=DIR")
    config = common.required(common.CONFIG)
    workdir = common.required(_WORKDIR)
    distributed.initialize_from_flags()
    train.train(config, workdir, HOOKS)
