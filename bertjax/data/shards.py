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

Shard format: TFRecord (masked CRC-32C framing, uncompressed) of tf.train.Example
protos with int64 features input_ids, token_type_ids, pair_label and, for static
masking, masked_lm_positions and masked_lm_ids (input_ids then already masked); with
record_format "google", the fixed-length features of Google's
create_pretraining_data.py (`_google_features`). The records are encoded with numpy
(records.py), so preparation needs no TensorFlow; `tf.data.TFRecordDataset` +
`tf.io.parse_example` read them, `records.read_examples` too (TF-free, for tests).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
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


def remove_partial_files(parts_dir: str) -> None:
    """Removes the temporary files of an interrupted run."""
    for leftover in glob.glob(os.path.join(parts_dir, "*.tmp-*")):
        os.remove(leftover)


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

    task: split, shard (its index in the split), chunk, documents (lists of sentences),
    input_sha256 (of the chunk's text), settings_key, parts_dir (local), and
    publish_dir: None, or the URL of DATA/.shards to upload the shard and its metadata to.
    """
    tok, s = _WORKER["tokenizer"], _WORKER["settings"]
    max_len = s["max_seq_length"]
    stats = instances_lib.InstanceStats()
    rng = _rng(s["seed"], task["chunk"], 1)
    budget = instances_lib.segment_budget(s["instances"], max_len)
    docs = instances_lib.tokenize_documents(tok, task["documents"], budget, stats)
    columns, dropped = _passes(docs, task["chunk"], rng, stats)
    features, bad = _drop_invalid(_features(columns), tok.vocab_size, max_len)
    examples = len(features["input_ids"][1])
    tokens = int(features["input_ids"][1].sum())
    if s.get("record_format", "bertjax") == "google":
        features = _google_features(features, max_len,
                                    s["masking_config"]["max_predictions_per_seq"])
    data = tfrecord_bytes(features)
    base = os.path.join(task["parts_dir"], f"{task['split']}-{task['shard']:05d}")
    write_atomic(base + ".tfrecord", data)
    meta = {
        "split": task["split"],
        "shard": task["shard"],
        "chunk": task["chunk"],
        "file": base + ".tfrecord",
        "examples": examples,
        "tokens": tokens,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "input_sha256": task["input_sha256"],
        "settings_key": task["settings_key"],
        "instance_stats": stats.asdict(),
        "vocab_check_dropped": dropped + bad,
    }
    if task.get("publish_dir"):
        return _upload(meta, task["publish_dir"])
    write_atomic(base + ".json", json.dumps(meta, sort_keys=True).encode())
    return meta


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


def _passes(docs: list[instances_lib.TokenizedDocument], chunk: int, rng: np.random.Generator,
            stats: instances_lib.InstanceStats) -> tuple[dict[str, list], int]:
    """The chunk's examples as columns (ids, types, labels; with static masking also
    positions and masked ids): one unmasked pass, or dupe_factor masked passes mixed
    through the shard (as Google); and how many instances failed the check."""
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
    names = ("ids", "types", "labels") + (("positions", "masked") if masker else ())
    cols: dict[str, list] = {name: [] for name in names}
    dropped = 0
    insts: list[instances_lib.Instance] = []
    for d in range(copies):
        if d == 0 or rebuild:  # pass d's own instances (rebuild), or pass 0's again
            # Pass 0 draws from the chunk's stream, later passes from their own, so
            # every pass is a function of (seed, chunk, pass) alone.
            built = build(rng if d == 0 else _rng(seed, chunk, 1000 + d))
            insts = [x for x in built if fits(x)]
            pass_dropped = len(built) - len(insts)
        dropped += pass_dropped
        cols["types"] += [x.token_type_ids for x in insts]
        cols["labels"] += [x.pair_label for x in insts]
        if masker is None:
            cols["ids"] += [x.input_ids for x in insts]
            continue
        a, b, c = _mask_static(masker, insts, tok.pad_id, max_len, _rng(seed, chunk, 2 + d))
        cols["ids"] += a
        cols["positions"] += b
        cols["masked"] += c
    del insts
    if masker is not None:  # the passes mixed through the shard, as Google
        order = rng.permutation(len(cols["ids"]))
        cols = {name: [v[k] for k in order] for name, v in cols.items()}
    return cols, dropped


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


def _features(cols: Mapping[str, list]) -> Features:
    """The columns as the record encoder's features."""

    def column(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        counts = np.fromiter(map(len, arrays), np.int64, len(arrays))
        values = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
        return values, counts

    labels = cols["labels"]
    features = {"input_ids": column(cols["ids"]), "token_type_ids": column(cols["types"])}
    features["pair_label"] = (np.asarray(labels, np.int64), np.ones(len(labels), np.int64))
    if "positions" in cols:
        features["masked_lm_positions"] = column(cols["positions"])
        features["masked_lm_ids"] = column(cols["masked"])
    return features


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
