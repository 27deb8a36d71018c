"""The five families, by name. Each record lives in its own file (bertjax/models/family.py
says what a record holds); this module only collects them."""

from __future__ import annotations

from bertjax.models import albert, bert, distilbert, electra, roberta
from bertjax.models.family import Family

FAMILIES: dict[str, Family] = {f.name: f for f in (
    bert.FAMILY, roberta.FAMILY, albert.FAMILY, distilbert.FAMILY, electra.FAMILY)}


def family(name: str) -> Family:
    """The record of family `name`; a ValueError listing the families otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; expected one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def presets() -> dict[str, dict]:
    """Every preset name -> its ModelConfig fields (family defaults + sizes)."""
    return {name: {**f.defaults, **sizes} for f in FAMILIES.values()
            for name, sizes in f.presets.items()}
