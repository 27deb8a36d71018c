"""Model directories: what `import`, `init` and `train` write, and `export`, `fill_mask`,
`evaluate`, `config.init_from` and `distill.teacher_path` read.

  CKPT/config.json   {"format": "bertjax-model", "version": 2, "model": {...ModelConfig},
                     "params_sha256", "model_sha256", "tokenizer_sha256", ...extra};
                     model.heads says which heads the parameters hold
  CKPT/params/       Orbax checkpoint of the parameter tree (loop or scan layout, as
                     `model.scan_layers` says)
  CKPT/tokenizer/    tokenizer files (tokenizer.json, tokenizer_config.json, legacy files)

The three digests are required and checked on every read: `params_sha256` over the
files of params/ (`files_digest`), `model_sha256` over config.json's "model" object (its
architecture fields change the function the parameters compute), `tokenizer_sha256`
over tokenizer/ (null when the directory has no tokenizer, which then must not exist).
A directory without them, or whose files differ from them, is refused in one line.
`params_files` and `tokenizer_files` ({name: [bytes, sha256]}; directories written
before 2026-12-07 lack them) let that line name the files that differ.

CKPT may be a local path or a gs:// URL (bertjax/paths.py). A directory is built locally
and published with config.json last, so a directory without config.json is unfinished,
never a model; reading a gs:// directory downloads it to a temporary local copy first.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import numpy as np

from bertjax import paths
from bertjax.models.config import ModelConfig
from bertjax.orbax_output import quiet_read, read_error

FORMAT = "bertjax-model"
VERSION = 2
_DIGESTS = ("params_sha256", "model_sha256", "tokenizer_sha256")


def save(
    path: str,
    cfg: ModelConfig,
    params: Any,
    tokenizer: Any = None,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> None:
    """Writes a model directory at `path` (local or gs://), published atomically."""
    import orbax.checkpoint as ocp

    with paths.atomic_directory(path, overwrite=overwrite, marker="config.json") as tmp:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(paths.join(tmp, "params"), params)
        checkpointer.wait_until_finished()
        tok_dir = paths.join(tmp, "tokenizer")
        if tokenizer is not None:
            tokenizer.save(tok_dir)
        model = cfg.to_dict()
        params_digest, params_files = files_record(paths.join(tmp, "params"))
        tok_digest, tok_files = files_record(tok_dir) if tokenizer is not None else (None, None)
        paths.write_json(
            paths.join(tmp, "config.json"),
            {
                "format": FORMAT,
                "version": VERSION,
                "model": model,
                "params_sha256": params_digest,
                "model_sha256": model_digest(model),
                "tokenizer_sha256": tok_digest,
                "params_files": params_files,
                "tokenizer_files": tok_files,
                **(extra or {}),
            },
        )


def files_record(directory: str) -> tuple[str, dict[str, list[Any]]]:
    """(`files_digest` of `directory`, {name: [bytes, sha256]} of each file), one read."""
    h, files = hashlib.sha256(), {}
    for name in paths.walk_files(directory):
        h.update(name.encode() + b"\0")
        one, size = hashlib.sha256(), 0
        with paths.open(paths.join(directory, name), "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
                one.update(block)
                size += len(block)
        h.update(b"\0")
        files[name] = [size, one.hexdigest()]
    return h.hexdigest(), files


def files_digest(directory: str) -> str:
    """sha256 over every file under `directory` (relative names and bytes, in sorted
    order)."""
    return files_record(directory)[0]


def _differences(have: dict[str, list[Any]], recorded: Any) -> str:
    """'; what differs' (up to three files) between `have` (`files_record`'s files) and a
    `*_files` record, or '' when there is no record to compare with."""
    if not isinstance(recorded, dict):
        return ""
    found = [f"{n} missing" for n in sorted(set(recorded) - set(have))]
    found += [f"{n} not recorded" for n in sorted(set(have) - set(recorded))]
    for n in sorted(set(have) & set(recorded)):
        (size, digest), want = have[n], list(recorded[n])
        if size != want[0]:
            found.append(f"{n} {size:,} bytes, {want[0]:,} recorded")
        elif digest != want[1]:
            found.append(f"{n} other bytes of the same size")
    more = f"; {len(found) - 3} more" if len(found) > 3 else ""
    return "".join(f"; {f}" for f in found[:3]) + more


def model_digest(model: dict[str, Any]) -> str:
    """sha256 of config.json's "model" object (canonical JSON)."""
    return hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()


def read_config(path: str) -> tuple[ModelConfig, dict[str, Any]]:
    """The ModelConfig of a model directory and the whole config.json content, after
    checking the format, the digests' presence and `model_sha256`."""
    config_path = paths.join(path, "config.json")
    if not paths.isdir(path):
        raise FileNotFoundError(2, "no such model directory", path)
    workdir = paths.isdir(paths.join(path, "checkpoints"))
    if workdir and not is_model_dir(path):  # its config.json is the run's config
        raise ValueError(
            f"{path} is a training workdir, not a model directory: did you "
            f"mean {paths.join(path, 'model')}?"
        )
    if not paths.exists(config_path):
        raise FileNotFoundError(
            2,
            f"missing; is {path} a bertjax model directory (written "
            "by `python -m bertjax import`, `init` or `train`)?",
            config_path,
        )
    meta = paths.read_json(config_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{config_path}: format is {found!r}, not {FORMAT!r}")
    missing = [k for k in _DIGESTS if k not in meta]
    if missing:
        raise ValueError(
            f"{config_path}: no {', '.join(missing)}; the directory cannot be "
            "verified (write it again with `import`, `init` or `train`)"
        )
    try:
        if model_digest(meta["model"]) != meta["model_sha256"]:
            raise ValueError(
                f'{config_path}: its "model" fields differ from '
                "model_sha256; the file was edited or damaged"
            )
        cfg = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{config_path}: {e}") from None
    return cfg, meta


def load(path: str, cfg: ModelConfig | None = None) -> tuple[ModelConfig, Any]:
    """Reads (cfg, params as numpy arrays) from a model directory, verified.

    If `cfg` is given, its layout (scan or loop) is used: params are restacked as
    needed, so a checkpoint written with scan_layers=True serves a loop model.
    """
    import orbax.checkpoint as ocp

    from bertjax.models.scan_layout import stack_layers, unstack_layers

    saved_cfg, meta = read_config(path)
    with paths.local_copy(paths.join(path, "params")) as local:
        where = paths.join(path, "params")
        if not paths.isdir(local):
            raise FileNotFoundError(2, "missing", where)
        digest, have = files_record(local)
        if digest != meta["params_sha256"]:
            raise ValueError(
                f"{where}: its files differ from what "
                f"{paths.join(path, 'config.json')} recorded (params_sha256"
                f"{_differences(have, meta.get('params_files'))}); the directory is damaged"
            )
        try:
            params = quiet_read(ocp.StandardCheckpointer().restore, paths.absolute(local))
        except Exception as e:  # noqa: BLE001 -- Orbax / tensorstore errors of every kind
            raise ValueError(f"{where}: cannot be read ({read_error(e)})") from None
    params = jax.tree_util.tree_map(np.asarray, params)
    check_params(params, saved_cfg, where)
    cfg = cfg or saved_cfg
    if cfg.scan_layers != saved_cfg.scan_layers:
        params = stack_layers(params) if cfg.scan_layers else unstack_layers(params)
    return cfg, params


def load_tokenizer(path: str) -> Any:
    """The tokenizer of a model directory (verified against `tokenizer_sha256`), or None
    when it has none."""
    from bertjax.data.tokenizers import load_tokenizer as load

    _, meta = read_config(path)
    tok_dir = paths.join(path, "tokenizer")
    if meta["tokenizer_sha256"] is None:
        if paths.exists(tok_dir):
            raise ValueError(
                f"{tok_dir}: present, but {paths.join(path, 'config.json')} "
                "records no tokenizer (tokenizer_sha256 null)"
            )
        return None
    with paths.local_copy(tok_dir) as local:
        digest, have = files_record(local) if paths.isdir(local) else (None, {})
        if digest != meta["tokenizer_sha256"]:
            found = _differences(have, meta.get("tokenizer_files")) if digest else ""
            raise ValueError(
                f"{tok_dir}: its files differ from what "
                f"{paths.join(path, 'config.json')} recorded (tokenizer_sha256{found})"
            )
        return load(local)


def is_model_dir(path: str) -> bool:
    """Whether `path` holds a bertjax model directory's config.json."""
    try:
        meta = paths.read_json(paths.join(path, "config.json"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def any_tokenizer(path: str) -> Any:
    """The tokenizer of a bertjax model directory (verified; an error if it has none), or
    of a transformers or tokenizer directory; local or gs://."""
    from bertjax.data.tokenizers import load_tokenizer as load

    if is_model_dir(path):
        tok = load_tokenizer(path)
        if tok is None:
            raise ValueError(f"{path}: the model directory has no tokenizer/")
        return tok
    with paths.local_copy(path) as local:
        return load(local)


def check_params(params: Any, cfg: ModelConfig, where: str) -> None:
    """ValueError naming the tensor when `params` are not the parameters of `cfg`
    (a missing, extra or differently shaped tensor) or hold NaN or Inf."""
    import flax

    from bertjax.models import build, init_params

    def flat(tree: Any) -> dict[str, Any]:
        return {
            "/".join(str(getattr(k, "key", k)) for k in path): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        }

    want = flat(jax.eval_shape(lambda: flax.linen.unbox(init_params(build(cfg)))))
    have = flat(params)
    fields = "model.heads and sizes in config.json"
    for name in sorted(set(want) - set(have)):
        raise ValueError(f"{where}: no tensor {name}, which {fields} call for")
    for name in sorted(set(have) - set(want)):
        raise ValueError(
            f"{where}: tensor {name} is not a parameter of the model {fields} describe"
        )
    for name, leaf in have.items():
        if tuple(leaf.shape) != tuple(want[name].shape):
            raise ValueError(
                f"{where}: {name} has shape {tuple(leaf.shape)}, but {fields} "
                f"call for {tuple(want[name].shape)}"
            )
        if not np.all(np.isfinite(leaf)):
            bad = int(np.size(leaf) - np.count_nonzero(np.isfinite(leaf)))
            raise ValueError(f"{where}: {name} holds {bad} NaN or Inf values")


def architecture(cfg: ModelConfig) -> dict[str, Any]:
    """The fields of `cfg` that define the function (not how it is computed)."""
    d = cfg.to_dict()
    for key in (
        "dtype",
        "param_dtype",
        "scan_layers",
        "remat",
        "attention",
        "dropout_rate",
        "attention_dropout_rate",
        "classifier_dropout_rate",
    ):
        d.pop(key)
    return d


def architecture_diff(cfg: ModelConfig, saved: ModelConfig) -> list[str]:
    """The architecture fields (`architecture`) in which `saved` differs from `cfg`, sorted."""
    mine, theirs = architecture(cfg), architecture(saved)
    return sorted(k for k in mine if mine[k] != theirs.get(k))
