"""Pretraining losses against independent references (torch, numpy, closed forms)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bertjax import objectives
from bertjax.models import ModelConfig, build

B, P, V = 3, 5, 11


def _mlm_case(seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(B, P, V)).astype(np.float32) * 3
    labels = rng.integers(0, V, size=(B, P)).astype(np.int32)
    weights = np.ones((B, P), np.float32)
    weights[0, 3:] = 0  # padded predictions
    weights[2, :] = 0  # a padded row
    labels[weights == 0] = 0  # the pipeline pads ids with 0
    return logits, labels, weights


mlm_loss = jax.jit(objectives.mlm_loss)
pair_loss = jax.jit(objectives.pair_loss, static_argnames="name")


def test_mlm_loss_matches_torch_weighted_cross_entropy():
    logits, labels, weights = _mlm_case()
    loss, m = mlm_loss(logits, labels, weights)
    ce = F.cross_entropy(torch.from_numpy(logits).reshape(-1, V),
                         torch.from_numpy(labels).reshape(-1).long(), reduction="none")
    w = torch.from_numpy(weights).reshape(-1)
    ref = float((ce * w).sum() / w.sum())
    # ignore_index is the same thing said another way: padding labels set to -100.
    ignored = torch.from_numpy(np.where(weights > 0, labels, -100)).reshape(-1).long()
    ref_ignore = float(F.cross_entropy(torch.from_numpy(logits).reshape(-1, V), ignored))
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(float(loss), ref, rtol=1e-6)
    np.testing.assert_allclose(float(loss), ref_ignore, rtol=1e-6)
    assert float(m["mlm_loss"]) == float(loss)
    assert float(m["mlm_count"]) == weights.sum()


def test_mlm_accuracy_hand_computed():
    logits = np.zeros((1, 4, 3), np.float32)
    logits[0, 0, 2] = 1  # predicts 2
    logits[0, 1, 0] = 1  # predicts 0
    logits[0, 2, 1] = 1  # predicts 1
    logits[0, 3, 1] = 1  # predicts 1 (padding)
    labels = np.array([[2, 1, 1, 1]], np.int32)
    weights = np.array([[1, 1, 1, 0]], np.float32)
    _, m = mlm_loss(logits, labels, weights)
    np.testing.assert_allclose(float(m["mlm_accuracy"]), 2 / 3, rtol=1e-7)
    assert float(m["mlm_count"]) == 3


def test_mlm_loss_gradient_is_softmax_minus_onehot():
    logits, labels, weights = _mlm_case(1)
    grad = jax.jit(jax.grad(lambda x: objectives.mlm_loss(x, labels, weights)[0]))(logits)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref = (p - np.eye(V, dtype=np.float32)[labels]) * weights[..., None] / weights.sum()
    np.testing.assert_allclose(np.asarray(grad), ref, atol=1e-7)


def test_all_padding_batches_give_finite_zeros():
    logits, labels, _ = _mlm_case()
    weights = np.zeros((B, P), np.float32)
    loss, m = mlm_loss(logits, labels, weights)
    grad = jax.grad(lambda x: objectives.mlm_loss(x, labels, weights)[0])(logits)
    assert float(loss) == 0 and float(m["mlm_accuracy"]) == 0 and float(m["mlm_count"]) == 0
    assert np.all(np.asarray(grad) == 0)

    pl = np.full((B,), -1, np.int32)
    loss, m = pair_loss(logits[:, 0, :2], pl, name="nsp")
    grad = jax.grad(lambda x: objectives.pair_loss(x, pl)[0])(logits[:, 0, :2])
    assert float(loss) == 0 and float(m["nsp_accuracy"]) == 0 and float(m["nsp_count"]) == 0
    assert np.all(np.isfinite(np.asarray(grad))) and np.all(np.asarray(grad) == 0)


def test_pair_loss_matches_torch_ignore_index():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(6, 2)).astype(np.float32) * 2
    labels = np.array([0, 1, -1, 1, -1, 0], np.int32)
    loss, m = pair_loss(logits, labels, name="sop")
    ref = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels).long(),
                          ignore_index=-1)
    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-6)
    pred = logits.argmax(-1)
    valid = labels >= 0
    np.testing.assert_allclose(float(m["sop_accuracy"]), (pred == labels)[valid].mean(),
                               rtol=1e-7)
    assert float(m["sop_count"]) == 4 and float(m["sop_loss"]) == float(loss)


def _batch(logits, labels, weights, pair_labels=None):
    b = {"masked_lm_ids": labels, "masked_lm_weights": weights}
    if pair_labels is not None:
        b["pair_labels"] = pair_labels
    return b


@pytest.mark.parametrize("family,pair", [("bert", "nsp"), ("albert", "sop"),
                                         ("mlm_nsp", "nsp"), ("mlm_sop", "sop")])
def test_pretraining_loss_adds_mlm_and_pair(family, pair):
    logits, labels, weights = _mlm_case(3)
    pl = np.array([1, 0, -1], np.int32)
    pair_logits = np.random.default_rng(4).normal(size=(B, 2)).astype(np.float32)
    loss, m = objectives.pretraining_loss(family, {"mlm": logits, pair: pair_logits},
                                          _batch(logits, labels, weights, pl))
    mlm, _ = objectives.mlm_loss(logits, labels, weights)
    pr, _ = objectives.pair_loss(pair_logits, pl)
    np.testing.assert_allclose(float(loss), float(mlm) + float(pr), rtol=1e-6)
    assert float(m["loss"]) == float(loss)
    assert {"mlm_loss", "mlm_accuracy", "mlm_count", f"{pair}_loss", f"{pair}_accuracy",
            f"{pair}_count"} <= set(m)


@pytest.mark.parametrize("family", ["roberta", "distilbert", "mlm"])
def test_pretraining_loss_plain_mlm(family):
    logits, labels, weights = _mlm_case(5)
    loss, m = objectives.pretraining_loss(family, {"mlm": logits},
                                          _batch(logits, labels, weights))
    assert float(loss) == float(objectives.mlm_loss(logits, labels, weights)[0])
    assert not any(k.startswith(("nsp", "sop")) for k in m)


def test_unknown_objectives_fail_clearly():
    assert objectives.resolve_objective("electra") == "electra"
    assert objectives.resolve_objective("distillation") == "distillation"
    with pytest.raises(ValueError, match="unknown objective or family 'bret'"):
        objectives.resolve_objective("bret")
    with pytest.raises(KeyError, match="pair_labels"):
        logits, labels, weights = _mlm_case()
        objectives.pretraining_loss("bert", {"mlm": logits, "nsp": logits[:, 0, :2]},
                                    _batch(logits, labels, weights))
    assert set(objectives.FAMILY_OBJECTIVES) == {"bert", "roberta", "albert", "distilbert",
                                                 "electra"}


def test_pretraining_loss_on_a_tiny_bert_starts_near_log_vocab():
    cfg = ModelConfig(vocab_size=64, hidden_size=16, num_layers=1, num_heads=2,
                      intermediate_size=32, max_position_embeddings=16)
    model = build(cfg)
    rng = np.random.default_rng(6)
    ids = rng.integers(5, 64, size=(4, 12)).astype(np.int32)
    batch = {"input_ids": ids, "token_type_ids": np.zeros_like(ids),
             "attention_mask": np.ones_like(ids),
             "masked_lm_positions": np.tile(np.arange(1, 4, dtype=np.int32), (4, 1)),
             "masked_lm_ids": ids[:, 1:4], "masked_lm_weights": np.ones((4, 3), np.float32),
             "pair_labels": np.array([0, 1, -1, 0], np.int32)}

    @jax.jit
    def loss_fn(params, batch):
        logits, _ = model.apply({"params": params}, batch["input_ids"],
                                token_type_ids=batch["token_type_ids"],
                                attention_mask=batch["attention_mask"],
                                masked_positions=batch["masked_lm_positions"])
        return objectives.pretraining_loss("bert", logits, batch)

    params = jax.jit(model.init)(jax.random.key(0), ids)["params"]
    loss, m = loss_fn(params, batch)
    # Small initial weights: near-uniform predictions.
    np.testing.assert_allclose(float(m["mlm_loss"]), np.log(64), rtol=0.05)
    np.testing.assert_allclose(float(m["nsp_loss"]), np.log(2), rtol=0.05)
    assert float(m["nsp_count"]) == 3 and np.isfinite(float(loss))
