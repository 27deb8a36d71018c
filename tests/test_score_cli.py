"""`python -m bertjax score` end to end, in subprocesses: GLUE submissions matched to the
dev file by their index column (scored against scikit-learn / scipy on the arrays),
`--task=ner` on conlleval's input and on bertjax's own `predict` output (hand-counted
chunks, and seqeval), and bad input as one line naming the file and the row."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from clilib import bertjax

sklearn_metrics = pytest.importorskip("sklearn.metrics")
stats = pytest.importorskip("scipy.stats")
seqeval_metrics = pytest.importorskip("seqeval.metrics")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _score(*args: str) -> subprocess.CompletedProcess:
    return bertjax("score", *args, timeout=120)


def _ok(*args: str) -> dict:
    r = _score(*args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _error(*args: str) -> str:
    """The one line a bad input gives: rc 1, `error: ...`, nothing else on stderr."""
    r = _score(*args)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


# ----------------------------------------------------------------------------- GLUE


def _mrpc(tmp_path, n=60, seed=0):
    """An MRPC dev file in GLUE's layout, its labels, and predictions right ~70%."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    preds = np.where(rng.random(n) < 0.7, labels, 1 - labels)
    rows = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
    rows += [f"{y}\t{i}\t{i + 1000}\tsentence {i} a\tsentence {i} b" for i, y in enumerate(labels)]
    (tmp_path / "dev.tsv").write_text("\n".join(rows) + "\n")
    return labels, preds


def _submission(path, pairs, header="index\tprediction"):
    path.write_text("\n".join([header, *(f"{i}\t{v}" for i, v in pairs)]) + "\n")
    return str(path)


def test_glue_rows_are_matched_by_index_in_any_order(tmp_path):
    labels, preds = _mrpc(tmp_path)
    gold = f"--gold={tmp_path / 'dev.tsv'}"
    expected = {
        "f1": sklearn_metrics.f1_score(labels, preds),
        "accuracy": sklearn_metrics.accuracy_score(labels, preds),
    }
    pairs = list(enumerate(preds.tolist()))
    orders = {
        "in_order": pairs,
        "descending": pairs[::-1],
        "shuffled": [pairs[i] for i in np.random.default_rng(1).permutation(len(pairs))],
    }
    for name, rows in orders.items():
        got = _ok(
            "--task=mrpc", gold, f"--predictions={_submission(tmp_path / f'{name}.tsv', rows)}"
        )
        assert got == pytest.approx(expected), name
    # Columns may come the other way round; the header says which is the index.
    flipped = tmp_path / "flipped.tsv"
    flipped.write_text("prediction\tindex\n" + "".join(f"{v}\t{i}\n" for i, v in pairs[::-1]))
    assert _ok("--task=mrpc", gold, f"--predictions={flipped}") == pytest.approx(expected)


def test_glue_regression_by_index_matches_scipy(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.round(rng.uniform(0, 5, 40), 1)
    preds = np.round(labels + rng.normal(0, 1, 40), 3)
    rows = [
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    ]
    rows += [f"{i}\tg\tf\t2012\t{i}\ts\ts\ta {i}\tb {i}\t{y}" for i, y in enumerate(labels)]
    (tmp_path / "dev.tsv").write_text("\n".join(rows) + "\n")
    shuffled = [(i, preds[i]) for i in rng.permutation(40)]
    got = _ok(
        "--task=stsb",
        f"--gold={tmp_path / 'dev.tsv'}",
        f"--predictions={_submission(tmp_path / 'STS-B.tsv', shuffled)}",
    )
    assert got["pearson"] == pytest.approx(stats.pearsonr(labels, preds)[0])
    assert got["spearman"] == pytest.approx(stats.spearmanr(labels, preds)[0])


@pytest.mark.parametrize(
    "case,rows,header,says",
    [
        (
            "no_index_column",
            [(0, 1), (1, 0), (2, 1), (3, 1)],
            "id\tprediction",
            "no_index_column.tsv:1: no index column",
        ),
        ("missing", [(0, 1), (1, 0), (3, 1)], None, "no prediction for index 2"),
        (
            "duplicate",
            [(0, 1), (1, 0), (1, 0), (2, 1), (3, 1)],
            None,
            "duplicate.tsv:4: index 1 repeated (first on line 3)",
        ),
        (
            "out_of_range",
            [(0, 1), (1, 0), (2, 1), (4, 1)],
            None,
            "out_of_range.tsv:5: index 4 out of range",
        ),
        ("negative", [(0, 1), (1, 0), (2, 1), (-1, 1)], None, "negative.tsv:5: index -1 out"),
        (
            "not_integer",
            [(0, 1), (1, 0), ("2.0", 1), (3, 1)],
            None,
            "not_integer.tsv:4: index '2.0' is not an integer",
        ),
        (
            "not_a_number",
            [(0, 1), ("x", 0), (2, 1), (3, 1)],
            None,
            "not_a_number.tsv:3: index 'x' is not an integer",
        ),
        (
            "bad_label",
            [(0, 1), (1, 0), (2, "maybe"), (3, 1)],
            None,
            "bad_label.tsv:4: unknown label 'maybe'",
        ),
    ],
)
def test_glue_bad_submissions_are_one_line_naming_the_row(tmp_path, case, rows, header, says):
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\na\t1\nb\t0\nc\t1\nd\t1\n")
    path = _submission(tmp_path / f"{case}.tsv", rows, header or "index\tprediction")
    line = _error("--task=sst2", f"--gold={tmp_path / 'dev.tsv'}", f"--predictions={path}")
    assert says in line and f"{case}.tsv" in line, line


def test_glue_diagnostic_set_has_nothing_to_score(tmp_path):
    path = _submission(tmp_path / "AX.tsv", [(0, "entailment")])
    assert "--task=ax" in _error("--task=ax", f"--gold={path}", f"--predictions={path}")


# ------------------------------------------------------------------------------ NER

# Four sentences in conlleval's input layout: token POS gold predicted. The gold column
# is IOB1 in places (CoNLL-2003's files), the predictions IOB2, and one prediction is
# an I- after O, which conlleval reads as the start of a chunk.
CONLLEVAL_INPUT = """\
-DOCSTART- -X- O O

John NNP B-PER B-PER
Smith NNP I-PER I-PER
visited VBD O O
New NNP B-LOC B-ORG
York NNP I-LOC I-ORG
. . O O

EU NNP I-ORG B-ORG
rejects VBZ O O
German JJ I-MISC B-MISC
call NN O O
to TO O O
boycott VB O B-MISC
British JJ I-MISC I-MISC
lamb NN O B-MISC

Peter NNP B-PER B-PER
Blackburn NNP I-PER O

in IN O O
Paris NNP B-LOC I-LOC
"""

# The chunks, counted by hand with conlleval's rules (type, first word, last word + 1):
#   gold: PER(0,2) LOC(3,5) | ORG(0,1) MISC(2,3) MISC(6,7) | PER(0,2) | LOC(1,2)   = 7
#   pred: PER(0,2) ORG(3,5) | ORG(0,1) MISC(2,3) MISC(5,7) MISC(7,8) | PER(0,1)
#         | LOC(1,2) (I-LOC after O opens a chunk)                                    = 8
#   correct: PER(0,2), ORG(0,1), MISC(2,3), LOC(1,2)                                 = 4
# precision 4/8, recall 4/7, F1 2PR/(P+R) = (4/7) / (15/14) = 8/15. Per type
# (correct / predicted / gold): PER 1/2/2, LOC 1/1/2, ORG 1/2/1, MISC 1/3/2.
# conlleval would print: found: 8 phrases; correct: 4; precision 50.00%;
# recall 57.14%; FB1 53.33.
HAND = {
    "precision": 0.5,
    "recall": 4 / 7,
    "f1": 8 / 15,
    "gold_chunks": 7,
    "predicted_chunks": 8,
    "correct_chunks": 4,
}
HAND_TYPES = {
    "PER": (1 / 2, 1 / 2, 1 / 2, 2),
    "LOC": (1.0, 1 / 2, 2 / 3, 2),
    "ORG": (1 / 2, 1.0, 2 / 3, 1),
    "MISC": (1 / 3, 1 / 2, 2 / 5, 2),
}


def _check_hand(got):
    assert {k: got[k] for k in HAND} == pytest.approx(HAND)
    for kind, (p, r, f, support) in HAND_TYPES.items():
        s = got["per_type"][kind]
        assert (s["precision"], s["recall"], s["f1"]) == pytest.approx((p, r, f)), kind
        assert s["support"] == support, kind


def _sentences(text, column):
    out, current = [], []
    for line in text.splitlines():
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if current:
                out.append(current)
            current = []
        else:
            current.append(cols[column])
    return out + ([current] if current else [])


def test_ner_conlleval_input_by_hand_and_seqeval(tmp_path):
    path = tmp_path / "conlleval.txt"
    path.write_text(CONLLEVAL_INPUT)
    got = _ok("--task=ner", f"--predictions={path}")
    _check_hand(got)
    assert _ok("--task=conll2003", f"--predictions={path}") == got
    # seqeval's default mode follows conlleval's chunk rules too.
    gold, pred = _sentences(CONLLEVAL_INPUT, -2), _sentences(CONLLEVAL_INPUT, -1)
    assert got["precision"] == pytest.approx(seqeval_metrics.precision_score(gold, pred))
    assert got["recall"] == pytest.approx(seqeval_metrics.recall_score(gold, pred))
    assert got["f1"] == pytest.approx(seqeval_metrics.f1_score(gold, pred))
    report = seqeval_metrics.classification_report(gold, pred, output_dict=True)
    for kind, s in got["per_type"].items():
        assert s["f1"] == pytest.approx(report[kind]["f1-score"]), kind
        assert s["support"] == report[kind]["support"], kind


def test_ner_gold_file_and_word_predicted_lines(tmp_path):
    """`predict` on TFDS data writes `word predicted`: --gold supplies the gold tags."""
    lines = CONLLEVAL_INPUT.splitlines()
    gold = tmp_path / "test.txt"  # token POS gold, CoNLL-2003's layout
    gold.write_text("\n".join(" ".join(ln.split()[:-1]) for ln in lines) + "\n")
    words = tmp_path / "ner.txt"  # no -DOCSTART- (TFDS has none): aligned by sentences
    words.write_text(
        "\n".join(f"{ln.split()[0]} {ln.split()[-1]}" if ln else "" for ln in lines[2:]) + "\n"
    )
    _check_hand(_ok("--task=ner", f"--gold={gold}", f"--predictions={words}"))


def test_ner_scores_what_predict_writes(tmp_path):
    """NER.write_predictions (the real one, its model stubbed out) on a CoNLL test file,
    then `score --task=ner` on its output alone: the hand-counted figures."""
    from bertjax.data import conll
    from bertjax.tasks import ner

    gold = tmp_path / "test.txt"
    gold.write_text(
        "\n".join(" ".join(ln.split()[:-1]) for ln in CONLLEVAL_INPUT.splitlines()) + "\n"
    )
    sentences = conll.read_conll(str(gold), "test")
    predicted = _sentences(CONLLEVAL_INPUT, -1)
    task = ner.NER.__new__(ner.NER)  # no config or model: only the writer runs
    task.sentences = lambda split: sentences
    task.predicted = lambda ctx, params, split: None
    task.word_tags = lambda split, token_tags: predicted
    out = tmp_path / "ner.txt"
    task.write_predictions(None, None, "test", str(out))
    _check_hand(_ok("--task=ner", f"--predictions={out}"))


def test_ner_bad_input_is_one_line_naming_the_line(tmp_path):
    two = tmp_path / "two.txt"  # word predicted, but no --gold
    two.write_text("John B-PER\nSmith I-PER\n")
    assert "two.txt:1: 2 columns" in _error("--task=ner", f"--predictions={two}")
    tag = tmp_path / "tag.txt"
    tag.write_text("John NNP B-PER B-PER\nSmith NNP I-PER X-PER\n")
    assert "tag.txt:2: tag 'X-PER'" in _error("--task=ner", f"--predictions={tag}")
    gold = tmp_path / "gold.txt"
    gold.write_text("John B-PER\nSmith I-PER\n\nParis B-LOC\n")
    shifted = tmp_path / "shifted.txt"
    shifted.write_text("John B-PER\nSmith I-PER\n\nLondon B-LOC\n")
    line = _error("--task=ner", f"--gold={gold}", f"--predictions={shifted}")
    assert "shifted.txt:4: word 'London'" in line and "gold.txt:4" in line
    short = tmp_path / "short.txt"
    short.write_text("John B-PER\nSmith I-PER\n")
    line = _error("--task=ner", f"--gold={gold}", f"--predictions={short}")
    assert "gold.txt:4: 2 sentences" in line
    missing = tmp_path / "nowhere.txt"
    assert "nowhere.txt" in _error("--task=ner", f"--predictions={missing}")


# ---------------------------------------------------------------------------- SQuAD


def _squad_files(tmp_path, preds, q3=()):
    data = [
        {
            "paragraphs": [
                {
                    "context": "...",
                    "qas": [
                        {"id": "q1", "answers": [{"text": "the", "answer_start": 0}]},
                        {"id": "q2", "answers": [{"text": "Paris", "answer_start": 0}]},
                        {"id": "q3", "answers": [{"text": t, "answer_start": 0} for t in q3]},
                    ],
                }
            ]
        }
    ]
    (tmp_path / "gold.json").write_text(json.dumps({"version": "v2.0", "data": data}))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    return f"--gold={tmp_path / 'gold.json'}", f"--predictions={tmp_path / 'pred.json'}"


def test_squad_v2_command_counts_has_ans_by_the_raw_answers(tmp_path):
    gold, pred = _squad_files(tmp_path, {"q1": "Paris", "q2": "Paris", "q3": ""})
    (tmp_path / "na.json").write_text(json.dumps({"q1": 0.8, "q2": 0.3, "q3": 0.9}))
    got = _ok("--task=squad_v2", gold, pred, f"--na_probs={tmp_path / 'na.json'}")
    # By hand (test_scoring.py has the steps): q1 ("the") is HasAns; best 2 of 3 at 0.3.
    assert got["HasAns_total"] == 2 and got["NoAns_total"] == 1
    assert got["best_exact"] == pytest.approx(200 / 3) and got["best_exact_thresh"] == 0.3


def test_squad_bad_predictions_are_one_line(tmp_path):
    gold, pred = _squad_files(tmp_path, {"q1": "", "q2": "Paris"})
    line = _error("--task=squad_v2", gold, pred)  # evaluate-v2.0.py stops here too
    assert "pred.json: no prediction for question 'q3'" in line
    # v1.1 has an answer to every question ...
    assert "gold.json: question 'q3' has no gold answer" in _error("--task=squad_v1", gold, pred)
    # ... and scores a missing prediction 0 (q1 "" matches "the": both normalise to ""),
    # saying so on stderr.
    gold, pred = _squad_files(tmp_path, {"q1": "", "q2": "Paris"}, q3=["Lyon"])
    r = _score("--task=squad_v1", gold, pred)
    assert r.returncode == 0 and "no prediction for 1 of 3" in r.stderr
    assert json.loads(r.stdout)["exact_match"] == pytest.approx(100 * 2 / 3)
    gold, pred = _squad_files(tmp_path, {"q1": "", "q2": 3, "q3": ""})
    assert "question 'q2': answer 3 is not a string" in _error("--task=squad_v2", gold, pred)
    gold, pred = _squad_files(tmp_path, {"q1": "", "q2": "Paris", "q3": ""})
    (tmp_path / "na.json").write_text(json.dumps({"q1": 0.8, "q2": 0.3}))
    line = _error("--task=squad_v2", gold, pred, f"--na_probs={tmp_path / 'na.json'}")
    assert "na.json: no no-answer probability for question 'q3'" in line
