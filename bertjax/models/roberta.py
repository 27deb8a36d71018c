"""RoBERTa (Liu et al.): BERT without NSP, positions counted from padding_idx + 1, one
token type, a GELU LM head whatever hidden_act, and a byte-level BPE vocabulary.

Pretraining model: encoder + MLM (transformers' RobertaForMaskedLM). Released
checkpoints often also carry the base model's pooler; it is kept when present.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bertjax.convert import names
from bertjax.models import bert
from bertjax.models.family import Family, HFNames, Need

if TYPE_CHECKING:
    from bertjax.models.config import ModelConfig


def validate(cfg: ModelConfig, need: Need) -> None:
    bert.rules(cfg, need, positions_from_padding=True)


def from_hf_config(content: Mapping[str, Any], source: str) -> dict[str, Any]:
    fields = bert.from_hf_config(content, source)
    fields.update(
        positions_from_padding=True,
        pad_token_id=bert.HFConfig(content, source).get("pad_token_id", 1),
    )
    return fields


HF = HFNames(
    model_type="roberta",
    prefix="roberta",
    architectures={
        "RobertaModel": (),
        "RobertaForMaskedLM": ("mlm",),
        "RobertaForSequenceClassification": ("classifier",),
        "RobertaForTokenClassification": ("token_classifier",),
        "RobertaForQuestionAnswering": ("span",),
    },
    encoder=bert.encoder_map,
    heads={
        "pooler": lambda cfg, p: names.linear(f"{p}pooler.dense", ("pooler", "dense")),
        "mlm": lambda cfg, p: names.mlm("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
        **bert.task_heads(classifier=["classifier.dense", "classifier.out_proj"]),
    },
    tied={
        "mlm": {
            "lm_head.decoder.weight": "{p}embeddings.word_embeddings.weight",
            "lm_head.decoder.bias": "lm_head.bias",
        }
    },
    to_config=lambda cfg: bert.hf_config(cfg, "roberta"),
    from_config=from_hf_config,
    token_ids=("bos_token_id", "eos_token_id"),
)

FAMILY = Family(
    name="roberta",
    defaults=dict(
        family="roberta",
        vocab_size=50265,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        positions_from_padding=True,
        layer_norm_eps=1e-5,
    ),
    presets={"roberta_base": bert.size(12, 768), "roberta_large": bert.size(24, 1024, 16)},
    heads=("pooler", "mlm", "classifier", "token_classifier", "span"),
    pretrain_heads=("mlm",),
    task="mlm",
    instances="full_sentences",
    tokenizer_kind="bpe",
    tokenizer_class="RobertaTokenizer",
    classifier="cls_tanh",
    hf=HF,
    validate=validate,
    mlm_activation="gelu",  # fairseq's and transformers' LM head use GELU whatever hidden_act
)
