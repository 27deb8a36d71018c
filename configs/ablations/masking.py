r"""Masking ablation: token vs whole-word vs span masking, everything else the same.

  python -m bertjax sweep --config=configs/ablations/masking.py:cpu --workdir=/tmp/masking
  python -m bertjax compare /tmp/masking --out=/tmp/masking/report

Each run prepares the demo corpus with its masking (static, 2 masked copies; the
preparation is the only thing the runs do not share), pretrains `bert_tiny` on it
(MLM + NSP, 3000 steps at 32 x 64 tokens, 5-12 min on 2 CPU cores), then fine-tunes the
result on the classification and tagging demo tasks (bertjax/data/demo_tasks.py) with 3
seeds each at lr 3e-4, the rate at which a pretrained start beats scratch there
(benchmarks/RESULTS.md). The span task (demo_intruder) is left out: after 3000 steps a
pretrained start scores under its trivial baseline there (it needs ~20,000; RESULTS.md),
so it would tell little about the pretrainings (add it with `--config.downstream.tasks`).
ARG: `cpu` (default) as above; `tiny` a smoke test of the sweep's machinery
(notebooks/ablation.ipynb): token against span masking only, 20 pretraining steps, one
task with one seed and 10 fine-tuning steps at 32 tokens, for which
`--config.data.source` (a small corpus) and a small `--config.tokenizer.vocab_size` make
it fast.
Whole-word masking masks every WordPiece of a chosen word; span masking (SpanBERT)
masks contiguous spans of whole words with Geometric(0.2) lengths up to 10.
"""

import os

import ml_collections

from bertjax import configfile

STRATEGIES = ("token", "whole_word", "span")


def _pretrain():
    """configs/pretrain.py, beside this file's directory."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return configfile.load_module(os.path.join(here, "pretrain.py"), "masking ablation")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    scale = arg or "cpu"
    if scale not in ("cpu", "tiny"):
        raise ValueError(f"masking ablation {scale!r}: expected cpu or tiny")
    config = _pretrain().get_config("bert_tiny,runlocal")
    config.train.steps = 3000
    config.train.eval_every = 1000
    config.train.checkpoint_every = 500
    config.downstream.update(
        tasks="demo_next,demo_boundary",
        config="configs/finetune.py:{task},bert_tiny,runlocal",
        seeds=3,
    )  # runlocal fine-tunes the demo tasks at lr 3e-4
    if scale == "tiny":
        config.train.update(
            steps=20, eval_every=20, eval_steps=2, log_every=10, checkpoint_every=20
        )
        config.downstream.update(
            tasks="demo_next", seeds=1, overrides="train.steps=10 max_seq_length=32"
        )
    return config


def get_sweep(arg: str | None = None) -> list[dict]:
    strategies = ("token", "span") if arg == "tiny" else STRATEGIES
    return [{"masking.strategy": s} for s in strategies]
