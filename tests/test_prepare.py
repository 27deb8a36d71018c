"""bertjax.data.prepare: shards, manifest, determinism across workers, resume, bad input.

References: TensorFlow's own Example serialization and TFRecord reader for the file
format; sha256 of every file for determinism; file mtimes and inodes for "not
rewritten"; the tokenizer's `encode` for contents.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from bertjax.data import prepare as prep
from bertjax.data import records as records_lib
from bertjax.data import shards as shards_lib
from bertjax.data.manifest import Manifest
from bertjax.data.prepare_settings import PrepareSettings
from bertjax.data.tokenizers import train_wordpiece

MAX_LEN = 40


def _corpus(seed: int, n_docs: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(300)]
    return [
        [" ".join(rng.choice(words, rng.integers(3, 12))) + "." for _ in range(rng.integers(1, 9))]
        for _ in range(n_docs)
    ]


@pytest.fixture(scope="module")
def corpus() -> list[list[str]]:
    return _corpus(0, 240)


@pytest.fixture(scope="module")
def tok(corpus):
    return train_wordpiece([s for d in corpus for s in d], vocab_size=500)


def _run(corpus, tok, out, **kw):
    args = dict(
        instances="nsp",
        max_seq_length=MAX_LEN,
        masking="dynamic",
        docs_per_shard=40,
        validation_every=3,
        num_workers=0,
        seed=3,
        progress=False,
    )
    args.update(kw)
    progress = args.pop("progress")
    return prep.prepare(corpus, tok, str(out), PrepareSettings(**args), progress=progress)


def _hashes(d) -> dict[str, str]:
    out = {}
    for path in sorted(glob.glob(os.path.join(d, "**", "*"), recursive=True)):
        if os.path.isfile(path) and not path.endswith("manifest.json"):
            with open(path, "rb") as f:
                out[os.path.relpath(path, d)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _all_examples(d, manifest) -> list[dict[str, np.ndarray]]:
    out = []
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            out += records_lib.read_examples(os.path.join(d, shard["file"]))
    return out


def _check_valid(examples, vocab_size: int, max_len: int) -> None:
    for ex in examples:
        ids = ex["input_ids"]
        assert 3 <= len(ids) <= max_len and len(ex["token_type_ids"]) == len(ids)
        assert ids.min() >= 0 and ids.max() < vocab_size
        assert ex["pair_label"].shape == (1,)


def _manifest_without_run_settings(m: Manifest) -> dict:
    m = json.loads(json.dumps(m.raw))
    for key in ("num_workers", "max_inflight_mb"):
        m["settings"].pop(key)
    return m


# ------------------------------------------------------------------------ file format


def test_example_and_tfrecord_bytes_match_tensorflow(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from tensorflow.core.example import example_pb2

    assert records_lib.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    rng = np.random.default_rng(0)
    n = 3000
    features = {}
    for name, lo, hi, most, least in (
        ("input_ids", 0, 70_000, 130, 1),
        ("pair_label", -1, 2, 1, 1),
        ("masked_lm_positions", 0, 200, 5, 0),  # empty lists too
        ("wide", -(2**40), 2**62, 3, 0),
    ):
        counts = rng.integers(least, most + 1, n)
        features[name] = (rng.integers(lo, hi, counts.sum()), counts)
    counts = rng.integers(0, 6, n)  # float lists (Google's masked_lm_weights), empty too
    features["weights"] = (rng.normal(size=counts.sum()).astype(np.float32), counts)
    records = records_lib.encode_examples(features)
    starts = {k: np.concatenate([[0], np.cumsum(c)]) for k, (_, c) in features.items()}
    for e in range(0, n, 13):
        ex = example_pb2.Example()
        for name, (v, _) in features.items():
            s = starts[name]
            kind = "float_list" if v.dtype == np.float32 else "int64_list"
            getattr(ex.features.feature[name], kind).value.extend(v[s[e] : s[e + 1]].tolist())
        assert ex.SerializeToString(deterministic=True) == records[e]
    path = str(tmp_path / "x.tfrecord")
    with open(path, "wb") as f:
        f.write(records_lib.tfrecord_bytes(features))
    assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == records  # TF checks CRCs
    assert records_lib.read_records(path) == records
    parsed = records_lib.parse_example(records[5])
    for name, (v, _) in features.items():
        np.testing.assert_array_equal(parsed[name], v[starts[name][5] : starts[name][6]])
    with open(path, "r+b") as f:  # a flipped byte is caught
        f.seek(40)
        b = f.read(1)
        f.seek(40)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(records_lib.DataFormatError, match="CRC mismatch"):
        records_lib.read_records(path)


# ------------------------------------------------------------------------ determinism


def test_same_shards_for_1_and_2_worker_processes(corpus, tok, tmp_path):
    # Google's rules on: passes rebuilt, budget from every token, one-sentence chunks
    # always a random next.
    kw = dict(
        masking="static",
        dupe_factor=2,
        docs_per_shard=30,
        dupe_mode="rebuild",
        masking_config={"budget": "google"},
        nsp_single_sentence="random_next",
    )
    m0 = _run(corpus, tok, tmp_path / "w0", num_workers=0, **kw)
    m1 = _run(corpus, tok, tmp_path / "w1", num_workers=1, **kw)
    m2 = _run(corpus, tok, tmp_path / "w2", num_workers=2, **kw)
    h0, h1, h2 = (_hashes(tmp_path / d) for d in ("w0", "w1", "w2"))
    assert len([f for f in h1 if f.endswith(".tfrecord")]) == 8  # 240 docs / 30
    assert h0 == h1 == h2
    assert (
        _manifest_without_run_settings(m0)
        == _manifest_without_run_settings(m1)
        == _manifest_without_run_settings(m2)
    )
    assert m1["splits"]["validation"]["shards"] and m1["splits"]["train"]["shards"]
    # A different seed gives different shards.
    m3 = _run(corpus, tok, tmp_path / "s", seed=4, **kw)
    assert (
        m3["splits"]["train"]["shards"][0]["sha256"] != m1["splits"]["train"]["shards"][0]["sha256"]
    )


def test_manifest_counts_checksums_and_contents(corpus, tok, tmp_path):
    d = tmp_path / "data"
    m = _run(corpus, tok, d)
    assert m == Manifest.read(str(d), verify_checksums=True)
    assert m["format"] == "bertjax-data" and m["version"] == 1 and m["vocab_check"] == "ok"
    assert m["masking"] == "dynamic" and m["settings"]["instances"] == "nsp"
    assert m["settings"]["max_seq_length"] == MAX_LEN and m["settings"]["seed"] == 3
    with open(d / "tokenizer" / "tokenizer.json", "rb") as f:
        assert m["tokenizer"]["sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert m["tokenizer"]["vocab_size"] == tok.vocab_size
    assert m["tokenizer"]["kind"] == "wordpiece"
    # 240 documents / 40 = 6 chunks; every 3rd one is validation.
    assert [len(m["splits"][s]["shards"]) for s in ("train", "validation")] == [4, 2]
    assert m["input_stats"]["documents"] == 240 and m["source_stats"]["documents"] == 240
    assert sorted(os.listdir(d)) == sorted(
        ["manifest.json", "tokenizer"]
        + [f"train-{i:05d}-of-00004.tfrecord" for i in range(4)]
        + [f"validation-{i:05d}-of-00002.tfrecord" for i in range(2)]
    )
    total_tokens = 0
    for split in m["splits"].values():
        for shard in split["shards"]:
            path = d / shard["file"]
            with open(path, "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == shard["sha256"]
            examples = records_lib.read_examples(str(path))
            assert len(examples) == shard["examples"]
            assert sum(len(e["input_ids"]) for e in examples) == shard["tokens"]
            total_tokens += shard["tokens"]
            _check_valid(examples, tok.vocab_size, MAX_LEN)
            for e in examples:  # BERT layout with [CLS] / [SEP]
                ids, types = e["input_ids"], e["token_type_ids"]
                assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
                assert (ids == tok.sep_id).sum() == 2 and types[-1] == 1 and types[0] == 0
                assert "masked_lm_ids" not in e
    assert m["instance_stats"]["instance_tokens"] == total_tokens
    # Every document token appears (source_tokens = the tokenizer's count).
    assert m["instance_stats"]["source_tokens"] == sum(
        len(tok.encode(s, add_special_tokens=False)) for doc in corpus for s in doc
    )


@pytest.mark.parametrize(
    "kind,labels",
    [("sop", {0, 1}), ("full_sentences", {-1}), ("doc_sentences", {-1}), ("mlm", {-1})],
)
def test_every_instance_kind_writes_valid_shards(corpus, tok, tmp_path, kind, labels):
    m = _run(corpus[:120], tok, tmp_path / kind, instances=kind, validation_every=0)
    examples = _all_examples(tmp_path / kind, m)
    assert len(examples) == m["splits"]["train"]["examples"] > 0
    assert "validation" not in m["splits"]
    _check_valid(examples, tok.vocab_size, MAX_LEN)
    assert {int(e["pair_label"][0]) for e in examples} == labels
    if labels == {-1}:
        assert all(not e["token_type_ids"].any() for e in examples)


# ------------------------------------------------------------------------ static masking


def test_remask_writes_dupe_factor_different_copies(corpus, tok, tmp_path):
    d = tmp_path / "static"
    m = _run(
        corpus[:80], tok, d, masking="static", dupe_factor=3, validation_every=0, dupe_mode="remask"
    )
    assert m["masking"] == "static" and m["settings"]["masking_config"]["masked_lm_prob"] == 0.15
    examples = _all_examples(d, m)
    specials = {tok.cls_id, tok.sep_id, tok.pad_id}
    groups: dict[tuple, list] = {}
    for e in examples:
        ids, pos, lab = e["input_ids"], e["masked_lm_positions"], e["masked_lm_ids"]
        assert len(pos) == len(lab) >= 1 and len(pos) <= 20
        assert np.all(np.diff(pos) > 0) and pos.max() < len(ids)
        assert not specials & set(lab.tolist())  # never a special token
        original = ids.copy()
        original[pos] = lab
        groups.setdefault((tuple(original), int(e["pair_label"][0])), []).append(
            (tuple(pos), tuple(ids))
        )
    # Every instance is there exactly dupe_factor times, masked differently.
    sizes = [len(g) for g in groups.values()]
    assert set(sizes) == {3} and len(examples) == 3 * len(groups)
    differ = [len({ids for _, ids in g}) == 3 for g in groups.values()]
    assert np.mean(differ) > 0.95
    # Copies are spread through the shard, not adjacent.
    first = records_lib.read_examples(str(d / m["splits"]["train"]["shards"][0]["file"]))
    same_next = sum(
        np.array_equal(a["token_type_ids"], b["token_type_ids"])
        and a["pair_label"][0] == b["pair_label"][0]
        and len(a["input_ids"]) == len(b["input_ids"])
        and (a["input_ids"] == b["input_ids"]).mean() > 0.7
        for a, b in zip(first, first[1:], strict=False)
    )
    assert same_next < 0.2 * len(first)


# ------------------------------------------------------------------------ resume


def _stat(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def _unmasked_pairs(d, m) -> list[tuple]:
    out = []
    for e in _all_examples(d, m):
        original = e["input_ids"].copy()
        original[e["masked_lm_positions"]] = e["masked_lm_ids"]
        out.append((tuple(original), int(e["pair_label"][0])))
    return out


def test_rebuild_passes_differ_in_pairing_and_lengths_not_only_masks(corpus, tok, tmp_path):
    """dupe_mode=rebuild (the default, Google's): every pass draws new target lengths,
    split points and random next segments, so the passes hold other pairs, of other
    lengths; remask repeats one set of pairs dupe_factor times. Google's budget: each
    example predicts min(20, round(0.15 x its length)) positions (token masking)."""
    kw = dict(masking="static", dupe_factor=3, validation_every=0)
    m_re = _run(corpus[:80], tok, tmp_path / "remask", dupe_mode="remask", **kw)
    m_rb = _run(corpus[:80], tok, tmp_path / "rebuild", masking_config={"budget": "google"}, **kw)
    remask, rebuild = (
        _unmasked_pairs(tmp_path / n, m) for n, m in (("remask", m_re), ("rebuild", m_rb))
    )
    assert len(set(remask)) * 3 == len(remask)  # one set, three times
    # Rebuilt passes: far more distinct pairs (some short documents come out the same).
    assert len(set(rebuild)) > 2 * len(set(remask)), (len(set(rebuild)), len(set(remask)))
    lengths = np.array([len(ids) for ids, _ in rebuild])
    assert np.unique(lengths).size > np.unique([len(ids) for ids, _ in set(remask)]).size
    # Instances are counted per pass built: three passes against one.
    assert m_rb["instance_stats"]["instances"] > 2.5 * m_re["instance_stats"]["instances"]
    for e in _all_examples(tmp_path / "rebuild", m_rb):
        n = len(e["input_ids"])
        assert len(e["masked_lm_positions"]) == min(20, max(1, round(0.15 * n))), n
    assert m_rb["settings"]["dupe_mode"] == "rebuild"
    assert m_rb["settings"]["masking_config"]["budget"] == "google"


def test_resume_rewrites_only_a_deleted_shard(corpus, tok, tmp_path):
    d = tmp_path / "data"
    m1 = _run(corpus, tok, d)
    before = _hashes(d)
    shards = [s["file"] for sp in m1["splits"].values() for s in sp["shards"]]
    stats = {f: _stat(d / f) for f in shards}
    os.remove(d / shards[2])
    m2 = _run(corpus, tok, d)
    assert _hashes(d) == before
    assert m2["input_stats"]["shards_reused"] == len(shards) - 1
    assert m2["input_stats"]["shards_written"] == 1
    for f in shards:
        if f != shards[2]:
            assert _stat(d / f) == stats[f], f  # not rewritten
    m1, m2 = dict(m1), dict(m2)
    m1["input_stats"] = m2["input_stats"] = None
    assert m1 == m2
    assert not os.path.exists(d / ".shards")


class _Killed(BaseException):
    pass


def test_interrupted_run_resumes_from_finished_shards(corpus, tok, tmp_path, monkeypatch):
    fresh = _run(corpus, tok, tmp_path / "fresh")
    d = tmp_path / "data"
    real = shards_lib.process_chunk
    calls, killed = [], []

    def dies_on_chunk_4(task):
        calls.append(task["chunk"])
        if task["chunk"] == 4 and not killed:
            killed.append(True)
            raise _Killed  # as if the process were killed here
        return real(task)

    monkeypatch.setattr(shards_lib, "process_chunk", dies_on_chunk_4)
    with pytest.raises(_Killed):
        _run(corpus, tok, d)
    assert not os.path.exists(d / "manifest.json")  # never a manifest for partial data
    finished = sorted(os.listdir(d / ".shards"))
    assert len([f for f in finished if f.endswith(".tfrecord")]) == 4
    # A leftover temporary file from the kill is cleaned up, never used.
    with open(d / ".shards" / "train-00003.tfrecord.tmp-1-abc", "wb") as f:
        f.write(b"partial")
    calls.clear()
    m = _run(corpus, tok, d)
    assert calls == [4, 5]  # only the unfinished chunks are processed
    assert m["input_stats"]["shards_reused"] == 4
    assert _hashes(d) == _hashes(tmp_path / "fresh")
    m, fresh = dict(m), dict(fresh)
    m["input_stats"] = fresh["input_stats"] = None
    assert m == fresh


def test_changed_settings_or_corpus_rewrite_what_changed(corpus, tok, tmp_path):
    d = tmp_path / "data"
    _run(corpus, tok, d)
    m = _run(corpus, tok, d, seed=99)  # new seed: nothing reusable
    assert m["input_stats"]["shards_reused"] == 0
    changed = [list(doc) for doc in corpus]
    changed[-1] = ["an edited last document."]  # only the last chunk changes
    m = _run(changed, tok, d, seed=99)
    assert m["input_stats"]["shards_reused"] == 5 and m["input_stats"]["shards_written"] == 1
    # More documents: the shard count changes, earlier shards are renamed, not rebuilt.
    m = _run(changed + changed[:40], tok, d, seed=99)
    assert m["input_stats"]["shards_reused"] == 6
    assert sorted(f for f in os.listdir(d) if f.endswith(".tfrecord")) == sorted(
        [f"train-{i:05d}-of-00005.tfrecord" for i in range(5)]
        + [f"validation-{i:05d}-of-00002.tfrecord" for i in range(2)]
    )
    Manifest.read(str(d), verify_checksums=True)


# ------------------------------------------------------------------------ memory bound


def test_reading_ahead_is_bounded(corpus, tok, tmp_path):
    """The main process never reads more than 2 * num_workers chunks ahead of the
    shards written (the in-flight bound), whatever the corpus size."""
    d = tmp_path / "data"
    dps, workers = 10, 1
    ahead = []

    def documents():
        for j, doc in enumerate(corpus):
            done = len(glob.glob(str(d / ".shards" / "*.json")))
            ahead.append(j // dps - done)  # chunks read but not written
            yield doc

    _run(documents(), tok, d, docs_per_shard=dps, num_workers=workers, validation_every=0)
    assert max(ahead) <= 2 * workers + 1  # in flight, plus the chunk being read
    assert max(ahead) >= 1


# ------------------------------------------------------------------------ bad input


def test_bad_inputs_give_valid_output_and_counts(corpus, tok, tmp_path):
    huge = " ".join(["lorem ipsum"] * 20_000)  # a 230 kB sentence
    docs = [
        [],
        ["", "  \t "],
        None,  # not a document
        [huge],
        ["ok words.", 7, None, "more words."],
        "a bare string is one sentence.",
        ["x" * 300 + " word."],  # a 300-character word
        ["nul\x00 and control\x07 characters.", "\ud800 lone surrogate."],
        *corpus[:5],
    ]
    d = tmp_path / "bad"
    m = _run(docs, tok, d, docs_per_shard=1000, masking="static", dupe_factor=2)
    assert m["vocab_check"] == "ok"
    st = m["input_stats"]
    assert st["documents"] == len(docs)
    assert st["empty_documents"] == 2 and st["invalid_documents"] == 1
    assert st["invalid_sentences"] == 2 and st["chunks"] == 1  # smaller than one shard
    istats = m["instance_stats"]
    assert istats["long_sentences_split_chars"] == 1 and istats["long_sentences_split_tokens"] > 1
    examples = _all_examples(d, m)
    assert len(examples) == m["splits"]["train"]["examples"] > 100
    _check_valid(examples, tok.vocab_size, MAX_LEN)
    Manifest.read(str(d), verify_checksums=True)


def test_one_document_corpus_falls_back_to_actual_next(corpus, tok, tmp_path):
    one = [[s for doc in corpus[:6] for s in doc]]
    m = _run(one, tok, tmp_path / "one")
    examples = _all_examples(tmp_path / "one", m)
    assert examples and {int(e["pair_label"][0]) for e in examples} == {0}
    assert m["instance_stats"]["nsp_random_unavailable"] > 0
    _check_valid(examples, tok.vocab_size, MAX_LEN)


def test_a_corpus_without_examples_is_an_error_that_leaves_nothing(tok, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"no training examples \(documents: 2, sentences: "
        r"0, empty documents: 2\); nothing written",
    ):
        _run([[], [""]], tok, tmp_path / "empty")
    assert not os.path.exists(tmp_path / "empty")


def test_bad_settings_fail_fast_naming_the_setting(corpus, tok, tmp_path):
    for kw, match in (
        (dict(instances="bogus"), "instances='bogus'"),
        (dict(max_seq_length=4), "max_seq_length=4"),
        (dict(masking="sometimes"), "masking='sometimes'"),
        (dict(docs_per_shard=0), "docs_per_shard=0"),
        (dict(num_workers=-1), "num_workers=-1"),
        (dict(short_seq_prob=2.0), "short_seq_prob=2.0"),
    ):
        with pytest.raises(ValueError, match=match):
            _run(corpus, tok, tmp_path / "x", **kw)


def test_read_manifest_errors_name_the_file(corpus, tok, tmp_path):
    d = tmp_path / "data"
    with pytest.raises(records_lib.DataFormatError, match="manifest.json: not found"):
        Manifest.read(str(d))
    m = _run(corpus[:50], tok, d)
    path = d / "manifest.json"
    good = path.read_text()
    for broken, match in (
        ("{not json", "not valid JSON"),
        (json.dumps({**m, "format": "other"}), "format is 'other'"),
        (json.dumps({**m, "version": 9}), "version 9"),
        (json.dumps({k: v for k, v in m.items() if k != "tokenizer"}), "missing key 'tokenizer'"),
    ):
        path.write_text(broken)
        with pytest.raises(records_lib.DataFormatError, match=match) as e:
            Manifest.read(str(d))
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    path.write_text(good)
    shard = d / m["splits"]["train"]["shards"][0]["file"]
    with open(shard, "ab") as f:
        f.write(b"x")
    with pytest.raises(records_lib.DataFormatError, match="bytes, expected"):
        Manifest.read(str(d))
    os.remove(shard)
    with pytest.raises(records_lib.DataFormatError, match="is missing"):
        Manifest.read(str(d))
    shutil.rmtree(d)


def test_progress_line_shows_documents_and_megabytes_per_second(corpus, tok, tmp_path, capsys):
    _run(corpus[:60], tok, tmp_path / "p", progress=True)
    err = capsys.readouterr().err
    assert "docs" in err and "MB/s" in err and "60" in err


def test_file_source_stats_reach_the_manifest(tok, tmp_path):
    sources = pytest.importorskip("bertjax.data.sources")
    if not hasattr(sources, "open_source"):
        pytest.skip("sources.open_source not available yet")
    text = (
        b"first sentence of one.\nsecond \xff\xfe sentence.\n\n"
        b"another doc\x00 with a nul.\nand more words here.\n\n\n"
        b"third document only line.\n"
    )
    (tmp_path / "a.txt").write_bytes(text * 20)
    spec = f"bert:{tmp_path}/*.txt"
    m = prep.prepare(
        spec,
        tok,
        str(tmp_path / "data"),
        PrepareSettings(instances="nsp", max_seq_length=MAX_LEN, docs_per_shard=16),
        progress=False,
    )
    assert m["settings"]["source"] == spec
    st = m["source_stats"]
    assert st["documents"] == m["input_stats"]["documents"] > 0
    assert st["invalid_utf8"] > 0 and st["control_chars"] > 0
    _check_valid(_all_examples(tmp_path / "data", m), tok.vocab_size, MAX_LEN)


@pytest.mark.parametrize("masking", ["dynamic", "static"])
def test_vocab_check_drops_and_reports_bad_examples(corpus, tok, tmp_path, monkeypatch, masking):
    """Ids come from the tokenizer, so nothing fails normally; an instance that did
    (a bug upstream) is dropped, counted, and never written."""
    from bertjax.data import instances as inst

    real = inst.create_instances

    def with_bad_ones(*args, **kwargs):
        out = real(*args, **kwargs)
        ids = np.array([tok.cls_id, tok.vocab_size + 3, tok.sep_id], np.int32)
        out.append(inst.Instance(ids, np.zeros(3, np.int32), -1, ((0, 0, 1),)))
        long = np.full(MAX_LEN + 1, 10, np.int32)
        out.append(inst.Instance(long, np.zeros_like(long), -1, ((0, 0, MAX_LEN),)))
        return out

    monkeypatch.setattr(inst, "create_instances", with_bad_ones)
    m = _run(corpus[:80], tok, tmp_path / "v", masking=masking, dupe_factor=2, validation_every=0)
    copies = 2 if masking == "static" else 1
    assert m["vocab_check"].startswith(f"dropped {2 * 2 * copies} examples")  # 2 shards
    assert sum(s["vocab_check_dropped"] for s in m["splits"]["train"]["shards"]) == 4 * copies
    _check_valid(_all_examples(tmp_path / "v", m), tok.vocab_size, MAX_LEN)


def test_google_format_records_parse_with_run_pretraining_features(corpus, tok, tmp_path):
    """format='google' writes the same examples as the default format (same settings
    and seed), as the fixed-length features Google's run_pretraining.py declares; they
    parse with exactly that spec, and the pipeline reads them as the default format."""
    tf = pytest.importorskip("tensorflow")
    from bertjax.data.pipeline import Pipeline, PipelineConfig

    kw = dict(
        masking="static",
        dupe_factor=2,
        validation_every=0,
        masking_config={"max_predictions_per_seq": 20, "budget": "google"},
    )
    m_ours = _run(corpus[:60], tok, tmp_path / "ours", **kw)
    m_goog = _run(corpus[:60], tok, tmp_path / "google", record_format="google", **kw)
    ours = _all_examples(tmp_path / "ours", m_ours)
    length, predictions = MAX_LEN, 20
    spec = {  # run_pretraining.py's input_fn_builder
        "input_ids": tf.io.FixedLenFeature([length], tf.int64),
        "input_mask": tf.io.FixedLenFeature([length], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([length], tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature([predictions], tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature([predictions], tf.int64),
        "masked_lm_weights": tf.io.FixedLenFeature([predictions], tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }
    files = [str(tmp_path / "google" / s["file"]) for s in m_goog["splits"]["train"]["shards"]]
    theirs = [
        {k: v.numpy() for k, v in tf.io.parse_single_example(r, spec).items()}
        for r in tf.data.TFRecordDataset(files)
    ]
    assert len(theirs) == len(ours) > 100
    for a, g in zip(ours, theirs, strict=True):
        n, k = len(a["input_ids"]), len(a["masked_lm_positions"])
        np.testing.assert_array_equal(g["input_ids"][:n], a["input_ids"])
        assert not g["input_ids"][n:].any() and not g["segment_ids"][n:].any()
        np.testing.assert_array_equal(g["input_mask"], np.arange(length) < n)
        np.testing.assert_array_equal(g["segment_ids"][:n], a["token_type_ids"])
        np.testing.assert_array_equal(g["masked_lm_positions"][:k], a["masked_lm_positions"])
        np.testing.assert_array_equal(g["masked_lm_ids"][:k], a["masked_lm_ids"])
        np.testing.assert_array_equal(g["masked_lm_weights"], np.arange(predictions) < k)
        assert not g["masked_lm_positions"][k:].any() and not g["masked_lm_ids"][k:].any()
        assert g["next_sentence_labels"][0] == a["pair_label"][0]
    # The pipeline reads them into the very batches of the default format's directory.
    pipes = [
        Pipeline(Manifest.read(str(tmp_path / d)), PipelineConfig("train", 8, seed=3, repeat=False))
        for d in ("ours", "google")
    ]
    batches = [list(p) for p in pipes]
    assert len(batches[0]) == len(batches[1]) == pipes[0].steps_per_epoch > 10
    for a, g in zip(*batches, strict=True):
        assert a.keys() == g.keys()
        for key in a:
            np.testing.assert_array_equal(g[key], a[key], err_msg=key)
    with pytest.raises(ValueError, match="format='google' needs static masking"):
        _run(corpus[:60], tok, tmp_path / "bad", record_format="google")
