r"""`python -m bertjax fill_mask`: top-k tokens for the mask token, one JSON line each.

  python -m bertjax fill_mask --checkpoint=CKPT --top_k=5 "Paris is the [MASK] of France."

Use the family's own mask token ([MASK], or <mask> for RoBERTa). Each line is
{"token": str, "token_id": int, "score": float}, best first; with several mask
tokens in the text each line also carries "mask": its index (0-based).
The model needs a head that predicts tokens: `mlm` (an MLM or pretraining checkpoint,
an ELECTRA generator alone) or ELECTRA's `generator` (the pair answers with it); a model
without one (a bare encoder, a classifier) is refused in one line.
"""

from __future__ import annotations

import json
from typing import Any

from absl import flags

from bertjax.commands import flags as common

_TOP_K = flags.DEFINE_integer("top_k", 5, "How many predictions per mask token.")

HELP = {"fill_mask": common.Usage((common.CHECKPOINT, _TOP_K), "conversion.md", '"TEXT"')}


def fill_mask(ckpt: str, text: str, top_k: int = 5) -> list[list[dict[str, Any]]]:
    """For each mask token in `text`, the top_k {token, token_id, score}, best first."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bertjax import modeldir
    from bertjax.models import build

    if top_k < 1:
        raise ValueError(f"--top_k={top_k}: must be at least 1")
    cfg, params = modeldir.load(ckpt)
    head = next((h for h in ("mlm", "generator") if h in cfg.heads), None)
    if head is None:
        raise ValueError(
            f"{ckpt}: the model has no head that predicts tokens (its heads: "
            f"{', '.join(cfg.heads) or 'none'}); fill_mask needs an MLM head: "
            "import a *ForMaskedLM or *ForPreTraining checkpoint"
        )
    tok = modeldir.load_tokenizer(ckpt)
    if tok is None:
        raise FileNotFoundError(f"{ckpt}: no tokenizer/ directory; fill_mask needs one")
    ids = tok.encode(text)
    if len(ids) > cfg.max_position_embeddings - cfg.position_offset:
        raise ValueError(
            f"text is {len(ids)} tokens, longer than the model's "
            f"{cfg.max_position_embeddings} positions"
        )
    where = [i for i, t in enumerate(ids) if t == tok.mask_id]
    if not where:
        raise ValueError(f"the text has no mask token {tok.mask_token!r}")
    x = jnp.asarray([ids], jnp.int32)
    logits = build(cfg).apply({"params": params}, x, heads=(head,))[0][head]
    probs = np.asarray(jax.nn.softmax(logits[0, jnp.asarray(where)], axis=-1))  # [masks, vocab]
    results = []
    for row in probs[:, : tok.vocab_size]:
        best = np.argsort(-row, kind="stable")[:top_k]
        results.append(
            [
                {"token": tok.decode([int(i)]), "token_id": int(i), "score": float(row[i])}
                for i in best
            ]
        )
    return results


def main(argv: list[str]) -> None:
    texts = argv[1:]
    if len(texts) != 1:
        raise ValueError('give exactly one text argument, e.g. "Paris is the [MASK] of France."')
    results = fill_mask(common.model_dir(common.CHECKPOINT), texts[0], _TOP_K.value)
    for m, preds in enumerate(results):
        for p in preds:
            print(json.dumps({**p, "mask": m} if len(results) > 1 else p, ensure_ascii=False))
