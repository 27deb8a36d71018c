"""Pretraining losses against independent references (torch, numpy, closed forms)."""

import jax
import jax.numpy as jnp
import modellib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bertjax import objectives, tasks
from bertjax.models import build
from bertjax.models.registry import FAMILIES

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
    ce = F.cross_entropy(
        torch.from_numpy(logits).reshape(-1, V),
        torch.from_numpy(labels).reshape(-1).long(),
        reduction="none",
    )
    w = torch.from_numpy(weights).reshape(-1)
    ref = float((ce * w).sum() / w.sum())
    # ignore_index is the same thing said another way: padding labels set to -100.
    ignored = torch.from_numpy(np.where(weights > 0, labels, -100)).reshape(-1).long()
    ref_ignore = float(F.cross_entropy(torch.from_numpy(logits).reshape(-1, V), ignored))
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(float(loss), ref, rtol=1e-6)
    np.testing.assert_allclose(float(loss), ref_ignore, rtol=1e-6)
    assert float(m["mlm_loss"].value) == float(loss)
    assert float(m["mlm_loss"].count) == weights.sum()


def test_mlm_accuracy_hand_computed():
    logits = np.zeros((1, 4, 3), np.float32)
    logits[0, 0, 2] = 1  # predicts 2
    logits[0, 1, 0] = 1  # predicts 0
    logits[0, 2, 1] = 1  # predicts 1
    logits[0, 3, 1] = 1  # predicts 1 (padding)
    labels = np.array([[2, 1, 1, 1]], np.int32)
    weights = np.array([[1, 1, 1, 0]], np.float32)
    _, m = mlm_loss(logits, labels, weights)
    np.testing.assert_allclose(float(m["mlm_accuracy"].value), 2 / 3, rtol=1e-7)
    assert float(m["mlm_loss"].count) == 3


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
    assert float(loss) == 0 and float(m["mlm_accuracy"].value) == 0
    assert float(m["mlm_loss"].count) == 0
    assert np.all(np.asarray(grad) == 0)

    pl = np.full((B,), -1, np.int32)
    loss, m = pair_loss(logits[:, 0, :2], pl, name="nsp")
    grad = jax.grad(lambda x: objectives.pair_loss(x, pl)[0])(logits[:, 0, :2])
    assert float(loss) == 0 and float(m["nsp_accuracy"].value) == 0
    assert float(m["nsp_loss"].count) == 0
    assert np.all(np.isfinite(np.asarray(grad))) and np.all(np.asarray(grad) == 0)


def test_pair_loss_matches_torch_ignore_index():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(6, 2)).astype(np.float32) * 2
    labels = np.array([0, 1, -1, 1, -1, 0], np.int32)
    loss, m = pair_loss(logits, labels, name="sop")
    ref = F.cross_entropy(
        torch.from_numpy(logits), torch.from_numpy(labels).long(), ignore_index=-1
    )
    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-6)
    pred = logits.argmax(-1)
    valid = labels >= 0
    np.testing.assert_allclose(
        float(m["sop_accuracy"].value), (pred == labels)[valid].mean(), rtol=1e-7
    )
    assert float(m["sop_loss"].count) == 4 and float(m["sop_loss"].value) == float(loss)


def pretraining_loss(name, logits, batch):
    """The MLM objective of a family's pretraining task, or of a task named directly."""
    task = FAMILIES[name].task if name in FAMILIES else name
    return objectives.mlm_objective(logits, batch, tasks.TASKS[task].pair)


def _batch(logits, labels, weights, pair_labels=None):
    b = {"masked_lm_ids": labels, "masked_lm_weights": weights}
    if pair_labels is not None:
        b["pair_labels"] = pair_labels
    return b


@pytest.mark.parametrize(
    "family,pair", [("bert", "nsp"), ("albert", "sop"), ("mlm_nsp", "nsp"), ("mlm_sop", "sop")]
)
def test_pretraining_loss_adds_mlm_and_pair(family, pair):
    logits, labels, weights = _mlm_case(3)
    pl = np.array([1, 0, -1], np.int32)
    pair_logits = np.random.default_rng(4).normal(size=(B, 2)).astype(np.float32)
    loss, m = pretraining_loss(
        family, {"mlm": logits, pair: pair_logits}, _batch(logits, labels, weights, pl)
    )
    mlm, _ = objectives.mlm_loss(logits, labels, weights)
    pr, _ = objectives.pair_loss(pair_logits, pl)
    np.testing.assert_allclose(float(loss), float(mlm) + float(pr), rtol=1e-6)
    assert float(m["loss"].value) == float(loss)
    assert {"mlm_loss", "mlm_accuracy", f"{pair}_loss", f"{pair}_accuracy"} <= set(m)
    assert float(m["mlm_loss"].count) == weights.sum() and float(m[f"{pair}_loss"].count) == 2


@pytest.mark.parametrize("family", ["roberta", "distilbert", "mlm"])
def test_pretraining_loss_plain_mlm(family):
    logits, labels, weights = _mlm_case(5)
    loss, m = pretraining_loss(family, {"mlm": logits}, _batch(logits, labels, weights))
    assert float(loss) == float(objectives.mlm_loss(logits, labels, weights)[0])
    assert not any(k.startswith(("nsp", "sop")) for k in m)


def test_unknown_objectives_fail_clearly():
    import ml_collections

    assert {"electra", "distillation"} <= set(tasks.TASKS)
    with pytest.raises(ValueError, match="task='bret': unknown"):
        tasks.get(ml_collections.ConfigDict({"task": "bret", "model": {"family": "bert"}}))
    with pytest.raises(KeyError, match="pair_labels"):
        logits, labels, weights = _mlm_case()
        pretraining_loss(
            "bert", {"mlm": logits, "nsp": logits[:, 0, :2]}, _batch(logits, labels, weights)
        )
    assert set(FAMILIES) == {"bert", "roberta", "albert", "distilbert", "electra", "modernbert"}
    assert {f.task for f in FAMILIES.values()} <= set(tasks.TASKS)


def test_pretraining_loss_on_a_tiny_bert_starts_near_log_vocab():
    cfg = modellib.tiny("bert", modellib.NARROW, vocab_size=64)
    model = build(cfg)
    rng = np.random.default_rng(6)
    ids = rng.integers(5, 64, size=(4, 12)).astype(np.int32)
    batch = {
        "input_ids": ids,
        "token_type_ids": np.zeros_like(ids),
        "attention_mask": np.ones_like(ids),
        "masked_lm_positions": np.tile(np.arange(1, 4, dtype=np.int32), (4, 1)),
        "masked_lm_ids": ids[:, 1:4],
        "masked_lm_weights": np.ones((4, 3), np.float32),
        "pair_labels": np.array([0, 1, -1, 0], np.int32),
    }

    @jax.jit
    def loss_fn(params, batch):
        logits, _ = model.apply(
            {"params": params},
            batch["input_ids"],
            token_type_ids=batch["token_type_ids"],
            attention_mask=batch["attention_mask"],
            masked_positions=batch["masked_lm_positions"],
        )
        return pretraining_loss("bert", logits, batch)

    params = jax.jit(model.init)(jax.random.key(0), ids)["params"]
    loss, m = loss_fn(params, batch)
    # Small initial weights: near-uniform predictions.
    np.testing.assert_allclose(float(m["mlm_loss"].value), np.log(64), rtol=0.05)
    np.testing.assert_allclose(float(m["nsp_loss"].value), np.log(2), rtol=0.05)
    assert float(m["nsp_loss"].count) == 3 and np.isfinite(float(loss))


# --- ELECTRA: replaced-token detection -----------------------------------------------


def _electra_case(seed=0, b=3, length=10, p=4, v=30):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, v, (b, length)).astype(np.int32)
    positions = np.sort(
        np.stack([rng.choice(np.arange(1, length), p, replace=False) for _ in range(b)]), axis=1
    ).astype(np.int32)
    weights = np.ones((b, p), np.float32)
    weights[1, 2:] = 0  # padded predictions: the pipeline points them at position 0
    positions[1, 2:] = 0
    masked_ids = np.where(weights > 0, np.take_along_axis(ids, positions, axis=1), 0)
    masked = ids.copy()
    for r, j in zip(*np.nonzero(weights), strict=True):
        masked[r, positions[r, j]] = 4  # [MASK]
    return masked, ids, positions, weights, masked_ids


def test_rtd_labels_are_one_exactly_where_the_sample_differs():
    masked, original, positions, weights, masked_ids = _electra_case()
    # Half the samples are the original token, half are not.
    sampled = masked_ids.copy()
    sampled[:, ::2] = (sampled[:, ::2] + 1) % 30
    corrupted, labels = objectives.replace_tokens(masked, positions, weights, masked_ids, sampled)
    want_corrupted, want_labels = masked.copy(), np.zeros_like(masked)
    for r in range(masked.shape[0]):  # an independent loop over the real predictions
        for j in range(positions.shape[1]):
            if weights[r, j] > 0:
                pos = positions[r, j]
                want_corrupted[r, pos] = sampled[r, j]
                want_labels[r, pos] = int(sampled[r, j] != original[r, pos])
    np.testing.assert_array_equal(np.asarray(corrupted), want_corrupted)
    np.testing.assert_array_equal(np.asarray(labels), want_labels)
    assert np.asarray(labels).sum() == (weights[:, ::2] > 0).sum()
    # A padded entry (position 0, weight 0) changed nothing: [CLS] stays.
    assert np.asarray(corrupted)[1, 0] == masked[1, 0] and np.asarray(labels)[1, 0] == 0


def test_generator_forced_to_the_original_token_gives_all_zero_labels():
    masked, _, positions, weights, masked_ids = _electra_case(1)
    logits = np.full((*masked_ids.shape, 30), -30.0, np.float32)
    np.put_along_axis(logits, masked_ids[..., None], 30.0, axis=-1)
    for seed in range(5):
        sampled = objectives.sample_tokens(jnp.asarray(logits), jax.random.key(seed))
        np.testing.assert_array_equal(np.asarray(sampled), masked_ids)
        corrupted, labels = objectives.replace_tokens(
            masked, positions, weights, masked_ids, sampled
        )
        assert int(np.asarray(labels).sum()) == 0
        # The [MASK] tokens are gone: the discriminator sees the original text.
        assert not np.any(np.asarray(corrupted) == 4)


def test_gumbel_samples_follow_the_softmax():
    logits = jnp.asarray([[[2.0, 1.0, 0.0, -1.0]]])
    keys = jax.random.split(jax.random.key(0), 20000)
    draws = np.asarray(jax.vmap(lambda k: objectives.sample_tokens(logits, k))(keys)).ravel()
    freq = np.bincount(draws, minlength=4) / draws.size
    p = np.exp([2.0, 1.0, 0.0, -1.0])
    np.testing.assert_allclose(freq, p / p.sum(), atol=0.01)
    # Temperature 0.5 sharpens: softmax(2 * logits).
    draws = np.asarray(jax.vmap(lambda k: objectives.sample_tokens(logits, k, 0.5))(keys))
    p2 = np.exp(2 * np.array([2.0, 1.0, 0.0, -1.0]))
    np.testing.assert_allclose(
        np.bincount(draws.ravel(), minlength=4) / draws.size, p2 / p2.sum(), atol=0.01
    )


def test_rtd_loss_matches_torch_bce_and_counts_the_baseline():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(3, 8)).astype(np.float32) * 4
    labels = (rng.random((3, 8)) < 0.3).astype(np.int32)
    mask = np.ones((3, 8), np.float32)
    mask[2, 5:] = 0
    loss, m = objectives.rtd_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask))
    bce = F.binary_cross_entropy_with_logits(
        torch.from_numpy(logits), torch.from_numpy(labels).float(), reduction="none"
    )
    ref = float((bce * torch.from_numpy(mask)).sum() / mask.sum())
    np.testing.assert_allclose(float(loss), ref, rtol=1e-6)
    real = mask > 0
    np.testing.assert_allclose(
        float(m["rtd_accuracy"].value), ((logits > 0) == (labels > 0))[real].mean(), rtol=1e-6
    )
    np.testing.assert_allclose(float(m["rtd_replaced"].value), labels[real].mean(), rtol=1e-6)
    np.testing.assert_allclose(
        float(m["rtd_baseline_accuracy"].value), 1 - labels[real].mean(), rtol=1e-6
    )
    assert float(m["rtd_loss"].count) == mask.sum()


@pytest.mark.parametrize("gen_weight,disc_weight", [(1.0, 50.0), (0.5, 3.0)])
def test_electra_joint_loss_is_the_weighted_sum(gen_weight, disc_weight):
    masked, original, positions, weights, masked_ids = _electra_case(2)
    rng = np.random.default_rng(6)
    gen = rng.normal(size=(*masked_ids.shape, 30)).astype(np.float32)
    disc = rng.normal(size=masked.shape).astype(np.float32)
    labels = (rng.random(masked.shape) < 0.2).astype(np.int32)
    batch = {
        "masked_lm_ids": masked_ids,
        "masked_lm_weights": weights,
        "attention_mask": np.ones(masked.shape, np.int32),
    }
    loss, m = objectives.electra_objective(
        {"generator": gen, "discriminator": disc},
        batch,
        rtd_labels=labels,
        gen_weight=gen_weight,
        disc_weight=disc_weight,
    )
    mlm, _ = objectives.mlm_loss(gen, masked_ids, weights)
    rtd, _ = objectives.rtd_loss(disc, labels, batch["attention_mask"])
    np.testing.assert_allclose(
        float(loss), gen_weight * float(mlm) + disc_weight * float(rtd), rtol=1e-6
    )
    assert float(m["mlm_loss"].value) == float(mlm) and float(m["rtd_loss"].value) == float(rtd)


# --- distillation ---------------------------------------------------------------------


def test_soft_target_kl_matches_torch_kl_div_times_t_squared():
    rng = np.random.default_rng(7)
    s = rng.normal(size=(2, 5, V)).astype(np.float32) * 2
    t = rng.normal(size=(2, 5, V)).astype(np.float32) * 2
    for temp in (1.0, 2.0, 4.0):
        got = np.asarray(objectives.soft_target_kl(s, t, temp))
        ref = F.kl_div(
            F.log_softmax(torch.from_numpy(s) / temp, -1),
            F.softmax(torch.from_numpy(t) / temp, -1),
            reduction="none",
        ).sum(-1)
        np.testing.assert_allclose(got, ref.numpy() * temp**2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(objectives.soft_target_kl(s, s, 2.0)), 0, atol=1e-6)


def test_cosine_distance_matches_torch():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(2, 4, 6)).astype(np.float32), rng.normal(size=(2, 4, 6))
    b = b.astype(np.float32)
    ref = 1 - F.cosine_similarity(torch.from_numpy(a), torch.from_numpy(b), dim=-1)
    np.testing.assert_allclose(
        np.asarray(objectives.cosine_distance(a, b)), ref.numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(np.asarray(objectives.cosine_distance(a, 3 * a)), 0, atol=1e-6)


def test_distillation_objective_is_the_weighted_sum_over_the_right_positions():
    logits, labels, weights = _mlm_case(9)
    teacher = np.random.default_rng(10).normal(size=logits.shape).astype(np.float32)
    hs, ht = (np.random.default_rng(i).normal(size=(B, 6, 4)).astype(np.float32) for i in (11, 12))
    mask = np.ones((B, 6), np.float32)
    mask[0, 4:] = 0
    batch = {**_batch(logits, labels, weights), "attention_mask": mask}
    loss, m = objectives.distillation_objective(
        {"mlm": logits},
        batch,
        teacher_logits=teacher,
        student_hidden=hs,
        teacher_hidden=ht,
        temperature=2.0,
        alpha_ce=5.0,
        alpha_mlm=2.0,
        alpha_cos=1.0,
    )
    kl = np.asarray(objectives.soft_target_kl(logits, teacher, 2.0))
    kl_ref = (kl * weights).sum() / weights.sum()  # masked positions only
    cos = np.asarray(objectives.cosine_distance(hs, ht))
    cos_ref = (cos * mask).sum() / mask.sum()  # real tokens only
    mlm, _ = objectives.mlm_loss(logits, labels, weights)
    np.testing.assert_allclose(float(m["mlm_kl"].value), kl_ref, rtol=1e-5)
    np.testing.assert_allclose(float(m["cos_loss"].value), cos_ref, rtol=1e-5)
    np.testing.assert_allclose(float(loss), 5 * kl_ref + 2 * float(mlm) + cos_ref, rtol=1e-5)
    # alpha_cos = 0: no cosine term, no hidden states needed.
    loss0, m0 = objectives.distillation_objective(
        {"mlm": logits}, batch, teacher_logits=teacher, alpha_cos=0.0
    )
    np.testing.assert_allclose(float(loss0), 5 * kl_ref + 2 * float(mlm), rtol=1e-5)
    assert "cos_loss" not in m0
