"""Top-k tokens for the mask token from a model directory (`python -m bertjax fill_mask`).

The model needs a head that predicts tokens: `mlm` (an MLM or pretraining checkpoint,
an ELECTRA generator alone) or ELECTRA's `generator` (the pair answers with it).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bertjax import checkpoint
from bertjax.models import build


def fill_mask(ckpt: str, text: str, top_k: int = 5) -> list[list[dict[str, Any]]]:
    """For each mask token in `text`, the top_k {token, token_id, score}, best first."""
    from bertjax.data.tokenizers import load_tokenizer

    if top_k < 1:
        raise ValueError(f"--top_k={top_k}: must be at least 1")
    cfg, params = checkpoint.load_model_dir(ckpt)
    head = next((h for h in ("mlm", "generator") if h in cfg.heads), None)
    if head is None:
        raise ValueError(f"{ckpt}: the model has no head that predicts tokens (its heads: "
                         f"{', '.join(cfg.heads) or 'none'}); fill_mask needs an MLM head: "
                         "import a *ForMaskedLM or *ForPreTraining checkpoint")
    tok_dir = checkpoint.tokenizer_dir(ckpt)
    if tok_dir is None:
        raise FileNotFoundError(f"{ckpt}: no tokenizer/ directory; fill_mask needs one")
    tok = load_tokenizer(tok_dir)
    ids = tok.encode(text)
    if len(ids) > cfg.max_position_embeddings - cfg.position_offset:
        raise ValueError(f"text is {len(ids)} tokens, longer than the model's "
                         f"{cfg.max_position_embeddings} positions")
    where = [i for i, t in enumerate(ids) if t == tok.mask_id]
    if not where:
        raise ValueError(f"the text has no mask token {tok.mask_token!r}")
    x = jnp.asarray([ids], jnp.int32)
    logits = build(cfg).apply({"params": params}, x, heads=(head,))[0][head]
    probs = np.asarray(jax.nn.softmax(logits[0, jnp.asarray(where)], axis=-1))  # [masks, vocab]
    results = []
    for row in probs[:, : tok.vocab_size]:
        best = np.argsort(-row, kind="stable")[:top_k]
        results.append([{"token": tok.decode([int(i)]), "token_id": int(i),
                         "score": float(row[i])} for i in best])
    return results
