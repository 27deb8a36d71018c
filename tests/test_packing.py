"""Packed rows (docs/packing.md): several sequences per row, segment numbers in the
attention mask. The reference is always the same sequences unpacked, one per row: every
family on the CPU attention paths gives the same per-sequence outputs, losses and
gradients; positions restart; no attention crosses a sequence."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from packlib import FAMILIES, PAIR, ROW, ROWS, layout, sequences, tiny

from bertjax import objectives
from bertjax.models import ModelConfig, build, init_params
from bertjax.tasks import glue, mlm, ner, squad
from bertjax.tasks.electra import electra_loss_fn


def all_heads(name: str) -> tuple[str, ...]:
    fam = name == "electra"
    pooled = ("pooler",) if name in ("bert", "albert") else ()
    pair = (PAIR[name],) if name in PAIR else ()
    gen = ("discriminator", "generator") if fam else ()
    return (*pooled, "mlm", *pair, *gen, "classifier", "token_classifier", "span")


def both(cfg: ModelConfig, seed: int = 0):
    seqs = sequences(cfg, seed)
    single = tuple((i,) for i in range(len(seqs)))
    return (
        seqs,
        layout(seqs, ROWS, cfg.pad_token_id, True),
        layout(seqs, single, cfg.pad_token_id, False),
    )


def forward(cfg: ModelConfig, params, batch, packed: bool):
    from bertjax.tasks.base import packing

    model = build(cfg)
    kw = packing(batch, "labels") if packed else {}
    fn = jax.jit(
        lambda p, b: model.apply(
            {"params": p}, b["input_ids"], b["token_type_ids"], b["attention_mask"], **kw
        )
    )
    return fn(params, {k: jnp.asarray(v) for k, v in batch.items()})


PER_TOKEN = ("mlm", "generator", "discriminator", "token_classifier", "span")
PER_SEQUENCE = ("nsp", "sop", "classifier")


@pytest.mark.parametrize("attention", ["einsum", "xla"])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_packed_rows_give_each_sequence_its_unpacked_outputs(name, attention):
    cfg = tiny(name, attention, all_heads(name))
    params = jax.jit(lambda: jax.tree.map(jnp.asarray, init_params(build(cfg), 0)))()
    params = __import__("flax").linen.unbox(params)
    seqs, (pb, where), (ub, _) = both(cfg)
    p_logits, p_out = forward(cfg, params, pb, True)
    u_logits, u_out = forward(cfg, params, ub, False)
    for i, (r, slot, at) in enumerate(where):
        n = len(seqs[i]["ids"])
        for layer, (ps, us) in enumerate(
            zip(p_out["hidden_states"], u_out["hidden_states"], strict=True)
        ):
            np.testing.assert_allclose(
                ps[r, at : at + n],
                us[i, :n],
                atol=1e-5,
                rtol=0,
                err_msg=f"{name} sequence {i} layer {layer}",
            )
        for head in PER_TOKEN:
            if head in p_logits:
                np.testing.assert_allclose(
                    p_logits[head][r, at : at + n],
                    u_logits[head][i, :n],
                    atol=1e-5,
                    rtol=0,
                    err_msg=f"{name} {head} {i}",
                )
        for head in PER_SEQUENCE:
            if head in p_logits:
                assert p_logits[head].shape[:2] == (len(ROWS), 3), head
                np.testing.assert_allclose(
                    p_logits[head][r, slot],
                    u_logits[head][i],
                    atol=1e-5,
                    rtol=0,
                    err_msg=f"{name} {head} {i}",
                )


def _params(cfg: ModelConfig):
    import flax.linen as nn

    return jax.jit(lambda: nn.unbox(init_params(build(cfg), 0)))()


def _finetune_task(cls, regression: bool = False):
    config = ml_collections.ConfigDict(
        dict(finetune=dict(dataset="custom", labels=() if regression else ("a", "b", "c")))
    )
    return cls(config)


def _loss_fn(name: str, task: str, model):
    """(loss_fn, batch rename): the task's own loss function, as training runs it."""
    if task == "pretrain":
        if name == "electra":
            return electra_loss_fn(
                model, False, gen_weight=1.0, disc_weight=50.0, temperature=1.0
            ), {}
        cls = {"bert": mlm.MaskedLMNSP, "albert": mlm.MaskedLMSOP}.get(name, mlm.MaskedLM)
        return cls(None).loss_fn(model, False), {}
    if task == "classification":
        return _finetune_task(glue.Glue).loss_fn(model, False), {}
    if task == "regression":
        return _finetune_task(glue.Glue, True).loss_fn(model, False), {"labels": "targets"}
    if task == "tagging":
        return ner.NER(None).loss_fn(model, False), {
            "labels": "tags",
            "label_weights": "tag_weights",
        }
    return squad.Squad(None).loss_fn(model, False), {}


TASK_HEADS = {
    "classification": ("classifier",),
    "regression": ("classifier",),
    "tagging": ("token_classifier",),
    "span": ("span",),
}


# Every family's pretraining loss; the fine-tuning losses on BERT (pooled classifier),
# RoBERTa (its own classifier head) and ModernBERT (prediction heads, mean pooling);
# every family's classifier logits are checked above.
CASES = (
    [(name, "pretrain") for name in sorted(FAMILIES)]
    + [(name, task) for name in ("bert", "roberta") for task in TASK_HEADS]
    + [("modernbert", "classification"), ("modernbert", "span")]
)


@pytest.mark.parametrize("name,task", CASES)
def test_a_packed_step_has_the_unpacked_loss_and_gradients(name, task, monkeypatch):
    if name == "electra":  # the generator's sample, made a function of its logits
        monkeypatch.setattr(
            objectives,
            "sample_tokens",
            lambda logits, rng, t: jnp.argmax(logits, axis=-1).astype(jnp.int32),
        )
    if task == "pretrain":
        heads = tuple(
            h for h in all_heads(name) if h not in ("classifier", "token_classifier", "span")
        )
    else:
        pooled = ("pooler",) if "pooler" in all_heads(name) else ()
        heads = (*pooled, *TASK_HEADS[task])
    cfg = tiny(name, "xla", heads).replace(num_labels=1 if task == "regression" else 3)
    params = _params(cfg)
    _, (pb, _), (ub, _) = both(cfg, seed=1)
    loss_fn, rename = _loss_fn(name, task, build(cfg))

    def run(batch):
        batch = {k: jnp.asarray(v) for k, v in batch.items()}
        batch.update({new: batch[old] for new, old in rename.items()})
        fn = jax.jit(
            jax.value_and_grad(lambda p: loss_fn(p, batch, jax.random.key(0), None), has_aux=True)
        )
        return fn(params)

    (p_loss, p_metrics), p_grads = run(pb)
    (u_loss, u_metrics), u_grads = run(ub)
    assert np.isfinite(float(u_loss)) and float(u_loss) > 0
    np.testing.assert_allclose(p_loss, u_loss, rtol=1e-5)
    for key, metric in u_metrics.items():
        np.testing.assert_allclose(
            p_metrics[key].value, metric.value, rtol=1e-5, atol=1e-6, err_msg=key
        )
        np.testing.assert_allclose(p_metrics[key].count, metric.count, err_msg=key)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(u_grads))
    for path, g in jax.tree_util.tree_leaves_with_path(u_grads):
        other = dict(jax.tree_util.tree_leaves_with_path(p_grads))[path]
        np.testing.assert_allclose(
            other, g, atol=1e-5 * scale, rtol=0, err_msg=jax.tree_util.keystr(path)
        )


def test_positions_restart_at_every_sequence():
    from bertjax.models.attention import AttentionMask
    from bertjax.models.layers import position_ids

    mask = np.asarray([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0]], np.int32)
    ids = np.where(mask > 0, 7, 1).astype(np.int32)
    for name, want in (
        ("bert", [[0, 1, 2, 0, 1, 0, 6, 7], [0, 1, 2, 3, 4, 5, 6, 7]]),
        # RoBERTa: real tokens count from pad_id + 1 = 2 in each sequence; padding at 1
        ("roberta", [[2, 3, 4, 2, 3, 2, 1, 1], [2, 3, 4, 5, 6, 7, 8, 1]]),
    ):
        got = position_ids(tiny(name), jnp.asarray(ids), AttentionMask.of(mask, True))
        np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("attention", ["einsum", "xla"])
@pytest.mark.parametrize("name", ["bert", "electra"])
def test_changing_one_sequence_leaves_its_neighbours_bit_identical(name, attention):
    cfg = tiny(name, attention, all_heads(name))
    params = _params(cfg)
    seqs, (pb, where), _ = both(cfg)
    changed = {k: v.copy() for k, v in pb.items()}
    r, slot, at = where[1]  # the middle sequence of row 0
    n = len(seqs[1]["ids"])
    changed["input_ids"][r, at : at + n] = (changed["input_ids"][r, at : at + n] + 3) % 90 + 5
    a_logits, a_out = forward(cfg, params, pb, True)
    b_logits, b_out = forward(cfg, params, changed, True)
    assert not np.array_equal(a_out["sequence"][r, at : at + n], b_out["sequence"][r, at : at + n])
    for i, (row, s, start) in enumerate(where):
        if i == 1:
            continue
        m = len(seqs[i]["ids"])
        np.testing.assert_array_equal(
            a_out["sequence"][row, start : start + m], b_out["sequence"][row, start : start + m]
        )
        for head in PER_SEQUENCE:
            if head in a_logits:
                np.testing.assert_array_equal(a_logits[head][row, s], b_logits[head][row, s])


# ------------------------------------------------------------------ fine-tuning batches


class _Tokenizer:
    pad_id = 0


def _finetune(cls, packing: str, per_token: bool):
    """A fine-tuning task over 12 in-memory sequences of 3..15 tokens (labels per
    sequence, or per token with weights), train batches of 6."""
    from bertjax.tasks.finetune import Features

    config = ml_collections.ConfigDict(
        dict(
            seed=0,
            max_seq_length=ROW,
            train=dict(batch_size=6, steps=0),
            finetune=dict(
                dataset="custom",
                labels=("a", "b", "c"),
                pad_multiple=8,
                packing=packing,
                packing_max_sequences=4,
                epochs=1.0,
            ),
        )
    )
    task = cls(config)
    rng = np.random.default_rng(2)
    lengths = rng.integers(3, ROW, 12)
    ids = [rng.integers(5, 97, n).astype(np.int32) for n in lengths]
    types = [(np.arange(n) >= n // 2).astype(np.int32) for n in lengths]
    if per_token:
        extra = {
            "labels": [rng.integers(0, 3, n).astype(np.int32) for n in lengths],
            "label_weights": [(rng.uniform(size=n) < 0.7).astype(np.float32) for n in lengths],
        }
    else:
        extra = {"labels": rng.integers(0, 3, 12).astype(np.int32)}
    task._tokenizer, task._features["train"] = _Tokenizer(), Features(ids, types, extra)
    return task


@pytest.mark.parametrize("cls,per_token", [(glue.Glue, False), (ner.NER, True)])
def test_packed_fine_tuning_batches_train_as_the_unpacked_ones(cls, per_token):
    heads = ("pooler", "classifier") if not per_token else ("token_classifier",)
    cfg = tiny("bert", "xla", heads)
    params = _params(cfg)
    for step in range(2):
        batches = {
            p: _finetune(cls, p, per_token).global_train_batch(step) for p in ("off", "best_fit")
        }
        packed = batches["best_fit"]
        assert "num_sequences" in packed and "num_sequences" not in batches["off"]
        assert len(packed["input_ids"]) < 6 and packed["input_ids"].shape[1] == ROW
        assert int(packed["num_sequences"].sum()) == 6
        losses = []
        for batch in batches.values():
            fn = _finetune(cls, "off", per_token).loss_fn(build(cfg), False)
            b = {k: jnp.asarray(v) for k, v in batch.items()}
            losses.append(
                jax.jit(lambda p, b=b, fn=fn: fn(p, b, jax.random.key(0), None)[0])(params)
            )
        np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


def test_a_fine_tuning_example_longer_than_the_row_is_named():
    task = _finetune(glue.Glue, "best_fit", False)
    task._features["train"].ids[3] = np.ones(ROW + 1, np.int32)
    task._features["train"].types[3] = np.zeros(ROW + 1, np.int32)
    with pytest.raises(ValueError, match=f"glue example 3 has {ROW + 1} tokens, more than"):
        for step in range(2):
            task.global_train_batch(step)
