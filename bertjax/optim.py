"""Optimizers as optax chains: AdamW / LAMB, warmup + decay schedules, decay mask,
global-norm clipping, gradient accumulation and frozen parameters.

`make_optimizer(OptimConfig(...), params)` builds, outermost first:

  MultiSteps(k)                      only when grad_accum_steps = k > 1
    multi_transform(frozen -> 0)     only when some parameters are frozen
      cast gradients to float32
      clip_by_global_norm            only when clip_norm > 0; over trainable leaves
      scale_by_adam(b1, b2, eps)
      add_decayed_weights(wd, mask)  decoupled decay, decay_mask(): no biases, no LayerNorm
      scale_by_trust_ratio           LAMB only (see `layer_adaptation`)
      scale_by_layer_decay           only when layer_decay < 1 (see below)
      scale_by_learning_rate(make_schedule(cfg))

With name = "adamw" and layer_decay = 1 this is exactly optax.adamw; with "lamb",
layer_adaptation = "all" and layer_decay = 1, exactly optax.lamb (plus clipping and
accumulation).

Layer-wise learning-rate decay (ELECTRA's fine-tuning recipe, layer_decay = d < 1): a
parameter's learning rate is multiplied by d ** (top - depth). Depths count from the
input: the embeddings (and the E -> H projection encoder/embeddings_project) are 0,
encoder layer i (0-based) is i + 1, and every head is `top`, the pooler included (it
only feeds the heads; so a family with a pooler gets the same per-layer rates as one
without); a final norm (model.final_norm, encoder/final_norm) has the top layer's
depth L, the output it normalises. With L layers:

  layer_decay_depth  top     heads  top layer  layer i         embeddings
  "google"           L + 2   1      d^2        d^(L + 1 - i)   d^(L + 2)
  "intended"         L + 1   1      d          d^(L - i)       d^(L + 1)

"google" is what google-research/electra's model/optimization.py computes, and what
the ELECTRA paper's results were produced with: `_get_layer_lrs(learning_rate,
layer_decay, n_layers)` maps variable-name substrings to depths ("/embeddings/": 0,
"/embeddings_project/": 0, "encoder/layer_{i}/": i + 1, "task_specific/": n_layers +
2) and gives each the rate learning_rate * layer_decay ** (n_layers + 2 - depth);
nothing has depth n_layers + 1, so the top layer gets d^2. The author explains the gap
(google-research/electra issue #51): it is where a pooler sat before ELECTRA dropped
next-sentence prediction, and it was kept so published results stay reproducible.
"intended" closes it (the top layer gets d). In the same file
`AdamWeightDecayOptimizer.apply_gradients` gives each variable the rate of the
substring its name contains and raises ValueError("No learning rate specified for
variable") for one that matches none, and `_apply_gradients` multiplies (Adam update
+ weight_decay_rate * param) by that rate, so the decoupled weight decay is scaled
too; here the scaling likewise sits between add_decayed_weights (and LAMB's trust
ratio, which would undo it if it came first) and the learning rate. Parameters with
no depth are refused the same way: ALBERT's shared layers (`encoder/group_{g}`, one
set of weights applied at every depth; Lan et al. fine-tune without layer-wise decay)
and ELECTRA's generator tower (pretraining only). In the scan layout
(`encoder/layers` leaves with a leading [L] axis) each slice along that axis gets its
layer's rate. See `layer_lr_multipliers`.

Steps. The learning rate is a function of one counter: the number of optimizer
updates applied so far, kept in the optimizer state. With grad_accum_steps = k a
train step that sees micro-batch s applies update s // k, so `warmup_steps` and
`total_steps` count updates (effective batches), not micro-batches. A step the
trainer skips (non-finite gradients, state left unchanged) does not advance it.

Two-phase training (e.g. 90% of updates at length 128, then 512) is one schedule
over `total_steps`: phase 2 continues from phase 1's optimizer state with the same
OptimConfig, so the learning rate goes on from where phase 1 left it and decays to
`end_learning_rate` at the end of phase 2; nothing in the state depends on the
sequence length. Phase 2 may use a different `grad_accum_steps` as long as both
phases use accumulation (k > 1) or both do not, since MultiSteps adds its
accumulator to the state, and phase 1 ends on an update boundary.

dtypes: parameters and every optimizer-state leaf are float32 whatever the compute
dtype; gradients are cast to float32 first, so bfloat16 gradients are accumulated,
clipped and averaged in float32. `make_optimizer` refuses non-float32 parameters.

Config keys the trainer is expected to read (`config.optim`, defaults as below,
BERT's published recipe; `OptimConfig.from_dict(config.optim)` validates them):

  name="adamw"            adamw | lamb
  learning_rate=1e-4      peak learning rate, reached at the end of warmup
  warmup_steps=10_000     linear ramp from 0 (updates)
  total_steps=1_000_000   updates in the whole run, all phases
  decay="linear"          linear | polynomial | cosine | constant, from warmup_steps
                          to total_steps | wsd: warmup, stable, decay over the last
                          decay_steps (bertjax/schedules.py)
  decay_shape="linear"    wsd: linear | cosine | 1-sqrt
  decay_steps=0           wsd: updates of the final decay; 0: none (a stable run)
  warmup_fraction=0.0 warmup_tokens=0 decay_fraction=0.0 decay_tokens=0
                          > 0: the warmup / decay as a share of total_steps or in
                          tokens instead (bertjax/schedules.py `resolve_lengths`)
  power=1.0               exponent of the polynomial decay
  end_learning_rate=0.0   learning rate at total_steps (and after)
  weight_decay=0.01       decoupled decay on kernels and embeddings
  b1=0.9 b2=0.999 eps=1e-6
  clip_norm=1.0           global-norm clipping of the (accumulated) gradient; 0 = off
  grad_accum_steps=1      micro-batches per update (optax.MultiSteps)
  layer_adaptation="all"  LAMB trust ratio on all leaves (optax.lamb) or only on the
                          "decayed" ones (TF-Addons / ALBERT LAMB)
  layer_decay=1.0         layer-wise learning-rate decay per layer below the heads, in
                          (0, 1]; 1 = off (ELECTRA fine-tuning: 0.8, large 0.9)
  layer_decay_depth="google"  google | intended: how depths are counted (above)
  ema_decay=0.0           > 0: an EMA of the parameters in the optimizer state (bertjax/ema.py)

The parameters' names, the decay mask, the frozen parameters and the layer-wise
multipliers are bertjax/optim_params.py's (its public names re-exported here).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from bertjax.ema import params_ema
from bertjax.models.config import ConfigRecord
from bertjax.optim_params import (
    Frozen,
    _check_params,
    _frozen_predicate,
    decay_mask,
    layer_lr_multipliers,
    path_str,
    scale_by_layer_decay,
)
from bertjax.schedules import SHAPES, make_schedule

NAMES = ("adamw", "lamb")
DECAYS = ("linear", "polynomial", "cosine", "constant", "wsd")
LAYER_ADAPTATION = ("all", "decayed")
LAYER_DECAY_DEPTHS = ("google", "intended")


@dataclasses.dataclass(frozen=True)
class OptimConfig(ConfigRecord):
    """Optimizer, schedule, clipping and accumulation; defaults follow BERT's recipe."""

    SECTION = "optim"

    name: str = "adamw"  # adamw | lamb
    learning_rate: float = 1e-4  # peak, reached at the end of warmup
    warmup_steps: int = 10_000  # linear ramp from 0 over this many updates
    total_steps: int = 1_000_000  # updates in the whole run (all phases)
    decay: str = "linear"  # linear | polynomial | cosine | constant | wsd, after warmup
    decay_shape: str = "linear"  # wsd: linear | cosine | 1-sqrt
    decay_steps: int = 0  # wsd: updates of the decay that ends at total_steps; 0: none
    warmup_fraction: float = 0.0  # > 0: warmup_steps = this share of total_steps
    warmup_tokens: int = 0  # > 0: warmup_steps = the updates that hold this many tokens
    decay_fraction: float = 0.0  # wsd, > 0: decay_steps = this share of total_steps
    decay_tokens: int = 0  # wsd, > 0: decay_steps = the last updates holding these tokens
    power: float = 1.0  # polynomial decay exponent (linear is power 1)
    end_learning_rate: float = 0.0  # value at total_steps and after
    weight_decay: float = 0.01  # decoupled; only leaves where decay_mask() is True
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6  # BERT's value (optax's default is 1e-8)
    clip_norm: float = 1.0  # global-norm clipping; 0 = off
    grad_accum_steps: int = 1  # micro-batches per update; > 1 wraps in optax.MultiSteps
    layer_adaptation: str = "all"  # LAMB trust ratio on "all" leaves or the "decayed" ones
    layer_decay: float = 1.0  # learning rate x decay^(depth below the heads); 1 = off
    layer_decay_depth: str = "google"  # google (ELECTRA's code: top layer d^2) | intended (d)
    ema_decay: float = 0.0  # > 0: keep an EMA of the parameters (bertjax/ema.py); 0: off
    # Plan phases' learning-rate segments, (first update, end update, rate, decay shape):
    # set from config.phases (bertjax/tasks/plan.py), not by hand; () for none.
    segments: tuple = ()

    def validate(self) -> None:
        need = self.need
        need(self.name in NAMES, "name", f"expected one of {', '.join(NAMES)}")
        need(self.decay in DECAYS, "decay", f"expected one of {', '.join(DECAYS)}")
        need(
            self.layer_adaptation in LAYER_ADAPTATION,
            "layer_adaptation",
            f"expected one of {', '.join(LAYER_ADAPTATION)}",
        )
        need(self.learning_rate > 0, "learning_rate", "must be positive")
        need(self.total_steps > 0, "total_steps", "must be positive")
        need(
            0 <= self.warmup_steps <= self.total_steps
            or bool(self.warmup_fraction or self.warmup_tokens),
            "warmup_steps",
            f"must be in [0, total_steps={self.total_steps}]",
        )
        self._validate_wsd()
        need(self.power > 0, "power", "must be positive")
        need(
            0 <= self.end_learning_rate <= self.learning_rate,
            "end_learning_rate",
            f"must be in [0, learning_rate={self.learning_rate}]",
        )
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(0 <= self.b1 < 1, "b1", "must be in [0, 1)")
        need(0 <= self.b2 < 1, "b2", "must be in [0, 1)")
        need(self.eps > 0, "eps", "must be positive")
        need(self.clip_norm >= 0, "clip_norm", "must be >= 0 (0 turns clipping off)")
        need(
            isinstance(self.grad_accum_steps, int) and self.grad_accum_steps >= 1,
            "grad_accum_steps",
            "must be an integer >= 1",
        )
        need(
            0 < self.layer_decay <= 1,
            "layer_decay",
            "must be in (0, 1]; 1 turns layer-wise decay off",
        )
        need(
            self.layer_decay_depth in LAYER_DECAY_DEPTHS,
            "layer_decay_depth",
            f"expected one of {', '.join(LAYER_DECAY_DEPTHS)}",
        )
        need(0 <= self.ema_decay < 1, "ema_decay", "must be in [0, 1)")

    def _validate_wsd(self) -> None:
        need = self.need
        need(self.decay_shape in SHAPES, "decay_shape", f"expected one of {', '.join(SHAPES)}")
        for what in ("warmup", "decay"):
            need(
                0 <= getattr(self, f"{what}_fraction") <= 1, f"{what}_fraction", "must be in [0, 1]"
            )
            need(getattr(self, f"{what}_tokens") >= 0, f"{what}_tokens", "must be >= 0")
            need(
                not (getattr(self, f"{what}_fraction") and getattr(self, f"{what}_tokens")),
                f"{what}_fraction",
                f"give {what}_fraction or {what}_tokens, not both",
            )
        need(self.decay_steps >= 0, "decay_steps", "must be >= 0")
        for key in ("decay_steps", "decay_fraction", "decay_tokens"):
            need(
                self.decay == "wsd" or not getattr(self, key),
                key,
                f"only read with optim.decay=wsd (optim.decay={self.decay!r})",
            )
        resolved = not (
            self.warmup_fraction or self.warmup_tokens or self.decay_fraction or self.decay_tokens
        )  # else checked once resolved (schedules.py)
        need(
            not resolved or self.warmup_steps + self.decay_steps <= self.total_steps,
            "decay_steps",
            f"the warmup ({self.warmup_steps}) and the decay must fit in "
            f"total_steps={self.total_steps}",
        )


# --- the optimizer ---------------------------------------------------------------------


def _to_float32() -> optax.GradientTransformation:
    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params
        return jax.tree_util.tree_map(
            lambda g: g.astype(jnp.float32) if jnp.issubdtype(g.dtype, jnp.floating) else g, updates
        ), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _base(cfg: OptimConfig) -> optax.GradientTransformation:
    parts = [_to_float32()]
    if cfg.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    parts.append(optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
    if cfg.weight_decay > 0:
        parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask))
    if cfg.name == "lamb":
        trust = optax.scale_by_trust_ratio()
        parts.append(trust if cfg.layer_adaptation == "all" else optax.masked(trust, decay_mask))
    if cfg.layer_decay != 1:
        parts.append(scale_by_layer_decay(cfg))
    parts.append(optax.scale_by_learning_rate(make_schedule(cfg)))
    return optax.chain(*parts)


def make_optimizer(
    cfg: OptimConfig, params_or_shapes: Any = None, frozen: Frozen = None
) -> optax.GradientTransformation:
    """The optax transformation described in the module docstring.

    Args:
      cfg: a validated OptimConfig.
      params_or_shapes: the parameter tree (arrays or `jax.eval_shape` structs), used
        only to check it before any work: float32 leaves, frozen paths that exist, and
        a depth for every parameter when layer_decay < 1.
        The masks themselves are computed from whatever tree `init` / `update` see, so
        boxed and unboxed trees both work.
      frozen: parameters whose updates are always zero and that hold no optimizer
        state: a predicate on "a/b/c" paths, or a collection of such paths (e.g.
        `frozen_paths(model_cfg)`). Their gradients do not enter the clipping norm.

    Returns:
      A GradientTransformation; `update(grads, state, params)` needs params.
    """
    cfg.validate()
    if params_or_shapes is not None:
        _check_params(params_or_shapes, frozen)
        layer_lr_multipliers(params_or_shapes, cfg)
    tx = _base(cfg)
    is_frozen = _frozen_predicate(frozen)
    if is_frozen is not None:

        def labels(params: Any) -> Any:
            return jax.tree_util.tree_map_with_path(
                lambda p, _: "frozen" if is_frozen(path_str(p)) else "train", params
            )

        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
    if cfg.ema_decay:  # last: it sees the parameters each update leads to
        tx = optax.chain(tx, params_ema(cfg.ema_decay))
    if cfg.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum_steps).gradient_transformation()
    return tx


def update_count(cfg: OptimConfig, micro_step: Any) -> Any:
    """The update count (the schedule's argument) at train step `micro_step`."""
    return micro_step // cfg.grad_accum_steps
