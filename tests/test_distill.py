"""Distillation: the loss function with a real teacher, student initialisation from
teacher layers, configs/distill.py and the FLOPs that count the teacher."""

from __future__ import annotations

import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import modellib
import numpy as np
import pytest

from bertjax import flops, steps
from bertjax.models import ModelConfig, build
from bertjax.tasks import distill
from bertjax.tools.describe import param_shapes

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
)
import distill as distill_config  # noqa: E402  configs/distill.py

B, L, P = 3, 10, 3
V = modellib.NARROW["vocab_size"]  # the models' vocabulary: the ids drawn below


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((B, L), np.int32)
    mask[2, 7:] = 0
    return {
        "input_ids": jnp.asarray(rng.integers(5, V, (B, L)), jnp.int32),
        "token_type_ids": jnp.zeros((B, L), jnp.int32),
        "attention_mask": jnp.asarray(mask),
        "masked_lm_positions": jnp.asarray(rng.integers(1, 7, (B, P)), jnp.int32),
        "masked_lm_ids": jnp.asarray(rng.integers(5, V, (B, P)), jnp.int32),
        "masked_lm_weights": jnp.ones((B, P), jnp.float32),
        "pair_labels": jnp.full((B,), -1, jnp.int32),
    }


def _params(cfg, seed):
    ids = jnp.ones((1, 8), jnp.int32)
    return nn.unbox(build(cfg).init(jax.random.key(seed), ids)["params"])


def test_loss_is_zero_when_the_student_is_a_copy_of_the_teacher():
    cfg = modellib.tiny("bert", modellib.NARROW, num_layers=2)
    params = _params(cfg, 0)
    model = build(cfg)
    loss_fn = distill.distillation_loss_fn(model, model, train=False)
    loss, m = jax.jit(loss_fn)(params, _batch(), jax.random.key(0), params)
    assert abs(float(m["mlm_kl"].value)) < 1e-6 and abs(float(m["cos_loss"].value)) < 1e-6, m
    # What remains is the hard MLM term alone, and the teacher scores as the student.
    np.testing.assert_allclose(float(loss), 2.0 * float(m["mlm_loss"].value), rtol=1e-5)
    assert float(m["mlm_teacher_accuracy"].value) == float(m["mlm_accuracy"].value)
    # A different student: both terms are positive.
    _, m2 = jax.jit(loss_fn)(_params(cfg, 1), _batch(), jax.random.key(0), params)
    assert float(m2["mlm_kl"].value) > 1e-3 and float(m2["cos_loss"].value) > 1e-3


def test_no_gradient_reaches_the_teacher():
    student_cfg = modellib.tiny(
        "distilbert", modellib.NARROW, num_layers=1, sinusoidal_positions=False
    )
    teacher_cfg = modellib.tiny("bert", modellib.NARROW, num_layers=2)
    loss_fn = distill.distillation_loss_fn(build(student_cfg), build(teacher_cfg))
    student, teacher = _params(student_cfg, 0), _params(teacher_cfg, 1)
    g_student, g_teacher = jax.jit(
        jax.grad(lambda s, t: loss_fn(s, _batch(), jax.random.key(3), t)[0], argnums=(0, 1))
    )(student, teacher)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(g_teacher))
    assert float(jnp.abs(g_student["encoder"]["layer_0"]["intermediate"]["kernel"]).max()) > 0


def test_train_step_leaves_the_teacher_untouched_and_apart_from_the_state():
    from bertjax.optim import OptimConfig, make_optimizer

    cfg = modellib.tiny("bert", modellib.NARROW, num_layers=1)
    teacher_cfg = modellib.tiny("bert", modellib.NARROW, num_layers=2)
    model = build(cfg)
    oc = OptimConfig(learning_rate=1e-2, warmup_steps=0, total_steps=10)
    tx = make_optimizer(oc)
    state = jax.jit(lambda: nn.unbox(steps.init_state(model, tx, 0)()))()
    teacher = _params(teacher_cfg, 1)
    before = jax.tree.map(np.asarray, teacher)
    step = jax.jit(
        lambda s, b, t: steps.train_step(
            s,
            b,
            t,
            loss_fn=distill.distillation_loss_fn(model, build(teacher_cfg)),
            tx=tx,
            optim=oc,
            seed=0,
        ),
        donate_argnums=(0,),
    )
    new_state, m = step(state, _batch(), teacher)
    assert np.isfinite(float(m["loss"].value)) and int(new_state["step"]) == 1
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, teacher), before)
    # The state holds the student's parameters only.
    assert jax.tree.structure(new_state["params"]) == jax.tree.structure(_params(cfg, 0))


def test_default_teacher_layers_are_distilberts_and_explicit_ones_are_checked():
    assert distill.teacher_layers((), 12, 6) == [0, 2, 4, 7, 9, 11]
    assert distill.teacher_layers((), 4, 2) == [0, 3]
    assert distill.teacher_layers((), 6, 6) == list(range(6))
    assert distill.teacher_layers((1, 3), 4, 2) == [1, 3]
    with pytest.raises(ValueError, match=r"distill.teacher_layers=\(1,\): needs one"):
        distill.teacher_layers((1,), 4, 2)
    with pytest.raises(ValueError, match=r"\[4\] outside the teacher's layers 0..3"):
        distill.teacher_layers((0, 4), 4, 2)


def test_student_from_teacher_layers_has_exactly_those_weights():
    teacher_cfg = modellib.tiny("bert", modellib.NARROW, num_layers=4)
    student_cfg = modellib.tiny(
        "distilbert", modellib.NARROW, num_layers=2, sinusoidal_positions=False
    )
    teacher = jax.tree.map(np.asarray, _params(teacher_cfg, 0))
    fresh = jax.tree.map(np.asarray, _params(student_cfg, 1))
    student, left = distill.student_from_teacher(fresh, teacher, [1, 3])
    assert left == []  # a DistilBERT student has nothing the teacher lacks
    for j, i in enumerate([1, 3]):
        jax.tree.map(
            np.testing.assert_array_equal,
            student["encoder"][f"layer_{j}"],
            teacher["encoder"][f"layer_{i}"],
        )
    for module in ("mlm",):
        jax.tree.map(np.testing.assert_array_equal, student[module], teacher[module])
    for table in ("word", "position", "layer_norm"):
        jax.tree.map(
            np.testing.assert_array_equal,
            student["embeddings"][table],
            teacher["embeddings"][table],
        )
    assert "token_type" not in student["embeddings"]  # dropped, as DistilBERT does
    # The other way round, a BERT student keeps what a DistilBERT teacher has none of.
    back, left = distill.student_from_teacher(
        jax.tree.map(np.asarray, _params(modellib.tiny("bert", modellib.NARROW, num_layers=1), 2)),
        student,
        [1],
    )
    assert sorted(left) == ["embeddings/token_type", "nsp", "pooler"]
    jax.tree.map(
        np.testing.assert_array_equal, back["encoder"]["layer_0"], student["encoder"]["layer_1"]
    )
    with pytest.raises(ValueError, match="has shape"):
        distill.student_from_teacher(
            jax.tree.map(
                np.asarray,
                _params(
                    modellib.tiny("bert", modellib.NARROW, num_layers=1, intermediate_size=48), 0
                ),
            ),
            teacher,
            [0],
        )


def _pair(name, **overrides):
    c = distill_config.get_config(name)
    for k, v in overrides.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    student = ModelConfig.from_dict(c.model.to_dict())
    return c, student, distill.teacher_config(c, student)


def test_configs_for_distilbert_and_the_grid():
    c, student, teacher = _pair("bert_base_to_distilbert_base")
    assert (teacher.family, teacher.num_layers, student.family, student.num_layers) == (
        "bert",
        12,
        "distilbert",
        6,
    )
    d = c.distill
    assert (d.temperature, d.alpha_ce, d.alpha_mlm, d.alpha_cos, d.init) == (
        2.0,
        5.0,
        2.0,
        1.0,
        "teacher",
    )
    assert c.task == "distillation" and c.data.instances == "mlm"
    distill.check(c, student, teacher)
    # Narrower students start from scratch without the cosine term (unequal widths).
    for name in (
        "bert_mini_to_bert_tiny",
        "bert_large_to_bert_L4_H256",
        "bert_base_to_bert_L2_H128",
    ):
        c, student, teacher = _pair(name)
        assert c.distill.alpha_cos == 0.0 and c.distill.init == "scratch", name
        distill.check(c, student, teacher)
    # A shallower student of the same width starts from teacher layers.
    c, student, teacher = _pair("bert_base_to_bert_L6_H768")
    assert c.distill.init == "teacher" and c.distill.alpha_cos == 1.0
    c, student, teacher = _pair("bert_mini_to_bert_tiny,runlocal")
    assert teacher.vocab_size == student.vocab_size == c.tokenizer.vocab_size


@pytest.mark.parametrize(
    "name, overrides, says",
    [
        ("bert_mini_to_bert_tiny", {"distill.alpha_cos": 1.0}, "distill.alpha_cos=1.0"),
        ("bert_mini_to_bert_tiny", {"teacher.vocab_size": 100}, "teacher.vocab_size=100"),
        ("bert_mini_to_bert_tiny", {"distill.temperature": 0.0}, "distill.temperature=0.0"),
        ("bert_mini_to_bert_tiny", {"distill.init": "copy"}, "distill.init='copy'"),
        ("bert_mini_to_bert_tiny", {"distill.teacher_dtype": "int8"}, "distill.teacher_dtype"),
        ("bert_mini_to_electra_small", {"model.vocab_size": 30522}, "model.family='electra'"),
        ("bert_mini_to_bert_tiny", {"max_seq_length": 600}, "teacher.max_position_embeddings"),
    ],
)
def test_bad_pairs_are_named(name, overrides, says):
    with pytest.raises(ValueError, match=None) as e:
        c, student, teacher = _pair(name, **overrides)
        distill.check(c, student, teacher)
    assert says in str(e.value), str(e.value)


def test_bad_config_names():
    with pytest.raises(ValueError, match="TEACHER_to_STUDENT"):
        distill_config.get_config("bert_base")
    with pytest.raises(ValueError, match="bert_huge"):
        distill_config.get_config("bert_huge_to_bert_tiny")


def test_flops_count_the_teachers_forward_pass():
    c, student, teacher = _pair("bert_base_to_distilbert_base")
    alone = flops.train_flops_per_token(student, 128, 20 / 128)
    both = flops.train_flops_per_token(student, 128, 20 / 128, teacher)
    teacher_train = flops.train_flops_per_token(teacher, 128, 20 / 128).total
    assert both.teacher == pytest.approx(teacher_train / 3)
    assert both.total == pytest.approx(alone.total + teacher_train / 3)
    # Hand count of the teacher's forward: 2 FLOPs per multiply-add in 12 layers of
    # 4d² + 2dI, the S-dependent attention, and the MLM head at f = 20/128.
    d, i, n, v, s = 768, 3072, 12, 30522, 128
    hand = 2 * n * (4 * d * d + 2 * d * i) + 4 * n * s * d + 2 * (d * d + d * v) * 20 / 128
    assert both.teacher == pytest.approx(hand)
    # describe's table is the student's; the teacher is one line apart.
    assert sum(int(x.size) for x in jax.tree.leaves(param_shapes(student))) == 66_985_530


def test_a_bfloat16_teacher_gives_nearly_the_float32_targets():
    cfg = modellib.tiny("bert", modellib.NARROW, num_layers=1)
    teacher_cfg = modellib.tiny("bert", modellib.NARROW, num_layers=2)
    student, teacher = _params(cfg, 0), _params(teacher_cfg, 1)
    half = jax.tree.map(lambda x: x.astype(jnp.bfloat16), teacher)
    f32 = distill.distillation_loss_fn(build(cfg), build(teacher_cfg), train=False)
    bf16 = distill.distillation_loss_fn(
        build(cfg), build(teacher_cfg.replace(dtype="bfloat16")), train=False
    )
    _, m32 = jax.jit(f32)(student, _batch(), jax.random.key(0), teacher)
    _, m16 = jax.jit(bf16)(student, _batch(), jax.random.key(0), half)
    assert np.isfinite(float(m16["loss"].value))
    np.testing.assert_allclose(float(m16["mlm_kl"].value), float(m32["mlm_kl"].value), rtol=0.05)
    np.testing.assert_allclose(
        float(m16["cos_loss"].value), float(m32["cos_loss"].value), rtol=0.05, atol=0.01
    )
