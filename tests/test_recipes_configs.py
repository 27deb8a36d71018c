"""configs/plans.py: the ModernBERT- and mmBERT-style plans resolve to the phases their
sources give (hand-computed), and the tiny ModernBERT-style plan trains end to end."""

from __future__ import annotations

import os

import pytest
import trainlib

from bertjax import configfile, experiment, tasks
from bertjax import train as train_lib

plans = configfile.load_module(
    os.path.join(trainlib.ROOT, "configs", "plans.py"), "configs/plans.py"
)


def test_the_modernbert_plan_hand_computed():
    c = plans.get_config("modernbert")
    phases = tasks.get(c).phases()
    # Tokens / (4,608 x 1,024 = 4,718,592 a step): 1.719T -> 364,304.4, 250B -> 52,981.6,
    # 50B -> 10,596.3 steps.
    assert int(c.train.steps) == 364_304 + 52_982 + 10_596
    assert [(p.start, p.end) for p in phases] == [
        (0, 364_304),
        (364_304, 417_286),
        (417_286, 427_882),
    ]
    assert [(p.batch_size, p.options["max_seq_length"]) for p in phases] == [
        (4608, 1024),
        (576, 8192),
        (576, 8192),
    ]
    assert [p.options["mask_rate"] for p in phases] == [0.3, 0.3, 0.3]
    optim = experiment.optim_config(c)
    assert optim.segments == ((364_304, 417_286, 3e-4, ""), (417_286, 427_882, 3e-4, "1-sqrt"))
    assert (optim.learning_rate, optim.decay, optim.decay_steps) == (8e-4, "wsd", 0)
    # A 3B-token warmup of 4,718,592-token steps: ceil(635.8) = 636 updates.
    assert optim.warmup_steps == 636


def test_the_mmbert_plan_hand_computed():
    c = plans.get_config("mmbert")
    phases = tasks.get(c).phases()
    # 2.3T / 4,718,592 = 487,433.6; 600B -> 127,156.6; 100B -> 21,192.8.
    assert [p.end - p.start for p in phases] == [487_434, 127_157, 21_193]
    assert [p.options["mask_rate"] for p in phases] == [0.3, 0.15, 0.05]
    assert [p.options["mixture"]["temperature"] for p in phases] == [0.7, 0.5, 0.3]
    assert int(c.model.vocab_size) == 256_000
    assert experiment.optim_config(c).segments == ((614_591, 635_784, 0.0, "1-sqrt"),)


def test_bad_plan_names_are_one_line():
    with pytest.raises(ValueError, match="unknown plan 'neobert'"):
        plans.get_config("neobert")
    c = plans.get_config("modernbert,runlocal")
    c.phases.p3.share = 0.2
    with pytest.raises(ValueError, match=r"phases: the shares sum to 1\.1, not 1"):
        tasks.get(c).phases()


@pytest.mark.integration  # a training run, a command or prepared data
def test_the_tiny_modernbert_plan_trains(tmp_path, capsys):
    from bertjax.data.from_config import prepare_data

    corpus = trainlib.write_corpus(str(tmp_path / "corpus.txt"))
    short, long = str(tmp_path / "d64"), str(tmp_path / "d128")
    c = plans.get_config("modernbert,runlocal")
    c.data.source, c.data.dir, c.data.num_workers = f"bert:{corpus}", short, 0
    c.tokenizer.vocab_size = c.model.vocab_size = 300
    prepare_data(c)
    c.data.dir, c.max_seq_length, c.tokenizer.path = long, 128, f"{short}/tokenizer"
    prepare_data(c)
    c = plans.get_config("modernbert,runlocal")
    c.data.dir, c.phases.p2.data_dir = short, long
    c.model.vocab_size = 300
    c.train.update(
        steps=10, log_every=1, eval_every=0, checkpoint_every=0, peak_flops=1e12, export_model=False
    )
    c.optim.warmup_steps = 2
    result = train_lib.train(c, str(tmp_path / "run"))
    assert result["status"] == "done" and result["step"] == 10
    out = capsys.readouterr().out
    # 10 x 0.7 = 7, 10 x 0.9 = 9: p3 reads p2's data (same length, no data_dir).
    assert "  decay_128: steps 9..10 (1 updates), batch 16 x 128" in out
    assert f"phase 3/3: steps 9..10, batch 16 x 128 from {long}" in out
