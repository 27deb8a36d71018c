"""Built-in demo tasks, one per fine-tuning kind, made from the demo corpus: the whole
pretrain -> fine-tune -> score loop runs offline, on a CPU, in minutes.

Each task is about how the sentences and words of a document go together (the demo
corpus, bertjax/data/demo_corpus.py: prose from the installed Python docstrings, which the
quickstart pretrains on), so no single token and no length gives the answer:

  demo_next      classification (the glue task) of a pair: two consecutive sentences of
                 a document, then either the sentence that follows them ("next") or one
                 from another document of about the same length ("random")? Half each;
                 the majority baseline is 50% accuracy.
  demo_boundary  tagging (the ner task): three consecutive sentences of a document,
                 lower-cased and with their final punctuation removed, as one run of
                 words; the first words of the second and third sentences are tagged
                 B-START. The all-O baseline scores entity F1 0.
  demo_intruder  extractive QA (the squad task, v1.1): "which word does not belong?"
                 over two consecutive sentences of a document in which one content
                 word (`content_words`: lower-case, four letters or more, not among the
                 100 most frequent) was replaced by a content word of another document
                 of about the same corpus frequency; the answer is that word. Which
                 words are content words is visible from the words alone: answering
                 the first content word scores ~25 exact match, and any one word's
                 chance of being the replacement is about the same.

Documents are split by position in the corpus (every tenth to validation, every tenth
after it to test), so the splits share no sentence; each example is seeded by (task,
split, index), so the examples are the same on every machine that has the same corpus
(the same Python and requirements.txt). Sizes: `SIZES`. The quickstart pretrains on the
whole demo corpus, these documents' text included (as BERT pretrains on the Wikipedia
that SQuAD's paragraphs come from); the tasks' labels are never in it.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import re
from typing import Any

import numpy as np

TASKS = ("demo_next", "demo_boundary", "demo_intruder")
SIZES = {"train": 4000, "validation": 500, "test": 500}
NEXT_LABELS = ("next", "random")
BOUNDARY_TAG = "START"
QUESTION = "which word does not belong?"
SENTENCE_WORDS = (5, 16)  # words per sentence, [min, max)
CONTENT_WORD = re.compile(r"[a-z]{4,}")  # demo_intruder's words ...
COMMON_WORDS = 100  # ... less this many most frequent (content_words)


def _split_of(doc: int) -> str:
    return "validation" if doc % 10 == 3 else "test" if doc % 10 == 7 else "train"


@functools.lru_cache(maxsize=1)
def documents() -> dict[str, tuple[tuple[tuple[str, ...], ...], ...]]:
    """By split: runs of at least three consecutive sentences of SENTENCE_WORDS words
    (word tuples), one run per demo-corpus document that has one, distinct sentences."""
    from bertjax.data.sources import DemoSource

    out: dict[str, list[tuple[tuple[str, ...], ...]]] = {s: [] for s in SIZES}
    seen: set[tuple[str, ...]] = set()
    k = 0
    for doc in DemoSource().documents():
        run: list[tuple[str, ...]] = []
        best: list[tuple[str, ...]] = []
        for sentence in doc:
            words = tuple(sentence.split())
            if SENTENCE_WORDS[0] <= len(words) < SENTENCE_WORDS[1] and words not in seen:
                run.append(words)
                best = max(best, run, key=len)
            else:
                run = []
        if len(best) < 3:
            continue
        seen.update(best)
        out[_split_of(k)].append(tuple(best))
        k += 1
    return {s: tuple(v) for s, v in out.items()}


def _rng(task: str, split: str, index: int) -> np.random.Generator:
    digest = hashlib.blake2b(f"{task}/{split}/{index}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def _count(split: str) -> int:
    docs = documents()[split]
    if len(docs) < 2:
        raise ValueError(
            f"the demo corpus has {len(docs)} documents for the {split} split of the demo tasks"
        )
    return SIZES[split]


def _other_sentence(split: str, doc: int, length: int, rng: np.random.Generator) -> tuple[str, ...]:
    """A sentence of another document of `split`, of about `length` words (the closest
    of 16 drawn)."""
    docs = documents()[split]
    candidates = []
    for _ in range(16):
        d = int(rng.integers(len(docs) - 1))
        d += d >= doc  # not `doc`
        candidates.append(docs[d][int(rng.integers(len(docs[d])))])
    return min(candidates, key=lambda s: abs(len(s) - length))


def next_examples(split: str) -> list[tuple[str, str, int]]:
    """demo_next: (two sentences, a third, label index into NEXT_LABELS)."""
    docs, out = documents()[split], []
    for n in range(_count(split)):
        rng = _rng("demo_next", split, n)
        d = n % len(docs)
        i = int(rng.integers(len(docs[d]) - 2))
        first, second = docs[d][i] + docs[d][i + 1], docs[d][i + 2]
        label = n % 2
        if label:
            second = _other_sentence(split, d, len(second), rng)
        out.append((" ".join(first), " ".join(second), label))
    return out


def _bare(words: tuple[str, ...]) -> list[str]:
    """Lower-cased words without the sentence's final punctuation."""
    out = [w.lower() for w in words]
    out[-1] = out[-1].rstrip(".?!:;") or out[-1]
    return out


def boundary_examples(split: str) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """demo_boundary: (words, IOB2 tags)."""
    docs, out = documents()[split], []
    for n in range(_count(split)):
        rng = _rng("demo_boundary", split, n)
        d = n % len(docs)
        i = int(rng.integers(len(docs[d]) - 2))
        words: list[str] = []
        tags: list[str] = []
        for j, sentence in enumerate(docs[d][i : i + 3]):
            bare = _bare(sentence)
            words += bare
            tags += [f"B-{BOUNDARY_TAG}" if j else "O"] + ["O"] * (len(bare) - 1)
        out.append((tuple(words), tuple(tags)))
    return out


@functools.lru_cache(maxsize=1)
def content_words() -> dict[str, int]:
    """The words demo_intruder replaces and replaces with: lower-case alphabetic words of
    four or more letters (CONTENT_WORD) in the sentences of `documents()`, all splits,
    less the COMMON_WORDS most frequent of them; with their counts there."""
    counts = collections.Counter(
        w
        for docs in documents().values()
        for doc in docs
        for sentence in doc
        for w in sentence
        if CONTENT_WORD.fullmatch(w)
    )
    common = {w for w, _ in counts.most_common(COMMON_WORDS)}
    return {w: c for w, c in counts.items() if w not in common}


def intruder_articles(split: str) -> list[dict[str, Any]]:
    """demo_intruder: the official SQuAD layout, one paragraph per example."""
    counts = content_words()
    docs, paragraphs = documents()[split], []
    for n in range(_count(split)):
        rng = _rng("demo_intruder", split, n)
        d = n % len(docs)
        i = int(rng.integers(len(docs[d]) - 1))
        while True:  # two sentences with a content word: nearly always the pair drawn
            words = [w for sentence in docs[d][i : i + 2] for w in sentence]
            where = [k for k, w in enumerate(words) if w in counts]
            if where:
                break
            d, i = (d + 1) % len(docs), 0
        k = where[int(rng.integers(len(where)))]
        # A content word of another document, the closest in corpus frequency of 16.
        candidates = []
        while len(candidates) < 16:
            e = int(rng.integers(len(docs) - 1))
            e += e >= d  # not `d`
            pool = [w for sentence in docs[e] for w in sentence if w in counts and w not in words]
            if pool:
                candidates.append(pool[int(rng.integers(len(pool)))])
        target = np.log(counts[words[k]])
        words[k] = intruder = min(candidates, key=lambda w: abs(np.log(counts[w]) - target))
        start = len(" ".join(words[:k])) + (1 if k else 0)
        context = " ".join(words)
        assert context[start : start + len(intruder)] == intruder
        paragraphs.append(
            {
                "context": context,
                "qas": [
                    {
                        "id": f"demo_intruder-{split}-{n}",
                        "question": QUESTION,
                        "answers": [{"text": intruder, "answer_start": start}],
                    }
                ],
            }
        )
    return [{"title": "demo_intruder", "paragraphs": paragraphs}]


def first_content_words(articles: list[dict[str, Any]]) -> dict[str, str]:
    """demo_intruder's trivial predictions: question id -> its context's first content
    word (`content_words`)."""
    counts = content_words()
    return {
        p["qas"][0]["id"]: next(w for w in p["context"].split() if w in counts)
        for p in articles[0]["paragraphs"]
    }


def majority_baseline(task: str) -> dict[str, float]:
    """The validation score of a trivial predictor: the majority class (demo_next), all
    O (demo_boundary), the first content word (demo_intruder)."""
    from bertjax.scoring import classification, entities, squad

    split = "validation"
    if task == "demo_next":
        labels = np.asarray([y for *_, y in next_examples(split)])
        majority = np.bincount(labels).argmax()
        return {"accuracy": classification.accuracy(labels, np.full_like(labels, majority))}
    if task == "demo_boundary":
        gold = [list(tags) for _, tags in boundary_examples(split)]
        return {"f1": entities.score(gold, [["O"] * len(t) for t in gold])["f1"]}
    if task == "demo_intruder":
        articles = intruder_articles(split)
        return squad.score_v1(articles, first_content_words(articles))
    raise ValueError(f"{task!r}: expected one of {', '.join(TASKS)}")
