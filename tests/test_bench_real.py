"""`bench train` on a classification task's own examples (bertjax/tools/bench_real.py),
end to end on a tiny config in a subprocess: the output contract, and that ours (packed)
and transformers (padded) train the same function on the same sequences."""

from __future__ import annotations

import os
import re
import sys

import pytest
from clilib import bertjax

from bertjax import allocator


def expected_allocator() -> str:
    """What `bench train` prints as its allocator here: what `python -m bertjax` chooses
    in this environment (BERTJAX_ALLOCATOR=system: none)."""
    preloaded = os.environ.get("LD_PRELOAD", "")
    for name in ("tcmalloc", "jemalloc"):
        if name in preloaded:
            return f"host allocator: {name}"
    lib = allocator.choose(os.environ, allocator.library_dirs())
    if lib and "tcmalloc" in os.path.basename(lib):
        return "host allocator: tcmalloc"
    return "host allocator: the C library's malloc"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from bertjax.data.tokenizers import train_wordpiece

    words = " ".join(f"w{i}" for i in range(300))
    path = str(tmp_path_factory.mktemp("tok") / "tokenizer")
    train_wordpiece([words] * 5, vocab_size=400).save(path)
    return path


@pytest.mark.parametrize(
    "task, reference",
    [
        ("demo_next", "BertForSequenceClassification"),
        ("demo_boundary", "BertForTokenClassification"),
    ],
)
def test_packed_against_padded_and_dynamic_padding_counts_real_tokens(
    tokenizer_dir, task, reference
):
    proc = bertjax(
        "bench",
        "train",
        f"--config=configs/finetune.py:{task},bert_tiny",
        "--config.model.vocab_size=500",
        f"--config.tokenizer.path={tokenizer_dir}",
        "--config.train.batch_size=8",
        "--vs_torch",
        "--seconds=0.5",
        ok=True,
    )
    lines = proc.stdout.strip().splitlines()
    last = re.fullmatch(r"ratio=(\d+\.\d\d) ours=(\d+) reference=(\d+) unit=tokens/s", lines[-1])
    before = re.fullmatch(
        r"against \(b\) dynamic padding: ratio=(\d+\.\d\d) ours=(\d+) "
        r"reference=(\d+) unit=tokens/s",
        lines[-2],
    )
    assert last and before, lines[-2:]
    assert last[2] == before[2] and int(last[3]) > 0 and int(before[3]) > 0
    # ours and reference are printed rounded to whole tokens/s, the ratio to 0.01 from the
    # unrounded figures: it lies between the extremes that rounding allows (with a slow
    # reference on a loaded machine, ~100 tokens/s, those are ~0.1 apart).
    ours, ref = int(last[2]), int(last[3])
    low, high = (ours - 0.5) / (ref + 0.5), (ours + 0.5) / (ref - 0.5)
    assert low - 0.005 <= float(last[1]) <= high + 0.005, lines[-1]
    rows = next(ln for ln in lines if ln.startswith("rows a step:"))
    assert "(a) 8 x 128 padded to max_seq_length" in rows, rows
    # the same sequences on every side: the same mean cross-entropy before any update
    # (over sequences, or over the labelled tokens of a tagger)
    check = next(ln for ln in lines if ln.startswith("check: first-step loss"))
    got = re.search(r"ours=(\S+) reference=(\S+)", check)
    assert abs(float(got[1]) - float(got[2])) < 1e-5, check
    # tcmalloc where the machine has it (python -m bertjax preloads it: allocator.py)
    assert f"; {expected_allocator()}" in lines[0], lines[0]
    sides = [ln for ln in lines if ln.startswith(("ours (", "(a) ", "(b) "))]
    assert len(sides) == 3 and all(reference in side for side in sides[1:]), sides


def test_pretraining_packed_against_unpacked_on_the_same_batches(tmp_path):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from datalib import write_data

    write_data(str(tmp_path), 400, 2, max_seq_length=32)  # 5..32 tokens
    proc = bertjax(
        "bench",
        "train",
        "--config=configs/pretrain.py:bert_tiny",
        f"--config.data.dir={tmp_path}",
        "--config.data.packing=best_fit",
        "--config.max_seq_length=32",
        "--config.max_predictions_per_seq=3",
        "--config.train.batch_size=32",
        "--seconds=0.5",
        ok=True,
    )
    lines = proc.stdout.strip().splitlines()
    m = re.fullmatch(r"ratio=(\d+\.\d\d) ours=(\d+) reference=(\d+) unit=tokens/s", lines[-1])
    assert m and int(m[2]) > 0 and int(m[3]) > 0, lines[-1]
    shapes = re.search(r"unpacked 32 x 32 \(\S+ real\), packed \(best_fit\) (\d+) x 32", lines[0])
    assert shapes and int(shapes[1]) < 32, lines[0]  # fewer rows, the same sequences
    assert [ln.split(" (")[0] for ln in lines[1:3]] == ["unpacked", "packed"], lines
