"""The encoder: L applications of EncoderLayer (layers.py) in the loop layout (one
module per layer) or the scan layout (one traced layer over stacked parameters,
`model.scan_layers`), ALBERT's shared groups, and the final norm.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax import sharding as ax
from bertjax.models.attention import AttentionMask
from bertjax.models.config import ModelConfig
from bertjax.models.layers import EncoderLayer, dense, layer_norm

Array = jax.Array


def layer_args(cfg: ModelConfig, i: int) -> dict[str, Any]:
    """EncoderLayer's per-layer attributes for layer i (ModelConfig: layer_window,
    layer_theta, first_attention_norm)."""
    return dict(
        window=cfg.layer_window(i),
        theta=cfg.layer_theta(i),
        attention_norm=i > 0 or cfg.first_attention_norm,
    )


class LayerGroup(nn.Module):
    """ALBERT's unit of sharing: `inner_group_num` layers applied in sequence."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: Array, mask: AttentionMask, deterministic: bool) -> Array:
        for j in range(self.cfg.inner_group_num):
            x = _layer_class(self.cfg)(self.cfg, **layer_args(self.cfg, 0), name=f"inner_{j}")(
                x, mask, deterministic
            )
        return x


def _layer_class(cfg: ModelConfig) -> type[nn.Module]:
    """EncoderLayer, wrapped in remat when the config asks for it."""
    if cfg.remat == "none":
        return EncoderLayer
    policy = (
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable
        if cfg.remat == "dots"
        else jax.checkpoint_policies.nothing_saveable
    )
    # argnums count self as 0: deterministic (3) must stay a Python bool.
    return nn.remat(
        EncoderLayer, policy=policy, prevent_cse=not cfg.scan_layers, static_argnums=(3,)
    )


def _unit_class(cfg: ModelConfig) -> type[nn.Module]:
    """What one application of the encoder runs: a group (ALBERT) or a single layer."""
    return LayerGroup if cfg.inner_group_num > 1 else _layer_class(cfg)


def _unit_args(cfg: ModelConfig, i: int) -> dict[str, Any]:
    """The per-layer attributes of unit i (a group takes none: shared layers are alike)."""
    return {} if cfg.inner_group_num > 1 else layer_args(cfg, i)


class _Scanned(nn.Module):
    """Adapts a unit to nn.scan's (carry, x) -> (carry, y) signature; y is the output.
    `first`: the layer whose attributes the traced unit takes; `local` (scanned layers
    that differ): each layer's flag, SelfAttention's."""

    cfg: ModelConfig
    first: int = 0

    @nn.compact
    def __call__(
        self, x: Array, mask: AttentionMask, deterministic: bool, local: Array | None = None
    ) -> tuple[Array, Array]:
        unit = _unit_class(self.cfg)(self.cfg, **_unit_args(self.cfg, self.first), name="unit")
        x = unit(x, mask, deterministic) if local is None else unit(x, mask, deterministic, local)
        return x, x


def scanned_locals(cfg: ModelConfig) -> list[bool] | None:
    """Which of the scanned layers (`Encoder`: all, or all but a layer 0 kept apart) are
    local, when they differ; None when the scanned layers are alike."""
    flags = [cfg.layer_window(i) > 0 for i in range(cfg.first_layer_apart, cfg.num_layers)]
    return flags if len(set(flags)) > 1 else None


class Encoder(nn.Module):
    """Optional E -> H projection, then L layer applications, then (model.final_norm) a
    norm named `final_norm`.

    Parameter layout:
      no sharing, loop:  layer_{i}                 (i < L)
      no sharing, scan:  layers/unit  with a leading [L] axis; a layer 0 whose parameters
                         differ in kind (model.first_layer_apart: ModernBERT's, without
                         attention_norm) stays layer_0 and layers/unit holds [L - 1]
      ALBERT, loop:      group_{g}                 (g < num_hidden_groups)
      ALBERT, scan:      group_{g}/unit, same params broadcast over L/G applications
    `unstack_layers` / `stack_layers` (scan_layout.py) convert between the loop and scan layouts.
    Scanned layers that differ in window and rotary base (local and global attention)
    are one traced layer that runs either kind by a per-layer flag (`scanned_locals`).
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(
        self, x: Array, mask: AttentionMask, deterministic: bool
    ) -> tuple[Array, list[Array]]:
        """x: [batch, length, embed] -> ([b, l, hidden], states).

        `states` has L + 1 entries: the (projected) input and every layer's output, as
        transformers' `output_hidden_states` gives them.
        """
        cfg = self.cfg
        if cfg.projects_embeddings:
            x = dense(cfg, cfg.hidden_size, (ax.EMBED, ax.EMBED), "embeddings_project")(x)
        states = [x]
        reps = cfg.num_layers // cfg.num_groups
        if cfg.scan_layers:
            first = cfg.first_layer_apart
            if first:
                layer = _layer_class(cfg)(cfg, **layer_args(cfg, 0), name="layer_0")
                x = layer(x, mask, deterministic)
                states.append(x)
            flags = scanned_locals(cfg)
            for g in range(1 if not cfg.shares_layers else cfg.num_groups):
                shared = cfg.shares_layers
                scan = nn.scan(
                    _Scanned,
                    variable_axes={} if shared else {"params": 0},
                    variable_broadcast="params" if shared else False,
                    split_rngs={"params": not shared, "dropout": True},
                    in_axes=(nn.broadcast, nn.broadcast) + ((0,) if flags else ()),
                    length=reps if shared else cfg.num_layers - first,
                    metadata_params={nn.PARTITION_NAME: ax.LAYERS},
                )
                args = (x, mask, deterministic) + ((jnp.asarray(flags),) if flags else ())
                x, ys = scan(cfg, first, name=f"group_{g}" if shared else "layers")(*args)
                states.extend(ys[i] for i in range(ys.shape[0]))
        else:
            unit = _unit_class(cfg)
            prefix = "group" if cfg.shares_layers else "layer"
            units = [
                unit(cfg, **_unit_args(cfg, g), name=f"{prefix}_{g}") for g in range(cfg.num_groups)
            ]
            for i in range(cfg.num_layers):
                x = units[i // reps](x, mask, deterministic)
                states.append(x)
        if cfg.final_norm:  # the last state is the normalised one, as transformers gives it
            x = layer_norm(cfg, "final_norm")(x)
            states[-1] = x
        return x, states
