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
from bertjax.models.encoder import Encoder
from bertjax.models.layers import ACTIVATIONS, dense, layer_norm

Array = jax.Array


def gather_positions(x: Array, positions: Array) -> Array:
    """x: [batch, length, hidden], positions: [batch, P] -> [batch, P, hidden]."""
    return jnp.take_along_axis(x, positions[:, :, None], axis=1)


def first_positions(segments: Array, num_sequences: int) -> tuple[Array, Array]:
    """Where each sequence of a packed row starts, for the heads that read one vector
    per sequence (pooler, NSP/SOP, classifier).

    segments: [batch, length] the attention mask's segment numbers (0 padding, k >= 1
    the row's k-th sequence); num_sequences: S, the per-sequence slots of the batch
    (the second axis of its per-sequence labels). Returns (positions [batch, S] int32:
    the first token of sequence k + 1, 0 where the row has fewer sequences; present
    [batch, S] bool: whether it has that sequence)."""
    number = jnp.arange(1, num_sequences + 1, dtype=jnp.int32)
    hit = segments[:, None, :] == number[None, :, None]  # [batch, S, length]
    return jnp.argmax(hit, axis=-1).astype(jnp.int32), jnp.any(hit, axis=-1)


class MLMHead(nn.Module):
    """dense -> activation -> norm -> tied decoder + bias (model.head_bias, decoder_bias:
    either bias may be off; model.tie_decoder=False: a `decoder` kernel [E, V] of its own).

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
        h = dense(cfg, cfg.embed_dim, (ax.EMBED, ax.EMBED), "transform", cfg.head_bias)(x)
        h = ACTIVATIONS[self.activation or cfg.hidden_act](h)
        h = layer_norm(cfg, "layer_norm")(h)
        if not cfg.tie_decoder:
            table = self.param(
                "decoder",
                nn.with_logical_partitioning(
                    nn.initializers.truncated_normal(cfg.initializer_range), (ax.VOCAB, ax.EMBED)
                ),
                (cfg.vocab_size, cfg.embed_dim),
                cfg.param_dtype,
            )
        logits = jnp.einsum("ble,ve->blv", h, table.astype(h.dtype)).astype(jnp.float32)
        if not cfg.decoder_bias:
            return logits
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), (ax.VOCAB,)),
            (cfg.vocab_size,),
            cfg.param_dtype,
        )
        return logits + bias.astype(jnp.float32)


class PairHead(nn.Module):
    """Two-way classifier on the pooled vector: NSP (BERT) or SOP (ALBERT)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, pooled: Array) -> Array:
        """[batch, (S,) hidden] -> float32 logits [batch, (S,) 2] (S: packed sequences)."""
        return dense(self.cfg, 2, (ax.EMBED, None), "dense")(pooled).astype(jnp.float32)


class DiscriminatorHead(nn.Module):
    """ELECTRA replaced-token detection: dense -> activation -> dense to one logit."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """[batch, length, hidden] -> float32 logits [batch, length]."""
        cfg = self.cfg
        h = ACTIVATIONS[cfg.hidden_act](
            dense(cfg, cfg.hidden_size, (ax.EMBED, ax.EMBED), "dense")(x)
        )
        return dense(cfg, 1, (ax.EMBED, None), "prediction")(h)[..., 0].astype(jnp.float32)


class GeneratorHead(nn.Module):
    """ELECTRA's generator: its own encoder tower on the shared embeddings, then an MLM
    head (GELU, as in the original and in transformers) tied to the word embeddings."""

    cfg: ModelConfig  # the generator's tower (ModelConfig.generator_config)

    def setup(self) -> None:
        self.encoder = Encoder(self.cfg)
        self.mlm = MLMHead(self.cfg, activation="gelu")

    def __call__(
        self,
        x: Array,
        mask: AttentionMask,
        table: Array,
        positions: Array | None,
        deterministic: bool,
    ) -> tuple[Array, dict]:
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
    def __call__(self, first: Array, pooled: Array | None, deterministic: bool) -> Array:
        """first: [batch, (S,) hidden] each sequence's first token ([CLS] / <s>); pooled:
        the pooler's vector of the same shape -> float32 logits [batch, (S,) labels]
        (S: the sequences of packed rows)."""
        cfg = self.cfg
        drop = nn.Dropout(cfg.classifier_dropout_rate)
        if self.style == "pooled":
            h = drop(pooled, deterministic=deterministic)
        else:
            h = first
            if self.style != "pre_relu":
                h = drop(h, deterministic=deterministic)
            h = dense(cfg, cfg.hidden_size, (ax.EMBED, ax.EMBED), "dense")(h)
            act = {"cls_tanh": jnp.tanh, "cls_gelu": ACTIVATIONS["gelu"], "pre_relu": jax.nn.relu}[
                self.style
            ]
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


class PredictionHead(nn.Module):
    """ModernBERT's task heads (transformers' ModernBertPredictionHead + classifier): pool
    (classifier: [CLS] or the mean over real tokens, model.classifier_pooling; token and
    span heads: every token), dense (bias: model.head_bias) -> activation -> norm ->
    dropout -> dense to `features`."""

    cfg: ModelConfig
    features: int
    pooling: str = ""  # "": per token; cls | mean: one vector per row

    @nn.compact
    def __call__(
        self, x: Array, mask: AttentionMask, deterministic: bool, first: Array | None = None
    ) -> Array:
        """x: [batch, length, hidden] -> float32 [batch, (length,) features]; packed rows
        (`first`: [batch, S] first_positions): the classifier pools each sequence ->
        [batch, S, features]."""
        cfg = self.cfg
        if self.pooling == "cls":
            x = x[:, 0] if first is None else gather_positions(x, first)
        elif self.pooling == "mean" and first is None:
            real = (mask.segments > 0).astype(jnp.float32)[:, :, None]  # [b, l, 1]
            x = (jnp.sum(x.astype(jnp.float32) * real, axis=1) / jnp.sum(real, axis=1)).astype(
                x.dtype
            )
        elif self.pooling == "mean":  # each packed sequence's tokens: [b, S, l]
            number = jnp.arange(1, first.shape[1] + 1, dtype=jnp.int32)
            own = (mask.segments[:, None, :] == number[None, :, None]).astype(jnp.float32)
            x = (
                jnp.einsum("bsl,bld->bsd", own, x.astype(jnp.float32))
                / jnp.maximum(jnp.sum(own, axis=-1), 1.0)[..., None]
            ).astype(x.dtype)
        h = dense(cfg, cfg.hidden_size, (ax.EMBED, ax.EMBED), "transform", cfg.head_bias)(x)
        h = layer_norm(cfg, "layer_norm")(ACTIVATIONS[cfg.hidden_act](h))
        h = nn.Dropout(cfg.classifier_dropout_rate)(h, deterministic=deterministic)
        return dense(cfg, self.features, (ax.EMBED, None), "out")(h).astype(jnp.float32)
