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

Either side may be gs:// (through bertjax.paths; TensorFlow never opens a URL): a
record file in a bucket is scanned from a temporary local copy, one file at a time.
Files cannot be linked across stores, so into or out of a bucket they are copied (a
server-side copy from bucket to bucket); into a bucket the tokenizer and the shards
are uploaded first and manifest.json last.
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from bertjax import paths
from bertjax.data.manifest import (
    FORMAT,
    MANIFEST,
    SPLITS,
    TOKENIZER_DIR,
    VERSION,
    Manifest,
    save_tokenizer,
)
from bertjax.data.records import DataFormatError
from bertjax.data.shard_files import shard_name
from bertjax.errors import one_line

FEATURES = (
    "input_ids",
    "input_mask",
    "segment_ids",
    "masked_lm_positions",
    "masked_lm_ids",
    "masked_lm_weights",
    "next_sentence_labels",
)
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


def unpad(
    tf: Any, ex: dict[str, Any], length: int, predictions: int, pad_id: int
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
        tf.equal(real, real_w), axis=1
    )
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


LAYOUT_ERROR = (
    "input_mask or masked_lm_weights is not a run of ones followed by zeros "
    "(the layout of Google's create_pretraining_data.py)"
)


def _shape(tf: Any, path: str, name: str | None = None) -> tuple[int, int] | None:
    """(L, P) of the first record of local file `path` (None: no record); DataFormatError
    naming `name` (default `path`) if it is not a TFRecord file, or its first record
    lacks a feature or its lengths disagree."""
    name = name or path
    try:
        first = list(tf.data.TFRecordDataset(path).take(1))
    except tf.errors.OpError as e:
        raise DataFormatError(f"{name}: not a TFRecord file ({one_line(e.message)})") from None
    if not first:
        return None
    feats = tf.train.Example.FromString(first[0].numpy()).features.feature
    missing = [k for k in FEATURES if k not in feats]
    if missing:
        raise DataFormatError(
            f"{name}: record 1 lacks {', '.join(missing)}; not a TFRecord of Google's "
            "create_pretraining_data.py"
        )

    def size(k: str) -> int:
        f = feats[k]
        return len(f.float_list.value if k == "masked_lm_weights" else f.int64_list.value)

    length, predictions = size("input_ids"), size("masked_lm_positions")
    for k in (*_SEQ, *_PRED):
        ref = "input_ids" if k in _SEQ else "masked_lm_positions"
        if size(k) != size(ref):
            raise DataFormatError(f"{name}: record 1: {k} has {size(k)} values, {ref} {size(ref)}")
    return length, predictions


def _scan(
    tf: Any, path: str, length: int, predictions: int, vocab_size: int, name: str | None = None
) -> dict[str, Any]:
    """Reads every record of local file `path`: {examples, tokens, bytes, sha256};
    DataFormatError naming the file (`name`, default `path`) and the record on a record
    that does not parse, breaks the layout, or holds an id outside the vocabulary."""
    name = name or path
    sha256 = paths.sha256(path)
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
            raise DataFormatError(
                f"{name}: unreadable after record {examples} ({one_line(e.message)})"
            ) from None
        try:
            ex = tf.io.parse_example(raw, spec)
        except tf.errors.InvalidArgumentError:
            for j in range(int(raw.shape[0])):
                try:
                    tf.io.parse_example(raw[j : j + 1], spec)
                except tf.errors.InvalidArgumentError as e:
                    raise DataFormatError(
                        f"{name}: record {examples + j + 1} does not have the features of "
                        f"record 1 (L={length}, P={predictions}): "
                        f"{one_line(e.message)}"
                    ) from None
            raise
        b = {k: v.numpy() for k, v in unpad(tf, ex, length, predictions, 0).items()}
        problem = _problem(b, vocab_size)
        if problem is not None:
            row, what = problem
            raise DataFormatError(f"{name}: record {examples + row + 1}: {what}")
        examples += len(b["lengths"])
        tokens += int(b["lengths"].sum())
    return {
        "examples": examples,
        "tokens": tokens,
        "bytes": os.path.getsize(path),
        "sha256": sha256,
    }


def _problem(b: dict[str, np.ndarray], vocab_size: int) -> tuple[int, str] | None:
    """(first bad row, what is wrong) of an unpadded batch, or None."""
    real_pred = np.arange(b["masked_lm_positions"].shape[1]) < b["mlm_counts"][:, None]
    checks = (
        (~b["layout_ok"], LAYOUT_ERROR),
        (
            ((b["input_ids"] < 0) | (b["input_ids"] >= vocab_size)).any(axis=1),
            f"an input id lies outside the tokenizer's vocabulary [0, {vocab_size})",
        ),
        (
            (real_pred & ((b["masked_lm_ids"] < 0) | (b["masked_lm_ids"] >= vocab_size))).any(
                axis=1
            ),
            f"a masked_lm id lies outside the vocabulary [0, {vocab_size})",
        ),
        (
            (real_pred & (b["masked_lm_positions"] >= b["lengths"][:, None])).any(axis=1),
            "a masked_lm position lies past the end of input_mask",
        ),
        (
            (b["pair_labels"] != 0) & (b["pair_labels"] != 1),
            "next_sentence_labels is neither 0 nor 1",
        ),
    )
    for bad, what in checks:
        if bad.any():
            return int(np.argmax(bad)), what
    return None


def expand(pattern: str, what: str) -> list[str]:
    """The files a comma-separated list of globs (local or gs://) names, sorted;
    one-line error if a pattern matches nothing."""
    files: list[str] = []
    for p in (x.strip() for x in pattern.split(",")):
        if not p:
            continue
        if paths.is_remote(p):
            found = sorted(f for f in paths.glob(p) if paths.isfile(f))
        else:
            found = sorted(f for f in glob.glob(os.path.expanduser(p)) if os.path.isfile(f))
        if not found:
            raise FileNotFoundError(f"{what}={p!r} matches no file")
        files.extend(paths.absolute(f) for f in found)
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
                f"L={length}, P={predictions}; import each length on its own"
            )
    return length, predictions


def import_google(
    splits: dict[str, Sequence[str]],
    tokenizer: Any,
    out_dir: str,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Manifest:
    """Makes `out_dir` a data directory of existing Google-format TFRecords.

    Args:
      splits: {"train": [files], optionally "validation": [files]}; local paths or
        gs:// URLs.
      tokenizer: a `tokenizers.Tokenizer` (or its directory) whose ids the records hold.
      out_dir: the data directory to write (must not exist unless `overwrite`): local
        files are symlinked into a local one (absolute targets, so keep them where they
        are; the manifest's sha256 catches one that changes), other files copied;
        DATA/tokenizer and the manifest are written. Nothing is left behind on error,
        and a gs:// out_dir gets its manifest.json last.

    Returns the manifest. DataFormatError names the file and record of a bad record.
    """
    from bertjax.data import tokenizers as tokenizers_lib
    from bertjax.data.tfsetup import tensorflow

    if isinstance(tokenizer, str):
        with paths.local_copy(tokenizer) as local:
            tokenizer = tokenizers_lib.load_tokenizer(local)
    if "train" not in splits:
        raise ValueError("import_google needs train files")
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split {unknown[0]!r}; splits are {', '.join(SPLITS)}")
    if paths.is_remote(out_dir) and paths.exists(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir} already exists (pass --overwrite to replace it)")
    tf = tensorflow()
    (length, predictions), scanned = _scan_splits(tf, splits, tokenizer.vocab_size, progress)
    if not sum(s["examples"] for s in scanned["train"]):
        raise DataFormatError(f"{', '.join(splits['train'])}: no training records")
    raw = _manifest(splits, scanned, length, predictions)
    if paths.is_remote(out_dir):
        out_dir = paths.absolute(out_dir)
        _publish_remote(tokenizer, raw, out_dir)
        return Manifest(out_dir, raw)
    with paths.atomic_directory(out_dir, overwrite=overwrite, marker=MANIFEST) as tmp:
        raw["tokenizer"] = save_tokenizer(tokenizer, tmp)
        for info in raw["splits"].values():
            for shard in info["shards"]:
                if paths.is_remote(shard["source"]):
                    paths.copy(shard["source"], os.path.join(tmp, shard["file"]))
                else:
                    os.symlink(shard["source"], os.path.join(tmp, shard["file"]))
        Manifest(tmp, raw).write()
    return Manifest(os.path.abspath(out_dir), raw)


def _manifest(
    splits: dict[str, Sequence[str]],
    scanned: dict[str, list[dict[str, Any]]],
    length: int,
    predictions: int,
) -> dict[str, Any]:
    """The manifest of the imported files (`_scan_splits`' figures): one shard per file,
    named as `prepare data` names them; its tokenizer entry is filled in when written."""
    total = len({path for files in splits.values() for path in files})
    out_splits: dict[str, Any] = {}
    for split, infos in scanned.items():
        shards = [
            {"file": shard_name(split, k, len(infos)), **info} for k, info in enumerate(infos)
        ]
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
        "tokenizer": None,
        "masking": "static",
        "max_seq_length": length,
        "splits": out_splits,
        "source_stats": {"files": total},
        "vocab_check": "ok",
    }
    return raw


def _scan_splits(
    tf: Any, splits: dict[str, Sequence[str]], vocab: int, progress: bool
) -> tuple[tuple[int, int], dict[str, list[dict[str, Any]]]]:
    """((L, P), {split: [{source, examples, tokens, bytes, sha256}]}) of the files. Local
    files: every file's shape first, then each scanned. With files in a bucket, one pass:
    each downloaded once to a temporary local copy, its shape checked, scanned, removed."""
    remote = any(paths.is_remote(p) for files in splits.values() for p in files)
    shape: tuple[int, int] | None = None if remote else _common_shape(tf, splits)
    first = None
    scanned: dict[str, list[dict[str, Any]]] = {}
    for split, files in splits.items():
        scanned[split] = []
        for path in files:
            with paths.local_copy(path) as local:
                if remote:
                    own = _shape(tf, local, path)
                    if own is not None and shape is None:
                        shape, first = own, path
                    elif own is not None and own != shape:
                        raise DataFormatError(
                            f"{path}: records of L={own[0]}, P={own[1]}, but {first} has "
                            f"L={shape[0]}, P={shape[1]}; import each length on its own"
                        )
                info = _scan(tf, local, *(shape or (1, 1)), vocab, path)
            scanned[split].append({"source": path, **info})
            if progress:
                print(
                    f"[{len(scanned[split])}/{len(files)} {split}] {path}: "
                    f"{info['examples']:,} records",
                    file=sys.stderr,
                    flush=True,
                )
    if shape is None:
        raise DataFormatError(f"{', '.join(p for fs in splits.values() for p in fs)}: no records")
    return shape, scanned


def _publish_remote(tokenizer: Any, raw: dict[str, Any], out_dir: str) -> None:
    """Writes the data directory at URL `out_dir`: an existing one loses its manifest
    first and then the rest; the tokenizer is uploaded, the record files copied, and
    manifest.json written last."""
    with tempfile.TemporaryDirectory(prefix="bertjax-import-") as tmp:
        raw["tokenizer"] = save_tokenizer(tokenizer, tmp)
        if paths.exists(out_dir):
            paths.remove(paths.join(out_dir, MANIFEST))
            paths.rmtree(out_dir)
        local_tok = os.path.join(tmp, TOKENIZER_DIR)
        for name in sorted(os.listdir(local_tok)):
            paths.upload(os.path.join(local_tok, name), paths.join(out_dir, TOKENIZER_DIR, name))
        for info in raw["splits"].values():
            for shard in info["shards"]:
                paths.copy(shard["source"], paths.join(out_dir, shard["file"]))
        Manifest(out_dir, raw).write()
