"""Masked-LM masking, the one library bertjax has: token, whole-word, n-gram and span.

`Masker` turns a padded batch of token ids into BERT's masked-LM inputs and targets.
It is numpy only (no TensorFlow, JAX or transformers) and vectorised over the batch,
so the same code serves static masking at preparation time and dynamic masking in the
input pipeline.

Per row, the candidates are the real (attention_mask 1) positions whose id is not a
special token. The row's budget is

    k = min(max_predictions_per_seq, max(1, round(n * masked_lm_prob)))

with n the number of candidates (`budget="candidates"`), or the row's whole length,
[CLS] and [SEP]s included (`budget="google"`: Google's create_pretraining_data.py and
ALBERT's, which take round(0.15 x len(tokens)); about one more prediction per 128-token
pair), and k at most the number of candidates (0 without candidates; `round` is
round-half-to-even, like Python's). What is chosen:

  token       k positions uniformly at random among the candidates (BERT, RoBERTa).
  whole_word  whole words (a word-start piece plus the continuation pieces after it)
              in random order; a word that does not fit the remaining budget is skipped
              and later, shorter words are still tried, as Google's
              create_pretraining_data.py does. A word is never split, so a row may end
              below k (e.g. k = 1 and every word has two pieces).
  ngram       spans of n = 1..max_ngram words, p(n) proportional to 1/n (ALBERT).
  span        spans of n words, n ~ Geometric(span_geometric_p) truncated to
              1..span_max_length and renormalised, as SpanBERT's code does (mean 3.8
              words for p = 0.2, max 10).

ngram and span masking cut each run of candidates (the tokens between two special
tokens or padding) into consecutive spans whose word counts are independent draws
from p(n), restarting at each run, and choose whole spans in random order like
whole_word, except that a span that would exceed the budget left is cut to its
longest prefix of whole words that fits (ALBERT shortens such an n-gram; SpanBERT
truncates its last span), and skipped only when not even its first word fits. Spans
so never overlap, never cross a special token and never split a word. The chosen
spans' lengths follow p(n) except for a run's last span (cut short by the run's end)
and the last span or two chosen in a row (cut or skipped at the budget): with
single-token words and 15% masking, span masking's mean chosen length is 3.7 words
at 512 tokens and 3.3 at 128 rather than 3.8 (n-grams: 1.63 and 1.58 for 1.64).
Words are the word_start table's words when one is given, else single tokens. Each
span is a random choice, so adjacent chosen spans can touch and read as one longer
masked stretch, as in both papers.

Of the chosen positions, each independently becomes [MASK] with probability
`mask_token_prob`, a uniformly drawn non-special id with `random_token_prob`, and
stays unchanged otherwise: per token, also within a whole word, as BERT's original
whole-word masking does.

Word boundaries come from `word_start_table(tokenizer)`; the Masker also treats every
token right after a special token (or padding, or the row start) as a word start.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterable

import numpy as np

from bertjax.data import mask_selection

STRATEGIES = ("token", "whole_word", "ngram", "span")
BUDGETS = ("candidates", "google")

# The word-start marker of each tokenizer kind: WordPiece marks continuations instead.
_WORD_START_PREFIX = {"sentencepiece": "\u2581", "bpe": "\u0120"}  # '▁', 'Ġ'
_CONTINUATION_PREFIX = "##"


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    """What to mask and how; validated on construction (ValueError naming the field)."""

    masked_lm_prob: float = 0.15  # share of a row's candidate tokens to predict
    max_predictions_per_seq: int = 20  # P: most positions predicted per row
    strategy: str = "token"  # token | whole_word | ngram | span
    max_ngram: int = 3  # ngram: lengths 1..n words with p(n) proportional to 1/n (ALBERT)
    span_geometric_p: float = 0.2  # span: lengths ~ Geometric(p) in words (SpanBERT)
    span_max_length: int = 10  # span: longest span in words (the geometric is truncated)
    mask_token_prob: float = 0.8  # of the chosen positions: replaced by [MASK]
    random_token_prob: float = 0.1  # replaced by a random non-special token; rest kept
    budget: str = "candidates"  # k from: candidates (non-special) | google (all tokens)

    def __post_init__(self) -> None:
        _check_prob("masked_lm_prob", self.masked_lm_prob, low_open=True)
        _check_int("max_predictions_per_seq", self.max_predictions_per_seq)
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"MaskingConfig.strategy={self.strategy!r} is unknown; expected one of "
                f"{', '.join(STRATEGIES)}"
            )
        _check_int("max_ngram", self.max_ngram)
        _check_prob("span_geometric_p", self.span_geometric_p, low_open=True)
        _check_int("span_max_length", self.span_max_length)
        _check_prob("mask_token_prob", self.mask_token_prob)
        _check_prob("random_token_prob", self.random_token_prob)
        if self.budget not in BUDGETS:
            raise ValueError(
                f"MaskingConfig.budget={self.budget!r} is unknown; expected one "
                f"of {', '.join(BUDGETS)}"
            )
        if self.mask_token_prob + self.random_token_prob > 1 + 1e-9:
            raise ValueError(
                f"MaskingConfig.mask_token_prob + random_token_prob = "
                f"{self.mask_token_prob} + {self.random_token_prob} exceeds 1"
            )


def _check_prob(name: str, value: object, low_open: bool = False) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and (0 < value <= 1 if low_open else 0 <= value <= 1):
        return
    bounds = "(0, 1]" if low_open else "[0, 1]"
    raise ValueError(f"MaskingConfig.{name}={value!r} must be a number in {bounds}")


def _check_int(name: str, value: object) -> None:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1:
        return
    raise ValueError(f"MaskingConfig.{name}={value!r} must be an integer >= 1")


def span_length_probs(cfg: MaskingConfig) -> np.ndarray:
    """p(n) for n = 1..N span lengths in words: [N] float64, summing to 1.

    ngram: p(n) proportional to 1/n, N = max_ngram (ALBERT). span: p(n) proportional to
    p (1-p)^(n-1), N = span_max_length (SpanBERT). token / whole_word: [1.0].
    """
    if cfg.strategy == "ngram":
        w = 1.0 / np.arange(1, cfg.max_ngram + 1)
    elif cfg.strategy == "span":
        p = cfg.span_geometric_p
        w = p * (1 - p) ** np.arange(cfg.span_max_length)
    else:
        w = np.ones(1)
    return w / w.sum()


class Masker:
    """Masks padded batches of token ids; see the module docstring for the semantics.

    Deterministic: the same inputs and the same generator state give the same output.
    """

    def __init__(
        self,
        cfg: MaskingConfig,
        vocab_size: int,
        mask_id: int,
        special_ids: Iterable[int],
        word_start: np.ndarray | None = None,
    ) -> None:
        """
        Args:
          cfg: the masking settings.
          vocab_size: number of ids; inputs must lie in [0, vocab_size).
          mask_id: the [MASK] id. It is never chosen nor drawn as a random replacement,
            as if it were in `special_ids`.
          special_ids: ids never to mask or draw ([CLS], [SEP], [PAD], [UNK], ...).
          word_start: [vocab_size] bool, True for tokens that begin a word (see
            `word_start_table`); needed by whole_word, used by ngram and span when given.
        """
        if not isinstance(cfg, MaskingConfig):
            raise TypeError(f"cfg must be a MaskingConfig, got {type(cfg).__name__}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral):
            raise ValueError(f"vocab_size={vocab_size!r} must be a positive integer")
        if vocab_size < 1:
            raise ValueError(f"vocab_size={vocab_size} must be a positive integer")
        vocab_size = int(vocab_size)
        if not 0 <= mask_id < vocab_size:
            raise ValueError(f"mask_id={mask_id} is outside the vocabulary [0, {vocab_size})")
        special = np.zeros(vocab_size, dtype=bool)
        ids = np.fromiter((int(i) for i in special_ids), dtype=np.int64)
        bad = ids[(ids < 0) | (ids >= vocab_size)]
        if bad.size:
            raise ValueError(
                f"special_ids holds {bad[0]}, outside the vocabulary [0, {vocab_size})"
            )
        special[ids] = True
        special[mask_id] = True
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.mask_id = int(mask_id)
        self._special = special  # [V] bool
        self._replacements = np.flatnonzero(~special).astype(np.int32)  # random-token pool
        if self._replacements.size == 0 and cfg.random_token_prob > 0:
            raise ValueError(
                "every id is special, so there is no token to draw for random_token_prob > 0"
            )
        if word_start is not None:
            word_start = np.asarray(word_start)
            if word_start.shape != (vocab_size,) or word_start.dtype != np.bool_:
                raise ValueError(
                    f"word_start must be a bool array of shape ({vocab_size},), got "
                    f"{word_start.dtype} {word_start.shape}"
                )
            word_start = word_start | special
        elif cfg.strategy == "whole_word":
            raise ValueError(
                "MaskingConfig.strategy='whole_word' needs a word_start table "
                "(word_start_table(tokenizer), or use masker_from_tokenizer)"
            )
        self._word_start = word_start  # [V] bool or None (every token is a word)
        self._length_cdf = np.cumsum(span_length_probs(cfg))  # [N]

    def __call__(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Masks a batch.

        Args:
          input_ids: [B, L] integer ids, padded with the pad id.
          attention_mask: [B, L], nonzero at real tokens, 0 at padding.
          rng: the generator; masking draws from it and nothing else.

        Returns:
          input_ids: [B, L] int32, the masked copy.
          masked_lm_positions: [B, P] int32, chosen positions ascending, then 0s.
          masked_lm_ids: [B, P] int32, the original ids there, then 0s.
          masked_lm_weights: [B, P] float32, 1.0 for chosen positions, then 0.0.
        """
        ids, _, selected = self._select(input_ids, attention_mask, rng, units=False)
        batch, _ = ids.shape
        num_predictions = self.cfg.max_predictions_per_seq
        rows, cols = np.nonzero(selected)  # row-major: positions ascend within a row
        counts = np.bincount(rows, minlength=batch)
        slots = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
        original = ids[rows, cols]

        # Independent per-position draws, as BERT's create_pretraining_data does.
        u = rng.random(rows.size)
        replaced = original.copy()
        replaced[u < self.cfg.mask_token_prob] = self.mask_id
        is_random = (u >= self.cfg.mask_token_prob) & (
            u < self.cfg.mask_token_prob + self.cfg.random_token_prob
        )
        n_random = int(is_random.sum())
        if n_random:
            draws = rng.integers(0, self._replacements.size, size=n_random)
            replaced[is_random] = self._replacements[draws]

        masked = ids.copy()
        masked[rows, cols] = replaced
        positions = np.zeros((batch, num_predictions), dtype=np.int32)
        labels = np.zeros((batch, num_predictions), dtype=np.int32)
        weights = np.zeros((batch, num_predictions), dtype=np.float32)
        positions[rows, slots] = cols
        labels[rows, slots] = original
        weights[rows, slots] = 1.0
        return {
            "input_ids": masked,
            "masked_lm_positions": positions,
            "masked_lm_ids": labels,
            "masked_lm_weights": weights,
        }

    def select(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """The positions `__call__` would choose, and the units they were chosen in.

        `__call__` is `select` followed by the 80/10/10 replacement on the same `rng`.

        Returns:
          selected: [B, L] bool, the chosen positions.
          units: [B, L] int32, per row the number of the masking unit (token, word or
            span, counted from 0 in position order) of each candidate position, -1 at
            non-candidates. A chosen unit is chosen with all its positions, except that
            ngram and span may cut a row's last chosen span to a prefix of its words.
        """
        _, units, selected = self._select(input_ids, attention_mask, rng, units=True)
        return selected, units

    # ------------------------------------------------------------------ selection

    def _check_inputs(
        self, input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(input_ids)
        mask = np.asarray(attention_mask)
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise ValueError(
                f"input_ids and attention_mask must both be [batch, length]; got shapes "
                f"{ids.shape} and {mask.shape}"
            )
        if ids.dtype.kind not in "iu":
            raise ValueError(f"input_ids must hold integers, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            bad = ids[(ids < 0) | (ids >= self.vocab_size)][0]
            raise ValueError(
                f"input_ids holds {bad}, outside the vocabulary [0, {self.vocab_size})"
            )
        return ids.astype(np.int32, copy=False), mask != 0

    def _select(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        rng: np.random.Generator,
        units: bool,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(ids [B, L] int32, units [B, L] int32 or None, selected [B, L] bool)."""
        ids, real = self._check_inputs(input_ids, attention_mask)
        cand = real & ~self._special[ids]  # [B, L]
        n_cand = cand.sum(axis=1)
        n = real.sum(axis=1) if self.cfg.budget == "google" else n_cand
        budget = np.minimum(
            self.cfg.max_predictions_per_seq,
            np.maximum(1, np.rint(n * self.cfg.masked_lm_prob).astype(np.int64)),
        )
        budget = np.minimum(budget, n_cand)  # [B]; 0 without candidates
        if ids.size == 0:
            empty = np.full(ids.shape, -1, dtype=np.int32)
            return ids, empty if units else None, np.zeros(ids.shape, dtype=bool)
        if self.cfg.strategy == "token":
            selected = mask_selection.choose_tokens(cand, budget, rng)
            unit_start = cand
        else:
            # A candidate starts a run after a non-candidate (special, padding, row start).
            run_start = cand.copy()
            run_start[:, 1:] &= ~cand[:, :-1]
            if self._word_start is None:
                word_start = cand
            else:
                word_start = cand & (self._word_start[ids] | run_start)
            if self.cfg.strategy == "whole_word":
                unit_start = word_start
                selected = mask_selection.choose_units(cand, unit_start, budget, rng)
            else:
                unit_start = mask_selection.span_starts(
                    word_start, run_start, self._length_cdf, rng
                )
                selected = mask_selection.choose_units(cand, unit_start, budget, rng, word_start)
        if not units:
            return ids, None, selected
        unit_ids = np.where(cand, np.cumsum(unit_start, axis=1, dtype=np.int32) - 1, -1)
        return ids, unit_ids.astype(np.int32), selected


def word_start_table(tokenizer) -> np.ndarray:
    """[vocab_size] bool: True for ids whose token begins a word.

    WordPiece: tokens not starting with '##'; SentencePiece: tokens starting with '▁';
    byte-level BPE: tokens starting with 'Ġ'. Special tokens, and ids with no token,
    are True (the Masker also starts a word right after every special token).
    """
    kind = tokenizer.kind
    if kind not in ("wordpiece", *_WORD_START_PREFIX):
        raise ValueError(f"no word-start rule for tokenizer kind {kind!r}")
    table = np.ones(tokenizer.vocab_size, dtype=bool)
    for i in range(tokenizer.vocab_size):
        try:
            token = tokenizer.id_to_token(i)
        except IndexError:
            continue
        if token is None:
            continue
        if kind == "wordpiece":
            table[i] = not token.startswith(_CONTINUATION_PREFIX)
        else:
            table[i] = token.startswith(_WORD_START_PREFIX[kind])
    special = [i for i in tokenizer.special_ids() if i is not None and 0 <= i < table.size]
    table[special] = True
    return table


def masker_from_tokenizer(tokenizer, cfg: MaskingConfig) -> Masker:
    """A Masker with the tokenizer's vocabulary size, [MASK] id, special ids and, for
    whole_word / ngram / span, its word-start table (n-grams and spans count words)."""
    word_start = None if cfg.strategy == "token" else word_start_table(tokenizer)
    special = [i for i in tokenizer.special_ids() if i is not None]
    return Masker(cfg, tokenizer.vocab_size, tokenizer.mask_id, special, word_start)
