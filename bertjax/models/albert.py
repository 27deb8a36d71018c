"""ALBERT: factorized embeddings (E -> H), cross-layer sharing, SOP head.

Factorization (`embedding_size`), sharing (`num_hidden_groups`, `inner_group_num`)
and the MLM head's H -> E transform all live in the shared layers; ALBERT only
renames the pair head.
"""

from __future__ import annotations

from bertjax.models.bert import BertForPreTraining


class AlbertForPreTraining(BertForPreTraining):
    pair_head: str | None = "sop"
