"""MLM evaluation across lengths (bertjax/tools/mlm_lengths.py, `evaluate --lengths`):
rows and scores on hand-built cases, then a tiny model directory end to end."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import trainlib

from bertjax.tools import mlm_lengths

CLS, SEP, PAD, MASK = 1, 2, 0, 3


def test_windows_hand_built():
    ids = np.arange(10, 20, dtype=np.int32)  # one document of 10 tokens
    masked = np.zeros(10, bool)
    masked[[2, 7]] = True  # tokens 12 and 17
    rows = mlm_lengths.windows(ids, masked, 6, CLS, SEP, PAD, MASK)  # 4 tokens a row
    want = [
        ([1, 10, 11, 3, 13, 2], [3], [12]),
        ([1, 14, 15, 16, 3, 2], [4], [17]),
        ([1, 18, 19, 2, 0, 0], [], []),
    ]
    assert len(rows) == len(want)
    for (row, pos, orig), (w_row, w_pos, w_orig) in zip(rows, want, strict=True):
        assert row.tolist() == w_row and pos.tolist() == w_pos and orig.tolist() == w_orig
    # One row at 12: the same two tokens, more context.
    ((row, pos, orig),) = mlm_lengths.windows(ids, masked, 12, CLS, SEP, PAD, MASK)
    assert pos.tolist() == [3, 8] and orig.tolist() == [12, 17]


def test_scores_hand_computed():
    # p = (0.5, 0.25, 0.25, 0) everywhere: a token 0 costs ln 2 and is predicted, a token
    # 1 costs ln 4 and is not.
    probs = np.array([0.5, 0.25, 0.25, 1e-30])

    def logits_fn(ids, mask, positions):
        return np.broadcast_to(np.log(probs), (*positions.shape, 4))

    rows = [
        (np.array([1, 3, 2, 0]), np.array([1]), np.array([0])),
        (np.array([1, 3, 3, 2]), np.array([1, 2]), np.array([1, 1])),
        (np.array([1, 5, 2, 0]), np.array([], np.int32), np.array([], np.int32)),
    ]
    got = mlm_lengths.score(rows, PAD, logits_fn, batch_size=2)
    assert got["masked_tokens"] == 3 and got["rows"] == 2  # the empty row is not scored
    assert got["accuracy"] == pytest.approx(1 / 3)
    assert got["loss"] == pytest.approx((math.log(2) + 2 * math.log(4)) / 3)


def test_choose_masked_skips_special_tokens():
    ids = np.array([CLS, 10, 11, 12, 13, SEP, 14, 15, 16, 17, 18])
    masked = mlm_lengths.choose_masked(ids, {CLS, SEP}, 0.3, 0, 0)
    assert masked.sum() == 3  # round(0.3 x 9)
    assert not masked[[0, 5]].any()
    np.testing.assert_array_equal(masked, mlm_lengths.choose_masked(ids, {CLS, SEP}, 0.3, 0, 0))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random BERT with an MLM head (64 positions) and a WordPiece tokenizer."""
    from bertjax import modeldir
    from bertjax.commands.init import init_params
    from bertjax.data.tokenizers import train_wordpiece
    from bertjax.models import ModelConfig

    root = tmp_path_factory.mktemp("lengths")
    corpus = trainlib.write_corpus(str(root / "corpus.txt"), n_docs=30)
    tok = train_wordpiece(open(corpus).read().splitlines(), 150)
    cfg = ModelConfig(family="bert", vocab_size=160, heads=("mlm",), **trainlib.TINY_MODEL)
    out = str(root / "model")
    modeldir.save(out, cfg, init_params(cfg, 0), tok)
    return out, corpus


@pytest.mark.integration  # a training run, a command or prepared data
def test_a_model_directory_at_three_lengths(model_dir, tmp_path):
    path, corpus = model_dir
    report = tmp_path / "scores.json"
    r = trainlib.run(
        [
            sys.executable,
            "-m",
            "bertjax",
            "evaluate",
            f"--checkpoint={path}",
            f"--documents={corpus}",
            "--lengths=16,32,0",
            f"--out={report}",
        ]
    )
    assert r.returncode == 0, r.stderr[-2000:]
    scores = json.loads(report.read_text())
    assert list(scores) == ["mlm@16", "mlm@32", "mlm@64"]  # 0: 64 positions
    counts = {s["masked_tokens"] for s in scores.values()}
    assert len(counts) == 1 and counts.pop() > 0  # the same tokens at every length
    assert scores["mlm@16"]["rows"] > scores["mlm@32"]["rows"] >= scores["mlm@64"]["rows"]
    for s in scores.values():
        assert 0 <= s["accuracy"] <= 1 and s["loss"] > 0


@pytest.mark.integration  # a training run, a command or prepared data
@pytest.mark.parametrize(
    "lengths,message",
    [
        ([128], "--lengths: 128 is longer than the model takes"),
        ([2], "--lengths: 2 leaves no room"),
    ],
)
def test_bad_lengths_are_one_line(model_dir, lengths, message):
    path, corpus = model_dir
    with pytest.raises(ValueError, match=message):
        mlm_lengths.evaluate(path, corpus, lengths)
