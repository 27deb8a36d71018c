"""The two layouts of an encoder's layer parameters, and the exact moves between them.

The loop layout holds one subtree per layer (`layer_{i}`); the scan layout
(`scan_layers=True`, layers.py's `_Scanned`) holds them stacked under `layers/unit` with
a leading [L] axis, and ALBERT's shared groups under `group_{g}/unit`. Converters and
checkpoint readers work on the loop layout and restack after.
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
    for key, val in params.items():
        if key == "layers" and isinstance(val, dict) and set(val) == {"unit"}:
            n = jax.tree_util.tree_leaves(val["unit"])[0].shape[0]
            for i in range(n):
                out[f"layer_{i}"] = jax.tree_util.tree_map(lambda a, i=i: a[i], val["unit"])
        elif re.fullmatch(r"group_\d+", key) and isinstance(val, dict) and set(val) == {"unit"}:
            out[key] = val["unit"]
        else:
            out[key] = unstack_layers(val)
    return out


def stack_layers(params: Any) -> Any:
    """Inverse of `unstack_layers`: `layer_{i}` -> `layers/unit` [L, ...]; groups get `unit`."""
    if not isinstance(params, dict):
        return params
    layer_keys = sorted(
        (k for k in params if re.fullmatch(r"layer_\d+", k)), key=lambda k: int(k.split("_")[1])
    )
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
