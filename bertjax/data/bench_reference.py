"""The reference of `bench data` (bench.py): transformers' `DataCollatorForLanguageModeling`
(mlm_probability 0.15; `whole_word_mask=True` for word-level strategies) timed on the
same examples as the pipeline, pre-tokenized and held in memory. transformers and torch
are imported only here; they are not runtime dependencies.
"""

from __future__ import annotations

import itertools
import time
import warnings
from typing import Any

import numpy as np

# Word-level strategies are compared with the collator's whole-word masking, the
# closest it has (it has no n-gram or span masking).
_WORD_LEVEL = ("whole_word", "ngram", "span")


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def time_reference(
    examples: list[list[int]], tokenizer_dir: str, batch_size: int, strategy: str, seconds: float
) -> dict[str, Any]:
    """transformers' DataCollatorForLanguageModeling over `examples`, batch by batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import transformers
        from transformers import DataCollatorForLanguageModeling

        from bertjax.data.masking import word_start_table
        from bertjax.data.tokenizers import load_tokenizer

        hf_tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
        whole_word = strategy in _WORD_LEVEL
        tensors = "np"
        collator = DataCollatorForLanguageModeling(
            tokenizer=hf_tok,
            mlm_probability=0.15,
            whole_word_mask=whole_word,
            return_tensors=tensors,
            seed=0,
        )
    if whole_word:
        # The v5 collator finds words from offset mappings, and pads nothing but
        # input_ids, so it gets examples as a fast tokenizer returns them with
        # padding="max_length", return_offsets_mapping and return_special_tokens_mask.
        # The offsets' gaps mark exactly the word starts our Masker uses.
        ours = load_tokenizer(tokenizer_dir)
        starts = word_start_table(ours)
        special = np.zeros(ours.vocab_size, dtype=bool)
        special[list(ours.special_ids())] = True
        length = max(len(ids) for ids in examples)
        inputs: list[Any] = [
            _tokenizer_output(ids, starts, special, length, ours.pad_id) for ids in examples
        ]
        name = "DataCollatorForLanguageModeling(whole_word_mask=True, mlm_probability=0.15)"
        form = "padded tokenizer outputs with offset_mapping and special_tokens_mask"
    else:
        inputs = examples
        name = "DataCollatorForLanguageModeling(mlm_probability=0.15)"
        form = "lists of ids"
    batches = [
        inputs[i : i + batch_size] for i in range(0, len(inputs) - batch_size + 1, batch_size)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in batches[:2]:  # warm-up
            collator(b)
        rows = tokens = 0
        t0 = time.perf_counter()
        for b in itertools.cycle(batches):
            out = collator(b)
            rows += out["input_ids"].shape[0]
            tokens += sum(sum(x["attention_mask"]) if isinstance(x, dict) else len(x) for x in b)
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                break
    return {
        "name": name,
        "tensors": tensors,
        "form": form,
        "seq_per_s": rows / elapsed,
        "tokens_per_s": tokens / elapsed,
        "seconds": elapsed,
    }


def _tokenizer_output(
    ids: list[int], starts: np.ndarray, special: np.ndarray, length: int, pad_id: int
) -> dict[str, list]:
    """What a fast tokenizer returns for `ids` with padding to `length`, offsets and the
    special-tokens mask: a word start leaves a one-character gap after the previous
    token, continuation pieces follow without one."""
    arr = np.asarray(ids)
    n = arr.size
    is_special = special[arr]
    width = np.where(is_special, 0, 1)
    gap = (starts[arr] | is_special).astype(np.int64)
    begin = np.cumsum(gap + width) - width
    offsets = np.zeros((length, 2), dtype=np.int64)
    offsets[:n, 0] = begin
    offsets[:n, 1] = begin + width
    offsets[:n][is_special] = 0
    return {
        "input_ids": list(ids) + [pad_id] * (length - n),
        "attention_mask": [1] * n + [0] * (length - n),
        "special_tokens_mask": is_special.astype(np.int64).tolist() + [1] * (length - n),
        "offset_mapping": offsets.tolist(),
    }
