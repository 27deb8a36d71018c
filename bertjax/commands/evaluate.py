r"""`python -m bertjax evaluate` and `python -m bertjax predict`: a trained model on a task.

  python -m bertjax evaluate --config=configs/finetune.py:sst2 --checkpoint=/runs/sst2/best
  python -m bertjax predict --config=configs/finetune.py:mnli --checkpoint=/runs/mnli/best \
      --out=/runs/mnli/submission

The config names the task and its data as for training (--config.finetune.data=...);
the checkpoint is a bertjax model directory (a run's WORKDIR/best or WORKDIR/model) or a
transformers directory holding the task's heads: every head the task needs. `evaluate`
scores every dev split and prints {split: {metric: value}} as JSON (`--out=FILE` also
writes it); `predict` writes each test split's predictions in GLUE's submission format
(OUT/SST-2.tsv, OUT/MNLI-m.tsv and OUT/MNLI-mm.tsv, ...).

  python -m bertjax evaluate --checkpoint=/runs/long/model --documents=held_out.txt \
      --lengths=128,512,0

With --lengths, `evaluate` scores the model's MLM head instead, on held-out documents cut
into rows of each length (0: the longest the model takes): masked-token accuracy and
loss over the same masked tokens at every length (bertjax/tools/mlm_lengths.py); no
--config is read.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from absl import flags

from bertjax.commands import flags as common

if TYPE_CHECKING:
    from bertjax.tasks.base import Context

LENGTHS = flags.DEFINE_list(
    "lengths",
    None,
    "evaluate: MLM accuracy and loss on "
    "--documents at these row lengths (0: the longest the model "
    "takes) instead of the config's task.",
)
DOCUMENTS = flags.DEFINE_string(
    "documents",
    None,
    "With --lengths: held-out documents, a text file with an empty line between documents.",
)
MASK_RATE = flags.DEFINE_float(
    "mask_rate", 0.15, "With --lengths: the share of each document's tokens masked and scored."
)

HELP = {
    "evaluate": common.Usage(
        (
            common.CONFIG,
            common.CHECKPOINT,
            LENGTHS,
            DOCUMENTS,
            MASK_RATE,
            common.OUT,
            common.OVERWRITE,
        ),
        "finetuning.md",
    ),
    "predict": common.Usage(
        (common.CONFIG, common.CHECKPOINT, common.OUT, common.OVERWRITE), "finetuning.md"
    ),
}


def _loaded(config: Any, checkpoint: str) -> tuple[Any, Context, Any]:
    """(setup, context with predict, params on the mesh) of `checkpoint` under `config`."""
    import jax

    from bertjax import experiment, pretrained
    from bertjax.hosts import to_host
    from bertjax.tasks.base import Context
    from bertjax.train import global_batch

    config = config.copy_and_resolve_references()
    config.init_from = checkpoint
    config.train.steps = 1  # no schedule to plan: the train split is never read
    s = experiment.build_setup(config)
    ctx = Context(config, s.cfg, s.model, s.mesh, s.rules)
    s.task.cfg = s.cfg
    params, rows, _ = pretrained.load_into(checkpoint, s.cfg, s.target["params"], "--checkpoint")
    created = [name for name, status, _ in rows if status == "created"]
    if created:
        raise ValueError(
            f"--checkpoint={checkpoint}: it has no {', '.join(created)} head; "
            f"the {s.task.name} task needs {', '.join(s.cfg.heads)}"
        )
    params = jax.device_put(params, s.state_shardings["params"])
    predict = jax.jit(s.task.predict_fn(s.model))
    ctx.predict = lambda p, batch: to_host(predict(p, global_batch(batch, s.mesh, s.rules)))
    return s, ctx, params


def evaluate(config: Any, checkpoint: str) -> dict[str, dict[str, float]]:
    """{dev split: {metric: value}} of `checkpoint` on the config's task."""
    from bertjax import sharding

    s, ctx, params = _loaded(config, checkpoint)
    with sharding.activation_rules_context(s.mesh, s.rules):
        return {e.name: e.run(params) for e in s.task.evaluators(ctx, None)}


def predict(config: Any, checkpoint: str, out: str, overwrite: bool = False) -> list[str]:
    """Writes the task's predictions of each test split into OUT (GLUE: index<TAB>
    prediction files named as the GLUE server wants them); returns the files written."""
    from bertjax import paths, sharding

    s, ctx, params = _loaded(config, checkpoint)
    files = s.task.test_files()
    written = []
    # On gs://, the first file is uploaded last: its presence says the set is complete.
    with (
        sharding.activation_rules_context(s.mesh, s.rules),
        paths.atomic_directory(
            out, overwrite=overwrite, marker=next(iter(files.values()), "")
        ) as tmp,
    ):
        for split, filename in files.items():
            s.task.write_predictions(ctx, params, split, os.path.join(tmp, filename))
            written.append(paths.join(paths.absolute(out), filename))
    return written


def main_evaluate(argv: list[str]) -> None:
    del argv
    if LENGTHS.value:
        from bertjax.tools import mlm_lengths

        ckpt, docs = common.model_dir(common.CHECKPOINT), common.required(DOCUMENTS)
        bad = [n for n in LENGTHS.value if not n.isdigit()]
        if bad:
            raise ValueError(f"--lengths: {bad[0]!r} is not a whole number of tokens")
        if common.OUT.value:
            common.check_out(common.OUT.value)
        scores = mlm_lengths.evaluate(
            ckpt, str(docs), [int(n) for n in LENGTHS.value], MASK_RATE.value
        )
    else:
        config, ckpt = common.required(common.CONFIG), common.model_dir(common.CHECKPOINT)
        if common.OUT.value:
            common.check_out(common.OUT.value)
        scores = evaluate(config, ckpt)
    text = json.dumps(scores, indent=2)
    print(text)
    if common.OUT.value:
        from bertjax import paths

        out = paths.absolute(common.OUT.value)
        if paths.exists(out) and not common.OVERWRITE.value:
            raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
        paths.write_text(out, text + "\n")


def main_predict(argv: list[str]) -> None:
    del argv
    config, ckpt = common.required(common.CONFIG), common.model_dir(common.CHECKPOINT)
    out = common.required(common.OUT)
    common.check_out(out)
    for path in predict(config, ckpt, out, common.OVERWRITE.value):
        print(f"wrote {path}")
