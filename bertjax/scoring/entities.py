"""Entity-level scores of tag sequences, with conlleval's chunk rules.

A chunk starts and ends where CoNLL-2000's conlleval.pl says (IOB1, IOB2 and IOBES tags
alike): an `I-X` after `O` or after another type starts a chunk, so ill-formed sequences
score as conlleval scores them. A chunk is correct when its type and both boundaries
match a gold chunk. Precision = correct / predicted chunks, recall = correct / gold
chunks, F1 their harmonic mean, micro-averaged over all chunks and per type; all as
fractions in [0, 1] (conlleval prints percentages).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

Chunk = tuple[str, int, int]  # (type, first token, last token + 1)


def split_tag(tag: str) -> tuple[str, str]:
    """ "B-PER" -> ("B", "PER"), "O" -> ("O", ""); ValueError for anything else."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in ("B", "I", "E", "S"):
        raise ValueError(f"tag {tag!r}: expected O or B-/I-/E-/S- followed by a type")
    return prefix, kind


def _ends(prev: str, tag: str, prev_type: str, kind: str) -> bool:
    return (
        prev in ("E", "S")
        or (prev in ("B", "I") and tag in ("B", "S", "O"))
        or (prev != "O" and prev_type != kind)
    )


def _starts(prev: str, tag: str, prev_type: str, kind: str) -> bool:
    return (
        tag in ("B", "S")
        or (prev in ("E", "S", "O") and tag in ("E", "I"))
        or (tag != "O" and prev_type != kind)
    )


def chunks(tags: Sequence[str]) -> list[Chunk]:
    """The chunks of one sentence's tags."""
    out: list[Chunk] = []
    prev, prev_type, start = "O", "", -1
    for i, tag in enumerate([*tags, "O"]):  # a sentence ends as if an O followed
        cur, kind = split_tag(tag)
        if start >= 0 and _ends(prev, cur, prev_type, kind):
            out.append((prev_type, start, i))
            start = -1
        if _starts(prev, cur, prev_type, kind):
            start = i
        prev, prev_type = cur, kind
    return out


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    p = correct / predicted if predicted else 0.0
    r = correct / gold if gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def score(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Micro and per-type precision / recall / F1 over sentences of tags.

    Returns {"precision", "recall", "f1", "gold_chunks", "predicted_chunks",
    "correct_chunks", "per_type": {type: {"precision", "recall", "f1", "support"
    (gold chunks)}}}.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    right, found, want = Counter(), Counter(), Counter()
    for i, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
        g_chunks, p_chunks = set(chunks(g)), set(chunks(p))
        right.update(c[0] for c in g_chunks & p_chunks)
        found.update(c[0] for c in p_chunks)
        want.update(c[0] for c in g_chunks)
    out: dict[str, Any] = {
        **_prf(sum(right.values()), sum(found.values()), sum(want.values())),
        "gold_chunks": sum(want.values()),
        "predicted_chunks": sum(found.values()),
        "correct_chunks": sum(right.values()),
    }
    out["per_type"] = {
        t: {**_prf(right[t], found[t], want[t]), "support": want[t]}
        for t in sorted(set(want) | set(found))
    }
    return out


def to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 (or mixed) tags -> IOB2: every chunk starts with B-, by the chunk rules above."""
    out = ["O"] * len(tags)
    for kind, start, end in chunks(tags):
        out[start] = f"B-{kind}"
        for i in range(start + 1, end):
            out[i] = f"I-{kind}"
    return out
