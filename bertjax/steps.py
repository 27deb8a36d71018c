"""Pure train and eval steps: no globals, no I/O; train.py jits them with shardings.

The train state is a plain dict, so Orbax, the sharding rules and the optimizer all
see one ordinary pytree:

  step               int32 []   train steps (micro-batches) run so far, skipped ones
                                included: the data pipeline's position
  params             the model's parameter tree, float32 master weights
  opt_state          the optax state of `optim.make_optimizer`
  skipped            int32 []   steps whose update was skipped (non-finite)
  consecutive_skips  int32 []   skipped steps in a row up to now; 0 after a good step

Randomness (dropout) is `fold_in(key(seed), step)`, never a saved RNG state, so a
resumed run repeats an uninterrupted one bit for bit.

A *loss function* `(params, batch, rng, aux_params) -> (loss, metrics)` is what varies
between tasks (bertjax/tasks): each task builds its own. `aux_params` is a pytree
the step passes through untouched and never differentiates: a distillation teacher's
parameters, None otherwise. It is an argument of the jitted step (not a captured
constant), so it lives sharded on the mesh and stays out of the train state and its
checkpoints. Metrics are `metrics.Mean`s (a value and its denominator).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bertjax.models import init_params
from bertjax.optim import OptimConfig, make_schedule, update_count

Array = jax.Array
State = dict[str, Any]
Batch = Mapping[str, Array]
LossFn = Callable[[Any, Batch, Array, Any], tuple[Array, dict[str, Array]]]


def init_state(
    model: nn.Module, tx: optax.GradientTransformation, seed: int, seq_len: int = 8
) -> Callable[[], State]:
    """A zero-argument function building the initial state, for `sharding.create_sharded`.

    Parameters come back boxed with their logical axes (and so do the optimizer moments
    built from them), which is what gives every leaf its sharding. The values do not
    depend on `seq_len` (a dummy input length) or on the mesh.
    """

    def init() -> State:
        params = init_params(model, seed, seq_len)
        zero = jnp.zeros((), jnp.int32)
        return {
            "step": zero,
            "params": params,
            "opt_state": tx.init(params),
            "skipped": zero,
            "consecutive_skips": zero,
        }

    return init


def apply(
    model: nn.Module, params: Any, batch: Batch, train: bool, rng: Array | None, **kwargs: Any
) -> Any:
    """model.apply on the batch's model inputs, with dropout from `rng` when `train`."""
    return model.apply(
        {"params": params},
        batch["input_ids"],
        batch.get("token_type_ids"),
        batch["attention_mask"],
        deterministic=not train,
        rngs={"dropout": rng} if train else None,
        **kwargs,
    )


def all_finite(tree: Any) -> Array:
    """True when every floating-point leaf of `tree` is finite (a bool scalar)."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def train_step(
    state: State,
    batch: Batch,
    aux_params: Any = None,
    *,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    optim: OptimConfig,
    seed: int,
) -> tuple[State, dict[str, Array]]:
    """One micro-batch: gradients, then the optimizer update unless anything is non-finite.

    Args:
      state: the train state (module docstring).
      batch: global arrays from the pipeline ([B, L] ids, [B, P] masked positions, ...).
      aux_params: passed to loss_fn as is, never differentiated (a teacher's params, or
        None).
      loss_fn: `(params, batch, rng, aux_params) -> (loss, metrics)`.
      tx: the optimizer of `optim.make_optimizer(optim, ...)`.
      optim: its config (for the learning-rate figure and accumulation).
      seed: the run's seed; dropout uses fold_in(key(seed), step).

    Returns:
      (new state, metrics): the task's metrics (`Mean`s) plus grad_norm (before clipping),
      learning_rate (of the update this step contributes to), skipped (1.0 if this step's
      update was skipped), skipped_total and consecutive_skips. A step is skipped when
      the loss or the gradient norm is not finite: params and optimizer state are left
      exactly as they were (so the schedule does not advance), the step still counts.
    """
    step = state["step"]
    rng = jax.random.fold_in(jax.random.key(seed), step)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], batch, rng, aux_params
    )
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def update(operands: tuple[Any, Any, Any]) -> tuple[Any, Any]:
        params, opt_state, grads = operands
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def keep(operands: tuple[Any, Any, Any]) -> tuple[Any, Any]:
        return operands[0], operands[1]

    params, opt_state = jax.lax.cond(
        finite, update, keep, (state["params"], state["opt_state"], grads)
    )
    skipped = state["skipped"] + jnp.where(finite, 0, 1).astype(jnp.int32)
    consecutive = jnp.where(finite, 0, state["consecutive_skips"] + 1).astype(jnp.int32)
    # Updates applied so far: skipped micro-batches never reached the optimizer.
    updates_done = update_count(optim, step - state["skipped"])
    metrics = {
        **metrics,
        "grad_norm": grad_norm,
        "learning_rate": make_schedule(optim)(updates_done),
        "skipped": 1.0 - finite.astype(jnp.float32),
        "skipped_total": skipped,
        "consecutive_skips": consecutive,
    }
    new_state = {
        "step": step + 1,
        "params": params,
        "opt_state": opt_state,
        "skipped": skipped,
        "consecutive_skips": consecutive,
    }
    return new_state, metrics


def eval_step(
    params: Any, batch: Batch, aux_params: Any = None, *, loss_fn: LossFn
) -> dict[str, Any]:
    """Metrics of one batch without dropout; `loss_fn` is built with train=False.

    Every metric carries its count (`metrics.Mean`), so batches combine exactly
    (`metrics.combine`). ELECTRA's samples use a fixed key, so an evaluation is
    repeatable.
    """
    _, metrics = loss_fn(params, batch, jax.random.key(0), aux_params)
    return metrics
