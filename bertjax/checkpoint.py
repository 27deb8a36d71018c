"""bertjax checkpoints on disk.

A *model directory* is what `import`, `init` and `train` write, `export` and
`fill_mask` read and `config.init_from` starts training from (bertjax/pretrained.py):

  CKPT/config.json   {"format": "bertjax-model", "version": 1, "model": {...ModelConfig},
                     "params_sha256": digest of params/ (`params_digest`)};
                     model.heads says which heads the parameters hold
  CKPT/params/       Orbax checkpoint of the parameter tree (loop or scan layout, as
                     `model.scan_layers` says)
  CKPT/tokenizer/    tokenizer files (tokenizer.json, tokenizer_config.json, legacy files)

A *training checkpoint* is one step of WORKDIR/checkpoints, an Orbax
`CheckpointManager` directory (`TrainCheckpoints`):

  WORKDIR/checkpoints/<step>/state/   the train state (bertjax/steps.py): params,
                                      optimizer state, step, skip counters
  WORKDIR/checkpoints/<step>/data/    JSON: the data position {"phase", "pipeline"}
  WORKDIR/checkpoints/<step>/meta/    JSON: the model config, to refuse a mismatched resume

Orbax writes a step under a temporary name and renames it when every item (and, on
several hosts, every host) is done, so an interrupted save never looks like a
checkpoint; leftovers are removed when the next run opens the directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Mapping
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
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(os.path.join(tmp, "params"), params)
        checkpointer.wait_until_finished()
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump({"format": FORMAT, "version": VERSION, "model": cfg.to_dict(),
                       "params_sha256": params_digest(os.path.join(tmp, "params")),
                       **(extra or {})}, f, indent=2)
        if tokenizer is not None:
            tokenizer.save(os.path.join(tmp, "tokenizer"))


def params_digest(params_path: str) -> str:
    """sha256 over every file of a params/ directory (relative names and bytes, in
    sorted order): what a model directory's config.json records and `load_model_dir`
    checks."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(params_path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            h.update(os.path.relpath(full, params_path).encode() + b"\0")
            with open(full, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    h.update(block)
            h.update(b"\0")
    return h.hexdigest()


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

    saved_cfg, meta = read_model_config(path)
    params_path = os.path.abspath(os.path.join(path, "params"))
    if not os.path.isdir(params_path):
        raise FileNotFoundError(f"{params_path}: missing")
    recorded = meta.get("params_sha256")  # absent in directories written before 2026-12-03
    if recorded is not None and params_digest(params_path) != recorded:
        raise ValueError(f"{params_path}: its files differ from what "
                         f"{os.path.join(path, 'config.json')} recorded (params_sha256); "
                         "the directory is damaged")
    # A failed read also makes tensorstore's threads print tracebacks ("Event loop is
    # closed") through sys.stderr: held back, and shown only when the read succeeds.
    held, failed = io.StringIO(), None
    with contextlib.redirect_stderr(held):
        try:
            params = ocp.StandardCheckpointer().restore(params_path)
        except Exception as e:  # noqa: BLE001 -- Orbax / tensorstore errors of every kind
            failed = " ".join(str(e).split())[:300]
            time.sleep(0.5)  # the failed read's threads finish printing into `held`
    if failed is not None:
        raise ValueError(f"{params_path}: cannot be read ({failed})")
    sys.stderr.write(held.getvalue())
    params = _before_heads(jax.tree_util.tree_map(np.asarray, params))
    check_params(params, saved_cfg, params_path)
    cfg = cfg or saved_cfg
    if cfg.scan_layers != saved_cfg.scan_layers:
        params = stack_layers(params) if cfg.scan_layers else unstack_layers(params)
    return cfg, params


def check_params(params: Any, cfg: ModelConfig, where: str) -> None:
    """ValueError naming the tensor when `params` are not the parameters of `cfg`
    (a missing, extra or differently shaped tensor) or hold NaN or Inf."""
    import flax

    from bertjax.models import build, init_params

    def flat(tree: Any) -> dict[str, Any]:
        return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
                for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}

    want = flat(jax.eval_shape(lambda: flax.linen.unbox(init_params(build(cfg)))))
    have = flat(params)
    fields = "model.heads and sizes in config.json"
    for name in sorted(set(want) - set(have)):
        raise ValueError(f"{where}: no tensor {name}, which {fields} call for")
    for name in sorted(set(have) - set(want)):
        raise ValueError(f"{where}: tensor {name} is not a parameter of the model "
                         f"{fields} describe")
    for name, leaf in have.items():
        if tuple(leaf.shape) != tuple(want[name].shape):
            raise ValueError(f"{where}: {name} has shape {tuple(leaf.shape)}, but {fields} "
                             f"call for {tuple(want[name].shape)}")
        if not np.all(np.isfinite(leaf)):
            bad = int(np.size(leaf) - np.count_nonzero(np.isfinite(leaf)))
            raise ValueError(f"{where}: {name} holds {bad} NaN or Inf values")


def _before_heads(params: dict[str, Any]) -> dict[str, Any]:
    """ELECTRA model directories written before models were encoder + named heads kept
    the towers at the top level; their values are the same under today's names."""
    if "discriminator_head" not in params:
        return params
    renamed = {k: v for k, v in params.items()
               if k not in ("discriminator", "discriminator_head", "generator",
                            "generator_head")}
    return {**renamed, "encoder": params["discriminator"],
            "discriminator": params["discriminator_head"],
            "generator": {"encoder": params["generator"], "mlm": params["generator_head"]}}


def architecture(cfg: ModelConfig) -> dict[str, Any]:
    """The fields of `cfg` that define the function (not how it is computed)."""
    d = cfg.to_dict()
    for key in ("dtype", "param_dtype", "scan_layers", "remat", "dropout_rate",
                "attention_dropout_rate", "classifier_dropout_rate"):
        d.pop(key)
    return d


def architecture_diff(cfg: ModelConfig, saved: ModelConfig) -> list[str]:
    """The architecture fields (`architecture`) in which `saved` differs from `cfg`, sorted."""
    mine, theirs = architecture(cfg), architecture(saved)
    return sorted(k for k in mine if mine[k] != theirs.get(k))


def tokenizer_dir(path: str) -> str | None:
    """The tokenizer folder of a model directory, or None if it has none."""
    d = os.path.join(path, "tokenizer")
    return d if os.path.isdir(d) else None


# --- training checkpoints --------------------------------------------------------------

class NonFiniteStateError(ValueError):
    """A train state with NaN or Inf values was about to be saved."""


class TrainCheckpoints:
    """Orbax CheckpointManager over the train state, the data position and the model config.

    save() refuses a state with any non-finite value, so no such checkpoint is ever
    committed. With `async_save`, save() returns once the arrays are copied to host
    memory and the files are written in the background; `wait()` blocks until the last
    save is committed. Every host must call save() and restore() with the same step.
    """

    def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = True) -> None:
        import orbax.checkpoint as ocp

        from bertjax.steps import all_finite

        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=("state", "data", "meta"))
        self._finite = jax.jit(all_finite)

    def latest_step(self) -> int | None:
        """The newest committed step, or None (incomplete saves are never listed)."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, data: Mapping[str, Any],
             meta: Mapping[str, Any]) -> None:
        """Saves `state` (a pytree of jax.Arrays) as step `step`; NonFiniteStateError if
        any floating-point value in it is NaN or Inf (nothing is written then)."""
        if not bool(self._finite(state)):
            raise NonFiniteStateError(
                f"{self.directory}: the train state at step {step} holds NaN or Inf values; "
                "not saving it")
        ocp = self._ocp
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(dict(data)),
            meta=ocp.args.JsonSave(dict(meta))), force=True)

    def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(state, data, meta) of `step`, the state laid out as `target` says.

        target: ShapeDtypeStructs with shardings (`sharding.abstract_state`), possibly of
        another mesh or device count than the one that saved: Orbax reshards.
        """
        ocp = self._ocp
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore()))
        return restored["state"], dict(restored["data"]), dict(restored["meta"])

    def read_meta(self, step: int) -> dict[str, Any]:
        """The meta item of `step` alone (no arrays are read)."""
        ocp = self._ocp
        restored = self._manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def wait(self) -> None:
        """Blocks until every started save is committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
