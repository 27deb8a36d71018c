"""An exponential moving average (EMA) of the parameters during training
(`optim.ema_decay` > 0), kept in the optimizer state: it is checkpointed with the rest of
the train state, so a resumed run continues it bit for bit, and a skipped (non-finite)
step leaves it as it was. The last transformation of the optimizer's chain sees the
update and the parameters it applies to, so after update t (t = 1, 2, ...):

  d_t   = min(ema_decay, (1 + t) / (10 + t))     (TensorFlow's ExponentialMovingAverage
                                                  with num_updates: early updates weigh
                                                  more than the initial values)
  ema_t = d_t * ema_(t-1) + (1 - d_t) * params_t,   ema_0 = the initial parameters

With grad_accum_steps > 1 it moves once per optimizer update. `train` writes the
average as WORKDIR/model_ema next to WORKDIR/model at the end of a run; `average`
(bertjax/tools/average.py) averages saved checkpoints instead.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class EmaState(NamedTuple):
    count: jax.Array  # int32 []: updates averaged so far
    ema: Any  # float32, the parameters' tree


def params_ema(decay: float) -> optax.GradientTransformation:
    """The EMA of the parameters the updates lead to; updates pass through unchanged."""

    def init(params: Any) -> EmaState:
        return EmaState(
            jnp.zeros((), jnp.int32), jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
        )

    def update(updates: Any, state: EmaState, params: Any = None) -> tuple[Any, EmaState]:
        if params is None:
            raise ValueError("params_ema needs the parameters (update(grads, state, params))")
        t = state.count + 1
        d = jnp.minimum(decay, (1.0 + t) / (10.0 + t)).astype(jnp.float32)
        ema = jax.tree.map(
            lambda e, p, u: d * e + (1.0 - d) * (p + u).astype(jnp.float32),
            state.ema,
            params,
            updates,
        )
        return updates, EmaState(t, ema)

    return optax.GradientTransformation(init, update)


def ema_params(opt_state: Any) -> Any | None:
    """The EMA of the parameters held in an optimizer state, or None when it has none."""
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, EmaState))
        if isinstance(s, EmaState)
    ]
    return found[0].ema if found else None
