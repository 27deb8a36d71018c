"""The published recipes the configs apply: spot checks of the data entered in
configs/recipes.py (ALBERT's per-task table, ELECTRA's layer-wise decay), and `describe`
showing them resolved."""

import importlib.util
import os

import pytest

from bertjax.optim import OptimConfig

_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "finetune.py"
)
_SPEC = importlib.util.spec_from_file_location("bertjax_configs_finetune", _PATH)
finetune = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(finetune)


@pytest.mark.parametrize(
    "arg,lr,batch,steps,warmup",
    [
        # Lan et al., Table 14 (GLUE rows = google-research/albert run_glue.sh).
        ("rte,albert_base", 3e-5, 32, 800, 200),
        ("qnli,albert_large", 1e-5, 32, 33112, 1986),
        ("squad_v2,albert_base", 3e-5, 48, 8144, 814),
    ],
)
def test_albert_per_task_steps(arg, lr, batch, steps, warmup):
    c = finetune.get_config(arg)
    assert (c.optim.learning_rate, c.train.batch_size, c.train.steps, c.finetune.warmup_steps) == (
        lr,
        batch,
        steps,
        warmup,
    )
    assert c.optim.name == "adamw"


def test_a_dataset_without_an_entry_keeps_the_family_default():
    c = finetune.get_config("ax,albert_base")
    assert (c.optim.learning_rate, c.train.batch_size, c.train.steps, c.finetune.warmup_steps) == (
        2e-5,
        32,
        0,
        0,
    )


def test_electra_layer_decay_and_epochs():
    rte = finetune.get_config("rte,electra_base")
    assert rte.finetune.epochs == 10.0
    assert (rte.optim.layer_decay, rte.optim.layer_decay_depth) == (0.8, "google")
    assert (rte.optim.learning_rate, rte.optim.weight_decay) == (1e-4, 0.0)
    large = finetune.get_config("sst2,electra_large")
    assert (large.optim.layer_decay, large.optim.learning_rate, large.finetune.epochs) == (
        0.9,
        5e-5,
        3.0,
    )
    assert large.optim.weight_decay == 0.0  # the preset's optim keeps the family's keys
    assert finetune.get_config("sst2,electra_small").optim.layer_decay == 0.8
    assert finetune.get_config("squad_v1,electra_base").finetune.epochs == 2.0
    OptimConfig.from_dict({**large.optim.to_dict(), "total_steps": 10})  # valid keys


def test_bert_squad_recipe():
    c = finetune.get_config("squad_v1,bert_base")
    assert (c.optim.learning_rate, c.finetune.epochs, c.train.batch_size) == (3e-5, 2.0, 24)
    assert finetune.get_config("sst2,bert_base").optim.learning_rate == 2e-5


def test_every_family_has_its_recipes_in_the_configs():
    """configs/recipes.py holds every family's pretraining and fine-tuning recipe; the
    family records (bertjax/models) hold none."""
    import dataclasses

    from bertjax.models.family import Family
    from bertjax.models.registry import FAMILIES

    recipes = finetune._pretrain().recipes
    assert set(recipes.PRETRAIN) == set(recipes.FINETUNE) == set(FAMILIES)
    assert not [f.name for f in dataclasses.fields(Family) if "recipe" in f.name]


def test_describe_shows_the_resolved_training_values():
    from bertjax import tasks
    from bertjax.tools.describe import training

    c = finetune._pretrain().get_config("roberta_large")
    lines = training(c, tasks.get(c)).splitlines()
    assert lines[0] == "task mlm: batch 8,192 x 128 tokens"
    assert lines[1] == (
        "steps: 500,000; 30,000 warmup steps, then linear decay to 0 at step 500,000"
    )
    assert lines[2].startswith("optimizer: adamw lr 0.0004, weight decay 0.01, b1 0.9 b2 0.98")
    assert lines[3].startswith("masking: dynamic, token, 15% (candidates budget)")
    c = finetune.get_config("rte,electra_base")
    text = training(c, tasks.get(c))  # no data is read for fine-tuning's epochs
    assert "finetune.epochs=10 over the train split; warmup 10% of the steps" in text
    assert "layer-wise lr decay 0.8 (google)" in text and "fine-tuning: rte from tfds" in text


def test_describe_says_how_packing_turns_flops_per_token_into_flops_per_real_token():
    from bertjax import tasks
    from bertjax.tools.describe import training

    for c, section in (
        (finetune._pretrain().get_config("bert_tiny,runlocal"), "data"),
        (finetune.get_config("demo_next,bert_tiny"), "finetune"),
    ):
        assert "packing:" not in training(c, tasks.get(c))  # off by default
        c[section].packing = "best_fit"
        line = next(ln for ln in training(c, tasks.get(c)).splitlines() if "packing" in ln)
        assert line.startswith(f"packing: {section}.packing=best_fit, at most 16 sequences")
        # 1 / 0.9 = 1.11: FLOPs per real token at 90% of the positions real
        assert "/ the packing efficiency" in line and "at 90% real, 1.11 x" in line
