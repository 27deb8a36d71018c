"""ModernBERT fine-tuned by bertjax on each task kind, exported, and read back by
transformers' ModernBertFor{SequenceClassification,TokenClassification,QuestionAnswering}
with the same logits (<= 1e-5) and dev score: tests/familylib.py's check, run for the
sixth family (its tiny model has a local layer: 32-token rows, window 8)."""

from __future__ import annotations

import os
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))

import familylib  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return familylib.write_data(tmp_path_factory.mktemp("family_data"))


@pytest.mark.parametrize("kind", ["glue", "ner", "squad"])
def test_fine_tuned_and_exported_modernbert_matches_transformers(kind, data, tmp_path):
    # check asserts transformers' logits within 1e-5 of bertjax's and the same dev score.
    familylib.check("modernbert", kind, data, tmp_path)
