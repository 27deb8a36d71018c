r"""`python -m bertjax fill_mask`: top-k tokens for the mask token, one JSON line each.

  python -m bertjax fill_mask --checkpoint=CKPT --top_k=5 "Paris is the [MASK] of France."

Use the family's own mask token ([MASK], or <mask> for RoBERTa). Each line is
{"token": str, "token_id": int, "score": float}, best first; with several mask
tokens in the text each line also carries "mask": its index (0-based).
ELECTRA pairs answer with the generator; a model without a token-predicting head
(a bare encoder, a classifier) is refused in one line (bertjax/fill_mask.py).
"""

from __future__ import annotations

import json

from absl import flags

from bertjax.commands import flags as common
from bertjax.fill_mask import fill_mask

_TOP_K = flags.DEFINE_integer("top_k", 5, "How many predictions per mask token.")


def main(argv: list[str]) -> None:
    texts = argv[1:]
    if len(texts) != 1:
        raise ValueError('give exactly one text argument, e.g. "Paris is the [MASK] of France."')
    results = fill_mask(common.required(common.CHECKPOINT), texts[0], _TOP_K.value)
    for m, preds in enumerate(results):
        for p in preds:
            print(json.dumps({**p, "mask": m} if len(results) > 1 else p, ensure_ascii=False))
