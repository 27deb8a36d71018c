"""Heads on an encoder: MLM (dense and sparse, tied to the word embeddings), NSP/SOP,
ELECTRA's discriminator and generator, sequence classification / regression, token
classification and extractive-QA spans. bertjax/models/family.py lists them by name;
bertjax/models/model.py puts them on an encoder.

Every head returns float32 logits whatever the compute dtype.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax import sharding as ax
from bertjax.models.attention import AttentionMask
from bertjax.models.config import ModelConfig
from bertjax.models.layers import ACTIVATIONS, Encoder, dense, layer_norm

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


class GeneratorHead(nn.Module):
    """ELECTRA's generator: its own encoder tower on the shared embeddings, then an MLM
    head (GELU, as in the original and in transformers) tied to the word embeddings."""

    cfg: ModelConfig  # the generator's tower (ModelConfig.generator_config)

    def setup(self) -> None:
        self.encoder = Encoder(self.cfg)
        self.mlm = MLMHead(self.cfg, activation="gelu")

    def __call__(self, x: Array, mask: AttentionMask, table: Array,
                 positions: Array | None, deterministic: bool) -> tuple[Array, dict]:
        """x: [b, l, embed] embeddings -> (logits [b, l or P, vocab], {"sequence",
        "hidden_states"})."""
        h, states = self.encoder(x, mask, deterministic)
        return self.mlm(h, table, positions), {"sequence": h, "hidden_states": states}


class ClassifierHead(nn.Module):
    """Sequence classification (num_labels > 1) or regression (num_labels = 1), shaped as
    transformers shapes each family's (bertjax/models/family.py: CLASSIFIERS)."""

    cfg: ModelConfig
    style: str  # pooled | cls_tanh | cls_gelu | pre_relu

    @nn.compact
    def __call__(self, x: Array, pooled: Array | None, deterministic: bool) -> Array:
        """x: [batch, length, hidden]; pooled: [batch, hidden] -> logits [batch, labels]."""
        cfg = self.cfg
        drop = nn.Dropout(cfg.classifier_dropout_rate)
        if self.style == "pooled":
            h = drop(pooled, deterministic=deterministic)
        else:
            h = x[:, 0]  # [CLS] / <s>
            if self.style != "pre_relu":
                h = drop(h, deterministic=deterministic)
            h = dense(cfg, cfg.hidden_size, (ax.EMBED, ax.EMBED), "dense")(h)
            act = {"cls_tanh": jnp.tanh, "cls_gelu": ACTIVATIONS["gelu"],
                   "pre_relu": jax.nn.relu}[self.style]
            h = drop(act(h), deterministic=deterministic)
        return dense(cfg, cfg.num_labels, (ax.EMBED, None), "out")(h).astype(jnp.float32)


class TokenHead(nn.Module):
    """Dropout, then a dense layer to `features` per token: token classification
    (num_labels) or QA spans (2: start and end)."""

    cfg: ModelConfig
    features: int
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        """[batch, length, hidden] -> float32 [batch, length, features]."""
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
        return dense(self.cfg, self.features, (ax.EMBED, None), "out")(x).astype(jnp.float32)
