"""`bench data` runs end to end with tiny settings; figures are printed, never asserted
against a time (benchmarks are not tests)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bertjax.data import bench, bench_reference
from bertjax.data.bench_prepare import bench_prepare

_FINAL = re.compile(r"^ratio=(\d+\.\d+) ours=(\d+) reference=(\d+) unit=seq/s$")


def _final(lines: list[str]) -> tuple[float, int, int]:
    m = _FINAL.match(lines[-1])
    assert m, lines[-1]
    return float(m.group(1)), int(m.group(2)), int(m.group(3))


def test_bench_prepares_the_demo_corpus_and_compares_whole_word(capsys):
    result = bench.bench_data(
        seq_len=64,
        batch_size=32,
        seconds=1.0,
        strategy="whole_word",
        demo_mb=0.2,
        prepare_workers=0,
    )
    lines = capsys.readouterr().out.strip().splitlines()
    ratio, ours, ref = _final(lines)
    assert ours > 0 and ref > 0 and ratio > 0
    assert ours == round(result["ours"]["seq_per_s"]) and ref == round(
        result["reference"]["seq_per_s"]
    )
    assert lines[0].startswith("data: demo corpus") and "MB/s preprocessing" in lines[0]
    assert result["data"] == "demo" and result["prepare_mb_per_s"] > 0
    assert "dynamic whole_word masking, seq_len 64, batch 32" in lines[1]
    assert "whole_word_mask=True" in lines[2]
    assert result["ours"]["tokens_per_s"] > 0 and result["reference"]["tokens_per_s"] > 0


def test_bench_on_synthetic_shards_token_masking(tmp_path):
    n = bench._write_synthetic(str(tmp_path), seq_len=32, n=256, shards=2)
    assert n == 256
    lines: list[str] = []
    result = bench.bench_data(
        str(tmp_path), batch_size=16, seconds=0.5, strategy="token", print_fn=lines.append
    )
    ratio, ours, ref = _final(lines)
    assert ours > 0 and ref > 0 and ratio > 0
    assert result["seq_len"] == 32 and result["data"] == "given"
    assert "DataCollatorForLanguageModeling(mlm_probability=0.15)" in lines[2]


def test_reference_sees_the_same_words_as_our_masker():
    """The offsets given to the whole-word collator make its words ours: a word starts
    at a word-start token or right after a special token; padding is no word."""
    from transformers import DataCollatorForLanguageModeling

    # Toy vocabulary: 0-3 special ([PAD] . [CLS] [SEP]), 4 w, 5 ##x, 6 w2, 7 ##y, 8 ##z.
    starts = np.array([True, True, True, True, True, False, True, False, False])
    ids = [2, 4, 5, 6, 7, 3, 8, 6, 3]
    special = np.zeros(9, dtype=bool)
    special[:4] = True
    out = bench_reference._tokenizer_output(ids, starts, special, length=12, pad_id=0)
    assert len(out["input_ids"]) == len(out["offset_mapping"]) == 12
    word_ids, prob_mask = DataCollatorForLanguageModeling._calc_word_ids_and_prob_mask(
        np.array([out["offset_mapping"]]), np.array([out["special_tokens_mask"]])
    )
    # tokens:   CLS  w  ##x  w2  ##y  SEP  ##z  w2  SEP  pad pad pad
    expected = [-1, 1, 1, 2, 2, -1, 3, 4, -1, -1, -1, -1]
    np.testing.assert_array_equal(word_ids[0], expected)
    assert out["attention_mask"] == [1] * 9 + [0] * 3
    # Our Masker's notion: word_start table, or right after a special token.
    arr = np.array(ids)
    ours_start = ~special[arr] & (starts[arr] | np.r_[True, special[arr][:-1]])
    np.testing.assert_array_equal(~prob_mask[0][:9], ours_start)


@pytest.mark.parametrize("strategy", ["ngram"])
def test_word_level_strategies_use_the_whole_word_reference(tmp_path, strategy):
    bench._write_synthetic(str(tmp_path), seq_len=16, n=64, shards=1)
    lines: list[str] = []
    bench.bench_data(
        str(tmp_path), batch_size=8, seconds=0.3, strategy=strategy, print_fn=lines.append
    )
    assert f"dynamic {strategy} masking" in lines[1] and "whole_word_mask=True" in lines[2]
    _final(lines)


def test_bench_prepare_counts_what_prepare_data_writes(tmp_path, capsys):
    """Each timed run writes what `prepare data` writes with the same settings: its MB
    and instance counts are the manifest's."""
    import trainlib

    from bertjax.data.from_config import prepare_data

    corpus = trainlib.write_corpus(str(tmp_path / "c.txt"), n_docs=60)
    c = trainlib.config(
        "bert", str(tmp_path / "ref"), **{"data.source": f"bert:{corpus}", "data.dupe_factor": 3}
    )
    rows = bench_prepare(c, workers=(0, 1))
    lines = capsys.readouterr().out.strip().splitlines()
    assert [(r["masking"], r["workers"]) for r in rows] == [
        ("static", 0),
        ("static", 1),
        ("dynamic", 0),
        ("dynamic", 1),
    ]
    assert len(lines) == 4 and lines[0].startswith(
        "prepare static (dupe_factor 3), in the main process: "
    )
    assert lines[3].startswith("prepare dynamic (dupe_factor 1), 1 worker: ")
    ref = prepare_data(c, progress=False)
    written = sum(s["examples"] for s in ref["splits"].values())
    assert rows[0]["instances"] == rows[1]["instances"] == written > 0
    with open(corpus, encoding="utf-8") as f:
        text_bytes = sum(len(line.strip().encode()) for line in f)
    assert rows[0]["mb"] == ref["input_stats"]["bytes"] / 1e6 == text_bytes / 1e6
    assert rows[2]["instances"] < written  # dynamic: one unmasked copy, not three
    for r in rows:
        assert r["instances_per_s"] == pytest.approx(r["instances"] / r["seconds"])
