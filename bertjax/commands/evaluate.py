r"""`python -m bertjax evaluate` and `python -m bertjax predict`: a trained model on a task.

  python -m bertjax evaluate --config=configs/finetune.py:sst2 --checkpoint=/runs/sst2/best
  python -m bertjax predict --config=configs/finetune.py:mnli --checkpoint=/runs/mnli/best \
      --out=/runs/mnli/submission

The config names the task and its data as for training (--config.finetune.data=...);
the checkpoint is a bertjax model directory (a run's WORKDIR/best or WORKDIR/model) or a
transformers directory holding the task's heads. `evaluate` scores every dev split and
prints {split: {metric: value}} as JSON (`--out=FILE` also writes it); `predict` writes
each test split's predictions in GLUE's submission format (OUT/SST-2.tsv, OUT/MNLI-m.tsv
and OUT/MNLI-mm.tsv, ...). The library is bertjax/evaluate.py.
"""

from __future__ import annotations

import json
import os

from bertjax import evaluate
from bertjax.commands import flags as common


def main_evaluate(argv: list[str]) -> None:
    del argv
    config, ckpt = common.required(common.CONFIG), common.required(common.CHECKPOINT)
    scores = evaluate.evaluate(config, ckpt)
    text = json.dumps(scores, indent=2)
    print(text)
    if common.OUT.value:
        out = os.path.abspath(common.OUT.value)
        if os.path.exists(out) and not common.OVERWRITE.value:
            raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
        tmp = f"{out}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, out)


def main_predict(argv: list[str]) -> None:
    del argv
    config, ckpt = common.required(common.CONFIG), common.required(common.CHECKPOINT)
    for path in evaluate.predict(config, ckpt, common.required(common.OUT),
                                 common.OVERWRITE.value):
        print(f"wrote {path}")
