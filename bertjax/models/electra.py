"""ELECTRA: a small MLM generator and a discriminator sharing one embedding module.

The embeddings (word, position, token type, LayerNorm) are created once, as in
the original implementation; each tower projects E to its own width when they
differ (`embeddings_project`). Training (issue: ELECTRA objective) calls
`generate` on the masked input and `discriminate` on the corrupted one.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.models.config import ModelConfig
from bertjax.models.heads import DiscriminatorHead, MLMHead
from bertjax.models.layers import Embeddings, Encoder

Array = jax.Array


class ElectraForPreTraining(nn.Module):
    """`__call__` runs both towers on the same input (init, parity checks)."""

    cfg: ModelConfig

    def setup(self) -> None:
        cfg, gcfg = self.cfg, self.cfg.generator_config()
        self.embeddings = Embeddings(cfg)
        self.discriminator = Encoder(cfg)
        self.discriminator_head = DiscriminatorHead(cfg)
        self.generator = Encoder(gcfg)
        # The generator head's activation is fixed to GELU in the original and in HF.
        self.generator_head = MLMHead(gcfg, activation="gelu")

    def _tower(self, encoder: Encoder, input_ids: Array, token_type_ids: Array | None,
               attention_mask: Array | None, deterministic: bool) -> tuple[Array, dict[str, Any]]:
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids, deterministic)
        x, states = encoder(x, attention_mask, deterministic)
        return x, {"sequence": x, "hidden_states": states}

    def generate(self, input_ids: Array, token_type_ids: Array | None = None,
                 attention_mask: Array | None = None, masked_positions: Array | None = None,
                 deterministic: bool = True) -> tuple[Array, dict[str, Any]]:
        """-> (float32 MLM logits [b, l or P, vocab], out)."""
        x, out = self._tower(self.generator, input_ids, token_type_ids, attention_mask,
                             deterministic)
        return self.generator_head(x, self.embeddings.table(), masked_positions), out

    def discriminate(self, input_ids: Array, token_type_ids: Array | None = None,
                     attention_mask: Array | None = None,
                     deterministic: bool = True) -> tuple[Array, dict[str, Any]]:
        """-> (float32 replaced-token logits [b, l], out)."""
        x, out = self._tower(self.discriminator, input_ids, token_type_ids, attention_mask,
                             deterministic)
        return self.discriminator_head(x), out

    def __call__(self, input_ids: Array, token_type_ids: Array | None = None,
                 attention_mask: Array | None = None, masked_positions: Array | None = None,
                 deterministic: bool = True) -> tuple[dict[str, Array], dict[str, Any]]:
        gen, gen_out = self.generate(input_ids, token_type_ids, attention_mask,
                                     masked_positions, deterministic)
        disc, disc_out = self.discriminate(input_ids, token_type_ids, attention_mask,
                                           deterministic)
        return ({"mlm": gen, "rtd": disc},
                {"generator": gen_out, "discriminator": disc_out, **disc_out})
