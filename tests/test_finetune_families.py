"""Every family fine-tuned by bertjax, exported, and read back by transformers
(tests/familylib.py's check): for each classic family and each task kind (sequence
classification, token classification, extractive question answering), transformers'
class must give the same logits on the dev split (<= 1e-5, finite) and so the same dev
score as bertjax recorded.
"""

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
@pytest.mark.parametrize("family", list(familylib.FAMILY))
def test_fine_tuned_and_exported_model_matches_transformers(family, kind, data, tmp_path):
    # check asserts transformers' logits within 1e-5 of bertjax's and the same dev score.
    familylib.check(family, kind, data, tmp_path)
