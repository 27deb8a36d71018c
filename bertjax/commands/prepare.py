r"""`python -m bertjax prepare tokenizer|data` (library: bertjax/data/from_config.py).

  # Train the family's kind of vocabulary on a source and write the standard files.
  python -m bertjax prepare tokenizer --config=configs/pretrain.py:bert_tiny \
      --config.data.source=demo --config.tokenizer.vocab_size=8000 --out=/tmp/vocab
  # Tokenize, build the family's instances, (statically) mask, and write shards + manifest.
  python -m bertjax prepare data --config=configs/pretrain.py:bert_tiny \
      --config.data.dir=/tmp/demo_data [--config.tokenizer.path=/tmp/vocab]

  # Use TFRecords made by Google's create_pretraining_data.py as they are.
  python -m bertjax prepare import-google --from='/data/wiki/*.tfrecord' \
      [--validation='/data/wiki_eval/*.tfrecord'] \
      --tokenizer=/models/uncased_L-12_H-768_A-12 --out=/data/wiki_google

`prepare data` without `config.tokenizer.path` first trains a tokenizer of the family's
kind on `config.data.source` (into DATA/tokenizer). Re-running an interrupted
`prepare data` skips the shards already written.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from absl import flags

from bertjax.commands import flags as common

_TOKENIZER = flags.DEFINE_string(
    "tokenizer",
    None,
    "prepare import-google: the vocabulary the records' ids come from: "
    "Google's vocab.txt (or its directory) or a bertjax tokenizer directory.",
)
_VALIDATION = flags.DEFINE_string(
    "validation", None, "prepare import-google: validation TFRecords (comma-separated globs)."
)
_KIND = flags.DEFINE_string(
    "kind",
    None,
    "prepare tokenizer: wordpiece | sentencepiece-unigram"
    " | sentencepiece-bpe | bpe | bpe-modernbert (default: the family's"
    " kind).",
)

HELP = {
    "prepare tokenizer": common.Usage((common.CONFIG, common.OUT, _KIND), "data.md"),
    "prepare data": common.Usage((common.CONFIG, _KIND), "data.md"),
    "prepare import-google": common.Usage(
        (common.FROM, _VALIDATION, _TOKENIZER, common.OUT, common.LOWERCASE, common.OVERWRITE),
        "data.md",
    ),
}


def main(argv: list[str]) -> None:
    what = argv[1:]
    if what == ["import-google"]:
        import_google()
        return
    if what not in (["tokenizer"], ["data"]):
        raise ValueError(
            "usage: python -m bertjax prepare tokenizer|data --config=... or "
            "prepare import-google --from=GLOB --tokenizer=DIR --out=DIR "
            "(see docs/data.md)"
        )
    from bertjax import paths
    from bertjax.data.from_config import prepare_data, prepare_tokenizer

    config = common.required(common.CONFIG)
    if what == ["tokenizer"]:
        out = common.required(common.OUT)
        prepare_tokenizer(config, out, _KIND.value)
        print(f"wrote {paths.absolute(out)}")
    else:
        manifest = prepare_data(config, _KIND.value)
        splits = manifest.get("splits", {})
        summary = ", ".join(
            f"{name}: {s.get('examples', 0):,} examples" for name, s in splits.items()
        )
        print(f"wrote {paths.absolute(config.data.dir)} ({summary})")


def import_google() -> None:
    """`prepare import-google`: a data directory over existing Google-format TFRecords."""
    from bertjax import paths
    from bertjax.data import google_records
    from bertjax.data.tokenizers import load_tokenizer

    splits = {"train": google_records.expand(common.required(common.FROM), "--from")}
    if _VALIDATION.value:
        splits["validation"] = google_records.expand(_VALIDATION.value, "--validation")
    path = paths.absolute(common.required(_TOKENIZER))
    out = common.required(common.OUT)
    with tempfile.TemporaryDirectory() as tmp, paths.local_copy(path) as local:
        if os.path.isfile(local):  # a vocab.txt on its own
            shutil.copy(local, os.path.join(tmp, "vocab.txt"))
            directory = tmp
        elif os.path.isdir(local):
            directory = local
        else:
            raise FileNotFoundError(f"--tokenizer={path}: no such file or directory")
        lowercase = common.LOWERCASE.value
        own = ("tokenizer.json", "tokenizer_config.json")
        if lowercase is None and not any(os.path.isfile(os.path.join(directory, f)) for f in own):
            lowercase = "uncased" in os.path.basename(os.path.normpath(path)).lower()
        tokenizer = load_tokenizer(directory, lowercase=lowercase)
    manifest = google_records.import_google(
        splits, tokenizer, out, overwrite=common.OVERWRITE.value
    )
    summary = ", ".join(
        f"{name}: {s['examples']:,} records in {len(s['shards'])} files"
        for name, s in manifest["splits"].items()
    )
    print(
        f"wrote {paths.absolute(out)} ({summary}; length {manifest['max_seq_length']}, "
        f"{manifest['settings']['max_predictions_per_seq']} predictions)"
    )
