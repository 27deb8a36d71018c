"""bertjax.data.instances: NSP / SOP pairs and RoBERTa / MLM packing.

The references are independent of the code under test: every document is tokenized
here sentence by sentence with `Tokenizer.encode`, and each instance's ids must equal
[CLS] + reference tokens of the ranges it claims (`Instance.spans`) + [SEP] ...; the
properties (labels, order, document of origin, separators) are then checked on those
verified ranges. Google's token-by-token truncate_seq_pair is re-implemented here as
the reference for ours.
"""

from __future__ import annotations

import numpy as np
import pytest

from bertjax.data import instances as inst
from bertjax.data import tokenize_documents as tokenize_lib
from bertjax.data.tokenizers import train_wordpiece

MAX_LEN = 48


def _corpus(seed: int, n_docs: int, max_sentences: int = 12) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(400)]

    def sentence() -> str:
        return " ".join(rng.choice(words, rng.integers(3, 14))) + "."

    return [[sentence() for _ in range(rng.integers(1, max_sentences))] for _ in range(n_docs)]


@pytest.fixture(scope="module")
def corpus() -> list[list[str]]:
    return _corpus(0, 300)


@pytest.fixture(scope="module")
def tok(corpus):
    return train_wordpiece([s for d in corpus for s in d], vocab_size=600)


def _instances(
    tokenizer,
    documents,
    kind: str,
    *,
    max_seq_length: int,
    rng: np.random.Generator,
    short_seq_prob: float = 0.1,
    stats: inst.InstanceStats | None = None,
    shuffle: bool = True,
    single_sentence: str = "split",
) -> list[inst.Instance]:
    """Instances as a shard builds them (shards.process_chunk): `tokenize_documents`,
    then `create_instances` with the tokenizer's [CLS]/[SEP]."""
    stats = stats if stats is not None else inst.InstanceStats()
    docs = tokenize_lib.tokenize_documents(
        tokenizer, documents, inst.segment_budget(kind, max_seq_length), stats
    )
    return inst.create_instances(
        docs,
        kind,
        max_seq_length=max_seq_length,
        cls_id=tokenizer.cls_id,
        sep_id=tokenizer.sep_id,
        rng=rng,
        short_seq_prob=short_seq_prob,
        stats=stats,
        shuffle=shuffle,
        single_sentence=single_sentence,
    )


def _reference(
    tok, docs: list[list[str]], budget: int = 10**9
) -> tuple[list[np.ndarray], list[set[int]]]:
    """(per document: all tokens, per document: the offsets where sentences, or pieces
    of sentences longer than `budget` tokens, end)."""
    tokens, ends = [], []
    for doc in docs:
        pieces = [tok.encode(s, add_special_tokens=False) for s in doc]
        tokens.append(np.array([t for p in pieces for t in p], np.int64))
        cuts, pos = {0}, 0
        for p in pieces:
            cuts.update(range(pos + budget, pos + len(p), budget))
            pos += len(p)
            cuts.add(pos)
        ends.append(cuts)
    return tokens, ends


def _check_pair(x: inst.Instance, tok, ref: list[np.ndarray], max_len: int) -> None:
    (da, a0, a1), (db, b0, b1) = x.spans
    assert a1 > a0 and b1 > b0
    want = [tok.cls_id, *ref[da][a0:a1], tok.sep_id, *ref[db][b0:b1], tok.sep_id]
    np.testing.assert_array_equal(x.input_ids, want)
    la = a1 - a0
    np.testing.assert_array_equal(x.token_type_ids, [0] * (la + 2) + [1] * (b1 - b0 + 1))
    assert len(x.input_ids) <= max_len
    assert x.input_ids.dtype == np.int32 and x.token_type_ids.dtype == np.int32


def _binomial_ok(k: int, n: int, p: float = 0.5, sigmas: float = 4.0) -> bool:
    return abs(k - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


def test_nsp_labels_balanced_random_next_from_another_document(tok, corpus):
    ref, _ = _reference(tok, corpus)
    stats = inst.InstanceStats()
    out = _instances(
        tok, corpus, "nsp", max_seq_length=MAX_LEN, rng=np.random.default_rng(1), stats=stats
    )
    labels = np.array([x.pair_label for x in out])
    assert len(out) > 800 and set(labels.tolist()) == {0, 1}
    assert _binomial_ok(int(labels.sum()), len(out)), labels.mean()
    for x in out:
        _check_pair(x, tok, ref, MAX_LEN)
        (da, _, a1), (db, b0, _) = x.spans
        if x.pair_label == 1:
            assert db != da  # never the same document
        else:
            assert db == da and b0 >= a1  # the actual next text, after A
    assert stats.random_next == labels.sum() and stats.actual_next == len(out) - labels.sum()
    assert stats.nsp_random_unavailable == 0
    # short_seq_prob: some documents use a shorter target; most pairs are near full.
    lengths = np.array([len(x.input_ids) for x in out])
    assert (lengths == MAX_LEN).mean() > 0.5 and (lengths < MAX_LEN // 2).any()


def test_nsp_puts_back_the_sentences_a_random_next_displaced(tok, corpus):
    """Without the put-back, a random next loses the rest of its chunk (about a
    quarter of the text); with it, every own-document token is used once except
    those truncated."""
    ref, _ = _reference(tok, corpus)
    stats = inst.InstanceStats()
    out = _instances(
        tok,
        corpus,
        "nsp",
        max_seq_length=128,
        rng=np.random.default_rng(2),
        short_seq_prob=0.0,
        stats=stats,
    )
    used = [np.zeros(len(t), int) for t in ref]
    for x in out:
        (da, a0, a1), (db, b0, b1) = x.spans
        used[da][a0:a1] += 1
        if x.pair_label == 0:
            used[db][b0:b1] += 1
    allused = np.concatenate(used)
    assert allused.max() == 1  # no own-document token twice
    assert allused.mean() > 0.93, allused.mean()


def test_nsp_one_document_corpus_falls_back_to_actual_next(tok, corpus):
    doc = [s for d in corpus[:5] for s in d]
    ref, _ = _reference(tok, [doc])
    stats = inst.InstanceStats()
    out = _instances(
        tok, [doc], "nsp", max_seq_length=MAX_LEN, rng=np.random.default_rng(3), stats=stats
    )
    assert out and all(x.pair_label == 0 for x in out)
    assert stats.nsp_random_unavailable > 0
    assert stats.nsp_random_unavailable + stats.actual_next >= len(out)
    for x in out:
        _check_pair(x, tok, ref, MAX_LEN)


def test_sop_swaps_exactly_when_label_is_1(tok, corpus):
    ref, _ = _reference(tok, corpus)
    stats = inst.InstanceStats()
    out = _instances(
        tok, corpus, "sop", max_seq_length=MAX_LEN, rng=np.random.default_rng(4), stats=stats
    )
    labels = np.array([x.pair_label for x in out])
    assert _binomial_ok(int(labels.sum()), len(out)) and stats.swapped == labels.sum()
    for x in out:
        _check_pair(x, tok, ref, MAX_LEN)
        (d0, s0, e0), (d1, s1, e1) = x.spans
        assert d0 == d1  # one document, always
        if x.pair_label == 0:
            assert e0 <= s1  # in order: first segment earlier in the document
        else:
            assert e1 <= s0  # swapped


def _check_packed(out, tok, ref, sentence_ends, max_len, cross: bool) -> None:
    for x in out:
        want = [tok.cls_id]
        for k, (d, s, e) in enumerate(x.spans):
            if k:
                want.append(tok.sep_id)  # the separator between documents
            assert s in sentence_ends[d] and e in sentence_ends[d]  # whole sentences
            want += ref[d][s:e].tolist()
        want.append(tok.sep_id)
        np.testing.assert_array_equal(x.input_ids, want)
        assert not x.token_type_ids.any() and x.pair_label == -1
        assert len(x.input_ids) <= max_len
        docs = [d for d, _, _ in x.spans]
        assert len(set(docs)) == len(docs)  # one run per document
        if not cross:
            assert len(docs) == 1
    # In creation order the instances hold the whole corpus exactly once, in order.
    runs = [(d, s, e) for x in out for d, s, e in x.spans]
    got = np.concatenate([ref[d][s:e] for d, s, e in runs])
    np.testing.assert_array_equal(got, np.concatenate(ref))


def test_full_sentences_cross_documents_with_a_separator(tok, corpus):
    ref, ends = _reference(tok, corpus, budget=MAX_LEN - 2)
    out = _instances(
        tok,
        corpus,
        "full_sentences",
        max_seq_length=MAX_LEN,
        rng=np.random.default_rng(5),
        shuffle=False,
    )
    _check_packed(out, tok, ref, ends, MAX_LEN, cross=True)
    assert sum(len(x.spans) > 1 for x in out) > 0.05 * len(out)  # many cross
    # Packing is greedy: the next sentence (plus a separator) did not fit.
    flat = [(d, s, e) for d, e_set in enumerate(ends) for s, e in _sentences(e_set)]
    nxt = {(d, e): following for (d, _, e), following in zip(flat, flat[1:], strict=False)}
    for x in out[:-1]:
        d, _, e = x.spans[-1]
        d2, s2, e2 = nxt[(d, e)] if (d, e) in nxt else (None, None, None)
        if d2 is not None:
            assert len(x.input_ids) + (e2 - s2) + (d2 != d) > MAX_LEN


def _sentences(end_set: set[int]) -> list[tuple[int, int]]:
    e = sorted(end_set)
    return list(zip(e[:-1], e[1:], strict=True))


def test_doc_sentences_never_cross_a_document(tok, corpus):
    ref, ends = _reference(tok, corpus, budget=MAX_LEN - 2)
    out = _instances(
        tok,
        corpus,
        "doc_sentences",
        max_seq_length=MAX_LEN,
        rng=np.random.default_rng(6),
        shuffle=False,
    )
    _check_packed(out, tok, ref, ends, MAX_LEN, cross=False)
    mlm = _instances(
        tok, corpus, "mlm", max_seq_length=MAX_LEN, rng=np.random.default_rng(6), shuffle=False
    )
    assert len(mlm) == len(out)
    for a, b in zip(mlm, out, strict=True):
        np.testing.assert_array_equal(a.input_ids, b.input_ids)


def _google_truncate(a: list, b: list, max_num_tokens: int, coins) -> None:
    while len(a) + len(b) > max_num_tokens:
        trunc = a if len(a) > len(b) else b
        if next(coins):
            del trunc[0]
        else:
            trunc.pop()


def test_truncate_seq_pair_matches_googles_lengths_and_sides():
    rng = np.random.default_rng(7)
    for _ in range(2000):
        la, lb = (int(v) for v in rng.integers(1, 60, 2))
        m = int(rng.integers(2, 90))
        a, b = list(range(la)), list(range(100, 100 + lb))
        _google_truncate(a, b, m, iter(rng.random(1000) < 0.5))
        (a0, a1), (b0, b1) = inst.truncate_seq_pair((0, la), (100, 100 + lb), m, rng)
        assert (a1 - a0, b1 - b0) == (len(a), len(b))
        assert a0 >= 0 and a1 <= la and b0 >= 100 and b1 <= 100 + lb
    # Front or back with probability 1/2 per token: the front share averages 1/2.
    fronts = [inst.truncate_seq_pair((0, 40), (0, 1), 11, rng)[0][0] for _ in range(4000)]
    assert abs(np.mean(fronts) - 15) < 0.3 and np.var(fronts) == pytest.approx(7.5, rel=0.15)


@pytest.mark.parametrize("kind", inst.INSTANCE_KINDS)
def test_bad_documents_and_huge_sentences(tok, corpus, kind, monkeypatch):
    monkeypatch.setattr(tokenize_lib, "MAX_SENTENCE_CHARS", 2000)
    huge = " ".join(["lorem"] * 3000)  # 18k characters, thousands of tokens
    docs = [
        [],
        ["", "   "],
        [huge],
        corpus[0],
        [None, 42, "fine words here."],  # type: ignore[list-item]
        "a bare string document.",
        [huge[:150], "x" * 40],
        corpus[1],
    ]
    stats = inst.InstanceStats()
    max_len = 16
    out = _instances(
        tok, docs, kind, max_seq_length=max_len, rng=np.random.default_rng(8), stats=stats
    )
    assert out
    for x in out:
        assert 3 <= len(x.input_ids) <= max_len
        assert x.input_ids.min() >= 0 and x.input_ids.max() < tok.vocab_size
        assert len(x.token_type_ids) == len(x.input_ids)
    assert stats.documents == len(docs) and stats.empty_documents == 2
    assert stats.invalid_sentences == 2 and stats.empty_sentences >= 2
    assert stats.long_sentences_split_chars == 1  # the 18k-character sentence
    assert stats.long_sentences_split_tokens >= 2
    assert stats.instances == len(out)


def test_deterministic_given_the_generator(tok, corpus):
    def run(seed: int) -> list:
        out = _instances(
            tok, corpus[:60], "nsp", max_seq_length=MAX_LEN, rng=np.random.default_rng(seed)
        )
        return [(x.input_ids.tolist(), x.pair_label) for x in out]

    assert run(9) == run(9)
    assert run(9) != run(10)


def test_settings_are_checked(tok):
    with pytest.raises(ValueError, match="instances='xyz'"):
        inst.check_kind("xyz", 64)
    with pytest.raises(ValueError, match="max_seq_length=4"):
        inst.check_kind("nsp", 4)
    with pytest.raises(ValueError, match="longer than"):
        docs = tokenize_lib.tokenize_documents(tok, [["one two three four five six seven."]], 100)
        inst.create_instances(
            docs,
            "nsp",
            max_seq_length=5,
            cls_id=tok.cls_id,
            sep_id=tok.sep_id,
            rng=np.random.default_rng(0),
        )


def test_byte_level_bpe_sentences_keep_their_word_start_space(corpus):
    """RoBERTa's byte-level BPE marks word starts with a leading space ('Ġ'): a
    sentence inside an instance starts a new word, as in the original text."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from bertjax.data.tokenizers import Tokenizer

    backend = RustTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([s for d in corpus for s in d], trainer)
    tok = Tokenizer(backend, kind="bpe")
    docs = corpus[:20]
    out = _instances(
        tok,
        docs,
        "full_sentences",
        max_seq_length=64,
        rng=np.random.default_rng(0),
        shuffle=False,
    )
    text = " ".join(s for d in docs for s in d)
    decoded = [tok.decode(x.input_ids, skip_special_tokens=True).strip() for x in out]
    assert all(piece in text for piece in decoded if len(piece) < 60)
    assert out[0].input_ids[0] == tok.cls_id and out[0].input_ids[-1] == tok.sep_id
    # Instances starting at a document's first sentence start with a word.
    starts = [tok.id_to_token(int(x.input_ids[1])) for x in out if x.spans[0][1] == 0]
    assert len(starts) >= 10 and all(t.startswith("\u0120") for t in starts)
    # Sentence ends are followed by a space inside an instance ("word. next").
    joined = " ".join(decoded)
    assert joined.count(". ") >= 0.9 * (joined.count(".") - len(decoded))


def _split_sentences(out: list[inst.Instance], ends: list[set[int]]) -> int:
    """Actual-next pairs whose A and B meet inside a sentence: a one-sentence chunk cut
    in two (pairs of whole sentences meet at a sentence end; truncation only moves the
    outer ends, or leaves a gap between A and B)."""
    return sum(
        1
        for x in out
        if x.pair_label == 0
        and x.spans[0][2] == x.spans[1][1]
        and x.spans[0][2] not in ends[x.spans[0][0]]
    )


def test_googles_nsp_rule_gives_every_one_sentence_chunk_a_random_next(tok, corpus):
    budget = inst.segment_budget("nsp", MAX_LEN)
    _, ends = _reference(tok, corpus, budget)
    runs = {}
    for rule in inst.SINGLE_SENTENCE:
        runs[rule] = _instances(
            tok,
            corpus,
            "nsp",
            max_seq_length=MAX_LEN,
            rng=np.random.default_rng(5),
            single_sentence=rule,
        )
    assert _split_sentences(runs["split"], ends) > 10
    assert _split_sentences(runs["random_next"], ends) == 0
    split_share = np.mean([x.pair_label for x in runs["split"]])
    google_share = np.mean([x.pair_label for x in runs["random_next"]])
    assert _binomial_ok(int(round(split_share * len(runs["split"]))), len(runs["split"]))
    assert google_share > split_share + 0.05
    # Documents of one short sentence each: every chunk is one sentence, so Google's
    # rule makes every label "random next"; ours keeps half "actual next".
    short = [[" ".join(d[0].split()[:6])] for d in corpus]
    for rule, want in (("random_next", 1.0), ("split", 0.5)):
        out = _instances(
            tok,
            short,
            "nsp",
            max_seq_length=MAX_LEN,
            rng=np.random.default_rng(6),
            single_sentence=rule,
        )
        labels = np.array([x.pair_label for x in out])
        if want == 1.0:
            assert len(out) == len(short) and labels.all()
        else:
            assert _binomial_ok(int(labels.sum()), len(labels))
    with pytest.raises(ValueError, match="nsp_single_sentence='always' must be one of"):
        _instances(
            tok,
            short,
            "nsp",
            max_seq_length=MAX_LEN,
            rng=np.random.default_rng(0),
            single_sentence="always",
        )
