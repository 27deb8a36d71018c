r"""`python -m bertjax describe`: parameter table and FLOPs per token of a config.

  python -m bertjax describe --config=configs/pretrain.py:bert_base
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from bertjax import cli, flops
from bertjax.models import ModelConfig, build


def param_shapes(cfg: ModelConfig) -> Any:
    """Abstract parameter tree of `cfg` (ShapeDtypeStructs; nothing is allocated)."""
    import flax.linen as nn

    ids = jnp.zeros((1, 8), jnp.int32)
    return jax.eval_shape(lambda: nn.unbox(build(cfg).init(jax.random.key(0), ids))["params"])


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


def describe(cfg: ModelConfig, seq_len: int, predictions: int) -> str:
    params = param_shapes(cfg)
    lines = [f"{cfg.family} L={cfg.num_layers} H={cfg.hidden_size} A={cfg.num_heads} "
             f"I={cfg.intermediate_size} E={cfg.embed_dim} V={cfg.vocab_size}"]
    width = max(len(r[0]) for r in param_table(params)) + 8
    lines.append(f"{'module':<{width}}{'params':>14}")
    for name, copies, n in param_table(params):
        label = f"{name} x{copies}" if copies > 1 else name
        lines.append(f"{label:<{width}}{n * copies:>14,}")
    lines.append(f"{'total':<{width}}{count(params):>14,}")
    for label, f in (("dense MLM head", 1.0), ("sparse MLM head", predictions / seq_len)):
        fl = flops.train_flops_per_token(cfg, seq_len, f)
        lines.append(f"training FLOPs/token at S={seq_len}, {label} (f={f:.3g}): "
                     f"{fl.total:,.0f} (layers {fl.layers:,.0f}, attention "
                     f"{fl.attention:,.0f}, head {fl.head:,.0f}); forward = 1/3")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    config = cli.required(cli.CONFIG)
    cfg = ModelConfig.from_dict(config.model.to_dict())
    print(describe(cfg, config.max_seq_length, config.max_predictions_per_seq))
