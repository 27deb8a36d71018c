"""One shard: a chunk of documents -> instances -> checked examples -> a TFRecord file.

`process_chunk` runs in a worker process (`init_worker` loads the tokenizer and the
static masker once per process) or in the main one, and makes chunk c a pure
function of (chunk, settings), whatever the worker count:

  * instances (`instances.py`) drawn with rng = default_rng([seed, _RNG_TAG, c, 1]);
    with static masking, dupe_factor passes: pass d > 0 rebuilt with
    default_rng([seed, _RNG_TAG, c, 1000 + d]) (dupe_mode "rebuild") or pass 0's
    instances again ("remask"), masked with default_rng([seed, _RNG_TAG, c, 2 + d]),
    then the passes mixed through the shard by the chunk's rng. (The rng lists all
    have the same length and end in a nonzero entry: numpy's SeedSequence maps [s, 0]
    and [s] to the same stream.)
  * every example checked on exactly the bytes written: ids in [0, vocab_size), length
    <= max_seq_length, masked positions inside the example (masked copies included);
    one that fails is dropped and counted (`vocab_check_dropped`).
  * written atomically as DATA/.shards/SPLIT-NNNNN.tfrecord, then its metadata (.json)
    the same way (shard_files.py); `finished_shards.Resume` finds such files (and the
    shards of a finished run) again for the same chunk text and settings, and
    `finished_shards.publish` renames them to SPLIT-NNNNN-of-MMMMM.tfrecord when every
    chunk is done.
  * on an object store (DATA = gs://...; `task["publish_dir"]` = DATA/.shards) the
    shard is built in a local directory, uploaded as one object (visible only once
    complete) named by its sha256 (DATA/.shards/SPLIT-NNNNN-SHA.tfrecord), then its
    metadata object (SPLIT-NNNNN.json, naming it), and the local file removed: the
    .json says that the object it names was published whole, and no later upload can
    put other bytes under that name.
  * memory stays proportional to the chunk's text, whatever the text: the chunk comes
    as UTF-8 (`chunks.PackedChunk`), is tokenized 2^16 characters at a time into int32
    ids, each pass's examples are packed (uint16 ids, int8 types) as soon as they are
    built (shard_examples.py), the shard is checked, encoded and written _SLICE_TOKENS
    tokens at a time, and the memory is handed back to the system after each chunk.
    `chunks.worker_memory` bounds what a chunk takes; the main process admits chunks by
    it (prepare.py).

Shard format: TFRecord (masked CRC-32C framing, uncompressed) of tf.train.Example
protos with int64 features input_ids, token_type_ids, pair_label and, for static
masking, masked_lm_positions and masked_lm_ids (input_ids then already masked); with
record_format "google", the fixed-length features of Google's
create_pretraining_data.py (`shard_examples.google_features`). The records are encoded
with numpy (records.py), so preparation needs no TensorFlow; `tf.data.TFRecordDataset`
+ `tf.io.parse_example` read them, `records.read_examples` too (TF-free, for tests).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from bertjax import paths
from bertjax.data import instances as instances_lib
from bertjax.data import tokenizers as tokenizers_lib
from bertjax.data.chunks import PackedChunk
from bertjax.data.records import tfrecord_bytes
from bertjax.data.shard_examples import (
    Columns,
    drop_invalid,
    fill,
    google_features,
    mask_static,
)
from bertjax.data.shard_files import write_atomic, write_atomic_stream
from bertjax.data.tokenize_documents import tokenize_documents

_RNG_TAG = 0x70726570  # "prep": keeps these streams apart from other uses of the seed
# Tokens checked, encoded and written at a time (the record encoder takes ~100 bytes of
# index arrays a token): max(1, _SLICE_TOKENS // max_seq_length) examples.
_SLICE_TOKENS = 1 << 16


_WORKER: dict[str, Any] = {}


def init_worker(tokenizer_dir: str, settings: dict[str, Any], parallel: bool) -> None:
    """Loads the tokenizer (and static masker) once per worker process; `settings` are
    the ones that decide the bytes (prepare_settings.PrepareSettings.output_settings)."""
    if parallel:  # one process per core already; no Rust thread pool per process
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tok = tokenizers_lib.load_tokenizer(tokenizer_dir)
    masker = None
    if settings["masking"] == "static":
        from bertjax.data import masking

        masker = masking.masker_from_tokenizer(
            tok, masking.MaskingConfig(**settings["masking_config"])
        )
    _WORKER.clear()
    _WORKER.update(tokenizer=tok, masker=masker, settings=settings)


def process_chunk(task: dict[str, Any]) -> dict[str, Any]:
    """Builds, checks and writes one shard; returns its metadata (also written).

    task: split, shard (its index in the split), chunk, documents (a PackedChunk, or
    lists of sentences), input_sha256 (of the chunk's text), settings_key, parts_dir
    (local), and publish_dir: None, or the URL of DATA/.shards to upload the shard and
    its metadata to.
    """
    try:
        return _process_chunk(task)
    finally:
        release_memory()


def _process_chunk(task: dict[str, Any]) -> dict[str, Any]:
    tok, s = _WORKER["tokenizer"], _WORKER["settings"]
    max_len = s["max_seq_length"]
    stats = instances_lib.InstanceStats()
    rng = _rng(s["seed"], task["chunk"], 1)
    budget = instances_lib.segment_budget(s["instances"], max_len)
    documents = task["documents"]
    if isinstance(documents, PackedChunk):
        documents = documents.documents()
    docs = tokenize_documents(tok, documents, budget, stats)
    del documents
    release_memory()  # the tokenizer's threads freed what they held in their own arenas
    columns, order, dropped = _passes(docs, task["chunk"], rng, stats)
    del docs
    google = s.get("record_format", "bertjax") == "google"
    predictions = s["masking_config"]["max_predictions_per_seq"] if google else 0
    base = os.path.join(task["parts_dir"], f"{task['split']}-{task['shard']:05d}")
    counts = {"examples": 0, "tokens": 0, "bad": 0}

    rows_per_slice = max(1, _SLICE_TOKENS // max_len)

    def records() -> Iterator[bytes]:  # the shard's bytes, a slice of examples at a time
        for lo in range(0, columns.size, rows_per_slice):
            rows = np.arange(lo, min(lo + rows_per_slice, columns.size))
            features, bad = drop_invalid(
                columns.features(rows if order is None else order[rows]), tok.vocab_size, max_len
            )
            counts["bad"] += bad
            counts["examples"] += len(features["input_ids"][1])
            counts["tokens"] += int(features["input_ids"][1].sum())
            if google:
                features = google_features(features, max_len, predictions)
            yield tfrecord_bytes(features)

    nbytes, sha256 = write_atomic_stream(base + ".tfrecord", records())
    meta = {
        "split": task["split"],
        "shard": task["shard"],
        "chunk": task["chunk"],
        "file": base + ".tfrecord",
        "examples": counts["examples"],
        "tokens": counts["tokens"],
        "bytes": nbytes,
        "sha256": sha256,
        "input_sha256": task["input_sha256"],
        "settings_key": task["settings_key"],
        "instance_stats": stats.asdict(),
        "vocab_check_dropped": dropped + counts["bad"],
    }
    if task.get("publish_dir"):
        return _upload(meta, task["publish_dir"])
    write_atomic(base + ".json", json.dumps(meta, sort_keys=True).encode())
    return meta


def release_memory() -> None:
    """Hands the memory a finished chunk freed back to the system (glibc keeps it in its
    arenas otherwise, one per tokenizer thread), so that a worker's RSS is what it
    holds, not its high-water mark."""
    global _MALLOC_TRIM
    gc.collect()
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


def _upload(meta: dict[str, Any], publish_dir: str) -> dict[str, Any]:
    """Uploads the finished local shard to `publish_dir`, then its metadata (the record
    that it is published), and removes the local file; the metadata name the upload."""
    local = meta["file"]
    base = paths.join(publish_dir, f"{meta['split']}-{meta['shard']:05d}")
    meta = {**meta, "file": f"{base}-{meta['sha256'][:16]}.tfrecord"}
    paths.upload(local, meta["file"])
    paths.write_bytes(base + ".json", json.dumps(meta, sort_keys=True).encode())
    os.remove(local)
    return meta


def _rng(seed: int, chunk: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, _RNG_TAG, chunk, stream])


def _passes(
    docs: list[instances_lib.TokenizedDocument],
    chunk: int,
    rng: np.random.Generator,
    stats: instances_lib.InstanceStats,
) -> tuple[Columns, np.ndarray | None, int]:
    """The chunk's examples (ids, types, labels; with static masking also positions and
    masked ids): one unmasked pass, or dupe_factor masked passes mixed through the shard
    (as Google); the order to write them in (None: as they are); and how many instances
    failed the check."""
    tok, masker, s = _WORKER["tokenizer"], _WORKER["masker"], _WORKER["settings"]
    max_len, seed = s["max_seq_length"], s["seed"]

    def build(pass_rng: np.random.Generator) -> list[instances_lib.Instance]:
        return instances_lib.create_instances(
            docs,
            s["instances"],
            max_seq_length=max_len,
            cls_id=tok.cls_id,
            sep_id=tok.sep_id,
            rng=pass_rng,
            short_seq_prob=s["short_seq_prob"],
            stats=stats,
            single_sentence=s.get("nsp_single_sentence", "split"),
        )

    def fits(x: instances_lib.Instance) -> bool:
        # The vocab / length check, before masking (the Masker rejects bad ids) and
        # again in drop_invalid on exactly the bytes written.
        return (
            len(x.input_ids) <= max_len
            and 0 <= x.input_ids.min()
            and x.input_ids.max() < tok.vocab_size
        )

    copies = s["dupe_factor"] if masker is not None else 1
    rebuild = masker is not None and s.get("dupe_mode", "rebuild") == "rebuild"
    passes: list[dict[str, np.ndarray]] = []
    dropped = 0
    insts: list[instances_lib.Instance] = []
    for d in range(copies):
        if d == 0 or rebuild:  # pass d's own instances (rebuild), or pass 0's again
            # Pass 0 draws from the chunk's stream, later passes from their own, so
            # every pass is a function of (seed, chunk, pass) alone.
            insts = []  # the previous pass's instances go before this one's are built
            built = build(rng if d == 0 else _rng(seed, chunk, 1000 + d))
            insts = [x for x in built if fits(x)]
            pass_dropped = len(built) - len(insts)
            del built
        dropped += pass_dropped
        lengths = np.fromiter((len(x.input_ids) for x in insts), np.int64, len(insts))
        packed = {
            "types": fill([x.token_type_ids for x in insts], lengths, np.int8),
            "types_counts": lengths,
            "labels": np.fromiter((x.pair_label for x in insts), np.int64, len(insts)),
        }
        if masker is None:  # fits() saw every id inside the vocabulary
            narrow = np.uint16 if tok.vocab_size <= 1 << 16 else np.int32
            packed.update(
                ids=fill([x.input_ids for x in insts], lengths, narrow), ids_counts=lengths
            )
        else:
            packed.update(
                mask_static(masker, insts, tok.pad_id, max_len, _rng(seed, chunk, 2 + d)),
                ids_counts=lengths,
            )
        passes.append(packed)
    del insts
    columns = Columns(passes)
    del passes
    order = None
    if masker is not None:  # the passes mixed through the shard, as Google
        order = rng.permutation(columns.size)
    return columns, order, dropped
