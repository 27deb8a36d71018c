r"""`python -m bertjax score`: score a predictions file as the reference scripts do.

  python -m bertjax score --task=squad_v1 --gold=dev-v1.1.json --predictions=predictions.json
  python -m bertjax score --task=squad_v2 --gold=dev-v2.0.json --predictions=predictions.json \
      --na_probs=null_odds.json
  python -m bertjax score --task=sst2 --gold=/data/glue/SST-2/dev.tsv --predictions=SST-2.tsv

SQuAD: the official JSON and a {question id: answer text} file (v2.0: "" for no
answer, and optionally {question id: no-answer probability}); the figures are
evaluate-v1.1.py's / evaluate-v2.0.py's (bertjax/scoring/squad.py). GLUE: the task's
dev file in its original layout and a GLUE submission file (a header, then
index<TAB>prediction per example in the dev file's order: label names, or numbers for
STS-B). Prints one JSON object; errors name the file.
"""

from __future__ import annotations

import csv
import json

from absl import flags

from bertjax import fileio
from bertjax.commands import flags as common

_TASK = flags.DEFINE_string("task", None, "squad_v1 | squad_v2 | a GLUE task name.")
_GOLD = flags.DEFINE_string("gold", None, "The gold file (see the command's help).")
_PREDICTIONS = flags.DEFINE_string("predictions", None, "The predictions file.")
_NA_PROBS = flags.DEFINE_string("na_probs", None, "squad_v2: no-answer probabilities.")


def _squad(version: str, gold: str, predictions: str, na_probs: str | None) -> dict:
    from bertjax.scoring import squad

    dataset = fileio.read_json(gold)
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise ValueError(f"{gold}: not a SQuAD file (no \"data\" list)")
    preds = fileio.read_json(predictions)
    if not isinstance(preds, dict):
        raise ValueError(f"{predictions}: expected a JSON object of question id -> answer")
    if version == "squad_v1":
        return squad.score_v1(dataset["data"], preds)
    probs = fileio.read_json(na_probs) if na_probs else None
    return squad.score_v2(dataset["data"], preds, probs)


def _glue(name: str, gold: str, predictions: str) -> dict:
    from bertjax.data import glue
    from bertjax.scoring import classification

    task = glue.TASKS[name]
    split = "validation" if "validation" in task.dev_splits else task.dev_splits[0]
    examples = glue.read_tsv(task, gold, split)
    with open(predictions, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    if len(rows) != len(examples):
        raise ValueError(f"{predictions}: {len(rows)} predictions for {len(examples)} "
                         f"examples in {gold}")
    preds = []
    for n, row in enumerate(rows, start=2):
        if len(row) != 2:
            raise ValueError(f"{predictions}:{n}: expected index<TAB>prediction")
        preds.append(glue.parse_label(task, row[1], f"{predictions}:{n}"))
    labels = [e.label for e in examples]
    return {m: getattr(classification, m)(labels, preds) for m in task.metrics}


def main(argv: list[str]) -> None:
    del argv
    from bertjax.data import glue

    task = common.required(_TASK)
    gold, predictions = common.required(_GOLD), common.required(_PREDICTIONS)
    if task in ("squad_v1", "squad_v2"):
        scores = _squad(task, gold, predictions, _NA_PROBS.value)
    elif task in glue.TASKS:
        scores = _glue(task, gold, predictions)
    else:
        raise ValueError(f"--task={task}: expected squad_v1, squad_v2 or one of "
                         f"{', '.join(glue.TASKS)}")
    print(json.dumps(scores, indent=2))
