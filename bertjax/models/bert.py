"""BERT for pretraining: embeddings, encoder, pooler, MLM head and NSP head.

The other families subclass this module and say only how they differ.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.models.config import ModelConfig
from bertjax.models.heads import MLMHead, PairHead
from bertjax.models.layers import Embeddings, Encoder, Pooler

Array = jax.Array


class BertForPreTraining(nn.Module):
    """Returns `(logits, out)`.

    logits: {"mlm": [batch, length or P, vocab], <pair_head>: [batch, 2]} in float32.
    out: {"sequence": [b, l, hidden], "hidden_states": L + 1 arrays [b, l, hidden],
          "pooled": [b, hidden] when the model has a pooler}.
    """

    cfg: ModelConfig
    pair_head: str | None = "nsp"  # key of the sentence-pair head; None for MLM-only families
    mlm_activation: str = ""  # MLM transform activation; empty: cfg.hidden_act

    def setup(self) -> None:
        cfg = self.cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        if cfg.use_pooler:
            self.pooler = Pooler(cfg)
        self.mlm = MLMHead(cfg, activation=self.mlm_activation)
        if self.pair_head:
            setattr(self, self.pair_head, PairHead(cfg))

    def encode(self, input_ids: Array, token_type_ids: Array | None = None,
               attention_mask: Array | None = None,
               deterministic: bool = True) -> tuple[Array, dict[str, Any]]:
        """[batch, length] ids -> ([b, l, hidden], out). A missing mask attends everywhere."""
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids, deterministic)
        x, states = self.encoder(x, attention_mask, deterministic)
        out: dict[str, Any] = {"sequence": x, "hidden_states": states}
        if self.cfg.use_pooler:
            out["pooled"] = self.pooler(x)
        return x, out

    def __call__(self, input_ids: Array, token_type_ids: Array | None = None,
                 attention_mask: Array | None = None, masked_positions: Array | None = None,
                 deterministic: bool = True) -> tuple[dict[str, Array], dict[str, Any]]:
        """masked_positions: [batch, P] selects the sparse MLM head; None scores all."""
        x, out = self.encode(input_ids, token_type_ids, attention_mask, deterministic)
        logits = {"mlm": self.mlm(x, self.embeddings.table(), masked_positions)}
        if self.pair_head:
            logits[self.pair_head] = getattr(self, self.pair_head)(out["pooled"])
        return logits, out
