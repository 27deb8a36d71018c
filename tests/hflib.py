"""Helpers for tests against transformers' PyTorch models."""

from __future__ import annotations


def perturb(model, seed: int, scale: float = 0.3) -> None:
    """Random values added to every bias and LayerNorm parameter (they start at 0 and 1,
    values that would hide a mapping bug)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    norms = {
        id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()
    }
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or id(p) in norms:
                p.add_(scale * torch.randn(p.shape, generator=g))


def perturbed_init(cfg, input_ids, seed: int = 1, scale: float = 0.3):
    """A bertjax model's fresh parameters (key 1) as numpy, with random values added to
    every bias and norm scale (`perturb`'s reason, on our side of an export)."""
    import flax.linen as nn
    import jax
    import numpy as np

    from bertjax.models import build

    params = nn.unbox(build(cfg).init(jax.random.key(1), input_ids)["params"])
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: (
            np.asarray(x) + (scale * rng.standard_normal(x.shape)).astype(x.dtype)
            if path[-1].key in ("bias", "scale")
            else np.asarray(x)
        ),
        params,
    )
