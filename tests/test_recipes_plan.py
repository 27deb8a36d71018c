"""N-phase plans (config.phases, bertjax/tasks/plan.py): boundaries, batch sizes and
learning-rate segments against hand-computed values, one-line errors for bad plans, and
exact resume after SIGKILL in every phase of a three-phase run (bit-identical state)."""

from __future__ import annotations

import numpy as np
import pytest
import trainlib

from bertjax import experiment, optim, tasks
from bertjax import train as train_lib
from bertjax.data.masking import MaskingConfig
from bertjax.tasks import plan

STEPS = 12
# 6 steps at 32 tokens (the data's masking), 3 at 32 with 30% masking and batch 4 at a
# constant 1e-3, 3 at 64 tokens (4 rows: 256 tokens a step) with 5% masking and a 1-sqrt
# decay from the schedule's value.
PHASES = (
    dict(name="short", share=0.5),
    dict(
        name="masked30",
        share=0.25,
        masking=dict(masked_lm_prob=0.3),
        batch_size=4,
        learning_rate=1e-3,
    ),
    dict(
        name="long",
        share=0.25,
        max_seq_length=64,
        tokens_per_step=256,
        masking=dict(masked_lm_prob=0.05),
        decay_shape="1-sqrt",
        data_dir="{long}",
    ),
)


def _phases(data, long):
    return tuple(
        {k: (v.format(long=long) if isinstance(v, str) else v) for k, v in p.items()}
        for p in PHASES
    )


def test_boundaries_batches_and_predictions_hand_computed():
    c = trainlib.config("bert", "/data32", **{"train.steps": 20, "optim.grad_accum_steps": 2})
    c.phases = (
        dict(share=0.5),
        dict(share=0.3, max_seq_length=64, tokens_per_step=512),
        dict(share=0.2, batch_size=2, masking=dict(masked_lm_prob=0.3), data_dir="/other"),
    )
    phases = plan.plan_phases(c)
    # 20 x 0.5 = 10; 20 x 0.8 = 16 (already a multiple of 2); the last ends at 20.
    assert [(p.start, p.end) for p in phases] == [(0, 10), (10, 16), (16, 20)]
    assert [p.batch_size for p in phases] == [8, 8, 2]  # train.batch_size, 512 / 64, 2
    assert [p.source for p in phases] == ["/data32", "/data32", "/other"]
    # ceil(0.15 x 32) = 5, ceil(0.15 x 64) = 10, ceil(0.3 x 32) = 10
    assert [p.options["max_predictions_per_seq"] for p in phases] == [5, 10, 10]
    assert phases[1].options["keys"] == ("phases[1].max_seq_length", "phases[1].data_dir")


def test_learning_rate_segments_hand_computed():
    # Warmup 10, then 2.0 (constant) until update 50; phase 2 [50, 70) holds 1.0;
    # phase 3 [70, 100) decays 1-sqrt from the schedule's 2.0 to 0.2.
    cfg = optim.OptimConfig(
        learning_rate=2.0,
        end_learning_rate=0.2,
        warmup_steps=10,
        total_steps=100,
        decay="constant",
        segments=((50, 70, 1.0, ""), (70, 100, 0.0, "1-sqrt")),
    )
    schedule = optim.make_schedule(cfg)
    want = {
        0: 0.0,
        5: 1.0,
        10: 2.0,
        49: 2.0,
        50: 1.0,
        69: 1.0,
        70: 2.0,
        77.5: 0.2 + 1.8 * 0.5,
        100: 0.2,
    }  # t = 1/4: 1 - sqrt(1/4) = 1/2
    for step, value in want.items():
        np.testing.assert_allclose(
            float(schedule(step)), value, rtol=1e-6, atol=1e-7, err_msg=str(step)
        )
    # A segment never reaches into the warmup: [0, 20) at 1.0 ramps first.
    ramp = optim.make_schedule(cfg.replace(segments=((0, 20, 1.0, "linear"),)))
    assert float(ramp(5)) == pytest.approx(1.0)  # the warmup's 2.0 x 5 / 10
    assert float(ramp(10)) == pytest.approx(0.2 + 0.8 * 0.5)  # t = 1/2 of [0, 20)


def test_the_run_config_carries_the_segments():
    c = trainlib.config("bert", **{"train.steps": 12})
    c.phases = (dict(share=0.5), dict(share=0.5, learning_rate=1e-3, decay_shape="linear"))
    assert experiment.optim_config(c).segments == ((6, 12, 1e-3, "linear"),)


@pytest.mark.parametrize(
    "phases,extra,message",
    [
        (
            (dict(share=0.5), dict(share=0.4)),
            {},
            "phases: the shares sum to 0.9, not 1 (phases[0].share=0.5, phases[1].share=0.4)",
        ),
        ((dict(share=1.0, lenght=64),), {}, "phases[0].lenght: unknown phase key"),
        (
            (dict(share=0.5), dict(share=0.5, batch_size=4, tokens_per_step=128)),
            {},
            "phases[1].tokens_per_step=128: give batch_size or tokens_per_step, not both",
        ),
        (
            (dict(share=1.0, tokens_per_step=100),),
            {},
            "phases[0].tokens_per_step=100: not a whole number of rows of 32 tokens",
        ),
        ((dict(share=1.0, decay_shape="sqrt"),), {}, "phases[0].decay_shape='sqrt': expected"),
        ((dict(share=-0.5), dict(share=1.5)), {}, "phases[0].share=-0.5: must be positive"),
        ((dict(share=0.99), dict(share=0.01)), {}, "phases[1].share=0.01 leaves an empty phase"),
        ((dict(share=1.0),), {"phase2.fraction": 0.1}, "phase2.fraction=0.1 and phases: give one"),
        (
            (dict(share=1.0, masking=dict(stratgey="span")),),
            {},
            "phases[0].masking.stratgey: unknown masking key (expected masked_lm_prob, strategy",
        ),
        (
            (dict(share=1.0, masking=dict(strategy="spans")),),
            {},
            "phases[0].masking.strategy='spans' is unknown; expected one of token, whole_word",
        ),
        (
            (dict(share=0.5), dict(share=0.5, masking=dict(span_max_length=0))),
            {},
            "phases[1].masking.span_max_length=0 must be an integer >= 1",
        ),
        (
            (dict(share=1.0, masking=dict(max_predictions_per_seq=8)),),
            {},
            "phases[0].masking.max_predictions_per_seq: give it as "
            "phases[0].max_predictions_per_seq",
        ),
    ],
)
def test_a_bad_plan_is_one_line_naming_the_key(phases, extra, message):
    c = trainlib.config("bert", "/data", **extra)
    c.phases = phases
    with pytest.raises(ValueError) as e:
        tasks.get(c).phases()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_bad_config_masking_is_not_put_on_a_phase():
    c = trainlib.config("bert", "/data", **{"masking.strategy": "spans"})
    c.phases = (dict(share=1.0, masking=dict(span_max_length=3)),)
    with pytest.raises(ValueError) as e:
        tasks.get(c).phases()
    assert str(e.value).startswith("masking.strategy='spans' is unknown; expected one of")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(data at 32 tokens, at 64 with the same tokenizer), dynamically masked."""
    corpus = trainlib.write_corpus(str(tmp_path_factory.mktemp("corpus") / "corpus.txt"))
    short = trainlib.prepare(
        "bert", str(tmp_path_factory.mktemp("d32")), corpus, **{"data.masking": "dynamic"}
    )
    long = trainlib.prepare(
        "bert",
        str(tmp_path_factory.mktemp("d64")),
        corpus,
        **{"data.masking": "dynamic", "max_seq_length": 64, "tokenizer.path": f"{short}/tokenizer"},
    )
    return short, long


def _config(data):
    c = trainlib.config(
        "bert",
        data[0],
        **{"train.steps": STEPS, "data.masking": "dynamic", "train.checkpoint_every": 2},
    )
    c.phases = _phases(*data)
    return c


@pytest.mark.integration  # a training run, a command or prepared data
def test_describe_prints_the_plan(data):
    from bertjax.tools.describe import training

    c = _config(data)
    text = training(c, tasks.get(c))
    assert "plan: 3 phases" in text
    # 3 steps x 4 rows x 64 tokens = 768 tokens; ceil(0.05 x 64) = 4 predictions.
    assert ("  long: steps 9..12 (3 updates), batch 4 x 64, 768 tokens") in text
    assert "mask 5% (<= 4/row); lr: schedule, 1-sqrt decay; data " + data[1] in text
    assert "  masked30: steps 6..9 (3 updates), batch 4 x 32, 384 tokens" in text


@pytest.mark.integration  # a training run, a command or prepared data
def test_a_phase_masking_field_reaches_the_pipeline(data):
    """A phase's `masking` dict changes any MaskingConfig field of the masks the pipeline
    draws in that phase; the other phases keep config.masking."""
    c = _config(data)
    c.masking.strategy = "whole_word"
    c.phases = (
        dict(share=0.5),
        dict(share=0.5, masking=dict(strategy="span", span_max_length=3, masked_lm_prob=0.2)),
    )
    task = tasks.get(c)
    task.cfg = experiment.model_config(c, task)  # what `setup` gives it
    first, second = (task._pipeline(p, "train", 0, True).config.masking for p in task.phases())
    # BERT's recipe's google budget; trainlib's 5 predictions a row at 32 tokens, at 20%
    # ceil(0.2 x 32) = 7.
    assert first == MaskingConfig(strategy="whole_word", budget="google", max_predictions_per_seq=5)
    assert second == MaskingConfig(
        strategy="span",
        span_max_length=3,
        masked_lm_prob=0.2,
        budget="google",
        max_predictions_per_seq=7,
    )


@pytest.mark.integration  # a training run, a command or prepared data
def test_static_data_refuses_a_phase_masking_rate(data, tmp_path):
    corpus = trainlib.write_corpus(str(tmp_path / "corpus.txt"))
    static = trainlib.prepare("bert", str(tmp_path / "static"), corpus)
    c = trainlib.config("bert", static, **{"train.steps": STEPS})
    c.phases = (dict(share=0.5), dict(share=0.5, masking=dict(masked_lm_prob=0.3)))
    with pytest.raises(
        ValueError,
        match=r"phases\[1\].masking.masked_lm_prob=0.3: .* holds static "
        "masks",
    ):
        train_lib.train(c, str(tmp_path / "run"))


@pytest.mark.integration  # a training run, a command or prepared data
def test_sigkill_in_every_phase_resumes_bit_identical(data, tmp_path, capsys):
    c = _config(data)
    straight = str(tmp_path / "straight")
    train_lib.train(c, straight)
    out = capsys.readouterr().out
    assert "plan: 3 phases" in out and "phase 3/3: steps 9..12, batch 4 x 64" in out
    want = trainlib.state_hash(straight, STEPS)
    lr = {}  # the learning rate each phase ran at, from the logs
    for line in out.splitlines():
        if line.startswith("train step "):
            lr[int(line.split()[2].rstrip(":"))] = float(line.split("learning_rate=")[1].split()[0])
    assert lr[7] == pytest.approx(1e-3)  # phase 2's constant segment

    workdir = str(tmp_path / "killed")
    extra = f"--config.phases={c.phases!r}"
    for kill in (5, 8, 11):  # inside phases 1, 2 and 3
        r = trainlib.run(trainlib.train_cmd(c, workdir, extra, fault=f"kill_after_step:{kill}"))
        assert r.returncode == -9, r.stderr[-2000:]
    assert train_lib.train(c, workdir)["status"] == "done"  # resumes from step 10
    assert "from checkpoint" in capsys.readouterr().out
    assert trainlib.state_hash(workdir, STEPS) == want


ROTARY = {"model.rope_theta": 10_000.0}


@pytest.mark.integration  # a training run, a command or prepared data
def test_a_phase_rope_theta_trains_that_model_and_resumes_exactly(data, tmp_path):
    def config(**extra):
        c = trainlib.config(
            "bert",
            data[0],
            **{
                "train.steps": STEPS,
                "data.masking": "dynamic",
                "train.checkpoint_every": 2,
                **ROTARY,
                **extra,
            },
        )
        return c

    plan = config()
    plan.phases = (dict(share=0.5, rope_theta=100.0), dict(share=0.5))
    straight = str(tmp_path / "plan")
    train_lib.train(plan, straight)
    # Up to the boundary (step 6) the plan is a run of the theta-100 model.
    theta_100 = str(tmp_path / "theta_100")
    train_lib.train(config(**{"model.rope_theta": 100.0}), theta_100)
    assert trainlib.state_hash(straight, 6) == trainlib.state_hash(theta_100, 6)
    plain = str(tmp_path / "plain")
    train_lib.train(config(**{"train.steps": 6}), plain)
    assert trainlib.state_hash(plain, 6) != trainlib.state_hash(straight, 6)

    class Stop(train_lib.Hook):
        def after_save(self, trainer, step):
            if step == 4:
                trainer.ckpts.wait()
                raise KeyboardInterrupt

    resumed = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(plan, resumed, hooks=[Stop()])
    train_lib.train(plan, resumed)
    assert trainlib.state_hash(resumed, STEPS) == trainlib.state_hash(straight, STEPS)


@pytest.mark.integration  # a training run, a command or prepared data
@pytest.mark.parametrize(
    "rotary,phases,message",
    [
        (
            {},
            (dict(share=0.5, rope_theta=100.0), dict(share=0.5)),
            "phases[0].rope_theta=100: the model has no rotary positions",
        ),
        (
            ROTARY,
            (dict(share=0.5), dict(share=0.5, rope_theta=100.0)),
            "phases[1].rope_theta=100: the last phase trains the model the run writes",
        ),
    ],
)
def test_a_bad_rope_theta_is_one_line(data, tmp_path, rotary, phases, message):
    c = trainlib.config("bert", data[0], **{"data.masking": "dynamic", **rotary})
    c.phases = phases
    with pytest.raises(ValueError) as e:
        train_lib.train(c, str(tmp_path / "run"))
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()
