"""Warmup-stable-decay schedules and lengths in updates, fractions and tokens
(bertjax/schedules.py), against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trainlib

from bertjax import experiment, optim, schedules
from bertjax.models.config import ConfigError

BASE = dict(
    learning_rate=2.0,
    end_learning_rate=0.2,
    warmup_steps=10,
    total_steps=110,
    decay="wsd",
    decay_steps=40,
)  # stable from 10 to 70, decay 70..110


def _check(cfg, want):
    schedule = optim.make_schedule(cfg)
    jitted = jax.jit(schedule)
    for step, value in want.items():
        np.testing.assert_allclose(
            float(schedule(step)),
            value,
            rtol=1e-6,
            atol=1e-7,
            err_msg=f"{cfg.decay_shape} at {step}",
        )
        np.testing.assert_allclose(float(jitted(jnp.int32(step))), value, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "shape,want",
    [
        # t = (step - 70) / 40; lr = 0.2 + 1.8 * f(t)
        ("linear", {80: 1.55, 90: 1.1, 100: 0.65, 110: 0.2, 300: 0.2}),
        # f = (1 + cos(pi t)) / 2: t = 1/4 -> 0.8535534, 1/2 -> 0.5, 3/4 -> 0.1464466
        ("cosine", {80: 1.7363961, 90: 1.1, 100: 0.4636039, 110: 0.2}),
        # f = 1 - sqrt(t): t = 1/4 -> 0.5, 1/2 -> 0.2928932, 3/4 -> 0.1339746
        ("1-sqrt", {80: 1.1, 90: 0.7272078, 100: 0.4411543, 110: 0.2}),
    ],
)
def test_wsd_shapes_hand_computed(shape, want):
    common = {0: 0.0, 5: 1.0, 10: 2.0, 40: 2.0, 69: 2.0, 70: 2.0}
    # _check asserts every value, eager and jitted, against the hand-computed one.
    _check(optim.OptimConfig(decay_shape=shape, **BASE), {**common, **want})


def test_wsd_without_decay_is_a_stable_run():
    cfg = optim.OptimConfig(**{**BASE, "decay_steps": 0})
    # _check asserts the peak is held to the end (and past it), eager and jitted.
    _check(cfg, {0: 0.0, 5: 1.0, 10: 2.0, 109: 2.0, 110: 2.0})


def test_a_decay_branched_at_s_is_the_stable_schedule_then_the_decay_from_s():
    stable = optim.make_schedule(
        optim.OptimConfig(learning_rate=1.0, warmup_steps=100, total_steps=10_000, decay="constant")
    )
    # Branch at S = 600 with a decay of D = 200: total_steps = S + D, decay_steps = D.
    branch = optim.make_schedule(
        optim.OptimConfig(
            learning_rate=1.0,
            warmup_steps=100,
            total_steps=800,
            decay="wsd",
            decay_steps=200,
            decay_shape="1-sqrt",
        )
    )
    for step in (0, 50, 100, 599, 600):
        assert float(branch(step)) == float(stable(step)), step
    np.testing.assert_allclose(
        [float(branch(s)) for s in (650, 700, 800)], [0.5, 1 - 0.5**0.5, 0.0], rtol=1e-6, atol=1e-7
    )


def test_fraction_lengths():
    cfg = schedules.resolve_lengths(
        optim.OptimConfig(
            **{
                **BASE,
                "warmup_fraction": 0.1,
                "decay_fraction": 0.2,
                "warmup_steps": 0,
                "decay_steps": 0,
            }
        )
    )
    assert (cfg.warmup_steps, cfg.decay_steps) == (11, 22)  # 0.1 x 110, 0.2 x 110
    assert cfg.warmup_fraction == cfg.decay_fraction == 0
    # Resolved inside make_schedule too: stable from 11 to 88.
    _check(
        optim.OptimConfig(**{**BASE, "decay_fraction": 0.2, "decay_steps": 0}),
        {88: 2.0, 99: 1.1, 110: 0.2},
    )


# Two phases: 90 steps of 8 x 128 = 1,024 tokens, then 10 of 4 x 512 = 2,048.
SPANS = [(90, 1024), (10, 2048)]


def test_steps_for_tokens_hand_computed():
    assert schedules.steps_for_tokens(3000, SPANS) == 3  # ceil(3000 / 1024)
    assert schedules.steps_for_tokens(1024, SPANS) == 1
    assert schedules.steps_for_tokens(92160, SPANS) == 90  # all of phase 1
    assert schedules.steps_for_tokens(92161, SPANS) == 91
    assert schedules.steps_for_tokens(5000, SPANS, from_end=True) == 3  # ceil(5000 / 2048)
    # Phase 2 holds 20,480; 4,520 more are ceil(4520 / 1024) = 5 steps of phase 1.
    assert schedules.steps_for_tokens(25000, SPANS, from_end=True) == 15
    assert schedules.steps_for_tokens(112640, SPANS) == 100
    assert schedules.steps_for_tokens(112641, SPANS) == -1


def test_token_lengths_count_updates_across_accumulation():
    cfg = optim.OptimConfig(
        learning_rate=1.0,
        total_steps=50,
        grad_accum_steps=2,
        decay="wsd",
        warmup_tokens=3000,
        decay_tokens=25000,
    )
    cfg = schedules.resolve_lengths(cfg, SPANS)
    assert (cfg.warmup_steps, cfg.decay_steps) == (2, 8)  # ceil(3 / 2), ceil(15 / 2)
    with pytest.raises(
        ConfigError,
        match=r"optim.decay_tokens=200000: the run holds only "
        r"112,640 tokens",
    ):
        schedules.resolve_lengths(cfg.replace(decay_tokens=200000), SPANS)
    with pytest.raises(ConfigError, match="optim.warmup_tokens=3000: a length in tokens"):
        schedules.resolve_lengths(cfg.replace(warmup_tokens=3000))
    with pytest.raises(
        ConfigError,
        match=r"optim.decay_steps=.*must fit in total_steps=50 "
        r"\(from optim.warmup_tokens=90000",
    ):
        schedules.resolve_lengths(cfg.replace(warmup_tokens=90000), SPANS)


def test_token_lengths_from_a_configs_phases():
    # trainlib: 12 steps of batch 8 x length 32 = 256 tokens each.
    c = trainlib.config(
        "bert",
        **{
            "optim.decay": "wsd",
            "optim.warmup_tokens": 600,
            "optim.decay_tokens": 1000,
            "optim.decay_shape": "cosine",
        },
    )
    cfg = experiment.optim_config(c)
    assert (cfg.total_steps, cfg.warmup_steps, cfg.decay_steps) == (12, 3, 4)


@pytest.mark.parametrize(
    "bad,message",
    [
        (
            dict(decay="linear", decay_steps=5),
            "optim.decay_steps=5: only read with optim.decay=wsd",
        ),
        (
            dict(decay_shape="sqrt"),
            "optim.decay_shape='sqrt': expected one of linear, cosine, 1-sqrt",
        ),
        (dict(decay_steps=101), "optim.decay_steps=101: the warmup (10) and the decay must fit"),
        (dict(decay_fraction=0.1, decay_tokens=5), "give decay_fraction or decay_tokens"),
        (dict(warmup_fraction=1.5), "optim.warmup_fraction=1.5: must be in [0, 1]"),
        (dict(decay_tokens=-1), "optim.decay_tokens=-1: must be >= 0"),
    ],
)
def test_bad_lengths_name_the_key(bad, message):
    with pytest.raises(ConfigError) as e:
        optim.OptimConfig(**{**BASE, **bad}).validate()
    assert message in str(e.value)


def test_describe_prints_the_resolved_wsd_schedule():
    from bertjax import tasks
    from bertjax.tools.describe import training

    c = trainlib.config(
        "bert",
        **{
            "optim.decay": "wsd",
            "optim.warmup_tokens": 600,
            "optim.decay_tokens": 1000,
            "optim.decay_shape": "1-sqrt",
        },
    )
    text = training(c, tasks.get(c))
    assert (
        "steps: 12; warmup-stable-decay: 3 warmup updates, 0.002 to update 8, then a "
        "1-sqrt decay to 0 over 4 updates"
    ) in text
