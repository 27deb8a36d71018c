"""Sentence and sentence-pair classification and regression: the GLUE tasks (and users'
own data in the same shape), on a pretrained encoder.

  heads: classifier (+ pooler for BERT and ALBERT, whose classifier reads it)
  loss:  cross-entropy over the labels; mean squared error for a regression (STS-B)

Config keys (configs/finetune.py):
  finetune.dataset      a GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli, ax)
                        or "custom" (users' data: finetune.labels names the classes,
                        empty for a regression; finetune.text_fields, finetune.label_field)
  finetune.data         tfds | glue:DIR | jsonl:DIR | csv:DIR (bertjax/data/glue.py)

Scores over each whole dev split (MNLI: matched and mismatched), as GLUE reports them:
CoLA Matthews correlation; STS-B Pearson and Spearman; MRPC and QQP F1 and accuracy;
the rest accuracy (bertjax/scoring/classification.py). The first is the main one, by
which the best checkpoint is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from bertjax import objectives
from bertjax.metrics import Mean
from bertjax.models.config import ModelConfig
from bertjax.models.registry import family
from bertjax.scoring import classification
from bertjax.tasks.base import Context, LossFn, packing_metrics
from bertjax.tasks.finetune import Features, FinetuneTask

Array = jax.Array


class Glue(FinetuneTask):
    name = "glue"
    head = "classifier"

    def spec(self) -> Any:
        from bertjax.data import glue

        f = self.config.finetune
        if f.dataset == "custom":
            labels = tuple(f.labels) or None
            return glue.GlueTask(
                "custom",
                labels,
                (),
                (),
                None,
                {},
                dev_splits=("validation",),
                metrics=("accuracy",) if labels else ("pearson", "spearman"),
            )
        if f.dataset not in glue.TASKS:
            raise ValueError(
                f"finetune.dataset={f.dataset!r}: expected custom or one of {', '.join(glue.TASKS)}"
            )
        return glue.TASKS[f.dataset]

    @property
    def regression(self) -> bool:
        return self.spec().labels is None

    def heads(self, cfg: ModelConfig) -> tuple[str, ...]:
        pooled = family(cfg.family).classifier == "pooled"
        return ("pooler", "classifier") if pooled else ("classifier",)

    def label_fields(self) -> dict[str, Any]:
        spec = self.spec()
        return {"num_labels": spec.num_labels, "label_names": spec.labels or ()}

    def dev_splits(self) -> tuple[str, ...]:
        return self.spec().dev_splits

    def make_features(self, split: str) -> Features:
        from bertjax.data import datasets

        f = self.config.finetune
        examples = datasets.read_split(
            "glue",
            f.data,
            split,
            spec=self.spec(),
            text_fields=tuple(f.text_fields),
            label_field=f.label_field,
        )
        tok = self.tokenizer().backend
        tok.enable_truncation(self._seq_len(), strategy="longest_first")
        encoded = [tok.encode(e.text_a, e.text_b) for e in examples]
        tok.no_truncation()
        labels = np.asarray(
            [e.label if e.label is not None else -1 for e in examples],
            np.float32 if self.regression else np.int32,
        )
        return Features(
            [np.asarray(x.ids, np.int32) for x in encoded],
            [np.asarray(x.type_ids, np.int32) for x in encoded],
            {"labels": labels},
        )

    def synthetic_labels(
        self, rng: np.random.Generator, batch_size: int, seq_len: int
    ) -> dict[str, np.ndarray]:
        """labels [B]: int32 classes, or float32 targets in STS-B's range [0, 5)."""
        del seq_len
        if self.regression:
            return {"labels": rng.uniform(0.0, 5.0, batch_size).astype(np.float32)}
        return {"labels": rng.integers(0, self.spec().num_labels, batch_size, dtype=np.int32)}

    def loss_fn(self, model: Any, train: bool = True) -> LossFn:
        regression = self.regression

        def loss_fn(
            params: Any, batch: Mapping[str, Any], rng: Array, aux_params: Any = None
        ) -> tuple[Array, dict[str, Mean]]:
            del aux_params
            logits = self.head_logits(model, params, batch, train, rng)
            loss, metrics = objectives.classification_loss(
                logits, batch["labels"], batch["weights"], regression
            )
            return loss, {**metrics, **packing_metrics(batch)}

        return loss_fn

    def scores(self, split: str, logits: np.ndarray) -> dict[str, float]:
        """The task's metrics of [examples, labels] logits on a labelled split."""
        labels = self.features(split).extra["labels"]
        preds = logits[:, 0] if self.regression else np.argmax(logits, axis=-1)
        return {m: getattr(classification, m)(labels, preds) for m in self.spec().metrics}

    @property
    def main_metric(self) -> tuple[str, str]:
        """(evaluator, metric) by which the best checkpoint is kept."""
        spec = self.spec()
        return (spec.dev_splits[0], spec.metrics[0])

    def test_files(self) -> dict[str, str]:
        """Test split -> the file `predict` writes (GLUE's submission names)."""
        return self.spec().test_files()

    def write_predictions(self, ctx: Context, params: Any, split: str, path: str) -> None:
        """GLUE's submission format: a header, then index<TAB>prediction; label names
        (CoLA, SST-2, MRPC, QQP and WNLI as 0 / 1), values for a regression."""
        logits = self.predicted(ctx, params, split)
        spec = self.spec()
        if spec.labels is None:
            values = [f"{v:.6g}" for v in logits[:, 0]]
        else:
            names = spec.tsv_label_names or spec.labels
            values = [names[i] for i in np.argmax(logits, axis=-1)]
        with open(path, "w") as f:
            f.write("index\tprediction\n")
            f.writelines(f"{i}\t{v}\n" for i, v in enumerate(values))
