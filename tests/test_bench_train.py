"""`python -m bertjax bench train` end to end on a tiny config, in a subprocess as a user
runs it. Figures are printed, never asserted against a time (benchmarks are not tests);
what is asserted is the output contract and that both sides train the same function."""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest
from clilib import python

# Runs the command, then reports on its last line whether TensorFlow and torch got imported.
_RUNNER = (
    "import sys\n"
    "from bertjax.__main__ import main\n"
    "rc = main()\n"
    "seen = {m: m in sys.modules for m in ('tensorflow', 'torch')}\n"
    "print('imported: tensorflow={tensorflow} torch={torch}'.format(**seen))\n"
    "sys.exit(rc)\n"
)
_TINY = [
    "--config=configs/pretrain.py:bert_tiny",
    "--config.model.vocab_size=500",
    "--config.max_seq_length=32",
    "--config.max_predictions_per_seq=5",
    "--config.train.batch_size=8",
    "--seconds=1",
]
# SST-2's shape, shrunk: a 2-label classifier on random rows, no dataset anywhere.
_TINY_SST2 = [
    "--config=configs/finetune.py:sst2,bert_tiny,runlocal",
    "--config.model.vocab_size=500",
    "--config.max_seq_length=32",
    "--config.train.batch_size=8",
    "--seconds=1",
]
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, "configs"))


def _run(*args: str, torch: bool = False) -> tuple[int, list[str], str]:
    """(exit code, stdout lines without the runner's line, stderr). Asserts that TensorFlow
    was not imported, and torch only when `torch`."""
    proc = python("-c", _RUNNER, "bench", "train", *args, timeout=300)
    lines = proc.stdout.strip().splitlines()
    assert lines and lines[-1] == f"imported: tensorflow=False torch={torch}", (
        proc.stdout,
        proc.stderr,
    )
    return proc.returncode, lines[:-1], proc.stderr


def test_vs_torch_same_start_and_ratio_line():
    rc, lines, err = _run(*_TINY, "--vs_torch", torch=True)
    assert rc == 0, err
    m = re.fullmatch(r"ratio=(\d+\.\d\d) ours=(\d+) reference=(\d+) unit=tokens/s", lines[-1])
    assert m, lines[-1]
    ratio, ours, ref = float(m[1]), int(m[2]), int(m[3])
    assert ours > 0 and ref > 0
    # ours and reference are printed rounded to whole tokens/s, the ratio to 0.01 from
    # the unrounded figures: it lies between the extremes the rounding allows.
    low, high = (ours - 0.5) / (ref + 0.5), (ours + 0.5) / (ref - 0.5)
    assert low - 0.005 <= ratio <= high + 0.005, (ratio, ours, ref)
    # Identical initial weights and batches: without dropout the first losses agree.
    check = next(ln for ln in lines if ln.startswith("check: first-step loss"))
    got = re.search(r"ours=(\S+) reference=(\S+)", check)
    assert abs(float(got[1]) - float(got[2])) < 1e-4, check
    # 500-way MLM + 2-way NSP from a random init: near ln(500) + ln(2).
    assert 6.0 < float(got[1]) < 7.8, check
    sides = [ln for ln in lines if ln.startswith(("ours (", "reference ("))]
    assert len(sides) == 2, lines
    for side in sides:
        assert re.search(r"step [\d.]+ ms, [\d,.]+ seq/s, [\d,]+ tokens/s, MFU [\d.]+%", side)
        assert re.search(r"loss \d+\.\d+ -> \d+\.\d+$", side), side
    # Each side's MFU uses its own FLOPs/token: the dense head costs the reference more.
    flops = re.search(r"ours (\S+) \(sparse .* reference (\S+) \(dense", lines[1])
    assert flops and float(flops[2]) > float(flops[1]), lines[1]
    assert "BertForPreTraining" in sides[1]


def test_modernbert_against_its_masked_lm_class():
    """ModernBertForMaskedLM ties its top-level `decoder.weight` to the embeddings: the
    reference loads our parameters with it absent and ties it, as for the other families."""
    rc, lines, err = _run(
        "--config=configs/pretrain.py:modernbert_tiny",
        "--config.max_seq_length=32",
        "--config.max_predictions_per_seq=5",
        "--config.train.batch_size=8",
        "--config.optim.warmup_tokens=0",
        "--config.optim.decay_tokens=0",
        "--config.model.attention_dropout_rate=0",
        "--seconds=1",
        "--vs_torch",
        torch=True,
    )
    assert rc == 0, err
    assert "ModernBertForMaskedLM" in next(ln for ln in lines if ln.startswith("reference ("))
    check = next(ln for ln in lines if ln.startswith("check: first-step loss"))
    got = re.search(r"ours=(\S+) reference=(\S+)", check)
    assert abs(float(got[1]) - float(got[2])) < 1e-4, check
    assert 10.0 < float(got[1]) < 11.6, check  # its 50,368-way MLM, random init: ln 50368


def test_without_torch_prints_tokens_and_mfu():
    rc, lines, err = _run(*_TINY, "--config.train.peak_flops=1e12")
    assert rc == 0, err
    m = re.fullmatch(r"ours=(\d+) unit=tokens/s mfu=(\d+\.\d{4})", lines[-1])
    assert m, lines[-1]
    assert int(m[1]) > 0 and 0 < float(m[2]) < 1
    assert "(config)" in lines[1] and not any(ln.startswith("reference") for ln in lines)


@pytest.mark.parametrize(
    "bad, says",
    [
        ("--seconds=0", "--seconds=0.0: must be > 0"),
        ("--config=configs/pretrain.py:bert_nope", "bert_nope"),
    ],
)
def test_bad_flags_fail_in_one_line(bad, says):
    rc, lines, err = _run(*_TINY, bad)
    assert rc == 1
    assert err.strip().count("\n") == 0 and err.startswith("error: ") and says in err, err


@pytest.mark.parametrize(
    "config, task",
    [
        (["--config=configs/pretrain.py:electra_tiny", "--config.model.vocab_size=500"], "electra"),
        (
            [
                "--config=configs/distill.py:bert_mini_to_bert_tiny",
                "--config.model.vocab_size=500",
                "--config.teacher.vocab_size=500",
                "--config.teacher.num_layers=2",
            ],
            "distillation",
        ),
    ],
)
def test_electra_and_distillation_are_timed_and_have_no_torch_reference(config, task):
    rc, lines, err = _run(*config, *_TINY[1:], "--config.train.peak_flops=1e12")
    assert rc == 0, err
    assert f"task {task}" in lines[0]
    assert re.fullmatch(r"ours=(\d+) unit=tokens/s mfu=(\d+\.\d{4})", lines[-1]), lines[-1]
    if task == "distillation":
        assert any(
            ln.startswith("teacher (random weights, forward only): bert L2 H256") for ln in lines
        ), lines
        # The teacher's forward pass is in the FLOPs: more than the student's dense figure.
        flops = re.search(r"ours (\S+) \(sparse .* reference (\S+) \(dense", lines[1])
        assert float(flops[1]) > float(flops[2]), lines[1]
    rc, _, err = _run(*config, *_TINY[1:], "--vs_torch")
    assert rc == 1 and err.startswith(
        f"error: --vs_torch: transformers has no training reference for the {task} task"
    ), err


def test_finetuning_config_vs_sequence_classification_reads_no_data():
    rc, lines, err = _run(*_TINY_SST2, "--vs_torch", torch=True)
    assert rc == 0, err
    m = re.fullmatch(r"ratio=(\d+\.\d\d) ours=(\d+) reference=(\d+) unit=tokens/s", lines[-1])
    assert m and int(m[2]) > 0 and int(m[3]) > 0, lines[-1]
    assert "task glue" in lines[0] and "2 labels, every row 32 tokens" in lines[0], lines[0]
    assert re.match(r"train FLOPs/token: \S+ on both sides \(no MLM head\)", lines[1]), lines[1]
    assert any(ln.startswith("schedule: train.steps=0 ") for ln in lines), lines
    side = next(ln for ln in lines if ln.startswith("reference ("))
    assert "BertForSequenceClassification" in side, side
    # Same weights, same rows: the same cross-entropy, near ln(2) from a random head.
    check = next(ln for ln in lines if ln.startswith("check: first-step loss"))
    got = re.search(r"ours=(\S+) reference=(\S+)", check)
    assert abs(float(got[1]) - float(got[2])) < 1e-4, check
    assert 0.55 < float(got[1]) < 0.85, check


@pytest.mark.parametrize("dataset, dtype, high", [("sst2", np.int32, 2), ("stsb", np.float32, 5)])
def test_finetuning_synthetic_batches(monkeypatch, dataset, dtype, high):
    import finetune

    from bertjax import experiment, tasks
    from bertjax.tasks.finetune import FinetuneTask

    def no_data(self, *args):
        raise AssertionError("synthetic batches read data")

    monkeypatch.setattr(FinetuneTask, "features", no_data)
    monkeypatch.setattr(FinetuneTask, "tokenizer", no_data)
    config = finetune.get_config(f"{dataset},bert_tiny,runlocal")
    task = tasks.get(config)
    cfg = experiment.model_config(config, task)
    a, b = (task.synthetic_batches(cfg, 4, 16, seed=0, count=2) for _ in range(2))
    for x, y in zip(a, b, strict=True):  # a function of the seed
        assert all(np.array_equal(x[k], y[k]) for k in x)
    batch = a[0]
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (4, 16)
    assert 5 <= batch["input_ids"].min() and batch["input_ids"].max() < cfg.vocab_size
    assert batch["attention_mask"].all() and not batch["token_type_ids"].any()
    assert batch["weights"].tolist() == [1.0] * 4
    labels = np.concatenate([x["labels"] for x in a])
    assert labels.dtype == dtype and labels.shape == (8,) and 0 <= labels.min()
    assert labels.max() < high


@pytest.mark.parametrize(
    "dataset, reference",
    [("demo_boundary", "BertForTokenClassification"), ("squad_v1", "BertForQuestionAnswering")],
)
def test_tagging_and_span_configs_against_their_transformers_classes(dataset, reference):
    """Synthetic rows (no dataset read): a random tag at every position, or a random span
    per row; the same weights give the same first loss on both sides."""
    rc, lines, err = _run(
        f"--config=configs/finetune.py:{dataset},bert_tiny,runlocal",
        *_TINY_SST2[1:],
        "--vs_torch",
        torch=True,
    )
    assert rc == 0, err
    assert re.fullmatch(r"ratio=\d+\.\d\d ours=\d+ reference=\d+ unit=tokens/s", lines[-1])
    side = next(ln for ln in lines if ln.startswith("reference ("))
    assert reference in side, side
    check = next(ln for ln in lines if ln.startswith("check: first-step loss"))
    got = re.search(r"ours=(\S+) reference=(\S+)", check)
    assert abs(float(got[1]) - float(got[2])) < 1e-4, check
