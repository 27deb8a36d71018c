"""The parameter table and FLOPs per token of a model (`describe`, `init`)."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import jax

from bertjax import flops
from bertjax.models import ModelConfig, build, init_params


def param_shapes(cfg: ModelConfig) -> Any:
    """Abstract parameter tree of `cfg` (ShapeDtypeStructs; nothing is allocated)."""
    import flax.linen as nn

    return jax.eval_shape(lambda: nn.unbox(init_params(build(cfg))))


def count(tree: Any) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))


def param_table(params: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """Rows (module, copies, params per copy) at depth two; numbered layers are folded."""
    rows: OrderedDict[tuple[str, int], list[int]] = OrderedDict()
    for top, sub in params.items():
        children = sub.items() if isinstance(sub, Mapping) else [("", sub)]
        for name, leaf in children:
            folded = re.sub(r"_\d+$", "_*", name)
            n = count(leaf)
            key = (f"{top}/{folded}".rstrip("/"), n)
            rows.setdefault(key, []).append(n)
    return [(name, len(ns), n) for (name, n), ns in rows.items()]


def _summary(cfg: ModelConfig) -> str:
    return (f"{cfg.family} L={cfg.num_layers} H={cfg.hidden_size} A={cfg.num_heads} "
            f"I={cfg.intermediate_size} E={cfg.embed_dim} V={cfg.vocab_size}, heads "
            f"{', '.join(cfg.heads) or 'none'}")


def describe(cfg: ModelConfig, seq_len: int, predictions: int,
             teacher: ModelConfig | None = None) -> str:
    """The parameter table and FLOPs lines; with `teacher` (distillation) the FLOPs count
    its forward pass too."""
    params = param_shapes(cfg)
    lines = [_summary(cfg)]
    if "generator" in cfg.heads:
        g = cfg.generator_config()
        lines[0] += (f"; generator L={g.num_layers} H={g.hidden_size} A={g.num_heads} "
                     f"I={g.intermediate_size} ({g.hidden_size / cfg.hidden_size:.3g} of the "
                     "discriminator's width)")
    width = max(len(r[0]) for r in param_table(params)) + 8
    lines.append(f"{'module':<{width}}{'params':>14}")
    for name, copies, n in param_table(params):
        label = f"{name} x{copies}" if copies > 1 else name
        lines.append(f"{label:<{width}}{n * copies:>14,}")
    lines.append(f"{'total':<{width}}{count(params):>14,}")
    if teacher is not None:
        lines.append(f"teacher (frozen, not in checkpoints): {_summary(teacher)}, "
                     f"{count(param_shapes(teacher)):,} parameters, compute {teacher.dtype}")
    mlm = any(h in cfg.heads for h in ("mlm", "generator"))
    heads = ((("dense MLM head", 1.0), ("sparse MLM head", predictions / seq_len)) if mlm
             else (("no MLM head", 0.0),))
    for label, f in heads:
        fl = flops.train_flops_per_token(cfg, seq_len, f, teacher)
        extra = f", teacher forward {fl.teacher:,.0f}" if teacher is not None else ""
        lines.append(f"training FLOPs/token at S={seq_len}, {label} (f={f:.3g}): "
                     f"{fl.total:,.0f} (layers {fl.layers:,.0f}, attention "
                     f"{fl.attention:,.0f}, head {fl.head:,.0f}{extra}); forward = 1/3")
    return "\n".join(lines)
