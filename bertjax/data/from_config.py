"""The data layer as a config file (configs/pretrain.py) describes it: the tokenizer to
train, the prepared data to write and the masking to apply.

`prepare tokenizer` and `prepare data` (bertjax/commands/prepare.py) are thin wrappers
around `prepare_tokenizer` and `prepare_data`; the pretraining tasks call
`masking_config` for dynamic masking.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

from bertjax.models import ModelConfig
from bertjax.models.registry import family


def _tokenizer(config: Any, source: Any, out_dir: str, kind: str | None = None) -> Any:
    from bertjax.data import train_tokenizer

    cfg = ModelConfig.from_dict(config.model.to_dict())
    kind = kind or family(cfg.family).tokenizer_kind
    print(
        f"training a {kind} tokenizer ({config.tokenizer.vocab_size} tokens) on "
        f"{config.data.source}",
        file=sys.stderr,
    )
    tok = train_tokenizer.train(
        source,
        kind,
        config.tokenizer.vocab_size,
        out_dir,
        lowercase=config.tokenizer.lowercase,
        family=cfg.family,
    )
    tok.tokenizer_class = family(cfg.family).tokenizer_class
    return tok


def _open_source(config: Any) -> Any:
    """config.data.source, refusing input that is mostly not text past
    config.data.max_bad_fraction (source_base.py)."""
    from bertjax.data import source_base, sources

    limit = config.data.get("max_bad_fraction", source_base.MAX_BAD_FRACTION)
    return sources.open_source(config.data.source, max_bad_fraction=limit)


def _nothing_written(e: Exception) -> Exception:
    """A NotTextError saying that nothing was left behind (prepare and the tokenizer's
    atomic directory saw to it)."""
    from bertjax.data import source_base

    return source_base.NotTextError(f"{e}; nothing written")


def prepare_tokenizer(config: Any, out_dir: str, kind: str | None = None) -> Any:
    """Trains the family's kind of tokenizer (or `kind`) on config.data.source into
    `out_dir` (local or gs://)."""
    from bertjax.data import source_base

    try:
        return _tokenizer(config, _open_source(config), out_dir, kind)
    except source_base.NotTextError as e:
        raise _nothing_written(e) from None


def masking_config(config: Any, max_predictions_per_seq: int | None = None) -> Any:
    """The MaskingConfig that `config.masking` describes (static and dynamic masking alike):
    its keys are MaskingConfig's fields but max_predictions_per_seq, which is
    `config.max_predictions_per_seq` (or the argument: a phase's)."""
    from bertjax.data import masking

    return masking.MaskingConfig(
        **config.masking.to_dict(),
        max_predictions_per_seq=max_predictions_per_seq or config.max_predictions_per_seq,
    )


def prepare_data(
    config: Any, kind: str | None = None, *, documents: Any = None, progress: bool = True
) -> Any:
    """Tokenizes config.data.source (or `documents`, lists of sentences already read
    from it) into config.data.dir (shards + manifest); trains the tokenizer first unless
    config.tokenizer.path gives one. Returns the Manifest. Every path may be gs://."""
    from bertjax import paths
    from bertjax.data import source_base

    cfg = ModelConfig.from_dict(config.model.to_dict())
    data = config.data
    if not data.dir:
        raise ValueError("--config.data.dir is required: where to write the prepared data")
    offset = cfg.position_offset
    if int(config.max_seq_length) + offset > cfg.max_position_embeddings:
        raise ValueError(
            f"max_seq_length={config.max_seq_length} is longer than the model "
            f"takes (model.max_position_embeddings={cfg.max_position_embeddings}"
            + (f", {offset} of them before the first token" if offset else "")
            + ")"
        )
    if cfg.local_window and cfg.local_window // 2 >= int(config.max_seq_length) - 1:
        raise ValueError(
            f"model.local_window={cfg.local_window} spans the whole "
            f"max_seq_length={config.max_seq_length}: its local layers would be "
            "global; lower model.local_window or raise max_seq_length"
        )
    # A bad spec, or a bucket that does not exist, fails before any work.
    source = documents if documents is not None else _open_source(config)
    if paths.is_remote(data.dir):
        paths.makedirs(data.dir)
    try:
        return _prepare_data(config, cfg, source, kind, progress)
    except source_base.NotTextError as e:
        raise _nothing_written(e) from None


def _prepare_data(config: Any, cfg: Any, source: Any, kind: str | None, progress: bool) -> Any:
    """`prepare_data` once the config is checked: the tokenizer, then the shards."""
    from bertjax import paths
    from bertjax.data import prepare, tokenizers
    from bertjax.data.prepare_settings import PrepareSettings

    data = config.data
    with tempfile.TemporaryDirectory() as tmp:
        if config.tokenizer.path:
            with paths.local_copy(config.tokenizer.path) as local:
                tok = tokenizers.load_tokenizer(local)
        else:
            tok = _tokenizer(config, source, os.path.join(tmp, "tokenizer"), kind)
        if tok.vocab_size > cfg.vocab_size:
            raise ValueError(
                f"tokenizer has {tok.vocab_size} tokens, more than "
                f"model.vocab_size={cfg.vocab_size}"
            )
        settings = PrepareSettings(
            instances=data.instances,
            max_seq_length=config.max_seq_length,
            short_seq_prob=data.short_seq_prob,
            masking=data.masking,
            masking_config=masking_config(config),
            dupe_factor=data.dupe_factor,
            dupe_mode=data.get("dupe_mode", "rebuild"),
            nsp_single_sentence=data.get("nsp_single_sentence", "split"),
            record_format=data.get("format", "bertjax"),
            docs_per_shard=data.docs_per_shard,
            validation_every=data.validation_every,
            num_workers=data.num_workers,
            seed=config.seed,
            max_inflight_mb=data.max_inflight_mb,
        )
        return prepare.prepare(source, tok, data.dir, settings, progress=progress)
