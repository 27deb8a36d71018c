"""A trained model on a task's splits, outside training: scores (`evaluate`) and
predictions files (`predict`).

The model is any checkpoint a run can start from (a bertjax model directory such as
WORKDIR/best, or a transformers directory); it must hold every head the task needs.
The config says the task and its data, as for training (configs/finetune.py).
"""

from __future__ import annotations

import os
from typing import Any

import jax

from bertjax import experiment, pretrained, sharding
from bertjax.fileio import atomic_directory
from bertjax.tasks.base import Context


def _loaded(config: Any, checkpoint: str) -> tuple[Any, Context, Any]:
    """(setup, context with predict, params on the mesh) of `checkpoint` under `config`."""
    from bertjax.train import _to_host, global_batch

    config = config.copy_and_resolve_references()
    config.init_from = checkpoint
    config.train.steps = 1  # no schedule to plan: the train split is never read
    s = experiment.build_setup(config)
    ctx = Context(config, s.cfg, s.model, s.mesh, s.rules)
    s.task.cfg = s.cfg
    params, rows, _ = pretrained.load_into(checkpoint, s.cfg, s.target["params"],
                                           "--checkpoint")
    created = [name for name, status, _ in rows if status == "created"]
    if created:
        raise ValueError(f"--checkpoint={checkpoint}: it has no {', '.join(created)} head; "
                         f"the {s.task.name} task needs {', '.join(s.cfg.heads)}")
    params = jax.device_put(params, s.state_shardings["params"])
    predict = jax.jit(s.task.predict_fn(s.model))
    ctx.predict = lambda p, batch: _to_host(predict(p, global_batch(batch, s.mesh, s.rules)))
    return s, ctx, params


def evaluate(config: Any, checkpoint: str) -> dict[str, dict[str, float]]:
    """{dev split: {metric: value}} of `checkpoint` on the config's task."""
    s, ctx, params = _loaded(config, checkpoint)
    with sharding.activation_rules_context(s.mesh, s.rules):
        return {e.name: e.run(params) for e in s.task.evaluators(ctx, None)}


def predict(config: Any, checkpoint: str, out: str, overwrite: bool = False) -> list[str]:
    """Writes the task's predictions of each test split into OUT (GLUE: index<TAB>
    prediction files named as the GLUE server wants them); returns the files written."""
    s, ctx, params = _loaded(config, checkpoint)
    written = []
    with sharding.activation_rules_context(s.mesh, s.rules), \
            atomic_directory(out, overwrite=overwrite) as tmp:
        for split, filename in s.task.test_files().items():
            s.task.write_predictions(ctx, params, split, os.path.join(tmp, filename))
            written.append(os.path.join(os.path.abspath(out), filename))
    return written
