"""bertjax.data.masking: statistics, invariants, whole words, span lengths, validation.

References are independent of the implementation: budgets computed with Python's
`round`, 80/10/10 shares and span-length laws written out by hand, and words rebuilt
from the `tokenizers` library's own word ids for WordPiece, byte-level BPE and
SentencePiece vocabularies trained here on the built-in demo corpus.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import clilib
import numpy as np
import pytest
import sentencepiece as spm
import tokenizers
from tokenizers import normalizers, pre_tokenizers, trainers

from bertjax.data import mask_selection
from bertjax.data.masking import (
    Masker,
    MaskingConfig,
    masker_from_tokenizer,
    word_start_table,
)
from bertjax.data.sources import demo_corpus
from bertjax.data.tokenizers import Tokenizer, load_tokenizer

# A BERT-sized synthetic vocabulary: ids 0 and 100-103 are special, as in BERT's.
V = 30522
PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103
SPECIAL = np.zeros(V, dtype=bool)
SPECIAL[[PAD, UNK, CLS, SEP, MASK]] = True
STRATEGIES = ("token", "whole_word", "ngram", "span")


def synthetic_batch(
    rng: np.random.Generator, batch: int, length: int, min_len: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """[CLS] A [SEP] B [SEP] rows of random lengths, padded; some [UNK]s inside."""
    ids = rng.integers(1, V, size=(batch, length)).astype(np.int32)
    ids[SPECIAL[ids]] = 7  # only the explicit specials below
    ids[rng.random((batch, length)) < 0.01] = UNK
    lens = rng.integers(min_len, length + 1, size=batch)
    col = np.arange(length)
    mids = rng.integers(1, lens - 1)
    ids[:, 0] = CLS
    ids[col == mids[:, None]] = SEP
    ids[col == (lens - 1)[:, None]] = SEP
    attention = (col < lens[:, None]).astype(np.int32)
    ids[attention == 0] = PAD
    return ids, attention


def random_word_table(seed: int = 0, share: float = 0.6) -> np.ndarray:
    table = np.random.default_rng(seed).random(V) < share
    table[SPECIAL] = True
    return table


def masker(strategy: str = "token", **kw) -> Masker:
    table = None if strategy == "token" else random_word_table()
    return Masker(MaskingConfig(strategy=strategy, **kw), V, MASK, np.flatnonzero(SPECIAL), table)


def selected_mask(out: dict[str, np.ndarray], length: int) -> np.ndarray:
    """[B, L] bool from masked_lm_positions / weights."""
    sel = np.zeros((out["masked_lm_positions"].shape[0], length), dtype=bool)
    rows, slots = np.nonzero(out["masked_lm_weights"])
    sel[rows, out["masked_lm_positions"][rows, slots]] = True
    return sel


# ------------------------------------------------------------------ statistics


def test_token_masking_statistics():
    rng = np.random.default_rng(0)
    ids, attention = synthetic_batch(rng, 8192, 128, min_len=30)
    cfg = MaskingConfig()
    out = masker()(ids, attention, np.random.default_rng(1))
    sel = selected_mask(out, 128)

    cand = (attention == 1) & ~SPECIAL[ids]
    n = cand.sum(axis=1)
    assert n.sum() >= 100_000
    expected = [min(cfg.max_predictions_per_seq, max(1, round(int(c) * 0.15))) for c in n]
    np.testing.assert_array_equal(sel.sum(axis=1), expected)
    assert abs(sel.sum() / n.sum() - 0.15) < 0.01

    original = ids[sel]
    new = out["input_ids"][sel]
    masked = new == MASK
    kept = new == original
    randomised = ~masked & ~kept
    total = sel.sum()
    assert abs(masked.sum() / total - 0.8) < 0.01
    assert abs(randomised.sum() / total - 0.1) < 0.01
    assert abs(kept.sum() / total - 0.1) < 0.01
    # Random replacements: never special, and spread over the whole vocabulary.
    drawn = new[randomised]
    assert not SPECIAL[drawn].any()
    non_special = np.flatnonzero(~SPECIAL)
    assert abs((drawn < V // 2).mean() - (non_special < V // 2).mean()) < 0.02
    assert (drawn < 100).any()  # ids below the special block are drawn too


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_output_invariants(strategy):
    rng = np.random.default_rng(2)
    ids, attention = synthetic_batch(rng, 512, 128)
    ids[:8, 1:] = PAD  # rows with no candidate at all
    attention[:8, 1:] = 0
    ids[8:16, 2:] = PAD  # rows with a single candidate
    attention[8:16, 2:] = 0
    ids[8:16, 1] = 5000
    before = ids.copy()
    out = masker(strategy)(ids, attention, np.random.default_rng(3))
    np.testing.assert_array_equal(ids, before)  # the input is not modified

    assert {k: (v.dtype, v.shape) for k, v in out.items()} == {
        "input_ids": (np.int32, (512, 128)),
        "masked_lm_positions": (np.int32, (512, 20)),
        "masked_lm_ids": (np.int32, (512, 20)),
        "masked_lm_weights": (np.float32, (512, 20)),
    }
    weights = out["masked_lm_weights"]
    count = weights.sum(axis=1).astype(int)
    # Real entries first, then padding entries of 0.
    np.testing.assert_array_equal(weights, np.arange(20) < count[:, None])
    pad = weights == 0
    assert (out["masked_lm_positions"][pad] == 0).all()
    assert (out["masked_lm_ids"][pad] == 0).all()
    pos = np.where(weights == 1, out["masked_lm_positions"], 10_000)
    assert (np.diff(pos, axis=1)[weights[:, 1:] == 1] > 0).all()  # strictly ascending

    sel = selected_mask(out, 128)
    assert not (sel & (attention == 0)).any(), "padding selected"
    assert not (sel & SPECIAL[ids]).any(), "special token selected"
    rows, slots = np.nonzero(weights)
    np.testing.assert_array_equal(
        out["masked_lm_ids"][rows, slots], ids[rows, out["masked_lm_positions"][rows, slots]]
    )
    np.testing.assert_array_equal(out["input_ids"][~sel], ids[~sel])
    assert not SPECIAL[out["input_ids"][sel & (out["input_ids"] != MASK)]].any()

    cand = ((attention == 1) & ~SPECIAL[ids]).sum(axis=1)
    budget = np.array([min(20, max(1, round(int(c) * 0.15))) if c else 0 for c in cand])
    assert (count <= budget).all()
    assert (count[:8] == 0).all() and (count[8:16] == 1).all()
    assert abs(count.sum() / budget.sum() - 1) < 0.05  # the budget is (nearly) used


def test_max_predictions_caps_and_masked_lm_prob_one():
    ids, attention = synthetic_batch(np.random.default_rng(4), 64, 128, min_len=100)
    out = masker(max_predictions_per_seq=3)(ids, attention, np.random.default_rng(0))
    assert (out["masked_lm_weights"].sum(axis=1) == 3).all()
    cfg = dict(
        masked_lm_prob=1.0, max_predictions_per_seq=128, mask_token_prob=1.0, random_token_prob=0.0
    )
    out = masker(**cfg)(ids, attention, np.random.default_rng(0))
    cand = (attention == 1) & ~SPECIAL[ids]
    np.testing.assert_array_equal(selected_mask(out, 128), cand)
    np.testing.assert_array_equal(out["input_ids"], np.where(cand, MASK, ids))


def test_empty_batch_and_int64_inputs():
    m = masker("ngram")
    out = m(np.zeros((0, 16), np.int64), np.zeros((0, 16), np.int64), np.random.default_rng(0))
    assert out["masked_lm_positions"].shape == (0, 20)
    ids, attention = synthetic_batch(np.random.default_rng(5), 4, 16)
    out = m(ids.astype(np.int64), attention.astype(bool), np.random.default_rng(0))
    assert out["input_ids"].dtype == np.int32


# ------------------------------------------------------------------ determinism


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_deterministic_for_the_same_generator_state(strategy):
    ids, attention = synthetic_batch(np.random.default_rng(6), 64, 128)
    m = masker(strategy)
    a = m(ids, attention, np.random.default_rng([7, 3]))
    b = m(ids, attention, np.random.default_rng([7, 3]))
    c = m(ids, attention, np.random.default_rng([7, 4]))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["masked_lm_positions"], c["masked_lm_positions"])
    # __call__ chooses what select chooses from the same state.
    sel, _ = m.select(ids, attention, np.random.default_rng([7, 3]))
    np.testing.assert_array_equal(selected_mask(a, 128), sel)


def test_greedy_fill_equals_the_sequential_scan():
    """The vectorised passes take exactly what Google's loop (skip what does not fit)
    and ALBERT's (cut what does not fit to its longest fitting prefix of words) take."""
    rng = np.random.default_rng(8)
    batch, n = 300, 40
    parts = rng.integers(1, 4, size=(batch, n, 3)) * (rng.random((batch, n, 3)) < 0.6)
    parts[:, :, 0] = rng.integers(1, 4, size=(batch, n))  # word lengths; a unit's words
    parts[rng.random((batch, n)) < 0.1] = 0  # no unit here
    lengths = parts.sum(axis=2)
    budget = rng.integers(0, 30, size=batch)

    def reference(cut: bool) -> np.ndarray:
        out = np.zeros((batch, n), dtype=int)
        for b in range(batch):
            left = budget[b]
            for j in range(n):
                if lengths[b, j] == 0:
                    continue
                if lengths[b, j] <= left:
                    out[b, j] = lengths[b, j]
                elif cut:
                    sums = np.cumsum(parts[b, j][parts[b, j] > 0])
                    out[b, j] = sums[sums <= left].max(initial=0)
                left -= out[b, j]
        return out

    def cut(rows, item, room):
        sums = np.cumsum(parts[rows, item], axis=1)
        return (sums * (sums <= room[:, None])).max(axis=1)

    assert (reference(True) != reference(False)).any()  # cuts happen
    np.testing.assert_array_equal(mask_selection.greedy_fill(lengths, budget), reference(False))
    np.testing.assert_array_equal(
        mask_selection.greedy_fill(lengths, budget, parts[:, :, 0], cut), reference(True)
    )


# ------------------------------------------------------------------ span lengths


def chosen_span_lengths(
    strategy: str, word_table: np.ndarray | None, seed: int, **kw
) -> np.ndarray:
    """Lengths in words of the spans chosen over 512-token [CLS] A [SEP] B [SEP] rows,
    after checking that every unit is a contiguous run of whole words inside one
    segment and that a chosen unit is chosen whole or, if cut, as a prefix of words."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, V, size=(1024, 512)).astype(np.int32)
    ids[:, [0, 256, 511]] = [CLS, SEP, SEP]
    attention = np.ones_like(ids)
    cfg = MaskingConfig(strategy=strategy, max_predictions_per_seq=80, **kw)
    m = Masker(cfg, V, MASK, np.flatnonzero(SPECIAL), word_table)
    sel, units = m.select(ids, attention, np.random.default_rng(seed + 1))

    starts = np.ones(ids.shape, bool) if word_table is None else word_table[ids].copy()
    starts[:, 1:] |= SPECIAL[ids[:, :-1]]  # a word starts after a special token
    special = SPECIAL[ids]
    assert (units[special] == -1).all() and (units[~special] >= 0).all()
    unit = units + np.arange(ids.shape[0])[:, None] * 1000  # unique over the batch
    col = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    real = ~special
    u, c, chosen, w = unit[real], col[real], sel[real], starts[real]  # row-major order
    same = u[1:] == u[:-1]
    # Contiguous: consecutive members of a unit are adjacent positions; units begin
    # at word starts; chosen positions of a unit are its first ones, cut before a word.
    assert (np.diff(c)[same] == 1).all(), "a unit is not contiguous"
    assert (np.diff(u) >= 0).all()
    assert w[np.r_[True, ~same]].all(), "a unit starts inside a word"
    assert not (chosen[1:] & ~chosen[:-1] & same).any(), "chosen part is not a prefix"
    assert w[1:][chosen[:-1] & ~chosen[1:] & same].all(), "a cut splits a word"
    words_chosen = np.bincount(u[chosen], weights=w[chosen])
    return words_chosen[np.unique(u[chosen])].astype(int)


@pytest.mark.parametrize("word_table", [None, "random"], ids=["tokens", "words"])
def test_ngram_lengths_follow_inverse_n(word_table):
    # Tolerances: the budget cuts a row's last span short (as ALBERT shortens the
    # n-gram that would exceed it), which moves ~1 point (tokens as words) to ~1.5
    # points (multi-token words) from long spans to p(1); the alternatives a bug
    # would give, uniform (1/3 each) or 1/n^2 (0.73, 0.18, 0.08), are far outside.
    table = None if word_table is None else random_word_table(1, share=0.7)
    lengths = chosen_span_lengths("ngram", table, seed=10, max_ngram=3)
    assert lengths.size > 30_000
    assert lengths.min() == 1 and lengths.max() == 3
    expected = np.array([1, 1 / 2, 1 / 3]) / (1 + 1 / 2 + 1 / 3)  # 0.545 0.273 0.182
    observed = np.bincount(lengths, minlength=4)[1:] / lengths.size
    np.testing.assert_allclose(observed, expected, atol=0.025)


def test_span_lengths_follow_truncated_geometric():
    lengths = chosen_span_lengths("span", None, seed=20, span_geometric_p=0.2, span_max_length=10)
    assert lengths.size > 15_000
    assert lengths.min() == 1 and lengths.max() == 10
    n = np.arange(1, 11)
    law = 0.2 * 0.8 ** (n - 1)
    law /= law.sum()  # SpanBERT's truncated, renormalised geometric; mean 3.80
    observed = np.bincount(lengths, minlength=11)[1:] / lengths.size
    np.testing.assert_allclose(observed, law, atol=0.025)
    # The budget cuts a row's last span, so the mean sits ~4% below 3.80 (1 point
    # more on p(1)); an untruncated geometric (mean 5.0) or one clipped at 10, with
    # the tail's mass on 10 (4.46), would be far off.
    assert abs(lengths.mean() / (law * n).sum() - 1) < 0.06


def test_span_length_parameters_are_used():
    short = chosen_span_lengths("span", None, seed=30, span_geometric_p=0.5, span_max_length=4)
    assert short.max() == 4
    law = 0.5 ** np.arange(1, 5)
    law /= law.sum()
    np.testing.assert_allclose(np.bincount(short, minlength=5)[1:] / short.size, law, atol=0.025)
    ones = chosen_span_lengths("ngram", None, seed=31, max_ngram=1)
    assert (ones == 1).all()


# ------------------------------------------------------------------ real tokenizers


def demo_texts(n_docs: int = 500) -> list[str]:
    """Whitespace-normalised documents of the demo corpus (real English prose)."""
    texts = []
    for doc in itertools.islice(demo_corpus(), n_docs):
        text = " ".join(doc) if isinstance(doc, list) else doc
        texts.append(" ".join(text.split()))
    return texts


def train_wordpiece(directory: Path, texts: list[str]) -> None:
    tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        texts,
        trainers.WordPieceTrainer(vocab_size=600, special_tokens=specials, show_progress=False),
    )
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    directory.mkdir(parents=True)
    (directory / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")


def train_bpe(directory: Path, texts: list[str]) -> None:
    tok = tokenizers.ByteLevelBPETokenizer()
    tok.train_from_iterator(
        texts,
        vocab_size=600,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    directory.mkdir(parents=True)
    tok.save_model(str(directory))


def train_sentencepiece(directory: Path, texts: list[str]) -> None:
    """ALBERT's layout: <pad>=0 <unk>=1 [CLS]=2 [SEP]=3 [MASK]=4."""
    directory.mkdir(parents=True)
    sentences = [s for t in texts for s in t.split(". ") if s]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_prefix=str(directory / "spiece"),
        model_type="unigram",
        vocab_size=600,
        hard_vocab_limit=False,
        pad_id=0,
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        control_symbols=["[CLS]", "[SEP]"],
        user_defined_symbols=["[MASK]"],
        minloglevel=2,
    )


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return demo_texts()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus) -> dict[str, Tokenizer]:
    root = tmp_path_factory.mktemp("masking_vocabs")
    train_wordpiece(root / "wordpiece", corpus)
    train_bpe(root / "bpe", corpus)
    train_sentencepiece(root / "sentencepiece", corpus)
    loaded = {
        kind: load_tokenizer(str(root / kind)) for kind in ("wordpiece", "bpe", "sentencepiece")
    }
    for kind, tok in loaded.items():
        assert tok.kind == kind
    return loaded


@pytest.fixture(scope="module")
def encoded(trained, corpus) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    return {kind: encoded_pairs(tok, corpus) for kind, tok in trained.items()}


def encoded_pairs(tok: Tokenizer, texts: list[str], length: int = 128):
    """Pairs of 20-45 word chunks encoded as [CLS] A [SEP] B [SEP] (or <s> A </s></s>
    B </s>), cut to `length` and padded.

    Returns (ids, attention_mask, pre_words, marker_words), all [B, L]: pre_words
    numbers each token's word as the `tokenizers` pre-tokenizer saw it (its
    word_ids; -1 for added tokens and padding); marker_words numbers words rebuilt
    from the token strings (see `marker_words`)."""
    rng = np.random.default_rng(0)
    words = " ".join(texts).split()
    ids, attention, pre_words = [], [], []
    at = 0
    while len(ids) < 256 and at + 100 < len(words):
        na, nb = rng.integers(20, 46, size=2)
        a, b = " ".join(words[at : at + na]), " ".join(words[at + na : at + na + nb])
        at += na + nb
        enc = tok.backend.encode(a, b)
        n = min(len(enc.ids), length)
        ids.append(enc.ids[:n] + [tok.pad_id] * (length - n))
        attention.append([1] * n + [0] * (length - n))
        keys = [
            -1 if w is None else s * 1000 + w
            for s, w in zip(enc.sequence_ids, enc.word_ids, strict=True)
        ]
        pre_words.append(keys[:n] + [-1] * (length - n))
    ids = np.array(ids, np.int32)
    return ids, np.array(attention, np.int32), np.array(pre_words), marker_words(tok, ids)


def marker_words(tok: Tokenizer, ids: np.ndarray) -> np.ndarray:
    """[B, L] word number per position from the token strings: a word starts at a token
    without '##' (WordPiece), with '▁' (SentencePiece) or 'Ġ' (byte-level BPE), at a
    special token and after one."""
    special = np.zeros(tok.vocab_size, bool)
    special[list(tok.special_ids())] = True
    strings = [tok.id_to_token(i) for i in range(tok.vocab_size)]
    if tok.kind == "wordpiece":
        begins = np.array([not t.startswith("##") for t in strings])
    else:
        marker = "\u2581" if tok.kind == "sentencepiece" else "\u0120"
        begins = np.array([t.startswith(marker) for t in strings])
    starts = begins[ids] | special[ids]
    starts[:, 1:] |= special[ids[:, :-1]]
    starts[:, 0] = True
    return np.cumsum(starts, axis=1)


def assert_all_or_none(selected: np.ndarray, words: np.ndarray, keep: np.ndarray) -> int:
    """Every word (same number in a row) with `keep` at all its positions is chosen
    whole or not at all; returns how many chosen words have several pieces."""
    flat = (words + np.arange(words.shape[0])[:, None] * (words.max() + 1)).ravel()
    size = np.bincount(flat)
    kept = np.bincount(flat, weights=keep.ravel())
    chosen = np.bincount(flat, weights=selected.ravel())
    check = (size > 0) & (kept == size)
    bad = check & (chosen != 0) & (chosen != size)
    assert not bad.any(), f"{bad.sum()} words split"
    return int((check & (size > 1) & (chosen == size)).sum())


@pytest.mark.parametrize("strategy", ["whole_word", "ngram", "span"])
@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "sentencepiece"])
def test_masking_never_splits_a_word(trained, encoded, kind, strategy):
    tok = trained[kind]
    ids, attention, pre_words, words = encoded[kind]
    masker = masker_from_tokenizer(tok, MaskingConfig(strategy=strategy))
    special = np.isin(ids, list(tok.special_ids()))
    for seed in range(3):  # several draws over the same rows
        out = masker(ids, attention, np.random.default_rng(seed))
        sel = selected_mask(out, ids.shape[1])
        assert not (sel & special).any() and not (sel & (attention == 0)).any()
        # Words as the tokenizer's pre-tokenizer made them: all pieces or none. Words
        # holding a special piece are left out (e.g. a SentencePiece word with an
        # <unk> inside: the piece after a special token starts a word, by contract).
        pieces = np.where(pre_words >= 0, pre_words, -1 - np.arange(ids.shape[1]))
        whole = assert_all_or_none(sel, pieces + ids.shape[1], ~special & (pre_words >= 0))
        assert whole > 50, "too few multi-piece words chosen to test the property"
        # Words from the token strings' markers (for byte-level BPE coarser than the
        # pre-tokenizer's: 'Ġword' + ',' is one word): all pieces or none.
        assert_all_or_none(sel, words, attention == 1)


def test_whole_word_uses_its_budget(trained, encoded):
    tok = trained["wordpiece"]
    ids, attention, _, _ = encoded["wordpiece"]
    out = masker_from_tokenizer(tok, MaskingConfig(strategy="whole_word"))(
        ids, attention, np.random.default_rng(0)
    )
    cand = ((attention == 1) & ~np.isin(ids, list(tok.special_ids()))).sum()
    assert abs(out["masked_lm_weights"].sum() / cand - 0.15) < 0.015


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "sentencepiece"])
def test_word_start_table(trained, kind):
    tok = trained[kind]
    table = word_start_table(tok)
    assert table.shape == (tok.vocab_size,) and table.dtype == np.bool_
    assert table[list(tok.special_ids())].all()
    marker = {"wordpiece": "##", "bpe": "\u0120", "sentencepiece": "\u2581"}[kind]
    for i in range(tok.vocab_size):
        token = tok.id_to_token(i)
        if i in tok.special_ids():
            continue
        has = token.startswith(marker)
        assert table[i] == (not has if kind == "wordpiece" else has), token
    assert 0 < table.mean() < 1


def test_masker_from_tokenizer(trained):
    tok = trained["sentencepiece"]
    m = masker_from_tokenizer(tok, MaskingConfig())
    assert (m.vocab_size, m.mask_id) == (tok.vocab_size, tok.mask_id)
    ids = np.array([tok.encode("A short sentence about masking tokens.")], np.int32)
    out = masker_from_tokenizer(
        tok,
        MaskingConfig(
            masked_lm_prob=1.0, random_token_prob=0, mask_token_prob=1, max_predictions_per_seq=64
        ),
    )(ids, np.ones_like(ids), np.random.default_rng(0))
    special = np.isin(ids, list(tok.special_ids()))
    np.testing.assert_array_equal(out["input_ids"], np.where(special, ids, tok.mask_id))


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "field, value",
    [
        ("masked_lm_prob", 0.0),
        ("masked_lm_prob", 1.5),
        ("masked_lm_prob", "0.15"),
        ("max_predictions_per_seq", 0),
        ("max_predictions_per_seq", 2.5),
        ("max_predictions_per_seq", True),
        ("strategy", "wholeword"),
        ("max_ngram", 0),
        ("span_geometric_p", 0.0),
        ("span_geometric_p", 1.2),
        ("span_max_length", -1),
        ("mask_token_prob", -0.1),
        ("mask_token_prob", 0.95),  # + random_token_prob 0.1 > 1
        ("random_token_prob", 1.1),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field) as e:
        MaskingConfig(**{field: value})
    assert "\n" not in str(e.value)


def test_masker_validation():
    specials = np.flatnonzero(SPECIAL)
    with pytest.raises(ValueError, match="whole_word.*word_start"):
        Masker(MaskingConfig(strategy="whole_word"), V, MASK, specials)
    with pytest.raises(ValueError, match="word_start"):
        Masker(MaskingConfig(strategy="ngram"), V, MASK, specials, np.ones(V - 1, bool))
    with pytest.raises(ValueError, match="mask_id"):
        Masker(MaskingConfig(), V, V, specials)
    with pytest.raises(ValueError, match="special_ids"):
        Masker(MaskingConfig(), V, MASK, [V + 5])
    m = masker()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m(np.full((2, 4), V), np.ones((2, 4)), rng)
    with pytest.raises(ValueError, match="shapes"):
        m(np.ones((2, 4), np.int32), np.ones((2, 5)), rng)
    with pytest.raises(ValueError, match="shapes"):
        m(np.ones(4, np.int32), np.ones(4), rng)


def test_module_imports_only_numpy():
    code = (
        "import sys, bertjax.data.masking; "
        "bad = {'tensorflow', 'jax', 'transformers', 'torch', 'tokenizers'} & set(sys.modules); "
        "assert not bad, bad"
    )
    clilib.python("-c", code, ok=True)


@pytest.mark.parametrize("budget", ["candidates", "google"])
def test_the_budget_counts_candidates_or_every_token_as_google(budget):
    """google: round(0.15 x the row's real length, [CLS] and [SEP]s included), as
    create_pretraining_data.py's num_to_predict; candidates: of the non-special tokens.
    Token masking spends the whole budget (capped at 20 and at the candidates)."""
    ids, attention = synthetic_batch(np.random.default_rng(7), 256, 128)
    out = masker(budget=budget)(ids, attention, np.random.default_rng(1))
    count = out["masked_lm_weights"].sum(axis=1).astype(int)
    real = attention.sum(axis=1)
    cand = ((attention == 1) & ~SPECIAL[ids]).sum(axis=1)
    n = real if budget == "google" else cand
    want = [min(20, max(1, round(int(k) * 0.15)), int(c)) for k, c in zip(n, cand, strict=True)]
    np.testing.assert_array_equal(count, want)
    if budget == "google":  # [CLS] and two [SEP]s: one more at some lengths
        assert (count >= [min(20, max(1, round(int(c) * 0.15))) for c in cand]).all()
        assert (count > [min(20, max(1, round(int(c) * 0.15))) for c in cand]).any()


def test_an_unknown_budget_is_named():
    with pytest.raises(ValueError, match="budget='all' is unknown"):
        MaskingConfig(budget="all")


def _pretrain_module():
    from bertjax import configfile

    return configfile.load_module(
        str(Path(__file__).parents[1] / "configs" / "pretrain.py"), "test_masking"
    )


def test_config_masking_has_exactly_the_masking_config_fields():
    """config.masking of every preset carries MaskingConfig's field names, nothing else
    (max_predictions_per_seq is config.max_predictions_per_seq), and the family recipes'
    masking comes through: BERT's google budget, ALBERT's n-grams, ModernBERT's 30%."""
    from bertjax.data.from_config import masking_config
    from bertjax.models.registry import PRESETS

    want = {f.name for f in dataclasses.fields(MaskingConfig)} - {"max_predictions_per_seq"}
    pretrain = _pretrain_module()
    for preset in sorted(PRESETS):
        for knobs in ("", ",runlocal"):
            c = pretrain.get_config(preset + knobs)
            assert set(c.masking) == want, preset + knobs
            assert masking_config(c).max_predictions_per_seq == c.max_predictions_per_seq
    got = {p: masking_config(pretrain.get_config(p)) for p in ("bert_base", "albert_base")}
    assert (got["bert_base"].strategy, got["bert_base"].budget) == ("token", "google")
    assert (got["albert_base"].strategy, got["albert_base"].budget) == ("ngram", "google")
    assert masking_config(pretrain.get_config("modernbert_base")).masked_lm_prob == 0.3
    assert masking_config(pretrain.get_config("roberta_base")) == MaskingConfig(
        max_predictions_per_seq=20
    )  # RoBERTa: BERT's masking, the candidates budget


def test_a_new_masking_field_needs_nothing_but_masking_config(monkeypatch):
    """A field added to MaskingConfig is a config.masking key with its default, which
    --config.masking.FIELD and a phase's `masking` dict override, and which reaches the
    MaskingConfig the pipeline gets, with no edit anywhere else."""
    from bertjax import configfile
    from bertjax.data import masking
    from bertjax.data.from_config import masking_config
    from bertjax.tasks import plan

    @dataclasses.dataclass(frozen=True)
    class WithNewField(MaskingConfig):
        span_min_length: int = 1  # a new strategy's parameter

    monkeypatch.setattr(masking, "MaskingConfig", WithNewField)
    c = _pretrain_module().get_config("bert_tiny,runlocal")
    assert c.masking.span_min_length == 1
    configfile.set_key(c, "masking.span_min_length", "2", "test")
    assert masking_config(c) == WithNewField(
        budget="google", max_predictions_per_seq=10, span_min_length=2
    )  # the BERT recipe's budget, runlocal's 10 predictions
    c.train.steps = 10
    c.phases = (
        dict(share=0.5),
        dict(share=0.5, masking=dict(span_min_length=3, strategy="span", span_max_length=4)),
    )
    first, second = plan.plan_phases(c)
    assert plan.masking(c, first, 10).span_min_length == 2
    assert plan.masking(c, second, 10) == WithNewField(
        budget="google",
        max_predictions_per_seq=10,
        span_min_length=3,
        strategy="span",
        span_max_length=4,
    )
