"""ALBERT (Lan et al.): factorized embeddings (E -> H, kept even when E == H), cross-layer
sharing in `num_hidden_groups` groups of `inner_group_num` layers, SOP instead of NSP,
a SentencePiece vocabulary.

Pretraining model: encoder + pooler + MLM + SOP (transformers' AlbertForPreTraining).
Factorization, sharing and the MLM head's H -> E transform live in the shared layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bertjax.convert import names
from bertjax.models import bert
from bertjax.models.family import Family, GoogleNames, HFNames, Need

if TYPE_CHECKING:
    from bertjax.models.config import ModelConfig


def validate(cfg: ModelConfig, need: Need) -> None:
    bert.rules(cfg, need, factorized=True, shared_layers=True)


def to_hf_config(cfg: ModelConfig) -> dict[str, Any]:
    d = bert.hf_config(cfg, "albert")
    del d["classifier_dropout"]
    return {
        **d,
        "embedding_size": cfg.embed_dim,
        "num_hidden_groups": cfg.num_groups,
        "inner_group_num": cfg.inner_group_num,
        "classifier_dropout_prob": cfg.classifier_dropout_rate,
    }


def from_hf_config(content: Mapping[str, Any], source: str) -> dict[str, Any]:
    c = bert.HFConfig(content, source)
    return {
        **bert.from_hf_config(content, source),
        "embedding_size": c.get("embedding_size", 128),
        "num_hidden_groups": c.get("num_hidden_groups", 1),
        "inner_group_num": c.get("inner_group_num", 1),
        "classifier_dropout_rate": c.get("classifier_dropout_prob", 0.1),
    }


LAYER_NAMES: names.LayerNames = (
    "attention.query",
    "attention.key",
    "attention.value",
    "attention.dense",
    "attention.LayerNorm",
    "ffn",
    "ffn_output",
    "full_layer_layer_norm",
)


def encoder_map(cfg: ModelConfig, p: str) -> list[names.Entry]:
    entries = [
        *names.embeddings(f"{p}embeddings", cfg),
        *names.linear(f"{p}encoder.embedding_hidden_mapping_in", ("encoder", "embeddings_project")),
    ]
    for g in range(cfg.num_groups):
        for j in range(cfg.inner_group_num):
            ours = ("encoder", f"group_{g}" if cfg.shares_layers else f"layer_{g}")
            ours = (*ours, f"inner_{j}") if cfg.inner_group_num > 1 else ours
            entries += names.layer(
                f"{p}encoder.albert_layer_groups.{g}.albert_layers.{j}", ours, LAYER_NAMES
            )
    return entries


HF = HFNames(
    model_type="albert",
    prefix="albert",
    architectures={
        "AlbertModel": (),
        "AlbertForPreTraining": ("pooler", "mlm", "sop"),
        "AlbertForMaskedLM": ("mlm",),
        "AlbertForSequenceClassification": ("pooler", "classifier"),
        "AlbertForTokenClassification": ("token_classifier",),
        "AlbertForQuestionAnswering": ("span",),
    },
    encoder=encoder_map,
    heads={
        "pooler": lambda cfg, p: names.linear(f"{p}pooler", ("pooler", "dense")),
        "mlm": lambda cfg, p: names.mlm(
            "predictions.dense", "predictions.LayerNorm", "predictions.bias"
        ),
        "sop": lambda cfg, p: names.linear("sop_classifier.classifier", ("sop", "dense")),
        **bert.task_heads(),
    },
    tied={
        "mlm": {
            "predictions.decoder.weight": "{p}embeddings.word_embeddings.weight",
            "predictions.decoder.bias": "predictions.bias",
        }
    },
    to_config=to_hf_config,
    from_config=from_hf_config,
    label_args={"sop": "sentence_order_label"},
)

# google-research/albert: `bert/encoder/transformer/group_0/inner_group_0/...`.
GOOGLE = GoogleNames(
    marker="bert/encoder/transformer/",
    config_files=("albert_config.json", "config.json"),
    rules={
        "": (
            (
                r"^albert\.encoder\.albert_layer_groups\.(\d+)\.albert_layers\.(\d+)\.",
                r"bert.encoder.transformer.group_\1.inner_group_\2.",
            ),
            (r"\.attention\.(query|key|value)$", r".attention_1.self.\1"),
            (r"\.attention\.dense$", ".attention_1.output.dense"),
            (r"\.attention\.LayerNorm$", ".LayerNorm"),
            (r"\.ffn$", ".ffn_1.intermediate.dense"),
            (r"\.ffn_output$", ".ffn_1.intermediate.output.dense"),
            (r"\.full_layer_layer_norm$", ".LayerNorm_1"),
            (r"^albert\.pooler$", "bert.pooler.dense"),
            (r"^albert\.", "bert."),
            (r"^predictions\.", "cls.predictions.transform."),
        )
    },
    special={
        "predictions.bias": "cls/predictions/output_bias",
        "sop_classifier.classifier.weight": "cls/seq_relationship/output_weights",
        "sop_classifier.classifier.bias": "cls/seq_relationship/output_bias",
    },
    config_keys=("embedding_size", "num_hidden_groups", "inner_group_num"),
    # Research variants that the released models leave at these values; anything else
    # describes a network this codebase does not build.
    inert_keys={
        "down_scale_factor": 1,
        "net_structure_type": 0,
        "gap_size": 0,
        "num_memory_blocks": 0,
        "layers_to_keep": [],
    },
    # google-research/albert's "gelu" is the tanh approximation (HF: gelu_new);
    # BERT's released checkpoints were trained with the erf form (HF: gelu).
    gelu="gelu_new",
    vocab_files=("30k-clean.model", "spiece.model"),
    identity_projection="bert/encoder/embedding_hidden_mapping_in",
)

FAMILY = Family(
    name="albert",
    # ALBERT v2 presets: no dropout, tanh GELU, E=128, one shared group.
    defaults=dict(
        family="albert",
        vocab_size=30000,
        embedding_size=128,
        hidden_act="gelu_new",
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        num_hidden_groups=1,
        inner_group_num=1,
    ),
    presets={
        "albert_base": bert.size(12, 768, 12),
        "albert_large": bert.size(24, 1024, 16),
        "albert_xlarge": bert.size(24, 2048, 16),
        "albert_xxlarge": bert.size(12, 4096, 64),
    },
    heads=("pooler", "mlm", "sop", "classifier", "token_classifier", "span"),
    pretrain_heads=("pooler", "mlm", "sop"),
    task="mlm_sop",
    instances="sop",
    tokenizer_kind="sentencepiece-unigram",
    tokenizer_class="AlbertTokenizer",
    classifier="pooled",
    hf=HF,
    google=GOOGLE,
    validate=validate,
    always_projects_embeddings=True,
)
