"""Pretrained parameters from any checkpoint form, fitted to the model a run trains.

A source is a bertjax model directory (`import`, `init`, train's WORKDIR/model) or a
transformers directory of any form (bertjax/convert/hfdir.py). Its encoder must be the
model's (same architecture: sizes, vocabulary, positions); its heads may differ:

  loaded    a module the source has with the same shapes
  created   a module the model needs that the source lacks (or holds with other
            shapes: a classifier with another label count): kept fresh
  dropped   a module of the source the model does not use (an MLM head when
            fine-tuning a classifier)

`fit` does this and `table` prints it; `load_exact` is for sources that must hold
every module (a distillation teacher).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from bertjax import modeldir, paths
from bertjax.models.config import ModelConfig

ENCODER = ("embeddings", "encoder")
# ModelConfig fields that describe heads or how the model runs, not its encoder.
_NOT_ENCODER = (
    "heads",
    "num_labels",
    "label_names",
    "classifier_dropout_rate",
    "generator_hidden_size",
    "generator_num_heads",
    "generator_intermediate_size",
    "generator_num_layers",
)


def read(path: str, key: str, scan_layers: bool = False) -> tuple[ModelConfig, Any, str]:
    """(the source's cfg, its params as numpy in the requested layout, "bertjax model
    directory" or "transformers directory"); `key` names the config key that gave `path`."""
    from bertjax.convert.hfdir import is_hf_dir, read_hf_dir

    if not paths.isdir(path):
        raise FileNotFoundError(f"{key}={path}: no such directory")
    if is_hf_dir(path):
        with paths.local_copy(path) as local:
            cfg, params, _ = read_hf_dir(local, scan_layers)
        return cfg, params, "transformers directory"
    saved, _ = modeldir.read_config(path)
    _, params = modeldir.load(path, saved.replace(scan_layers=scan_layers))
    return saved, params, "bertjax model directory"


def encoder_diff(cfg: ModelConfig, saved: ModelConfig) -> list[str]:
    """The architecture fields of the encoder in which `saved` differs from `cfg`."""
    mine, theirs = modeldir.architecture(cfg), modeldir.architecture(saved)
    return sorted(k for k in mine if k not in _NOT_ENCODER and mine[k] != theirs.get(k))


def _check_encoder(cfg: ModelConfig, saved: ModelConfig, key: str, path: str) -> None:
    diff = encoder_diff(cfg, saved)
    if diff:
        mine, theirs = modeldir.architecture(cfg), modeldir.architecture(saved)
        raise ValueError(
            f"{key}={path}: its model differs from the config in "
            + ", ".join(f"{k} ({theirs.get(k)!r} vs {mine[k]!r})" for k in diff)
        )


def _shapes(tree: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (jax.tree_util.keystr(p), tuple(x.shape))
        for p, x in jax.tree_util.tree_leaves_with_path(tree)
    ]


def fit(
    source: Mapping[str, Any], target: Mapping[str, Any]
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """Source modules into a target tree (same layout), by top-level module.

    Returns (params: source arrays where loaded, target's where created; rows
    (module, "loaded" | "created" | "dropped", detail)). An encoder module the source
    lacks or holds with other shapes is an error: only heads are created.
    """
    out, rows = {}, []
    for name, fresh in target.items():
        have = source.get(name)
        count = sum(int(np.prod(s)) for _, s in _shapes(fresh))
        if have is not None and _shapes(have) == _shapes(fresh):
            out[name] = have
            rows.append((name, "loaded", f"{count:,} parameters"))
            continue
        why = "not in the source" if have is None else "its shapes differ in the source"
        if name in ENCODER:
            raise ValueError(f"module {name}: {why}")
        out[name] = fresh
        rows.append((name, "created", f"{count:,} parameters, fresh ({why})"))
    for name in source:
        if name not in target:
            count = sum(int(np.prod(s)) for _, s in _shapes(source[name]))
            rows.append((name, "dropped", f"{count:,} parameters, not used by this model"))
    return out, rows


def table(rows: list[tuple[str, str, str]]) -> str:
    """The rows of `fit` as aligned text lines."""
    width = max((len(r[0]) for r in rows), default=6)
    return "\n".join(f"  {name:<{width}}  {status:<8} {detail}" for name, status, detail in rows)


def load_into(
    path: str, cfg: ModelConfig, fresh: Mapping[str, Any], key: str
) -> tuple[dict[str, Any], list[tuple[str, str, str]], str]:
    """`fit` of the checkpoint at `path` into `fresh` (the model's params, in cfg's
    layout); returns (params, rows, a description of the source)."""
    saved, params, kind = read(path, key, cfg.scan_layers)
    _check_encoder(cfg, saved, key, path)
    try:
        fitted, rows = fit(params, fresh)
    except ValueError as e:
        raise ValueError(f"{key}={path}: {e}") from None
    heads = ", ".join(saved.heads) or "no heads"
    return fitted, rows, f"{paths.absolute(path)} ({kind}, {saved.family} with {heads})"


def load_exact(path: str, cfg: ModelConfig, key: str) -> Any:
    """Parameters of every module of `cfg` from `path` (numpy, in cfg's layout); a module
    the source lacks is an error naming it. Heads the source has beyond cfg's are unused."""
    saved, params, _ = read(path, key, cfg.scan_layers)
    _check_encoder(cfg, saved, key, path)
    missing = [h for h in cfg.heads if h not in saved.heads]
    if missing:
        raise ValueError(
            f"{key}={path}: the checkpoint has no {', '.join(missing)} head "
            f"(its heads: {', '.join(saved.heads) or 'none'})"
        )
    return {k: v for k, v in params.items() if k in ENCODER or k in cfg.heads}
