"""The pure train / eval steps (bertjax/steps.py) on one device."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import modellib
import numpy as np
import pytest

from bertjax import steps
from bertjax.metrics import Mean, combine
from bertjax.models import ModelConfig, build
from bertjax.optim import OptimConfig, make_optimizer
from bertjax.tasks.electra import electra_loss_fn
from bertjax.tasks.mlm import MaskedLMNSP

# The paper's loss weights and temperature, as configs/pretrain.py sets them.
ELECTRA_LOSS = dict(gen_weight=1.0, disc_weight=50.0, temperature=1.0)


def bert_loss_fn(model, train=True):
    """BERT's pretraining loss (MLM + NSP), as the mlm_nsp task builds it."""
    return MaskedLMNSP(None).loss_fn(model, train)


TINY = dict(
    vocab_size=50,
    hidden_size=16,
    num_layers=2,
    num_heads=2,
    intermediate_size=32,
    max_position_embeddings=16,
)
B, L, P = 4, 12, 3


def _batch(seed: int = 0) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    return {
        "input_ids": jnp.asarray(rng.integers(5, TINY["vocab_size"], (B, L)), jnp.int32),
        "token_type_ids": jnp.zeros((B, L), jnp.int32),
        "attention_mask": jnp.ones((B, L), jnp.int32),
        "masked_lm_positions": jnp.asarray(rng.integers(1, L, (B, P)), jnp.int32),
        "masked_lm_ids": jnp.asarray(rng.integers(5, TINY["vocab_size"], (B, P)), jnp.int32),
        "masked_lm_weights": jnp.ones((B, P), jnp.float32),
        "pair_labels": jnp.asarray(rng.integers(0, 2, (B,)), jnp.int32),
    }


def _setup(**optim):
    cfg = modellib.tiny("bert", TINY)
    model = build(cfg)
    oc = OptimConfig(learning_rate=1e-2, warmup_steps=4, total_steps=20, **optim)
    tx = make_optimizer(oc)
    state = jax.jit(lambda: __import__("flax").linen.unbox(steps.init_state(model, tx, 0)()))()
    step = jax.jit(
        functools.partial(steps.train_step, loss_fn=bert_loss_fn(model), tx=tx, optim=oc, seed=0)
    )
    return model, oc, state, step


def _same(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_step_updates_and_reports_the_schedule():
    _, oc, state, step = _setup()
    s1, m1 = step(state, _batch(0))
    assert int(s1["step"]) == 1 and int(s1["skipped"]) == 0
    # The first update uses the schedule at 0 updates done: 0 during warmup, so the
    # parameters stay put (weight decay is scaled by the learning rate too).
    assert float(m1["learning_rate"]) == 0.0
    assert _same(s1["params"], state["params"])
    s2, m2 = step(s1, _batch(1))
    assert not _same(s2["params"], s1["params"])
    assert float(m2["learning_rate"]) == pytest.approx(1e-2 * 1 / 4)
    assert np.isfinite(float(m2["grad_norm"])) and float(m2["grad_norm"]) > 0
    assert float(m2["loss"].value) == pytest.approx(
        float(m2["mlm_loss"].value) + float(m2["nsp_loss"].value), rel=1e-6
    )


def test_non_finite_batch_is_skipped_and_counted():
    _, _, state, step = _setup()
    s1, _ = step(state, _batch(0))
    bad = {**_batch(1), "masked_lm_weights": jnp.full((B, P), jnp.nan)}
    s2, m2 = step(s1, bad)
    assert float(m2["skipped"]) == 1.0
    assert int(s2["skipped"]) == 1 and int(s2["consecutive_skips"]) == 1
    assert int(s2["step"]) == 2  # the data position still advances
    assert _same(s2["params"], s1["params"]) and _same(s2["opt_state"], s1["opt_state"])
    s3, m3 = step(s2, bad)
    assert int(s3["consecutive_skips"]) == 2 and int(s3["skipped"]) == 2
    s4, m4 = step(s3, _batch(2))
    assert float(m4["skipped"]) == 0.0
    assert int(s4["consecutive_skips"]) == 0 and int(s4["skipped"]) == 2
    # Skipped steps did not advance the schedule: this is the second real update.
    assert float(m4["learning_rate"]) == pytest.approx(1e-2 * 1 / 4)


def test_dropout_is_a_function_of_the_step():
    cfg = modellib.tiny("bert", TINY, dropout_rate=0.5)
    model = build(cfg)
    loss_fn = bert_loss_fn(model)
    params = jax.jit(
        lambda: __import__("flax").linen.unbox(
            model.init(jax.random.key(0), jnp.ones((1, L), jnp.int32))
        )["params"]
    )()
    key = lambda s: jax.random.fold_in(jax.random.key(0), s)
    batch = _batch(0)
    a = loss_fn(params, batch, key(3))[0]
    b = loss_fn(params, batch, key(3))[0]
    c = loss_fn(params, batch, key(4))[0]
    assert float(a) == float(b) and float(a) != float(c)


def test_eval_step_has_no_dropout_and_counts():
    cfg = modellib.tiny("bert", TINY, dropout_rate=0.5)
    model = build(cfg)
    params = jax.jit(
        lambda: __import__("flax").linen.unbox(
            model.init(jax.random.key(0), jnp.ones((1, L), jnp.int32))
        )["params"]
    )()
    loss_fn = bert_loss_fn(model, train=False)
    batch = {**_batch(0), "masked_lm_weights": jnp.ones((B, P)).at[0].set(0.0)}
    m1 = steps.eval_step(params, batch, loss_fn=loss_fn)
    m2 = steps.eval_step(params, batch, loss_fn=loss_fn)
    assert float(m1["mlm_loss"].value) == float(m2["mlm_loss"].value)
    assert float(m1["mlm_loss"].count) == (B - 1) * P


def test_combine_metrics_weights_by_their_own_counts():
    batches = [
        {
            "mlm_loss": Mean(2.0, 10.0),
            "nsp_accuracy": Mean(1.0, 1.0),
            "loss": Mean(3.0, 1.0),
            "grad_norm": 1.0,
            "empty": Mean(7.0, 0.0),
        },
        {
            "mlm_loss": Mean(4.0, 30.0),
            "nsp_accuracy": Mean(0.0, 3.0),
            "loss": Mean(5.0, 1.0),
            "grad_norm": 3.0,
            "empty": Mean(9.0, 0.0),
        },
    ]
    got = combine(batches)
    assert got["mlm_loss"] == pytest.approx((2 * 10 + 4 * 30) / 40)
    assert got["nsp_accuracy"] == pytest.approx(1 / 4)
    assert got["loss"] == pytest.approx(4.0)  # per batch: its count is 1
    assert got["grad_norm"] == pytest.approx(2.0)  # a plain value: the mean over batches
    assert got["empty"] == 0.0  # nothing counted: 0, not NaN


def test_all_finite():
    assert bool(steps.all_finite({"a": jnp.ones(3), "b": jnp.arange(3)}))
    assert not bool(steps.all_finite({"a": jnp.array([1.0, jnp.inf]), "b": jnp.arange(3)}))


# --- ELECTRA's loss function: generator, samples, discriminator -------------------------

# A one-head generator.
ELECTRA = modellib.fields("electra", TINY, generator_num_heads=1)


def _electra(**overrides):
    cfg = ModelConfig.from_dict({**ELECTRA, **overrides})
    model = build(cfg)
    params = jax.jit(
        lambda: __import__("flax").linen.unbox(
            model.init(jax.random.key(0), jnp.ones((1, L), jnp.int32))
        )["params"]
    )()
    return model, params


def _masked_batch(seed=0, token=None):
    """A batch whose masked positions hold [MASK] (4) and distinct positions per row."""
    b = dict(_batch(seed))
    rng = np.random.default_rng(seed)
    pos = np.sort(
        np.stack([rng.choice(np.arange(1, L), P, replace=False) for _ in range(B)]), axis=1
    )
    ids = np.asarray(b["input_ids"]).copy()
    if token is not None:
        np.put_along_axis(ids, pos, token, axis=1)
    masked_ids = np.take_along_axis(ids, pos, axis=1)
    np.put_along_axis(ids, pos, 4, axis=1)
    b.update(
        input_ids=jnp.asarray(ids),
        masked_lm_positions=jnp.asarray(pos, jnp.int32),
        masked_lm_ids=jnp.asarray(masked_ids, jnp.int32),
    )
    return b


def test_electra_loss_fn_trains_both_towers_and_the_shared_embeddings():
    model, params = _electra()
    loss_fn = jax.jit(electra_loss_fn(model, **ELECTRA_LOSS))
    batch = _masked_batch(0)
    loss, m = loss_fn(params, batch, jax.random.key(1))
    assert float(loss) == pytest.approx(
        float(m["mlm_loss"].value) + 50 * float(m["rtd_loss"].value), rel=1e-6
    )
    # Only masked positions can be replaced: at most P of the L tokens of a row.
    assert 0 < float(m["rtd_replaced"].value) <= P / L + 1e-6
    assert float(m["rtd_baseline_accuracy"].value) == pytest.approx(
        1 - float(m["rtd_replaced"].value)
    )
    again, _ = loss_fn(params, batch, jax.random.key(1))
    assert float(again) == float(loss)  # a function of the key alone
    grads = jax.jit(
        jax.grad(lambda p: electra_loss_fn(model, **ELECTRA_LOSS)(p, batch, jax.random.key(1))[0])
    )(params)
    for path in (
        ("embeddings",),
        ("encoder",),
        ("discriminator",),
        ("generator", "encoder"),
        ("generator", "mlm"),
    ):
        tree = grads
        for key in path:
            tree = tree[key]
        assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(tree)) > 0, path


def test_electra_generator_forced_to_the_original_replaces_nothing():
    model, params = _electra()
    # Every masked token is id 7, and the generator's bias makes it predict 7 everywhere.
    mlm = params["generator"]["mlm"]
    params = {
        **params,
        "generator": {**params["generator"], "mlm": {**mlm, "bias": mlm["bias"].at[7].set(1e4)}},
    }
    batch = _masked_batch(1, token=7)
    for seed in range(3):
        _, m = jax.jit(electra_loss_fn(model, **ELECTRA_LOSS))(params, batch, jax.random.key(seed))
        assert float(m["rtd_replaced"].value) == 0.0
        assert float(m["rtd_baseline_accuracy"].value) == 1.0
        assert float(m["mlm_accuracy"].value) == 1.0
