"""bertjax checkpoints on disk.

A *model directory* is what `import` writes, `export` and `fill_mask` read and
`config.init_from` will start training from:

  CKPT/config.json   {"format": "bertjax-model", "version": 1, "model": {...ModelConfig}}
  CKPT/params/       Orbax checkpoint of the parameter tree (loop or scan layout, as
                     `model.scan_layers` says)
  CKPT/tokenizer/    tokenizer files (tokenizer.json, tokenizer_config.json, legacy files)

Training checkpoints (params, optimizer state, step, data position) will live in the
same module when the training loop lands.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from bertjax.fileio import atomic_directory
from bertjax.models.config import ModelConfig

FORMAT = "bertjax-model"
VERSION = 1


def save_model_dir(path: str, cfg: ModelConfig, params: Any, tokenizer: Any = None,
                   overwrite: bool = False, extra: dict[str, Any] | None = None) -> None:
    """Writes a model directory atomically (see module docstring)."""
    import orbax.checkpoint as ocp

    with atomic_directory(path, overwrite=overwrite) as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump({"format": FORMAT, "version": VERSION, "model": cfg.to_dict(),
                       **(extra or {})}, f, indent=2)
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(os.path.join(tmp, "params"), params)
        checkpointer.wait_until_finished()
        if tokenizer is not None:
            tokenizer.save(os.path.join(tmp, "tokenizer"))


def read_model_config(path: str) -> tuple[ModelConfig, dict[str, Any]]:
    """The ModelConfig of a model directory and the whole config.json content."""
    config_path = os.path.join(path, "config.json")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such checkpoint directory")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path}: missing; is {path} a bertjax checkpoint "
                                "(written by `python -m bertjax import`)?")
    try:
        with open(config_path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path}: not valid JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{config_path}: format is {meta.get('format')!r}, not {FORMAT!r}")
    try:
        cfg = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{config_path}: {e}") from None
    return cfg, meta


def load_model_dir(path: str, cfg: ModelConfig | None = None) -> tuple[ModelConfig, Any]:
    """Reads (cfg, params as numpy arrays) from a model directory.

    If `cfg` is given, its layout (scan or loop) is used: params are restacked as
    needed, so a checkpoint written with scan_layers=True serves a loop model.
    """
    import orbax.checkpoint as ocp

    from bertjax.models.layers import stack_layers, unstack_layers

    saved_cfg, _ = read_model_config(path)
    params_path = os.path.abspath(os.path.join(path, "params"))
    if not os.path.isdir(params_path):
        raise FileNotFoundError(f"{params_path}: missing")
    params = ocp.StandardCheckpointer().restore(params_path)
    params = jax.tree_util.tree_map(np.asarray, params)
    cfg = cfg or saved_cfg
    if cfg.scan_layers != saved_cfg.scan_layers:
        params = stack_layers(params) if cfg.scan_layers else unstack_layers(params)
    return cfg, params


def tokenizer_dir(path: str) -> str | None:
    """The tokenizer folder of a model directory, or None if it has none."""
    d = os.path.join(path, "tokenizer")
    return d if os.path.isdir(d) else None
