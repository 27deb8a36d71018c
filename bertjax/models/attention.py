"""Attention's mask and kernels: who attends to whom (`AttentionMask`, the one mask
representation of every path) and how scores are computed (`attention_kernel`, `attend`).

Einsum letters: b batch, q/k query/key positions, h heads, d head features.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from bertjax import sharding as ax
from bertjax.models.config import ModelConfig

Array = jax.Array


def segment_starts(segments: Array) -> Array:
    """[batch, length] index of the first token of each token's sequence (its run of equal
    segment numbers); padding counts as a run of its own."""
    idx = jnp.arange(segments.shape[1], dtype=jnp.int32)
    first = jnp.concatenate(
        [jnp.ones_like(segments[:, :1], bool), segments[:, 1:] != segments[:, :-1]], axis=1
    )
    return jax.lax.cummax(jnp.where(first, idx, 0), axis=1)


@flax.struct.dataclass
class AttentionMask:
    """Who attends to whom: the one mask representation of every attention path.

    segments [batch, length] int32: 0 at padding, k >= 1 at the tokens of the row's k-th
    sequence. An unpacked row holds one sequence (1 then 0s: the transformers
    attention_mask); a packed row holds several, numbered in order, each contiguous,
    padding at the end. A token attends to the real tokens of its own sequence (a padding
    query attends to every real token, as in transformers; its output is never read).
    packed (static): whether rows may hold several sequences. False keeps the cheap
    forms: a [b, 1, 1, k] key bias, key lengths for cuDNN, positions 0..L-1.
    Sliding-window (local) attention narrows this per layer: `bias(window)`.
    """

    segments: Array
    packed: bool = flax.struct.field(pytree_node=False, default=False)

    @classmethod
    def of(cls, attention_mask: Array, packed: bool = False) -> AttentionMask:
        return cls(jnp.asarray(attention_mask).astype(jnp.int32), packed)

    def allowed(self, window: int = 0) -> Array:
        """[batch, 1, q or 1, k] bool: may query q attend to key k. `window` > 0 keeps
        keys within window // 2 positions of the query (ModernBERT's local attention)."""
        seg = self.segments
        key_real = (seg > 0)[:, None, None, :]
        if not self.packed and not window:
            return key_real
        q, k = seg[:, None, :, None], seg[:, None, None, :]
        ok = key_real & ((q == k) | (q == 0))
        if window:
            idx = jnp.arange(seg.shape[1])
            ok = ok & (jnp.abs(idx[:, None] - idx[None, :]) <= window // 2)[None, None]
        return ok

    def bias(self, window: int = 0) -> Array:
        """The additive float32 form of `allowed`: 0 where allowed, the float32 minimum
        elsewhere; [batch, 1, 1, k] for unpacked global attention, else [b, 1, q, k]."""
        return jnp.where(self.allowed(window), 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)

    def lengths(self) -> Array:
        """[batch] real tokens per row (unpacked rows: the length of the one sequence)."""
        return jnp.sum(self.segments > 0, axis=-1).astype(jnp.int32)


# The platform a step is lowered for when it is not JAX's own (`compile` lowers for a
# TPU topology on a CPU machine): what `auto` chooses for.
TARGET_PLATFORM: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "bertjax_target_platform", default=None
)


TPU_BLOCK = 128  # the Pallas kernel's block: lengths it takes are multiples of it


def attention_kernel(
    cfg: ModelConfig,
    deterministic: bool,
    platform: str | None = None,
    length: int | None = None,
    packed: bool = False,
    window: int = 0,
) -> str:
    """The kernel `model.attention` runs for this call: "einsum", "xla", "cudnn" or "tpu".

    einsum  the reference: scores [b, h, q, k] in float32, softmax, attention dropout.
    xla     jax.nn.dot_product_attention(implementation="xla"): the same math as one
            op, which XLA fuses; no attention dropout.
    cudnn   cuDNN flash attention (NVIDIA GPUs, bfloat16/float16): the padding mask as
            key lengths (bertjax pads at the end of every row), no [q, k] matrix in
            memory; no attention dropout. Packed rows run xla instead:
            jax.nn.dot_product_attention takes no segment ids (jax 0.10-0.11).
    tpu     the Pallas flash-attention kernel (jax.experimental.pallas.ops.tpu), the
            mask's segment numbers as its segment ids; no attention dropout.
    auto    einsum while training with attention dropout (no fused kernel has it), else
            cudnn on a GPU in bfloat16/float16, tpu on a TPU, xla elsewhere.
    Explicit kernels other than einsum need model.attention_dropout_rate=0 (validated).
    tpu runs xla for a `length` that is not a multiple of TPU_BLOCK (128) tokens.
    Sliding windows (`window` > 0, model.local_window): einsum and xla add the band to
    the mask's bias. cudnn runs xla: jax.nn.dot_product_attention's cuDNN path takes
    local_window_size only as a left (causal) window and refuses a right one (jax
    0.10, nn/functions.py: "cuDNN doesn't support right window"), and an encoder's band
    is two-sided. tpu runs Pallas' splash attention with a two-sided LocalMask band and
    the segment ids (interpreted off a TPU, so the CPU tests run the kernel itself).
    Global layers of the same model keep their fused kernel.
    """
    kernel = cfg.attention
    if kernel == "auto":
        platform = platform or TARGET_PLATFORM.get() or jax.default_backend()
        if cfg.attention_dropout_rate > 0 and not deterministic:
            kernel = "einsum"
        elif platform == "gpu" and cfg.dtype in ("bfloat16", "float16"):
            kernel = "cudnn"
        else:
            kernel = "tpu" if platform == "tpu" else "xla"
    if kernel == "tpu" and length is not None and length % TPU_BLOCK:
        return "xla"
    if kernel == "cudnn" and (packed or window):
        return "xla"
    return kernel


def _flash(scale: float) -> Callable[[Array, Array, Array, Array], Array]:
    """The Pallas flash-attention kernel: q, k, v [b, t, h, d], segment ids [b, t]."""
    from jax.experimental.pallas.ops.tpu import flash_attention as fa

    def kernel(q: Array, k: Array, v: Array, seg: Array) -> Array:
        out = fa.flash_attention(
            q.transpose(0, 2, 1, 3),
            k.transpose(0, 2, 1, 3),
            v.transpose(0, 2, 1, 3),
            segment_ids=fa.SegmentIds(q=seg, kv=seg),
            sm_scale=scale,
        )
        return out.transpose(0, 2, 1, 3)

    return kernel


def _splash_local(scale: float, window: int) -> Callable[[Array, Array, Array, Array], Array]:
    """The Pallas splash-attention kernel with a band (`splash_attention_mask.LocalMask`,
    keys within window // 2 of the query on either side) and segment ids, row by row.
    Off a TPU (tests on the CPU) it runs in Pallas' interpret mode."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    interpret = (TARGET_PLATFORM.get() or jax.default_backend()) != "tpu"

    def kernel(q: Array, k: Array, v: Array, seg: Array) -> Array:
        length, heads = q.shape[1], q.shape[2]  # this shard's heads
        band = sm.LocalMask((length, length), window_size=(window // 2, window // 2), offset=0)
        splash = sk.make_splash_mha(
            sm.MultiHeadMask([band] * heads), head_shards=1, q_seq_shards=1, interpret=interpret
        )

        def row(q: Array, k: Array, v: Array, s: Array) -> Array:  # [t, h, d], [t]
            out = splash(
                (q * jnp.asarray(scale, q.dtype)).transpose(1, 0, 2),  # splash does not scale
                k.transpose(1, 0, 2),
                v.transpose(1, 0, 2),
                segment_ids=sk.SegmentIds(q=s, kv=s),
            )
            return out.transpose(1, 0, 2)

        return jax.vmap(row)(q, k, v, seg)

    return kernel


def _tpu_pallas(
    q: Array, k: Array, v: Array, mask: AttentionMask, scale: float, window: int = 0
) -> Array:
    """Pallas attention on TPU; q, k, v [b, t, h, d] -> [b, t, h, d]: flash attention, or
    splash attention with a band for a local layer (`window` > 0).

    A Pallas kernel is opaque to XLA's partitioner, so under a mesh (`jax.set_mesh`, as
    `sharding.activation_rules_context` opens) it runs per shard in a shard_map: batch
    and heads split as the logical rules say; the length must not be split."""
    kernel = _splash_local(scale, window) if window else _flash(scale)
    seg = mask.segments  # the kernel attends within equal ids: sequences, padding
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return kernel(q, k, v, seg)
    spec = nn.logical_to_mesh_axes((ax.BATCH, ax.LENGTH, ax.HEADS, ax.KV))
    if spec[1] is not None or spec[3] is not None:
        raise ValueError(
            f"model.attention=tpu: the rules split the length or head features "
            f"({spec}); the flash kernel needs whole rows"
        )
    spec = jax.sharding.PartitionSpec(*spec)
    seg_spec = jax.sharding.PartitionSpec(spec[0], None)
    return jax.shard_map(
        kernel, mesh=mesh, in_specs=(spec, spec, spec, seg_spec), out_specs=spec, check_vma=False
    )(q, k, v, seg)


def attend(
    q: Array,
    k: Array,
    v: Array,
    mask: AttentionMask,
    kernel: str,
    dropout: Callable[[Array], Array],
    window: int = 0,
) -> Array:
    """q, k, v [b, t, h, d] -> [b, t, h, d]: softmax(q k^T / sqrt(d) + mask) v in float32
    scores, by `kernel` (attention_kernel); `dropout` applies to the einsum path's
    probabilities; `window` > 0 keeps keys within window // 2 of the query."""
    head_dim = q.shape[-1]
    scale = 1.0 / float(np.sqrt(head_dim))
    if kernel == "einsum":
        q = q / jnp.sqrt(head_dim).astype(q.dtype)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) + mask.bias(window)
        probs = dropout(jax.nn.softmax(scores, axis=-1).astype(q.dtype))  # [b, h, q, k]
        return jnp.einsum("bhqk,bkhd->bqhd", probs, v)
    if kernel == "xla":
        return jax.nn.dot_product_attention(
            q, k, v, bias=mask.bias(window), scale=scale, implementation="xla"
        )
    if kernel == "cudnn":
        lengths = mask.lengths()
        return jax.nn.dot_product_attention(
            q,
            k,
            v,
            scale=scale,
            query_seq_lengths=lengths,
            key_value_seq_lengths=lengths,
            implementation="cudnn",
        )
    return _tpu_pallas(q, k, v, mask, scale, window)
