"""Packing: several sequences in one row of `row_length` tokens, each with its own
segment number in the attention mask (docs/packing.md).

Not data/packing.py, which builds RoBERTa's full-sentence instances; this module packs
finished sequences (pretraining instances, fine-tuning examples) into model rows.

  pack(lengths, row_length)      which sequences share a row: a pure function of the
                                 lengths (best fit or first fit over the window given),
                                 so any number of workers computes the same rows
  pack_rows(batch, rows, ...)    a padded one-sequence-per-row numpy batch -> the packed
                                 batch of those rows (segment numbers, per-sequence keys
                                 [rows, S], masked positions moved into the row)
  check(batch)                   the host-side check every packed batch passes: segment
                                 numbers 1, 2, ... in order, contiguous, padding last,
                                 num_sequences matching; a ValueError naming the row

Layout of a packed batch ([R] rows, L tokens, S sequence slots, P predictions):
  input_ids, token_type_ids  [R, L]  each sequence's own ids and token types
  attention_mask             [R, L]  0 padding, k at the row's k-th sequence
  num_sequences              [R]     sequences in the row (its presence marks a packed
                                     batch: bertjax/tasks/base.packing)
  a per-sequence key         [R, S]  slot k - 1 for sequence k (pair_labels -1, weights 0
                                     where the row has fewer)
  masked_lm_*                [R, P]  positions in the row
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

import numpy as np

METHODS = ("best_fit", "first_fit")


def pack(
    lengths: Sequence[int],
    row_length: int,
    method: str = "best_fit",
    max_per_row: int = 0,
    costs: Sequence[int] | None = None,
    budget: int = 0,
) -> list[list[int]]:
    """Rows of sequence indices: every sequence in exactly one row, each row's lengths
    summing to at most `row_length` (and at most `max_per_row` sequences, > 0; and
    `costs` summing to at most `budget`, > 0: static masks' predictions).

    best_fit: longest first (ties by index), each into the open row with the least room
    left that holds it, else a new row (best-fit decreasing: within 11/9 of the fewest
    rows). first_fit: in the given order, into the first row that holds it. Rows come
    out ordered by their first sequence's index; sequences within a row by index, so
    a row reads as the data did. A sequence longer than the row is a ValueError naming
    it (index and length): the packer never truncates.
    """
    if method not in METHODS:
        raise ValueError(f"packing={method!r}: expected off or one of {', '.join(METHODS)}")
    lengths = [int(n) for n in lengths]
    costs = [0] * len(lengths) if costs is None else [int(c) for c in costs]
    for i, n in enumerate(lengths):
        if n > row_length:
            raise ValueError(f"sequence {i} has {n} tokens, more than the row's {row_length}")
        if budget and costs[i] > budget:
            raise ValueError(f"sequence {i} has {costs[i]} predictions, more than a row's {budget}")
    rows: list[list[int]] = []
    room: list[int] = []  # tokens left per row
    spent: list[int] = []  # costs per row

    def fits(r: int, i: int) -> bool:
        return (not max_per_row or len(rows[r]) < max_per_row) and (
            not budget or spent[r] + costs[i] <= budget
        )

    def place(r: int | None, i: int) -> int:
        if r is None:  # a new row
            r = len(rows)
            rows.append([])
            room.append(row_length)
            spent.append(0)
        rows[r].append(i)
        room[r] -= lengths[i]
        spent[r] += costs[i]
        return r

    if method == "first_fit":
        for i, n in enumerate(lengths):
            place(next((r for r in range(len(rows)) if room[r] >= n and fits(r, i)), None), i)
    else:
        # (room, row) of open rows, sorted: the first entry with room >= n is the best fit
        open_rows: list[tuple[int, int]] = []
        for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
            at = bisect.bisect_left(open_rows, (lengths[i], -1))
            while at < len(open_rows) and not fits(open_rows[at][1], i):
                at += 1
            r = open_rows.pop(at)[1] if at < len(open_rows) else None
            r = place(r, i)
            if room[r] > 0 and (not max_per_row or len(rows[r]) < max_per_row):
                bisect.insort(open_rows, (room[r], r))
    return sorted(sorted(r) for r in rows)


def pack_rows(
    batch: Mapping[str, np.ndarray],
    rows: Sequence[Sequence[int]],
    num_rows: int,
    slots: int,
    predictions: int,
    pad_id: int,
    token_keys: Sequence[str] = ("token_type_ids",),
) -> dict[str, np.ndarray]:
    """The packed batch of `rows` (lists of indices into `batch`'s rows).

    batch: one sequence per row, padded at the end: input_ids, token_type_ids,
    attention_mask [b, L] (> 0 at real tokens); optional masked_lm_positions,
    masked_lm_ids, masked_lm_weights [b, P]; any other key is per sequence ([b] or
    [b, ...]: pair_labels, labels, weights, start, end, ...) and becomes [R, S, ...],
    with -1 (pair_labels) or 0 in empty slots, except the per-token `token_keys`
    ([b, L]), which move with their tokens. start / end (answer spans) are shifted to
    the row. Returns num_rows rows (the extra ones empty), `slots` sequence
    slots and `predictions` masked positions per row.
    """
    ids = batch["input_ids"]
    length = ids.shape[1]
    real = np.asarray(batch["attention_mask"]) > 0
    n = real.sum(axis=1)
    out = {
        "input_ids": np.full((num_rows, length), pad_id, ids.dtype),
        "num_sequences": np.zeros(num_rows, np.int32),
        "attention_mask": np.zeros((num_rows, length), np.int32),
    }
    token_keys = [k for k in token_keys if k in batch]
    for k in token_keys:
        out[k] = np.zeros((num_rows, length), batch[k].dtype)
    mlm = "masked_lm_positions" in batch
    if mlm:
        for k in MLM_KEYS:
            out[k] = np.zeros((num_rows, predictions), batch[k].dtype)
        mlm_real = np.asarray(batch["masked_lm_weights"]) > 0
    seq_keys = [k for k in batch if k not in out and k not in MLM_KEYS]
    for k in seq_keys:
        fill = -1 if k == "pair_labels" else 0
        out[k] = np.full((num_rows, slots, *batch[k].shape[1:]), fill, batch[k].dtype)
    for r, members in enumerate(rows):
        if len(members) > slots:
            raise ValueError(
                f"packed row {r} has {len(members)} sequences, more than its {slots} slots"
            )
        at, p = 0, 0
        out["num_sequences"][r] = len(members)
        for slot, i in enumerate(members):
            m = int(n[i])
            if at + m > length:
                raise ValueError(f"packed row {r} holds {at + m} tokens, more than {length}")
            out["input_ids"][r, at : at + m] = ids[i, :m]
            out["attention_mask"][r, at : at + m] = slot + 1
            for k in token_keys:
                out[k][r, at : at + m] = batch[k][i, :m]
            if mlm:
                q = int(mlm_real[i].sum())
                if p + q > predictions:
                    raise ValueError(
                        f"packed row {r} holds {p + q} masked positions, more than {predictions}"
                    )
                out["masked_lm_positions"][r, p : p + q] = batch["masked_lm_positions"][i, :q] + at
                out["masked_lm_ids"][r, p : p + q] = batch["masked_lm_ids"][i, :q]
                out["masked_lm_weights"][r, p : p + q] = batch["masked_lm_weights"][i, :q]
                p += q
            for k in seq_keys:
                value = batch[k][i]
                out[k][r, slot] = value + at if k in SPAN_KEYS else value
            at += m
    return out


# Keys per masked position, and token positions (shifted to the row).
MLM_KEYS = ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")
SPAN_KEYS = ("start", "end")


def check(batch: Mapping[str, np.ndarray]) -> None:
    """Refuses a packed batch whose segment numbers are inconsistent with its mask:
    in each row the real tokens are numbered 1, 2, ..., num_sequences in order, each
    sequence contiguous, padding (0) only after the last. A ValueError naming the row."""
    mask = np.asarray(batch["attention_mask"])
    count = np.asarray(batch["num_sequences"])
    if mask.ndim != 2 or count.shape != mask.shape[:1]:
        raise ValueError(
            f"packed batch: attention_mask {mask.shape} and num_sequences "
            f"{count.shape} do not match ([rows, length] and [rows])"
        )
    real = mask > 0
    step = mask[:, 1:] - mask[:, :-1]
    ok = (mask >= 0).all(axis=1) & (real[:, :-1] >= real[:, 1:]).all(axis=1)  # padding last
    ok &= (mask[:, 0] == 1) | ~real[:, 0]  # the first sequence is 1
    ok &= (~real[:, 1:] | (step == 0) | (step == 1)).all(axis=1)  # then 2, 3, ... in turn
    ok &= mask.max(axis=1, initial=0) == count
    if not ok.all():
        r = int(np.argmin(ok))
        raise ValueError(
            f"packed batch row {r}: segment numbers {mask[r].tolist()} are not "
            f"1..{int(count[r])} in order, each contiguous, padding last "
            f"(num_sequences {int(count[r])})"
        )


def pack_batch(
    batch: Mapping[str, np.ndarray],
    pad_id: int,
    method: str = "best_fit",
    slots: int = 16,
    predictions: int = 0,
    row_multiple: int = 8,
    token_keys: Sequence[str] = ("token_type_ids",),
) -> dict[str, np.ndarray]:
    """A host batch of one sequence per row (rows without tokens are dropped) -> its
    packed batch: the sequences packed by `pack` over the batch (the window), in
    ceil(rows / row_multiple) * row_multiple rows (at most as many as the batch had:
    few distinct shapes, few compilations), `slots` sequences and `predictions` masked
    positions per row (stored masks: a row's sum stays within it), `token_keys` moved
    with their tokens (pack_rows). Checked by `check`.
    """
    mask = np.asarray(batch["attention_mask"])
    lengths = (mask > 0).sum(axis=1)
    real = np.flatnonzero(lengths > 0)
    costs, budget = None, 0
    if "masked_lm_weights" in batch:
        costs = (np.asarray(batch["masked_lm_weights"])[real] > 0).sum(axis=1)
        budget = predictions
    rows = pack(lengths[real], mask.shape[1], method, slots, costs, budget)
    rows = [[int(real[i]) for i in r] for r in rows]
    multiple = max(1, int(row_multiple))
    num_rows = min(len(mask), max(multiple, -(-len(rows) // multiple) * multiple))
    out = pack_rows(batch, rows, max(num_rows, len(rows)), slots, predictions, pad_id, token_keys)
    check(out)
    return out
