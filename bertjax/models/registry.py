"""The six families, by name, and their presets. Each record lives in its own file
(bertjax/models/family.py says what a record holds); this module only collects them.
`ModelConfig.from_preset(name)` (bertjax/models/config.py) builds a preset's config."""

from __future__ import annotations

import difflib
from typing import Any

from bertjax.models import albert, bert, distilbert, electra, modernbert, roberta
from bertjax.models.family import Family

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        bert.FAMILY,
        roberta.FAMILY,
        albert.FAMILY,
        distilbert.FAMILY,
        electra.FAMILY,
        modernbert.FAMILY,
    )
}


def family(name: str) -> Family:
    """The record of family `name`; a ValueError listing the families otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; expected one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


# Every preset name -> its ModelConfig fields (family defaults + sizes).
PRESETS: dict[str, dict[str, Any]] = {
    name: {**f.defaults, **sizes} for f in FAMILIES.values() for name, sizes in f.presets.items()
}


def suggest(name: str) -> str:
    """ "did you mean 'bert_tiny'?" for a misspelt preset (difflib's closest names over
    every preset), else a few presets of the same family as examples."""
    close = difflib.get_close_matches(name, PRESETS, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    pool = sorted(p for p in PRESETS if p.split("_")[0] == name.split("_")[0]) or sorted(PRESETS)
    named = [p for p in pool if "_L" not in p]  # bert_tiny before the grid's bert_L2_H128
    return "e.g. " + ", ".join((named + [p for p in pool if "_L" in p])[:8])
