"""Synthetic fine-tuning data written here, in the formats the fine-tuning readers take
(docs/finetuning.md): a pair task (JSONL rows whose label needs both sentences), CoNLL
sentences with people and places, SQuAD-format reading articles whose answer depends on
the question; their writers; and a run's evaluation scalars read from its event files.
"""

from __future__ import annotations

import json
import os

WORDS = "river stone light paper garden window music bridge village winter".split()


def write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def pair_task(rng, n):
    """Pairs of word lists, label 1 when exactly one of "river in the first" and "stone
    in the second" holds: neither sentence alone says anything about the label."""
    rows = []
    for _ in range(n):
        a = " ".join(rng.choice(WORDS, 3, replace=False))
        b = " ".join(rng.choice(WORDS, 2, replace=False))
        rows.append((a, b, int(("river" in a) != ("stone" in b))))
    return rows


def eval_scalars(work):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(work, "logs"))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


NER_PEOPLE = "anna boris clara dmitri".split()
NER_PLACES = "paris lyon berlin rome".split()


def conll_sentences(rng, n, iob1=False):
    """Sentences of filler words, people and two-word places; tags in IOB2 (or IOB1)."""
    out = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(int(rng.integers(3, 7))):
            r = rng.random()
            if r < 0.2:
                words.append(str(rng.choice(NER_PEOPLE)))
                tags.append("I-PER" if iob1 else "B-PER")
            elif r < 0.35:
                words += [str(rng.choice(NER_PLACES)), "city"]
                tags += ["I-LOC" if iob1 else "B-LOC", "I-LOC"]
            else:
                words.append(str(rng.choice(WORDS)))
                tags.append("O")
        out.append(list(zip(words, tags, strict=True)))
    return out


def write_conll(path, sentences):
    lines = ["-DOCSTART- -X- -X- O", ""]
    for s in sentences:
        lines += [f"{w} NN I-NP {t}" for w, t in s] + [""]
    write_lines(path, lines)


READER_PEOPLE = "anna boris clara dmitri elena felix greta hugo ines jonas karla lukas".split()
COUNTRY = dict(
    paris="france",
    berlin="germany",
    rome="italy",
    oslo="norway",
    madrid="spain",
    lisbon="portugal",
    vienna="austria",
    dublin="ireland",
)
READER_PLACES = list(COUNTRY)


def reading_task(rng, n, facts=(3, 6), impossible=0.0, filler=0):
    """SQuAD-format articles: a paragraph says where some people live, each in another
    city (in a random order, with `filler` random words between facts); each question
    asks which city is in a country, one of theirs (or, with probability `impossible`,
    another: a v2.0 question without an answer). The answer depends on the question."""
    paragraphs = []
    for i in range(n):
        people = rng.choice(READER_PEOPLE, int(rng.integers(*facts)), replace=False)
        places = rng.choice(READER_PLACES, len(people), replace=False)
        parts, where = [], {}
        for p, place in zip(people, places, strict=True):
            filler_words = " ".join(rng.choice(WORDS, filler)) + " " if filler else ""
            parts.append(filler_words)
            where[str(place)] = sum(len(x) for x in parts) + len(f"{p} lives in ")
            parts.append(f"{p} lives in {place} . ")
        context = "".join(parts).strip()
        if rng.random() < impossible:
            asked = str(rng.choice([p for p in READER_PLACES if p not in where]))
            qa = {
                "id": f"q{i}",
                "question": f"which city is in {COUNTRY[asked]} ?",
                "answers": [],
                "is_impossible": True,
            }
        else:
            asked = str(rng.choice(places))
            start = where[asked]
            assert context[start : start + len(asked)] == asked
            qa = {
                "id": f"q{i}",
                "question": f"which city is in {COUNTRY[asked]} ?",
                "answers": [{"text": asked, "answer_start": start}],
            }
        paragraphs.append({"context": context, "qas": [qa]})
    return [{"title": "t", "paragraphs": paragraphs}]


def write_squad(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"version": "1.1", "data": data}, f)
