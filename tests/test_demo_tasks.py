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
    follows = {
        (" ".join(a + b), " ".join(c))
        for doc in demo_tasks.documents()["validation"]
        for a, b, c in zip(doc, doc[1:], doc[2:], strict=False)
    }
    firsts = {a for a, _ in follows}
    dev = _sentences("validation")
    for first, second, label in examples:
        assert ((first, second) in follows) == (label == 0)
        assert first in firsts and second in dev
    # The second sentence's length says (almost) nothing about the label.
    mean = {y: np.mean([len(b.split()) for _, b, lab in examples if lab == y]) for y in (0, 1)}
    assert abs(mean[0] - mean[1]) < 1.0


def test_boundary_tags_mark_the_first_word_of_the_second_and_third_sentences():
    dev = {
        tuple(w.lower() for w in s): s for doc in demo_tasks.documents()["validation"] for s in doc
    }
    for words, tags in demo_tasks.boundary_examples("validation"):
        starts = [i for i, t in enumerate(tags) if t != "O"]
        assert set(tags) <= {"O", "B-START"} and len(starts) == 2
        pieces = [words[: starts[0]], words[starts[0] : starts[1]], words[starts[1] :]]
        for piece in pieces:  # each a document sentence, lower-cased, final mark dropped
            match = [
                k
                for k in dev
                if k[:-1] == piece[:-1]
                and len(k) == len(piece)
                and piece[-1] == (k[-1].rstrip(".?!:;") or k[-1])
            ]
            assert match, piece
        assert all(w == w.lower() for w in words)
    assert demo_tasks.majority_baseline("demo_boundary") == {"f1": 0.0}


def test_the_intruder_replaces_one_content_word_by_one_of_another_document():
    docs = demo_tasks.documents()["validation"]
    pairs = [[w for s in doc[i : i + 2] for w in s] for doc in docs for i in range(len(doc) - 1)]
    counts = demo_tasks.content_words()
    assert all(demo_tasks.CONTENT_WORD.fullmatch(w) for w in counts)
    gap, where = [], collections.Counter()
    for p in demo_tasks.intruder_articles("validation")[0]["paragraphs"]:
        qa = p["qas"][0]
        answer = qa["answers"][0]
        context, start = p["context"], answer["answer_start"]
        assert context[start : start + len(answer["text"])] == answer["text"]
        assert qa["question"] == demo_tasks.QUESTION
        words = context.split()
        k = len(context[:start].split())
        assert words[k] == answer["text"] and words.count(answer["text"]) == 1
        # Every other word is where it was in two consecutive sentences of a document,
        # whose word at k was a content word; the intruder is a content word those
        # sentences do not have, of about the same frequency.
        match = [
            pair
            for pair in pairs
            if len(pair) == len(words) and pair[:k] == words[:k] and pair[k + 1 :] == words[k + 1 :]
        ]
        assert match, context
        pair = match[0]
        assert pair[k] in counts and answer["text"] in counts
        assert answer["text"] not in pair
        gap.append(np.log(counts[answer["text"]]) - np.log(counts[pair[k]]))
        where[min(k, 20) // 5] += 1
    assert abs(np.mean(gap)) < 0.2 and np.median(np.abs(gap)) < 0.3  # no frequency cue
    assert len(where) >= 4 and min(where.values()) > 20  # the intruder is anywhere
    baseline = demo_tasks.majority_baseline("demo_intruder")
    assert 15 < baseline["exact_match"] < 35 and baseline["f1"] == baseline["exact_match"]


@pytest.mark.parametrize(
    "dataset, task", [("demo_next", "glue"), ("demo_boundary", "ner"), ("demo_intruder", "squad")]
)
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
