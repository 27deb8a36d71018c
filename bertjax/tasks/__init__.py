"""Tasks: what a run trains, behind one interface (bertjax/tasks/base.py).

Each file of this package declares its tasks in a module-level `TASKS` dict
(name -> class); `get(name)` finds them, so adding a task is one file plus a config.

  mlm, mlm_nsp, mlm_sop   bertjax/tasks/mlm.py      masked LM (+ NSP / SOP)
  electra                 bertjax/tasks/electra.py  generator + replaced-token detection
  distillation            bertjax/tasks/distill.py  a student against a frozen teacher

`config.task` selects one; empty means the family's pretraining task.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from bertjax.tasks.base import Task


def registry() -> dict[str, type[Task]]:
    """Every task of every file in this package, by name."""
    out: dict[str, type[Task]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, cls in getattr(module, "TASKS", {}).items():
            if name in out:
                raise ValueError(f"task {name!r} is declared twice ({module.__name__})")
            out[name] = cls
    return out


def get(config: Any) -> Task:
    """The task `config.task` names (empty: the family's pretraining task), built from the
    config; a ValueError listing the tasks for an unknown name."""
    from bertjax.models.registry import family

    name = config.get("task") or family(config.model.family).task
    tasks = registry()
    if name not in tasks:
        raise ValueError(f"task={name!r}: unknown; tasks: {', '.join(sorted(tasks))}")
    return tasks[name](config)
