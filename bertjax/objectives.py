"""Every loss and its metrics: MLM (+ NSP / SOP), ELECTRA's RTD, distillation, and the
fine-tuning tasks' (classification / regression, token classification, answer spans).

Everything here is a pure function of a model's logits and a batch from
`bertjax.data.pipeline` (fine-tuning: from `bertjax.tasks.finetune`); losses and
metrics are float32 whatever the compute dtype. Shapes: B batch rows, L tokens, P
masked positions per row (`max_predictions_per_seq`), V vocabulary. The tasks
(bertjax/tasks) run the models and call these.

Batch keys read here:
  masked_lm_ids      [B, P] int32    original token at each masked position
  masked_lm_weights  [B, P] float32  1 for a real prediction, 0 for padding
  pair_labels        [B]    int32    NSP: 1 = random next segment; SOP: 1 = swapped;
                                     -1 = no pair task for this row, or a padded row
  masked_lm_positions [B, P] int32   where the masked tokens are (ELECTRA's corruption)
  input_ids, attention_mask [B, L]   ELECTRA's corruption; distillation's cosine loss

Packed rows (docs/packing.md): attention_mask holds segment numbers (0 padding, k the
row's k-th sequence), so real tokens are `attention_mask > 0`, never its sum; a key with
one value per sequence ([B]: pair_labels, labels, weights, start/end positions) is
[B, S] instead, slot k - 1 for sequence k (weight 0 / label -1 where a row has fewer).
Every loss here is a mean over real predictions, labelled sequences or real tokens, so
a packed batch gives the loss of the same sequences unpacked.

Every metric is a `metrics.Mean`: a value with its denominator (the number of real
predictions, labelled rows or real tokens), so means over several batches (eval,
logging windows, hosts) are exact: sum(value * count) / sum(count).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from bertjax.metrics import Mean

Array = jax.Array
Metrics = dict[str, Mean]


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
      (loss, {"mlm_loss", "mlm_accuracy"}): loss = sum(w * ce) / sum(w), 0 when no
      position is real; accuracy is argmax == label weighted the same way; both count
      sum(w), the number of real predictions.
    """
    ce = cross_entropy(logits, labels)  # [B, P]
    loss = weighted_mean(ce, weights)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    count = jnp.sum(weights.astype(jnp.float32))
    metrics = {
        "mlm_loss": Mean(loss, count),
        "mlm_accuracy": Mean(weighted_mean(correct, weights), count),
    }
    return loss, metrics


def pair_loss(logits: Array, labels: Array, name: str = "pair") -> tuple[Array, Metrics]:
    """Sentence-pair loss (NSP or SOP): mean cross-entropy over rows with a label.

    Args:
      logits: [B, (S,) 2] scores of the pair head (S: packed sequences).
      labels: [B, (S)] 0 or 1; -1 marks a row or slot without a pair label (ignored).
      name: metric prefix, "nsp" or "sop".

    Returns:
      (loss, {f"{name}_loss", f"{name}_accuracy"}), counting the labelled rows; the loss
      is 0, not NaN, when no row has a label.
    """
    valid = (labels >= 0).astype(jnp.float32)  # [B]
    safe_labels = jnp.maximum(labels, 0)  # -1 would index out of range
    loss = weighted_mean(cross_entropy(logits, safe_labels), valid)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    count = jnp.sum(valid)
    metrics = {
        f"{name}_loss": Mean(loss, count),
        f"{name}_accuracy": Mean(weighted_mean(correct, valid), count),
    }
    return loss, metrics


def need(batch: Mapping[str, Any], key: str, what: str) -> Array:
    """batch[key], or a KeyError saying which objective needs it."""
    if key not in batch:
        raise KeyError(f"{what} needs batch[{key!r}]; the batch has {sorted(batch)}")
    return batch[key]


def masked_lm(logits: Array, batch: Mapping[str, Any], what: str) -> tuple[Array, Metrics]:
    """`mlm_loss` of [B, P, V] logits against the batch's masked_lm_ids / _weights."""
    return mlm_loss(
        logits, need(batch, "masked_lm_ids", what), need(batch, "masked_lm_weights", what)
    )


def mlm_objective(
    logits: Mapping[str, Array], batch: Mapping[str, Any], pair: str | None = None
) -> tuple[Array, Metrics]:
    """MLM loss (+ the `pair` head's loss, unweighted, as in the BERT and ALBERT papers and
    code). logits: {"mlm": [B, P, V], pair: [B, 2]}; "loss" counts 1 per batch."""
    what = f"mlm_{pair}" if pair else "mlm"
    loss, metrics = masked_lm(logits["mlm"], batch, what)
    if pair:
        pair_loss_, pair_metrics = pair_loss(logits[pair], need(batch, "pair_labels", what), pair)
        loss = loss + pair_loss_
        metrics.update(pair_metrics)
    return loss, {"loss": Mean(loss, 1.0), **metrics}


# --- ELECTRA: replaced-token detection ------------------------------------------------


def sample_tokens(logits: Array, rng: Array, temperature: float = 1.0) -> Array:
    """One token per position from softmax(logits / temperature), by the Gumbel-max trick.

    logits: [..., V] -> int32 [...]. No gradient flows through the sample.
    """
    logits = jax.lax.stop_gradient(logits).astype(jnp.float32) / temperature
    return jnp.argmax(logits + jax.random.gumbel(rng, logits.shape), axis=-1).astype(jnp.int32)


def replace_tokens(
    input_ids: Array, positions: Array, weights: Array, masked_ids: Array, sampled: Array
) -> tuple[Array, Array]:
    """ELECTRA's corrupted input and its replaced-token labels.

    Args:
      input_ids: [B, L] the masked input the generator saw.
      positions, weights, masked_ids: [B, P] masked_lm_positions / _weights / _ids; entries
        of weight 0 (padding) change nothing.
      sampled: [B, P] the generator's samples at those positions.

    Returns:
      (corrupted [B, L] int32: the original ids with the samples written at the masked
      positions, labels [B, L] int32: 1 exactly where corrupted differs from the original
      token, i.e. where the sample is not the token that was masked).
    """
    input_ids = jnp.asarray(input_ids)
    length = input_ids.shape[1]
    rows = jnp.arange(input_ids.shape[0])[:, None]
    # Padding entries point past the end and are dropped, so they never overwrite a
    # real position that happens to share their index.
    cols = jnp.where(weights > 0, positions, length)
    original = input_ids.at[rows, cols].set(masked_ids, mode="drop")
    corrupted = input_ids.at[rows, cols].set(sampled, mode="drop")
    return corrupted.astype(jnp.int32), (corrupted != original).astype(jnp.int32)


def rtd_loss(logits: Array, labels: Array, mask: Array) -> tuple[Array, Metrics]:
    """Replaced-token detection: sigmoid cross-entropy over the real tokens.

    Args:
      logits: [B, L] discriminator scores (> 0 means "replaced").
      labels: [B, L] 1 = replaced, 0 = original.
      mask: [B, L] the attention mask: > 0 at real tokens (segment numbers), 0 padding.

    Returns:
      (loss, {"rtd_loss", "rtd_accuracy", "rtd_replaced", "rtd_baseline_accuracy"}), each
      counting the real tokens: rtd_replaced is the share of them that were replaced,
      and rtd_baseline_accuracy = 1 - rtd_replaced the accuracy of always answering
      "original", which a learning discriminator beats.
    """
    logits = logits.astype(jnp.float32)
    labels_f = labels.astype(jnp.float32)
    mask = (mask > 0).astype(jnp.float32)
    # log(1 + exp(-|x|)) form: finite for any logit.
    bce = jnp.maximum(logits, 0) - logits * labels_f + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    correct = ((logits > 0).astype(jnp.float32) == labels_f).astype(jnp.float32)
    replaced = weighted_mean(labels_f, mask)
    loss = weighted_mean(bce, mask)
    count = jnp.sum(mask.astype(jnp.float32))
    return loss, {
        "rtd_loss": Mean(loss, count),
        "rtd_accuracy": Mean(weighted_mean(correct, mask), count),
        "rtd_replaced": Mean(replaced, count),
        "rtd_baseline_accuracy": Mean(1.0 - replaced, count),
    }


def electra_objective(
    logits: Mapping[str, Array],
    batch: Mapping[str, Any],
    *,
    rtd_labels: Array,
    gen_weight: float,
    disc_weight: float,
) -> tuple[Array, Metrics]:
    """ELECTRA: gen_weight * generator MLM loss + disc_weight * RTD loss (the paper's 1 and
    50 are config.electra's defaults, configs/pretrain.py).

    logits: {"generator": [B, P, V] generator scores at the masked positions,
    "discriminator": [B, L] discriminator scores on the corrupted input}; rtd_labels:
    [B, L] from `replace_tokens`. The mlm_* metrics are the generator's; "loss" is the
    batch's total (count 1).
    """
    mlm, metrics = masked_lm(logits["generator"], batch, "electra")
    rtd, rtd_metrics = rtd_loss(
        logits["discriminator"], rtd_labels, need(batch, "attention_mask", "electra")
    )
    loss = gen_weight * mlm + disc_weight * rtd
    return loss, {"loss": Mean(loss, 1.0), **metrics, **rtd_metrics}


# --- distillation --------------------------------------------------------------------


def soft_target_kl(student_logits: Array, teacher_logits: Array, temperature: float) -> Array:
    """KL(teacher || student) of the softened distributions, times T² (Hinton et al.).

    [..., V] float logits -> [...] float32: sum_v p_t (log p_t - log p_s) with
    p = softmax(logits / T). Multiplying by T² keeps its gradient on the scale of the
    hard loss's whatever T is.
    """
    t = temperature
    log_ps = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t, axis=-1)
    log_pt = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / t, axis=-1)
    return jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1) * t * t


def cosine_distance(a: Array, b: Array) -> Array:
    """1 - cos(a, b) along the last axis: [..., D] -> [...] float32 (0 for equal vectors)."""
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    dot = jnp.sum(a * b, axis=-1)
    norms = jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1)
    return 1.0 - dot / jnp.maximum(norms, 1e-8)


def distillation_objective(
    logits: Mapping[str, Array],
    batch: Mapping[str, Any],
    *,
    teacher_logits: Array,
    student_hidden: Array | None = None,
    teacher_hidden: Array | None = None,
    temperature: float = 2.0,
    alpha_ce: float = 5.0,
    alpha_mlm: float = 2.0,
    alpha_cos: float = 1.0,
) -> tuple[Array, Metrics]:
    """DistilBERT's loss: alpha_ce * KL_T + alpha_mlm * MLM + alpha_cos * cosine.

    Args:
      logits: the student's {"mlm": [B, P, V]} at the masked positions.
      batch: needs masked_lm_ids / _weights and, for the cosine term, attention_mask.
      teacher_logits: [B, P, V] the frozen teacher's MLM scores at the same positions
        (targets: the caller stops their gradient, as steps.distillation_loss_fn does).
      student_hidden, teacher_hidden: [B, L, H] last hidden states (same H), for the
        cosine term; unused when alpha_cos is 0.
      temperature, alpha_ce, alpha_mlm, alpha_cos: DistilBERT's defaults 2, 5, 2, 1.

    The KL term is averaged over the masked positions (DistilBERT's
    `restrict_ce_to_mask`: only there does our sparse head score tokens); the cosine
    term over the real tokens. Metrics: mlm_loss / mlm_accuracy are the student's hard
    MLM figures, mlm_kl the soft-target term, mlm_teacher_accuracy the teacher's
    accuracy on the same predictions, cos_loss the mean 1 - cos.
    """
    weights = need(batch, "masked_lm_weights", "distillation")
    mlm, metrics = masked_lm(logits["mlm"], batch, "distillation")
    count = metrics["mlm_loss"].count
    kl = weighted_mean(soft_target_kl(logits["mlm"], teacher_logits, temperature), weights)
    teacher_correct = jnp.argmax(teacher_logits, axis=-1) == batch["masked_lm_ids"]
    loss = alpha_ce * kl + alpha_mlm * mlm
    metrics.update(
        mlm_kl=Mean(kl, count),
        mlm_teacher_accuracy=Mean(
            weighted_mean(teacher_correct.astype(jnp.float32), weights), count
        ),
    )
    if alpha_cos:
        if student_hidden is None or teacher_hidden is None:
            raise ValueError("distillation: alpha_cos > 0 needs student_hidden and teacher_hidden")
        mask = (need(batch, "attention_mask", "distillation") > 0).astype(jnp.float32)
        cos = weighted_mean(cosine_distance(student_hidden, teacher_hidden), mask)
        loss = loss + alpha_cos * cos
        metrics["cos_loss"] = Mean(cos, jnp.sum(mask.astype(jnp.float32)))
    return loss, {"loss": Mean(loss, 1.0), **metrics}


# --- fine-tuning tasks ---------------------------------------------------------------


def classification_loss(
    logits: Array, labels: Array, weights: Array, regression: bool
) -> tuple[Array, Metrics]:
    """Sequence classification: cross-entropy, or a regression's (STS-B) squared error.

    logits [B, (S,) labels] (regression: [B, (S,) 1]); labels and weights [B, (S)]
    (S: packed sequences; weight 0: padding). Metrics: loss and accuracy (regression:
    mse), counting the real sequences.
    """
    count = jnp.sum(weights)
    if regression:
        per_row = (logits[..., 0] - labels.astype(jnp.float32)) ** 2
        loss = weighted_mean(per_row, weights)
        return loss, {"loss": Mean(loss, count), "mse": Mean(loss, count)}
    labels = labels.astype(jnp.int32)
    loss = weighted_mean(cross_entropy(logits, labels), weights)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return loss, {
        "loss": Mean(loss, count),
        "accuracy": Mean(weighted_mean(correct, weights), count),
    }


def token_classification_loss(
    logits: Array, labels: Array, weights: Array
) -> tuple[Array, Metrics]:
    """A label per token (NER): cross-entropy over the labelled sub-tokens.

    logits [B, L, labels]; labels [B, L]; weights [B, L] (0: an unlabelled piece or
    padding). Metrics: loss and token_accuracy, counting the labelled tokens.
    """
    loss = weighted_mean(cross_entropy(logits, labels), weights)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    count = jnp.sum(weights)
    return loss, {
        "loss": Mean(loss, count),
        "token_accuracy": Mean(weighted_mean(correct, weights), count),
    }


def span_loss(
    logits: Array, start: Array, end: Array, attention_mask: Array, weights: Array
) -> tuple[Array, Metrics]:
    """Extractive QA: the mean of the start and end cross-entropies over a window's tokens.

    logits [B, L, 2] (start, end); attention_mask [B, L]; start, end, weights [B] token
    indices and row weights (0: padding rows), or [B, S] for packed rows: sequence k's
    answer (positions in the row) is chosen among the tokens of segment k only, as
    padding and the other sequences can never be its answer.
    """
    if start.ndim == 1:  # one sequence per row: every real token is segment 1
        start, end, weights = start[:, None], end[:, None], weights[:, None]
        attention_mask = (attention_mask > 0).astype(jnp.int32)
    number = jnp.arange(1, start.shape[1] + 1, dtype=jnp.int32)
    own = attention_mask[:, None, :] == number[None, :, None]  # [B, S, L]
    span = jnp.where(own[..., None], logits[:, None].astype(jnp.float32), -1e9)
    ce = (cross_entropy(span[..., 0], start) + cross_entropy(span[..., 1], end)) / 2
    loss = weighted_mean(ce, weights)
    return loss, {"loss": Mean(loss, jnp.sum(weights))}
