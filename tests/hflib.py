"""Helpers for tests against transformers' PyTorch models."""

from __future__ import annotations


def perturb(model, seed: int, scale: float = 0.3) -> None:
    """Random values added to every bias and LayerNorm parameter (they start at 0 and 1,
    values that would hide a mapping bug)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    norms = {id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)
             for p in m.parameters()}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or id(p) in norms:
                p.add_(scale * torch.randn(p.shape, generator=g))
