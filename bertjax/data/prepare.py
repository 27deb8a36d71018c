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
import dataclasses
import glob
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import struct
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from bertjax.data import instances as instances_lib
from bertjax.data import tokenizers as tokenizers_lib
from bertjax.fileio import replace_directory

FORMAT = "bertjax-data"
VERSION = 1
# Bump when the bytes written for the same inputs and settings change (resume then
# rewrites old shards instead of mixing them with new ones).
ALGORITHM_REVISION = 1
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
    "docs_per_shard",
    "validation_every",
    "seed",
)


class DataFormatError(ValueError):
    """A prepared data directory or file is invalid; the message names the file."""


# ================================================================ TFRecord / Example codec
#
# Everything is vectorised over the examples of a shard with numpy: a record is a fixed
# sequence of "pieces" (constant bytes, varints, payload slices) whose lengths differ
# per example; `_gather` lays them out in one buffer with two fancy-indexing copies per
# piece kind. The bytes equal TensorFlow's deterministic serialization (features in
# sorted order, packed int64 lists), which a test checks.

_CRC_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected
_BLOCK = 4096  # examples encoded at a time (bounds the temporary index arrays)


def _crc_table() -> np.ndarray:
    table = np.zeros(256, np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _CRC_POLY if c & 1 else c >> 1
        table[i] = c
    return table


_CRC_TABLE = _crc_table()


def _crc_table16() -> np.ndarray:
    """Two bytes a step: T16[x] is register x after two zero bytes, so (CRC being
    linear) crc' = T16[(crc ^ b0 ^ b1 << 8) & 0xFFFF] ^ (crc >> 16)."""
    c = np.arange(1 << 16, dtype=np.uint32)
    for _ in range(2):
        c = _CRC_TABLE[c & 0xFF] ^ (c >> 8)
    return c


_CRC_TABLE16 = _crc_table16()
_VARINT_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], np.uint64)
_CRC_TABLE_LIST = _CRC_TABLE.tolist()
# _INIT_EFFECT[n]: the CRC register after feeding n zero bytes from 0xFFFFFFFF. CRC is
# linear, so crc(init, m) = crc(init, 0^len(m)) ^ crc(0, m); crc(0, .) ignores leading
# zeros, which lets records of different lengths share one right-aligned batch.
_INIT_EFFECT = [0xFFFFFFFF]


def crc32c(data: bytes) -> int:
    """CRC-32C of `data` (pure Python; for short inputs and tests)."""
    c = 0xFFFFFFFF
    t = _CRC_TABLE_LIST
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _init_effect(n: int) -> np.ndarray:
    t = _CRC_TABLE_LIST
    while len(_INIT_EFFECT) <= n:
        c = _INIT_EFFECT[-1]
        _INIT_EFFECT.append(t[c & 0xFF] ^ (c >> 8))
    return np.asarray(_INIT_EFFECT[: n + 1], np.uint32)


def _excl_cumsum(x: np.ndarray) -> np.ndarray:
    return np.cumsum(x) - x


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenated aranges [starts[i], starts[i] + lens[i])."""
    total = int(lens.sum())
    return np.repeat(starts - _excl_cumsum(lens), lens) + np.arange(total)


def crc32c_flat(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """[n] uint32 CRC-32C of the records buf[starts[i] : starts[i] + lens[i]]."""
    n = len(lens)
    out = np.zeros(n, np.uint32)
    if not n:
        return out
    lens = np.asarray(lens, np.int64)
    effect = _init_effect(int(lens.max()))
    order = np.argsort(lens, kind="stable")  # similar lengths together: less padding
    for lo in range(0, n, _BLOCK):
        idx = order[lo : lo + _BLOCK]
        ln = lens[idx]
        width, b = int(ln.max()), len(idx)
        width += width & 1  # whole 2-byte steps; the extra leading zero changes nothing
        crc = np.zeros(b, np.uint32)
        if width:
            # Right-align every record in a [width, b] array (row j = byte j).
            within = np.arange(int(ln.sum())) - np.repeat(_excl_cumsum(ln), ln)
            mat = np.zeros((width, b), np.uint8)
            mat[np.repeat(width - ln, ln) + within, np.repeat(np.arange(b), ln)] = buf[
                _ranges(np.asarray(starts)[idx], ln)
            ]
            pairs = mat[0::2].astype(np.uint32) | (mat[1::2].astype(np.uint32) << 8)
            table = _CRC_TABLE16
            for j in range(width // 2):
                crc = table[(crc ^ pairs[j]) & 0xFFFF] ^ (crc >> 16)
        out[idx] = crc ^ effect[ln] ^ np.uint32(0xFFFFFFFF)
    return out


def crc32c_many(records: list[bytes]) -> np.ndarray:
    """[len(records)] uint32 CRC-32C of each record."""
    lens = np.fromiter(map(len, records), np.int64, len(records))
    buf = np.frombuffer(b"".join(records), np.uint8)
    return crc32c_flat(buf, _excl_cumsum(lens), lens)


def _masked_crc(crc: np.ndarray) -> np.ndarray:
    crc = crc.astype(np.uint64)
    return ((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF).astype(np.uint32)


def _varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of `values` (int64; negatives as 10-byte two's complement).

    Returns:
      (all varints concatenated [bytes] uint8, [N] int64 byte length of each).
    """
    v = np.asarray(values, np.int64)
    if not v.size:
        return np.zeros(0, np.uint8), np.zeros(0, np.int64)
    lo, hi = int(v.min()), int(v.max())
    if lo >= 0 and hi < 128:  # token types, labels, short positions: one byte each
        return v.astype(np.uint8), np.ones(v.size, np.int64)
    u = v.astype(np.uint32) if lo >= 0 and hi < (1 << 32) else v.view(np.uint64)
    nbytes = 1 + np.searchsorted(_VARINT_LIMITS, u, side="right").astype(np.int64)
    width = int(nbytes.max())
    out = np.empty((v.size, width), np.uint8)
    for k in range(width):
        out[:, k] = (u >> u.dtype.type(7 * k)) & u.dtype.type(0x7F)
        out[:, k] |= (nbytes > k + 1).view(np.uint8) << np.uint8(7)  # continuation bit
    return out[np.arange(width)[None, :] < nbytes[:, None]], nbytes


def _varint_len(v: np.ndarray) -> np.ndarray:
    """Byte length of the varints of non-negative `v`."""
    n = np.ones(len(v), np.int64)
    for k in range(1, 10):
        n += v >= (1 << (7 * k))
    return n


# A piece: (source bytes, [n] start in the source, [n] length).
_Piece = tuple[np.ndarray, np.ndarray, np.ndarray]


def _const(data: bytes, n: int, present: np.ndarray | None = None) -> _Piece:
    lens = np.full(n, len(data), np.int64) if present is None else present * len(data)
    return np.frombuffer(data, np.uint8), np.zeros(n, np.int64), lens


def _varint_piece(values: np.ndarray, present: np.ndarray | None = None) -> _Piece:
    data, nbytes = _varints(values)
    starts = _excl_cumsum(nbytes)
    return data, starts, nbytes if present is None else nbytes * present


def _gather(pieces: list[_Piece], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Lays out n records, each the concatenation of its pieces in order.

    Returns:
      (buffer [total] uint8, [n + 1] record offsets).
    """
    lens = np.stack([p[2] for p in pieces], axis=1) if pieces else np.zeros((n, 0), np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens.sum(axis=1))])
    dst = offsets[:-1, None] + np.cumsum(lens, axis=1) - lens  # [n, K] piece starts
    out = np.empty(int(offsets[-1]), np.uint8)
    for k, (src, starts, ln) in enumerate(pieces):
        if ln.any():
            out[_ranges(dst[:, k], ln)] = src[_ranges(starts, ln)]
    return out, offsets


def _encode_block(
    features: list[tuple[bytes, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Serialized Examples of one block: (buffer, [n + 1] offsets).

    Args:
      features: (name, values of the block's examples concatenated, [n] counts), sorted
        by name.
    """
    n = len(features[0][2]) if features else 0
    pieces: list[_Piece] = []
    body = np.zeros(n, np.int64)
    for name, values, counts in features:
        data, nbytes = _varints(values)
        cum = np.concatenate([[0], np.cumsum(nbytes)])
        ends = np.cumsum(counts)
        p = cum[ends] - cum[ends - counts]  # [n] payload bytes (the packed varints)
        has = (p > 0).astype(np.int64)  # an empty list is written as Int64List{}
        l1 = has * (1 + _varint_len(p) + p)  # Int64List
        l2 = 1 + _varint_len(l1) + l1  # Feature{int64_list}
        head = b"\x0a" + bytes(_varints(np.array([len(name)]))[0]) + name + b"\x12"
        entry = len(head) + _varint_len(l2) + l2  # map entry {key, value}
        body += 1 + _varint_len(entry) + entry
        pieces += [
            _const(b"\x0a", n),
            _varint_piece(entry),
            _const(head, n),
            _varint_piece(l2),
            _const(b"\x1a", n),
            _varint_piece(l1),
            _const(b"\x0a", n, has),
            _varint_piece(p, has),
            (data, cum[ends - counts], p),
        ]
    return _gather([_const(b"\x0a", n), _varint_piece(body), *pieces], n)


def _feature_blocks(
    features: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> Iterator[list[tuple[bytes, np.ndarray, np.ndarray]]]:
    """`features` cut into blocks of _BLOCK examples, names sorted."""
    names = sorted(features)
    if not names:
        return
    n = len(features[names[0]][1])
    cols = []
    for name in names:
        values, counts = features[name]
        counts = np.asarray(counts, np.int64)
        if len(counts) != n or int(counts.sum()) != len(values):
            raise ValueError(f"feature {name!r}: counts do not match the values")
        cols.append((name.encode(), np.asarray(values, np.int64), counts, np.cumsum(counts)))
    for lo in range(0, n, _BLOCK):
        hi = min(lo + _BLOCK, n)
        block = []
        for key, values, counts, cum in cols:
            v0 = int(cum[lo - 1]) if lo else 0
            block.append((key, values[v0 : int(cum[hi - 1])], counts[lo:hi]))
        yield block


def encode_examples(features: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> list[bytes]:
    """Serialized tf.train.Example protos with int64-list features.

    Args:
      features: name -> (values of all examples concatenated, [num_examples] counts).
    Returns:
      one serialized Example per example; features in sorted name order, lists packed.
    """
    out = []
    for block in _feature_blocks(features):
        buf, offsets = _encode_block(block)
        raw = buf.tobytes()
        out += [raw[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]
    return out


def tfrecord_bytes(features: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """A TFRecord file's bytes holding the Examples of `encode_examples`.

    Each record: length (uint64 LE), masked CRC-32C of the length (uint32 LE), the data,
    masked CRC-32C of the data.
    """
    parts = []
    for block in _feature_blocks(features):
        buf, offsets = _encode_block(block)
        n = len(offsets) - 1
        lens = np.diff(offsets)
        len_bytes = lens.astype("<u8").view(np.uint8)
        eight = np.full(n, 8, np.int64)
        len_crc = _masked_crc(crc32c_flat(len_bytes, 8 * np.arange(n), eight))
        data_crc = _masked_crc(crc32c_flat(buf, offsets[:-1], lens))
        four = np.full(n, 4, np.int64)
        framed, _ = _gather(
            [
                (len_bytes, 8 * np.arange(n), eight),
                (len_crc.astype("<u4").view(np.uint8), 4 * np.arange(n), four),
                (buf, offsets[:-1], lens),
                (data_crc.astype("<u4").view(np.uint8), 4 * np.arange(n), four),
            ],
            n,
        )
        parts.append(framed.tobytes())
    return b"".join(parts)


def read_records(path: str, verify: bool = True) -> list[bytes]:
    """The records of an uncompressed TFRecord file; DataFormatError on damage."""
    with open(path, "rb") as f:
        raw = f.read()
    records, headers, pos = [], [], 0
    while pos < len(raw):
        if pos + 12 > len(raw):
            raise DataFormatError(f"{path}: truncated record header at byte {pos}")
        (length,) = struct.unpack_from("<Q", raw, pos)
        end = pos + 12 + length + 4
        if end > len(raw):
            raise DataFormatError(f"{path}: truncated record at byte {pos}")
        headers.append((raw[pos : pos + 8], raw[pos + 8 : pos + 12], raw[end - 4 : end]))
        records.append(raw[pos + 12 : end - 4])
        pos = end
    if verify and records:
        len_crc = _masked_crc(crc32c_many([h[0] for h in headers]))
        data_crc = _masked_crc(crc32c_many(records))
        for k, (_, lc, dc) in enumerate(headers):
            if (
                struct.unpack("<I", lc)[0] != len_crc[k]
                or struct.unpack("<I", dc)[0] != data_crc[k]
            ):
                raise DataFormatError(f"{path}: CRC mismatch in record {k}")
    return records


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a protobuf message (varint or bytes fields)."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def parse_example(record: bytes) -> dict[str, np.ndarray]:
    """int64-list features of a serialized tf.train.Example (packed or not)."""
    out = {}
    for _, _, features in _fields(record):
        for _, _, entry in _fields(features):
            name, values = None, []
            for f, _, v in _fields(entry):
                if f == 1:
                    name = v.decode()
                elif f == 2:
                    for kind, _, lst in _fields(v):
                        if kind != 3:
                            raise ValueError(f"feature {name!r} is not an int64 list")
                        for _, wire, x in _fields(lst):
                            if wire == 0:
                                values.append(_signed(x))
                            else:
                                p = 0
                                while p < len(x):
                                    y, p = _read_varint(x, p)
                                    values.append(_signed(y))
            out[name] = np.asarray(values, np.int64)
    return out


def read_examples(path: str) -> list[dict[str, np.ndarray]]:
    """All examples of a shard, parsed (TF-free; verifies CRCs)."""
    return [parse_example(r) for r in read_records(path)]


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


def _per_example_any(flags: np.ndarray, counts: np.ndarray) -> np.ndarray:
    cum = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    ends = np.cumsum(counts)
    return (cum[ends] - cum[ends - counts]) > 0


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _process_chunk(task: dict[str, Any]) -> dict[str, Any]:
    """Builds, checks and writes one shard; returns its metadata (also written)."""
    tok, masker, s = _WORKER["tokenizer"], _WORKER["masker"], _WORKER["settings"]
    chunk, max_len, vocab = task["chunk"], s["max_seq_length"], tok.vocab_size
    stats = instances_lib.InstanceStats()
    rng = _rng(s["seed"], chunk, 1)
    insts = instances_lib.documents_to_instances(
        tok,
        task["documents"],
        s["instances"],
        max_seq_length=max_len,
        rng=rng,
        short_seq_prob=s["short_seq_prob"],
        stats=stats,
    )
    # The vocab / length check, before masking (the Masker rejects bad ids) and again
    # below on exactly the bytes written.
    good = [
        x
        for x in insts
        if len(x.input_ids) <= max_len and 0 <= x.input_ids.min() and x.input_ids.max() < vocab
    ]
    dropped = (len(insts) - len(good)) * (s["dupe_factor"] if masker is not None else 1)
    insts = good
    n = len(insts)
    types = [x.token_type_ids for x in insts]
    labels = [x.pair_label for x in insts]
    if masker is not None:  # dupe_factor differently masked copies of every instance
        ids, pos, lab = [], [], []
        for d in range(s["dupe_factor"]):
            a, b, c = _mask_static(
                masker, insts, tok.pad_id, max_len, _rng(s["seed"], chunk, 2 + d)
            )
            ids += a
            pos += b
            lab += c
        copies = s["dupe_factor"]
        order = rng.permutation(n * copies)  # copies mixed through the shard, as Google
        ids, pos, lab = ([v[k] for k in order] for v in (ids, pos, lab))
        types = [types[k % n] for k in order]
        labels = [labels[k % n] for k in order]
    else:
        ids, pos, lab = [x.input_ids for x in insts], None, None
    del insts

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
    data = tfrecord_bytes(features)
    base = os.path.join(task["parts_dir"], f"{task['split']}-{task['shard']:05d}")
    _write_atomic(base + ".tfrecord", data)
    meta = {
        "split": task["split"],
        "shard": task["shard"],
        "chunk": chunk,
        "file": base + ".tfrecord",
        "examples": examples,
        "tokens": int(features["input_ids"][1].sum()),
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
      dupe_factor: static masking: differently masked copies of every instance.
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
        "tokenizer": {
            "kind": tokenizer.kind,
            "class": tokenizer.tokenizer_class,
            "vocab_size": tokenizer.vocab_size,
            "sha256": tok_sha,
            "dir": "tokenizer",
            "cls_id": tokenizer.cls_id,
            "sep_id": tokenizer.sep_id,
            "pad_id": tokenizer.pad_id,
            "mask_id": tokenizer.mask_id,
        },
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
