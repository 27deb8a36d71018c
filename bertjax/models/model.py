"""A model: a family's encoder (embeddings + layers) and the named heads `cfg.heads` lists.

Every family is this one module; what differs (embedding scheme, layer sharing, head
styles and activations) are config values and the family record
(bertjax/models/family.py). Parameters sit under `embeddings`, `encoder` and one
entry per head (`pooler`, `mlm`, `nsp`, `sop`, `discriminator`, `generator/{encoder,
mlm}`, `classifier`, `token_classifier`, `span`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.models.attention import AttentionMask
from bertjax.models.config import ModelConfig
from bertjax.models.encoder import Encoder
from bertjax.models.heads import (
    ClassifierHead,
    DiscriminatorHead,
    GeneratorHead,
    MLMHead,
    PairHead,
    PredictionHead,
    TokenHead,
    gather_positions,
)
from bertjax.models.layers import Embeddings, Pooler
from bertjax.models.registry import family

Array = jax.Array


class Model(nn.Module):
    """Returns `(logits, out)`.

    logits: one float32 array per head that scores something (the pooler does not):
      mlm, generator [batch, length or P, vocab]; nsp, sop [batch, (S,) 2];
      discriminator [batch, length]; classifier [batch, (S,) num_labels];
      token_classifier [batch, length, num_labels]; span [batch, length, 2].
    out: {"sequence": [b, l, hidden], "hidden_states": L + 1 arrays [b, l, hidden],
          "pooled": [b, (S,) hidden] (with a pooler), "generator": the generator tower's
          {"sequence", "hidden_states"} (when it ran)}.
    (S,): with `first_positions` [batch, S] (packed rows, docs/packing.md), the heads
    that read one vector per sequence read each sequence's first token.
    """

    cfg: ModelConfig

    def setup(self) -> None:
        cfg = self.cfg
        fam = family(cfg.family)
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        token_dropout = (
            cfg.classifier_dropout_rate if fam.token_dropout == "classifier" else cfg.dropout_rate
        )
        make = {
            "pooler": lambda: Pooler(cfg),
            "mlm": lambda: MLMHead(cfg, activation=fam.mlm_activation),
            "nsp": lambda: PairHead(cfg),
            "sop": lambda: PairHead(cfg),
            "discriminator": lambda: DiscriminatorHead(cfg),
            "generator": lambda: GeneratorHead(cfg.generator_config()),
            "classifier": lambda: ClassifierHead(cfg, fam.classifier),
            "token_classifier": lambda: TokenHead(cfg, cfg.num_labels, token_dropout),
            "span": lambda: TokenHead(cfg, 2, cfg.dropout_rate if fam.span_dropout else 0.0),
        }
        if fam.classifier == "prediction":  # ModernBERT: every task head transforms first
            make.update(
                classifier=lambda: PredictionHead(cfg, cfg.num_labels, cfg.classifier_pooling),
                token_classifier=lambda: PredictionHead(cfg, cfg.num_labels),
                span=lambda: PredictionHead(cfg, 2),
            )
        for name in cfg.heads:
            setattr(self, name, make[name]())

    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array | None = None,
        attention_mask: Array | None = None,
        masked_positions: Array | None = None,
        deterministic: bool = True,
        heads: Sequence[str] | None = None,
        packed: bool = False,
        first_positions: Array | None = None,
    ) -> tuple[dict[str, Array], dict[str, Any]]:
        """input_ids, token_type_ids, attention_mask: [batch, length]; a missing mask
        attends everywhere. attention_mask holds segment numbers (attention.AttentionMask:
        0 padding, k the row's k-th sequence); `packed` says rows may hold several.
        masked_positions: [batch, P] selects the sparse MLM head
        (mlm, generator); None scores every position. heads: the heads to run (None:
        all of cfg.heads); the encoder runs unless only the generator is asked for.
        first_positions: [batch, S] the first token of each packed sequence
        (heads.first_positions); None: the row's first token, one sequence per row."""
        cfg = self.cfg
        heads = cfg.heads if heads is None else tuple(heads)
        unknown = [h for h in heads if h not in cfg.heads]
        if unknown:
            raise ValueError(
                f"the model has no head {unknown[0]!r}; its heads: {', '.join(cfg.heads) or 'none'}"
            )
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        mask = AttentionMask.of(attention_mask, packed)
        e = self.embeddings(input_ids, token_type_ids, deterministic, mask)
        logits: dict[str, Array] = {}
        out: dict[str, Any] = {}
        if "generator" in heads:
            logits["generator"], out["generator"] = self.generator(
                e, mask, self.embeddings.table(), masked_positions, deterministic
            )
        if heads == ("generator",):
            return logits, out
        x, states = self.encoder(e, mask, deterministic)
        out.update(sequence=x, hidden_states=states)
        # [b, (S,) hidden]: the vector of each sequence's first token ([CLS] / <s>)
        first = x[:, 0] if first_positions is None else gather_positions(x, first_positions)
        if "pooler" in cfg.heads:
            out["pooled"] = self.pooler(first[:, None])  # the pooler reads [:, 0]
        for name in heads:
            if isinstance(getattr(self, name, None), PredictionHead):
                logits[name] = getattr(self, name)(x, mask, deterministic, first_positions)
            elif name in ("mlm",):
                logits[name] = self.mlm(x, self.embeddings.table(), masked_positions)
            elif name in ("nsp", "sop"):
                logits[name] = getattr(self, name)(out["pooled"])
            elif name == "discriminator":
                logits[name] = self.discriminator(x)
            elif name == "classifier":
                logits[name] = self.classifier(first, out.get("pooled"), deterministic)
            elif name in ("token_classifier", "span"):
                logits[name] = getattr(self, name)(x, deterministic)
        return logits, out
