r"""N-phase pretraining plans of 2025-26 encoders (config.phases, bertjax/tasks/plan.py),
each number next to its source.

  python -m bertjax describe --config=configs/plans.py:modernbert
  python -m bertjax describe --config=configs/plans.py:mmbert
  python -m bertjax train --config=configs/plans.py:modernbert,runlocal \
      --workdir=/tmp/plan_run --config.data.dir=/tmp/demo_64 \
      --config.phases.p2.data_dir=/tmp/demo_128

The part after the colon is PLAN[,runlocal]; `runlocal` is a tiny variant of the plan
(the modernbert_tiny preset, rows of 64 then 128 tokens, 600 steps) that runs on the
demo corpus on a CPU (docs/recipes.md#recipes-as-configs). Phases are named p1, p2, p3,
so one key is overridden with --config.phases.p2.data_dir=DIR; a phase without data_dir
(or mixture sources) reads the previous phase's when it has the same length, else
data.dir. Everything else is configs/pretrain.py's, overridden as usual.

Both raise the global layers' RoPE theta from 10,000 (p1) to the preset's 160,000 for
the 8,192-token phases. Not expressed: ModernBERT's batch-size warmup.
"""

import os

import ml_collections

from bertjax import configfile

pretrain = configfile.load_module(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrain.py"), "configs/plans.py"
)

# ModernBERT-base's step: 4,608 rows of 1,024 tokens (AnswerDotAI/ModernBERT
# yamls/modernbert/modernbert-base-pretrain.yaml, global_train_batch_size).
TOKENS_PER_STEP = 4608 * 1024


def _steps(tokens: float) -> int:
    return int(round(tokens / TOKENS_PER_STEP))


# Warner et al. 2024 (arXiv 2412.13663, section 2.2 and the yaml above): 1.719T tokens
# at 1,024 (warmup 3B tokens, then a constant 8e-4: configs/recipes.py "modernbert"),
# then the context extension at 8,192: 250B tokens at a constant 3e-4, and 50B more
# decaying 1-sqrt to 0. Masking 30% throughout (the yamls' mlm_probability). The 8,192
# phases keep the tokens of a step (576 rows): the paper does not give their batch.
MODERNBERT = dict(
    preset="modernbert_base",
    optim=dict(decay_tokens=0, decay_steps=0, decay_fraction=0.0),  # the decay is p3's
    phases=dict(
        p1=dict(
            name="stable_1024", tokens=1_719_000_000_000, max_seq_length=1024, rope_theta=10_000.0
        ),  # then the preset's 160,000 (section 2.2)
        p2=dict(
            name="context_8192",
            tokens=250_000_000_000,
            max_seq_length=8192,
            tokens_per_step=TOKENS_PER_STEP,
            learning_rate=3e-4,
        ),
        p3=dict(
            name="decay_8192",
            tokens=50_000_000_000,
            max_seq_length=8192,
            tokens_per_step=TOKENS_PER_STEP,
            learning_rate=3e-4,
            decay_shape="1-sqrt",
        ),
    ),
    # The tiny variant: the same shape in 600 steps of 32 x 64 tokens, then 16 x 128.
    runlocal=dict(
        p1=dict(name="stable_64", share=0.7, rope_theta=10_000.0),
        p2=dict(
            name="context_128",
            share=0.2,
            max_seq_length=128,
            tokens_per_step=2048,
            learning_rate=3.75e-4,
        ),  # 3/8 of the peak, as 3e-4 of 8e-4
        p3=dict(
            name="decay_128",
            share=0.1,
            max_seq_length=128,
            tokens_per_step=2048,
            learning_rate=3.75e-4,
            decay_shape="1-sqrt",
        ),
    ),
)

# Marone et al. 2025 (mmBERT, arXiv 2509.06888, section 3): ModernBERT's architecture
# with the Gemma 2 tokenizer (256,000 tokens); three phases with an inverse mask ratio
# schedule (30% -> 15% -> 5%) and annealed language sampling (inverse temperature 0.7 ->
# 0.5 -> 0.3 over the languages' sizes, 60 -> 110 -> 1,833 languages): 2.3T tokens at
# 1,024, 600B at 8,192 (mid-training, context extension), 100B decaying 1-sqrt (the
# decay phase; the released model merges three decay variants, not expressed). The
# optimizer, learning rate and tokens per step are ModernBERT-base's here: the plan's
# shape is mmBERT's, those numbers are not taken from its paper.
MMBERT = dict(
    preset="modernbert_base",
    model=dict(vocab_size=256_000),
    optim=dict(decay_tokens=0, decay_steps=0, decay_fraction=0.0),
    phases=dict(
        p1=dict(
            name="pretrain_1024",
            tokens=2_300_000_000_000,
            max_seq_length=1024,
            masking=dict(masked_lm_prob=0.3),
            mixture=dict(sources=(), temperature=0.7),
            rope_theta=10_000.0,
        ),  # 160,000 from mid-training on
        p2=dict(
            name="midtrain_8192",
            tokens=600_000_000_000,
            max_seq_length=8192,
            tokens_per_step=TOKENS_PER_STEP,
            masking=dict(masked_lm_prob=0.15),
            mixture=dict(sources=(), temperature=0.5),
        ),
        p3=dict(
            name="decay_8192",
            tokens=100_000_000_000,
            max_seq_length=8192,
            tokens_per_step=TOKENS_PER_STEP,
            masking=dict(masked_lm_prob=0.05),
            decay_shape="1-sqrt",
            mixture=dict(sources=(), temperature=0.3),
        ),
    ),
    runlocal=dict(
        p1=dict(
            name="pretrain_64",
            share=0.6,
            masking=dict(masked_lm_prob=0.3),
            rope_theta=10_000.0,
            mixture=dict(sources=(), temperature=0.7),
        ),
        p2=dict(
            name="midtrain_128",
            share=0.3,
            max_seq_length=128,
            tokens_per_step=2048,
            masking=dict(masked_lm_prob=0.15),
            mixture=dict(sources=(), temperature=0.5),
        ),
        p3=dict(
            name="decay_128",
            share=0.1,
            max_seq_length=128,
            tokens_per_step=2048,
            masking=dict(masked_lm_prob=0.05),
            decay_shape="1-sqrt",
            mixture=dict(sources=(), temperature=0.3),
        ),
    ),
)

PLANS = {"modernbert": MODERNBERT, "mmbert": MMBERT}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name, *knobs = (arg or "modernbert").split(",")
    if name not in PLANS:
        raise ValueError(f"unknown plan {name!r} in {arg!r}; known: {', '.join(PLANS)}")
    unknown = sorted(set(knobs) - {"runlocal"})
    if unknown:
        raise ValueError(f"unknown config knob(s) {unknown} in {arg!r}; known: runlocal")
    plan, runlocal = PLANS[name], "runlocal" in knobs
    preset = "modernbert_tiny" if runlocal else plan["preset"]
    config = pretrain.get_config(preset + (",runlocal" if runlocal else ""))
    if not runlocal:
        config.model.update(plan.get("model", {}))
    config.optim.update(plan["optim"])
    config.data.masking = "dynamic"  # a masking rate per phase needs it
    if runlocal:
        phases = plan["runlocal"]
    else:  # shares of the run from each phase's tokens
        steps = {k: _steps(p["tokens"]) for k, p in plan["phases"].items()}
        config.train.steps = sum(steps.values())
        phases = {
            k: {
                **{n: v for n, v in p.items() if n != "tokens"},
                "share": steps[k] / config.train.steps,
            }
            for k, p in plan["phases"].items()
        }
    del config["phases"]  # a tuple in configs/pretrain.py: named phases here
    config.phases = ml_collections.ConfigDict(
        {k: {**dict(data_dir=""), **p} for k, p in phases.items()}
    )
    return config
