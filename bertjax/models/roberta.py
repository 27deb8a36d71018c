"""RoBERTa: BERT without NSP, positions counted from padding_idx + 1, one token type.

The differences in embeddings (positions_from_padding, type_vocab_size=1) and
in the pooler (absent from RobertaForMaskedLM) are config values, so the module
itself only drops the sentence-pair head and fixes the LM head's activation.
"""

from __future__ import annotations

from bertjax.models.bert import BertForPreTraining


class RobertaForMaskedLM(BertForPreTraining):
    pair_head: str | None = None
    mlm_activation: str = "gelu"  # fairseq's and HF's LM head use GELU whatever hidden_act
