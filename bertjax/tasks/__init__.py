"""Tasks: what a run trains, behind one interface (bertjax/tasks/base.py), listed here.

  mlm, mlm_nsp, mlm_sop   bertjax/tasks/mlm.py      masked LM (+ NSP / SOP)
  electra                 bertjax/tasks/electra.py  generator + replaced-token detection
  distillation            bertjax/tasks/distill.py  a student against a frozen teacher
  glue                    bertjax/tasks/glue.py     sentence(-pair) classification / regression
  ner                     bertjax/tasks/ner.py      a tag per word
  squad                   bertjax/tasks/squad.py    extractive question answering

`config.task` selects one; empty means the family's pretraining task. Adding a task is
its file and one entry in `TASKS` (as bertjax/models/registry.py lists the families).
"""

from __future__ import annotations

from typing import Any

from bertjax.tasks import distill, electra, glue, mlm, ner, squad
from bertjax.tasks.base import Task

TASKS: dict[str, type[Task]] = {
    t.name: t
    for t in (
        mlm.MaskedLM,
        mlm.MaskedLMNSP,
        mlm.MaskedLMSOP,
        electra.Electra,
        distill.Distillation,
        glue.Glue,
        ner.NER,
        squad.Squad,
    )
}


def get(config: Any) -> Task:
    """The task `config.task` names (empty: the family's pretraining task), built from the
    config; a ValueError listing the tasks for an unknown name."""
    from bertjax.models.registry import family

    name = config.get("task") or family(config.model.family).task
    if name not in TASKS:
        raise ValueError(f"task={name!r}: unknown; tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](config)
