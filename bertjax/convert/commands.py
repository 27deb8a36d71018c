r"""`python -m bertjax import` and `python -m bertjax export`.

  python -m bertjax import --from=HF_OR_GOOGLE_DIR --out=CKPT
  python -m bertjax export --checkpoint=CKPT --out=HF_DIR

`import` reads an HF PyTorch model directory (config.json + model.safetensors or
pytorch_model.bin + tokenizer files; ELECTRA: DIR/discriminator and DIR/generator)
or an original Google TF checkpoint directory, and writes a bertjax model
directory (see bertjax/checkpoint.py). `export` writes config.json,
model.safetensors and tokenizer files that transformers' Auto classes load;
ELECTRA writes DIR/discriminator and DIR/generator. Both write to a temporary name
and rename at the end, so a failure leaves no partial output.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from typing import Any

import jax
from absl import flags

from bertjax import checkpoint, cli
from bertjax.convert import hf
from bertjax.fileio import atomic_directory
from bertjax.models.config import ModelConfig

_FROM = flags.DEFINE_string("from", None, "import: HF PyTorch model dir or Google TF "
                            "checkpoint dir.")
_LOWERCASE = flags.DEFINE_bool("lowercase", None, "Google BERT checkpoints: lowercase input "
                               "(default: guessed from the directory name, 'uncased').")
_SCAN = flags.DEFINE_bool("scan_layers", False, "import: store params in the scan layout.")

def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def _tokenizer(directory: str, cfg: ModelConfig, lowercase: bool | None = None) -> Any:
    """The directory's tokenizer, checked against the model; None (with a warning) if absent."""
    from bertjax.data.tokenizers import FAMILY_TOKENIZER_CLASS, load_tokenizer

    try:
        tok = load_tokenizer(directory, lowercase=lowercase)
    except FileNotFoundError as e:
        _warn(f"{e}; the checkpoint will have no tokenizer (fill_mask needs one)")
        return None
    if tok.vocab_size > cfg.vocab_size:
        raise ValueError(f"{directory}: tokenizer has {tok.vocab_size} tokens but the model's "
                         f"vocab_size is {cfg.vocab_size}")
    if tok.pad_id != cfg.pad_token_id:
        if cfg.positions_from_padding:  # RoBERTa's positions are counted from the pad id
            raise ValueError(f"{directory}: tokenizer pad id {tok.pad_id} != model "
                             f"pad_token_id {cfg.pad_token_id}")
        _warn(f"tokenizer pad id {tok.pad_id} != model pad_token_id {cfg.pad_token_id}")
    tok.tokenizer_class = FAMILY_TOKENIZER_CLASS[cfg.family]
    return tok


def _read_json(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: missing")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def read_hf_dir(directory: str, scan_layers: bool = False) -> tuple[ModelConfig, Any, str]:
    """HF model dir -> (cfg, params, directory holding the tokenizer files)."""
    pair = [os.path.join(directory, p) for p in ("discriminator", "generator")]
    if all(os.path.exists(os.path.join(p, "config.json")) for p in pair):
        dirs = dict(zip(("discriminator", "generator"), pair, strict=True))
    else:
        dirs = {"": directory}
        if _read_json(os.path.join(directory, "config.json")).get("model_type") == "electra":
            raise ValueError(f"{directory}: an ELECTRA import needs {pair[0]} and {pair[1]} "
                             "(generator and discriminator, as `export` writes them)")
    configs = {part: _read_json(os.path.join(d, "config.json")) for part, d in dirs.items()}
    state_dicts = {part: hf.read_state_dict(d) for part, d in dirs.items()}
    has_pooler = any(k.startswith("roberta.pooler.") for k in state_dicts.get("", {}))
    cfg = hf.model_config_from_hf(configs, has_pooler=has_pooler,
                                  source=os.path.join(next(iter(dirs.values())), "config.json"),
                                  scan_layers=scan_layers)
    params = hf.from_state_dicts(cfg, state_dicts, source=directory)
    return cfg, params, next(iter(dirs.values()))


def main_import(argv: list[str]) -> None:
    del argv
    src, out = os.path.abspath(cli.required(_FROM)), cli.required(cli.OUT)
    if not os.path.isdir(src):
        raise FileNotFoundError(f"{src}: no such directory")
    from bertjax.convert import google

    if google.is_google_checkpoint(src):
        cfg, params, files = google.load(src)
        if _SCAN.value:
            from bertjax.models.layers import stack_layers

            cfg, params = cfg.replace(scan_layers=True), stack_layers(params)
        lowercase = _LOWERCASE.value
        if lowercase is None and "vocab.txt" in files:
            lowercase = "uncased" in os.path.basename(src).lower()
        with tempfile.TemporaryDirectory() as tmp:
            for name, path in files.items():
                shutil.copy(path, os.path.join(tmp, name))
            tok = _tokenizer(tmp, cfg, lowercase)
    else:
        cfg, params, tok_dir = read_hf_dir(src, _SCAN.value)
        tok = _tokenizer(tok_dir, cfg, _LOWERCASE.value)
    checkpoint.save_model_dir(out, cfg, params, tok, overwrite=cli.OVERWRITE.value,
                              extra={"source": src})
    n = sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
    print(f"imported {cfg.family} ({n:,} parameters) from {src} to {os.path.abspath(out)}")


def export_hf(ckpt: str, out: str, overwrite: bool = False) -> list[str]:
    """Writes the HF PyTorch dir(s) of model directory `ckpt`; returns the written dirs."""
    from bertjax.data.tokenizers import load_tokenizer

    cfg, params = checkpoint.load_model_dir(ckpt)
    tok_dir = checkpoint.tokenizer_dir(ckpt)
    tok = load_tokenizer(tok_dir) if tok_dir else None
    if tok is None:
        _warn(f"{ckpt} has no tokenizer; exporting weights and config only")
    special: dict[str, int] = {}
    if tok is not None and cfg.family == "roberta":
        special = {"bos_token_id": tok.cls_id, "eos_token_id": tok.sep_id}
    configs = hf.hf_configs(cfg, special)
    state_dicts = hf.to_state_dicts(cfg, params)
    written = []
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for part in hf.parts(cfg):
            d = os.path.join(tmp, part) if part else tmp
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(configs[part], f, indent=2)
            hf.write_state_dict(d, state_dicts[part])
            if tok is not None:
                tok.save(d)
            written.append(os.path.join(os.path.abspath(out), part) if part
                           else os.path.abspath(out))
    return written


def main_export(argv: list[str]) -> None:
    del argv
    dirs = export_hf(cli.required(cli.CHECKPOINT), cli.required(cli.OUT), cli.OVERWRITE.value)
    for d in dirs:
        print(f"wrote {d}")
