"""The packer (bertjax/data/packer.py) and packed pretraining batches from the pipeline,
against references written here: a plain best-fit, the packed layout written by hand
(packlib.layout), and the same pipeline unpacked."""

from __future__ import annotations

import numpy as np
import packlib
import pytest
from datalib import DYN, take, write_data

from bertjax.data import packer
from bertjax.data.manifest import Manifest
from bertjax.data.pipeline import Pipeline, PipelineConfig


def reference_best_fit(lengths, row_length, max_per_row=0):
    """Best-fit decreasing, plainly: longest first (ties by index), into the row with
    the least room that holds it (ties: the row opened first), else a new row."""
    rows, room = [], []
    for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
        fit = [
            (room[r], r)
            for r in range(len(rows))
            if room[r] >= lengths[i] and (not max_per_row or len(rows[r]) < max_per_row)
        ]
        if fit:
            r = min(fit)[1]
        else:
            r = len(rows)
            rows.append([])
            room.append(row_length)
        rows[r].append(i)
        room[r] -= lengths[i]
    return sorted(sorted(r) for r in rows)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("max_per_row", [0, 3])
def test_best_fit_is_plain_best_fit_decreasing(seed, max_per_row):
    lengths = np.random.default_rng(seed).integers(1, 129, 300).tolist()
    rows = packer.pack(lengths, 128, "best_fit", max_per_row)
    assert rows == reference_best_fit(lengths, 128, max_per_row)
    assert sorted(i for r in rows for i in r) == list(range(300))  # each exactly once
    assert all(sum(lengths[i] for i in r) <= 128 for r in rows)
    assert packer.pack(lengths, 128, "best_fit", max_per_row) == rows  # a pure function
    if not max_per_row:  # best fit decreasing: within 11/9 of the fewest rows, + 1
        assert len(rows) <= 11 / 9 * (sum(lengths) / 128) + 1


def test_first_fit_keeps_the_order_and_budgets_hold():
    lengths, costs = [60, 70, 50, 10, 128, 5], [3, 1, 3, 1, 2, 1]
    assert packer.pack(lengths, 128, "first_fit") == [[0, 2, 3, 5], [1], [4]]
    rows = packer.pack(lengths, 128, "first_fit", costs=costs, budget=4)
    assert rows == [[0, 3], [1, 2], [4], [5]]  # 5 fits rows 0 and 1 by tokens, not cost
    assert all(sum(costs[i] for i in r) <= 4 for r in rows)


def test_a_sequence_longer_than_the_row_is_an_error_naming_it():
    with pytest.raises(ValueError, match="sequence 2 has 130 tokens, more than the row's 128"):
        packer.pack([5, 6, 130], 128)


def test_pack_rows_writes_the_layout_by_hand():
    cfg = packlib.tiny("bert")
    seqs = packlib.sequences(cfg)
    single = tuple((i,) for i in range(len(seqs)))
    unpacked, _ = packlib.layout(seqs, single, cfg.pad_token_id, False)
    want, _ = packlib.layout(seqs, packlib.ROWS, cfg.pad_token_id, True)
    got = packer.pack_rows(
        unpacked,
        packlib.ROWS,
        len(packlib.ROWS),
        3,
        6,
        cfg.pad_token_id,
        token_keys=("token_type_ids", "tags", "tag_weights"),
    )
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    packer.check(got)


@pytest.mark.parametrize(
    "row",
    [
        [1, 1, 3, 3, 0],
        [1, 2, 1, 0, 0],
        [0, 1, 1, 0, 0],
        [1, 1, 0, 2, 0],
        [2, 2, 0, 0, 0],
        [1, -1, 0, 0, 0],
    ],
)
def test_inconsistent_segment_numbers_are_refused(row):
    mask = np.asarray([[1, 1, 2, 0, 0], row], np.int32)
    with pytest.raises(ValueError, match="packed batch row 1: segment numbers"):
        packer.check({"attention_mask": mask, "num_sequences": np.asarray([2, max(row)], np.int32)})


def test_consistent_segment_numbers_pass_and_counts_must_match():
    mask = np.asarray([[1, 1, 2, 3, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], np.int32)
    packer.check({"attention_mask": mask, "num_sequences": np.asarray([3, 1, 0])})
    with pytest.raises(ValueError, match="row 0"):
        packer.check({"attention_mask": mask, "num_sequences": np.asarray([2, 1, 0])})


# ------------------------------------------------------------------ the pipeline


def _pipe(d, packing="best_fit", **kw):
    config = dict(
        split="train",
        global_batch_size=16,
        seed=3,
        shuffle_buffer=30,
        packing=packing,
        packing_row_multiple=2,
    )
    config.update(kw)
    return Pipeline(Manifest.read(d), PipelineConfig(**config))


@pytest.fixture(scope="module")
def static_data(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("static"))
    write_data(d, 80, 3, max_seq_length=16, static=True, max_predictions=3)
    return d


def test_a_packed_step_holds_the_unpacked_steps_sequences(static_data):
    packed, plain = take(_pipe(static_data), 8), take(_pipe(static_data, "off"), 8)
    rows = 0
    for p, u in zip(packed, plain, strict=True):
        packer.check(p)
        assert p["pair_labels"].shape == (len(p["input_ids"]), 16)
        assert p["masked_lm_positions"].shape == (len(p["input_ids"]), 3)
        assert packlib.packed_sequences(p) == packlib.packed_sequences(u)
        rows += len(p["input_ids"])
    assert rows < 8 * 16  # fewer rows than sequences: the point of packing


def test_packed_pipeline_resumes_exactly(tmp_path):
    write_data(str(tmp_path), 96, 4)
    kw = dict(masking=DYN)
    full = take(_pipe(str(tmp_path), **kw), 7)
    resumed = take(_pipe(str(tmp_path), start_step=4, **kw), 3)
    again = take(_pipe(str(tmp_path), **kw), 7)
    for expected, got in zip(full[4:], resumed, strict=True):
        assert sorted(expected) == sorted(got)
        for key in expected:
            np.testing.assert_array_equal(expected[key], got[key], err_msg=key)
    for a, b in zip(full, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert all(b["masked_lm_positions"].shape[1] == 3 for b in full)


# ------------------------------------------------------------- a packed pretraining run


@pytest.fixture(scope="module")
def bert_data(tmp_path_factory):
    import trainlib

    corpus = trainlib.write_corpus(str(tmp_path_factory.mktemp("corpus") / "corpus.txt"))
    return trainlib.prepare("bert", str(tmp_path_factory.mktemp("data")), corpus)


def test_a_packed_pretraining_resumes_exactly_and_logs_real_tokens(bert_data, tmp_path):
    """`train` with data.packing=best_fit: 3 steps, then resumed to 6, ends bit-identical
    to 6 uninterrupted steps; the log's real_tokens_per_s is tokens_per_s (rows x length)
    times the window's packing efficiency, which is below 1 (the rows are not full)."""
    import trainlib

    from bertjax import train as train_lib

    def config(steps):
        return trainlib.config(
            "bert",
            bert_data,
            **{
                "data.packing": "best_fit",
                "train.steps": steps,
                "optim.total_steps": 6,
                "train.log_every": 3,
                "train.eval_every": 0,
            },
        )

    full = str(tmp_path / "full")
    out = train_lib.train(config(6), full)
    m = out["metrics"]
    assert 0 < m["packing_efficiency"] < 1, m
    assert m["real_tokens_per_s"] == pytest.approx(m["tokens_per_s"] * m["packing_efficiency"])
    work = str(tmp_path / "work")
    train_lib.train(config(3), work)
    train_lib.train(config(6), work)
    assert trainlib.state_hash(work) == trainlib.state_hash(full)
