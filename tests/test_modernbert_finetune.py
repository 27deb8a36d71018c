"""ModernBERT fine-tuned by bertjax on each task kind, exported, and read back by
transformers' ModernBertFor{SequenceClassification,TokenClassification,QuestionAnswering}
with the same logits (<= 1e-5) and dev score: tests/test_finetune_families.py's check,
run for the sixth family (its tiny model has a local layer: 32-token rows, window 8)."""

from __future__ import annotations

import os
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import test_finetune_families as families  # noqa: E402
from test_finetune_families import data  # noqa: E402, F401  (the module's data fixture)

from bertjax.models import modernbert  # noqa: E402

# The family's switches; its trained tokenizer (bpe-modernbert) has [PAD] at id 3;
# layer 0 global, layer 1 local.
families.FAMILY["modernbert"] = {
    **{
        k: v
        for k, v in modernbert.FAMILY.defaults.items()
        if k not in ("vocab_size", "max_position_embeddings")
    },
    "pad_token_id": 3,
    "local_window": 8,
}
families.PREFIX["modernbert"] = "ModernBert"


@pytest.mark.parametrize("kind", ["glue", "ner", "squad"])
def test_fine_tuned_and_exported_modernbert_matches_transformers(kind, data, tmp_path):  # noqa: F811
    # The shared check asserts the exported model's logits within 1e-5 of bertjax's and
    # the same dev score when transformers reads it back (test_finetune_families.py).
    families.test_fine_tuned_and_exported_model_matches_transformers(
        "modernbert", kind, data, tmp_path
    )
