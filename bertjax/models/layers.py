"""Layers shared by every family: embeddings, attention, FFN, encoder layer, encoder.

The five classic families are post-LayerNorm Transformer encoders; they differ only in
embeddings (factorized, token types, position scheme), in layer sharing (ALBERT) and in
heads. The architecture switches of ModelConfig (docs/architectures.md: pre-norm and a
final norm, RMSNorm, biases, GLU, rotary positions, sliding windows) reshape the same
layers; ModernBERT is one setting of them. Parameters carry logical axis names (see
`bertjax.sharding`).

Einsum letters: b batch, q/k query/key positions, h heads, d head features,
e embed (hidden) features, v vocabulary.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bertjax import sharding as ax
from bertjax.models.attention import AttentionMask, attend, attention_kernel, segment_starts
from bertjax.models.config import ModelConfig

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


def _init(cfg: ModelConfig, axes: tuple[str | None, ...]) -> Callable:
    return nn.with_logical_partitioning(
        nn.initializers.truncated_normal(cfg.initializer_range), axes
    )


def _zeros(axes: tuple[str | None, ...]) -> Callable:
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def dense(
    cfg: ModelConfig, features: int, axes: tuple[str, str], name: str, bias: bool = True
) -> nn.Dense:
    """A Dense layer whose kernel is annotated `axes` = (in, out) and bias (out,)."""
    return nn.Dense(
        features,
        use_bias=bias,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        kernel_init=_init(cfg, axes),
        bias_init=_zeros(axes[1:]),
        name=name,
    )


def layer_norm(cfg: ModelConfig, name: str) -> nn.Module:
    """The config's norm (`model.norm`): LayerNorm, with a bias unless model.norm_bias is
    off, or RMSNorm (scale only). Parameters: scale [embed] (and bias [embed])."""
    scale_init = nn.with_logical_partitioning(nn.initializers.ones_init(), (ax.EMBED,))
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(
            epsilon=cfg.layer_norm_eps,
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            scale_init=scale_init,
            name=name,
        )
    # Two-pass variance (use_fast_variance=False) matches PyTorch's LayerNorm closely.
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        use_fast_variance=False,
        use_bias=cfg.norm_bias,
        scale_init=scale_init,
        bias_init=_zeros((ax.EMBED,)),
        name=name,
    )


def sinusoidal_table(num_positions: int, dim: int) -> np.ndarray:
    """The fixed sin/cos position table of "Attention is all you need" (DistilBERT option).

    Row p, column 2i holds sin(p / 10000^(2i/dim)); column 2i+1 holds the cosine of
    the same angle.
    """
    pos = np.arange(num_positions, dtype=np.float64)[:, None]
    rate = np.power(10000.0, -2.0 * (np.arange(dim) // 2) / dim)[None, :]
    angle = pos * rate
    table = np.where(np.arange(dim) % 2 == 0, np.sin(angle), np.cos(angle))
    return table.astype(np.float32)


def position_ids(cfg: ModelConfig, input_ids: Array, mask: AttentionMask | None = None) -> Array:
    """[batch, length] position ids.

    BERT-style: 0..L-1. RoBERTa-style (`positions_from_padding`): padding tokens sit at
    pad_id and real tokens count up from pad_id + 1, as fairseq's make_positions does.
    Packed rows (`mask.packed`): positions restart at every sequence; padding keeps its
    index (BERT-style), as in an unpacked row.
    """
    idx = jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)
    packed = mask is not None and mask.packed
    starts = segment_starts(mask.segments) if packed else jnp.zeros_like(idx)
    if cfg.positions_from_padding:
        not_pad = (input_ids != cfg.pad_token_id).astype(jnp.int32)
        count = jnp.cumsum(not_pad, axis=1)
        before = jnp.take_along_axis(count - not_pad, starts, axis=1)  # real tokens before
        return (count - before) * not_pad + cfg.pad_token_id
    if not packed:
        return idx
    return jnp.where(mask.segments > 0, idx - starts, idx)


class Embeddings(nn.Module):
    """Word + position (+ token type) embeddings, LayerNorm, dropout. Width E."""

    cfg: ModelConfig

    def setup(self) -> None:
        cfg, e = self.cfg, self.cfg.embed_dim
        self.word = nn.Embed(
            cfg.vocab_size,
            e,
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            embedding_init=_init(cfg, (ax.VOCAB, ax.EMBED)),
        )
        if not cfg.rotary:  # rotary positions rotate q and k instead (SelfAttention)
            pos_init = (
                nn.with_logical_partitioning(
                    lambda *_: jnp.asarray(sinusoidal_table(cfg.max_position_embeddings, e)),
                    (ax.POSITIONS, ax.EMBED),
                )
                if cfg.sinusoidal_positions
                else _init(cfg, (ax.POSITIONS, ax.EMBED))
            )
            self.position = nn.Embed(
                cfg.max_position_embeddings,
                e,
                dtype=cfg.dtype,
                param_dtype=cfg.param_dtype,
                embedding_init=pos_init,
            )
        if cfg.type_vocab_size:
            self.token_type = nn.Embed(
                cfg.type_vocab_size,
                e,
                dtype=cfg.dtype,
                param_dtype=cfg.param_dtype,
                embedding_init=_init(cfg, (ax.POSITIONS, ax.EMBED)),
            )
        if cfg.embedding_norm:
            self.layer_norm = layer_norm(cfg, "layer_norm")
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array | None,
        deterministic: bool,
        mask: AttentionMask | None = None,
    ) -> Array:
        """input_ids, token_type_ids: [batch, length] -> [batch, length, embed]. `mask`:
        positions restart at every sequence of a packed row."""
        x = self.word(input_ids)
        if not self.cfg.rotary:
            x = x + self.position(position_ids(self.cfg, input_ids, mask))
        if self.cfg.type_vocab_size:
            if token_type_ids is None:
                token_type_ids = jnp.zeros_like(input_ids)
            x = x + self.token_type(token_type_ids)
        if self.cfg.embedding_norm:
            x = self.layer_norm(x)
        x = self.dropout(x, deterministic=deterministic)
        return nn.with_logical_constraint(x, (ax.BATCH, ax.LENGTH, ax.EMBED))

    def table(self) -> Array:
        """[vocab, embed] word-embedding matrix, for output layers tied to it."""
        return self.word.embedding


def rotary(x: Array, positions: Array, theta: float) -> Array:
    """Rotary position embedding (Su et al., RoFormer) in transformers' layout: feature j
    of the first half pairs with j + d/2 (rotate_half). x: [b, t, h, d]; positions [b, t]
    (`position_ids`: they restart at every packed sequence). Computed in float32."""
    d = x.shape[-1]
    # As transformers computes it (float32 powers), so converted models agree to 1e-6.
    inv_freq = 1.0 / (np.float32(theta) ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d)))
    angle = positions.astype(jnp.float32)[:, :, None] * jnp.asarray(inv_freq)  # [b, t, d/2]
    cos = jnp.cos(jnp.concatenate([angle, angle], -1))[:, :, None]  # [b, t, 1, d]
    sin = jnp.sin(jnp.concatenate([angle, angle], -1))[:, :, None]
    xf = x.astype(jnp.float32)
    half = jnp.concatenate([-xf[..., d // 2 :], xf[..., : d // 2]], -1)
    return (xf * cos + half * sin).astype(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention with softmax in float32 (`attention_kernel` picks how);
    `window` > 0 keeps keys within window // 2 of the query, `theta` > 0 rotates q and k
    (rotary positions)."""

    cfg: ModelConfig
    window: int = 0
    theta: float = 0.0

    @nn.compact
    def __call__(self, x: Array, mask: AttentionMask, deterministic: bool) -> Array:
        cfg = self.cfg
        proj = functools.partial(
            nn.DenseGeneral,
            features=(cfg.num_heads, cfg.head_dim),
            dtype=cfg.dtype,
            use_bias=cfg.attention_bias,
            param_dtype=cfg.param_dtype,
            kernel_init=_init(cfg, (ax.EMBED, ax.HEADS, ax.KV)),
            bias_init=_zeros((ax.HEADS, ax.KV)),
        )
        q = proj(name="query")(x)  # [b, q, h, d]
        k = proj(name="key")(x)  # [b, k, h, d]
        v = proj(name="value")(x)  # [b, k, h, d]
        if self.theta:
            pos = position_ids(cfg, mask.segments, mask)  # [b, t]; reads only the mask
            q, k = rotary(q, pos, self.theta), rotary(k, pos, self.theta)
        kernel = attention_kernel(
            cfg, deterministic, length=x.shape[1], packed=mask.packed, window=self.window
        )
        dropout = nn.Dropout(cfg.attention_dropout_rate)
        ctx = attend(
            q,
            k,
            v,
            mask,
            kernel,  # [b, q, h, d]
            lambda p: dropout(p, deterministic=deterministic),
            window=self.window,
        )
        return nn.DenseGeneral(
            cfg.hidden_size,
            axis=(-2, -1),
            use_bias=cfg.attention_bias,
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            kernel_init=_init(cfg, (ax.HEADS, ax.KV, ax.EMBED)),
            bias_init=_zeros((ax.EMBED,)),
            name="out",
        )(ctx)  # [b, q, e]


def mlp(cfg: ModelConfig, x: Array) -> Array:
    """The feed-forward block, called inside a compact layer (its parameters `intermediate`
    and `output` sit in that layer): act(x W_in) W_out, or with model.mlp=glu the gated
    form (act(x W_a) * (x W_g)) W_out (Shazeer 2020), W_a and W_g one [H, 2, I] kernel."""
    act = ACTIVATIONS[cfg.hidden_act]
    if cfg.mlp == "glu":
        h = nn.DenseGeneral(
            (2, cfg.intermediate_size),
            use_bias=cfg.mlp_bias,
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            kernel_init=_init(cfg, (ax.EMBED, None, ax.MLP)),
            bias_init=_zeros((None, ax.MLP)),
            name="intermediate",
        )(x)  # [b, l, 2, mlp]
        h = act(h[..., 0, :]) * h[..., 1, :]
    else:
        h = act(
            dense(cfg, cfg.intermediate_size, (ax.EMBED, ax.MLP), "intermediate", cfg.mlp_bias)(x)
        )
    return dense(cfg, cfg.hidden_size, (ax.MLP, ax.EMBED), "output", cfg.mlp_bias)(h)


class EncoderLayer(nn.Module):
    """Post-norm (BERT): x + attn -> norm -> x + MLP -> norm. Pre-norm (model.norm_position
    =pre): x + attn(norm(x)), then x + MLP(norm(x)); a layer 0 without `attention_norm`
    reads the embedding norm's output (ModernBERT). Parameter names are the same in both:
    attention_norm, output_norm."""

    cfg: ModelConfig
    window: int = 0  # SelfAttention's
    theta: float = 0.0
    attention_norm: bool = True  # pre-norm only: whether attention's input is normalised

    @nn.compact
    def __call__(self, x: Array, mask: AttentionMask, deterministic: bool) -> Array:
        """x: [batch, length, hidden]."""
        cfg = self.cfg
        drop = nn.Dropout(cfg.dropout_rate)
        attention = SelfAttention(cfg, self.window, self.theta, name="attention")
        if cfg.norm_position == "pre":
            h = layer_norm(cfg, "attention_norm")(x) if self.attention_norm else x
            x = x + drop(attention(h, mask, deterministic), deterministic=deterministic)
            h = mlp(cfg, layer_norm(cfg, "output_norm")(x))
            x = x + drop(h, deterministic=deterministic)
        else:
            h = attention(x, mask, deterministic)
            x = layer_norm(cfg, "attention_norm")(x + drop(h, deterministic=deterministic))
            h = mlp(cfg, x)
            x = layer_norm(cfg, "output_norm")(x + drop(h, deterministic=deterministic))
        return nn.with_logical_constraint(x, (ax.BATCH, ax.LENGTH, ax.EMBED))


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
    """Adapts a unit to nn.scan's (carry, x) -> (carry, y) signature; y is the output."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: Array, mask: AttentionMask, deterministic: bool) -> tuple[Array, Array]:
        x = _unit_class(self.cfg)(self.cfg, **_unit_args(self.cfg, 0), name="unit")(
            x, mask, deterministic
        )
        return x, x


class Encoder(nn.Module):
    """Optional E -> H projection, then L layer applications, then (model.final_norm) a
    norm named `final_norm`.

    Parameter layout:
      no sharing, loop:  layer_{i}                 (i < L)
      no sharing, scan:  layers/unit  with a leading [L] axis
      ALBERT, loop:      group_{g}                 (g < num_hidden_groups)
      ALBERT, scan:      group_{g}/unit, same params broadcast over L/G applications
    `unstack_layers` / `stack_layers` (scan_layout.py) convert between the loop and scan layouts.
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
            for g in range(1 if not cfg.shares_layers else cfg.num_groups):
                shared = cfg.shares_layers
                scan = nn.scan(
                    _Scanned,
                    variable_axes={} if shared else {"params": 0},
                    variable_broadcast="params" if shared else False,
                    split_rngs={"params": not shared, "dropout": True},
                    in_axes=(nn.broadcast, nn.broadcast),
                    length=reps if shared else cfg.num_layers,
                    metadata_params={nn.PARTITION_NAME: ax.LAYERS},
                )
                x, ys = scan(cfg, name=f"group_{g}" if shared else "layers")(x, mask, deterministic)
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


class Pooler(nn.Module):
    """tanh(W h_[CLS] + b): the sentence vector NSP/SOP classify."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """[batch, length, hidden] -> [batch, hidden]."""
        return jnp.tanh(
            dense(self.cfg, self.cfg.hidden_size, (ax.EMBED, ax.EMBED), "dense")(x[:, 0])
        )
