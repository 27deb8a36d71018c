"""Packed rows written by hand (docs/packing.md), the reference of the packing tests:
a tiny model of every family (`tiny`), random sequences (`sequences`), the packed and
unpacked batches of them laid out as the layout is specified (`layout`), and the
sequences a packed batch holds, read back (`packed_sequences`).
"""

from __future__ import annotations

import modellib
import numpy as np

from bertjax.models import ModelConfig

TINY = dict(
    modellib.SIZES,  # two 32-wide layers, vocabulary 97, 40 positions
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
    classifier_dropout_rate=0.0,
    num_labels=3,
)
# family -> its fields here beyond modellib's
FAMILIES = {
    **{name: {} for name in modellib.FAMILIES},
    # RoPE, and local windows (8 tokens) narrower than the rows; mean pooling
    "modernbert": dict(local_window=8, global_every=2, classifier_pooling="mean"),
}
PAIR = {"bert": "nsp", "albert": "sop"}
ROW = 16
LENGTHS = (5, 7, 3, 6, 4, 9)
ROWS = ((0, 1, 2), (3, 4), (5,))  # which sequences each packed row holds, in order


def tiny(name: str, attention: str = "einsum", heads: tuple[str, ...] = ()) -> ModelConfig:
    return modellib.tiny(name, TINY, **FAMILIES[name], attention=attention, heads=heads)


def sequences(cfg: ModelConfig, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """LENGTHS random sequences: ids, token types (a second segment after the middle
    where the family has token types), and what their heads are scored against."""
    rng = np.random.default_rng(seed)
    out = []
    for n in LENGTHS:
        types = (
            (np.arange(n) >= n // 2).astype(np.int32)
            if cfg.type_vocab_size > 1
            else np.zeros(n, np.int32)
        )
        masked = np.sort(rng.choice(np.arange(1, n), 2, replace=False)).astype(np.int32)
        start = int(rng.integers(0, n))
        out.append(
            dict(
                ids=rng.integers(5, cfg.vocab_size, n).astype(np.int32),
                types=types,
                masked=masked,
                masked_ids=rng.integers(5, cfg.vocab_size, 2),
                pair=int(rng.integers(0, 2)),
                label=int(rng.integers(0, 3)),
                target=float(rng.uniform(0, 5)),
                tags=rng.integers(0, 3, n),
                tag_weights=(rng.uniform(size=n) < 0.7).astype(np.float32),
                start=start,
                end=int(rng.integers(start, n)),
            )
        )
    return out


def layout(
    seqs: list[dict], rows: tuple[tuple[int, ...], ...], pad_id: int, packed: bool
) -> tuple[dict[str, np.ndarray], list[tuple[int, int, int]]]:
    """A batch of `seqs` in `rows` (each a tuple of sequence indices), written here by
    hand as the packed layout is specified: segment k at the row's k-th sequence,
    per-sequence keys [B, S], positions in the row. Also where each sequence sits:
    (row, slot, offset)."""
    b, s = len(rows), max(len(r) for r in rows)
    p = max(2 * len(r) for r in rows)
    batch = {
        k: np.zeros((b, ROW), np.int32)
        for k in ("input_ids", "token_type_ids", "attention_mask", "tags")
    }
    batch["input_ids"][:] = pad_id
    batch["tag_weights"] = np.zeros((b, ROW), np.float32)
    for k, dtype in (
        ("masked_lm_positions", np.int32),
        ("masked_lm_ids", np.int32),
        ("masked_lm_weights", np.float32),
    ):
        batch[k] = np.zeros((b, p), dtype)
    shape = (b, s) if packed else (b,)
    batch.update(
        pair_labels=np.full(shape, -1, np.int32),
        labels=np.zeros(shape, np.int32),
        targets=np.zeros(shape, np.float32),
        weights=np.zeros(shape, np.float32),
        start=np.zeros(shape, np.int32),
        end=np.zeros(shape, np.int32),
    )
    where = [None] * len(seqs)
    for r, members in enumerate(rows):
        at = 0
        for slot, i in enumerate(members):
            x, n = seqs[i], len(seqs[i]["ids"])
            span = slice(at, at + n)
            batch["input_ids"][r, span], batch["token_type_ids"][r, span] = x["ids"], x["types"]
            batch["attention_mask"][r, span] = slot + 1
            batch["tags"][r, span], batch["tag_weights"][r, span] = x["tags"], x["tag_weights"]
            m = slice(2 * slot, 2 * slot + 2)
            batch["masked_lm_positions"][r, m] = x["masked"] + at
            batch["masked_lm_ids"][r, m], batch["masked_lm_weights"][r, m] = x["masked_ids"], 1
            key = (r, slot) if packed else r
            for name, value in (
                ("pair_labels", x["pair"]),
                ("labels", x["label"]),
                ("targets", x["target"]),
                ("weights", 1.0),
                ("start", x["start"] + at),
                ("end", x["end"] + at),
            ):
                batch[name][key] = value
            where[i] = (r, slot, at)
            at += n
    if packed:
        batch["num_sequences"] = np.asarray([len(r) for r in rows], np.int32)
    return batch, where


def packed_sequences(batch):
    """Each sequence of a batch: (tokens, token types, masked positions within it,
    masked ids, pair label), sorted."""
    out = []
    for r in range(len(batch["input_ids"])):
        seg = batch["attention_mask"][r]
        labels = batch["pair_labels"][r]
        for k in range(1, int(seg.max(initial=0)) + 1):
            at = np.flatnonzero(seg == k)
            real = batch["masked_lm_weights"][r] > 0
            pos = batch["masked_lm_positions"][r][real]
            mine = (pos >= at[0]) & (pos <= at[-1])
            out.append(
                (
                    tuple(batch["input_ids"][r, at]),
                    tuple(batch["token_type_ids"][r, at]),
                    tuple(pos[mine] - at[0]),
                    tuple(batch["masked_lm_ids"][r][real][mine]),
                    int(labels[k - 1] if labels.ndim else labels),
                )
            )
    return sorted(out)
