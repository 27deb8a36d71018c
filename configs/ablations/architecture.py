r"""Architecture ablation: classic post-norm BERT against cumulative steps toward ModernBERT.

  python -m bertjax sweep --config=configs/ablations/architecture.py:cpu --workdir=/tmp/arch
  python -m bertjax compare /tmp/arch --out=/tmp/arch/report

Six architectures, each a set of config.model switches (docs/architectures.md) on the same
4-layer, 128-wide encoder (`bert_L4_H128`), the same data, MLM-only task and optimizer:

  classic   post-norm BERT (Devlin et al.)
  prenorm   + pre-norm and a final norm (Xiong et al. 2020)
  glu       + a GeGLU MLP (Shazeer 2020), its width 344 so the MLP keeps its parameters
            (3 x 128 x 344 = 132,096 against 2 x 128 x 512 = 131,072)
  rope      + rotary positions (Su et al.): the 512 x 128 position table goes
  nobias    + no biases in layers and norms (ModernBERT)
  local     + 16-token sliding windows, every third layer global (ModernBERT's pattern
            at the demo's 64-token rows; ModernBERT itself: 128 of 8,192)

Each is pretrained with 3 seeds (model init, data order and masks all derive from
config.seed): 3,000 steps of 32 x 64 tokens, MLM only at 15% on full-sentence rows, then
fine-tuned once on each of the classification and tagging demo tasks (the spread over the
three pretraining seeds is the seed noise the reading is judged against). The runs go
seed by seed (every architecture at seed 0 first), so a sweep cut short still compares
all six. 18 pretrainings of 5-12 minutes on 2 CPU cores: several hours; re-running the
sweep resumes.
ARG: `cpu` (default) as above; `long` classic against rope, seed 0, pretrained twice
as long (6,000 steps, the schedule stretched), the same fine-tuning: whether the
rotary gap of the 3,000-step runs is a head start that longer training closes; `tiny` a
smoke test of the sweep: classic against local, one seed, 20 steps, one task with 10
fine-tuning steps.
"""

import os

import ml_collections

from bertjax import configfile

PRESET = "bert_L4_H128"
# Cumulative: each step keeps the switches of the steps before it.
STEPS = (
    ("classic", {}),
    ("prenorm", {"model.norm_position": "pre", "model.final_norm": True}),
    ("glu", {"model.mlp": "glu", "model.intermediate_size": 344}),
    ("rope", {"model.rope_theta": 10_000.0}),
    (
        "nobias",
        {
            "model.attention_bias": False,
            "model.mlp_bias": False,
            "model.norm_bias": False,
            "model.head_bias": False,
        },
    ),
    ("local", {"model.local_window": 16, "model.global_every": 3}),
)
SEEDS = (0, 1, 2)


def _pretrain():
    """configs/pretrain.py, beside this file's directory."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return configfile.load_module(os.path.join(here, "pretrain.py"), "architecture ablation")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    scale = arg or "cpu"
    if scale not in ("cpu", "long", "tiny"):
        raise ValueError(f"architecture ablation {scale!r}: expected cpu, long or tiny")
    config = _pretrain().get_config(f"{PRESET},runlocal")
    config.task = "mlm"  # ModernBERT's objective, for every architecture
    config.data.instances = "full_sentences"
    config.train.steps = 3000
    config.train.eval_every = 1000
    config.train.checkpoint_every = 500
    config.downstream.update(
        tasks="demo_next,demo_boundary",
        config=f"configs/finetune.py:{{task}},{PRESET},runlocal",
        seeds=1,
    )
    if scale == "long":
        config.train.steps = 6000
    if scale == "tiny":
        config.train.update(
            steps=20, eval_every=20, eval_steps=2, log_every=10, checkpoint_every=20
        )
        config.downstream.update(
            tasks="demo_next", seeds=1, overrides="train.steps=10 max_seq_length=32"
        )
    return config


def steps() -> list[dict]:
    """The cumulative overrides of each architecture, in order."""
    out, acc = [], {}
    for _, changes in STEPS:
        acc = {**acc, **changes}
        out.append(dict(acc))
    return out


def get_sweep(arg: str | None = None) -> list[dict]:
    archs = steps()
    if arg == "tiny":
        return [archs[0], archs[-1]]
    if arg == "long":
        return [{**archs[0], "seed": 0}, {**archs[3], "seed": 0}]
    return [{**a, "seed": s} for s in SEEDS for a in archs]
