"""The two layouts of an encoder's layer parameters, and the exact moves between them.

The loop layout holds one subtree per layer (`layer_{i}`); the scan layout
(`scan_layers=True`, encoder.py's `_Scanned`) holds them stacked under `layers/unit` with
a leading [L] axis, and ALBERT's shared groups under `group_{g}/unit`. A layer 0 whose
parameters differ in kind from layer 1's (ModernBERT's has no attention_norm) stays
`layer_0` beside `layers/unit` [L - 1]. Converters and checkpoint readers work on the
loop layout and restack after.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp


def unstack_layers(params: Any) -> Any:
    """Turns scan-layout params (`layers/unit` with a leading [L] axis) into `layer_{i}`.

    Params of ALBERT's shared groups are identical in both layouts apart from the
    `unit` level, which is dropped. Works on plain nested dicts.
    """
    if not isinstance(params, dict):
        return params
    out = {}
    first = int("layer_0" in params)  # a layer 0 kept apart (module docstring)
    for key, val in params.items():
        if key == "layers" and isinstance(val, dict) and set(val) == {"unit"}:
            n = jax.tree_util.tree_leaves(val["unit"])[0].shape[0]
            for i in range(n):
                out[f"layer_{first + i}"] = jax.tree_util.tree_map(lambda a, i=i: a[i], val["unit"])
        elif re.fullmatch(r"group_\d+", key) and isinstance(val, dict) and set(val) == {"unit"}:
            out[key] = val["unit"]
        else:
            out[key] = unstack_layers(val)
    return out


def stack_layers(params: Any) -> Any:
    """Inverse of `unstack_layers`: `layer_{i}` -> `layers/unit` [L, ...] (a layer 0 that
    differs in kind stays apart); groups get `unit`."""
    if not isinstance(params, dict):
        return params
    layer_keys = sorted(
        (k for k in params if re.fullmatch(r"layer_\d+", k)), key=lambda k: int(k.split("_")[1])
    )
    if len(layer_keys) > 1 and jax.tree_util.tree_structure(
        params[layer_keys[0]]
    ) != jax.tree_util.tree_structure(params[layer_keys[1]]):
        layer_keys = layer_keys[1:]  # layer 0 differs in kind: it stays apart
    group_keys = [k for k in params if re.fullmatch(r"group_\d+", k)]
    out = {
        k: stack_layers(v) for k, v in params.items() if k not in layer_keys and k not in group_keys
    }
    if layer_keys:
        out["layers"] = {
            "unit": jax.tree_util.tree_map(
                lambda *xs: jnp.stack(xs), *[params[k] for k in layer_keys]
            )
        }
    for k in group_keys:
        out[k] = {"unit": params[k]}
    return out
