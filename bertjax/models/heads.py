"""Output heads: MLM (dense and sparse, tied to the word embeddings), NSP/SOP, RTD."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax import sharding as ax
from bertjax.models.config import ModelConfig
from bertjax.models.layers import ACTIVATIONS, dense, layer_norm

Array = jax.Array


def gather_positions(x: Array, positions: Array) -> Array:
    """x: [batch, length, hidden], positions: [batch, P] -> [batch, P, hidden]."""
    return jnp.take_along_axis(x, positions[:, :, None], axis=1)


class MLMHead(nn.Module):
    """dense -> activation -> LayerNorm -> tied decoder + bias.

    The transform maps H to the embedding width E (ALBERT, ELECTRA's generator)
    or to H (BERT, RoBERTa, DistilBERT), then scores against the word-embedding
    table. Dense mode scores every position; sparse mode (`positions` given)
    gathers the `max_predictions_per_seq` masked positions first, which saves the
    [batch, length, vocab] logits. Both use the same parameters.
    """

    cfg: ModelConfig
    activation: str = ""  # empty: cfg.hidden_act; ELECTRA's generator always uses gelu

    @nn.compact
    def __call__(self, x: Array, table: Array, positions: Array | None = None) -> Array:
        """x: [b, l, hidden]; table: [vocab, embed] -> float32 logits [b, l or P, vocab]."""
        cfg = self.cfg
        if positions is not None:
            x = gather_positions(x, positions)
        h = dense(cfg, cfg.embed_dim, (ax.EMBED, ax.EMBED), "transform")(x)
        h = ACTIVATIONS[self.activation or cfg.hidden_act](h)
        h = layer_norm(cfg, "layer_norm")(h)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                               (ax.VOCAB,)),
                          (cfg.vocab_size,), cfg.param_dtype)
        logits = jnp.einsum("ble,ve->blv", h, table.astype(h.dtype))
        return logits.astype(jnp.float32) + bias.astype(jnp.float32)


class PairHead(nn.Module):
    """Two-way classifier on the pooled vector: NSP (BERT) or SOP (ALBERT)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, pooled: Array) -> Array:
        """[batch, hidden] -> float32 logits [batch, 2]."""
        return dense(self.cfg, 2, (ax.EMBED, None), "dense")(pooled).astype(jnp.float32)


class DiscriminatorHead(nn.Module):
    """ELECTRA replaced-token detection: dense -> activation -> dense to one logit."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """[batch, length, hidden] -> float32 logits [batch, length]."""
        cfg = self.cfg
        h = ACTIVATIONS[cfg.hidden_act](dense(cfg, cfg.hidden_size, (ax.EMBED, ax.EMBED),
                                              "dense")(x))
        return dense(cfg, 1, (ax.EMBED, None), "prediction")(h)[..., 0].astype(jnp.float32)
