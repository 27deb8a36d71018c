"""The published fine-tuning recipes configs/finetune.py applies: spot checks of the data
entered in the family files (ALBERT's per-task table, ELECTRA's layer-wise decay)."""

import importlib.util
import os

import pytest

from bertjax.optim import OptimConfig

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                     "finetune.py")
_SPEC = importlib.util.spec_from_file_location("bertjax_configs_finetune", _PATH)
finetune = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(finetune)


@pytest.mark.parametrize("arg,lr,batch,steps,warmup", [
    # Lan et al., Table 14 (GLUE rows = google-research/albert run_glue.sh).
    ("rte,albert_base", 3e-5, 32, 800, 200),
    ("qnli,albert_large", 1e-5, 32, 33112, 1986),
    ("squad_v2,albert_base", 3e-5, 48, 8144, 814),
])
def test_albert_per_task_steps(arg, lr, batch, steps, warmup):
    c = finetune.get_config(arg)
    assert (c.optim.learning_rate, c.train.batch_size, c.train.steps,
            c.finetune.warmup_steps) == (lr, batch, steps, warmup)
    assert c.optim.name == "adamw"


def test_a_dataset_without_an_entry_keeps_the_family_default():
    c = finetune.get_config("ax,albert_base")
    assert (c.optim.learning_rate, c.train.batch_size, c.train.steps,
            c.finetune.warmup_steps) == (2e-5, 32, 0, 0)


def test_electra_layer_decay_and_epochs():
    rte = finetune.get_config("rte,electra_base")
    assert rte.finetune.epochs == 10.0
    assert (rte.optim.layer_decay, rte.optim.layer_decay_depth) == (0.8, "google")
    assert (rte.optim.learning_rate, rte.optim.weight_decay) == (1e-4, 0.0)
    large = finetune.get_config("sst2,electra_large")
    assert (large.optim.layer_decay, large.optim.learning_rate, large.finetune.epochs) == (
        0.9, 5e-5, 3.0)
    assert large.optim.weight_decay == 0.0  # the preset's optim keeps the family's keys
    assert finetune.get_config("sst2,electra_small").optim.layer_decay == 0.8
    assert finetune.get_config("squad_v1,electra_base").finetune.epochs == 2.0
    OptimConfig.from_dict({**large.optim.to_dict(), "total_steps": 10})  # valid keys


def test_bert_squad_recipe():
    c = finetune.get_config("squad_v1,bert_base")
    assert (c.optim.learning_rate, c.finetune.epochs, c.train.batch_size) == (3e-5, 2.0, 24)
    assert finetune.get_config("sst2,bert_base").optim.learning_rate == 2e-5
