"""TFRecord files of tf.train.Example, encoded and decoded with numpy.

Preparation writes many small examples; building `tf.train.Example` protos one by
one in Python costs more than tokenizing them, and worker processes would each
import TensorFlow. This codec writes the same bytes as TensorFlow's deterministic
serialization (a test compares them, and tf.data reads and CRC-checks the files),
vectorised over a shard's examples.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np


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
        ends = np.cumsum(counts)
        if values.dtype == np.float32:  # FloatList: packed little-endian fixed32
            data = values.astype("<f4").view(np.uint8)
            cum = 4 * np.arange(len(values) + 1)
            list_tag = b"\x12"  # Feature{float_list = 2}
        else:
            data, nbytes = _varints(values)
            cum = np.concatenate([[0], np.cumsum(nbytes)])
            list_tag = b"\x1a"  # Feature{int64_list = 3}
        p = cum[ends] - cum[ends - counts]  # [n] payload bytes (the packed values)
        has = (p > 0).astype(np.int64)  # an empty list is written as Int64List{}
        l1 = has * (1 + _varint_len(p) + p)  # Int64List / FloatList
        l2 = 1 + _varint_len(l1) + l1  # Feature{...}
        head = b"\x0a" + bytes(_varints(np.array([len(name)]))[0]) + name + b"\x12"
        entry = len(head) + _varint_len(l2) + l2  # map entry {key, value}
        body += 1 + _varint_len(entry) + entry
        pieces += [
            _const(b"\x0a", n),
            _varint_piece(entry),
            _const(head, n),
            _varint_piece(l2),
            _const(list_tag, n),
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
        values = np.asarray(values)
        values = values.astype(np.float32 if np.issubdtype(values.dtype, np.floating) else np.int64)
        cols.append((name.encode(), values, counts, np.cumsum(counts)))
    for lo in range(0, n, _BLOCK):
        hi = min(lo + _BLOCK, n)
        block = []
        for key, values, counts, cum in cols:
            v0 = int(cum[lo - 1]) if lo else 0
            block.append((key, values[v0 : int(cum[hi - 1])], counts[lo:hi]))
        yield block


def encode_examples(features: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> list[bytes]:
    """Serialized tf.train.Example protos with int64-list features (float32 lists for
    floating-point values).

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
        elif wire == 5:  # fixed32 (an unpacked float)
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def parse_example(record: bytes) -> dict[str, np.ndarray]:
    """int64-list (int64) and float-list (float32) features of a serialized
    tf.train.Example (packed or not)."""
    out = {}
    for _, _, features in _fields(record):
        for _, _, entry in _fields(features):
            name, values, dtype = None, [], np.int64
            for f, _, v in _fields(entry):
                if f == 1:
                    name = v.decode()
                elif f == 2:
                    for kind, _, lst in _fields(v):
                        if kind == 2:  # FloatList
                            dtype = np.float32
                            values += [np.frombuffer(x, "<f4") for _, _, x in _fields(lst)]
                            continue
                        if kind != 3:
                            raise ValueError(f"feature {name!r} is not an int64 or float list")
                        for _, wire, x in _fields(lst):
                            if wire == 0:
                                values.append(_signed(x))
                            else:
                                p = 0
                                while p < len(x):
                                    y, p = _read_varint(x, p)
                                    values.append(_signed(y))
            out[name] = (
                (np.concatenate(values).astype(np.float32) if values else np.zeros(0, np.float32))
                if dtype == np.float32
                else np.asarray(values, np.int64)
            )
    return out


def read_examples(path: str) -> list[dict[str, np.ndarray]]:
    """All examples of a shard, parsed (TF-free; verifies CRCs)."""
    return [parse_example(r) for r in read_records(path)]
