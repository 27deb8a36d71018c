"""MLM evaluation across lengths: masked-token accuracy and loss of a model directory on
held-out documents cut into rows of several lengths (`evaluate --lengths`), so that a
context-extension phase shows what it bought (NeoBERT and ModernBERT report MLM quality
on long documents).

The same tokens are scored at every length: each document is tokenized once, a fixed
share of its tokens chosen (`mask_rate`, by a generator keyed by the seed and the
document's number; special tokens never) and replaced by [MASK] (all of them: no
random or kept tokens, so the numbers are deterministic), and the document is cut into
consecutive windows of length - 2 tokens, each a row [CLS] window [SEP]. A longer length
only gives each masked token more of its document as context. Per length:

  accuracy       masked tokens whose argmax prediction is the original token / all
  loss           mean cross-entropy (nats) of the original tokens
  masked_tokens  tokens scored (the same at every length)
  rows           rows the documents made

Documents: a text file, one sentence (or paragraph) a line, documents separated by an
empty line (the `bert:` source format of `prepare data`). Length 0 stands for the
longest the model takes (model.max_position_embeddings less its position offset).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bertjax import paths


def read_documents(path: str) -> list[str]:
    """The documents of a text file (empty lines between them), each one string."""
    docs, lines = [], []
    for line in paths.read_text(path).splitlines():
        if line.strip():
            lines.append(line.strip())
        elif lines:
            docs.append(" ".join(lines))
            lines = []
    if lines:
        docs.append(" ".join(lines))
    if not docs:
        raise ValueError(f"--documents={path}: no text")
    return docs


def choose_masked(
    ids: np.ndarray, special: set[int], rate: float, seed: int, index: int
) -> np.ndarray:
    """[n] bool: round(rate x the non-special tokens) of them (at least one when any),
    chosen by a generator keyed by (seed, index)."""
    candidates = np.flatnonzero(~np.isin(ids, list(special)))
    k = min(len(candidates), max(1, int(round(rate * len(candidates))))) if len(candidates) else 0
    chosen = np.random.default_rng([seed, index]).choice(candidates, k, replace=False)
    masked = np.zeros(len(ids), bool)
    masked[chosen] = True
    return masked


def windows(
    ids: np.ndarray,
    masked: np.ndarray,
    length: int,
    cls_id: int,
    sep_id: int,
    pad_id: int,
    mask_id: int,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Rows of one document at `length`: (input ids [length] with [MASK] in place,
    positions of the masked tokens in the row, their original ids)."""
    if length < 3:
        raise ValueError(f"--lengths: {length} leaves no room for a token between [CLS] and [SEP]")
    step, rows = length - 2, []
    for start in range(0, len(ids), step):
        chunk, hidden = ids[start : start + step], masked[start : start + step]
        row = np.full(length, pad_id, np.int32)
        row[0], row[1 : 1 + len(chunk)], row[1 + len(chunk)] = cls_id, chunk, sep_id
        positions = np.flatnonzero(hidden) + 1
        row[positions] = mask_id
        rows.append((row, positions.astype(np.int32), chunk[hidden].astype(np.int32)))
    return rows


def score(
    rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    pad_id: int,
    logits_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    batch_size: int = 8,
) -> dict[str, float]:
    """{accuracy, loss, masked_tokens, rows} of `rows` (`windows`) under `logits_fn`
    (input_ids [B, L], attention_mask [B, L], positions [B, P] -> logits [B, P, V])."""
    rows = [r for r in rows if len(r[1])]
    width = max((len(r[1]) for r in rows), default=1)  # one P per length: one compile
    correct, nll, count = 0, 0.0, 0
    for at in range(0, len(rows), batch_size):
        part = rows[at : at + batch_size]
        part = part + [part[-1]] * (batch_size - len(part))  # a full batch; repeats unscored
        ids = np.stack([r[0] for r in part])
        positions = np.zeros((batch_size, width), np.int32)
        for i, r in enumerate(part):
            positions[i, : len(r[1])] = r[1]
        logits = np.asarray(logits_fn(ids, (ids != pad_id).astype(np.int32), positions), np.float64)
        for i, r in enumerate(part[: len(rows) - at]):
            z = logits[i, : len(r[1])]
            logp = z - z.max(-1, keepdims=True)
            logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
            nll -= float(logp[np.arange(len(r[2])), r[2]].sum())
            correct += int((z.argmax(-1) == r[2]).sum())
            count += len(r[2])
    return {
        "accuracy": correct / max(count, 1),
        "loss": nll / max(count, 1),
        "masked_tokens": count,
        "rows": len(rows),
    }


def evaluate(
    model_dir: str,
    documents: str,
    lengths: Sequence[int],
    mask_rate: float = 0.15,
    seed: int = 0,
    batch_size: int = 8,
) -> dict[str, dict[str, float]]:
    """{"mlm@LENGTH": scores} of a model directory's MLM head (module docstring)."""
    import jax

    from bertjax import modeldir
    from bertjax.models import build

    if not 0 < mask_rate < 1:
        raise ValueError(f"--mask_rate={mask_rate}: must be in (0, 1)")
    cfg, params = modeldir.load(model_dir)
    if "mlm" not in cfg.heads:
        raise ValueError(
            f"--checkpoint={model_dir}: the model has no mlm head (its heads: "
            f"{', '.join(cfg.heads) or 'none'})"
        )
    tok = modeldir.load_tokenizer(model_dir)
    if tok is None:
        raise ValueError(f"--checkpoint={model_dir}: no tokenizer/ to read the documents with")
    longest = cfg.max_position_embeddings - cfg.position_offset
    lengths = [int(n) or longest for n in lengths]
    too_long = [n for n in lengths if n > longest]
    if too_long:
        raise ValueError(
            f"--lengths: {too_long[0]} is longer than the model takes "
            f"(model.max_position_embeddings={cfg.max_position_embeddings})"
        )
    docs = [
        np.asarray(tok.encode(d, add_special_tokens=False), np.int32)
        for d in read_documents(documents)
    ]
    special = set(tok.special_ids())
    masked = [choose_masked(d, special, mask_rate, seed, i) for i, d in enumerate(docs)]
    model = build(cfg)
    apply = jax.jit(
        lambda p, ids, mask, pos: model.apply(
            {"params": p}, ids, None, mask, masked_positions=pos, heads=("mlm",)
        )[0]["mlm"]
    )
    out: dict[str, dict[str, Any]] = {}
    for length in lengths:
        rows = [
            r
            for d, m in zip(docs, masked, strict=True)
            for r in windows(d, m, length, tok.cls_id, tok.sep_id, tok.pad_id, tok.mask_id)
        ]
        out[f"mlm@{length}"] = score(
            rows, tok.pad_id, lambda i, a, p: apply(params, i, a, p), batch_size
        )
    return out
