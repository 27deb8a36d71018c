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
    the same way; `Resume` finds such files (and the shards of a finished run) again
    for the same chunk text and settings, and `publish` renames them to
    SPLIT-NNNNN-of-MMMMM.tfrecord when every chunk is done.
  * on an object store (DATA = gs://...; `task["publish_dir"]` = DATA/.shards) the
    shard is built in a local directory, uploaded as one object (visible only once
    complete) named by its sha256 (DATA/.shards/SPLIT-NNNNN-SHA.tfrecord), then its
    metadata object (SPLIT-NNNNN.json, naming it), and the local file removed: the
    .json says that the object it names was published whole, and no later upload can
    put other bytes under that name.
  * memory stays proportional to the chunk's text, whatever the text: the chunk comes
    as UTF-8 (`PackedChunk`), is tokenized 2^16 characters at a time into int32 ids,
    each pass's examples are packed (uint16 ids, int8 types) as soon as they are built,
    the shard is checked, encoded and written _SLICE_TOKENS tokens at a time, and the
    memory is handed back to the system after each chunk. `worker_memory` bounds what a
    chunk takes; the main process admits chunks by it (prepare.py).

Shard format: TFRecord (masked CRC-32C framing, uncompressed) of tf.train.Example
protos with int64 features input_ids, token_type_ids, pair_label and, for static
masking, masked_lm_positions and masked_lm_ids (input_ids then already masked); with
record_format "google", the fixed-length features of Google's
create_pretraining_data.py (`_google_features`). The records are encoded with numpy
(records.py), so preparation needs no TensorFlow; `tf.data.TFRecordDataset` +
`tf.io.parse_example` read them, `records.read_examples` too (TF-free, for tests).
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import gc
import glob
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any

import numpy as np

from bertjax import paths
from bertjax.data import instances as instances_lib
from bertjax.data import tokenizers as tokenizers_lib
from bertjax.data.records import tfrecord_bytes

_RNG_TAG = 0x70726570  # "prep": keeps these streams apart from other uses of the seed
PARTS = ".shards"  # DATA/.shards: in-progress shards and their metadata
SHARD_RE = re.compile(r"^(train|validation)-(\d{5})-of-(\d{5})\.tfrecord$")

Features = dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (values, count per example)
# Tokens checked, encoded and written at a time (the record encoder takes ~100 bytes of
# index arrays a token): max(1, _SLICE_TOKENS // max_seq_length) examples.
_SLICE_TOKENS = 1 << 16


# ================================================================ files


def shard_name(split: str, k: int, total: int) -> str:
    return f"{split}-{k:05d}-of-{total:05d}.tfrecord"


def sha256_file(path: str, opener: Callable[[str, str], IO[bytes]] | Any = open,
                block: int = 1 << 20) -> str:
    """Hex sha256 of the file at `path`, read `block` bytes at a time with `opener`
    (`open`, or e.g. tf.io.gfile.GFile for the paths TensorFlow reads)."""
    h = hashlib.sha256()
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: str, data: bytes) -> None:
    """Writes `path` whole or not at all. A failed write (a full disk) removes its
    temporary file and names `path`; the shards already written stay, and running the
    same command again resumes after them."""
    write_atomic_stream(path, (data,))


def write_atomic_stream(path: str, parts: Iterable[bytes]) -> tuple[int, str]:
    """`write_atomic` of the concatenated `parts`, each written as it comes (the file is
    never whole in memory); returns the file's size and sha256."""
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    h, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                f.write(part)
                h.update(part)
                size += len(part)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise OSError(e.errno, f"{e.strerror or e}; the shards written before it are kept "
                      "and the same command resumes after them", path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return size, h.hexdigest()


def remove_partial_files(parts_dir: str) -> None:
    """Removes the temporary files of an interrupted run."""
    for leftover in glob.glob(os.path.join(parts_dir, "*.tmp-*")):
        os.remove(leftover)


# ================================================================ chunks


class PackedChunk:
    """A chunk's documents as the main process holds and sends them: the UTF-8 of every
    sentence ("surrogatepass": a lone surrogate survives) in one buffer, the byte length
    of each sentence and the sentence count of each document. About one byte of memory
    per byte of text plus 8 per sentence and per document, where lists of str take 1 to
    4 bytes per character (the widest character of a string decides) and ~60 more per
    sentence; `documents()` gives the lists back, one document at a time."""

    def __init__(self) -> None:
        self.text = bytearray()
        self.sentence_bytes = array.array("q")  # bytes of each sentence
        self.doc_sentences = array.array("q")  # sentences of each document

    def add(self, sentences: list[bytes]) -> None:
        """Appends a document: its sentences, UTF-8 encoded."""
        for b in sentences:
            self.text += b
            self.sentence_bytes.append(len(b))
        self.doc_sentences.append(len(sentences))

    def __len__(self) -> int:
        return len(self.doc_sentences)

    @property
    def nbytes(self) -> int:
        """Memory held (the text and the two length arrays)."""
        return len(self.text) + 8 * (len(self.sentence_bytes) + len(self.doc_sentences))

    def documents(self) -> Iterator[list[str]]:
        view, pos, k = memoryview(self.text), 0, 0
        for n in self.doc_sentences:
            doc = []
            for b in self.sentence_bytes[k : k + n]:
                doc.append(str(view[pos : pos + b], "utf-8", "surrogatepass"))
                pos += b
            k += n
            yield doc


# What a worker allocates for a chunk (`worker_memory`), at the worst density of one
# token a byte of text (punctuation runs; English prose is ~0.25): per byte, the text
# twice while it arrives and its tokens (int32); per instance ~1.2 KB of Python objects
# (one pass's instances at a time: max_seq_length tokens each, and at most one more per
# sentence); per byte and pass, the packed examples (uint16 ids, int8 types, masked
# positions and ids); and a fixed part for the tokenizer's batch of 2^16 characters and
# the slice of 2^16 tokens being encoded. Fitted to hostile corpora with a margin of
# about 1.2 (benchmarks/RESULTS.md, "Memory of prepare data").
_TEXT_COST = 8  # bytes per byte of text
_INSTANCE_COST = 1400  # bytes per instance
_PASS_COST = 7  # bytes per byte of text, per pass
_FIXED_COST = 32 << 20  # bytes


def worker_memory(chunk: PackedChunk, settings: dict[str, Any]) -> int:
    """Most bytes a worker allocates for `chunk` beyond what it holds between chunks, for
    any text (a token per byte at most), under `settings` (the output settings)."""
    passes = settings["dupe_factor"] if settings["masking"] == "static" else 1
    per_byte = _TEXT_COST + _INSTANCE_COST / settings["max_seq_length"] + passes * _PASS_COST
    extra_instances = len(chunk.sentence_bytes)  # a sentence may end one early
    return int(chunk.nbytes * per_byte + extra_instances * _INSTANCE_COST + _FIXED_COST)


# ================================================================ worker side

_WORKER: dict[str, Any] = {}


def init_worker(tokenizer_dir: str, settings: dict[str, Any], parallel: bool) -> None:
    """Loads the tokenizer (and static masker) once per worker process; `settings` are
    the ones that decide the bytes (prepare.PrepareSettings.output_settings)."""
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
    docs = instances_lib.tokenize_documents(tok, documents, budget, stats)
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
            features, bad = _drop_invalid(
                columns.features(rows if order is None else order[rows]),
                tok.vocab_size, max_len)
            counts["bad"] += bad
            counts["examples"] += len(features["input_ids"][1])
            counts["tokens"] += int(features["input_ids"][1].sum())
            if google:
                features = _google_features(features, max_len, predictions)
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


class _Columns:
    """A shard's examples, packed pass by pass (no token-level copy joins the passes):
    per example its ids and token types as runs of one flat array each (uint16 ids
    where the values allow, int8 types), its pair label, and with static masking the
    positions and original ids of its masked tokens. `features(rows)` gives the record
    encoder's features of some examples (global row numbers), in the order of `rows`."""

    def __init__(self, passes: list[dict[str, np.ndarray]]) -> None:
        self.lists = {}  # name -> ([per pass values], counts, [size + 1] offsets, pass starts)
        for name in ("ids", "types", "positions", "masked"):
            if name in passes[0]:
                counts = np.concatenate([p[name + "_counts"] for p in passes])
                offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
                sizes = [len(p[name]) for p in passes]
                starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
                self.lists[name] = ([p[name] for p in passes], counts, offsets, starts)
        self.labels = np.concatenate([p["labels"] for p in passes])
        self.size = len(self.labels)

    def features(self, rows: np.ndarray) -> Features:
        def column(name: str) -> tuple[np.ndarray, np.ndarray]:
            values, counts, offsets, starts = self.lists[name]
            c = counts[rows]
            at = _runs(offsets[rows], c)  # positions in the passes' values laid end to end
            if len(values) == 1:
                return values[0][at].astype(np.int64), c
            out = np.empty(len(at), np.int64)
            which = np.searchsorted(starts, at, side="right") - 1
            for k, v in enumerate(values):
                sel = which == k
                out[sel] = v[at[sel] - starts[k]]
            return out, c

        features = {"input_ids": column("ids"), "token_type_ids": column("types"),
                    "pair_label": (self.labels[rows], np.ones(len(rows), np.int64))}
        if "positions" in self.lists:
            features["masked_lm_positions"] = column("positions")
            features["masked_lm_ids"] = column("masked")
        return features


def _runs(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Indices of the runs [starts[i], starts[i] + lens[i]), concatenated."""
    total = int(lens.sum())
    if not total:
        return np.zeros(0, np.int64)
    ends = np.cumsum(lens)
    return np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - lens), lens)


def _compact(ids: np.ndarray) -> np.ndarray:
    """`ids` as uint16 when every value fits (vocabularies up to 65,536), else as they are."""
    if len(ids) and 0 <= ids.min() and ids.max() < 1 << 16:
        return ids.astype(np.uint16)
    return ids


def _passes(docs: list[instances_lib.TokenizedDocument], chunk: int, rng: np.random.Generator,
            stats: instances_lib.InstanceStats) -> tuple[_Columns, np.ndarray | None, int]:
    """The chunk's examples (ids, types, labels; with static masking also positions and
    masked ids): one unmasked pass, or dupe_factor masked passes mixed through the shard
    (as Google); the order to write them in (None: as they are); and how many instances
    failed the check."""
    tok, masker, s = _WORKER["tokenizer"], _WORKER["masker"], _WORKER["settings"]
    max_len, seed = s["max_seq_length"], s["seed"]

    def build(pass_rng: np.random.Generator) -> list[instances_lib.Instance]:
        return instances_lib.create_instances(
            docs, s["instances"], max_seq_length=max_len, cls_id=tok.cls_id,
            sep_id=tok.sep_id, rng=pass_rng, short_seq_prob=s["short_seq_prob"], stats=stats,
            single_sentence=s.get("nsp_single_sentence", "split"))

    def fits(x: instances_lib.Instance) -> bool:
        # The vocab / length check, before masking (the Masker rejects bad ids) and
        # again in _drop_invalid on exactly the bytes written.
        return len(x.input_ids) <= max_len and 0 <= x.input_ids.min() and \
            x.input_ids.max() < tok.vocab_size

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
        packed = {"types": _fill([x.token_type_ids for x in insts], lengths, np.int8),
                  "types_counts": lengths,
                  "labels": np.fromiter((x.pair_label for x in insts), np.int64, len(insts))}
        if masker is None:  # fits() saw every id inside the vocabulary
            narrow = np.uint16 if tok.vocab_size <= 1 << 16 else np.int32
            packed.update(ids=_fill([x.input_ids for x in insts], lengths, narrow),
                          ids_counts=lengths)
        else:
            packed.update(_mask_static(masker, insts, tok.pad_id, max_len,
                                       _rng(seed, chunk, 2 + d)), ids_counts=lengths)
        passes.append(packed)
    del insts
    columns = _Columns(passes)
    del passes
    order = None
    if masker is not None:  # the passes mixed through the shard, as Google
        order = rng.permutation(columns.size)
    return columns, order, dropped


def _fill(arrays: list[np.ndarray], lengths: np.ndarray, dtype: Any) -> np.ndarray:
    """The arrays joined into one of `dtype`, with no wider copy on the way."""
    out = np.empty(int(lengths.sum()), dtype)
    pos = 0
    for a in arrays:
        out[pos : pos + len(a)] = a
        pos += len(a)
    return out


def _cat(arrays: list[np.ndarray], dtype: Any = np.int32) -> np.ndarray:
    """The arrays joined (as `dtype`, or the wider of theirs for dtype=None)."""
    if not arrays:
        return np.zeros(0, dtype or np.int32)
    out = np.concatenate(arrays)
    return out if dtype is None else out.astype(dtype, copy=False)


def _mask_static(masker, insts: list[instances_lib.Instance], pad_id: int, max_len: int, rng,
                 block: int = 1024) -> dict[str, np.ndarray]:
    """The pass masked, packed: its ids (masked), and the positions and original ids of
    the masked tokens with their counts per instance; `block` rows masked at a time."""
    ids_out, pos_out, lab_out, n_pred = [], [], [], []
    for lo in range(0, len(insts), block):
        part = insts[lo : lo + block]
        lens = np.array([len(x.input_ids) for x in part])
        ids = np.full((len(part), max_len), pad_id, np.int32)
        for r, x in enumerate(part):
            ids[r, : len(x.input_ids)] = x.input_ids
        real = np.arange(max_len)[None, :] < lens[:, None]
        m = masker(ids, real.astype(np.int32), rng)
        chosen = m["masked_lm_weights"] > 0
        ids_out.append(_compact(m["input_ids"][real]))  # row by row: the first lens[r]
        pos_out.append(m["masked_lm_positions"][chosen])
        lab_out.append(m["masked_lm_ids"][chosen])
        n_pred.append(chosen.sum(axis=1))
    return {"ids": _cat(ids_out, None), "positions": _cat(pos_out, np.int32),
            "positions_counts": _cat(n_pred, np.int64), "masked": _cat(lab_out, np.int32),
            "masked_counts": _cat(n_pred, np.int64)}


def _drop_invalid(features: Features, vocab: int, max_len: int) -> tuple[Features, int]:
    """The features without the examples that fail the check, and how many did."""
    values, counts = features["input_ids"]
    bad = _per_example_any((values < 0) | (values >= vocab), counts) | (counts > max_len)
    if "masked_lm_positions" in features:
        lv, lc = features["masked_lm_ids"]
        bad |= _per_example_any((lv < 0) | (lv >= vocab), lc)
        pv, pc = features["masked_lm_positions"]
        limits = np.repeat(counts, pc)
        bad |= _per_example_any((pv < 0) | (pv >= limits), pc)
    if not bad.any():
        return features, 0
    keep = ~bad
    for name, (v, c) in list(features.items()):
        owner = np.repeat(np.arange(len(c)), c)
        features[name] = (v[keep[owner]], c[keep])
    return features, int(bad.sum())


def _per_example_any(flags: np.ndarray, counts: np.ndarray) -> np.ndarray:
    cum = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    ends = np.cumsum(counts)
    return (cum[ends] - cum[ends - counts]) > 0


def _google_features(features: Features, length: int, predictions: int) -> Features:
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


# ================================================================ main side


class Resume:
    """Finds finished shards of earlier runs that the current chunk would reproduce: in
    DATA/.shards (an interrupted run) or under their final names (a finished one,
    listed by the previous manifest), with the same chunk text, settings and sha256.

    What is there is listed once (this run writes only shards not found). On an object
    store a shard counts as finished by what was published: its metadata object (written
    after its upload; the object it names, or the final name it was moved to) or the
    previous manifest (dropped before any shard is moved: `publish`), and an object of
    the recorded size. Its sha256 is not read back (that would download every shard);
    the pipeline checks it.
    """

    def __init__(self, out_dir: str, parts_dir: str, settings_key: str) -> None:
        self.out_dir, self.parts_dir, self.key = out_dir, parts_dir, settings_key
        self.remote = paths.is_remote(out_dir)
        self.previous: dict[tuple[str, int], dict] = {}
        for path in (
            paths.join(parts_dir, "previous-manifest.json"),
            paths.join(out_dir, "manifest.json"),
        ):
            try:
                m = json.loads(paths.read_bytes(path))
                if m.get("settings_key") != settings_key:
                    continue
                for split, info in m.get("splits", {}).items():
                    for k, shard in enumerate(info.get("shards", [])):
                        self.previous[(split, k)] = shard
            except (OSError, ValueError, AttributeError, TypeError):
                continue
        self.parts = paths.sizes(parts_dir)  # name -> bytes
        self.final = paths.sizes(out_dir)

    def find(self, split: str, k: int, input_sha256: str) -> dict | None:
        """The metadata of a finished shard k of `split` for this chunk text, or None."""
        base = f"{split}-{k:05d}"
        metas = []
        if base + ".json" in self.parts:
            try:
                metas.append(json.loads(paths.read_bytes(paths.join(self.parts_dir,
                                                                    base + ".json"))))
            except (OSError, ValueError):
                pass
        if (split, k) in self.previous:
            metas.append(self.previous[(split, k)])
        final = re.compile(rf"^{base}-of-[0-9]{{5}}\.tfrecord$")
        name = base + ".tfrecord"
        files = [(paths.join(self.parts_dir, name), self.parts.get(name))]
        files += [(paths.join(self.out_dir, name), size)
                  for name, size in sorted(self.final.items()) if final.match(name)]
        for meta in metas:
            if meta.get("input_sha256") != input_sha256:
                continue
            if meta.get("settings_key", self.key) != self.key:
                continue
            own = paths.basename(str(meta.get("file", "")))  # an object store's upload
            uploaded = [(paths.join(self.parts_dir, own), self.parts[own])] if (
                self.remote and own.startswith(base + "-") and own in self.parts) else []
            for path, size in uploaded + files:
                if size is not None and size == meta.get("bytes"):
                    if self.remote or sha256_file(path) == meta.get("sha256"):
                        return {**meta, "file": path}
        return None


def publish(out_dir: str, metas: list[dict], splits: Sequence[str]
            ) -> tuple[dict[str, dict], instances_lib.InstanceStats, int]:
    """Renames the finished shards to SPLIT-NNNNN-of-MMMMM.tfrecord and removes those of
    an earlier, different run. Returns the manifest's "splits" (the train split always;
    another one when it has shards), the summed instance stats and the examples the
    check dropped. On an object store a rename is a copy and a delete (paths.move); a
    run interrupted between the two finds the shard under either name again, by its
    metadata object, and the previous manifest, which no longer describes the final
    names once one is replaced, is removed first."""
    remote = paths.is_remote(out_dir)
    if remote:
        paths.remove(paths.join(out_dir, PARTS, "previous-manifest.json"))
    metas.sort(key=lambda m: m["chunk"])
    total_stats = instances_lib.InstanceStats()
    dropped = 0
    out: dict[str, dict] = {}
    for split in splits:
        own = sorted((m for m in metas if m["split"] == split), key=lambda m: m["shard"])
        shards = []
        for m in own:
            name = shard_name(split, m["shard"], len(own))
            target = paths.join(out_dir, name)
            if remote and m["file"] != target:
                paths.move(m["file"], target)
            elif not remote and os.path.abspath(m["file"]) != target:
                os.replace(m["file"], target)
            total_stats.add(instances_lib.InstanceStats(**m["instance_stats"]))
            dropped += m["vocab_check_dropped"]
            shards.append({
                "file": name, "examples": m["examples"], "tokens": m["tokens"],
                "bytes": m["bytes"], "sha256": m["sha256"], "input_sha256": m["input_sha256"],
                "documents": m["instance_stats"]["documents"],
                "instance_stats": m["instance_stats"],
                "vocab_check_dropped": m["vocab_check_dropped"],
            })
        if own or split == "train":
            out[split] = {
                "examples": sum(s["examples"] for s in shards),
                "tokens": sum(s["tokens"] for s in shards),
                "shards": shards,
            }
    keep = {s["file"] for info in out.values() for s in info["shards"]}
    for name in paths.sizes(out_dir) if remote else os.listdir(out_dir):
        if SHARD_RE.match(name) and name not in keep:  # shards of an earlier, different run
            paths.remove(paths.join(out_dir, name))
    return out, total_stats, dropped
