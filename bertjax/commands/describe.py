r"""`python -m bertjax describe`: parameter table and FLOPs per token of a config.

  python -m bertjax describe --config=configs/pretrain.py:bert_base
  python -m bertjax describe --config=configs/distill.py:bert_base_to_distilbert_base

The model is the one `train` would build: config.model with the task's heads
(bertjax/tools/describe.py prints it; `init` prints the same table).
"""

from __future__ import annotations

from bertjax.commands import flags as common

HELP = {"describe": common.Usage((common.CONFIG,), "training.md")}


def main(argv: list[str]) -> None:
    del argv
    from bertjax import experiment, tasks
    from bertjax.tools.describe import describe, training

    config = common.required(common.CONFIG)
    task = tasks.get(config)
    cfg = experiment.model_config(config, task)
    print(
        describe(cfg, config.max_seq_length, config.get("max_predictions_per_seq", 0), task.teacher)
    )
    print(training(config, task))  # what trains, as the config resolves it
