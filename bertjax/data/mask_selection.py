"""Which positions a `masking.Masker` masks: vectorised choices under a per-row budget.

`choose_tokens` draws a row's budget of candidates uniformly (token masking);
`span_starts` cuts runs of candidates into spans of whole words (ngram, span masking);
`choose_units` chooses whole units (words or spans) in random order until the budget
is spent, skipping a unit that does not fit (or cutting it to the words that fit),
with `greedy_fill` as the order-dependent scan done for all rows at once. Every array
is [batch, length]; masking.py's docstring states the rules.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _next_flagged(flags: np.ndarray) -> np.ndarray:
    """[B, L] int32: for each position, the first flagged position after it (or L)."""
    batch, length = flags.shape
    # (arithmetic instead of np.where, which is several times slower here)
    at = length + flags * (np.arange(length, dtype=np.int32) - length)  # flagged: position
    at = np.minimum.accumulate(at[:, ::-1], axis=1)[:, ::-1]
    out = np.empty((batch, length), dtype=np.int32)
    out[:, :-1] = at[:, 1:]
    out[:, -1] = length
    return out


def _last_flagged(flags: np.ndarray, values: np.ndarray) -> np.ndarray:
    """[B, L]: `values` at the last flagged position at or before each position (0
    before the first). `values` must not decrease along a row."""
    return np.maximum.accumulate(values * flags, axis=1)


def span_starts(
    word_start: np.ndarray, run_start: np.ndarray, length_cdf: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """[B, L] bool: first positions of spans that tile every run of candidates, each span
    a whole number of words drawn from the lengths' cumulative distribution [N].

    A run whose first word is word s uses the length draws of words s, s+1, ... (its
    m-th span starts at word s + sum(draws[s:m])); a run of m words needs at most m
    draws, so runs never share one and restart afresh.
    """
    batch, length = word_start.shape
    word_of = np.cumsum(word_start, axis=1, dtype=np.int32) - 1  # [B, L] word index
    u = rng.random((batch, length))
    draw = np.ones((batch, length), dtype=np.int32)  # a span length in words per word
    for c in length_cdf[:-1]:
        draw += u >= c
    draw *= word_start
    offset = np.cumsum(draw, axis=1, dtype=np.int32) - draw  # at a word: sum of draws before
    # One past the run's last word: the word index of the next run start, or n_words.
    word_of_or_end = np.concatenate([word_of, word_of[:, -1:] + 1], axis=1)  # [B, L + 1]
    run_end = np.take_along_axis(word_of_or_end, _next_flagged(run_start), axis=1)
    # Span start per draw: run's first word + offset - offset at it; offset - word_of
    # does not decrease (draws are >= 1), as _last_flagged needs.
    span_word = offset - _last_flagged(run_start, offset - word_of)  # [B, L]
    keep = word_start & (span_word < run_end)
    row_base = (np.arange(batch, dtype=np.int32) * (length + 1))[:, None]
    marks = np.zeros(batch * (length + 1), dtype=bool)  # [B, L + 1] per word, + a dump slot
    marks[row_base + length + keep * (span_word - length)] = True
    return word_start & marks[row_base + np.maximum(word_of, 0)]


def choose_tokens(cand: np.ndarray, budget: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[B, L] bool: `budget[b]` candidates of row b, uniformly at random."""
    batch, length = cand.shape
    # Random keys made unique by the position in the low bits, so exactly k fall at or
    # below the row's k-th smallest key; non-candidates sort last.
    keys = _random_keys(cand, rng)
    kth = np.sort(keys, axis=1)[np.arange(batch), np.maximum(budget - 1, 0)]
    return (keys <= kth[:, None]) & (budget > 0)[:, None]


_NO_KEY = np.iinfo(np.int64).max


def _position_bits(length: int) -> int:
    return max(1, (length - 1).bit_length())


def _random_keys(flags: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[B, L] int64 keys, random in the high bits and the position in the low bits (so
    unique within a row), `_NO_KEY` where `flags` is False."""
    length = flags.shape[1]
    bits = _position_bits(length)
    keys = rng.integers(0, 1 << (62 - bits), size=flags.shape, dtype=np.int64)
    keys <<= bits
    keys |= np.arange(length)
    keys[~flags] = _NO_KEY
    return keys


def choose_units(
    cand: np.ndarray,
    unit_start: np.ndarray,
    budget: np.ndarray,
    rng: np.random.Generator,
    word_start: np.ndarray | None = None,
) -> np.ndarray:
    """Whole units in random order while they fit the budget left.

    A unit longer than the budget left is skipped (later, shorter ones are still
    tried), or, when `word_start` is given (spans of words), cut to its longest
    prefix of whole words that fits, as ALBERT shortens an n-gram that would exceed
    the budget (and SpanBERT truncates its last span).

    Args:
      cand: [B, L] bool candidates.
      unit_start: [B, L] bool, the first position of each unit; every run of
        candidates begins with one.
      budget: [B] tokens per row.
      rng: draws the order of the units.
      word_start: [B, L] bool word starts (a superset of unit_start) to cut units at.

    Returns:
      [B, L] bool, the selected positions.
    """
    batch, length = cand.shape
    col = np.arange(length, dtype=np.int32)
    first = _last_flagged(unit_start, col)  # [B, L] where each position's unit starts
    unit_len = _next_flagged(unit_start | ~cand) - col  # [B, L] at unit starts: tokens
    # A random order of each row's units, as their start positions.
    width = max(int(unit_start.sum(axis=1).max()), 1)  # U: most units in a row
    keys = np.sort(_random_keys(unit_start, rng), axis=1)[:, :width]  # [B, U]
    is_unit = keys != _NO_KEY
    row_base = (np.arange(batch, dtype=np.int32) * (length + 1))[:, None]
    # Flat [B, L + 1] index of each unit's start; slot L of a row takes the non-units.
    position = (keys & ((1 << _position_bits(length)) - 1)).astype(np.int32)
    scan = row_base + length + is_unit * (position - length)
    padded_len = np.zeros((batch, length + 1), dtype=np.int32)
    padded_len[:, :length] = unit_len
    scan_len = padded_len.ravel()[scan]  # [B, U] in scan order, 0 for no unit
    taken_at = np.zeros(batch * (length + 1), dtype=np.int32)

    if word_start is None:
        taken = greedy_fill(scan_len, budget)
        taken_at[scan] = taken
        return cand & (taken_at[row_base + first] > 0)

    # upto[i]: tokens of i's unit up to the end of i's word; a unit cut to n tokens
    # keeps exactly the positions with upto <= n.
    upto = _next_flagged(word_start | ~cand) - first  # [B, L]
    padded_upto = np.zeros((batch, length + 1), dtype=np.int32)
    padded_upto[:, :length] = upto
    scan_first_word = padded_upto.ravel()[scan]

    def cut(rows: np.ndarray, item: np.ndarray, room: np.ndarray) -> np.ndarray:
        """Longest whole-word prefix (tokens) of each row's item that fits room."""
        start = scan[rows, item] - row_base[rows, 0]
        inside = (first[rows] == start[:, None]) & cand[rows]
        upto_rows = upto[rows]
        return (upto_rows * (inside & (upto_rows <= room[:, None]))).max(axis=1)

    taken = greedy_fill(scan_len, budget, scan_first_word, cut)
    taken_at[scan] = taken
    return cand & (upto <= taken_at[row_base + first])


def greedy_fill(
    lengths: np.ndarray,
    budget: np.ndarray,
    first_part: np.ndarray | None = None,
    cut: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Scans each row's items in order and takes an item when it fits the budget left;
    with `cut`, an item that does not fit is cut down to fit, if its first part does.

    Vectorised by passes: a pass takes the longest prefix of still-possible items that
    fits and settles the first one that does not (skipped, or cut and taken). The
    budget left only shrinks, so an item that cannot fit now never will. Every pass
    lowers a row's budget left or finishes the row, so there are at most P + 1 passes
    (typically 3 to 5).

    Args:
      lengths: [B, U] int, item lengths in scan order, 0 for no item.
      budget: [B] int.
      first_part: [B, U] int, the shortest cut of each item (with `cut`).
      cut: (rows, item index, room) -> the longest cut of each row's item that fits
        room (0 when none does), all [R].

    Returns:
      [B, U] int32, the length taken of each item (0: not taken).
    """
    batch, n = lengths.shape
    col = np.arange(n, dtype=np.int32)
    lengths = lengths.astype(np.int32)
    smallest = lengths if first_part is None else first_part.astype(np.int32)
    left = budget.astype(np.int32)  # [B]
    open_ = lengths > 0  # not yet taken or rejected
    taken = np.zeros((batch, n), dtype=np.int32)
    rows = np.arange(batch)  # rows with items still to scan
    while rows.size:
        every = rows.size == batch  # whole arrays: no gather needed
        lens = lengths if every else lengths[rows]
        lft = left if every else left[rows]
        possible = (open_ if every else open_[rows]) & (
            (smallest if every else smallest[rows]) <= lft[:, None]
        )
        size = lens * possible
        fits = possible & (np.cumsum(size, axis=1, dtype=np.int32) <= lft[:, None])
        overflow = possible & ~fits  # from the first item that does not fit on
        more = overflow.any(axis=1)
        first = np.where(more, overflow.argmax(axis=1), n).astype(np.int32)
        room = lft - (size * fits).sum(axis=1, dtype=np.int32)
        got = size * fits
        if cut is not None and more.any():
            part = cut(rows[more], first[more], room[more])
            got[np.flatnonzero(more), first[more]] = part
            room[more] -= part
        still_open = possible & (col > first[:, None])
        if every:
            taken += got
            open_ = still_open
        else:
            taken[rows] += got
            open_[rows] = still_open
        left[rows] = room
        rows = rows[more & (room > 0)]
    return taken


# ---------------------------------------------------------------------- tokenizers
