"""Original Google TensorFlow checkpoints (BERT, ALBERT, ELECTRA) -> bertjax params.

The releases of google-research/bert, google-research/albert and
google-research/electra are TF1 checkpoints (`bert_model.ckpt`, `model.ckpt-best`,
`electra_base`, ...). Their variable names are translated into the HF PyTorch names
of `hf.name_map`, so each family keeps ONE name map (hf.py's) and this file only says
how Google spelled each HF tensor:

  Google (TF)                                  HF (PyTorch)
  bert/encoder/layer_3/output/dense/kernel     bert.encoder.layer.3.output.dense.weight (transposed)
  .../LayerNorm/gamma, .../LayerNorm/beta      ....LayerNorm.weight, ....LayerNorm.bias
  bert/embeddings/word_embeddings              bert.embeddings.word_embeddings.weight

TF dense kernels are [in, out] and torch Linear weights [out, in], so kernels are
transposed; `cls/seq_relationship/output_weights` is already [2, H] and is not.
Every tensor's shape is checked against the config before anything is converted.

Configs: BERT and ALBERT ship `bert_config.json` / `albert_config.json`, whose keys
are the ones HF took over. ELECTRA ships none: sizes come from the tensor shapes and
the head count follows ELECTRA's rule (hidden // 64, at least 1) unless an optional
`hparams.json` (ELECTRA's run_pretraining hparams) or `config.json` says otherwise.

TensorFlow is imported only inside the functions that read a checkpoint. Finding and
reading the checkpoint's files is google_checkpoint.py's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from bertjax.convert import hf
from bertjax.convert.google_checkpoint import (
    Reader,
    checkpoint_family,
    find_checkpoint,
    first_file,
    read_json,
    search_dirs,
    training_only,
)
from bertjax.convert.hf import ConversionError
from bertjax.models.config import ConfigError, ModelConfig
from bertjax.models.family import Family
from bertjax.models.registry import family as family_record

# Keys of bert_config.json / albert_config.json that HF kept under the same name.
_SHARED_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
)
# --- HF name -> Google name ----------------------------------------------------------


def google_names(part: hf.Part) -> dict[str, tuple[str, bool]]:
    """HF key -> (Google variable name, whether the TF tensor is the transposed one),
    for every tensor of `hf.name_map(part)`, by the family's rules (its `google` record)."""
    entries = hf.name_map(part)
    norms = {e.hf_key.rsplit(".", 1)[0] for e in entries if e.path[-1] == "scale"}
    google = family_record(part.cfg.family).google
    rules, special = google.rules[part.name], google.special
    out = {}
    for e in entries:
        if e.hf_key in special:
            out[e.hf_key] = (special[e.hf_key], False)
            continue
        module, leaf = e.hf_key.rsplit(".", 1)
        name = module
        for pattern, repl in rules:
            name = re.sub(pattern, repl, name)
        name = name.replace(".", "/")
        if module in norms:
            out[e.hf_key] = (f"{name}/{'gamma' if leaf == 'weight' else 'beta'}", False)
        elif e.path[-1] == "embedding":
            out[e.hf_key] = (name, False)
        elif e.kind != "copy":
            out[e.hf_key] = (f"{name}/kernel", True)
        elif leaf == "bias":
            out[e.hf_key] = (f"{name}/bias", False)
        else:  # a new kind of tensor in hf.py's map: say so rather than guess
            raise ValueError(f"no Google name rule for {e.hf_key}")
    return out


# --- configs ---------------------------------------------------------------------------


def _to_model_config(configs: Mapping[str, Mapping[str, Any]], source: str) -> ModelConfig:
    """A pretraining checkpoint: the family's pretraining heads."""
    fam = family_record(next(iter(configs.values()))["model_type"])
    try:
        return hf.config_from_hf(configs, source=source, heads=fam.pretrain_heads)
    except ConfigError as e:
        raise ConversionError(f"{source}: {e}") from None


def _config_file(fam: Family, path: str) -> ModelConfig:
    """bert_config.json / albert_config.json -> ModelConfig (through HF's key names)."""
    google = read_json(path)
    keys = _SHARED_CONFIG_KEYS + fam.google.config_keys
    d: dict[str, Any] = {k: google[k] for k in keys if k in google}
    d["model_type"] = fam.hf.model_type
    for key, inert in fam.google.inert_keys.items():
        if google.get(key, inert) != inert:
            raise ConversionError(
                f"{path}: {key}={google[key]!r} is not supported (only {inert!r})"
            )
    if d.get("hidden_act", "gelu") == "gelu":  # what "gelu" meant to this family's code
        d["hidden_act"] = fam.google.gelu
    return _to_model_config({"": d}, path)


def _electra_config(reader: Reader, hints_path: str | None) -> ModelConfig:
    """ELECTRA sizes from tensor shapes; heads and activation from hints or ELECTRA's rules."""
    src = reader.prefix

    def shape(name: str, rank: int) -> tuple[int, ...]:
        if name not in reader.shapes:
            raise ConversionError(f"{src}: variable {name} is missing")
        if len(reader.shapes[name]) != rank:
            raise ConversionError(
                f"{src}: variable {name} has shape {reader.shapes[name]}, expected rank {rank}"
            )
        return reader.shapes[name]

    hints: dict[str, Any] = {}
    if hints_path:
        raw = read_json(hints_path)
        hints = {**raw, **(raw.get("model_hparam_overrides") or {})}
    vocab, embed = shape("electra/embeddings/word_embeddings", 2)
    common = {
        "model_type": "electra",
        "vocab_size": vocab,
        "embedding_size": embed,
        "max_position_embeddings": shape("electra/embeddings/position_embeddings", 2)[0],
        "type_vocab_size": shape("electra/embeddings/token_type_embeddings", 2)[0],
        "hidden_act": hints.get("hidden_act", "gelu"),
    }
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range"):
        if key in hints:
            common[key] = hints[key]
    configs = {}
    for part, scope in (("discriminator", "electra"), ("generator", "generator")):
        layers = {
            int(m.group(1))
            for n in reader.shapes
            if (m := re.match(rf"{scope}/encoder/layer_(\d+)/", n))
        }
        if not layers:
            raise ConversionError(
                f"{src}: no {scope}/encoder/layer_* variables; only ELECTRA "
                "pretraining checkpoints with both towers are supported"
            )
        hidden = shape(f"{scope}/encoder/layer_0/attention/self/query/kernel", 2)[1]
        configs[part] = {
            **common,
            "hidden_size": hidden,
            "num_hidden_layers": max(layers) + 1,
            "intermediate_size": shape(f"{scope}/encoder/layer_0/intermediate/dense/kernel", 2)[1],
            # ELECTRA's rule (training_utils / get_generator_config).
            "num_attention_heads": max(1, hidden // 64),
        }
    if hints.get("debug"):  # ELECTRA's debug models override the discriminator's heads
        configs["discriminator"]["num_attention_heads"] = 4
    if "num_attention_heads" in hints:  # overrides reach the discriminator only
        configs["discriminator"]["num_attention_heads"] = hints["num_attention_heads"]
    disc = configs["discriminator"]
    for key in (
        "vocab_size",
        "embedding_size",
        "hidden_size",
        "num_hidden_layers",
        "intermediate_size",
        "max_position_embeddings",
        "type_vocab_size",
    ):
        if hints.get(key) is not None and hints[key] != disc[key]:
            raise ConversionError(
                f"{hints_path}: {key}={hints[key]!r}, but the checkpoint's tensors say {disc[key]}"
            )
    return _to_model_config(configs, hints_path or src)


# --- loading -----------------------------------------------------------------------------


def _tokenizer_files(fam: Family, dirs: list[str], cfg: ModelConfig) -> dict[str, str]:
    if fam.google.vocab_files != ("vocab.txt",):  # a SentencePiece model
        spm = first_file(dirs, fam.google.vocab_files)
        if spm is None:
            models = sorted(
                os.path.join(d, f)
                for d in dirs
                if os.path.isdir(d)
                for f in os.listdir(d)
                if f.endswith(".model")
            )
            spm = models[0] if len(models) == 1 else None
        return {"spiece.model": spm} if spm else {}
    vocab = first_file(dirs, ("vocab.txt",))
    if vocab is None:
        return {}
    with open(vocab, encoding="utf-8", errors="replace") as f:
        n = len(f.read().rstrip("\n").split("\n"))
    if n > cfg.vocab_size:  # ids past the table would be clamped silently, not rejected
        raise ConversionError(
            f"{vocab}: {n} tokens, but the checkpoint's embeddings have {cfg.vocab_size} rows"
        )
    return {"vocab.txt": vocab}


def _synthesized(fam: Family, cfg: ModelConfig) -> dict[str, Callable[[], np.ndarray]]:
    """Variables Google omits where they would be the identity. ALBERT creates
    `embedding_hidden_mapping_in` only when E != H; HF (and we) always apply it."""
    name = fam.google.identity_projection
    if not name or cfg.embed_dim != cfg.hidden_size:
        return {}
    h = cfg.hidden_size
    return {
        f"{name}/kernel": lambda: np.eye(h, dtype=np.float32),
        f"{name}/bias": lambda: np.zeros((h,), np.float32),
    }


def load(directory: str) -> tuple[ModelConfig, dict, dict[str, str]]:
    """Reads a Google BERT / ALBERT / ELECTRA TF checkpoint.

    `directory` holds the checkpoint (or is its prefix) plus, for BERT and ALBERT,
    `bert_config.json` / `albert_config.json`. Returns (cfg, params in cfg's layout as
    numpy arrays, tokenizer files to copy {target name: path}: {"vocab.txt": ...} for
    BERT and ELECTRA, {"spiece.model": ...} for ALBERT, {} when none is found).

    Optimizer slots and step counters are skipped; any other variable the name map
    does not know, a missing variable or a shape that does not fit the config raises
    `ConversionError` naming it.
    """
    prefix = find_checkpoint(directory)
    dirs = search_dirs(directory, prefix)
    reader = Reader(prefix)
    fam = checkpoint_family(reader)
    config_files = fam.google.config_files
    config_path = first_file(dirs, config_files)
    if fam.google.sizes_from_tensors:
        cfg = _electra_config(reader, config_path)
        cfg_source = config_path or "the shapes of the checkpoint"
    else:
        if config_path is None:
            raise ConversionError(
                f"{os.path.join(dirs[0], config_files[0])}: "
                f"missing (needed for {fam.name.upper()} checkpoints)"
            )
        cfg = _config_file(fam, config_path)
        cfg_source = config_path

    # Google name -> [(part, HF key, transposed)]: ELECTRA's towers share embeddings.
    wanted: dict[str, list[tuple[str, str, bool]]] = {}
    hf_shapes: dict[str, tuple[int, ...]] = {}
    ours = hf.abstract_shapes(cfg)
    for part in hf.parts(cfg):
        entries = {e.hf_key: e for e in hf.name_map(part)}
        for hf_key, (name, transposed) in google_names(part).items():
            wanted.setdefault(name, []).append((part.name, hf_key, transposed))
            shape = hf.hf_shape(entries[hf_key], ours[entries[hf_key].path])
            hf_shapes[name] = shape[::-1] if transposed else shape

    unknown = sorted(n for n in reader.shapes if n not in wanted and not training_only(n))
    if unknown:
        raise ConversionError(
            f"{prefix}: unknown variable {unknown[0]} ({len(unknown)} unknown in all)"
        )
    synthesized = _synthesized(fam, cfg)
    for name, expected in hf_shapes.items():
        if name not in reader.shapes:
            if name in synthesized:
                continue
            raise ConversionError(f"{prefix}: variable {name} is missing")
        if reader.shapes[name] != expected:
            raise ConversionError(
                f"{prefix}: variable {name} has shape {reader.shapes[name]}, "
                f"but {cfg_source} needs {expected}"
            )

    state_dicts: dict[str, dict[str, np.ndarray]] = {part.name: {} for part in hf.parts(cfg)}
    for name, users in wanted.items():
        arr = reader.get(name) if name in reader.shapes else synthesized[name]()
        for part, hf_key, transposed in users:
            state_dicts[part][hf_key] = arr.T if transposed else arr
    params = hf.from_state_dicts(cfg, state_dicts, source=prefix)
    return cfg, params, _tokenizer_files(fam, dirs, cfg)
