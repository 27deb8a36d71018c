"""BERT (Devlin et al.): the reference family. The other family files say how they differ.

Pretraining model: encoder + pooler + MLM + NSP (transformers' BertForPreTraining).
The helpers here (sizes, the BERT-style transformers config, the shared config rules)
are reused by the families derived from BERT.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bertjax.convert import names
from bertjax.convert.names import ConversionError
from bertjax.models.family import Family, GoogleNames, HFNames, Need

if TYPE_CHECKING:
    from bertjax.models.config import ModelConfig


def size(layers: int, hidden: int, heads: int | None = None, ffn: int | None = None) -> dict:
    """A preset's sizes: heads of 64 and an FFN of 4H unless given."""
    return dict(
        num_layers=layers,
        hidden_size=hidden,
        num_heads=heads or hidden // 64,
        intermediate_size=ffn or 4 * hidden,
    )


# --- config rules shared by the families ------------------------------------------------


def rules(
    cfg: ModelConfig,
    need: Need,
    *,
    positions_from_padding: bool = False,
    token_types: bool = True,
    factorized: bool = False,
    shared_layers: bool = False,
    sinusoidal: bool = False,
) -> None:
    """What transformers can represent for a family, so every config exports faithfully."""
    name = cfg.family
    need(
        cfg.positions_from_padding == positions_from_padding,
        "positions_from_padding",
        "RoBERTa, and only RoBERTa, counts positions from pad_token_id + 1",
    )
    need(
        not cfg.sinusoidal_positions or sinusoidal,
        "sinusoidal_positions",
        "only DistilBERT has the sinusoidal option",
    )
    need(
        (cfg.type_vocab_size > 0) == token_types,
        "type_vocab_size",
        "DistilBERT, and only DistilBERT, has no token types (0)",
    )
    if not factorized:
        need(
            cfg.embed_dim == cfg.hidden_size,
            "embedding_size",
            f"{name} does not factorize embeddings",
        )
    if not shared_layers:
        need(not cfg.shares_layers, "num_hidden_groups", "only ALBERT shares layers")


def validate(cfg: ModelConfig, need: Need) -> None:
    rules(cfg, need)


# --- transformers config.json -----------------------------------------------------------

ACT_FROM_HF = {
    "gelu": "gelu",
    "gelu_new": "gelu_new",
    "gelu_pytorch_tanh": "gelu_new",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


class HFConfig:
    """Reads a transformers config.json; errors name the file and the key."""

    def __init__(self, content: Mapping[str, Any], source: str) -> None:
        self.content, self.source = content, source

    def get(self, key: str, default: Any = None) -> Any:
        # transformers writes absent optional values as null: treat them as missing.
        if self.content.get(key) is None:
            if default is None:
                raise ConversionError(f"{self.source}: key {key!r} is missing")
            return default
        return self.content[key]

    def act(self, key: str) -> str:
        name = self.get(key, "gelu")
        if name not in ACT_FROM_HF:
            raise ConversionError(f"{self.source}: {key}={name!r} is not supported")
        return ACT_FROM_HF[name]


def hf_common(cfg: ModelConfig) -> dict[str, Any]:
    """config.json keys every family writes."""
    return {
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "initializer_range": cfg.initializer_range,
        "pad_token_id": cfg.pad_token_id,
        "tie_word_embeddings": True,
    }


def hf_config(cfg: ModelConfig, model_type: str = "bert") -> dict[str, Any]:
    """BERT's config.json (RoBERTa, ALBERT and ELECTRA add to it)."""
    return {
        **hf_common(cfg),
        "model_type": model_type,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": cfg.hidden_act,
        "hidden_dropout_prob": cfg.dropout_rate,
        "attention_probs_dropout_prob": cfg.attention_dropout_rate,
        "type_vocab_size": cfg.type_vocab_size,
        "layer_norm_eps": cfg.layer_norm_eps,
        "classifier_dropout": cfg.classifier_dropout_rate,
    }


def from_hf_config(content: Mapping[str, Any], source: str) -> dict[str, Any]:
    """ModelConfig fields from BERT's config.json keys."""
    c = HFConfig(content, source)
    dropout = c.get("hidden_dropout_prob", 0.1)
    return dict(
        vocab_size=c.get("vocab_size"),
        hidden_size=c.get("hidden_size"),
        num_layers=c.get("num_hidden_layers"),
        num_heads=c.get("num_attention_heads"),
        intermediate_size=c.get("intermediate_size"),
        hidden_act=c.act("hidden_act"),
        max_position_embeddings=c.get("max_position_embeddings"),
        type_vocab_size=c.get("type_vocab_size", 2),
        layer_norm_eps=c.get("layer_norm_eps", 1e-12),
        dropout_rate=dropout,
        attention_dropout_rate=c.get("attention_probs_dropout_prob", 0.1),
        initializer_range=c.get("initializer_range", 0.02),
        pad_token_id=c.get("pad_token_id", 0),
        classifier_dropout_rate=c.get("classifier_dropout", dropout),
    )


# --- transformers parameter names -------------------------------------------------------

LAYER_NAMES: names.LayerNames = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
)


def encoder_map(cfg: ModelConfig, p: str) -> list[names.Entry]:
    return [
        *names.embeddings(f"{p}embeddings", cfg),
        *names.layers(f"{p}encoder.layer.{{i}}", cfg, LAYER_NAMES),
    ]


def task_heads(classifier: list[str] | None = None) -> dict[str, Any]:
    """Token classification and QA heads, named as every family's transformers classes
    name them; `classifier` overrides the sequence classifier's (dense, out) names."""

    def seq(cfg: ModelConfig, p: str) -> list[names.Entry]:
        if classifier is None:
            return names.linear("classifier", ("classifier", "out"))
        dense, out = classifier
        return [
            *names.linear(dense, ("classifier", "dense")),
            *names.linear(out, ("classifier", "out")),
        ]

    return {
        "classifier": seq,
        "token_classifier": lambda cfg, p: names.linear("classifier", ("token_classifier", "out")),
        "span": lambda cfg, p: names.linear("qa_outputs", ("span", "out")),
    }


HF = HFNames(
    model_type="bert",
    prefix="bert",
    architectures={
        "BertModel": (),
        "BertForPreTraining": ("pooler", "mlm", "nsp"),
        "BertForMaskedLM": ("mlm",),
        "BertForSequenceClassification": ("pooler", "classifier"),
        "BertForTokenClassification": ("token_classifier",),
        "BertForQuestionAnswering": ("span",),
    },
    encoder=encoder_map,
    heads={
        "pooler": lambda cfg, p: names.linear(f"{p}pooler.dense", ("pooler", "dense")),
        "mlm": lambda cfg, p: names.mlm(
            "cls.predictions.transform.dense",
            "cls.predictions.transform.LayerNorm",
            "cls.predictions.bias",
        ),
        "nsp": lambda cfg, p: names.linear("cls.seq_relationship", ("nsp", "dense")),
        **task_heads(),
    },
    tied={
        "mlm": {
            "cls.predictions.decoder.weight": "{p}embeddings.word_embeddings.weight",
            "cls.predictions.decoder.bias": "cls.predictions.bias",
        }
    },
    to_config=hf_config,
    from_config=from_hf_config,
    label_args={"nsp": "next_sentence_label"},
)

# google-research/bert: `bert/encoder/layer_3/output/dense/kernel`.
GOOGLE = GoogleNames(
    marker="bert/",
    config_files=("bert_config.json", "config.json"),
    rules={"": ((r"\.layer\.(\d+)\.", r".layer_\1."),)},
    special={
        "cls.predictions.bias": "cls/predictions/output_bias",
        "cls.seq_relationship.weight": "cls/seq_relationship/output_weights",
        "cls.seq_relationship.bias": "cls/seq_relationship/output_bias",
    },
)

_DEFAULTS = dict(family="bert", vocab_size=30522, max_position_embeddings=512, type_vocab_size=2)

FAMILY = Family(
    name="bert",
    defaults=_DEFAULTS,
    presets={
        # Google's grid of 24 small BERTs: L x H, heads H/64, FFN 4H.
        **{
            f"bert_L{layers}_H{hidden}": size(layers, hidden)
            for layers in (2, 4, 6, 8, 10, 12)
            for hidden in (128, 256, 512, 768)
        },
        "bert_tiny": size(2, 128),
        "bert_mini": size(4, 256),
        "bert_small": size(4, 512),
        "bert_medium": size(8, 512),
        "bert_base": size(12, 768),
        "bert_large": size(24, 1024, 16),
    },
    heads=("pooler", "mlm", "nsp", "classifier", "token_classifier", "span"),
    pretrain_heads=("pooler", "mlm", "nsp"),
    task="mlm_nsp",
    instances="nsp",
    tokenizer_kind="wordpiece",
    tokenizer_class="BertTokenizer",
    classifier="pooled",
    hf=HF,
    google=GOOGLE,
    validate=validate,
)
