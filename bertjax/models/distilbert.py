"""DistilBERT: no token types, no pooler, no NSP (all config values), MLM head only."""

from __future__ import annotations

from bertjax.models.bert import BertForPreTraining


class DistilBertForMaskedLM(BertForPreTraining):
    pair_head: str | None = None
