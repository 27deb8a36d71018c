"""The built-in demo tasks (bertjax/data/demo_tasks.py) as properties of their examples:
the same on every call, splits with no sentence in common, labels that say exactly
what was done to the document's sentences, no length cue, balanced classes; and each
reaches its task through configs/finetune.py without a file."""

from __future__ import annotations

import collections
import os
import sys

import numpy as np
import pytest

from bertjax.data import demo_tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))


def _sentences(split):
    return {" ".join(s) for doc in demo_tasks.documents()[split] for s in doc}


def test_splits_share_no_sentence():
    docs = demo_tasks.documents()
    train, dev, test = (_sentences(k) for k in ("train", "validation", "test"))
    assert not (dev & test) and not (train & dev) and not (train & test)
    assert len(docs["train"]) > 1000 and len(docs["validation"]) > 100
    assert all(len(doc) >= 3 for v in docs.values() for doc in v)


def test_next_pairs_are_balanced_and_labelled_by_where_the_second_comes_from():
    examples = demo_tasks.next_examples("validation")
    assert examples == demo_tasks.next_examples("validation")  # deterministic
    assert len(examples) == demo_tasks.SIZES["validation"]
    assert collections.Counter(y for *_, y in examples) == {0: 250, 1: 250}
    follows = {(" ".join(a + b), " ".join(c)) for doc in demo_tasks.documents()["validation"]
               for a, b, c in zip(doc, doc[1:], doc[2:], strict=False)}
    firsts = {a for a, _ in follows}
    dev = _sentences("validation")
    for first, second, label in examples:
        assert ((first, second) in follows) == (label == 0)
        assert first in firsts and second in dev
    # The second sentence's length says (almost) nothing about the label.
    mean = {y: np.mean([len(b.split()) for _, b, lab in examples if lab == y]) for y in (0, 1)}
    assert abs(mean[0] - mean[1]) < 1.0


def test_boundary_tags_mark_the_first_word_of_the_second_and_third_sentences():
    dev = {tuple(w.lower() for w in s): s for doc in demo_tasks.documents()["validation"]
           for s in doc}
    for words, tags in demo_tasks.boundary_examples("validation"):
        starts = [i for i, t in enumerate(tags) if t != "O"]
        assert set(tags) <= {"O", "B-START"} and len(starts) == 2
        pieces = [words[:starts[0]], words[starts[0]:starts[1]], words[starts[1]:]]
        for piece in pieces:  # each a document sentence, lower-cased, final mark dropped
            match = [k for k in dev if k[:-1] == piece[:-1] and len(k) == len(piece)
                     and piece[-1] == (k[-1].rstrip(".?!:;") or k[-1])]
            assert match, piece
        assert all(w == w.lower() for w in words)
    assert demo_tasks.majority_baseline("demo_boundary") == {"f1": 0.0}


def test_the_intruder_is_from_another_document_and_the_rest_consecutive():
    docs = demo_tasks.documents()["validation"]
    runs = {" ".join(" ".join(s) for s in doc[i:i + 3]): [" ".join(s) for s in doc[i:i + 3]]
            for doc in docs for i in range(len(doc) - 2)}
    where = collections.Counter()
    for p in demo_tasks.intruder_articles("validation")[0]["paragraphs"]:
        qa = p["qas"][0]
        answer = qa["answers"][0]
        context, start = p["context"], answer["answer_start"]
        assert context[start:start + len(answer["text"])] == answer["text"]
        assert qa["question"] == demo_tasks.QUESTION
        rest = (context[:start] + context[start + len(answer["text"]):]).strip()
        assert " ".join(rest.split()) in runs  # the three others follow each other
        assert answer["text"] not in rest
        before = context[:start].strip()
        where[[" ".join(runs[" ".join(rest.split())][:k]) for k in range(4)].index(before)] += 1
    assert len(where) == 4 and min(where.values()) > 80  # every position
    baseline = demo_tasks.majority_baseline("demo_intruder")
    assert 15 < baseline["exact_match"] < 35


@pytest.mark.parametrize("dataset, task", [("demo_next", "glue"), ("demo_boundary", "ner"),
                                           ("demo_intruder", "squad")])
def test_each_demo_task_reads_through_its_config(dataset, task, tmp_path):
    import finetune

    from bertjax import tasks
    from bertjax.data.tokenizers import train_wordpiece

    c = finetune.get_config(f"{dataset},bert_tiny,runlocal")
    assert c.task == task and c.finetune.data == f"demo:{dataset}"
    texts = [" ".join(s) for doc in demo_tasks.documents()["train"][:300] for s in doc]
    tok = train_wordpiece(texts, vocab_size=400)
    tok.save(str(tmp_path / "tok"))
    c.tokenizer.path = str(tmp_path / "tok")
    t = tasks.get(c)
    assert len(t.features("validation")) >= demo_tasks.SIZES["validation"]
    if task == "glue":
        assert t.label_fields()["label_names"] == ("next", "random")
