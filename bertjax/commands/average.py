r"""`python -m bertjax average`: the average of saved training checkpoints as a model
directory.

  python -m bertjax average --checkpoints=/runs/stable@3000,/runs/stable@4000 \
      --out=/runs/stable_avg
  python -m bertjax average --workdir=/runs/stable --last=4 --weights=ema \
      --ema_decay=0.8 --out=/runs/stable_ema

Checkpoints are WORKDIR@STEP (local or gs://), oldest first, or the last K saved steps
of --workdir. Each is verified against the digest recorded when it was saved and must be
of one architecture; only the parameters are averaged (float64 sums, cast back). The
model directory (bertjax/modeldir.py) records the checkpoints and their weights; its
tokenizer is --tokenizer_from's, else the one of the data the last checkpoint's run
trained on. Weights: uniform, or the EMA of the sequence (bertjax/tools/average.py).
"""

from __future__ import annotations

from absl import flags

from bertjax.commands import flags as common

CHECKPOINTS = flags.DEFINE_list(
    "checkpoints",
    None,
    "WORKDIR@STEP,...: the checkpoints to average, oldest first (or --workdir with --last).",
)
LAST = flags.DEFINE_integer("last", None, "With --workdir: average its newest K saved checkpoints.")
WEIGHTS = flags.DEFINE_enum(
    "weights",
    "uniform",
    ["uniform", "ema"],
    "uniform: 1/K each; ema: the exponential moving average of the sequence.",
)
EMA_DECAY = flags.DEFINE_float(
    "ema_decay", 0.9, "--weights=ema: the decay d (the newest checkpoint weighs 1 - d)."
)
TOKENIZER = flags.DEFINE_string(
    "tokenizer_from",
    "",
    "Model, transformers or tokenizer "
    "directory whose tokenizer the model directory gets "
    "(default: the training data's).",
)

HELP = {
    "average": common.Usage(
        (
            CHECKPOINTS,
            common.WORKDIR,
            LAST,
            WEIGHTS,
            EMA_DECAY,
            TOKENIZER,
            common.OUT,
            common.OVERWRITE,
        ),
        "recipes.md",
    )
}


def main(argv: list[str]) -> None:
    del argv
    from bertjax.tools import average

    out = str(common.required(common.OUT))
    if CHECKPOINTS.value and (common.WORKDIR.value or LAST.value is not None):
        raise ValueError("--checkpoints and --workdir/--last: give one")
    if CHECKPOINTS.value:
        points = [average.parse_checkpoint(s) for s in CHECKPOINTS.value]
    elif common.WORKDIR.value and LAST.value is not None:
        points = average.last_checkpoints(common.WORKDIR.value, LAST.value)
    else:
        raise ValueError("--checkpoints=WORKDIR@STEP,... or --workdir=WORKDIR --last=K is required")
    average.weights(len(points), WEIGHTS.value, EMA_DECAY.value)  # bad --ema_decay first
    common.check_out(out)
    print(
        average.write(
            out, points, WEIGHTS.value, EMA_DECAY.value, TOKENIZER.value, common.OVERWRITE.value
        )
    )
