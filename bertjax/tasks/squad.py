"""Extractive question answering: SQuAD v1.1 and v2.0, on a pretrained encoder.

  heads: span (a start and an end logit per token)
  loss:  mean of the start and end cross-entropies over the window's tokens

Config keys (configs/finetune.py:squad_v1 / squad_v2):
  finetune.data              tfds | json:DIR (bertjax/data/squad.py)
  finetune.doc_stride        128: tokens between the starts of consecutive windows of a
                             long context (Google's run_squad.py; transformers' `stride`
                             is instead the overlap between windows: here
                             window length - doc_stride)
  finetune.max_query_length  64: question tokens kept
  finetune.n_best, max_answer_length   20 and 30: candidate spans per window, longest
  finetune.null_score_diff_threshold   v2.0: predict no answer when the null score beats
                             the best span's by more than this (0.0)

A question becomes one window per doc_stride of its context: [CLS] question [SEP]
context window [SEP] (the family's own template). Training labels a window with the
answer's first and last tokens, or with [CLS] when the answer is not inside it (and for
unanswerable v2.0 questions). Prediction, as run_squad.py: the n_best start and end
logits of every window, spans inside the context, in order, at most max_answer_length
tokens, and starting at a token this window sees with the most context (the max-context
rule: a token in several windows is scored where min(left, right) context + 0.01 x the
window's length is largest); the best span's text is cut from the original context by
character offsets. v2.0's null score is the minimum over the windows of start + end at
[CLS]. Scores: the official evaluate scripts' (bertjax/scoring/squad.py), F1 the main
one; `predict` writes predictions.json (and null_odds.json for v2.0) in their formats.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from bertjax import objectives
from bertjax.metrics import Mean
from bertjax.models.config import ModelConfig
from bertjax.scoring import squad as squad_scores
from bertjax.tasks.base import Context, LossFn, packing_metrics
from bertjax.tasks.finetune import Features, FinetuneTask

Array = jax.Array


def windows(
    tok: Any,
    question: str,
    context: str,
    max_seq_length: int,
    doc_stride: int,
    max_query_length: int,
) -> list[Any]:
    """The tokenizers Encodings of a question's windows over its context."""
    b = tok.backend
    q = b.encode(question, add_special_tokens=False)
    if len(q.ids) > max_query_length:
        question = question[: q.offsets[max_query_length - 1][1]]
        q = b.encode(question, add_special_tokens=False)
    window = max_seq_length - len(q.ids) - b.num_special_tokens_to_add(True)
    if window < 1:
        raise ValueError(
            f"max_seq_length={max_seq_length} leaves no room for the context "
            f"after a {len(q.ids)}-token question"
        )
    b.enable_truncation(max_seq_length, stride=max(0, window - doc_stride), strategy="only_second")
    try:
        enc = b.encode(question, context)
    finally:
        b.no_truncation()
    return [enc, *enc.overflowing]


def context_tokens(enc: Any) -> np.ndarray:
    """Indices of a window's context tokens."""
    return np.asarray([i for i, s in enumerate(enc.sequence_ids) if s == 1], np.int64)


def answer_tokens(enc: Any, start_char: int, end_char: int) -> tuple[int, int] | None:
    """First and last token of the characters [start_char, end_char) in this window, or
    None when they are not all inside it."""
    ctx = context_tokens(enc)
    if not len(ctx):
        return None
    offsets = [enc.offsets[i] for i in ctx]
    if offsets[0][0] > start_char or offsets[-1][1] < end_char:
        return None
    first = next(int(ctx[j]) for j, (s, e) in enumerate(offsets) if e > start_char)
    last = next(int(ctx[j]) for j in range(len(ctx) - 1, -1, -1) if offsets[j][0] < end_char)
    return first, last


def span_text(context: str, enc: Any, first: int, last: int) -> str:
    """The context's characters from token `first` to token `last`, without the leading
    whitespace some tokenizers put in a word's offsets (byte-level BPE without offset
    trimming, as the released ModernBERT tokenizer.json)."""
    return context[enc.offsets[first][0] : enc.offsets[last][1]].lstrip()


def max_context(encs: list[Any]) -> list[np.ndarray]:
    """Per window, per token: whether this window gives the token its most context."""
    best: dict[tuple[int, int], tuple[float, int]] = {}
    for w, enc in enumerate(encs):
        ctx = context_tokens(enc)
        for j, i in enumerate(ctx):
            score = min(j, len(ctx) - 1 - j) + 0.01 * len(ctx)
            key = tuple(enc.offsets[i])
            if key not in best or score > best[key][0]:
                best[key] = (score, w)
    out = []
    for w, enc in enumerate(encs):
        flags = np.zeros(len(enc.ids), bool)
        for i in context_tokens(enc):
            flags[i] = best[tuple(enc.offsets[i])][1] == w
        out.append(flags)
    return out


class Squad(FinetuneTask):
    name = "squad"
    per_token = True
    head = "span"
    main_metric = ("validation", "f1")

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._questions: dict[str, list[Any]] = {}
        self._data: dict[str, list[Any]] = {}
        self._windows: dict[str, list[tuple[int, Any, np.ndarray]]] = {}
        self.left_out: dict[str, list[str]] = {}  # train questions not trained on

    @property
    def version(self) -> str:
        version = self.config.finetune.version
        if version not in ("v1.1", "v2.0"):
            raise ValueError(f"finetune.version={version!r}: expected v1.1 or v2.0")
        return version

    def heads(self, cfg: ModelConfig) -> tuple[str, ...]:
        return ("span",)

    def make_features(self, split: str) -> Features:
        from bertjax.data import datasets

        f = self.config.finetune
        questions, data = datasets.read_split("squad", f.data, split, version=self.version)
        self._questions[split], self._data[split] = questions, data
        ids, types, starts, ends, metas = [], [], [], [], []
        train = split == "train"
        misaligned = []
        for q_index, q in enumerate(questions):
            encs = windows(
                self.tokenizer(),
                q.question,
                q.context,
                self._seq_len(),
                int(f.doc_stride),
                int(f.max_query_length),
            )
            spans: list[tuple[int, int] | None] = [None] * len(encs)
            if train and not q.impossible:
                text, start = q.answers[0]
                spans = [answer_tokens(enc, start, start + len(text)) for enc in encs]
                if any(
                    span and span_text(q.context, enc, *span) != text.strip()
                    for enc, span in zip(encs, spans, strict=True)
                ):
                    misaligned.append(q.qid)
                    continue
            for enc, flag, span in zip(encs, max_context(encs), spans, strict=True):
                ids.append(np.asarray(enc.ids, np.int32))
                types.append(np.asarray(enc.type_ids, np.int32))
                starts.append(span[0] if span else 0)
                ends.append(span[1] if span else 0)
                metas.append((q_index, enc, flag))
        self._windows[split] = metas
        if misaligned:
            print(
                f"{f.data} {split}: {len(misaligned)} of {len(questions):,} answers do not "
                f"begin and end on token boundaries (e.g. id {misaligned[0]}); those "
                "questions are left out of training"
            )
        self.left_out[split] = misaligned
        return Features(
            ids, types, {"start": np.asarray(starts, np.int32), "end": np.asarray(ends, np.int32)}
        )

    def synthetic_labels(
        self, rng: np.random.Generator, batch_size: int, seq_len: int
    ) -> dict[str, np.ndarray]:
        """start, end [B] int32: spans of up to 30 tokens inside the window."""
        start = rng.integers(0, seq_len, batch_size, dtype=np.int32)
        end = np.minimum(start + rng.integers(0, 30, batch_size), seq_len - 1)
        return {"start": start, "end": end.astype(np.int32)}

    def loss_fn(self, model: Any, train: bool = True) -> LossFn:
        def loss_fn(
            params: Any, batch: Mapping[str, Any], rng: Array, aux_params: Any = None
        ) -> tuple[Array, dict[str, Mean]]:
            del aux_params
            logits = self.head_logits(model, params, batch, train, rng)  # [B, L, 2]
            loss, metrics = objectives.span_loss(
                logits, batch["start"], batch["end"], batch["attention_mask"], batch["weights"]
            )
            return loss, {**metrics, **packing_metrics(batch)}

        return loss_fn

    def answers(self, split: str, logits: np.ndarray) -> tuple[dict[str, str], dict[str, float]]:
        """({qid: answer text}, v2.0 {qid: null score - best span score}) from the
        windows' [windows, L, 2] logits, as run_squad.py's write_predictions."""
        f = self.config.finetune
        n_best, longest = int(f.n_best), int(f.max_answer_length)
        self.features(split)
        questions = self._questions[split]
        best: dict[int, tuple[float, str]] = {}
        null: dict[int, float] = {}
        for (q_index, enc, flags), row in zip(self._windows[split], logits, strict=True):
            n = len(enc.ids)
            start, end = row[:n, 0], row[:n, 1]
            null[q_index] = min(null.get(q_index, np.inf), float(start[0] + end[0]))
            is_ctx = np.asarray([s == 1 for s in enc.sequence_ids])
            for s in np.argsort(-start, kind="stable")[:n_best]:
                if not (is_ctx[s] and flags[s]):
                    continue
                for e in np.argsort(-end, kind="stable")[:n_best]:
                    if not is_ctx[e] or e < s or e - s + 1 > longest:
                        continue
                    score = float(start[s] + end[e])
                    if q_index not in best or score > best[q_index][0]:
                        text = span_text(questions[q_index].context, enc, int(s), int(e))
                        best[q_index] = (score, text)
        predictions, odds = {}, {}
        threshold = float(f.null_score_diff_threshold)
        for q_index, q in enumerate(questions):
            if q_index not in null:
                continue
            score, text = best.get(q_index, (-np.inf, ""))
            if self.version == "v2.0":
                odds[q.qid] = null[q_index] - score
                predictions[q.qid] = "" if odds[q.qid] > threshold else text
            else:
                predictions[q.qid] = text
        return predictions, odds

    def scores(self, split: str, logits: np.ndarray) -> dict[str, float]:
        predictions, odds = self.answers(split, logits)
        data = self._data[split]
        if self.version == "v1.1":
            return squad_scores.score_v1(data, predictions)
        return {k: float(v) for k, v in squad_scores.score_v2(data, predictions, odds).items()}

    def test_files(self) -> dict[str, str]:
        """SQuAD's test set is hidden: `predict` writes the dev split's predictions (for
        other questions, put their file in place of dev-*.json)."""
        return {"validation": "predictions.json"}

    def write_predictions(self, ctx: Context, params: Any, split: str, path: str) -> None:
        """predictions.json ({qid: text}) and, for v2.0, null_odds.json beside it."""
        predictions, odds = self.answers(split, self.predicted(ctx, params, split))
        with open(path, "w", encoding="utf-8") as out:
            json.dump(predictions, out, ensure_ascii=False, indent=2)
        if self.version == "v2.0":
            with open(os.path.join(os.path.dirname(path), "null_odds.json"), "w") as out:
                json.dump(odds, out, indent=2)
