"""SQuAD (bertjax/data/squad.py, bertjax/tasks/squad.py): files, windows, training.

The windows are checked as properties on long contexts with a WordPiece and a
byte-level BPE tokenizer: every answer lies in at least one window whose start and end
tokens' character offsets give back exactly the answer's text, consecutive windows
start doc_stride tokens apart, and each context token is scored in exactly one window
(the max-context rule). A tiny BERT then learns a synthetic reading task ("which city
is in italy?" over a paragraph of who lives where, so the question must be read),
`evaluate` gives the recorded scores, and `predict` writes the official files (v2.0:
with null_odds.json), which `score` reads back with the same numbers.
"""

from __future__ import annotations

import json
import os
import sys

import modellib
import numpy as np
import pytest
from tasklib import (
    COUNTRY,
    READER_PEOPLE,
    READER_PLACES,
    WORDS,
    eval_scalars,
    reading_task,
    write_squad,
)

from bertjax.data import datasets, squad
from bertjax.data.glue import DatasetError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))


def test_files_read_and_bad_records_named(tmp_path):
    rng = np.random.default_rng(0)
    data = reading_task(rng, 5)
    write_squad(str(tmp_path / "train-v1.1.json"), data)
    questions, read = datasets.read_split("squad", f"json:{tmp_path}", "train", version="v1.1")
    assert [q.qid for q in questions] == [f"q{i}" for i in range(5)] and read == data
    text, start = questions[0].answers[0]
    assert questions[0].context[start : start + len(text)] == text
    # An answer whose answer_start does not point at its text: named to the record.
    data[0]["paragraphs"][2]["qas"][0]["answers"][0]["answer_start"] += 1
    write_squad(str(tmp_path / "train-v1.1.json"), data)
    with pytest.raises(
        DatasetError,
        match=r"train-v1.1.json: data\[0\].paragraphs\[2\]"
        r".qas\[0\].answers\[0\] \(id q2\): text",
    ):
        datasets.read_split("squad", f"json:{tmp_path}", "train", version="v1.1")
    with open(tmp_path / "dev-v1.1.json", "w") as f:
        f.write("{not json")
    with pytest.raises(DatasetError, match=r"dev-v1.1.json: not valid JSON"):
        datasets.read_split("squad", f"json:{tmp_path}", "validation", version="v1.1")
    write_squad(str(tmp_path / "dev-v1.1.json"), [])
    with pytest.raises(DatasetError, match=r"dev-v1.1.json: the validation split has no"):
        datasets.read_split("squad", f"json:{tmp_path}", "validation", version="v1.1")
    with pytest.raises(DatasetError, match=r"finetune.data='squad:x'"):
        datasets.read_split("squad", "squad:x", "validation", version="v1.1")


def test_tfds_squad_records_become_the_official_layout():
    """TFDS's squad/v2.0 records (its feature names, one record per question) are read
    back into the official articles/paragraphs/qas layout the scores need."""
    tfds = pytest.importorskip("tensorflow_datasets")
    import tensorflow as tf_

    data = reading_task(np.random.default_rng(5), 6, impossible=0.5)
    records = [
        {
            "id": qa["id"],
            "title": "t",
            "context": p["context"],
            "question": qa["question"],
            "is_impossible": qa.get("is_impossible", False),
            "answers": {
                "text": [a["text"] for a in qa["answers"]],
                "answer_start": [a["answer_start"] for a in qa["answers"]],
            },
        }
        for p in data[0]["paragraphs"]
        for qa in p["qas"]
    ]
    text = tf_.TensorSpec((), tf_.string)
    spec = {
        "id": text,
        "title": text,
        "context": text,
        "question": text,
        "is_impossible": tf_.TensorSpec((), tf_.bool),
        "answers": {
            "text": tf_.TensorSpec((None,), tf_.string),
            "answer_start": tf_.TensorSpec((None,), tf_.int32),
        },
    }

    def as_dataset(self, *args, **kwargs):
        assert self.name == "squad" and self.builder_config.name == "v2.0"
        return tf_.data.Dataset.from_generator(lambda: iter(records), output_signature=spec)

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        questions, read = datasets.read_split("squad", "tfds", "validation", version="v2.0")
    assert [q.qid for q in questions] == [r["id"] for r in records]
    assert [q.impossible for q in questions] == [r["is_impossible"] for r in records]
    assert sum(len(p["qas"]) for p in read[0]["paragraphs"]) == 6
    gold = {
        qa["id"]: [a["text"] for a in qa["answers"]]
        for p in read[0]["paragraphs"]
        for qa in p["qas"]
    }
    assert gold == {
        qa["id"]: [a["text"] for a in qa["answers"]]
        for p in data[0]["paragraphs"]
        for qa in p["qas"]
    }


@pytest.fixture(scope="module")
def tokenizers_by_kind(tmp_path_factory):
    from bertjax.data.train_tokenizer import train as train_tokenizer

    root = tmp_path_factory.mktemp("squad_tok")
    texts = [
        " ".join(
            WORDS
            + READER_PEOPLE
            + READER_PLACES
            + list(COUNTRY.values())
            + ["lives", "in", "which", "city", "is", "?", "."]
        )
    ] * 30
    return {
        kind: train_tokenizer(texts, kind, 320, str(root / kind), family=family)
        for kind, family in (("wordpiece", "bert"), ("bpe", "roberta"))
    }


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_every_answer_is_in_a_window_with_its_exact_text(tokenizers_by_kind, kind):
    from bertjax.tasks import squad as task

    tok = tokenizers_by_kind[kind]
    rng = np.random.default_rng(1)
    data = reading_task(rng, 30, facts=(6, 9), filler=6)
    several = 0
    for q in squad.questions(data, "mem"):
        encs = task.windows(tok, q.question, q.context, 48, 16, 12)
        several += len(encs) > 1
        text, start = q.answers[0]
        found = 0
        for enc in encs:
            assert len(enc.ids) <= 48
            span = task.answer_tokens(enc, start, start + len(text))
            if span is not None:
                first, last = span
                assert q.context[enc.offsets[first][0] : enc.offsets[last][1]] == text
                found += 1
        assert found >= 1, (q.qid, text)
        # Windows start doc_stride context tokens apart, over the whole context.
        firsts = [enc.offsets[task.context_tokens(enc)[0]] for enc in encs]
        ctx_offsets = [
            tuple(o) for o in tok.backend.encode(q.context, add_special_tokens=False).offsets
        ]
        starts = [ctx_offsets.index(tuple(o)) for o in firsts]
        assert starts == list(range(0, 16 * len(encs), 16))
        last = encs[-1].offsets[task.context_tokens(encs[-1])[-1]]
        assert tuple(last) == ctx_offsets[-1]
        # Each context token is scored in exactly one window, one that sees it.
        flags = task.max_context(encs)
        scored = [
            tuple(enc.offsets[i])
            for enc, f in zip(encs, flags, strict=True)
            for i in np.flatnonzero(f)
        ]
        assert sorted(scored) == sorted(ctx_offsets)
    assert several == 30  # the contexts are long: every one needs several windows


def test_long_questions_are_cut_to_max_query_length(tokenizers_by_kind):
    from bertjax.tasks import squad as task

    tok = tokenizers_by_kind["wordpiece"]
    question = " ".join(["where"] * 40)
    encs = task.windows(tok, question, "anna lives in paris .", 64, 16, 12)
    assert [s for s in encs[0].sequence_ids].count(0) == 12


def test_answers_off_token_boundaries_are_counted_and_left_out(
    tokenizers_by_kind, tmp_path, capsys
):
    import finetune

    from bertjax import tasks

    rng = np.random.default_rng(2)
    data = reading_task(rng, 6)
    # "aris" of "paris": in the context, but not a whole token.
    answer = data[0]["paragraphs"][4]["qas"][0]["answers"][0]
    answer.update(text=answer["text"][1:], answer_start=answer["answer_start"] + 1)
    write_squad(str(tmp_path / "data" / "train-v1.1.json"), data)
    tok_dir = str(tmp_path / "tok")
    tokenizers_by_kind["wordpiece"].save(tok_dir)
    c = finetune.get_config("squad_v1,bert_base,runlocal")
    c.tokenizer.path = tok_dir
    c.finetune.data = f"json:{tmp_path / 'data'}"
    task = tasks.get(c)
    feats = task.features("train")
    assert task.left_out["train"] == ["q4"]
    assert (
        "1 of 6 answers do not begin and end on token boundaries (e.g. id q4)"
        in capsys.readouterr().out
    )
    assert len(feats) == 5  # one window each; q4's left out
    for row, start, end, (q_index, enc, _) in zip(
        feats.ids, feats.extra["start"], feats.extra["end"], task._windows["train"], strict=True
    ):
        q = task._questions["train"][q_index]
        text, _ = q.answers[0]
        assert q.context[enc.offsets[start][0] : enc.offsets[end][1]] == text
        assert len(row) == len(enc.ids)


# --- training end to end ------------------------------------------------------------


@pytest.fixture(scope="module")
def reader(tmp_path_factory, tokenizers_by_kind):
    import finetune
    import jax

    from bertjax import modeldir, train
    from bertjax.models import build, init_params

    root = tmp_path_factory.mktemp("squad")
    rng = np.random.default_rng(4)
    write_squad(str(root / "v1" / "train-v1.1.json"), reading_task(rng, 480, facts=(2, 6)))
    write_squad(str(root / "v1" / "dev-v1.1.json"), reading_task(rng, 60, facts=(2, 6)))
    write_squad(str(root / "v2" / "dev-v2.0.json"), reading_task(rng, 60, impossible=0.5))
    cfg = modellib.tiny(
        "bert",
        vocab_size=320,
        hidden_size=64,
        intermediate_size=128,
        max_position_embeddings=64,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
    )
    params = jax.tree.map(
        np.asarray, jax.jit(lambda: __import__("flax").linen.unbox(init_params(build(cfg))))()
    )
    pretrained = str(root / "pretrained")
    modeldir.save(pretrained, cfg, params, tokenizers_by_kind["wordpiece"])
    c = finetune.get_config("squad_v1,bert_base,runlocal")
    c.init_from = pretrained
    c.finetune.update(
        data=f"json:{root / 'v1'}", epochs=12.0, pad_multiple=8, doc_stride=16, max_query_length=12
    )
    c.optim.learning_rate = 1e-3
    c.train.update(batch_size=16, checkpoint_every=0, peak_flops=1e12)
    c.max_seq_length = 48
    work = str(root / "run")
    return {"config": c, "work": work, "result": train.train(c, work), "root": root}


def test_a_reader_learns_to_answer_from_the_question(reader):
    assert reader["result"]["status"] == "done"
    scores = eval_scalars(reader["work"])
    # Guessing one of the 2-5 cities of the paragraph scores ~35 exact match.
    assert max(scores["validation/exact_match"]) > 80, scores
    with open(os.path.join(reader["work"], "best", "config.json")) as f:
        best = json.load(f)
    assert best["model"]["heads"] == ["span"]
    assert best["scores"]["validation"]["f1"] == max(scores["validation/f1"])


def test_evaluate_predict_and_score_agree_on_v1_and_v2(reader, tmp_path):
    from bertjax.commands import evaluate
    from bertjax.scoring import squad as official

    best = os.path.join(reader["work"], "best")
    c = reader["config"]
    with open(os.path.join(best, "config.json")) as f:
        recorded = json.load(f)["scores"]["validation"]
    scores = evaluate.evaluate(c, best)["validation"]
    assert scores == pytest.approx(recorded)
    out = str(tmp_path / "v1")
    written = evaluate.predict(c, best, out)
    assert [os.path.basename(p) for p in written] == ["predictions.json"]
    with open(written[0]) as f:
        predictions = json.load(f)
    with open(reader["root"] / "v1" / "dev-v1.1.json") as f:
        gold = json.load(f)["data"]
    assert set(predictions) == {f"q{i}" for i in range(60)}
    assert official.score_v1(gold, predictions) == pytest.approx(scores)
    # v2.0: the same model on questions half of which have no answer in the paragraph.
    v2 = c.copy_and_resolve_references()
    v2.finetune.update(version="v2.0", data=f"json:{reader['root'] / 'v2'}")
    written = evaluate.predict(v2, best, str(tmp_path / "v2"))
    assert sorted(os.listdir(tmp_path / "v2")) == ["null_odds.json", "predictions.json"]
    with open(written[0]) as f:
        predictions = json.load(f)
    with open(tmp_path / "v2" / "null_odds.json") as f:
        odds = json.load(f)
    assert set(odds) == set(predictions) == {f"q{i}" for i in range(60)}
    assert all((predictions[q] == "") == (odds[q] > 0.0) for q in odds)
    with open(reader["root"] / "v2" / "dev-v2.0.json") as f:
        gold = json.load(f)["data"]
    v2_scores = evaluate.evaluate(v2, best)["validation"]
    assert official.score_v2(gold, predictions, odds) == pytest.approx(v2_scores)
    assert v2_scores["HasAns_total"] + v2_scores["NoAns_total"] == 60


def test_answers_keep_their_text_with_offsets_that_include_the_space(tokenizers_by_kind, tmp_path):
    """The released ModernBERT tokenizer.json (byte-level BPE, a template post-processor
    and no offset trimming) puts the space before a word into its offsets: answers are
    still found, and their text (what training checks and predictions hold) is the
    answer's, not the answer with a space in front."""
    import json

    from bertjax.data.tokenizers import load_tokenizer
    from bertjax.data.train_tokenizer import train as train_tokenizer
    from bertjax.tasks import squad as task

    texts = [
        " ".join(
            WORDS
            + READER_PEOPLE
            + READER_PLACES
            + list(COUNTRY.values())
            + ["lives", "in", "which", "city", "is", "?", "."]
        )
    ] * 30
    trained = tmp_path / "trained"
    train_tokenizer(texts, "bpe-modernbert", 320, str(trained), family="modernbert")
    released = json.loads((trained / "tokenizer.json").read_text())
    steps = released["post_processor"]["processors"]
    released["post_processor"] = next(p for p in steps if p["type"] == "TemplateProcessing")
    (trained / "tokenizer.json").write_text(json.dumps(released))
    tok = load_tokenizer(str(trained))
    rng = np.random.default_rng(2)
    spaced = 0
    for q in squad.questions(reading_task(rng, 20, facts=(6, 9), filler=6), "mem"):
        text, start = q.answers[0]
        for enc in task.windows(tok, q.question, q.context, 48, 16, 12):
            span = task.answer_tokens(enc, start, start + len(text))
            if span is not None:
                spaced += q.context[enc.offsets[span[0]][0]] == " "
                assert task.span_text(q.context, enc, *span) == text
    assert spaced > 0  # the offsets did include the space: the case was exercised
