"""TFRecords in the format of Google's create_pretraining_data.py, as training data.

Google's script (and NVIDIA's copy of it) writes one tf.train.Example per instance with
fixed-length features, statically masked:

  input_ids, input_mask, segment_ids                      int64 [L]  (0-padded)
  masked_lm_positions, masked_lm_ids                      int64 [P]  (0-padded)
  masked_lm_weights                                       float [P]  (1.0 real, 0.0 pad)
  next_sentence_labels                                    int64 [1]  (1: random next)

`import_google` turns a set of such files into a data directory `train` reads: it
scans every record once (the layout checked, ids against the tokenizer's vocabulary),
links the files into DATA/ under shard names, and writes a manifest with their record
counts and sha256 (checked again when the pipeline first opens each) and the tokenizer
the ids belong to (Google's vocab.txt, or any bertjax tokenizer directory). The
pipeline reads these records (and those `prepare data --config.data.format=google`
writes) with `feature_spec` and strips the padding (`hosts.parse_fn`).
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from bertjax.data.manifest import FORMAT, SPLITS, VERSION, Manifest, save_tokenizer
from bertjax.data.records import DataFormatError
from bertjax.data.shards import sha256_file, shard_name
from bertjax.errors import one_line
from bertjax.fileio import atomic_directory

FEATURES = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions",
            "masked_lm_ids", "masked_lm_weights", "next_sentence_labels")
_SEQ = ("input_ids", "input_mask", "segment_ids")  # length L
_PRED = ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")  # length P
_BATCH = 1024  # records parsed at a time while scanning


def feature_spec(tf: Any, length: int, predictions: int) -> dict[str, Any]:
    """The parse spec of Google's run_pretraining.py for records of length L and P."""
    spec = {k: tf.io.FixedLenFeature([length], tf.int64) for k in _SEQ}
    spec.update({k: tf.io.FixedLenFeature([predictions], tf.int64) for k in _PRED[:2]})
    spec["masked_lm_weights"] = tf.io.FixedLenFeature([predictions], tf.float32)
    spec["next_sentence_labels"] = tf.io.FixedLenFeature([1], tf.int64)
    return spec


def unpad(tf: Any, ex: dict[str, Any], length: int, predictions: int, pad_id: int
          ) -> dict[str, Any]:
    """Parsed Google features -> the pipeline's batch fields: lengths from input_mask,
    ids past the length set to `pad_id`, prediction counts from masked_lm_weights, and
    `layout_ok` [b] (input_mask and the weights are each ones then zeros, as Google's
    script writes them)."""
    mask = tf.cast(ex["input_mask"], tf.int32)
    lengths = tf.reduce_sum(mask, axis=1)
    attention = tf.sequence_mask(lengths, length, dtype=tf.int32)
    real_w = tf.cast(ex["masked_lm_weights"] > 0, tf.int32)
    counts = tf.reduce_sum(real_w, axis=1)
    real = tf.sequence_mask(counts, predictions, dtype=tf.int32)
    ok = tf.reduce_all(tf.equal(attention, mask), axis=1) & tf.reduce_all(
        tf.equal(real, real_w), axis=1)
    ids = tf.cast(ex["input_ids"], tf.int32)
    return {
        "input_ids": tf.where(attention > 0, ids, pad_id),
        "token_type_ids": tf.cast(ex["segment_ids"], tf.int32) * attention,
        "attention_mask": attention,
        "lengths": lengths,
        "type_lengths": lengths,
        "pair_labels": tf.cast(ex["next_sentence_labels"][:, 0], tf.int32),
        "masked_lm_positions": tf.cast(ex["masked_lm_positions"], tf.int32) * real,
        "masked_lm_ids": tf.cast(ex["masked_lm_ids"], tf.int32) * real,
        "mlm_counts": counts,
        "mlm_id_counts": counts,
        "layout_ok": ok,
    }


LAYOUT_ERROR = ("input_mask or masked_lm_weights is not a run of ones followed by zeros "
                "(the layout of Google's create_pretraining_data.py)")


def _shape(tf: Any, path: str) -> tuple[int, int] | None:
    """(L, P) of the first record of `path` (None: no record); DataFormatError if it is
    not a TFRecord file, or its first record lacks a feature or its lengths disagree."""
    try:
        first = list(tf.data.TFRecordDataset(path).take(1))
    except tf.errors.OpError as e:
        raise DataFormatError(f"{path}: not a TFRecord file ({one_line(e.message)})"
                              ) from None
    if not first:
        return None
    feats = tf.train.Example.FromString(first[0].numpy()).features.feature
    missing = [k for k in FEATURES if k not in feats]
    if missing:
        raise DataFormatError(
            f"{path}: record 1 lacks {', '.join(missing)}; not a TFRecord of Google's "
            "create_pretraining_data.py")

    def size(k: str) -> int:
        f = feats[k]
        return len(f.float_list.value if k == "masked_lm_weights" else f.int64_list.value)

    length, predictions = size("input_ids"), size("masked_lm_positions")
    for k in (*_SEQ, *_PRED):
        ref = "input_ids" if k in _SEQ else "masked_lm_positions"
        if size(k) != size(ref):
            raise DataFormatError(f"{path}: record 1: {k} has {size(k)} values, {ref} "
                                  f"{size(ref)}")
    return length, predictions


def _scan(tf: Any, path: str, length: int, predictions: int, vocab_size: int
          ) -> dict[str, Any]:
    """Reads every record of `path`: {examples, tokens, bytes, sha256}; DataFormatError
    naming the file and the record on a record that does not parse, breaks the layout,
    or holds an id outside the vocabulary."""
    sha256 = sha256_file(path, block=1 << 24)
    spec = feature_spec(tf, length, predictions)
    ds = tf.data.TFRecordDataset(path, buffer_size=1 << 22).batch(_BATCH)
    examples = tokens = 0
    it = iter(ds)
    while True:
        try:
            raw = next(it)
        except StopIteration:
            break
        except tf.errors.OpError as e:
            raise DataFormatError(f"{path}: unreadable after record {examples} "
                                  f"({one_line(e.message)})") from None
        try:
            ex = tf.io.parse_example(raw, spec)
        except tf.errors.InvalidArgumentError:
            for j in range(int(raw.shape[0])):
                try:
                    tf.io.parse_example(raw[j:j + 1], spec)
                except tf.errors.InvalidArgumentError as e:
                    raise DataFormatError(
                        f"{path}: record {examples + j + 1} does not have the features of "
                        f"record 1 (L={length}, P={predictions}): "
                        f"{one_line(e.message)}") from None
            raise
        b = {k: v.numpy() for k, v in unpad(tf, ex, length, predictions, 0).items()}
        problem = _problem(b, vocab_size)
        if problem is not None:
            row, what = problem
            raise DataFormatError(f"{path}: record {examples + row + 1}: {what}")
        examples += len(b["lengths"])
        tokens += int(b["lengths"].sum())
    return {"examples": examples, "tokens": tokens, "bytes": os.path.getsize(path),
            "sha256": sha256}


def _problem(b: dict[str, np.ndarray], vocab_size: int) -> tuple[int, str] | None:
    """(first bad row, what is wrong) of an unpadded batch, or None."""
    real_pred = np.arange(b["masked_lm_positions"].shape[1]) < b["mlm_counts"][:, None]
    checks = (
        (~b["layout_ok"], LAYOUT_ERROR),
        (((b["input_ids"] < 0) | (b["input_ids"] >= vocab_size)).any(axis=1),
         f"an input id lies outside the tokenizer's vocabulary [0, {vocab_size})"),
        ((real_pred & ((b["masked_lm_ids"] < 0) | (b["masked_lm_ids"] >= vocab_size))
          ).any(axis=1), f"a masked_lm id lies outside the vocabulary [0, {vocab_size})"),
        ((real_pred & (b["masked_lm_positions"] >= b["lengths"][:, None])).any(axis=1),
         "a masked_lm position lies past the end of input_mask"),
        ((b["pair_labels"] != 0) & (b["pair_labels"] != 1),
         "next_sentence_labels is neither 0 nor 1"),
    )
    for bad, what in checks:
        if bad.any():
            return int(np.argmax(bad)), what
    return None



def expand(pattern: str, what: str) -> list[str]:
    """The files a comma-separated list of globs names, sorted; one-line error if a
    pattern matches nothing."""
    files: list[str] = []
    for p in (x.strip() for x in pattern.split(",")):
        if not p:
            continue
        found = sorted(f for f in glob.glob(os.path.expanduser(p)) if os.path.isfile(f))
        if not found:
            raise FileNotFoundError(f"{what}={p!r} matches no file")
        files.extend(os.path.abspath(f) for f in found)
    if not files:
        raise ValueError(f"{what} is empty")
    duplicated = sorted({f for f in files if files.count(f) > 1})
    if duplicated:
        raise ValueError(f"{what}: {duplicated[0]} is named twice")
    return files


def _common_shape(tf: Any, splits: dict[str, Sequence[str]]) -> tuple[int, int]:
    """(L, P) of the files' records; DataFormatError when no file has a record or two
    files' records differ."""
    shapes = {path: _shape(tf, path) for files in splits.values() for path in files}
    first = next((p for p, shape in shapes.items() if shape is not None), None)
    if first is None:
        raise DataFormatError(f"{', '.join(shapes)}: no records")
    length, predictions = shapes[first]
    for path, shape in shapes.items():
        if shape not in (None, (length, predictions)):
            raise DataFormatError(
                f"{path}: records of L={shape[0]}, P={shape[1]}, but {first} has "
                f"L={length}, P={predictions}; import each length on its own")
    return length, predictions


def import_google(splits: dict[str, Sequence[str]], tokenizer: Any, out_dir: str, *,
                  overwrite: bool = False, progress: bool = True) -> Manifest:
    """Makes `out_dir` a data directory of existing Google-format TFRecords.

    Args:
      splits: {"train": [files], optionally "validation": [files]}.
      tokenizer: a `tokenizers.Tokenizer` (or its directory) whose ids the records hold.
      out_dir: the data directory to write (must not exist unless `overwrite`): the
        files are symlinked into it (absolute targets, so keep them where they are;
        the manifest's sha256 catches one that changes), DATA/tokenizer and the
        manifest are written. Nothing is left behind on error.

    Returns the manifest. DataFormatError names the file and record of a bad record.
    """
    from bertjax.data import tokenizers as tokenizers_lib
    from bertjax.data.tfsetup import tensorflow

    if isinstance(tokenizer, str):
        tokenizer = tokenizers_lib.load_tokenizer(tokenizer)
    if "train" not in splits:
        raise ValueError("import_google needs train files")
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split {unknown[0]!r}; splits are {', '.join(SPLITS)}")
    tf = tensorflow()
    length, predictions = _common_shape(tf, splits)
    vocab = tokenizer.vocab_size
    scanned: dict[str, list[dict[str, Any]]] = {}
    for split, files in splits.items():
        scanned[split] = []
        for path in files:
            info = _scan(tf, path, length, predictions, vocab)
            scanned[split].append({"source": path, **info})
            if progress:
                print(f"[{len(scanned[split])}/{len(files)} {split}] {path}: "
                      f"{info['examples']:,} records", file=sys.stderr, flush=True)
    if not sum(s["examples"] for s in scanned["train"]):
        raise DataFormatError(f"{', '.join(splits['train'])}: no training records")
    total = len({path for files in splits.values() for path in files})

    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        tok_entry = save_tokenizer(tokenizer, tmp)
        out_splits: dict[str, Any] = {}
        for split, infos in scanned.items():
            shards = []
            for k, info in enumerate(infos):
                name = shard_name(split, k, len(infos))
                os.symlink(info["source"], os.path.join(tmp, name))
                shards.append({"file": name, **info})
            out_splits[split] = {
                "examples": sum(s["examples"] for s in shards),
                "tokens": sum(s["tokens"] for s in shards),
                "shards": shards,
            }
        settings = {
            "source": "google-tfrecords",
            "instances": "nsp",
            "max_seq_length": length,
            "max_predictions_per_seq": predictions,
            "masking": "static",
            "record_format": "google",
        }
        raw = {
            "format": FORMAT,
            "version": VERSION,
            "settings": settings,
            "tokenizer": tok_entry,
            "masking": "static",
            "max_seq_length": length,
            "splits": out_splits,
            "source_stats": {"files": total},
            "vocab_check": "ok",
        }
        Manifest(tmp, raw).write()
    return Manifest(os.path.abspath(out_dir), raw)
