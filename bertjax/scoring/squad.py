"""SQuAD exact match and F1, as the official evaluate scripts define them.

  v1.1 (evaluate-v1.1.py): every question scores its best EM / F1 over the gold
       answers; a question without a prediction scores 0. Figures in percent.
  v2.0 (evaluate-v2.0.py): a question is answerable (HasAns) when its `answers` list
       is non-empty, decided before any normalisation. For exact match and F1, gold
       answers that normalise to nothing are dropped and a question left with none
       (unanswerable, or answerable only by such texts, e.g. "the") has "" as its only
       gold answer; an empty prediction is the model saying "no answer". With
       no-answer probabilities, a question whose probability exceeds the threshold
       (default 1.0) counts as answered "" (right only for an unanswerable one), and
       `best_exact` / `best_f1` are the scores at the best threshold, found by the
       script's sweep over the sorted probabilities. HasAns / NoAns splits as the
       script prints them; questions without a prediction are left out of the totals
       (the script stops there: `python -m bertjax score` refuses such a file).

Normalisation: lower case, punctuation removed, the articles a / an / the removed,
whitespace collapsed.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def exact(gold: str, prediction: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(prediction))


def f1(gold: str, prediction: str, v2: bool = False) -> float:
    """Token-overlap F1. v2.0 scores two empty answers 1 (one empty: 0); v1.1 has no
    empty answers and scores no overlap 0."""
    gold_toks, pred_toks = _tokens(gold), _tokens(prediction)
    if v2 and (not gold_toks or not pred_toks):
        return float(gold_toks == pred_toks)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def questions(dataset: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """qid -> gold answer texts, from the official JSON's "data" list."""
    out = {}
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                out[qa["id"]] = [a["text"] for a in qa.get("answers", [])]
    return out


def score_v1(
    dataset: Sequence[Mapping[str, Any]], predictions: Mapping[str, str]
) -> dict[str, float]:
    """{"exact_match", "f1"} in percent, over every question of the dataset."""
    em = f1_sum = 0.0
    golds = questions(dataset)
    for qid, answers in golds.items():
        if qid not in predictions:
            continue  # scores 0, as the script says ("Unanswered question ...")
        em += max(exact(a, predictions[qid]) for a in answers)
        f1_sum += max(f1(a, predictions[qid]) for a in answers)
    return {"exact_match": 100.0 * em / len(golds), "f1": 100.0 * f1_sum / len(golds)}


def _best_threshold(
    preds: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    has_ans: Mapping[str, bool],
) -> tuple[float, float]:
    best = current = float(sum(1 for k in has_ans if not has_ans[k]))
    threshold = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1.0 if preds[qid] else 0.0
        current += diff
        if current > best:
            best, threshold = current, na_probs[qid]
    return 100.0 * best / len(scores), threshold


def score_v2(
    dataset: Sequence[Mapping[str, Any]],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """The evaluate-v2.0.py output dictionary (percent; thresholds as probabilities)."""
    golds = questions(dataset)
    has_ans = {}
    exact_raw, f1_raw = {}, {}
    for qid, texts in golds.items():
        # Answerable by the raw list, as the script decides: a gold "the" still makes
        # the question HasAns, though its only gold answer for EM / F1 becomes "".
        has_ans[qid] = bool(texts)
        answers = [t for t in texts if normalize_answer(t)] or [""]
        if qid not in predictions:
            continue
        exact_raw[qid] = max(exact(a, predictions[qid]) for a in answers)
        f1_raw[qid] = max(f1(a, predictions[qid], v2=True) for a in answers)
    given = na_probs is not None  # the script sweeps thresholds only with a file of them
    na_probs = dict(na_probs) if given else {k: 0.0 for k in predictions}
    missing = [q for q in exact_raw if q not in na_probs]
    if missing:
        raise ValueError(
            f"no no-answer probability for question {missing[0]!r} ({len(missing)} missing)"
        )

    def thresholded(raw: dict[str, float]) -> dict[str, float]:
        return {
            qid: float(not has_ans[qid]) if na_probs[qid] > na_prob_thresh else s
            for qid, s in raw.items()
        }

    exact_t, f1_t = thresholded(exact_raw), thresholded(f1_raw)
    out: dict[str, float] = {}

    def add(prefix: str, qids: list[str]) -> None:
        n = len(qids)
        out[f"{prefix}exact"] = 100.0 * sum(exact_t[q] for q in qids) / n if n else 0.0
        out[f"{prefix}f1"] = 100.0 * sum(f1_t[q] for q in qids) / n if n else 0.0
        out[f"{prefix}total"] = n

    add("", list(exact_t))
    has = [q for q in exact_t if has_ans[q]]
    no = [q for q in exact_t if not has_ans[q]]
    if has:
        add("HasAns_", has)
    if no:
        add("NoAns_", no)
    if given and exact_raw:
        out["best_exact"], out["best_exact_thresh"] = _best_threshold(
            predictions, exact_raw, na_probs, has_ans
        )
        out["best_f1"], out["best_f1_thresh"] = _best_threshold(
            predictions, f1_raw, na_probs, has_ans
        )
    return out
