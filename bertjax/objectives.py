"""Pretraining losses and their metrics: MLM, NSP and SOP (RTD and distillation: issue 5).

Everything here is a pure function of the model's logits and a batch from
`bertjax.data.pipeline`; losses and metrics are float32 whatever the compute
dtype. Shapes: B batch rows, P masked positions per row (`max_predictions_per_seq`),
V vocabulary.

Batch keys read here:
  masked_lm_ids      [B, P] int32    original token at each masked position
  masked_lm_weights  [B, P] float32  1 for a real prediction, 0 for padding
  pair_labels        [B]    int32    NSP: 1 = random next segment; SOP: 1 = swapped;
                                     -1 = no pair task for this row, or a padded row

An objective is a function `(logits, batch, **extras) -> (loss, metrics)` registered
by name in `OBJECTIVES`; every family has a default in `FAMILY_OBJECTIVES`.
`extras` is how objectives that need more than the logits get it (the teacher's
logits and hidden states for distillation, the corrupted-token labels for ELECTRA):
the objectives here take none. Config key the trainer is expected to read:

  config.objective = ""   # "" = the family's default; else a name in OBJECTIVES

Metrics carry a `*_count` next to every mean, so means over several batches (eval,
logging windows, hosts) can be re-weighted exactly: sum(mean * count) / sum(count).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
Metrics = dict[str, Array]
Objective = Callable[..., tuple[Array, Metrics]]


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Per-example softmax cross-entropy in float32.

    logits: [..., V]; labels: [...] integer ids in [0, V) -> [...].
    """
    logits = logits.astype(jnp.float32)
    label_logit = jnp.take_along_axis(logits, labels[..., None].astype(jnp.int32), axis=-1)
    return jax.nn.logsumexp(logits, axis=-1) - label_logit[..., 0]


def weighted_mean(x: Array, weights: Array) -> Array:
    """sum(w * x) / sum(w), and exactly 0 (no NaN, zero gradient) when sum(w) == 0."""
    weights = weights.astype(jnp.float32)
    total = jnp.sum(weights)
    # Guarding the denominator (not only the result) keeps the gradient finite too.
    safe_total = jnp.where(total > 0, total, 1.0)
    return jnp.where(total > 0, jnp.sum(weights * x.astype(jnp.float32)) / safe_total, 0.0)


def mlm_loss(logits: Array, labels: Array, weights: Array) -> tuple[Array, Metrics]:
    """Masked-LM loss: weighted mean cross-entropy over the real predictions.

    Args:
      logits: [B, P, V] scores at the masked positions (the sparse MLM head's output).
      labels: [B, P] original token ids (`masked_lm_ids`); padding entries may hold any
        valid id, their weight is 0.
      weights: [B, P] 1.0 for a real prediction, 0.0 for padding (`masked_lm_weights`).

    Returns:
      (loss, {"mlm_loss", "mlm_accuracy", "mlm_count"}): loss = sum(w * ce) / sum(w),
      0 when no position is real; accuracy is argmax == label weighted the same way;
      count is sum(w), the number of real predictions.
    """
    ce = cross_entropy(logits, labels)  # [B, P]
    loss = weighted_mean(ce, weights)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    metrics = {"mlm_loss": loss, "mlm_accuracy": weighted_mean(correct, weights),
               "mlm_count": jnp.sum(weights.astype(jnp.float32))}
    return loss, metrics


def pair_loss(logits: Array, labels: Array, name: str = "pair") -> tuple[Array, Metrics]:
    """Sentence-pair loss (NSP or SOP): mean cross-entropy over rows with a label.

    Args:
      logits: [B, 2] scores of the pair head.
      labels: [B] 0 or 1; -1 marks a row without a pair label (ignored).
      name: metric prefix, "nsp" or "sop".

    Returns:
      (loss, {f"{name}_loss", f"{name}_accuracy", f"{name}_count"}); the loss is 0, not
      NaN, when no row has a label.
    """
    valid = (labels >= 0).astype(jnp.float32)  # [B]
    safe_labels = jnp.maximum(labels, 0)  # -1 would index out of range
    loss = weighted_mean(cross_entropy(logits, safe_labels), valid)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    metrics = {f"{name}_loss": loss, f"{name}_accuracy": weighted_mean(correct, valid),
               f"{name}_count": jnp.sum(valid)}
    return loss, metrics


# --- objectives: the total loss of one family's pretraining ----------------------------

def _need(batch: Mapping[str, Any], key: str, objective: str) -> Array:
    if key not in batch:
        raise KeyError(f"objective {objective!r} needs batch[{key!r}]; the batch has "
                       f"{sorted(batch)}")
    return batch[key]


def _mlm(logits: Mapping[str, Array], batch: Mapping[str, Any],
         objective: str) -> tuple[Array, Metrics]:
    return mlm_loss(logits["mlm"], _need(batch, "masked_lm_ids", objective),
                    _need(batch, "masked_lm_weights", objective))


def mlm_objective(logits: Mapping[str, Array], batch: Mapping[str, Any],
                  **extras: Any) -> tuple[Array, Metrics]:
    """RoBERTa (and DistilBERT without a teacher): the MLM loss alone."""
    del extras  # plain MLM needs nothing beyond the logits
    loss, metrics = _mlm(logits, batch, "mlm")
    return loss, {"loss": loss, **metrics}


def _mlm_and_pair(pair: str) -> Objective:
    def objective(logits: Mapping[str, Array], batch: Mapping[str, Any],
                  **extras: Any) -> tuple[Array, Metrics]:
        del extras
        name = f"mlm_{pair}"
        mlm, metrics = _mlm(logits, batch, name)
        pl, pair_metrics = pair_loss(logits[pair], _need(batch, "pair_labels", name), pair)
        loss = mlm + pl  # unweighted sum, as in the BERT and ALBERT papers and code
        return loss, {"loss": loss, **metrics, **pair_metrics}

    objective.__name__ = f"mlm_{pair}_objective"
    objective.__doc__ = f"MLM loss + {pair.upper()} loss (unweighted sum)."
    return objective


# Name -> objective. Issue 5 adds "distillation" and "electra" here (and drops them
# from _PENDING); their extra inputs arrive as keyword arguments of pretraining_loss.
OBJECTIVES: dict[str, Objective] = {
    "mlm": mlm_objective,
    "mlm_nsp": _mlm_and_pair("nsp"),
    "mlm_sop": _mlm_and_pair("sop"),
}

# Family -> default objective. DistilBERT trains with plain MLM until a teacher is
# configured (distillation, issue 5).
FAMILY_OBJECTIVES: dict[str, str] = {
    "bert": "mlm_nsp",
    "albert": "mlm_sop",
    "roberta": "mlm",
    "distilbert": "mlm",
    "electra": "electra",
}

_PENDING: dict[str, str] = {
    "distillation": "knowledge distillation (soft-target KL + MLM + hidden-state cosine)",
    "electra": "ELECTRA (generator MLM + replaced-token detection)",
}


def resolve_objective(family_or_objective: str) -> str:
    """A family name or objective name -> the objective name registered in OBJECTIVES.

    Raises NotImplementedError for objectives that issue 5 (Distillation and ELECTRA)
    adds, and ValueError for unknown names, so a trainer can check its config before
    any work.
    """
    name = FAMILY_OBJECTIVES.get(family_or_objective, family_or_objective)
    if name in _PENDING and name not in OBJECTIVES:
        raise NotImplementedError(
            f"objective {name!r} ({_PENDING[name]}) is not implemented yet: it comes with "
            "issue 5, 'Distillation and ELECTRA'")
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective or family {family_or_objective!r}; objectives: "
                         f"{', '.join(sorted({*OBJECTIVES, *_PENDING}))}; families: "
                         f"{', '.join(FAMILY_OBJECTIVES)}")
    return name


def pretraining_loss(family_or_objective: str, logits: Mapping[str, Array],
                     batch: Mapping[str, Any], **extras: Any) -> tuple[Array, Metrics]:
    """The total pretraining loss of a family (or of a named objective) and its metrics.

    Args:
      family_or_objective: "bert", "roberta", ... or an OBJECTIVES key ("mlm_nsp", ...).
      logits: the model's logits dict: "mlm" [B, P, V] and, for BERT / ALBERT, "nsp" /
        "sop" [B, 2].
      batch: the pipeline batch (keys in the module docstring).
      **extras: inputs that only some objectives use (issue 5); passed through.

    Returns:
      (loss, metrics): a float32 scalar, and float32 scalars including "loss".
    """
    return OBJECTIVES[resolve_objective(family_or_objective)](logits, batch, **extras)
