"""Which parameters the optimizer (optim.py) treats how: their names ("encoder/
layer_3/attention/query/kernel"), the weight-decay mask, the frozen parameters, and
the per-layer learning-rate multipliers of layer-wise decay (optim.py's docstring says
how depths count).

Everything here works on arrays, ShapeDtypeStructs and boxed or unboxed trees, in loop
and scan layouts; optim.py re-exports the public names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bertjax.models.config import ConfigError, ModelConfig

if TYPE_CHECKING:
    from bertjax.optim import OptimConfig


# LayerNorm module names in bertjax.models.layers: their scale and bias are not decayed.
LAYER_NORM_NAMES = frozenset({"layer_norm", "attention_norm", "output_norm", "final_norm"})


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
            raise ConfigError(
                f"parameter {path_str(path)} is {dtype}: the optimizer keeps "
                "float32 master weights (set model.param_dtype=float32)"
            )
    if frozen is not None and not callable(frozen):
        present = {path_str(p) for p, _ in leaves}
        missing = sorted(set(frozen) - present)
        if missing:
            raise ConfigError(f"frozen parameter path(s) not in the model: {', '.join(missing)}")


# --- layer-wise learning-rate decay ----------------------------------------------------

_LAYER = re.compile(r"layer_(\d+)")
_FINAL = "final_norm"  # model.final_norm: it normalises the top layer's output


def _layer_depth_fn(params: Any, cfg: OptimConfig) -> Callable[[tuple[Any, ...], Any], Any]:
    """Checks `params` for layer-wise decay and returns (path, leaf) -> its multiplier:
    a float, or for a scan-stacked leaf [L, ...] a float32 array [L, 1, ...]."""
    d = cfg.layer_decay

    def refuse(why: str) -> ConfigError:
        return ConfigError(
            f"optim.layer_decay={d!r}: {why}; layer-wise decay needs one set "
            "of weights per encoder layer (set optim.layer_decay=1.0)"
        )

    layers, stacked = set(), set()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        parts = path_str(path).split("/")
        if parts[0] == "generator":
            raise refuse(f"{path_str(path)} is ELECTRA's generator tower (pretraining only)")
        if parts[0] != "encoder" or len(parts) < 2 or parts[1] in ("embeddings_project", _FINAL):
            continue
        if parts[1].startswith("group_"):
            raise refuse(f"ALBERT's shared layers (encoder/{parts[1]}) serve every depth")
        if parts[1] == "layers":
            stacked.add(int(np.shape(leaf)[0]))
        elif _LAYER.fullmatch(parts[1]):
            layers.add(int(_LAYER.fullmatch(parts[1]).group(1)))
        else:
            raise refuse(f"{path_str(path)} has no depth")
    if not layers and not stacked:
        raise refuse("the parameters have no encoder/layer_{i} or encoder/layers")
    # A scan layout may keep layer 0 apart (scan_layout.py): the stack holds layers 1..
    first = len(layers) if stacked else 0
    n = first + stacked.pop() if stacked else max(layers) + 1
    top = n + 2 if cfg.layer_decay_depth == "google" else n + 1

    def multiplier(path: tuple[Any, ...], leaf: Any) -> Any:
        parts = path_str(path).split("/")
        if parts[0] == "embeddings" or parts[:2] == ["encoder", "embeddings_project"]:
            return d**top
        if parts[0] != "encoder":
            return 1.0  # a head (the pooler included)
        if parts[1] == _FINAL:
            return d ** (top - n)  # the top layer's depth
        if parts[1] == "layers":
            depths = np.arange(first + 1, n + 1, dtype=np.float64)  # layer i: depth i + 1
            shape = (n - first,) + (1,) * (np.ndim(leaf) - 1)
            return (d ** (top - depths)).astype(np.float32).reshape(shape)
        return d ** (top - (int(_LAYER.fullmatch(parts[1]).group(1)) + 1))

    return multiplier


def layer_lr_multipliers(params: Any, cfg: OptimConfig) -> Any:
    """Each leaf's learning-rate multiplier under `cfg.layer_decay` (module docstring).

    Args:
      params: a model's parameter tree (arrays or ShapeDtypeStructs, boxed or not, loop
        or scan layout).
      cfg: its layer_decay and layer_decay_depth are read.

    Returns:
      A tree like `params` of floats; a scan-stacked leaf [L, ...] gets a float32 array
      [L, 1, ...] (one multiplier per layer). All 1.0 when layer_decay is 1.

    Raises:
      ConfigError naming optim.layer_decay for parameters with no depth: ALBERT's shared
      layers, ELECTRA's generator tower, a tree without encoder layers.
    """
    if cfg.layer_decay == 1:
        return jax.tree_util.tree_map(lambda _: 1.0, params)
    return jax.tree_util.tree_map_with_path(_layer_depth_fn(params, cfg), params)


def scale_by_layer_decay(cfg: OptimConfig) -> optax.GradientTransformation:
    """Multiplies each update by its `layer_lr_multipliers` entry (no state)."""

    def init(params: Any) -> optax.EmptyState:
        _layer_depth_fn(params, cfg)  # refuse a tree without depths before any step
        return optax.EmptyState()

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params
        multiplier = _layer_depth_fn(updates, cfg)
        return jax.tree_util.tree_map_with_path(lambda p, u: u * multiplier(p, u), updates), state

    return optax.GradientTransformation(init, update)
