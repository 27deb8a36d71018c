"""The data side on gs:// (the local Cloud Storage emulator, tests/gcs.py): `prepare data`
into a bucket, sources and Google records read from one, the pipeline and training
reading shards from one through the bounded local shard cache.

References: the same command on local paths, file by file (sha256) and batch by batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import trainlib

from bertjax import paths
from bertjax.data import prepare as prep
from bertjax.data.manifest import Manifest
from bertjax.data.masking import MaskingConfig
from bertjax.data.pipeline import DataError, Pipeline, PipelineConfig
from bertjax.data.prepare_settings import PrepareSettings
from bertjax.data.records import DataFormatError
from bertjax.data.shard_files import PARTS


def _digests(root: str) -> dict[str, str]:
    """sha256 of every file under `root` (local or a URL), by relative name."""
    return {
        name: hashlib.sha256(paths.read_bytes(paths.join(root, *name.split("/")))).hexdigest()
        for name in paths.walk_files(root)
    }


def _same_data(a: str, b: str) -> bool:
    """Every file byte-identical, manifest.json but for what it says about the run
    (input_stats: shards written / reused; `Manifest.digest`)."""
    mine, theirs = _digests(a), _digests(b)
    del mine["manifest.json"], theirs["manifest.json"]
    return mine == theirs and Manifest.read(a).digest() == Manifest.read(b).digest()


def _upload_tree(local: str, url: str) -> str:
    for name in paths.walk_files(local):
        paths.upload(os.path.join(local, *name.split("/")), f"{url}/{name}")
    return url


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return trainlib.write_corpus(str(tmp_path_factory.mktemp("corpus") / "corpus.txt"))


@pytest.fixture(scope="module")
def local_data(corpus, tmp_path_factory) -> str:
    """The corpus prepared locally for BERT (static masks, NSP; 5 train shards)."""
    return trainlib.prepare("bert", str(tmp_path_factory.mktemp("local") / "data"), corpus)


# ------------------------------------------------------------------ prepare into a bucket


@pytest.mark.parametrize("fmt", ["bertjax", "google"])
def test_prepare_into_a_bucket_gives_the_same_files(corpus, bucket, tmp_path, fmt):
    """`prepare data` with data.dir in a bucket writes exactly the files, byte for byte,
    that it writes to a local directory (manifest.json included); a re-run reuses
    every shard."""
    local = trainlib.prepare("bert", str(tmp_path / "data"), corpus, **{"data.format": fmt})
    url = trainlib.prepare("bert", f"{bucket}/data", corpus, **{"data.format": fmt})
    assert _digests(url) == _digests(local)
    assert not paths.exists(f"{url}/{PARTS}")
    trainlib.prepare("bert", url, corpus, **{"data.format": fmt})
    assert _same_data(url, local)
    stats = Manifest.read(url)["input_stats"]
    assert stats["shards_written"] == 0 and stats["shards_reused"] == stats["chunks"]


def test_prepare_tokenizer_and_data_commands_on_a_bucket(corpus, bucket, tmp_path):
    """`prepare tokenizer --out=gs://...`, then `prepare data` with that tokenizer and a
    gs:// source and data dir, through the command line: the files of the same commands
    on local paths."""
    remote_corpus = _upload_tree(os.path.dirname(corpus), f"{bucket}/corpus")
    out = {}
    for where, root in (("local", str(tmp_path)), ("bucket", bucket)):
        src = corpus if where == "local" else f"{remote_corpus}/{os.path.basename(corpus)}"
        config = [
            "--config=configs/pretrain.py:bert_tiny,runlocal",
            f"--config.data.source=bert:{src}",
        ]
        vocab, data = paths.join(root, "vocab"), paths.join(root, "data")
        for args in (
            ["tokenizer", "--config.tokenizer.vocab_size=300", f"--out={vocab}"],
            [
                "data",
                f"--config.tokenizer.path={vocab}",
                f"--config.data.dir={data}",
                "--config.data.docs_per_shard=30",
                "--config.data.num_workers=2",
            ],
        ):
            r = trainlib.run(
                [sys.executable, "-m", "bertjax", "prepare", args[0], *config, *args[1:]]
            )
            assert r.returncode == 0, r.stderr[-2000:]
        out[where] = (_digests(vocab), _digests(data))
    assert out["bucket"][0] == out["local"][0]
    mine, theirs = out["local"][1], out["bucket"][1]
    assert mine.pop("manifest.json") != theirs.pop("manifest.json")  # the source's path
    assert mine == theirs and len(mine) > 6


_KILLED_PREPARE = """
import os, signal, sys
sys.path[:0] = [{root!r}, {tests!r}]
from bertjax import paths
import trainlib

real, uploads = paths.upload, []

def upload(local, url):  # SIGKILL once the 3rd shard object is up, before its record
    real(local, url)
    uploads.append(url)
    if sum(u.endswith(".tfrecord") for u in uploads) == 3:
        os.kill(os.getpid(), signal.SIGKILL)

paths.upload = upload
trainlib.prepare("bert", {url!r}, {corpus!r})
"""


def test_a_killed_prepare_into_a_bucket_is_not_prepared_and_resumes(corpus, local_data, bucket):
    """`prepare data` killed mid-way leaves no manifest.json (nothing reads as
    prepared); the re-run keeps the shards whose record was published, rebuilds the
    rest (the one uploaded without its record too) and ends byte-identical."""
    url = f"{bucket}/data"
    script = _KILLED_PREPARE.format(
        root=trainlib.ROOT, tests=os.path.dirname(__file__), url=url, corpus=corpus
    )
    r = trainlib.run([sys.executable, "-c", textwrap.dedent(script)], timeout=300)
    assert r.returncode == -9, r.stderr[-2000:]
    assert not paths.exists(f"{url}/manifest.json")
    with pytest.raises(DataFormatError, match=f"^{url}/manifest.json: not found"):
        Manifest.read(url)
    parts = paths.sizes(f"{url}/{PARTS}")
    assert sorted(n for n in parts if n.endswith(".json")) == [
        "train-00000.json",
        "train-00001.json",
    ]
    assert [n for n in parts if n.startswith("train-00002-")]  # uploaded, not recorded
    trainlib.prepare("bert", url, corpus)
    assert _same_data(url, local_data)
    assert Manifest.read(url)["input_stats"]["shards_reused"] == 2


def test_a_failed_upload_is_one_line_and_publishes_nothing(corpus, local_data, bucket, monkeypatch):
    url = f"{bucket}/data"
    real, calls = paths.upload, []

    def failing(local, target):
        calls.append(target)
        if len(calls) == 7:  # the tokenizer's 4 files, 2 shards, then this
            raise OSError(5, "upload failed (network down)", target)
        real(local, target)

    monkeypatch.setattr(paths, "upload", failing)
    with pytest.raises(OSError) as e:
        trainlib.prepare("bert", url, corpus)
    assert e.value.strerror == "upload failed (network down)"
    assert re.fullmatch(rf"{url}/\.shards/train-00002-[0-9a-f]{{16}}\.tfrecord", e.value.filename)
    assert not paths.exists(f"{url}/manifest.json")
    monkeypatch.setattr(paths, "upload", real)
    trainlib.prepare("bert", url, corpus)
    assert _same_data(url, local_data)


def test_a_prepare_interrupted_while_renaming_resumes_without_rebuilding(
    corpus, local_data, bucket, monkeypatch
):
    """Killed between the final renames (copy + delete on a bucket): no manifest.json;
    the re-run finds every shard, under either name, by its record."""
    url = f"{bucket}/data"
    real, calls = paths.move, []

    def failing(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(5, "move failed (network down)", src)
        real(src, dst)

    monkeypatch.setattr(paths, "move", failing)
    with pytest.raises(OSError, match="network down"):
        trainlib.prepare("bert", url, corpus)
    assert not paths.exists(f"{url}/manifest.json")
    assert len([n for n in paths.sizes(url) if n.endswith(".tfrecord")]) == 2
    monkeypatch.setattr(paths, "move", real)
    trainlib.prepare("bert", url, corpus)
    assert _same_data(url, local_data)
    stats = Manifest.read(url)["input_stats"]
    assert stats["shards_written"] == 0 and stats["shards_reused"] == stats["chunks"]


def test_sources_in_a_bucket_prepare_as_the_local_files(bucket, tmp_path):
    """bert:, text: and jsonl: sources given as gs:// globs (a gzipped file among them)
    give the same shards and counts as the same files on disk."""
    import gzip

    from bertjax.data.tokenizers import train_wordpiece

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(80)]
    docs = [
        [
            " ".join(rng.choice(words, int(rng.integers(4, 12)))).capitalize() + "."
            for _ in range(int(rng.integers(2, 7)))
        ]
        for _ in range(90)
    ]
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("\n\n".join("\n".join(d) for d in docs[:50]) + "\n")
    (src / "b.txt.gz").write_bytes(
        gzip.compress(("\n\n".join("\n".join(d) for d in docs[50:]) + "\n").encode())
    )
    (src / "c.jsonl").write_text("".join(json.dumps({"text": " ".join(d)}) + "\n" for d in docs))
    remote = _upload_tree(str(src), f"{bucket}/src")
    tok = train_wordpiece([s for d in docs for s in d], vocab_size=200)
    settings = PrepareSettings(instances="nsp", max_seq_length=32, docs_per_shard=15, num_workers=0)
    for kind, glob in (("bert", "*.txt*"), ("text", "[ab]*"), ("jsonl", "*.jsonl")):
        here = prep.prepare(
            f"{kind}:{src}/{glob}", tok, str(tmp_path / kind), settings, progress=False
        )
        there = prep.prepare(
            f"{kind}:{remote}/{glob}", tok, f"{bucket}/{kind}", settings, progress=False
        )
        assert there["source_stats"] == here["source_stats"] and here["source_stats"]["files"] == (
            1 if kind == "jsonl" else 2
        )
        mine, theirs = _digests(str(tmp_path / kind)), _digests(f"{bucket}/{kind}")
        assert mine.pop("manifest.json") != theirs.pop("manifest.json")  # the source spec
        assert mine == theirs, kind
        assert there.digest() != here.digest()
        assert {**there.raw, "settings": None} == {**here.raw, "settings": None}


# ------------------------------------------------------------------ the pipeline


def _batches(data_dir: str, n: int, **kw) -> tuple[list[dict[str, np.ndarray]], Pipeline]:
    pipe = Pipeline(
        Manifest.read(data_dir),
        PipelineConfig(
            **{"split": "train", "global_batch_size": 8, "seed": 3, "shuffle_buffer": 16, **kw}
        ),
    )
    out = []
    for batch in pipe:
        out.append(batch)
        if len(out) == n:
            break
    return out, pipe


def _same(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
        for x, y in zip(a, b, strict=True)
    )


@pytest.fixture(scope="module")
def many_shards(corpus, tmp_path_factory) -> str:
    """The corpus prepared for RoBERTa (dynamic masking) in 24 small train shards: more
    than the interleave cycle of 16."""
    return trainlib.prepare(
        "roberta",
        str(tmp_path_factory.mktemp("many") / "data"),
        corpus,
        **{"data.docs_per_shard": 5, "data.validation_every": 0},
    )


def test_the_pipeline_reads_a_bucket_copy_exactly_as_the_local_data(
    many_shards, local_data, bucket, tmp_path
):
    """Over several epochs, with dynamic and static masks and from a resume position,
    the batches from a bucket copy equal those from the local directory; each shard is
    downloaded once (the default bound holds them all) and checked."""
    dynamic = MaskingConfig(max_predictions_per_seq=5)
    for local, masking in ((many_shards, dynamic), (local_data, None)):
        url = _upload_tree(local, f"{bucket}/{os.path.basename(os.path.dirname(local))}")
        epoch = Manifest.read(local)["splits"]["train"]["examples"] // 8
        want, _ = _batches(local, 3 * epoch, masking=masking)
        cache = str(tmp_path / f"cache-{masking is None}")
        have, pipe = _batches(url, 3 * epoch, masking=masking, cache_dir=cache)
        assert _same(have, want)
        shards = Manifest.read(local).shards("train")
        assert pipe._cache.downloads == len(shards)
        assert sorted(os.listdir(cache)) == sorted(
            [".lock"] + [f"{s['sha256']}.tfrecord" for s in shards]
        )
        resumed, _ = _batches(url, 5, masking=masking, start_step=epoch + 2, cache_dir=cache)
        assert _same(resumed, want[epoch + 2 : epoch + 7])
    assert pipe._cache.downloads == len(shards)  # the resumed pipeline reused the copies


def _bytes_in(directory: str) -> int:
    """Bytes of the files in `directory` (copies and downloads under way) right now."""
    total = 0
    for name in os.listdir(directory):
        try:
            total += os.path.getsize(os.path.join(directory, name))
        except FileNotFoundError:  # a download renamed, a copy evicted meanwhile
            pass
    return total


def test_the_cache_bound_holds_on_disk(many_shards, bucket, tmp_path):
    """A bound of a little more than the interleave cycle's shards: the copies on disk
    never exceed it, shards are downloaded again after eviction, and the batches are
    the local ones. A bound below the cycle is refused naming data.cache_gb."""
    url = _upload_tree(many_shards, f"{bucket}/many")
    shards = Manifest.read(many_shards).shards("train")
    sizes = sorted((s["bytes"] for s in shards), reverse=True)
    need = sum(sizes[:16])
    cache, bound = str(tmp_path / "cache"), need + sizes[0]
    dynamic = MaskingConfig(max_predictions_per_seq=5)
    epoch = Manifest.read(many_shards)["splits"]["train"]["examples"] // 8
    want, _ = _batches(many_shards, 3 * epoch, masking=dynamic)
    pipe = Pipeline(
        Manifest.read(url),
        PipelineConfig(
            "train", 8, 3, masking=dynamic, shuffle_buffer=16, cache_dir=cache, cache_gb=bound / 1e9
        ),
    )
    have, peaks, done = [], [0], threading.Event()

    def watch() -> None:  # the bytes on disk, sampled all along
        while not done.is_set():
            peaks.append(_bytes_in(cache))
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for batch in pipe:
            have.append(batch)
            if len(have) == 3 * epoch:
                break
    finally:
        done.set()
        watcher.join()
    assert _same(have, want)
    assert 0 < max(peaks) <= bound and len(peaks) > 100
    assert pipe._cache.downloads > len(shards) and not pipe._cache._warned
    with pytest.raises(
        DataFormatError,
        match=r"data.cache_gb=.* cannot hold the shards the "
        r"pipeline reads at once",
    ):
        Pipeline(
            Manifest.read(url),
            PipelineConfig(
                "train",
                8,
                3,
                masking=dynamic,
                cache_dir=str(tmp_path / "small"),
                cache_gb=(need - 1) / 1e9,
            ),
        )


def test_a_damaged_shard_in_a_bucket_is_refused_naming_it(local_data, bucket, tmp_path):
    url = _upload_tree(local_data, f"{bucket}/data")
    shard = Manifest.read(url).shards("train")[1]["file"]
    data = bytearray(paths.read_bytes(f"{url}/{shard}"))
    data[100:108] = b"\xff" * 8
    paths.write_bytes(f"{url}/{shard}", bytes(data))
    with pytest.raises(DataError) as e:
        _batches(url, 20, cache_dir=str(tmp_path / "cache"))
    assert str(e.value) == (
        f"{url}/{shard}: its sha256 differs from {url}/manifest.json; "
        "the shard is damaged or was replaced. Prepare the data again"
    )
    assert not [
        f
        for f in os.listdir(tmp_path / "cache")
        if f.endswith(".tfrecord") and f.startswith(Manifest.read(url).shards("train")[1]["sha256"])
    ]
    paths.remove(f"{url}/{shard}")
    with pytest.raises(DataFormatError, match=f"^{url}/manifest.json: shard {shard} is missing$"):
        Manifest.read(url)


def test_bench_data_reads_a_bucket(many_shards, bucket, capsys):
    from bertjax.data.bench import bench_data

    url = _upload_tree(many_shards, f"{bucket}/many")
    result = bench_data(url, batch_size=8, seconds=0.5, also=())
    assert result["data"] == "given" and result["ours"]["batches"] > 0
    assert result["reference"]["seq_per_s"] > 0


# ------------------------------------------------------------------ Google records


def test_import_google_from_and_into_a_bucket(corpus, bucket, tmp_path):
    """`prepare import-google` reads Google-format records from gs:// globs and writes
    a data directory into a bucket (records copied, manifest last) that reads as the
    local import does."""
    from bertjax.data import google_records

    made = trainlib.prepare("bert", str(tmp_path / "made"), corpus, **{"data.format": "google"})
    src = _upload_tree(made, f"{bucket}/records")
    tok = os.path.join(made, "tokenizer")
    train = google_records.expand(f"{src}/train-*.tfrecord", "--from")
    valid = google_records.expand(f"{src}/validation-*.tfrecord", "--validation")
    local = google_records.import_google(
        {
            "train": google_records.expand(f"{made}/train-*.tfrecord", "--from"),
            "validation": google_records.expand(f"{made}/validation-*.tfrecord", "--v"),
        },
        tok,
        str(tmp_path / "imported"),
        progress=False,
    )
    there = google_records.import_google(
        {"train": train, "validation": valid}, tok, f"{bucket}/imported", progress=False
    )
    assert there.digest() != local.digest()  # the sources' paths
    mine, theirs = _digests(str(tmp_path / "imported")), _digests(f"{bucket}/imported")
    assert mine.pop("manifest.json") and theirs.pop("manifest.json")
    assert mine == theirs
    with pytest.raises(FileExistsError, match="already exists"):
        google_records.import_google({"train": train}, tok, f"{bucket}/imported", progress=False)
    want, _ = _batches(str(tmp_path / "imported"), 6)
    have, _ = _batches(f"{bucket}/imported", 6, cache_dir=str(tmp_path / "cache"))
    assert _same(have, want)


# ------------------------------------------------------------------ training


def test_training_on_a_bucket_is_bit_identical_to_local_data(local_data, bucket, tmp_path):
    """`train` with data.dir in a bucket ends with the same train state, bit for bit, as
    the same run on the local directory."""
    url = _upload_tree(local_data, f"{bucket}/data")
    results = {}
    for name, data_dir in (("local", local_data), ("bucket", url)):
        c = trainlib.config("bert", data_dir, **{"train.steps": 6, "train.checkpoint_every": 0})
        workdir = str(tmp_path / name)
        r = trainlib.run(trainlib.train_cmd(c, workdir))
        assert r.returncode == 0, r.stderr[-3000:]
        results[name] = trainlib.state_hash(workdir)
    assert results["bucket"]["step"] == "6"
    assert results["bucket"] == results["local"]
