"""Building blocks of the HF name maps that each family file (bertjax/models/<family>.py)
assembles: which transformers tensor is which bertjax parameter, and how it is laid out.

A name map is a list of `Entry(hf_key, our_path, kind)`:

  kind "copy":    same values, reshaped to the target (embeddings, LayerNorm, biases;
                  attention biases are [heads * d] in HF and [heads, d] here)
  kind "linear1": torch Linear weight [out, in] <-> kernel [in, ...out]
                  (Dense, and q/k/v whose kernel is [embed, heads, d])
  kind "linear2": torch Linear weight [out, in] <-> kernel [heads, d, out]
                  (the attention output projection)

`split` = (i, n): the entry is the i-th of n equal row blocks of the HF tensor
(ModernBERT's fused Wqkv holds query, key and value; import slices, export concatenates).

Paths are written against the loop layout (`layer_{i}`) and relative to the model
root; bertjax/convert/hf.py applies them. Nothing here imports numpy or JAX.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bertjax.models.config import ModelConfig

Path = tuple[str, ...]


class ConversionError(ValueError):
    """A checkpoint does not fit the config, or a file cannot be read."""


@dataclasses.dataclass(frozen=True)
class Entry:
    hf_key: str
    path: Path
    kind: str = "copy"
    split: tuple[int, int] = (0, 1)  # (i, n): the i-th of n row blocks of the HF tensor


def linear(hf: str, ours: Path, kind: str = "linear1", bias: bool = True) -> list[Entry]:
    """A torch Linear (weight, bias) <-> a Dense (kernel, bias); `bias` False: no bias."""
    return [
        Entry(f"{hf}.weight", (*ours, "kernel"), kind),
        *([Entry(f"{hf}.bias", (*ours, "bias"))] if bias else []),
    ]


def norm(hf: str, ours: Path, bias: bool = True) -> list[Entry]:
    """A torch LayerNorm (weight, bias) <-> a Flax LayerNorm (scale, bias); `bias` False:
    the weight (scale) alone (a bias-free LayerNorm, an RMSNorm)."""
    return [
        Entry(f"{hf}.weight", (*ours, "scale")),
        *([Entry(f"{hf}.bias", (*ours, "bias"))] if bias else []),
    ]


# Names of the eight modules of one encoder layer, in the order
# (q, k, v, attention out, attention LayerNorm, FFN in, FFN out, output LayerNorm).
LayerNames = tuple[str, str, str, str, str, str, str, str]


def layer(hf: str, ours: Path, names: LayerNames) -> list[Entry]:
    """One post-LN encoder layer (bertjax.models.layers.EncoderLayer)."""
    q, k, v, out, attn_ln, ffn_in, ffn_out, out_ln = names
    return [
        *linear(f"{hf}.{q}", (*ours, "attention", "query")),
        *linear(f"{hf}.{k}", (*ours, "attention", "key")),
        *linear(f"{hf}.{v}", (*ours, "attention", "value")),
        *linear(f"{hf}.{out}", (*ours, "attention", "out"), "linear2"),
        *norm(f"{hf}.{attn_ln}", (*ours, "attention_norm")),
        *linear(f"{hf}.{ffn_in}", (*ours, "intermediate")),
        *linear(f"{hf}.{ffn_out}", (*ours, "output")),
        *norm(f"{hf}.{out_ln}", (*ours, "output_norm")),
    ]


def layers(hf_format: str, cfg: ModelConfig, names: LayerNames) -> list[Entry]:
    """Every layer of an unshared encoder: `hf_format` holds `{i}`."""
    return [
        e
        for i in range(cfg.num_layers)
        for e in layer(hf_format.format(i=i), ("encoder", f"layer_{i}"), names)
    ]


def embeddings(hf: str, cfg: ModelConfig) -> list[Entry]:
    """Word, position (and token type) tables and their LayerNorm."""
    entries = [
        Entry(f"{hf}.word_embeddings.weight", ("embeddings", "word", "embedding")),
        Entry(f"{hf}.position_embeddings.weight", ("embeddings", "position", "embedding")),
    ]
    if cfg.type_vocab_size:
        entries.append(
            Entry(f"{hf}.token_type_embeddings.weight", ("embeddings", "token_type", "embedding"))
        )
    return entries + norm(f"{hf}.LayerNorm", ("embeddings", "layer_norm"))


def mlm(hf_dense: str, hf_norm: str, hf_bias: str) -> list[Entry]:
    """The MLM head's transform, LayerNorm and output bias (the decoder is tied)."""
    return [
        *linear(hf_dense, ("mlm", "transform")),
        *norm(hf_norm, ("mlm", "layer_norm")),
        Entry(hf_bias, ("mlm", "bias")),
    ]
