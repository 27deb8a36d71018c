"""TFRecords made the way Google's create_pretraining_data.py makes them (written here
with TensorFlow's own tf.train.Example), imported with `prepare import-google` and
trained on: `train` sees exactly the ids, positions and labels written."""

from __future__ import annotations

import os

import clilib
import numpy as np
import pytest
import trainlib

from bertjax import train as train_lib
from bertjax.data import google_records, pipeline
from bertjax.data.manifest import Manifest
from bertjax.data.records import DataFormatError

tf = pytest.importorskip("tensorflow")

LENGTH, PREDICTIONS = 32, 5  # trainlib.config's max_seq_length, max_predictions_per_seq
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [f"w{i}" for i in range(395)]  # 400 ids: trainlib's BERT vocab_size
PAD, CLS, SEP, MASK = 0, 2, 3, 4


def _instances(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Known instances as Google's script builds them: [CLS] A [SEP] B [SEP], masked
    positions in increasing order with the original ids, an NSP label."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, b = rng.integers(5, 400, rng.integers(2, 12)), rng.integers(5, 400, rng.integers(1, 14))
        ids = np.concatenate([[CLS], a, [SEP], b, [SEP]])
        types = np.concatenate([np.zeros(len(a) + 2), np.ones(len(b) + 1)]).astype(np.int64)
        candidates = [i for i in range(len(ids)) if ids[i] not in (CLS, SEP)]
        positions = np.sort(rng.choice(candidates, rng.integers(1, PREDICTIONS + 1), False))
        labels = ids[positions].copy()
        ids = ids.copy()
        ids[positions[: len(positions) // 2 + 1]] = MASK
        out.append(
            {
                "input_ids": ids,
                "token_type_ids": types,
                "positions": positions,
                "labels": labels,
                "pair_label": int(rng.integers(0, 2)),
            }
        )
    return out


def _example(
    inst: dict[str, np.ndarray], length: int = LENGTH, predictions: int = PREDICTIONS
) -> bytes:
    """One record as create_pretraining_data.py's write_instance_to_example_files."""
    n, k = len(inst["input_ids"]), len(inst["positions"])

    def pad(values, width):
        return [int(v) for v in values] + [0] * (width - len(values))

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    features = {
        "input_ids": ints(pad(inst["input_ids"], length)),
        "input_mask": ints([1] * n + [0] * (length - n)),
        "segment_ids": ints(pad(inst["token_type_ids"], length)),
        "masked_lm_positions": ints(pad(inst["positions"], predictions)),
        "masked_lm_ids": ints(pad(inst["labels"], predictions)),
        "masked_lm_weights": tf.train.Feature(
            float_list=tf.train.FloatList(value=[1.0] * k + [0.0] * (predictions - k))
        ),
        "next_sentence_labels": ints([inst["pair_label"]]),
    }
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString()


def _write(path: str, records: list[bytes]) -> str:
    with tf.io.TFRecordWriter(path) as w:
        for r in records:
            w.write(r)
    return path


@pytest.fixture(scope="module")
def google_data(tmp_path_factory):
    """Two files of Google-format records, an `uncased_...` vocab.txt directory."""
    root = tmp_path_factory.mktemp("google")
    vocab = root / "uncased_tiny"
    vocab.mkdir()
    (vocab / "vocab.txt").write_text("\n".join(SPECIALS + WORDS) + "\n")
    insts = _instances(24, seed=5)
    files = [
        _write(str(root / f"part-{i}.tfrecord"), [_example(x) for x in insts[i::2]])
        for i in range(2)
    ]
    return root, vocab, insts, files


def _key(ids, types, positions, labels, pair_label):
    return (
        tuple(int(x) for x in ids),
        tuple(int(x) for x in types),
        tuple(int(x) for x in positions),
        tuple(int(x) for x in labels),
        int(pair_label),
    )


def test_train_sees_exactly_the_records_written(google_data, tmp_path, monkeypatch):
    root, vocab, insts, files = google_data
    data = tmp_path / "data"
    r = clilib.bertjax(
        "prepare",
        "import-google",
        f"--from={root}/part-*.tfrecord",
        f"--tokenizer={vocab}",
        f"--out={data}",
        devices=1,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == (
        f"wrote {data} (train: 24 records in 2 files; length 32, 5 predictions)"
    )
    manifest = Manifest.read(str(data))
    assert [s["examples"] for s in manifest["splits"]["train"]["shards"]] == [12, 12]
    assert [
        os.path.realpath(data / s["file"]) for s in manifest["splits"]["train"]["shards"]
    ] == files
    tok_config = (data / "tokenizer" / "tokenizer_config.json").read_text()
    assert '"do_lower_case": true' in tok_config  # guessed from "uncased_tiny"
    assert (data / "tokenizer" / "vocab.txt").read_text().split() == SPECIALS + WORDS

    seen = []
    real_finish = pipeline.Pipeline._finish

    def record(self, raw, k):
        out = real_finish(self, raw, k)
        seen.append(out)
        return out

    monkeypatch.setattr(pipeline.Pipeline, "_finish", record)
    c = trainlib.config("bert", str(data), **{"train.steps": 3, "train.checkpoint_every": 3})
    c.data.shuffle_buffer = 24  # one epoch = 3 batches of 8: every record once
    result = train_lib.train(c, str(tmp_path / "run"))
    assert result["status"] == "done"
    rows = []
    for batch in seen[:3]:
        for i in range(8):
            n = int(batch["attention_mask"][i].sum())
            k = int(batch["masked_lm_weights"][i].sum())
            assert not batch["attention_mask"][i, n:].any()
            assert (batch["input_ids"][i, n:] == PAD).all()
            rows.append(
                _key(
                    batch["input_ids"][i, :n],
                    batch["token_type_ids"][i, :n],
                    batch["masked_lm_positions"][i, :k],
                    batch["masked_lm_ids"][i, :k],
                    batch["pair_labels"][i],
                )
            )
    want = [
        _key(x["input_ids"], x["token_type_ids"], x["positions"], x["labels"], x["pair_label"])
        for x in insts
    ]
    assert sorted(rows) == sorted(want)


def _import(files, vocab, out):
    return google_records.import_google(
        {"train": [str(f) for f in files]}, str(vocab), str(out), progress=False
    )


def test_bad_records_are_named_and_nothing_is_written(google_data, tmp_path):
    root, vocab, insts, files = google_data
    out = tmp_path / "data"

    def fails(records, match):
        path = _write(str(tmp_path / "bad.tfrecord"), records)
        with pytest.raises(DataFormatError, match=match):
            _import([files[0], path], vocab, out)
        assert not out.exists() and os.listdir(tmp_path) == ["bad.tfrecord"]

    good = [_example(x) for x in insts[:4]]
    fails(
        [_example(insts[0], length=16)] + good,
        r"bad.tfrecord: records of L=16, P=5, but .*part-0.tfrecord has L=32, P=5",
    )
    fails(
        good + [_example(insts[4], length=16)],
        r"bad.tfrecord: record 5 does not have the features of record 1 \(L=32, P=5\)",
    )
    broken = dict(insts[5], input_ids=insts[5]["input_ids"].copy())
    broken["input_ids"][1] = 400
    fails(
        good[:2] + [_example(broken)],
        r"bad.tfrecord: record 3: an input id lies outside the tokenizer's vocabulary "
        r"\[0, 400\)",
    )
    holes = tf.train.Example.FromString(good[0])
    holes.features.feature["input_mask"].int64_list.value[1] = 0
    fails(
        good[:1] + [holes.SerializeToString()],
        r"bad.tfrecord: record 2: input_mask or masked_lm_weights is not a run of ones",
    )
    late = dict(insts[6], positions=insts[6]["positions"].copy())
    late["positions"][-1] = len(insts[6]["input_ids"]) + 3
    fails([_example(late)], r"bad.tfrecord: record 1: a masked_lm position lies past the end")
    no_nsp = tf.train.Example.FromString(good[0])
    del no_nsp.features.feature["next_sentence_labels"]
    fails(
        [no_nsp.SerializeToString()],
        r"bad.tfrecord: record 1 lacks next_sentence_labels; not a TFRecord of Google's",
    )
    (tmp_path / "bad.tfrecord").write_text("plain text\n" * 10)
    with pytest.raises(DataFormatError, match="bad.tfrecord: not a TFRecord file"):
        _import([files[0], tmp_path / "bad.tfrecord"], vocab, out)
    assert not out.exists()


def test_cli_errors_are_one_line(google_data, tmp_path):
    root, vocab, _, _ = google_data
    r = clilib.bertjax(
        "prepare",
        "import-google",
        f"--from={root}/nothing-*.tfrecord",
        f"--tokenizer={vocab}",
        f"--out={tmp_path}/data",
        devices=1,
        timeout=300,
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"error: --from='{root}/nothing-*.tfrecord' matches no file"
    ], r.stderr
    assert not (tmp_path / "data").exists()


def test_google_records_pack_at_read_time_holding_exactly_the_records_written(
    google_data, tmp_path
):
    """data.packing on Google-format static data (docs/packing.md): each packed row
    holds whole records, with their own token types, masked positions (moved into the
    row) and NSP labels; an epoch of packed batches holds every record once."""
    from datalib import take
    from packlib import packed_sequences

    from bertjax.data import packer

    root, vocab, insts, files = google_data
    _import(files, vocab, tmp_path / "data")
    config = pipeline.PipelineConfig(
        split="train",
        global_batch_size=8,
        seed=0,
        shuffle_buffer=24,
        packing="best_fit",
        packing_row_multiple=2,
    )
    batches = take(pipeline.Pipeline(Manifest.read(str(tmp_path / "data")), config), 3)
    rows = 0
    for b in batches:
        packer.check(b)
        assert b["input_ids"].shape[1] == LENGTH and b["masked_lm_positions"].shape[1] == 5
        rows += len(b["input_ids"])
    assert rows < 24  # records of 5-27 tokens: several to a 32-token row
    want = [
        _key(x["input_ids"], x["token_type_ids"], x["positions"], x["labels"], x["pair_label"])
        for x in insts
    ]
    got = [_key(*s) for b in batches for s in packed_sequences(b)]
    assert sorted(got) == sorted(want)
