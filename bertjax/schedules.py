"""Learning-rate schedules (a function of the update count) and the lengths they are
given in: updates, shares of the run, or tokens.

  decay = linear | polynomial | cosine | constant: a linear warmup over warmup_steps to
    the peak, then a decay from warmup_steps to total_steps (`make_schedule`).
  decay = wsd (warmup-stable-decay; Hu et al. 2024, MiniCPM; ModernBERT, mmBERT): the
    warmup, then the peak held constant (the stable phase), then a decay to
    end_learning_rate over the last decay_steps updates of total_steps, shaped by
    decay_shape with t = (step - (total_steps - decay_steps)) / decay_steps in [0, 1]:
      linear   1 - t
      cosine   (1 + cos(pi t)) / 2
      1-sqrt   1 - sqrt(t)           (Hägele et al. 2024, "Scaling Laws and
                                      Compute-Optimal Training Beyond Fixed Training
                                      Durations"; mmBERT's decay)
    decay_steps = 0 is a stable run: the peak until total_steps.

Because the decay sits at the end of total_steps, a decay branched from step S of a
stable run (config.init_from_checkpoint, bertjax/experiment.py) is the same function
with total_steps = S + D and decay_steps = D: equal to the stable run's schedule up to
S, decaying from S on.

Lengths (`resolve_lengths`). warmup_steps and decay_steps count updates; instead,
warmup_fraction / decay_fraction give a share of total_steps (rounded to the nearest
update), and warmup_tokens / decay_tokens a number of tokens (batch rows x sequence
length, padding included, as the run's phases lay them out; rounded up to whole
updates): the warmup covers the first updates that reach warmup_tokens, the decay the
last updates that hold decay_tokens. A token length needs the run's phases
(bertjax/experiment.py `optim_config` passes them); at most one of a fraction and a
token count may be set for each, and either overrides the steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from bertjax.models.config import ConfigError

if TYPE_CHECKING:
    import optax

    from bertjax.optim import OptimConfig

SHAPES = ("linear", "cosine", "1-sqrt")


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
    """Learning rate as a function of the update count (a scalar, traced or not).

    step < warmup:  learning_rate * step / warmup_steps         (0 at step 0)
    after warmup, by cfg.decay:
      linear / polynomial:  end + (peak - end) * (1 - t) ** power
      cosine:               end + (peak - end) * (1 + cos(pi t)) / 2
      constant:             peak
      with t = (step - warmup) / (total - warmup), clipped to [0, 1]
      wsd:                  peak until total - decay_steps, then decay_shape (module
                            docstring) down to end at total
    The linear / polynomial / cosine decay spans warmup_steps..total_steps and starts
    from the peak (as in transformers' schedules and optax's
    warmup_cosine_decay_schedule; Google's BERT code instead decays over 0..total_steps
    and lets the warmup override the start). Fractions are resolved here; token lengths
    must have been (`resolve_lengths` with the run's phases).
    """
    cfg = resolve_lengths(cfg)
    peak, end = cfg.learning_rate, cfg.end_learning_rate
    warmup = cfg.warmup_steps
    if cfg.decay == "wsd":
        start, span = cfg.total_steps - cfg.decay_steps, max(cfg.decay_steps, 1)
    else:
        start, span = warmup, max(cfg.total_steps - warmup, 1)

    def schedule(step: Any) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        ramp = peak * step / max(warmup, 1)
        t = jnp.clip((step - start) / span, 0.0, 1.0)
        shape = cfg.decay_shape if cfg.decay == "wsd" else cfg.decay
        if cfg.decay == "constant" or (cfg.decay == "wsd" and cfg.decay_steps == 0):
            frac = jnp.ones_like(t)
        elif shape in ("linear", "polynomial"):
            frac = (1.0 - t) ** (cfg.power if shape == "polynomial" else 1.0)
        elif shape == "cosine":
            frac = 0.5 * (1.0 + jnp.cos(math.pi * t))
        else:  # 1-sqrt
            frac = 1.0 - jnp.sqrt(t)
        decayed = end + (peak - end) * frac
        return jnp.where(step < warmup, ramp, decayed).astype(jnp.float32)

    return _with_segments(schedule, cfg) if cfg.segments else schedule


def _with_segments(base: optax.Schedule, cfg: OptimConfig) -> optax.Schedule:
    """`base` with each plan phase's segment (first update s, end update e, rate r, shape)
    in its place on [s, e) (the last segment on from s), except inside the warmup:
      r > 0, no shape:  r
      a shape:          end + (r0 - end) * shape(t), t = (step - s) / (e - s), where
                        r0 = r, or base(s) when r = 0 (the schedule where the phase starts)
    """
    end, warmup = cfg.end_learning_rate, cfg.warmup_steps
    pieces = []
    for i, (s, e, rate, shape) in enumerate(cfg.segments):
        with jax.ensure_compile_time_eval():  # a number, even while a step is traced
            r0 = float(rate) or float(base(max(int(s), warmup)))
        pieces.append((int(s), int(e), r0, shape, i == len(cfg.segments) - 1))

    def schedule(step: Any) -> jax.Array:
        value = base(step)
        step = jnp.asarray(step, jnp.float32)
        for s, e, r0, shape, last in pieces:
            t = jnp.clip((step - s) / max(e - s, 1), 0.0, 1.0)
            if shape == "linear":
                frac = 1.0 - t
            elif shape == "cosine":
                frac = 0.5 * (1.0 + jnp.cos(math.pi * t))
            elif shape == "1-sqrt":
                frac = 1.0 - jnp.sqrt(t)
            else:
                frac = jnp.ones_like(t)
            inside = (step >= max(s, warmup)) & ((step < e) | last)
            value = jnp.where(inside, end + (r0 - end) * frac, value)
        return value.astype(jnp.float32)

    return schedule


Spans = Sequence[tuple[int, int]]  # per phase: (train steps, tokens per train step)


def steps_for_tokens(tokens: int, spans: Spans, from_end: bool = False) -> int:
    """The fewest train steps (micro-batches) from the start of the run (or, with
    `from_end`, back from its end) whose tokens reach `tokens`; -1 when the whole run
    holds fewer."""
    steps, left = 0, int(tokens)
    for count, per_step in reversed(spans) if from_end else spans:
        if left <= 0:
            break
        need = -(-left // per_step)  # ceil
        if need <= count:
            return steps + need
        steps, left = steps + count, left - count * per_step
    return steps if left <= 0 else -1


def resolve_lengths(cfg: OptimConfig, spans: Spans | None = None) -> OptimConfig:
    """`cfg` with warmup_steps and decay_steps in updates and no fraction or token length
    left (module docstring). `spans`: the run's phases as (train steps, tokens per train
    step), needed only for token lengths; train steps are grouped grad_accum_steps to
    an update. ConfigError naming the key for a length that does not fit the run."""
    lengths = {}
    for what in ("warmup", "decay"):
        fraction, tokens = getattr(cfg, f"{what}_fraction"), getattr(cfg, f"{what}_tokens")
        if tokens:
            if spans is None:
                raise ConfigError(
                    f"optim.{what}_tokens={tokens}: a length in tokens needs "
                    "the run's phases (batch size and sequence length)"
                )
            steps = steps_for_tokens(tokens, spans, from_end=what == "decay")
            if steps < 0:
                held = sum(c * p for c, p in spans)
                raise ConfigError(
                    f"optim.{what}_tokens={tokens}: the run holds only {held:,} tokens"
                )
            lengths[f"{what}_steps"] = -(-steps // cfg.grad_accum_steps)
        elif fraction:
            lengths[f"{what}_steps"] = int(round(fraction * cfg.total_steps))
    if not lengths:
        return cfg
    given = ", ".join(
        f"optim.{k}={getattr(cfg, k)}"
        for k in ("warmup_fraction", "warmup_tokens", "decay_fraction", "decay_tokens")
        if getattr(cfg, k)
    )
    try:
        return cfg.replace(
            **lengths, warmup_fraction=0.0, warmup_tokens=0, decay_fraction=0.0, decay_tokens=0
        )
    except ConfigError as e:
        raise ConfigError(f"{e} (from {given})") from None
