r"""`python -m bertjax prepare tokenizer|data` (library: bertjax/data/from_config.py).

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

from absl import flags

from bertjax.commands import flags as common
from bertjax.data.from_config import prepare_data, prepare_tokenizer

_KIND = flags.DEFINE_string("kind", None, "prepare tokenizer: wordpiece | sentencepiece-unigram"
                            " | sentencepiece-bpe | bpe (default: the family's kind).")


def main(argv: list[str]) -> None:
    what = argv[1:]
    if what not in (["tokenizer"], ["data"]):
        raise ValueError("usage: python -m bertjax prepare tokenizer|data --config=... "
                         "(see README.md)")
    config = common.required(common.CONFIG)
    if what == ["tokenizer"]:
        out = common.required(common.OUT)
        prepare_tokenizer(config, out, _KIND.value)
        print(f"wrote {os.path.abspath(out)}")
    else:
        manifest = prepare_data(config, _KIND.value)
        splits = manifest.get("splits", {})
        summary = ", ".join(f"{name}: {s.get('examples', 0):,} examples"
                            for name, s in splits.items())
        print(f"wrote {os.path.abspath(config.data.dir)} ({summary})")
