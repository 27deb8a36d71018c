"""DistilBERT (Sanh et al.): no token types, no pooler, learned or sinusoidal positions,
a LayerNorm epsilon fixed at 1e-12 and its own parameter names.

Pretraining model: encoder + MLM (transformers' DistilBertForMaskedLM); distillation
from a teacher is a task (bertjax/tasks/distill.py), not the family.
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
    bert.rules(cfg, need, token_types=False, sinusoidal=True)
    need(cfg.layer_norm_eps == 1e-12, "layer_norm_eps", "DistilBERT fixes it at 1e-12")


def to_hf_config(cfg: ModelConfig) -> dict[str, Any]:
    return {
        **bert.hf_common(cfg),
        "model_type": "distilbert",
        "dim": cfg.hidden_size,
        "n_layers": cfg.num_layers,
        "n_heads": cfg.num_heads,
        "hidden_dim": cfg.intermediate_size,
        "activation": cfg.hidden_act,
        "dropout": cfg.dropout_rate,
        "attention_dropout": cfg.attention_dropout_rate,
        "sinusoidal_pos_embds": cfg.sinusoidal_positions,
        "seq_classif_dropout": cfg.classifier_dropout_rate,
        "qa_dropout": cfg.dropout_rate,
    }


def from_hf_config(content: Mapping[str, Any], source: str) -> dict[str, Any]:
    c = bert.HFConfig(content, source)
    return dict(
        vocab_size=c.get("vocab_size"),
        hidden_size=c.get("dim"),
        num_layers=c.get("n_layers"),
        num_heads=c.get("n_heads"),
        intermediate_size=c.get("hidden_dim"),
        hidden_act=c.act("activation"),
        max_position_embeddings=c.get("max_position_embeddings"),
        type_vocab_size=0,
        dropout_rate=c.get("dropout", 0.1),
        attention_dropout_rate=c.get("attention_dropout", 0.1),
        initializer_range=c.get("initializer_range", 0.02),
        pad_token_id=c.get("pad_token_id", 0),
        sinusoidal_positions=bool(c.get("sinusoidal_pos_embds", False)),
        classifier_dropout_rate=c.get("seq_classif_dropout", 0.2),
    )


LAYER_NAMES: names.LayerNames = (
    "attention.q_lin",
    "attention.k_lin",
    "attention.v_lin",
    "attention.out_lin",
    "sa_layer_norm",
    "ffn.lin1",
    "ffn.lin2",
    "output_layer_norm",
)

HF = HFNames(
    model_type="distilbert",
    prefix="distilbert",
    architectures={
        "DistilBertModel": (),
        "DistilBertForMaskedLM": ("mlm",),
        "DistilBertForSequenceClassification": ("classifier",),
        "DistilBertForTokenClassification": ("token_classifier",),
        "DistilBertForQuestionAnswering": ("span",),
    },
    encoder=lambda cfg, p: [
        *names.embeddings(f"{p}embeddings", cfg),
        *names.layers(f"{p}transformer.layer.{{i}}", cfg, LAYER_NAMES),
    ],
    heads={
        "mlm": lambda cfg, p: names.mlm(
            "vocab_transform", "vocab_layer_norm", "vocab_projector.bias"
        ),
        **bert.task_heads(classifier=["pre_classifier", "classifier"]),
    },
    tied={"mlm": {"vocab_projector.weight": "{p}embeddings.word_embeddings.weight"}},
    to_config=to_hf_config,
    from_config=from_hf_config,
)

FAMILY = Family(
    name="distilbert",
    defaults=dict(
        family="distilbert", vocab_size=30522, type_vocab_size=0, classifier_dropout_rate=0.2
    ),
    presets={"distilbert_base": bert.size(6, 768, 12)},
    heads=("mlm", "classifier", "token_classifier", "span"),
    pretrain_heads=("mlm",),
    task="mlm",
    instances="mlm",
    tokenizer_kind="wordpiece",
    tokenizer_class="DistilBertTokenizer",
    classifier="pre_relu",
    hf=HF,
    validate=validate,
    token_dropout="hidden",
    span_dropout=True,
)
