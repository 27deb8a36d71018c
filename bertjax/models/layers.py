"""Layers shared by every family: embeddings, attention, FFN, the encoder layer, the
pooler (the encoder that repeats the layer: encoder.py).

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
    def __call__(
        self, x: Array, mask: AttentionMask, deterministic: bool, local: Array | None = None
    ) -> Array:
        """`local`: a traced bool of scanned layers that differ (`Encoder`): True runs
        this layer as a local one (window model.local_window, theta model.local_rope_theta),
        False as a global one; both branches are compiled and one runs (`jax.lax.cond`).
        None: the layer's own `window` and `theta`."""
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
        # positions [b, t] read only the mask
        pos = position_ids(cfg, mask.segments, mask) if cfg.rotary else None

        def context(window: int, theta: float, dropout: Callable[[Array], Array]) -> Array:
            qr, kr = (rotary(q, pos, theta), rotary(k, pos, theta)) if theta else (q, k)
            kernel = attention_kernel(
                cfg, deterministic, length=x.shape[1], packed=mask.packed, window=window
            )
            return attend(qr, kr, v, mask, kernel, dropout, window=window)  # [b, q, h, d]

        if local is None:
            drop = nn.Dropout(cfg.attention_dropout_rate)
            ctx = context(self.window, self.theta, lambda p: drop(p, deterministic=deterministic))
        else:
            dropout = _pure_dropout(self, cfg.attention_dropout_rate, deterministic)
            local_theta = cfg.local_rope_theta or cfg.rope_theta
            ctx = jax.lax.cond(
                local,
                lambda: context(cfg.local_window, local_theta, dropout),
                lambda: context(0, cfg.rope_theta, dropout),
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


def _pure_dropout(module: nn.Module, rate: float, deterministic: bool) -> Callable[[Array], Array]:
    """Dropout as nn.Dropout computes it, as a plain function of the module's dropout rng
    drawn here: Flax modules cannot be called inside `jax.lax.cond`'s branches."""
    if deterministic or rate == 0.0:
        return lambda p: p
    key, keep = module.make_rng("dropout"), 1.0 - rate

    def drop(p: Array) -> Array:
        kept = jax.random.bernoulli(key, p=keep, shape=p.shape)
        return jax.lax.select(kept, p / keep, jnp.zeros_like(p))

    return drop


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
    def __call__(
        self, x: Array, mask: AttentionMask, deterministic: bool, local: Array | None = None
    ) -> Array:
        """x: [batch, length, hidden]; `local`: SelfAttention's."""
        cfg = self.cfg
        drop = nn.Dropout(cfg.dropout_rate)
        sub = SelfAttention(cfg, self.window, self.theta, name="attention")

        def attention(h: Array, mask: AttentionMask, deterministic: bool) -> Array:
            return sub(h, mask, deterministic, local)

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


class Pooler(nn.Module):
    """tanh(W h_[CLS] + b): the sentence vector NSP/SOP classify."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """[batch, length, hidden] -> [batch, hidden]."""
        return jnp.tanh(
            dense(self.cfg, self.cfg.hidden_size, (ax.EMBED, ax.EMBED), "dense")(x[:, 0])
        )
