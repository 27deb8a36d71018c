"""The transformers models (*parts*) a bertjax model is, and their name maps.

A bertjax model is one transformers model, but an ELECTRA model with a generator head:
two, "discriminator" and "generator" (hf.py's docstring). Each part's name map is the
family record's encoder map plus one map per head (bertjax/models/<family>.py,
bertjax/convert/names.py), under the base-model prefix unless the part is bare; its
architecture is the transformers class that holds exactly its heads. hf.py converts
the tensors and configs with them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from bertjax.convert.names import ConversionError, Entry
from bertjax.models.config import ModelConfig
from bertjax.models.registry import family

# --- parts and name maps ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Part:
    """One transformers model of a bertjax model."""

    name: str  # "" (the only one), "discriminator" or "generator"
    cfg: ModelConfig  # the tower it holds (the generator's: cfg.generator_config())
    heads: tuple[str, ...]  # its heads
    root: tuple[str, ...] = ()  # where its encoder and heads sit in our params
    bare: bool | None = None  # tensors without the base-model prefix; None: from heads

    @property
    def is_bare(self) -> bool:
        return (not set(self.heads) - {"pooler"}) if self.bare is None else self.bare


def parts(cfg: ModelConfig, bare: Mapping[str, bool] | None = None) -> list[Part]:
    """The transformers models `cfg` is; `bare` (part -> bool) overrides the prefix rule
    for checkpoints saved the other way round."""
    bare = bare or {}
    if "generator" in cfg.heads:
        own = tuple(h for h in cfg.heads if h != "generator")
        return [
            Part("discriminator", cfg, own, (), bare.get("discriminator")),
            Part(
                "generator", cfg.generator_config(), ("mlm",), ("generator",), bare.get("generator")
            ),
        ]
    return [Part("", cfg, cfg.heads, (), bare.get(""))]


def _prefix(part: Part) -> str:
    return "" if part.is_bare else family(part.cfg.family).hf.prefix + "."


def name_map(part: Part) -> list[Entry]:
    """Every tensor of `part`'s transformers model, with our parameter paths."""
    fam, p = family(part.cfg.family), _prefix(part)
    entries = list(fam.hf.encoder(part.cfg, p))
    for head in part.heads:
        entries += fam.hf.heads[head](part.cfg, p)
    # The embeddings are shared by both ELECTRA parts and sit at the root.
    return [
        e if e.path[0] == "embeddings" else dataclasses.replace(e, path=(*part.root, *e.path))
        for e in entries
    ]


def _tied(part: Part) -> dict[str, str]:
    """Tensors transformers may store that are copies of another (tied output weights);
    one the name map holds (an untied decoder) is a tensor of its own."""
    fam, p = family(part.cfg.family), _prefix(part)
    own = {e.hf_key for e in name_map(part)}
    return {
        k.format(p=p): v.format(p=p)
        for head in part.heads
        for k, v in fam.hf.tied.get(head, {}).items()
        if k.format(p=p) not in own
    }


def _is_buffer(key: str) -> bool:
    return key.endswith((".position_ids", ".token_type_ids"))


def architecture(part: Part) -> str:
    """The transformers class holding exactly `part`'s heads (a pooler the class lacks is
    written as extra tensors, as released RoBERTa checkpoints carry it)."""
    fam = family(part.cfg.family)
    heads = set(part.heads)
    for want in (heads, heads - {"pooler"}):
        for name, held in fam.hf.architectures.items():
            if set(held) == want:
                return name
    forms = "; ".join(f"{k}: {', '.join(v) or 'no heads'}" for k, v in fam.hf.architectures.items())
    raise ConversionError(
        f"no transformers {fam.name} class holds the heads "
        f"{', '.join(part.heads) or 'none'} ({forms})"
    )
