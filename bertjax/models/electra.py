"""ELECTRA (Clark et al.): a small MLM generator and a discriminator trained on its samples,
sharing one embedding module (word, position, token type, LayerNorm) as the original
does; each tower projects E to its own width when they differ (`embeddings_project`).

Pretraining model: encoder (the discriminator) + `discriminator` head (replaced-token
detection) + `generator` head (a smaller tower and its MLM head on the shared
embeddings). transformers keeps the two as separate models; `export` writes
DIR/discriminator (ElectraForPreTraining) and DIR/generator (ElectraForMaskedLM). A
discriminator alone is encoder + `discriminator`; a generator alone is an ELECTRA model
of the generator's size with an `mlm` head.
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
    bert.rules(cfg, need, factorized=True)


def from_hf_config(content: Mapping[str, Any], source: str) -> dict[str, Any]:
    return {
        **bert.from_hf_config(content, source),
        "embedding_size": bert.HFConfig(content, source).get("embedding_size", 128),
    }


def encoder_map(cfg: ModelConfig, p: str) -> list[names.Entry]:
    project = (
        names.linear(f"{p}embeddings_project", ("encoder", "embeddings_project"))
        if cfg.projects_embeddings
        else []
    )
    return [
        *names.embeddings(f"{p}embeddings", cfg),
        *project,
        *names.layers(f"{p}encoder.layer.{{i}}", cfg, bert.LAYER_NAMES),
    ]


HF = HFNames(
    model_type="electra",
    prefix="electra",
    architectures={
        "ElectraModel": (),
        "ElectraForPreTraining": ("discriminator",),
        "ElectraForMaskedLM": ("mlm",),
        "ElectraForSequenceClassification": ("classifier",),
        "ElectraForTokenClassification": ("token_classifier",),
        "ElectraForQuestionAnswering": ("span",),
    },
    encoder=encoder_map,
    heads={
        "discriminator": lambda cfg, p: [
            *names.linear("discriminator_predictions.dense", ("discriminator", "dense")),
            *names.linear(
                "discriminator_predictions.dense_prediction", ("discriminator", "prediction")
            ),
        ],
        "mlm": lambda cfg, p: names.mlm(
            "generator_predictions.dense",
            "generator_predictions.LayerNorm",
            "generator_lm_head.bias",
        ),
        **bert.task_heads(classifier=["classifier.dense", "classifier.out_proj"]),
    },
    tied={"mlm": {"generator_lm_head.weight": "{p}embeddings.word_embeddings.weight"}},
    to_config=lambda cfg: {**bert.hf_config(cfg, "electra"), "embedding_size": cfg.embed_dim},
    from_config=from_hf_config,
)

# google-research/electra: the discriminator under electra/, the generator tower under
# generator/ reading the shared electra/embeddings.
GOOGLE = GoogleNames(
    marker="electra/",
    config_files=("hparams.json", "config.json"),
    rules={
        "discriminator": (
            (r"\.layer\.(\d+)\.", r".layer_\1."),
            (r"^discriminator_predictions\.dense_prediction$", "discriminator_predictions.dense_1"),
        ),
        "generator": (
            (r"\.layer\.(\d+)\.", r".layer_\1."),
            (r"^electra\.(encoder|embeddings_project)", r"generator.\1"),
        ),
    },
    special={"generator_lm_head.bias": "generator_predictions/output_bias"},
    sizes_from_tensors=True,  # ELECTRA ships no config file; hparams.json is optional
)


def _sizes(
    layers: int, hidden: int, heads: int, embedding: int, gen_hidden: int, gen_heads: int
) -> dict[str, Any]:
    return {
        **bert.size(layers, hidden, heads),
        "embedding_size": embedding,
        "generator_hidden_size": gen_hidden,
        "generator_num_heads": gen_heads,
        "generator_intermediate_size": 4 * gen_hidden,
    }


FAMILY = Family(
    name="electra",
    defaults=dict(family="electra", vocab_size=30522),
    # The generator is 1/4 of the discriminator's width (small: 1/4 too, as released).
    # electra_tiny is bert_tiny's size, for CPU runs; not a released model.
    presets={
        "electra_tiny": _sizes(2, 128, 2, 128, 32, 1),
        "electra_small": _sizes(12, 256, 4, 128, 64, 1),
        "electra_base": _sizes(12, 768, 12, 768, 256, 4),
        "electra_large": _sizes(24, 1024, 16, 1024, 256, 4),
    },
    heads=("mlm", "discriminator", "generator", "classifier", "token_classifier", "span"),
    pretrain_heads=("discriminator", "generator"),
    task="electra",
    instances="mlm",
    tokenizer_kind="wordpiece",
    tokenizer_class="ElectraTokenizer",
    classifier="cls_gelu",
    hf=HF,
    google=GOOGLE,
    validate=validate,
    mlm_activation="gelu",  # the generator's head uses GELU in the original and in HF
)
