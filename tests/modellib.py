"""The one way the tests build a tiny model: `tiny(family, sizes, **overrides)`.

A family's tiny model is BERT's with the few fields that make it that family (FAMILY
below: RoBERTa's padding-offset positions, ALBERT's factorized embedding, ...), at the
sizes a test picks. Sizes are a separate argument because tests size their models for
what they check (a 1-layer model for sharding, 4 layers for layer sharing, a vocabulary
that fits a tokenizer) and a family's fields may still override them (ModernBERT's
registry defaults). FAMILIES is the list to parametrize over.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bertjax.models import ModelConfig
from bertjax.models.registry import family as _family

# Two 32-wide layers: every family builds, initializes and compiles in seconds on a CPU.
SIZES: dict[str, Any] = dict(
    vocab_size=97,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    intermediate_size=48,
    max_position_embeddings=40,
)
# Sixteen wide and one layer deep: for the tests that build several models each (a
# distillation teacher and its student) or check a loss at initialisation.
NARROW: dict[str, Any] = dict(
    vocab_size=60,
    hidden_size=16,
    num_layers=1,
    num_heads=2,
    intermediate_size=32,
    max_position_embeddings=16,
)

# What makes each family's tiny model that family, on top of BERT's defaults.
FAMILY: dict[str, dict[str, Any]] = {
    "bert": dict(family="bert"),
    "roberta": dict(
        family="roberta", pad_token_id=1, positions_from_padding=True, type_vocab_size=1
    ),
    "albert": dict(family="albert", embedding_size=16, num_hidden_groups=1, hidden_act="gelu_new"),
    "distilbert": dict(family="distilbert", type_vocab_size=0, sinusoidal_positions=True),
    "electra": dict(
        family="electra",
        embedding_size=16,
        generator_hidden_size=8,
        generator_num_heads=2,
        generator_intermediate_size=16,
    ),
    # The registry's defaults whole: its switches (RoPE, GLU, pre-norm, local windows, no
    # biases) and also its full vocabulary and position table, unless overridden.
    "modernbert": {**_family("modernbert").defaults, "pad_token_id": 1},
}
FAMILIES: tuple[str, ...] = tuple(FAMILY)
# ELECTRA's discriminator alone, as fine-tuning loads it: overrides for tiny("electra").
NO_GENERATOR: dict[str, int] = dict(
    generator_hidden_size=0, generator_num_heads=0, generator_intermediate_size=0
)


def fields(family: str = "bert", sizes: Mapping[str, Any] = SIZES, /, **overrides: Any) -> dict:
    """The ModelConfig fields of `family`'s tiny model: `sizes`, then the family's own
    fields (FAMILY), then `overrides` (any ModelConfig field: a test's own switch)."""
    if family not in FAMILY:
        raise ValueError(f"no tiny model for family {family!r}; expected one of {FAMILIES}")
    return {**sizes, **FAMILY[family], **overrides}


def tiny(
    family: str = "bert", sizes: Mapping[str, Any] = SIZES, /, **overrides: Any
) -> ModelConfig:
    """`family`'s tiny model as a validated ModelConfig (fields() says what it holds)."""
    return ModelConfig.from_dict(fields(family, sizes, **overrides))
