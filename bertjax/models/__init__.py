"""Model families on shared layers: `build(cfg)` returns the encoder + heads `cfg` describes.

The family records (bertjax/models/registry.py) and ModelConfig import no JAX, so
the data layer can read them cheaply; the Flax modules load on first `build`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bertjax.models.config import ConfigError, ModelConfig

if TYPE_CHECKING:
    import flax.linen as nn


def build(cfg: ModelConfig) -> nn.Module:
    """The Flax module of `cfg`: its family's encoder and `cfg.heads`."""
    from bertjax.models.model import Model

    return Model(cfg)


def init_params(model: nn.Module, seed: int = 0, seq_len: int = 8) -> Any:
    """`model`'s parameters from key(seed), boxed with their logical axes (nn.unbox them
    for plain arrays). The values do not depend on `seq_len`, a dummy input length."""
    import jax
    import jax.numpy as jnp

    return model.init(jax.random.key(seed), jnp.ones((1, seq_len), jnp.int32))["params"]


__all__ = ["ConfigError", "ModelConfig", "build", "init_params"]
