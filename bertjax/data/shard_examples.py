"""A shard's examples as columns: packed pass by pass (`Columns`), masked statically
(`mask_static`), checked on exactly the bytes written (`drop_invalid`) and laid out as
Google's create_pretraining_data.py writes them (`google_features`). The features are
what the record encoder (records.py) takes: name -> (values, count per example).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bertjax.data import instances as instances_lib

Features = dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (values, count per example)


class Columns:
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

        features = {
            "input_ids": column("ids"),
            "token_type_ids": column("types"),
            "pair_label": (self.labels[rows], np.ones(len(rows), np.int64)),
        }
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


def fill(arrays: list[np.ndarray], lengths: np.ndarray, dtype: Any) -> np.ndarray:
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


def mask_static(
    masker, insts: list[instances_lib.Instance], pad_id: int, max_len: int, rng, block: int = 1024
) -> dict[str, np.ndarray]:
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
    return {
        "ids": _cat(ids_out, None),
        "positions": _cat(pos_out, np.int32),
        "positions_counts": _cat(n_pred, np.int64),
        "masked": _cat(lab_out, np.int32),
        "masked_counts": _cat(n_pred, np.int64),
    }


def drop_invalid(features: Features, vocab: int, max_len: int) -> tuple[Features, int]:
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


def google_features(features: Features, length: int, predictions: int) -> Features:
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
    weights = (
        np.arange(predictions)[None, :] < features["masked_lm_positions"][1][:, None]
    ).astype(np.float32)
    columns = {
        "input_ids": padded("input_ids", length),
        "input_mask": real.astype(np.int64),
        "segment_ids": padded("token_type_ids", length),
        "masked_lm_positions": pos,
        "masked_lm_ids": padded("masked_lm_ids", predictions),
        "masked_lm_weights": weights,
        "next_sentence_labels": features["pair_label"][0].reshape(n, 1),
    }
    return {k: (v.reshape(-1), np.full(n, v.shape[1], np.int64)) for k, v in columns.items()}
