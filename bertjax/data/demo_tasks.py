"""Built-in demo tasks, one per fine-tuning kind, made from the demo corpus: the whole
pretrain -> fine-tune -> score loop runs offline, on a CPU, in minutes.

Each task is about how the sentences of a document go together (the demo corpus,
bertjax/data/sources.py: prose from the installed Python docstrings, which the
quickstart pretrains on), so no single token and no length gives the answer:

  demo_next      classification (the glue task) of a pair: two consecutive sentences of
                 a document, then either the sentence that follows them ("next") or one
                 from another document of about the same length ("random")? Half each;
                 the majority baseline is 50% accuracy.
  demo_boundary  tagging (the ner task): three consecutive sentences of a document,
                 lower-cased and with their final punctuation removed, as one run of
                 words; the first words of the second and third sentences are tagged
                 B-START. The all-O baseline scores entity F1 0.
  demo_intruder  extractive QA (the squad task, v1.1): "which sentence does not belong?"
                 over three consecutive sentences of a document with one sentence of
                 another document put among them (before, between or after them); the
                 answer is that sentence. Always answering the first sentence scores
                 about 25 exact match.

Documents are split by position in the corpus (every tenth to validation, every tenth
after it to test), so the splits share no sentence; each example is seeded by (task,
split, index), so the examples are the same on every machine that has the same corpus
(the same Python and requirements.txt). Sizes: `SIZES`. The quickstart pretrains on the
whole demo corpus, these documents' text included (as BERT pretrains on the Wikipedia
that SQuAD's paragraphs come from); the tasks' labels are never in it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

TASKS = ("demo_next", "demo_boundary", "demo_intruder")
SIZES = {"train": 4000, "validation": 500, "test": 500}
NEXT_LABELS = ("next", "random")
BOUNDARY_TAG = "START"
QUESTION = "which sentence does not belong?"
SENTENCE_WORDS = (5, 16)  # words per sentence, [min, max)


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
        raise ValueError(f"the demo corpus has {len(docs)} documents for the {split} split "
                         "of the demo tasks")
    return SIZES[split]


def _other_sentence(split: str, doc: int, length: int, rng: np.random.Generator
                    ) -> tuple[str, ...]:
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
        for j, sentence in enumerate(docs[d][i:i + 3]):
            bare = _bare(sentence)
            words += bare
            tags += [f"B-{BOUNDARY_TAG}" if j else "O"] + ["O"] * (len(bare) - 1)
        out.append((tuple(words), tuple(tags)))
    return out


def intruder_articles(split: str) -> list[dict[str, Any]]:
    """demo_intruder: the official SQuAD layout, one paragraph per example."""
    docs, paragraphs = documents()[split], []
    for n in range(_count(split)):
        rng = _rng("demo_intruder", split, n)
        d = n % len(docs)
        i = int(rng.integers(len(docs[d]) - 2))
        sentences = [" ".join(s) for s in docs[d][i:i + 3]]
        intruder = " ".join(_other_sentence(split, d, len(docs[d][i + 1]), rng))
        at = int(rng.integers(4))
        sentences.insert(at, intruder)
        start = sum(len(s) + 1 for s in sentences[:at])
        context = " ".join(sentences)
        assert context[start:start + len(intruder)] == intruder
        paragraphs.append({"context": context, "qas": [{
            "id": f"demo_intruder-{split}-{n}", "question": QUESTION,
            "answers": [{"text": intruder, "answer_start": start}]}]})
    return [{"title": "demo_intruder", "paragraphs": paragraphs}]


def majority_baseline(task: str) -> dict[str, float]:
    """The validation score of a trivial predictor: the majority class (demo_next), all
    O (demo_boundary), the first sentence (demo_intruder)."""
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
        first = {}
        for p in articles[0]["paragraphs"]:
            context, answer = p["context"], p["qas"][0]["answers"][0]
            # The first sentence: up to the intruder if it comes second or later, else
            # the intruder itself.
            cut = answer["answer_start"] - 1 if answer["answer_start"] else len(answer["text"])
            first[p["qas"][0]["id"]] = context[:cut]
        return squad.score_v1(articles, first)
    raise ValueError(f"{task!r}: expected one of {', '.join(TASKS)}")


READERS: dict[str, Callable[[str], Any]] = {
    "demo_next": next_examples, "demo_boundary": boundary_examples,
    "demo_intruder": intruder_articles}
