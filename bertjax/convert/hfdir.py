"""transformers model directories on disk: read one into (cfg, params), write a bertjax
model directory out as one. `out` may be a gs:// URL (published config.json last); a
directory to read must be local (callers pass `paths.local_copy` of a URL).

A transformers directory holds config.json, model.safetensors (or a sharded
model.safetensors.index.json, or pytorch_model.bin) and tokenizer files. Any form a
family has is read: the bare encoder (BertModel), *ForMaskedLM, *ForPreTraining,
*ForSequenceClassification / *ForTokenClassification / *ForQuestionAnswering, an
ELECTRA discriminator or generator alone, and ELECTRA's pair as `export` writes it
(DIR/discriminator and DIR/generator). `export_hf` writes the class that holds the
model's heads (bertjax/convert/hf.py: `architecture`).
"""

from __future__ import annotations

import json
import os
import posixpath
import sys
from typing import Any

from bertjax import paths
from bertjax.convert import hf, statedict
from bertjax.models.config import ModelConfig
from bertjax.models.registry import family

PAIR = ("discriminator", "generator")


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def read_json(path: str) -> dict[str, Any]:
    """A JSON object from `path` (local or gs://); errors name the file."""
    obj = paths.read_json(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def _pair_dirs(directory: str) -> dict[str, str] | None:
    dirs = {p: paths.join(directory, p) for p in PAIR}
    if all(paths.exists(paths.join(d, "config.json")) for d in dirs.values()):
        return dirs
    return None


def is_hf_dir(path: str) -> bool:
    """Whether `path` is a transformers model directory (or ELECTRA's pair of them)."""
    if _pair_dirs(path):
        return True
    try:
        return "model_type" in read_json(paths.join(path, "config.json"))
    except (OSError, ValueError):
        return False


def read_hf_dir(directory: str, scan_layers: bool = False) -> tuple[ModelConfig, Any, str]:
    """transformers dir -> (cfg with the heads found, params (numpy), the directory that
    holds the tokenizer files)."""
    dirs = _pair_dirs(directory) or {"": directory}
    configs = {part: read_json(os.path.join(d, "config.json")) for part, d in dirs.items()}
    state_dicts = {part: statedict.read_state_dict(d) for part, d in dirs.items()}
    source = os.path.join(next(iter(dirs.values())), "config.json")
    cfg = hf.config_from_hf(configs, state_dicts, source=source, scan_layers=scan_layers)
    params = hf.from_state_dicts(cfg, state_dicts, source=directory)
    return cfg, params, next(iter(dirs.values()))


def checked_tokenizer(directory: str, cfg: ModelConfig, lowercase: bool | None = None) -> Any:
    """The directory's tokenizer, checked against the model; None (with a warning) if absent."""
    from bertjax.data.tokenizers import load_tokenizer

    try:
        tok = load_tokenizer(directory, lowercase=lowercase)
    except FileNotFoundError as e:
        _warn(f"{e}; the checkpoint will have no tokenizer (fill_mask needs one)")
        return None
    if tok.vocab_size > cfg.vocab_size:
        raise ValueError(
            f"{directory}: tokenizer has {tok.vocab_size} tokens but the model's "
            f"vocab_size is {cfg.vocab_size}"
        )
    if tok.pad_id != cfg.pad_token_id:
        if cfg.positions_from_padding:  # RoBERTa's positions are counted from the pad id
            raise ValueError(
                f"{directory}: tokenizer pad id {tok.pad_id} != model "
                f"pad_token_id {cfg.pad_token_id}"
            )
        _warn(f"tokenizer pad id {tok.pad_id} != model pad_token_id {cfg.pad_token_id}")
    tok.tokenizer_class = family(cfg.family).tokenizer_class
    return tok


def write_hf_dir(
    out: str, cfg: ModelConfig, params: Any, tok: Any = None, overwrite: bool = False
) -> list[str]:
    """Writes `params` as the transformers model(s) of `cfg`'s heads, atomically; returns
    the written directories (two for ELECTRA's pair)."""
    special: dict[str, int] = {}
    if tok is not None:
        special = {
            "bos_token_id": tok.cls_id,
            "eos_token_id": tok.sep_id,
            "cls_token_id": tok.cls_id,
            "sep_token_id": tok.sep_id,
        }
    configs = hf.hf_configs(cfg, special)
    state_dicts = hf.to_state_dicts(cfg, params)
    written = []
    # Published with the (first) config.json last: a reader finds a whole model or none.
    marker = posixpath.join(hf.parts(cfg)[0].name, "config.json")
    with paths.atomic_directory(out, overwrite=overwrite, marker=marker) as tmp:
        for part in hf.parts(cfg):
            d = os.path.join(tmp, part.name) if part.name else tmp
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(configs[part.name], f, indent=2)
            statedict.write_state_dict(d, state_dicts[part.name])
            if tok is not None:
                tok.save(d)
            written.append(
                paths.join(paths.absolute(out), part.name) if part.name else paths.absolute(out)
            )
    return written


def export_hf(ckpt: str, out: str, overwrite: bool = False) -> list[str]:
    """Writes the transformers dir(s) of bertjax model directory `ckpt`."""
    from bertjax import modeldir

    cfg, params = modeldir.load(ckpt)
    tok = modeldir.load_tokenizer(ckpt)
    if tok is None:
        _warn(f"{ckpt} has no tokenizer; exporting weights and config only")
    return write_hf_dir(out, cfg, params, tok, overwrite)
