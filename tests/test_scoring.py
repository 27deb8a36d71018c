"""bertjax.scoring against independent references: scikit-learn and scipy for GLUE's
metrics, seqeval (conlleval's rules) for entities, hand-worked SQuAD cases."""

from __future__ import annotations

import numpy as np
import pytest

from bertjax.scoring import classification as cls
from bertjax.scoring import entities, squad

sklearn_metrics = pytest.importorskip("sklearn.metrics")
stats = pytest.importorskip("scipy.stats")
seqeval_metrics = pytest.importorskip("seqeval.metrics")


@pytest.mark.parametrize("seed,classes", [(0, 2), (1, 3), (2, 2), (3, 5)])
def test_classification_metrics_match_scikit_learn_and_scipy(seed, classes):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, 200)
    p = np.where(rng.random(200) < 0.7, y, rng.integers(0, classes, 200))
    assert cls.accuracy(y, p) == pytest.approx(sklearn_metrics.accuracy_score(y, p))
    assert cls.matthews(y, p) == pytest.approx(sklearn_metrics.matthews_corrcoef(y, p))
    if classes == 2:
        assert cls.f1(y, p) == pytest.approx(sklearn_metrics.f1_score(y, p))
    a = rng.normal(size=100)
    b = a + rng.normal(size=100)
    b[:20] = np.round(b[:20])  # ties for Spearman's ranks
    a[10:30] = np.round(a[10:30])
    assert cls.pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0])
    assert cls.spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0])


def test_degenerate_cases_score_zero_as_scikit_learn_does():
    y, constant = np.array([0, 1, 1, 0]), np.zeros(4, int)
    assert cls.matthews(y, constant) == sklearn_metrics.matthews_corrcoef(y, constant) == 0
    assert cls.f1(y, constant) == sklearn_metrics.f1_score(y, constant, zero_division=0) == 0
    with pytest.raises(ValueError, match="no examples"):
        cls.accuracy([], [])


TYPES = ("PER", "LOC", "ORG")


def _random_tags(rng, n):
    """Tags of all kinds, ill-formed ones included (I- after O, B-X then I-Y)."""
    out = []
    for _ in range(n):
        r = rng.random()
        out.append("O" if r < 0.45 else f"{'B' if r < 0.75 else 'I'}-{rng.choice(TYPES)}")
    return out


@pytest.mark.parametrize("seed", range(4))
def test_entity_scores_match_seqeval_conlleval_mode(seed):
    rng = np.random.default_rng(seed)
    gold = [_random_tags(rng, int(rng.integers(1, 15))) for _ in range(40)]
    pred = [[t if rng.random() < 0.7 else _random_tags(rng, 1)[0] for t in s] for s in gold]
    got = entities.score(gold, pred)
    assert got["precision"] == pytest.approx(seqeval_metrics.precision_score(gold, pred))
    assert got["recall"] == pytest.approx(seqeval_metrics.recall_score(gold, pred))
    assert got["f1"] == pytest.approx(seqeval_metrics.f1_score(gold, pred))
    report = seqeval_metrics.classification_report(gold, pred, output_dict=True)
    for kind, s in got["per_type"].items():
        if kind in report:
            assert s["f1"] == pytest.approx(report[kind]["f1-score"]), kind
            assert s["support"] == report[kind]["support"], kind


def test_chunks_follow_conlleval_by_hand():
    # IOB1: I- opens a chunk after O; B- splits two adjacent chunks of one type.
    assert entities.chunks(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC"]) == [
        ("PER", 0, 2),
        ("LOC", 3, 4),
        ("LOC", 4, 6),
    ]
    # A type change inside I- tags starts a new chunk.
    assert entities.chunks(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 1), ("LOC", 1, 3)]
    assert entities.to_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]) == [
        "B-PER",
        "I-PER",
        "O",
        "B-LOC",
        "B-LOC",
    ]
    s = entities.score([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "O", "O", "B-LOC"]])
    assert (s["precision"], s["recall"]) == (0.5, 0.5)  # LOC right, PER's end wrong
    assert s["per_type"]["LOC"]["f1"] == 1.0 and s["per_type"]["PER"]["f1"] == 0.0
    with pytest.raises(ValueError, match="tag 'X-PER'"):
        entities.chunks(["X-PER"])


def _dataset(qas):
    return [
        {
            "paragraphs": [
                {
                    "context": "...",
                    "qas": [
                        {"id": qid, "answers": [{"text": t, "answer_start": 0} for t in answers]}
                        for qid, answers in qas
                    ],
                }
            ]
        }
    ]


def test_squad_v1_normalisation_and_best_gold_answer():
    data = _dataset([("a", ["The Cat", "a dog"]), ("b", ["New York City"]), ("c", ["1889"])])
    assert squad.normalize_answer("  The  Cat's, an   owl!") == "cats owl"
    got = squad.score_v1(data, {"a": "a cat!", "b": "york"})  # c: no prediction
    # a: EM 1 (articles and punctuation go); b: F1 = 2 * (1 * 1/3) / (1 + 1/3) = 0.5; c: 0.
    assert got["exact_match"] == pytest.approx(100 / 3)
    assert got["f1"] == pytest.approx(100 * (1 + 0.5) / 3)


def test_squad_v2_no_answer_thresholds_by_hand():
    # q3 and q4 are unanswerable (empty answer lists). A q4 whose only answer merely
    # normalises to nothing is answerable (HasAns) for evaluate-v2.0.py: see
    # test_squad_v2_an_answer_that_normalises_to_nothing_is_still_has_ans_by_hand.
    data = _dataset(
        [("q1", ["the Eiffel Tower", "Eiffel Tower"]), ("q2", ["1889"]), ("q3", []), ("q4", [])]
    )
    preds = {"q1": "eiffel tower.", "q2": "in 1889", "q3": "", "q4": "Paris"}
    na = {"q1": 0.1, "q2": 0.6, "q3": 0.9, "q4": 0.4}
    got = squad.score_v2(data, preds, na)
    # EM 1, 0, 1, 0; F1 1, 2/3 (1 of 2 predicted tokens), 1 (both empty), 0.
    assert got["exact"] == pytest.approx(50.0) and got["total"] == 4
    assert got["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 0) / 4)
    assert got["HasAns_exact"] == pytest.approx(50.0) and got["HasAns_total"] == 2
    assert got["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert got["NoAns_exact"] == pytest.approx(50.0) and got["NoAns_total"] == 2
    # The sweep: start at the 2 no-answer questions right; q1 (0.1) +1 -> 3, the best;
    # q4 (0.4) answered "Paris" -1; q2 (0.6) +0 / +2/3; q3 (0.9) 0.
    assert (got["best_exact"], got["best_exact_thresh"]) == (pytest.approx(75.0), 0.1)
    assert (got["best_f1"], got["best_f1_thresh"]) == (pytest.approx(75.0), 0.1)
    # At threshold 0.5, q2 (0.6) counts as "no answer": wrong for an answerable question.
    cut = squad.score_v2(data, preds, na, na_prob_thresh=0.5)
    assert cut["exact"] == pytest.approx(50.0) and cut["f1"] == pytest.approx(50.0)
    # Without probabilities there is no sweep, as in the script.
    assert "best_f1" not in squad.score_v2(data, preds)


def test_squad_v2_an_answer_that_normalises_to_nothing_is_still_has_ans_by_hand():
    """evaluate-v2.0.py decides HasAns by whether the raw `answers` list is non-empty;
    only for EM / F1 are gold texts normalised, empty ones dropped and [""] used when
    none is left. Figures below are worked by hand from that definition."""
    # q1's only gold answer "the" normalises to "": HasAns, but its EM / F1 gold is [""].
    data = _dataset([("q1", ["the"]), ("q2", ["Paris"]), ("q3", [])])
    na = {"q1": 0.8, "q2": 0.3, "q3": 0.9}
    got = squad.score_v2(data, {"q1": "Paris", "q2": "Paris", "q3": ""}, na)
    # EM: q1 "" vs "paris" 0, q2 1, q3 "" vs "" 1. F1: q1 0 (gold has no tokens, the
    # prediction has one), q2 1, q3 1 (both empty).
    assert got["exact"] == pytest.approx(200 / 3) and got["f1"] == pytest.approx(200 / 3)
    assert got["total"] == 3
    # HasAns = {q1, q2} (2 questions, 1 right), NoAns = {q3}.
    assert got["HasAns_total"] == 2 and got["HasAns_exact"] == pytest.approx(50.0)
    assert got["HasAns_f1"] == pytest.approx(50.0)
    assert got["NoAns_total"] == 1 and got["NoAns_exact"] == pytest.approx(100.0)
    # Sweep: start at 1 (the one NoAns question, q3); q2 (0.3) +1 -> 2, the best, at 0.3;
    # q1 (0.8) is HasAns: + its score 0 -> 2; q3 (0.9) NoAns answered "": +0.
    # best = 100 * 2 / 3. (Counting q1 as NoAns would start at 2 and give 100.0.)
    assert (got["best_exact"], got["best_exact_thresh"]) == (pytest.approx(200 / 3), 0.3)
    assert (got["best_f1"], got["best_f1_thresh"]) == (pytest.approx(200 / 3), 0.3)

    # The same questions, q1 now answered "" (right for EM / F1: its gold is [""]).
    got = squad.score_v2(data, {"q1": "", "q2": "Paris", "q3": ""}, na)
    assert got["exact"] == pytest.approx(100.0) and got["f1"] == pytest.approx(100.0)
    # Sweep: 1; q2 (0.3) +1 -> 2 at 0.3; q1 (0.8) HasAns, + its score 1 -> 3 at 0.8;
    # q3 +0. best 100 at 0.8 (as NoAns, q1 would add 0 and leave the best at 0.3).
    assert (got["best_exact"], got["best_exact_thresh"]) == (pytest.approx(100.0), 0.8)
    assert (got["best_f1"], got["best_f1_thresh"]) == (pytest.approx(100.0), 0.8)
    # Threshold 0.5: q1 (0.8) and q3 (0.9) count as answered "": right for q3 (NoAns),
    # wrong for q1 (HasAns scores float(not has_ans) = 0); q2 (0.3) keeps its 1.
    cut = squad.score_v2(data, {"q1": "", "q2": "Paris", "q3": ""}, na, na_prob_thresh=0.5)
    assert cut["exact"] == pytest.approx(200 / 3) and cut["f1"] == pytest.approx(200 / 3)
    assert cut["HasAns_exact"] == pytest.approx(50.0)
    assert cut["NoAns_exact"] == pytest.approx(100.0)


def test_squad_v2_four_questions_with_a_gold_of_punctuation_by_hand():
    # q4's only gold answer "  .  " normalises to "": HasAns (its list is non-empty).
    data = _dataset(
        [
            ("q1", ["the Eiffel Tower", "Eiffel Tower"]),
            ("q2", ["1889"]),
            ("q3", []),
            ("q4", ["  .  "]),
        ]
    )
    preds = {"q1": "eiffel tower.", "q2": "in 1889", "q3": "", "q4": "Paris"}
    na = {"q1": 0.1, "q2": 0.6, "q3": 0.9, "q4": 0.4}
    got = squad.score_v2(data, preds, na)
    # EM 1, 0, 1, 0 (q4: "" vs "paris"); F1 1, 2/3, 1, 0.
    assert got["exact"] == pytest.approx(50.0) and got["total"] == 4
    assert got["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 0) / 4)
    # HasAns = {q1, q2, q4}: EM 1 of 3, F1 (1 + 2/3 + 0) / 3; NoAns = {q3}.
    assert got["HasAns_total"] == 3 and got["HasAns_exact"] == pytest.approx(100 / 3)
    assert got["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert got["NoAns_total"] == 1 and got["NoAns_exact"] == pytest.approx(100.0)
    assert got["NoAns_f1"] == pytest.approx(100.0)
    # EM sweep: start 1 (q3); q1 (0.1) +1 -> 2, best at 0.1; q4 (0.4) HasAns +0; q2 (0.6)
    # +0; q3 (0.9) answered "" +0. best_exact = 100 * 2 / 4 = 50 at 0.1.
    assert (got["best_exact"], got["best_exact_thresh"]) == (pytest.approx(50.0), 0.1)
    # F1 sweep: 1; q1 +1 -> 2 at 0.1; q4 +0; q2 +2/3 -> 8/3, best at 0.6; q3 +0.
    # best_f1 = 100 * (8/3) / 4 = 66.67 at 0.6.
    assert (got["best_f1"], got["best_f1_thresh"]) == (pytest.approx(200 / 3), 0.6)


def _score(*args):
    from clilib import bertjax

    return bertjax("score", *args, timeout=120)


def test_score_command_squad_v2_and_glue(tmp_path):
    import json

    data = _dataset([("q1", ["the Eiffel Tower"]), ("q2", ["1889"]), ("q3", [])])
    (tmp_path / "gold.json").write_text(json.dumps({"version": "v2.0", "data": data}))
    (tmp_path / "pred.json").write_text(json.dumps({"q1": "Eiffel Tower", "q2": "1890", "q3": ""}))
    (tmp_path / "na.json").write_text(json.dumps({"q1": 0.2, "q2": 0.7, "q3": 0.9}))
    r = _score(
        "--task=squad_v2",
        f"--gold={tmp_path / 'gold.json'}",
        f"--predictions={tmp_path / 'pred.json'}",
        f"--na_probs={tmp_path / 'na.json'}",
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    # q1 right, q2 wrong, q3 rightly unanswered; no threshold rescues q2 (answerable).
    assert got["exact"] == pytest.approx(200 / 3) and got["best_exact"] == pytest.approx(200 / 3)
    assert got["best_exact_thresh"] == 0.2 and got["NoAns_total"] == 1
    # GLUE: the dev file in its own layout, a submission-style predictions file.
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\na\t1\nb\t0\nc\t1\nd\t1\n")
    (tmp_path / "SST-2.tsv").write_text("index\tprediction\n0\t1\n1\t0\n2\t0\n3\t1\n")
    r = _score(
        "--task=sst2", f"--gold={tmp_path / 'dev.tsv'}", f"--predictions={tmp_path / 'SST-2.tsv'}"
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"accuracy": 0.75}
    (tmp_path / "short.tsv").write_text("index\tprediction\n0\t1\n")
    r = _score(
        "--task=sst2", f"--gold={tmp_path / 'dev.tsv'}", f"--predictions={tmp_path / 'short.tsv'}"
    )
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "short.tsv" in r.stderr
