"""Named-entity recognition: a tag for every word, on a pretrained encoder.

  heads: token_classifier
  loss:  cross-entropy over the labelled sub-tokens

Config keys (configs/finetune.py:conll2003 or :ner):
  finetune.data     tfds (CoNLL-2003) | conll:DIR (bertjax/data/conll.py)
  finetune.labels   the tag set; empty: TFDS's, or O and the B-/I- tags of the train
                    split's types
  finetune.label_all_pieces   False (default): a word's first sub-token carries its tag
                    and the others are ignored; True: every piece is labelled, a B-
                    word's continuations with I-

Words past max_seq_length are cut (predicted O, and counted in the scores' "truncated").
Predictions are read at each word's first sub-token and mapped back to words; scores
are entity-level micro precision / recall / F1 and F1 per type with conlleval's rules
(bertjax/scoring/entities.py); F1 is the main one. `predict` writes the test split as
CoNLL lines with the predicted tag appended.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bertjax import objectives
from bertjax.metrics import Mean
from bertjax.models.config import ModelConfig
from bertjax.scoring import entities
from bertjax.tasks.base import Context, LossFn, packing_metrics
from bertjax.tasks.finetune import Features, FinetuneTask

Array = jax.Array


class NER(FinetuneTask):
    name = "ner"
    per_token = True
    head = "token_classifier"
    main_metric = ("validation", "f1")

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._sentences: dict[str, list[Any]] = {}
        self._first: dict[str, list[np.ndarray]] = {}
        self._tags: tuple[str, ...] | None = None

    def heads(self, cfg: ModelConfig) -> tuple[str, ...]:
        return ("token_classifier",)

    def sentences(self, split: str) -> list[Any]:
        from bertjax.data import datasets

        if split not in self._sentences:
            self._sentences[split] = datasets.read_split("ner", self.config.finetune.data, split)
        return self._sentences[split]

    def tags(self) -> tuple[str, ...]:
        if self._tags is None:
            from bertjax.data import conll

            given = tuple(self.config.finetune.labels)
            if given:
                self._tags = given
            elif self.config.finetune.data == "tfds":
                self._tags = conll.tfds_tags()
            else:
                self._tags = conll.tag_set(self.sentences("train"))
        return self._tags

    def label_fields(self) -> dict[str, Any]:
        tags = self.tags()
        return {"num_labels": len(tags), "label_names": tags}

    def synthetic_labels(
        self, rng: np.random.Generator, batch_size: int, seq_len: int
    ) -> dict[str, np.ndarray]:
        """labels [B, L] int32 tags, label_weights [B, L] float32 (every position)."""
        tags = len(self.tags())
        return {
            "labels": rng.integers(0, tags, (batch_size, seq_len), dtype=np.int32),
            "label_weights": np.ones((batch_size, seq_len), np.float32),
        }

    def make_features(self, split: str) -> Features:
        from bertjax.data.glue import DatasetError

        tags = {t: i for i, t in enumerate(self.tags())}
        all_pieces = bool(self.config.finetune.label_all_pieces)
        tok = self.tokenizer().backend
        tok.enable_truncation(self._seq_len())
        ids, types, labels, weights, firsts = [], [], [], [], []
        try:
            for s in self.sentences(split):
                enc = tok.encode(list(s.words), is_pretokenized=True)
                word_ids = enc.word_ids
                first = np.full(len(s.words), -1, np.int32)  # -1: cut by truncation
                lab = np.zeros(len(enc.ids), np.int32)
                wt = np.zeros(len(enc.ids), np.float32)
                for t, w in enumerate(word_ids):
                    if w is None:
                        continue
                    is_first = first[w] < 0
                    if is_first:
                        first[w] = t
                    if not s.tags or not (is_first or all_pieces):
                        continue
                    tag = s.tags[w]
                    if not is_first and tag.startswith("B-"):
                        tag = "I-" + tag[2:]
                    if tag not in tags:
                        raise DatasetError(
                            f"{split} sentence {s.guid}: tag {tag!r} is not "
                            f"in the tag set ({', '.join(tags)})"
                        )
                    lab[t], wt[t] = tags[tag], 1.0
                ids.append(np.asarray(enc.ids, np.int32))
                types.append(np.zeros(len(enc.ids), np.int32))
                labels.append(lab)
                weights.append(wt)
                firsts.append(first)
        finally:
            tok.no_truncation()
        self._first[split] = firsts
        return Features(ids, types, {"labels": labels, "label_weights": weights})

    def loss_fn(self, model: Any, train: bool = True) -> LossFn:
        def loss_fn(
            params: Any, batch: Mapping[str, Any], rng: Array, aux_params: Any = None
        ) -> tuple[Array, dict[str, Mean]]:
            del aux_params
            logits = self.head_logits(model, params, batch, train, rng)  # [B, L, tags]
            w = batch["label_weights"] * token_weights(batch["weights"], batch["attention_mask"])
            loss, metrics = objectives.token_classification_loss(logits, batch["labels"], w)
            return loss, {**metrics, **packing_metrics(batch)}

        return loss_fn

    def predict_fn(self, model: Any) -> Any:
        def predict(params: Any, batch: Mapping[str, Any]) -> Array:
            logits = self.head_logits(model, params, batch, False, None)
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)

        return predict

    def word_tags(self, split: str, token_tags: np.ndarray) -> list[list[str]]:
        """[examples, L] predicted tag ids -> each sentence's tag per word (words cut by
        truncation: O)."""
        names = self.tags()
        self.features(split)
        return [
            [names[row[t]] if t >= 0 else "O" for t in first]
            for row, first in zip(token_tags, self._first[split], strict=True)
        ]

    def scores(self, split: str, token_tags: np.ndarray) -> dict[str, float]:
        gold = [list(s.tags) for s in self.sentences(split)]
        s = entities.score(gold, self.word_tags(split, token_tags))
        out = {"f1": s["f1"], "precision": s["precision"], "recall": s["recall"]}
        out.update({f"f1_{t}": v["f1"] for t, v in s["per_type"].items()})
        out["truncated"] = float(sum(int(np.sum(f < 0)) for f in self._first[split]))
        return out

    def write_predictions(self, ctx: Context, params: Any, split: str, path: str) -> None:
        """CoNLL lines with the predicted tag appended; a blank line between sentences."""
        predicted = self.word_tags(split, self.predicted(ctx, params, split))
        with open(path, "w", encoding="utf-8") as f:
            for s, tags in zip(self.sentences(split), predicted, strict=True):
                lines = s.lines or s.words
                f.writelines(f"{line} {tag}\n" for line, tag in zip(lines, tags, strict=True))
                f.write("\n")


def token_weights(weights: Array, attention_mask: Array) -> Array:
    """[B, L] each token's row weight: weights [B] per row, or [B, S] per packed
    sequence (read at each token's segment number; 0 at padding)."""
    if weights.ndim == 1:
        return weights[:, None] * jnp.ones(attention_mask.shape, weights.dtype)
    slot = jnp.maximum(attention_mask - 1, 0)
    return jnp.where(attention_mask > 0, jnp.take_along_axis(weights, slot, axis=1), 0)
