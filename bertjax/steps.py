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

A *loss function* `(params, batch, rng, frozen) -> (loss, metrics)` is what varies
between objectives: `pretraining_loss_fn` covers MLM / MLM+NSP / MLM+SOP,
`electra_loss_fn` the generator and discriminator, `distillation_loss_fn` a student
against a teacher. `frozen` is a pytree the step passes through untouched and never
differentiates: the teacher's parameters for distillation, None otherwise. It is an
argument of the jitted step (not a captured constant), so it lives sharded on the mesh
and stays out of the train state and its checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bertjax import objectives
from bertjax.models import init_params
from bertjax.optim import OptimConfig, make_schedule

Array = jax.Array
State = dict[str, Any]
Batch = Mapping[str, Array]
LossFn = Callable[[Any, Batch, Array, Any], tuple[Array, dict[str, Array]]]

# Pipeline keys the model reads; the objectives read the rest.
MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask", "masked_lm_positions")


def init_state(model: nn.Module, tx: optax.GradientTransformation, seed: int,
               seq_len: int = 8) -> Callable[[], State]:
    """A zero-argument function building the initial state, for `sharding.create_sharded`.

    Parameters come back boxed with their logical axes (and so do the optimizer moments
    built from them), which is what gives every leaf its sharding. The values do not
    depend on `seq_len` (a dummy input length) or on the mesh.
    """

    def init() -> State:
        params = init_params(model, seed, seq_len)
        zero = jnp.zeros((), jnp.int32)
        return {"step": zero, "params": params, "opt_state": tx.init(params),
                "skipped": zero, "consecutive_skips": zero}

    return init


def _apply(model: nn.Module, params: Any, batch: Batch, train: bool, rng: Array | None,
           **kwargs: Any) -> Any:
    """model.apply on the batch's model inputs, with dropout from `rng` when `train`."""
    return model.apply({"params": params}, batch["input_ids"], batch.get("token_type_ids"),
                       batch["attention_mask"], deterministic=not train,
                       rngs={"dropout": rng} if train else None, **kwargs)


def pretraining_loss_fn(model: nn.Module, objective: str, train: bool = True) -> LossFn:
    """The loss of a family's pretraining objective (`objectives.OBJECTIVES`).

    The model runs with the sparse MLM head on `masked_lm_positions` ([B, P]), with
    dropout when `train`. `frozen` is unused.
    """
    objectives.resolve_objective(objective)  # an unknown name fails before tracing

    def loss_fn(params: Any, batch: Batch, rng: Array,
                frozen: Any = None) -> tuple[Array, dict[str, Array]]:
        del frozen
        logits, _ = _apply(model, params, batch, train, rng,
                           masked_positions=batch["masked_lm_positions"])
        return objectives.pretraining_loss(objective, logits, batch)

    return loss_fn


def electra_loss_fn(model: nn.Module, train: bool = True, *, gen_weight: float = 1.0,
                    disc_weight: float = 50.0, temperature: float = 1.0) -> LossFn:
    """ELECTRA (Clark et al.): generator MLM on the masked input, then the discriminator
    on that input with the generator's samples written at the masked positions.

    `rng` gives the generator's and the discriminator's dropout and the Gumbel noise of
    the samples (softmax(logits / temperature)), so the whole step is a function of the
    step number. Gradients reach the shared embeddings from both towers; none flows
    through the discrete samples.
    """

    def loss_fn(params: Any, batch: Batch, rng: Array,
                frozen: Any = None) -> tuple[Array, dict[str, Array]]:
        del frozen
        gen_rng, disc_rng, sample_rng = jax.random.split(rng, 3)
        positions = batch["masked_lm_positions"]
        gen_logits, _ = _apply(model, params, batch, train, gen_rng,
                               masked_positions=positions, method="generate")  # [B, P, V]
        sampled = objectives.sample_tokens(gen_logits, sample_rng, temperature)  # [B, P]
        corrupted, labels = objectives.replace_tokens(
            batch["input_ids"], positions, batch["masked_lm_weights"],
            batch["masked_lm_ids"], sampled)  # [B, L] each
        disc_logits, _ = _apply(model, params, {**batch, "input_ids": corrupted}, train,
                                disc_rng, method="discriminate")  # [B, L]
        return objectives.electra_objective(
            {"mlm": gen_logits, "rtd": disc_logits}, batch, rtd_labels=labels,
            gen_weight=gen_weight, disc_weight=disc_weight)

    return loss_fn


def distillation_loss_fn(student: nn.Module, teacher: nn.Module, train: bool = True, *,
                         temperature: float = 2.0, alpha_ce: float = 5.0,
                         alpha_mlm: float = 2.0, alpha_cos: float = 1.0) -> LossFn:
    """A student against a frozen teacher (DistilBERT, Sanh et al.); `frozen` holds the
    teacher's parameters.

    The teacher runs without dropout, in its own compute dtype, on the same batch and
    masked positions; its outputs pass through stop_gradient here, so no gradient
    reaches it. Loss: `objectives.distillation_objective`.
    """

    def loss_fn(params: Any, batch: Batch, rng: Array,
                frozen: Any = None) -> tuple[Array, dict[str, Array]]:
        if frozen is None:
            raise ValueError("distillation needs the teacher's parameters (frozen)")
        positions = batch["masked_lm_positions"]
        logits, out = _apply(student, params, batch, train, rng, masked_positions=positions)
        t_logits, t_out = _apply(teacher, frozen, batch, False, None,
                                 masked_positions=positions)
        t_logits, t_hidden = jax.lax.stop_gradient((t_logits["mlm"], t_out["sequence"]))
        return objectives.distillation_objective(
            logits, batch, teacher_logits=t_logits, student_hidden=out["sequence"],
            teacher_hidden=t_hidden, temperature=temperature, alpha_ce=alpha_ce,
            alpha_mlm=alpha_mlm, alpha_cos=alpha_cos)

    return loss_fn


def all_finite(tree: Any) -> Array:
    """True when every floating-point leaf of `tree` is finite (a bool scalar)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def train_step(state: State, batch: Batch, frozen: Any = None, *, loss_fn: LossFn,
               tx: optax.GradientTransformation, optim: OptimConfig,
               seed: int) -> tuple[State, dict[str, Array]]:
    """One micro-batch: gradients, then the optimizer update unless anything is non-finite.

    Args:
      state: the train state (module docstring).
      batch: global arrays from the pipeline ([B, L] ids, [B, P] masked positions, ...).
      frozen: passed to loss_fn as is, never differentiated (a teacher's params, or None).
      loss_fn: `(params, batch, rng, frozen) -> (loss, metrics)`.
      tx: the optimizer of `optim.make_optimizer(optim, ...)`.
      optim: its config (for the learning-rate figure and accumulation).
      seed: the run's seed; dropout uses fold_in(key(seed), step).

    Returns:
      (new state, metrics): the objective's metrics plus grad_norm (before clipping),
      learning_rate (of the update this step contributes to), skipped (1.0 if this step's
      update was skipped), skipped_total and consecutive_skips. A step is skipped when
      the loss or the gradient norm is not finite: params and optimizer state are left
      exactly as they were (so the schedule does not advance), the step still counts.
    """
    step = state["step"]
    rng = jax.random.fold_in(jax.random.key(seed), step)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], batch, rng, frozen)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def update(operands: tuple[Any, Any, Any]) -> tuple[Any, Any]:
        params, opt_state, grads = operands
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def keep(operands: tuple[Any, Any, Any]) -> tuple[Any, Any]:
        return operands[0], operands[1]

    params, opt_state = jax.lax.cond(finite, update, keep,
                                     (state["params"], state["opt_state"], grads))
    skipped = state["skipped"] + jnp.where(finite, 0, 1).astype(jnp.int32)
    consecutive = jnp.where(finite, 0, state["consecutive_skips"] + 1).astype(jnp.int32)
    # Updates applied so far: skipped micro-batches never reached the optimizer.
    updates_done = (step - state["skipped"]) // optim.grad_accum_steps
    metrics = {
        **metrics,
        "grad_norm": grad_norm,
        "learning_rate": make_schedule(optim)(updates_done),
        "skipped": 1.0 - finite.astype(jnp.float32),
        "skipped_total": skipped,
        "consecutive_skips": consecutive,
    }
    new_state = {"step": step + 1, "params": params, "opt_state": opt_state,
                 "skipped": skipped, "consecutive_skips": consecutive}
    return new_state, metrics


def eval_step(params: Any, batch: Batch, frozen: Any = None, *,
              loss_fn: LossFn) -> dict[str, Array]:
    """Metrics of one batch without dropout; `loss_fn` is built with train=False.

    Means come with their `*_count`s, so batches combine exactly (`combine_metrics`).
    ELECTRA's samples use a fixed key, so an evaluation is repeatable.
    """
    _, metrics = loss_fn(params, batch, jax.random.key(0), frozen)
    return metrics


def combine_metrics(batches: list[Mapping[str, Any]]) -> dict[str, float]:
    """Count-weighted means over batches of metrics from `eval_step`.

    A metric `x_y` is weighted by `x_count` when present (mlm_loss by mlm_count,
    nsp_accuracy by nsp_count); "loss" by the first count; counts are summed.
    """
    if not batches:
        return {}
    out: dict[str, float] = {}
    counts = [k for k in batches[0] if k.endswith("_count")]
    for key in batches[0]:
        values = [float(b[key]) for b in batches]
        if key.endswith("_count"):
            out[key] = sum(values)
            continue
        prefix = key.split("_")[0] + "_count"
        weight_key = prefix if prefix in counts else (counts[0] if counts else None)
        if weight_key is None:
            out[key] = sum(values) / len(values)
            continue
        weights = [float(b[weight_key]) for b in batches]
        total = sum(weights)
        weighted = sum(v * w for v, w in zip(values, weights, strict=True))
        out[key] = weighted / total if total else 0.0
    return out
