"""`prepare`: documents -> tokenized, sharded TFRecords of instances + manifest.json.

Design (each point is a property the tests check):

  * The main process reads the source sequentially and cuts the documents into chunks
    of `docs_per_shard` non-empty documents. Chunk c becomes one shard: the validation
    split's if validation_every > 0 and c % validation_every == validation_every - 1,
    else the train split's. Chunks go to `num_workers` spawned processes (0: this
    process); a worker loads the tokenizer from DATA/tokenizer/, builds the instances
    (`instances.py`) with rng = default_rng([seed, _RNG_TAG, c, 1]), masks static copy
    d with default_rng([seed, _RNG_TAG, c, 2 + d]) and writes the shard. A shard is so a
    pure function of (chunk, settings): the output is byte-identical for any
    num_workers. (The rng lists all have the same length and end in a nonzero entry:
    numpy's SeedSequence maps [s, 0] and [s] to the same stream.)
  * Memory is bounded: at most 2 * max(num_workers, 1) chunks are in flight (read but
    not yet written), and no more than `max_inflight_mb` of their text (one chunk is
    always allowed). A worker holds one chunk, its tokens and its output at a time.
  * Writes are atomic and resumable: a worker writes DATA/.shards/SPLIT-NNNNN.tfrecord
    under a temporary name, renames it, then writes its metadata (.json) the same way.
    When all chunks are done, shards are renamed to SPLIT-NNNNN-of-MMMMM.tfrecord and
    manifest.json is written last (temp + rename); the metadata files are then removed.
    A re-run (after an interruption, or of a finished run) skips every shard whose file
    exists with the checksum recorded for the same chunk content (sha256 of the chunk's
    text) and the same settings; a changed corpus or setting rewrites only what changed.
  * Every example is checked while writing: ids in [0, vocab_size) and length <=
    max_seq_length (masked copies included). An example that fails is dropped and
    counted; the manifest's "vocab_check" is "ok" only when none failed.
  * Bad input never crashes a run: non-string sentences, empty documents, empty or
    untokenizable sentences, huge sentences are skipped or split and counted in the
    manifest ("input_stats", "instance_stats", and the source's own "source_stats").

Shard format: TFRecord (masked CRC-32C framing, uncompressed) of tf.train.Example
protos with int64 features input_ids, token_type_ids, pair_label and, for static
masking, masked_lm_positions and masked_lm_ids (input_ids then already masked). The
records are encoded here with numpy (varints, vectorised CRC32C), so preparation
needs no TensorFlow; `tf.data.TFRecordDataset` + `tf.io.parse_example` read them.
`read_examples` is a TF-free reader (checks CRCs) for tests and inspection.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import glob
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from bertjax.data import instances as instances_lib
from bertjax.data import tokenizers as tokenizers_lib
from bertjax.data.records import (  # noqa: F401 - re-exported for readers of shards
    DataFormatError,
    crc32c,
    encode_examples,
    parse_example,
    read_examples,
    read_records,
    tfrecord_bytes,
)
from bertjax.fileio import replace_directory

FORMAT = "bertjax-data"
VERSION = 1
# Bump when the bytes written for the same inputs and settings change (resume then
# rewrites old shards instead of mixing them with new ones).
ALGORITHM_REVISION = 1
DUPE_MODES = ("rebuild", "remask")
RECORD_FORMATS = ("bertjax", "google")
SPLITS = ("train", "validation")
_RNG_TAG = 0x70726570  # "prep": keeps these streams apart from other uses of the seed
_PARTS = ".shards"  # in-progress shards and their metadata
_SHARD_RE = re.compile(r"^(train|validation)-(\d{5})-of-(\d{5})\.tfrecord$")
# Settings that decide the bytes of the shards (the others only decide speed).
_OUTPUT_SETTINGS = (
    "instances",
    "max_seq_length",
    "short_seq_prob",
    "masking",
    "masking_config",
    "dupe_factor",
    "dupe_mode",
    "nsp_single_sentence",
    "record_format",
    "docs_per_shard",
    "validation_every",
    "seed",
)


# ================================================================ worker side

_WORKER: dict[str, Any] = {}


def _init_worker(tokenizer_dir: str, settings: dict[str, Any], parallel: bool) -> None:
    """Loads the tokenizer (and static masker) once per worker process."""
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


def _rng(seed: int, chunk: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, _RNG_TAG, chunk, stream])


def _mask_static(
    masker, insts: list[instances_lib.Instance], pad_id: int, max_len: int, rng, block=1024
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(masked ids, positions, original ids) per instance, masking `block` rows a time."""
    ids_out, pos_out, lab_out = [], [], []
    for lo in range(0, len(insts), block):
        part = insts[lo : lo + block]
        lens = np.array([len(x.input_ids) for x in part])
        ids = np.full((len(part), max_len), pad_id, np.int32)
        for r, x in enumerate(part):
            ids[r, : len(x.input_ids)] = x.input_ids
        attn = (np.arange(max_len)[None, :] < lens[:, None]).astype(np.int32)
        m = masker(ids, attn, rng)
        chosen = m["masked_lm_weights"] > 0
        for r in range(len(part)):
            ids_out.append(m["input_ids"][r, : lens[r]])
            pos_out.append(m["masked_lm_positions"][r][chosen[r]])
            lab_out.append(m["masked_lm_ids"][r][chosen[r]])
    return ids_out, pos_out, lab_out


def _google_features(features: Mapping[str, tuple[np.ndarray, np.ndarray]], length: int,
                     predictions: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Our examples as Google's create_pretraining_data.py writes them: every list padded
    with 0 to `length` (ids, mask, segments) or `predictions` (positions, ids and 0.0
    weights), the pair label as next_sentence_labels."""

    def padded(name: str, width: int, dtype: Any = np.int64) -> np.ndarray:
        values, counts = features[name]
        out = np.zeros((len(counts), width), dtype)
        out[np.arange(width)[None, :] < counts[:, None]] = values
        return out

    n = len(features["input_ids"][1])
    real = np.arange(length)[None, :] < features["input_ids"][1][:, None]
    pos = padded("masked_lm_positions", predictions)
    weights = (np.arange(predictions)[None, :] <
               features["masked_lm_positions"][1][:, None]).astype(np.float32)
    columns = {
        "input_ids": padded("input_ids", length), "input_mask": real.astype(np.int64),
        "segment_ids": padded("token_type_ids", length), "masked_lm_positions": pos,
        "masked_lm_ids": padded("masked_lm_ids", predictions), "masked_lm_weights": weights,
        "next_sentence_labels": features["pair_label"][0].reshape(n, 1)}
    return {k: (v.reshape(-1), np.full(n, v.shape[1], np.int64)) for k, v in columns.items()}


def _per_example_any(flags: np.ndarray, counts: np.ndarray) -> np.ndarray:
    cum = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    ends = np.cumsum(counts)
    return (cum[ends] - cum[ends - counts]) > 0


def _write_atomic(path: str, data: bytes) -> None:
    """Writes `path` whole or not at all. A failed write (a full disk) removes its
    temporary file and names `path`; the shards already written stay, and running the
    same command again resumes after them."""
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise OSError(e.errno, f"{e.strerror or e}; the shards written before it are kept "
                      "and the same command resumes after them", path) from None


def _process_chunk(task: dict[str, Any]) -> dict[str, Any]:
    """Builds, checks and writes one shard; returns its metadata (also written)."""
    tok, masker, s = _WORKER["tokenizer"], _WORKER["masker"], _WORKER["settings"]
    chunk, max_len, vocab = task["chunk"], s["max_seq_length"], tok.vocab_size
    stats = instances_lib.InstanceStats()
    rng = _rng(s["seed"], chunk, 1)
    kind = s["instances"]
    docs = instances_lib.tokenize_documents(
        tok, task["documents"], instances_lib.segment_budget(kind, max_len), stats)

    def build(pass_rng: np.random.Generator) -> list[instances_lib.Instance]:
        return instances_lib.create_instances(
            docs, kind, max_seq_length=max_len, cls_id=tok.cls_id, sep_id=tok.sep_id,
            rng=pass_rng, short_seq_prob=s["short_seq_prob"], stats=stats,
            single_sentence=s.get("nsp_single_sentence", "split"))

    def fits(x: instances_lib.Instance) -> bool:
        # The vocab / length check, before masking (the Masker rejects bad ids) and
        # again below on exactly the bytes written.
        return len(x.input_ids) <= max_len and 0 <= x.input_ids.min() and \
            x.input_ids.max() < vocab

    copies = s["dupe_factor"] if masker is not None else 1
    rebuild = masker is not None and s.get("dupe_mode", "rebuild") == "rebuild"
    dropped = 0
    ids: list[np.ndarray] = []
    types: list[np.ndarray] = []
    labels: list[int] = []
    pos: list[np.ndarray] | None = [] if masker is not None else None
    lab: list[np.ndarray] | None = [] if masker is not None else None
    insts: list[instances_lib.Instance] = []
    for d in range(copies):
        if d == 0 or rebuild:  # pass d's own instances (rebuild), or pass 0's again
            # Pass 0 draws from the chunk's stream, later passes from their own, so
            # every pass is a function of (seed, chunk, pass) alone.
            built = build(rng if d == 0 else _rng(s["seed"], chunk, 1000 + d))
            insts = [x for x in built if fits(x)]
            pass_dropped = len(built) - len(insts)
        dropped += pass_dropped
        types += [x.token_type_ids for x in insts]
        labels += [x.pair_label for x in insts]
        if masker is None:
            ids += [x.input_ids for x in insts]
            continue
        a, b, c = _mask_static(masker, insts, tok.pad_id, max_len,
                               _rng(s["seed"], chunk, 2 + d))
        ids += a
        pos += b
        lab += c
    del insts
    if masker is not None:  # the passes mixed through the shard, as Google
        order = rng.permutation(len(ids))
        ids, types, labels, pos, lab = ([v[k] for k in order]
                                        for v in (ids, types, labels, pos, lab))

    def column(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        counts = np.fromiter(map(len, arrays), np.int64, len(arrays))
        values = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
        return values, counts

    features = {"input_ids": column(ids), "token_type_ids": column(types)}
    features["pair_label"] = (np.asarray(labels, np.int64), np.ones(len(labels), np.int64))
    if pos is not None:
        features["masked_lm_positions"] = column(pos)
        features["masked_lm_ids"] = column(lab)

    values, counts = features["input_ids"]
    bad = _per_example_any((values < 0) | (values >= vocab), counts) | (counts > max_len)
    if pos is not None:
        lv, lc = features["masked_lm_ids"]
        bad |= _per_example_any((lv < 0) | (lv >= vocab), lc)
        pv, pc = features["masked_lm_positions"]
        limits = np.repeat(counts, pc)
        bad |= _per_example_any((pv < 0) | (pv >= limits), pc)
    if bad.any():
        dropped += int(bad.sum())
        keep = ~bad
        for name, (v, c) in list(features.items()):
            owner = np.repeat(np.arange(len(c)), c)
            features[name] = (v[keep[owner]], c[keep])
    examples = len(features["input_ids"][1])
    tokens = int(features["input_ids"][1].sum())
    if s.get("record_format", "bertjax") == "google":
        features = _google_features(features, max_len,
                                    s["masking_config"]["max_predictions_per_seq"])
    data = tfrecord_bytes(features)
    base = os.path.join(task["parts_dir"], f"{task['split']}-{task['shard']:05d}")
    _write_atomic(base + ".tfrecord", data)
    meta = {
        "split": task["split"],
        "shard": task["shard"],
        "chunk": chunk,
        "file": base + ".tfrecord",
        "examples": examples,
        "tokens": tokens,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "input_sha256": task["input_sha256"],
        "settings_key": task["settings_key"],
        "instance_stats": stats.asdict(),
        "vocab_check_dropped": dropped,
    }
    _write_atomic(base + ".json", json.dumps(meta, sort_keys=True).encode())
    return meta


# ================================================================ main side


@dataclasses.dataclass
class InputStats:
    """What the main process saw of the source."""

    documents: int = 0  # documents read
    sentences: int = 0  # string sentences read
    bytes: int = 0  # UTF-8 bytes of those sentences
    empty_documents: int = 0  # no non-blank string sentence: skipped
    invalid_documents: int = 0  # not a list of sentences: skipped
    invalid_sentences: int = 0  # not a string: skipped
    chunks: int = 0
    shards_written: int = 0
    shards_reused: int = 0  # resumed: already written by an earlier run


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _json_default(o: Any) -> Any:
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _write_json_atomic(path: str, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    _write_atomic(path, text.encode())


def _open_source(source: Any) -> tuple[str, Iterator[Any], Any]:
    """(spec, document iterator, object with .stats or None)."""
    if isinstance(source, str):
        from bertjax.data import sources

        source = sources.open_source(source)
    if hasattr(source, "documents") and callable(source.documents):
        return str(getattr(source, "spec", type(source).__name__)), iter(source.documents()), source
    if isinstance(source, Iterable):
        return "<iterable>", iter(source), None
    raise TypeError(
        f"source must be a spec string, a Source or an iterable of documents, "
        f"got {type(source).__name__}"
    )


def _clean_document(doc: Any, stats: InputStats, h: Any) -> list[str] | None:
    """The document's string sentences (hashing them into `h`), or None to skip it."""
    stats.documents += 1
    if isinstance(doc, str):
        doc = [doc]
    elif not isinstance(doc, Iterable):
        stats.invalid_documents += 1
        return None
    sentences, blank = [], True
    for s in doc:
        if not isinstance(s, str):
            stats.invalid_sentences += 1
            continue
        sentences.append(s)
        if blank and s and not s.isspace():
            blank = False
    if blank:
        stats.empty_documents += 1
        return None
    for s in sentences:
        b = s.encode("utf-8", "surrogatepass")
        stats.bytes += len(b)
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    h.update(b"\xff" * 8)  # document end
    stats.sentences += len(sentences)
    return sentences


def _save_tokenizer(tokenizer: Any, out_dir: str) -> tuple[str, str]:
    """Writes DATA/tokenizer (kept as is when identical: resume); returns (dir, sha256)."""
    final = os.path.join(out_dir, "tokenizer")
    tmp = os.path.join(out_dir, f".tokenizer.tmp-{uuid.uuid4().hex[:8]}")
    tokenizer.save(tmp)

    def contents(d: str) -> dict[str, bytes]:
        out = {}
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                out[name] = f.read()
        return out

    if os.path.isdir(final) and contents(final) == contents(tmp):
        shutil.rmtree(tmp)
    else:
        replace_directory(tmp, final)
    return final, _sha256_file(os.path.join(final, "tokenizer.json"))


def tokenizer_entry(tokenizer: Any, sha256: str) -> dict[str, Any]:
    """The manifest's "tokenizer": what it is, its hash and special ids (DATA/tokenizer)."""
    return {"kind": tokenizer.kind, "class": tokenizer.tokenizer_class,
            "vocab_size": tokenizer.vocab_size, "sha256": sha256, "dir": "tokenizer",
            "cls_id": tokenizer.cls_id, "sep_id": tokenizer.sep_id,
            "pad_id": tokenizer.pad_id, "mask_id": tokenizer.mask_id}


def _shard_name(split: str, k: int, total: int) -> str:
    return f"{split}-{k:05d}-of-{total:05d}.tfrecord"


class _Resume:
    """Finds finished shards of earlier runs that the current chunk would reproduce."""

    def __init__(self, out_dir: str, parts_dir: str, settings_key: str) -> None:
        self.out_dir, self.parts_dir, self.key = out_dir, parts_dir, settings_key
        self.previous: dict[tuple[str, int], dict] = {}
        for path in (
            os.path.join(parts_dir, "previous-manifest.json"),
            os.path.join(out_dir, "manifest.json"),
        ):
            try:
                with open(path) as f:
                    m = json.load(f)
                if m.get("settings_key") != settings_key:
                    continue
                for split, info in m.get("splits", {}).items():
                    for k, shard in enumerate(info.get("shards", [])):
                        self.previous[(split, k)] = shard
            except (OSError, ValueError, AttributeError, TypeError):
                continue

    def find(self, split: str, k: int, input_sha256: str) -> dict | None:
        base = os.path.join(self.parts_dir, f"{split}-{k:05d}")
        metas = []
        try:
            with open(base + ".json") as f:
                metas.append(json.load(f))
        except (OSError, ValueError):
            pass
        if (split, k) in self.previous:
            metas.append(self.previous[(split, k)])
        files = [base + ".tfrecord"] + sorted(
            glob.glob(
                os.path.join(self.out_dir, f"{split}-{k:05d}-of-[0-9][0-9][0-9][0-9][0-9].tfrecord")
            )
        )
        for meta in metas:
            if meta.get("input_sha256") != input_sha256:
                continue
            if meta.get("settings_key", self.key) != self.key:
                continue
            for path in files:
                if os.path.isfile(path) and os.path.getsize(path) == meta.get("bytes"):
                    if _sha256_file(path) == meta.get("sha256"):
                        return {**meta, "file": path}
        return None


def _progress(enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(unit=" docs", unit_scale=True, file=sys.stderr, mininterval=0.5, dynamic_ncols=True)


def prepare(
    source: Any,
    tokenizer: Any,
    out_dir: str,
    *,
    instances: str,
    max_seq_length: int,
    short_seq_prob: float = 0.1,
    masking: str = "dynamic",
    masking_config: Any = None,
    dupe_factor: int = 10,
    dupe_mode: str = "rebuild",
    nsp_single_sentence: str = "split",
    record_format: str = "bertjax",
    docs_per_shard: int = 1000,
    validation_every: int = 0,
    num_workers: int = 1,
    seed: int = 0,
    max_inflight_mb: float = 256.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenizes `source` into instances and writes shards + manifest.json to `out_dir`.

    Args:
      source: a spec string for `sources.open_source` ("demo", "bert:GLOB", ...), a
        Source, or any iterable of documents (lists of sentence strings).
      tokenizer: a `Tokenizer` or a directory `load_tokenizer` reads; copied to
        out_dir/tokenizer, from where every worker loads it.
      out_dir: the data directory (created; an earlier run's shards are reused).
      instances: nsp | sop | full_sentences | doc_sentences | mlm (instances.py).
      max_seq_length: no example is longer (special tokens included).
      short_seq_prob: nsp/sop: probability of a shorter target length per document.
      masking: "static" (masked copies written now, as BERT) or "dynamic" (the
        pipeline masks each time it reads; RoBERTa).
      masking_config: a masking.MaskingConfig (or its dict); static masking only
        (default MaskingConfig()).
      dupe_factor: static masking: how many passes over each chunk are written.
      dupe_mode: static masking: "rebuild" builds every pass's instances anew (new
        target lengths, split points, random next segments and truncation, as
        Google's create_pretraining_data.py) and masks them; "remask" builds one set
        of instances and writes dupe_factor differently masked copies of it (ten times
        fewer distinct pairs for the same size).
      nsp_single_sentence: nsp: "split" (a one-sentence chunk is cut inside, labels
        stay 50/50) or "random_next" (Google's rule; instances.py).
      record_format: "bertjax" (variable-length examples, what `train` reads) or
        "google" (static masking, nsp/sop: the fixed-length features of Google's
        create_pretraining_data.py, `_google_features`, for Google's and NVIDIA's code).
      docs_per_shard: non-empty documents per chunk (= per shard). NSP draws random
        next segments from the same chunk, so keep it well above 1.
      validation_every: every Nth chunk goes to the "validation" split (0: none).
      num_workers: worker processes (spawned); 0 runs in this process. The output does
        not depend on it.
      seed: the seed of every random choice.
      max_inflight_mb: most text (MB) read but not yet written; with the 2 *
        num_workers chunk limit this bounds memory whatever the corpus size.
      progress: show documents/s and MB/s on stderr.

    Returns:
      the manifest (also written to out_dir/manifest.json).

    Raises:
      ValueError: a setting is invalid (the message names it).
      RuntimeError: a shard could not be written; finished shards are kept for resume.
    """
    instances_lib.check_kind(instances, max_seq_length)
    if masking not in ("static", "dynamic"):
        raise ValueError(f"masking={masking!r} must be 'static' or 'dynamic'")
    for name, value, least in (
        ("docs_per_shard", docs_per_shard, 1),
        ("validation_every", validation_every, 0),
        ("num_workers", num_workers, 0),
        ("dupe_factor", dupe_factor, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name}={value!r} must be an integer >= {least}")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError(f"short_seq_prob={short_seq_prob!r} must be in [0, 1]")
    if record_format not in RECORD_FORMATS:
        raise ValueError(f"format={record_format!r} must be one of {', '.join(RECORD_FORMATS)}")
    if record_format == "google" and (masking != "static"
                                      or instances not in instances_lib.PAIR_KINDS):
        raise ValueError("format='google' needs static masking and nsp or sop instances "
                         f"(got masking={masking!r}, instances={instances!r}): Google's "
                         "records hold masks and a pair label")
    if dupe_mode not in DUPE_MODES:
        raise ValueError(f"dupe_mode={dupe_mode!r} must be one of {', '.join(DUPE_MODES)}")
    if nsp_single_sentence not in instances_lib.SINGLE_SENTENCE:
        raise ValueError(f"nsp_single_sentence={nsp_single_sentence!r} must be one of "
                         f"{', '.join(instances_lib.SINGLE_SENTENCE)}")
    if not max_inflight_mb > 0:
        raise ValueError(f"max_inflight_mb={max_inflight_mb!r} must be positive")
    mask_cfg = None
    if masking == "static":
        from bertjax.data import masking as masking_lib

        if masking_config is None:
            masking_config = masking_lib.MaskingConfig()
        elif isinstance(masking_config, Mapping):
            masking_config = masking_lib.MaskingConfig(**masking_config)
        mask_cfg = dataclasses.asdict(masking_config)
    else:
        dupe_factor = 1  # dynamic: one unmasked copy; the pipeline masks

    out_dir = os.path.abspath(out_dir)
    parts_dir = os.path.join(out_dir, _PARTS)
    fresh = not os.path.exists(out_dir)  # removed again if nothing comes of it
    os.makedirs(parts_dir, exist_ok=True)
    for leftover in glob.glob(os.path.join(parts_dir, "*.tmp-*")):
        os.remove(leftover)  # partial files of an interrupted run
    if isinstance(tokenizer, str):
        tokenizer = tokenizers_lib.load_tokenizer(tokenizer)
    tok_dir, tok_sha = _save_tokenizer(tokenizer, out_dir)
    spec, documents, source_obj = _open_source(source)

    settings = {
        "source": spec,
        "instances": instances,
        "max_seq_length": max_seq_length,
        "short_seq_prob": short_seq_prob,
        "masking": masking,
        "masking_config": mask_cfg,
        "dupe_factor": dupe_factor,
        "dupe_mode": dupe_mode,
        "nsp_single_sentence": nsp_single_sentence,
        "record_format": record_format,
        "docs_per_shard": docs_per_shard,
        "validation_every": validation_every,
        "seed": seed,
        "num_workers": num_workers,
        "max_inflight_mb": max_inflight_mb,
    }
    key_obj = {k: settings[k] for k in _OUTPUT_SETTINGS}
    key_obj.update(tokenizer_sha256=tok_sha, revision=ALGORITHM_REVISION, version=VERSION)
    settings_key = hashlib.sha256(json.dumps(key_obj, sort_keys=True).encode()).hexdigest()
    resume = _Resume(out_dir, parts_dir, settings_key)
    manifest_path = os.path.join(out_dir, "manifest.json")
    if os.path.exists(manifest_path):  # it no longer describes the directory
        os.replace(manifest_path, os.path.join(parts_dir, "previous-manifest.json"))

    worker_settings = {k: settings[k] for k in _OUTPUT_SETTINGS}
    in_stats = InputStats()
    metas: list[dict] = []
    shard_count = dict.fromkeys(SPLITS, 0)
    budget = max_inflight_mb * (1 << 20)
    max_in_flight = 2 * max(num_workers, 1)
    pending: dict[concurrent.futures.Future, int] = {}  # future -> text bytes
    bar = _progress(progress)
    t0 = time.monotonic()
    executor = None
    if num_workers:
        executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=num_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(tok_dir, worker_settings, num_workers > 1),
        )
    else:
        _init_worker(tok_dir, worker_settings, False)

    def collect(done: Iterable[concurrent.futures.Future]) -> None:
        for fut in done:
            pending.pop(fut)
            try:
                metas.append(fut.result())
            except OSError:
                raise  # _write_atomic's: names the file and says what is kept
            except Exception as e:
                raise RuntimeError(
                    f"preparing a shard in {out_dir} failed: {type(e).__name__}: {e} "
                    "(finished shards are kept; re-run to resume)"
                ) from e
            in_stats.shards_written += 1

    def dispatch(chunk: list[list[str]], nbytes: int, h: Any) -> None:
        c = in_stats.chunks
        in_stats.chunks += 1
        is_validation = validation_every and c % validation_every == validation_every - 1
        split = "validation" if is_validation else "train"
        k = shard_count[split]
        shard_count[split] += 1
        input_sha = h.hexdigest()
        found = resume.find(split, k, input_sha)
        if found is not None:
            metas.append({**found, "chunk": c, "split": split, "shard": k})
            in_stats.shards_reused += 1
            return
        task = {
            "split": split,
            "shard": k,
            "chunk": c,
            "documents": chunk,
            "input_sha256": input_sha,
            "settings_key": settings_key,
            "parts_dir": parts_dir,
        }
        if executor is None:
            metas.append(_process_chunk(task))
            in_stats.shards_written += 1
            return
        while pending and (
            len(pending) >= max_in_flight or sum(pending.values()) + nbytes > budget
        ):
            done, _ = concurrent.futures.wait(
                pending, return_when=concurrent.futures.FIRST_COMPLETED
            )
            collect(done)
        pending[executor.submit(_process_chunk, task)] = nbytes

    def show(force: bool = False) -> None:
        if bar is None:
            return
        bar.update(in_stats.documents - bar.n)
        elapsed = max(time.monotonic() - t0, 1e-9)
        bar.set_postfix_str(
            f"{in_stats.bytes / elapsed / 1e6:.2f} MB/s, shards {len(metas)}/{in_stats.chunks}",
            refresh=force,
        )

    try:
        chunk: list[list[str]] = []
        h = hashlib.sha256()
        chunk_start_bytes = 0
        last_show = 0.0
        for doc in documents:
            sentences = _clean_document(doc, in_stats, h)
            if sentences is not None:
                chunk.append(sentences)
                if len(chunk) == docs_per_shard:
                    dispatch(chunk, in_stats.bytes - chunk_start_bytes, h)
                    chunk, h, chunk_start_bytes = [], hashlib.sha256(), in_stats.bytes
            if bar is not None and time.monotonic() - last_show > 0.5:
                last_show = time.monotonic()
                show()
        if chunk:
            dispatch(chunk, in_stats.bytes - chunk_start_bytes, h)
        del chunk
        while pending:
            done, _ = concurrent.futures.wait(
                pending, return_when=concurrent.futures.FIRST_COMPLETED
            )
            collect(done)
            show()
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            show(force=True)
            bar.close()

    _check_not_empty(metas, settings["source"], in_stats, source_obj, out_dir, parts_dir,
                     fresh)
    manifest = _finalize(
        out_dir,
        parts_dir,
        metas,
        settings,
        settings_key,
        tokenizer,
        tok_sha,
        in_stats,
        source_obj,
    )
    return manifest


def _check_not_empty(metas: list[dict], spec: str, in_stats: InputStats, source_obj: Any,
                     out_dir: str, parts_dir: str, fresh: bool) -> None:
    """ValueError naming the source and what it yielded when the train split would have
    no example; nothing is left behind (the directory, when this run created it)."""
    if sum(m["examples"] for m in metas if m["split"] == "train"):
        return
    st = getattr(source_obj, "stats", None)
    counts = {"files": getattr(st, "files", None), "documents": in_stats.documents,
              "sentences": in_stats.sentences,
              "bad records": getattr(st, "bad_records", None),
              "empty documents": in_stats.empty_documents + getattr(st, "empty_documents", 0),
              "invalid documents": in_stats.invalid_documents or None}
    read = ", ".join(f"{k}: {v:,}" for k, v in counts.items() if v is not None)
    previous = os.path.join(parts_dir, "previous-manifest.json")
    if fresh:
        shutil.rmtree(out_dir, ignore_errors=True)
    else:
        if os.path.exists(previous):  # the directory's earlier data stay as they were
            os.replace(previous, os.path.join(out_dir, "manifest.json"))
        shutil.rmtree(parts_dir, ignore_errors=True)
    raise ValueError(f"{spec}: no training examples ({read}); nothing written")


def _finalize(
    out_dir: str,
    parts_dir: str,
    metas: list[dict],
    settings: dict,
    settings_key: str,
    tokenizer: Any,
    tok_sha: str,
    in_stats: InputStats,
    source_obj: Any,
) -> dict[str, Any]:
    """Renames shards to their final names, removes stale ones, writes the manifest."""
    metas.sort(key=lambda m: m["chunk"])
    total_stats = instances_lib.InstanceStats()
    dropped = 0
    splits: dict[str, dict] = {}
    for split in SPLITS:
        own = sorted((m for m in metas if m["split"] == split), key=lambda m: m["shard"])
        shards = []
        for m in own:
            name = _shard_name(split, m["shard"], len(own))
            target = os.path.join(out_dir, name)
            if os.path.abspath(m["file"]) != target:
                os.replace(m["file"], target)
            total_stats.add(instances_lib.InstanceStats(**m["instance_stats"]))
            dropped += m["vocab_check_dropped"]
            shards.append(
                {
                    "file": name,
                    "examples": m["examples"],
                    "tokens": m["tokens"],
                    "bytes": m["bytes"],
                    "sha256": m["sha256"],
                    "input_sha256": m["input_sha256"],
                    "documents": m["instance_stats"]["documents"],
                    "instance_stats": m["instance_stats"],
                    "vocab_check_dropped": m["vocab_check_dropped"],
                }
            )
        if own or split == "train":
            splits[split] = {
                "examples": sum(s["examples"] for s in shards),
                "tokens": sum(s["tokens"] for s in shards),
                "shards": shards,
            }
    keep = {s["file"] for info in splits.values() for s in info["shards"]}
    for name in os.listdir(out_dir):  # shards of an earlier, different run
        if _SHARD_RE.match(name) and name not in keep:
            os.remove(os.path.join(out_dir, name))

    if source_obj is not None and hasattr(source_obj, "stats"):
        st = source_obj.stats
        source_stats = dataclasses.asdict(st) if dataclasses.is_dataclass(st) else dict(st)
    else:
        source_stats = {
            "documents": in_stats.documents,
            "sentences": in_stats.sentences,
            "bytes": in_stats.bytes,
        }
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "settings": settings,
        "settings_key": settings_key,
        "tokenizer": tokenizer_entry(tokenizer, tok_sha),
        "masking": settings["masking"],
        "max_seq_length": settings["max_seq_length"],
        "splits": splits,
        "source_stats": source_stats,
        "input_stats": dataclasses.asdict(in_stats),
        "instance_stats": total_stats.asdict(),
        "vocab_check": "ok"
        if dropped == 0
        else f"dropped {dropped} examples with an id outside [0, vocab_size) or too long",
    }
    _write_json_atomic(os.path.join(out_dir, "manifest.json"), manifest)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return manifest


# ================================================================ reading


def read_manifest(data_dir: str, verify_checksums: bool = False) -> dict[str, Any]:
    """Loads and validates DATA/manifest.json.

    Checks the format, version, required keys, that every shard file exists with the
    recorded size (and, with verify_checksums, sha256), and that counts add up.

    Raises:
      DataFormatError: one line naming the file and what is wrong.
    """
    path = os.path.join(data_dir, "manifest.json")
    if not os.path.isfile(path):
        raise DataFormatError(
            f"{path}: not found (prepare the data first: python -m bertjax prepare data)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataFormatError(f"{path}: not valid JSON ({' '.join(str(e).split())})") from e

    def fail(msg: str) -> None:
        raise DataFormatError(f"{path}: {msg}")

    if not isinstance(m, dict):
        fail("expected a JSON object")
    if m.get("format") != FORMAT:
        fail(f"format is {m.get('format')!r}, expected {FORMAT!r}")
    if m.get("version") != VERSION:
        fail(f"version {m.get('version')!r} is not supported (expected {VERSION})")
    for key in ("settings", "tokenizer", "masking", "splits", "source_stats", "vocab_check"):
        if key not in m:
            fail(f"missing key {key!r}")
    if m["masking"] not in ("static", "dynamic"):
        fail(f"masking is {m['masking']!r}, expected 'static' or 'dynamic'")
    tok = m["tokenizer"]
    if not isinstance(tok, dict) or not isinstance(tok.get("vocab_size"), int):
        fail("tokenizer.vocab_size is missing")
    settings = m["settings"]
    if not isinstance(settings, dict) or not isinstance(settings.get("max_seq_length"), int):
        fail("settings.max_seq_length is missing")
    splits = m["splits"]
    if not isinstance(splits, dict) or "train" not in splits:
        fail("splits.train is missing")
    for split, info in splits.items():
        if split not in SPLITS:
            fail(f"unknown split {split!r}")
        shards = info.get("shards") if isinstance(info, dict) else None
        if not isinstance(shards, list):
            fail(f"splits.{split}.shards is missing")
        for key in ("examples", "tokens"):
            total = sum(s.get(key, 0) for s in shards if isinstance(s, dict))
            if info.get(key) != total:
                fail(f"splits.{split}.{key}={info.get(key)!r} but its shards add up to {total}")
        for s in shards:
            if not isinstance(s, dict) or not isinstance(s.get("file"), str):
                fail(f"splits.{split}: a shard entry lacks 'file'")
            if os.path.basename(s["file"]) != s["file"]:
                fail(f"shard file {s['file']!r} must be a plain file name")
            shard_path = os.path.join(data_dir, s["file"])
            if not os.path.isfile(shard_path):
                fail(f"shard {s['file']} is missing")
            if "bytes" in s and os.path.getsize(shard_path) != s["bytes"]:
                size = os.path.getsize(shard_path)
                fail(f"shard {s['file']} has {size} bytes, expected {s['bytes']}")
            if verify_checksums and _sha256_file(shard_path) != s.get("sha256"):
                fail(f"shard {s['file']} does not match its sha256")
    return m
