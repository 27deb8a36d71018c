r"""`python -m bertjax prepare tokenizer|data`.

  # Train the family's kind of vocabulary on a source and write the standard files.
  python -m bertjax prepare tokenizer --config=configs/pretrain.py:bert_tiny \
      --config.data.source=demo --config.tokenizer.vocab_size=8000 --out=/tmp/vocab
  # Tokenize, build the family's instances, (statically) mask, and write shards + manifest.
  python -m bertjax prepare data --config=configs/pretrain.py:bert_tiny \
      --config.data.dir=/tmp/demo_data [--config.tokenizer.path=/tmp/vocab]

`prepare data` without `config.tokenizer.path` first trains a tokenizer of the family's
kind on `config.data.source` (into DATA/tokenizer). Re-running an interrupted
`prepare data` skips the shards already written.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

from absl import flags

from bertjax import cli
from bertjax.models import ModelConfig

_KIND = flags.DEFINE_string("kind", None, "prepare tokenizer: wordpiece | sentencepiece-unigram"
                            " | sentencepiece-bpe | bpe (default: the family's kind).")

# The vocabulary each family is published with.
FAMILY_KIND = {"bert": "wordpiece", "distilbert": "wordpiece", "electra": "wordpiece",
               "roberta": "bpe", "albert": "sentencepiece-unigram"}


def _tokenizer(config: Any, source: Any, out_dir: str, kind: str | None = None) -> Any:
    from bertjax.data import tokenizers, train_tokenizer

    cfg = ModelConfig.from_dict(config.model.to_dict())
    kind = kind or FAMILY_KIND[cfg.family]
    print(f"training a {kind} tokenizer ({config.tokenizer.vocab_size} tokens) on "
          f"{config.data.source}", file=sys.stderr)
    tok = train_tokenizer.train(source, kind,
                                config.tokenizer.vocab_size, out_dir,
                                lowercase=config.tokenizer.lowercase, family=cfg.family)
    tok.tokenizer_class = tokenizers.FAMILY_TOKENIZER_CLASS[cfg.family]
    return tok


def prepare_tokenizer(config: Any, out_dir: str, kind: str | None = None) -> None:
    from bertjax.data import sources

    _tokenizer(config, sources.open_source(config.data.source), out_dir, kind)
    print(f"wrote {os.path.abspath(out_dir)}")


def masking_config(config: Any, max_predictions_per_seq: int | None = None) -> Any:
    """The MaskingConfig that `config.data` describes (static and dynamic masking alike)."""
    from bertjax.data import masking

    data = config.data
    return masking.MaskingConfig(
        masked_lm_prob=data.masked_lm_prob,
        max_predictions_per_seq=max_predictions_per_seq or config.max_predictions_per_seq,
        strategy=data.mask_strategy, max_ngram=data.max_ngram,
        span_geometric_p=data.span_geometric_p, span_max_length=data.span_max_length)


def prepare_data(config: Any, kind: str | None = None) -> dict:
    from bertjax.data import prepare, sources, tokenizers

    cfg = ModelConfig.from_dict(config.model.to_dict())
    data = config.data
    if not data.dir:
        raise ValueError("--config.data.dir is required: where to write the prepared data")
    source = sources.open_source(data.source)  # a bad spec fails before any work
    with tempfile.TemporaryDirectory() as tmp:
        if config.tokenizer.path:
            tok = tokenizers.load_tokenizer(config.tokenizer.path)
        else:
            tok = _tokenizer(config, source, os.path.join(tmp, "tokenizer"), kind)
        if tok.vocab_size > cfg.vocab_size:
            raise ValueError(f"tokenizer has {tok.vocab_size} tokens, more than "
                             f"model.vocab_size={cfg.vocab_size}")
        return prepare.prepare(
            source, tok, data.dir, instances=data.instances,
            max_seq_length=config.max_seq_length, short_seq_prob=data.short_seq_prob,
            masking=data.masking, masking_config=masking_config(config),
            dupe_factor=data.dupe_factor,
            docs_per_shard=data.docs_per_shard, validation_every=data.validation_every,
            num_workers=data.num_workers, seed=config.seed,
            max_inflight_mb=data.max_inflight_mb)


def main(argv: list[str]) -> None:
    what = argv[1:]
    if what not in (["tokenizer"], ["data"]):
        raise ValueError("usage: python -m bertjax prepare tokenizer|data --config=... "
                         "(see README.md)")
    config = cli.required(cli.CONFIG)
    if what == ["tokenizer"]:
        prepare_tokenizer(config, cli.required(cli.OUT), _KIND.value)
    else:
        manifest = prepare_data(config, _KIND.value)
        splits = manifest.get("splits", {})
        summary = ", ".join(f"{name}: {s.get('examples', 0):,} examples"
                            for name, s in splits.items())
        print(f"wrote {os.path.abspath(config.data.dir)} ({summary})")
