r"""`python -m bertjax fill_mask`: top-k tokens for the mask token, one JSON line each.

  python -m bertjax fill_mask --checkpoint=CKPT --top_k=5 "Paris is the [MASK] of France."

Use the family's own mask token ([MASK], or <mask> for RoBERTa). Each line is
{"token": str, "token_id": int, "score": float}, best first; with several mask
tokens in the text each line also carries "mask": its index (0-based).
ELECTRA checkpoints answer with the generator.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from bertjax import checkpoint, cli
from bertjax.models import build

_TOP_K = flags.DEFINE_integer("top_k", 5, "How many predictions per mask token.")


def fill_mask(ckpt: str, text: str, top_k: int = 5) -> list[list[dict[str, Any]]]:
    """For each mask token in `text`, the top_k {token, token_id, score}, best first."""
    from bertjax.data.tokenizers import load_tokenizer

    if top_k < 1:
        raise ValueError(f"--top_k={top_k}: must be at least 1")
    cfg, params = checkpoint.load_model_dir(ckpt)
    tok_dir = checkpoint.tokenizer_dir(ckpt)
    if tok_dir is None:
        raise FileNotFoundError(f"{ckpt}: no tokenizer/ directory; fill_mask needs one")
    tok = load_tokenizer(tok_dir)
    ids = tok.encode(text)
    if len(ids) > cfg.max_position_embeddings - (cfg.pad_token_id + 1
                                                 if cfg.positions_from_padding else 0):
        raise ValueError(f"text is {len(ids)} tokens, longer than the model's "
                         f"{cfg.max_position_embeddings} positions")
    where = [i for i, t in enumerate(ids) if t == tok.mask_id]
    if not where:
        raise ValueError(f"the text has no mask token {tok.mask_token!r}")
    model = build(cfg)
    x = jnp.asarray([ids], jnp.int32)
    if cfg.family == "electra":
        logits, _ = model.apply({"params": params}, x, method=model.generate)
    else:
        logits = model.apply({"params": params}, x)[0]["mlm"]
    probs = np.asarray(jax.nn.softmax(logits[0, jnp.asarray(where)], axis=-1))  # [masks, vocab]
    results = []
    for row in probs[:, : tok.vocab_size]:
        best = np.argsort(-row, kind="stable")[:top_k]
        results.append([{"token": tok.decode([int(i)]), "token_id": int(i),
                         "score": float(row[i])} for i in best])
    return results


def main(argv: list[str]) -> None:
    texts = argv[1:]
    if len(texts) != 1:
        raise ValueError('give exactly one text argument, e.g. "Paris is the [MASK] of France."')
    results = fill_mask(cli.required(cli.CHECKPOINT), texts[0], _TOP_K.value)
    for m, preds in enumerate(results):
        for p in preds:
            print(json.dumps({**p, "mask": m} if len(results) > 1 else p, ensure_ascii=False))
