"""Named architectures: the published sizes of the five families and the 24 small BERTs.

`model_config(name)` returns the validated ModelConfig of a preset; configs/*.py
files use it so a preset is defined once.
"""

from __future__ import annotations

from typing import Any

from bertjax.models.config import ConfigError, ModelConfig

_BERT = dict(family="bert", vocab_size=30522, max_position_embeddings=512, type_vocab_size=2)
_ROBERTA = dict(family="roberta", vocab_size=50265, max_position_embeddings=514,
                type_vocab_size=1, pad_token_id=1, positions_from_padding=True,
                layer_norm_eps=1e-5, use_pooler=False)
# ALBERT v2 presets: no dropout, tanh GELU, E=128, one shared group.
_ALBERT = dict(family="albert", vocab_size=30000, embedding_size=128, hidden_act="gelu_new",
               dropout_rate=0.0, attention_dropout_rate=0.0, num_hidden_groups=1,
               inner_group_num=1)
_DISTILBERT = dict(family="distilbert", vocab_size=30522, type_vocab_size=0, use_pooler=False)
_ELECTRA = dict(family="electra", vocab_size=30522, use_pooler=False)


def _size(layers: int, hidden: int, heads: int | None = None, ffn: int | None = None) -> dict:
    return dict(num_layers=layers, hidden_size=hidden, num_heads=heads or hidden // 64,
                intermediate_size=ffn or 4 * hidden)


PRESETS: dict[str, dict[str, Any]] = {
    # Google's grid of 24 small BERTs: L x H, heads H/64, FFN 4H.
    **{f"bert_L{layers}_H{hidden}": {**_BERT, **_size(layers, hidden)}
       for layers in (2, 4, 6, 8, 10, 12) for hidden in (128, 256, 512, 768)},
    "bert_tiny": {**_BERT, **_size(2, 128)},
    "bert_mini": {**_BERT, **_size(4, 256)},
    "bert_small": {**_BERT, **_size(4, 512)},
    "bert_medium": {**_BERT, **_size(8, 512)},
    "bert_base": {**_BERT, **_size(12, 768)},
    "bert_large": {**_BERT, **_size(24, 1024, 16)},
    "roberta_base": {**_ROBERTA, **_size(12, 768)},
    "roberta_large": {**_ROBERTA, **_size(24, 1024, 16)},
    "albert_base": {**_ALBERT, **_size(12, 768, 12)},
    "albert_large": {**_ALBERT, **_size(24, 1024, 16)},
    "albert_xlarge": {**_ALBERT, **_size(24, 2048, 16)},
    "albert_xxlarge": {**_ALBERT, **_size(12, 4096, 64)},
    "distilbert_base": {**_DISTILBERT, **_size(6, 768, 12)},
    # ELECTRA: the generator is 1/4 of the discriminator's width (small: 1/4 too, as released).
    # electra_tiny is bert_tiny's size, for CPU runs; not a released model.
    "electra_tiny": {**_ELECTRA, **_size(2, 128), "embedding_size": 128,
                     "generator_hidden_size": 32, "generator_num_heads": 1,
                     "generator_intermediate_size": 128},
    "electra_small": {**_ELECTRA, **_size(12, 256, 4), "embedding_size": 128,
                      "generator_hidden_size": 64, "generator_num_heads": 1,
                      "generator_intermediate_size": 256},
    "electra_base": {**_ELECTRA, **_size(12, 768, 12), "embedding_size": 768,
                     "generator_hidden_size": 256, "generator_num_heads": 4,
                     "generator_intermediate_size": 1024},
    "electra_large": {**_ELECTRA, **_size(24, 1024, 16), "embedding_size": 1024,
                      "generator_hidden_size": 256, "generator_num_heads": 4,
                      "generator_intermediate_size": 1024},
}


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The ModelConfig of preset `name`; unknown names are an error listing a few valid ones."""
    if name not in PRESETS:
        close = sorted(p for p in PRESETS if p.split("_")[0] == name.split("_")[0])[:8]
        hint = ", ".join(close or sorted(PRESETS)[:8])
        raise ConfigError(f"unknown preset {name!r}; e.g. {hint}")
    return ModelConfig.from_dict({**PRESETS[name], **overrides})


def with_generator_fraction(cfg: ModelConfig, fraction: float) -> ModelConfig:
    """ELECTRA with a generator `fraction` of the discriminator's width (heads of 64 where
    the width allows, else the most heads up to that which divide it; FFN 4x), as the
    paper sizes it (1/4 small and large, 1/3 base)."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"electra.generator_fraction={fraction}: must be in (0, 1]")
    hidden = max(1, int(round(cfg.hidden_size * fraction)))
    heads = next(h for h in range(max(1, hidden // 64), 0, -1) if hidden % h == 0)
    return cfg.replace(generator_hidden_size=hidden, generator_num_heads=heads,
                       generator_intermediate_size=4 * hidden)


def from_config(config: Any) -> ModelConfig:
    """The ModelConfig of an ml-collections config: config.model, with the config-level
    knobs applied (ELECTRA's electra.generator_fraction when set)."""
    cfg = ModelConfig.from_dict(config.model.to_dict())
    if cfg.family == "electra" and "electra" in config and config.electra.generator_fraction:
        cfg = with_generator_fraction(cfg, float(config.electra.generator_fraction))
    return cfg
