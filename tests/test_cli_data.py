"""`prepare tokenizer`, `prepare data` through the command line, read back by the pipeline."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from clilib import bertjax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = (
    "river stone light paper garden window music letter forest winter "
    "market village bridge teacher morning silver"
).split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """A BERT-format corpus: 60 documents of 4-9 sentences, blank lines between them."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    docs = []
    for _ in range(60):
        sentences = [
            " ".join(rng.choice(WORDS, size=rng.integers(5, 12))).capitalize() + "."
            for _ in range(rng.integers(4, 10))
        ]
        docs.append("\n".join(sentences))
    path.write_text("\n\n".join(docs) + "\n")
    return str(path)


def test_prepare_tokenizer_then_data_then_pipeline(corpus, tmp_path):
    transformers = pytest.importorskip("transformers")
    vocab, data = str(tmp_path / "vocab"), str(tmp_path / "data")
    config = ["--config=configs/pretrain.py:bert_tiny", f"--config.data.source=bert:{corpus}"]
    r = bertjax(
        "prepare", "tokenizer", *config, "--config.tokenizer.vocab_size=200", f"--out={vocab}"
    )
    assert r.returncode == 0, r.stderr
    tok = transformers.AutoTokenizer.from_pretrained(vocab)
    from bertjax.data.tokenizers import load_tokenizer

    ours = load_tokenizer(vocab)
    assert tok("River stone, light paper.")["input_ids"] == ours.encode("River stone, light paper.")

    data_args = [
        *config,
        f"--config.tokenizer.path={vocab}",
        f"--config.data.dir={data}",
        "--config.max_seq_length=32",
        "--config.max_predictions_per_seq=5",
        "--config.data.docs_per_shard=10",
        "--config.data.validation_every=3",
        "--config.data.dupe_factor=2",
    ]
    r = bertjax("prepare", "data", *data_args)
    assert r.returncode == 0, r.stderr
    manifest = json.load(open(os.path.join(data, "manifest.json")))
    assert manifest["masking"] == "static" and manifest["vocab_check"] == "ok"
    # DATA/tokenizer carries vocab.txt for tools that read only that (Google's and
    # NVIDIA's BERT code): transformers' pure-Python BertTokenizer on it alone agrees.
    legacy = transformers.BertTokenizer(os.path.join(data, "tokenizer", "vocab.txt"))
    text = "River stone, light paper; the garden window."
    assert legacy(text)["input_ids"] == ours.encode(text)
    assert manifest["source_stats"]["documents"] == 60
    assert set(manifest["splits"]) == {"train", "validation"}
    mtimes = {
        f: os.stat(os.path.join(data, f)).st_mtime_ns
        for f in os.listdir(data)
        if f.endswith(".tfrecord")
    }
    # A second run finds every shard done and rewrites none of them.
    r = bertjax("prepare", "data", *data_args)
    assert r.returncode == 0, r.stderr
    assert mtimes == {f: os.stat(os.path.join(data, f)).st_mtime_ns for f in mtimes}

    from bertjax.data.manifest import Manifest
    from bertjax.data.pipeline import Pipeline, PipelineConfig

    config = PipelineConfig("train", global_batch_size=8, seed=0)
    batch = next(iter(Pipeline(Manifest.read(data), config)))
    assert batch["input_ids"].shape == (8, 32)
    assert set(np.unique(batch["pair_labels"])) <= {0, 1}  # NSP labels for BERT
    assert (batch["input_ids"] < ours.vocab_size).all()


def test_prepare_data_bad_source_fails_in_one_line(tmp_path):
    r = bertjax(
        "prepare",
        "data",
        "--config=configs/pretrain.py:bert_tiny",
        f"--config.data.source=bert:{tmp_path}/missing*.txt",
        f"--config.data.dir={tmp_path}/data",
    )
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing" in lines[0], r.stderr
    assert not os.path.exists(tmp_path / "data" / "manifest.json")


def test_prepare_data_refuses_a_length_the_model_cannot_take(tmp_path):
    r = bertjax(
        "prepare",
        "data",
        "--config=configs/pretrain.py:bert_tiny",
        "--config.max_seq_length=100000",
        f"--config.data.dir={tmp_path}/data",
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "max_seq_length=100000" in lines[0] and "max_position_embeddings=512" in lines[0]
    assert not os.path.exists(tmp_path / "data")


@pytest.mark.parametrize("kind", ["empty file", "jsonl of plain text"])
def test_a_source_without_examples_is_an_error_and_writes_nothing(kind, tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("" if kind == "empty file" else "plain text\nmore plain text\n")
    spec = f"bert:{text}" if kind == "empty file" else f"jsonl:{text}#text"
    tok = tmp_path / "tok"
    from bertjax.data.tokenizers import train_wordpiece

    train_wordpiece(["plain text more"] * 10, vocab_size=120).save(str(tok))
    r = bertjax(
        "prepare",
        "data",
        "--config=configs/pretrain.py:bert_tiny,runlocal",
        f"--config.data.source={spec}",
        f"--config.data.dir={tmp_path}/data",
        f"--config.tokenizer.path={tok}",
    )
    lines = [x for x in r.stderr.strip().splitlines() if x.startswith("error:")]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert f"{spec}: no training examples" in lines[0]
    assert ("bad records: 2" if kind != "empty file" else "documents: 0") in lines[0]
    assert not os.path.exists(tmp_path / "data")


def test_a_full_disk_in_prepare_data_is_one_line_naming_the_shard(corpus, tmp_path, monkeypatch):
    """The second shard's write fails with ENOSPC: the error names that shard, no
    temporary file is left, and the same command then resumes after the first shard."""
    import errno

    sys.path.insert(0, os.path.join(ROOT, "configs"))
    import pretrain

    from bertjax.__main__ import os_error
    from bertjax.data import shard_files
    from bertjax.data.from_config import prepare_data

    c = pretrain.get_config("bert_tiny,runlocal")
    c.data.source, c.data.dir, c.data.num_workers = f"bert:{corpus}", str(tmp_path / "d"), 0
    c.data.docs_per_shard, c.data.validation_every = 20, 0
    c.tokenizer.vocab_size = 200
    real_open = open

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def opener(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return FullDisk(f) if "train-00001.tfrecord.tmp" in str(path) else f

    monkeypatch.setattr(shard_files, "open", opener, raising=False)
    with pytest.raises(OSError) as e:
        prepare_data(c)
    shards = os.path.join(c.data.dir, ".shards")
    assert os_error(e.value) == (
        f"{shards}/train-00001.tfrecord: No space left on device; the shards written "
        "before it are kept and the same command resumes after them"
    )
    assert not [n for n in os.listdir(shards) if ".tmp" in n]
    monkeypatch.undo()
    manifest = prepare_data(c)
    assert manifest["input_stats"]["shards_reused"] == 1
    assert manifest["input_stats"]["shards_written"] == 2
    assert sum(1 for n in os.listdir(c.data.dir) if n.endswith(".tfrecord")) == 3
