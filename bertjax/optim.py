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
      scale_by_learning_rate(make_schedule(cfg))

With weight_decay = 0 or name = "adamw" this is exactly optax.adamw; with "lamb" and
layer_adaptation = "all", exactly optax.lamb (plus clipping and accumulation).

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
                          to total_steps
  power=1.0               exponent of the polynomial decay
  end_learning_rate=0.0   learning rate at total_steps (and after)
  weight_decay=0.01       decoupled decay on kernels and embeddings
  b1=0.9 b2=0.999 eps=1e-6
  clip_norm=1.0           global-norm clipping of the (accumulated) gradient; 0 = off
  grad_accum_steps=1      micro-batches per update (optax.MultiSteps)
  layer_adaptation="all"  LAMB trust ratio on all leaves (optax.lamb) or only on the
                          "decayed" ones (TF-Addons / ALBERT LAMB)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from bertjax.models.config import ConfigError, ModelConfig

NAMES = ("adamw", "lamb")
DECAYS = ("linear", "polynomial", "cosine", "constant")
LAYER_ADAPTATION = ("all", "decayed")

# LayerNorm module names in bertjax.models.layers: their scale and bias are not decayed.
LAYER_NORM_NAMES = frozenset({"layer_norm", "attention_norm", "output_norm"})


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimizer, schedule, clipping and accumulation; defaults follow BERT's recipe."""

    name: str = "adamw"  # adamw | lamb
    learning_rate: float = 1e-4  # peak, reached at the end of warmup
    warmup_steps: int = 10_000  # linear ramp from 0 over this many updates
    total_steps: int = 1_000_000  # updates in the whole run (all phases)
    decay: str = "linear"  # linear | polynomial | cosine | constant, after warmup
    power: float = 1.0  # polynomial decay exponent (linear is power 1)
    end_learning_rate: float = 0.0  # value at total_steps and after
    weight_decay: float = 0.01  # decoupled; only leaves where decay_mask() is True
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6  # BERT's value (optax's default is 1e-8)
    clip_norm: float = 1.0  # global-norm clipping; 0 = off
    grad_accum_steps: int = 1  # micro-batches per update; > 1 wraps in optax.MultiSteps
    layer_adaptation: str = "all"  # LAMB trust ratio on "all" leaves or the "decayed" ones

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OptimConfig:
        """Builds a validated config; unknown keys are an error naming the key."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown optim config key(s): {', '.join(unknown)}")
        cfg = cls(**dict(d))
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **kw: Any) -> OptimConfig:
        cfg = dataclasses.replace(self, **kw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def need(ok: bool, key: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"optim.{key}={getattr(self, key)!r}: {why}")

        need(self.name in NAMES, "name", f"expected one of {', '.join(NAMES)}")
        need(self.decay in DECAYS, "decay", f"expected one of {', '.join(DECAYS)}")
        need(self.layer_adaptation in LAYER_ADAPTATION, "layer_adaptation",
             f"expected one of {', '.join(LAYER_ADAPTATION)}")
        need(self.learning_rate > 0, "learning_rate", "must be positive")
        need(self.total_steps > 0, "total_steps", "must be positive")
        need(0 <= self.warmup_steps <= self.total_steps, "warmup_steps",
             f"must be in [0, total_steps={self.total_steps}]")
        need(self.power > 0, "power", "must be positive")
        need(0 <= self.end_learning_rate <= self.learning_rate, "end_learning_rate",
             f"must be in [0, learning_rate={self.learning_rate}]")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(0 <= self.b1 < 1, "b1", "must be in [0, 1)")
        need(0 <= self.b2 < 1, "b2", "must be in [0, 1)")
        need(self.eps > 0, "eps", "must be positive")
        need(self.clip_norm >= 0, "clip_norm", "must be >= 0 (0 turns clipping off)")
        need(isinstance(self.grad_accum_steps, int) and self.grad_accum_steps >= 1,
             "grad_accum_steps", "must be an integer >= 1")


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
    """Learning rate as a function of the update count (a scalar, traced or not).

    step < warmup:  learning_rate * step / warmup_steps         (0 at step 0)
    after warmup:   t = (step - warmup) / (total - warmup), clipped to [0, 1]
      linear / polynomial:  end + (peak - end) * (1 - t) ** power
      cosine:               end + (peak - end) * (1 + cos(pi t)) / 2
      constant:             peak
    The decay spans warmup_steps..total_steps and starts from the peak (as in
    transformers' schedules and optax's warmup_cosine_decay_schedule; Google's BERT
    code instead decays over 0..total_steps and lets the warmup override the start).
    """
    peak, end = cfg.learning_rate, cfg.end_learning_rate
    warmup = cfg.warmup_steps
    span = max(cfg.total_steps - warmup, 1)

    def schedule(step: Any) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        ramp = peak * step / max(warmup, 1)
        t = jnp.clip((step - warmup) / span, 0.0, 1.0)
        if cfg.decay in ("linear", "polynomial"):
            frac = (1.0 - t) ** (1.0 if cfg.decay == "linear" else cfg.power)
        elif cfg.decay == "cosine":
            frac = 0.5 * (1.0 + jnp.cos(math.pi * t))
        else:
            frac = jnp.ones_like(t)
        decayed = end + (peak - end) * frac
        return jnp.where(step < warmup, ramp, decayed).astype(jnp.float32)

    return schedule


# --- parameter selection ---------------------------------------------------------------

def path_str(path: tuple[Any, ...]) -> str:
    """A jax key path -> "embeddings/position/embedding".

    Only dict keys are kept, so boxed (nn.Partitioned) and plain trees give the same
    names.
    """
    return "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def _is_decayed(path: str) -> bool:
    parts = path.split("/")
    if parts[-1] == "bias":
        return False
    return not (len(parts) > 1 and parts[-2] in LAYER_NORM_NAMES)


def decay_mask(params: Any) -> Any:
    """A pytree of bools like `params`: True where weight decay applies.

    Excluded: every leaf named "bias" (dense biases, the MLM output bias) and the scale
    and bias of LayerNorm modules (LAYER_NORM_NAMES). Kernels and embedding tables are
    decayed. Works on arrays, ShapeDtypeStructs, and boxed or unboxed trees, in loop
    and scan layouts.
    """
    return jax.tree_util.tree_map_with_path(lambda p, _: _is_decayed(path_str(p)), params)


Frozen = Callable[[str], bool] | Iterable[str] | None


def frozen_paths(model_cfg: ModelConfig) -> tuple[str, ...]:
    """Parameters that training must not change: DistilBERT's sinusoidal position table."""
    return ("embeddings/position/embedding",) if model_cfg.sinusoidal_positions else ()


def _frozen_predicate(frozen: Frozen) -> Callable[[str], bool] | None:
    if frozen is None:
        return None
    if callable(frozen):
        return frozen
    names = frozenset(frozen)
    if not names:
        return None
    return lambda path: path in names


def _check_params(params: Any, frozen: Frozen) -> None:
    leaves = jax.tree_util.tree_leaves_with_path(params)
    for path, leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.floating) and dtype != jnp.float32:
            raise ConfigError(f"parameter {path_str(path)} is {dtype}: the optimizer keeps "
                              "float32 master weights (set model.param_dtype=float32)")
    if frozen is not None and not callable(frozen):
        present = {path_str(p) for p, _ in leaves}
        missing = sorted(set(frozen) - present)
        if missing:
            raise ConfigError(f"frozen parameter path(s) not in the model: {', '.join(missing)}")


# --- the optimizer ---------------------------------------------------------------------

def _to_float32() -> optax.GradientTransformation:
    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params
        return jax.tree_util.tree_map(
            lambda g: g.astype(jnp.float32) if jnp.issubdtype(g.dtype, jnp.floating) else g,
            updates), state

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
    parts.append(optax.scale_by_learning_rate(make_schedule(cfg)))
    return optax.chain(*parts)


def make_optimizer(cfg: OptimConfig, params_or_shapes: Any = None,
                   frozen: Frozen = None) -> optax.GradientTransformation:
    """The optax transformation described in the module docstring.

    Args:
      cfg: a validated OptimConfig.
      params_or_shapes: the parameter tree (arrays or `jax.eval_shape` structs), used
        only to check it before any work: float32 leaves, frozen paths that exist.
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
    tx = _base(cfg)
    is_frozen = _frozen_predicate(frozen)
    if is_frozen is not None:
        def labels(params: Any) -> Any:
            return jax.tree_util.tree_map_with_path(
                lambda p, _: "frozen" if is_frozen(path_str(p)) else "train", params)

        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
    if cfg.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum_steps).gradient_transformation()
    return tx


def update_count(cfg: OptimConfig, micro_step: Any) -> Any:
    """The update count (the schedule's argument) at train step `micro_step`."""
    return micro_step // cfg.grad_accum_steps
