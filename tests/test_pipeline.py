"""Tests of bertjax/data/pipeline.py on shards written here, exactly per the data contract.

Every example carries a unique id in its tokens 1 and 2 (see `uid_tokens`), so tests
can tell which examples each host read; dynamic masks are undone with
masked_lm_positions / masked_lm_ids before reading it.
"""

from __future__ import annotations

import json
import os
import textwrap

import clilib
import numpy as np
import pytest
from datalib import BASE, DYN, PAD, SEP, VOCAB, take, write_data

from bertjax.data import pipeline
from bertjax.data.hosts import plan_hosts
from bertjax.data.manifest import Manifest
from bertjax.data.masking import MaskingConfig
from bertjax.data.pipeline import DataError, Pipeline, PipelineConfig


def _pipe(data_dir: str, *args, **kwargs) -> Pipeline:
    """Pipeline over the directory's Manifest, PipelineConfig(*args, **kwargs)."""
    return Pipeline(Manifest.read(data_dir), PipelineConfig(*args, **kwargs))


def _unmasked(batch: dict[str, np.ndarray]) -> np.ndarray:
    """input_ids with the masked positions given back their original ids."""
    ids = batch["input_ids"].copy()
    rows, slots = np.nonzero(batch["masked_lm_weights"])
    ids[rows, batch["masked_lm_positions"][rows, slots]] = batch["masked_lm_ids"][rows, slots]
    return ids


def _uids(batch: dict[str, np.ndarray]) -> np.ndarray:
    ids = _unmasked(batch)
    return (ids[:, 1] - 5) * BASE + (ids[:, 2] - 5)


@pytest.fixture(scope="module")
def data96(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("d96"))
    return d, write_data(d, 96, 4)


# ------------------------------------------------------------------ host assignment


def test_plan_hosts():
    p = plan_hosts([10, 10, 10, 10], 1, 2)
    assert (p.mode, p.files, p.epoch_examples, p.dropped_per_epoch) == ("shard", (1, 3), 20, 0)
    p = plan_hosts([10, 10, 10], 0, 2)  # 3 shards do not divide over 2 hosts
    assert (p.mode, p.files, p.epoch_examples, p.take) == ("record", (0, 1, 2), 15, 30)
    p = plan_hosts([7], 1, 2)  # fewer shards than hosts
    assert (p.mode, p.epoch_examples, p.take, p.dropped_per_epoch) == ("record", 3, 6, 1)
    p = plan_hosts([1000, 1001, 1000, 1000], 0, 2)  # 0.05% apart: shard level, 1 left out
    assert (p.mode, p.epoch_examples, p.dropped_per_epoch) == ("shard", 2000, 1)
    p = plan_hosts([10, 20, 10, 10], 0, 2)  # too far apart: record level
    assert (p.mode, p.epoch_examples) == ("record", 25)


@pytest.mark.parametrize("n_shards", [4, 3, 1])
def test_two_hosts_read_every_example_once_per_epoch(tmp_path, n_shards):
    write_data(str(tmp_path), 96, n_shards)
    hosts = [
        take(
            _pipe(
                str(tmp_path),
                "train",
                16,
                seed=3,
                masking=DYN,
                process_index=i,
                process_count=2,
                shuffle_buffer=20,
            ),
            12,
        )
        for i in range(2)
    ]
    assert hosts[0][0]["input_ids"].shape == (8, 16)
    epochs = []
    for e in range(2):  # 96 examples / global batch 16 = 6 steps per epoch
        steps = range(6 * e, 6 * e + 6)
        seen = np.concatenate([_uids(hosts[h][k]) for h in range(2) for k in steps])
        assert sorted(seen.tolist()) == list(range(96))
        epochs.append(np.concatenate([_uids(b) for b in hosts[0][6 * e : 6 * e + 6]]))
    assert not np.array_equal(epochs[0], epochs[1])  # a new order every epoch


def test_uneven_hosts_leave_out_the_remainder(tmp_path):
    write_data(str(tmp_path), 25, 1)  # record level; 1 example left out per epoch
    pipes = [
        _pipe(
            str(tmp_path),
            "train",
            4,
            seed=0,
            masking=DYN,
            process_index=i,
            process_count=2,
            shuffle_buffer=1,
        )
        for i in range(2)
    ]
    assert pipes[0].epoch_examples == 12 and pipes[0].dropped_per_epoch == 1
    got = [np.concatenate([_uids(b) for b in take(p, 6)]) for p in pipes]  # one epoch
    seen = np.concatenate(got)
    assert len(set(seen.tolist())) == 24 and set(seen.tolist()) <= set(range(25))


# ------------------------------------------------------------------ determinism, resume


def test_same_seed_same_stream_other_seed_other_order(data96):
    d, _ = data96
    a = take(_pipe(d, "train", 16, seed=1, masking=DYN), 8)
    b = take(_pipe(d, "train", 16, seed=1, masking=DYN), 8)
    c = take(_pipe(d, "train", 16, seed=2, masking=DYN), 8)
    for x, y in zip(a, b, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    ua = np.concatenate([_uids(x) for x in a])
    uc = np.concatenate([_uids(x) for x in c])
    assert not np.array_equal(ua, uc)
    assert sorted(ua[:96].tolist()) == sorted(uc[:96].tolist()) == list(range(96))


@pytest.mark.parametrize("k", [0, 4, 7])
def test_restore_equals_uninterrupted_stream(data96, k):
    d, _ = data96
    kwargs = dict(split="train", global_batch_size=16, seed=5, masking=DYN, shuffle_buffer=30)
    full = take(_pipe(d, **kwargs), k + 5)
    pipe = _pipe(d, **kwargs)
    take(pipe, k) if k else None
    state = pipe.state()
    assert state == {"step": k}
    state = json.loads(json.dumps(state))
    resumed = take(Pipeline.restore(state, Manifest.read(d), PipelineConfig(**kwargs)), 5)
    also = take(_pipe(d, **kwargs, start_step=k), 5)
    for expected, got, got2 in zip(full[k:], resumed, also, strict=True):
        for key in expected:
            assert expected[key].dtype == got[key].dtype
            np.testing.assert_array_equal(expected[key], got[key])
            np.testing.assert_array_equal(expected[key], got2[key])


def test_restore_two_hosts(tmp_path):
    write_data(str(tmp_path), 40, 2)
    for i in range(2):
        kwargs = dict(
            split="train",
            global_batch_size=8,
            seed=9,
            masking=DYN,
            process_index=i,
            process_count=2,
        )
        full = take(_pipe(str(tmp_path), **kwargs), 9)
        resumed = take(
            Pipeline.restore({"step": 6}, Manifest.read(str(tmp_path)), PipelineConfig(**kwargs)), 3
        )
        for expected, got in zip(full[6:], resumed, strict=True):
            for key in expected:
                np.testing.assert_array_equal(expected[key], got[key])


def test_state_counts_consumed_batches(data96):
    d, _ = data96
    pipe = _pipe(d, "train", 16, seed=0, masking=DYN)
    it = iter(pipe)
    next(it)
    next(it)
    assert pipe.state() == {"step": 2}
    it.close()
    again = take(pipe, 1)  # a new iterator continues from the state
    expected = take(_pipe(d, "train", 16, seed=0, masking=DYN, start_step=2), 1)
    np.testing.assert_array_equal(again[0]["input_ids"], expected[0]["input_ids"])
    assert pipe.state() == {"step": 3}


# ------------------------------------------------------------------ contents


def test_batch_shapes_dtypes_padding_and_masks(data96):
    d, examples = data96
    (batch,) = take(_pipe(d, "train", 16, seed=0, masking=DYN), 1)
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "masked_lm_positions",
        "masked_lm_ids",
        "masked_lm_weights",
        "pair_labels",
    }
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert batch[key].shape == (16, 16) and batch[key].dtype == np.int32
    for key in ("masked_lm_positions", "masked_lm_ids"):
        assert batch[key].shape == (16, 3) and batch[key].dtype == np.int32
    assert batch["masked_lm_weights"].dtype == np.float32
    assert batch["pair_labels"].shape == (16,) and batch["pair_labels"].dtype == np.int32
    ids = _unmasked(batch)
    for row, uid in enumerate(_uids(batch)):
        ex = examples[int(uid)]
        n = len(ex["input_ids"])
        np.testing.assert_array_equal(ids[row, :n], ex["input_ids"])
        assert (ids[row, n:] == PAD).all()
        np.testing.assert_array_equal(batch["attention_mask"][row], np.arange(16) < n)
        np.testing.assert_array_equal(batch["token_type_ids"][row, :n], ex["token_type_ids"])
        assert (batch["token_type_ids"][row, n:] == 0).all()
        assert batch["pair_labels"][row] == ex["pair_label"][0]
        # Dynamic masks: 15% of the non-special tokens, at least one, inside the example.
        w = batch["masked_lm_weights"][row]
        assert w.sum() == min(3, max(1, round((n - 2) * 0.15)))
        pos = batch["masked_lm_positions"][row][w > 0]
        assert ((pos > 0) & (pos < n - 1)).all()
        assert (batch["masked_lm_positions"][row][w == 0] == 0).all()
        changed = batch["input_ids"][row] != ids[row]
        assert set(np.flatnonzero(changed)) <= set(pos.tolist())


def test_dynamic_masks_use_the_documented_rng(data96):
    from bertjax.data.masking import masker_from_tokenizer
    from bertjax.data.tokenizers import load_tokenizer

    d, _ = data96
    batches = take(_pipe(d, "train", 16, seed=4, masking=DYN, process_index=1, process_count=2), 3)
    masker = masker_from_tokenizer(load_tokenizer(os.path.join(d, "tokenizer")), DYN)
    for k, batch in enumerate(batches):
        again = masker(_unmasked(batch), batch["attention_mask"], np.random.default_rng([4, k, 1]))
        for key, value in again.items():
            np.testing.assert_array_equal(value, batch[key])


def test_static_masks_are_read_back_exactly(tmp_path):
    examples = write_data(str(tmp_path), 40, 3, static=True, max_predictions=4)
    seen = set()
    for batch in take(_pipe(str(tmp_path), "train", 8, seed=0), 5):
        assert batch["masked_lm_positions"].shape == (8, 4)
        for row in range(8):
            ids = batch["input_ids"][row]
            uid = int((ids[1] - 5) * BASE + ids[2] - 5)
            ex = examples[uid]
            seen.add(uid)
            n, k = len(ex["input_ids"]), len(ex["masked_lm_positions"])
            np.testing.assert_array_equal(ids[:n], ex["input_ids"])
            np.testing.assert_array_equal(
                batch["masked_lm_positions"][row, :k], ex["masked_lm_positions"]
            )
            np.testing.assert_array_equal(batch["masked_lm_ids"][row, :k], ex["masked_lm_ids"])
            np.testing.assert_array_equal(batch["masked_lm_weights"][row], np.arange(4) < k)
            assert (batch["masked_lm_positions"][row, k:] == 0).all()
    assert seen == set(range(40))


def test_corpus_smaller_than_one_batch_still_yields_batches(tmp_path):
    write_data(str(tmp_path), 5, 2)
    batches = take(_pipe(str(tmp_path), "train", 16, seed=0, masking=DYN), 3)
    uids = np.concatenate([_uids(b) for b in batches])
    assert len(uids) == 48
    for e in range(9):  # every epoch (5 records) holds every example once
        assert sorted(uids[5 * e : 5 * e + 5].tolist()) == list(range(5))


def test_single_pass_reads_every_example_once_and_fills_the_last_batch(data96):
    d, _ = data96
    pipe = _pipe(d, "train", 20, seed=0, masking=DYN, repeat=False)
    batches = list(pipe)
    assert len(batches) == pipe.steps_per_epoch == 5 and pipe.state() == {"step": 5}
    last = batches[-1]
    assert last["input_ids"].shape == (20, 16)
    assert (last["attention_mask"][16:] == 0).all() and (last["input_ids"][16:] == PAD).all()
    assert (last["masked_lm_weights"][16:] == 0).all() and (last["pair_labels"][16:] == -1).all()
    uids = np.concatenate([_uids(b)[b["attention_mask"][:, 0] == 1] for b in batches])
    assert sorted(uids.tolist()) == list(range(96))
    assert list(_pipe(d, "train", 20, seed=0, masking=DYN, repeat=False, start_step=5)) == []


# ------------------------------------------------------------------ bad data


def _bad_id(uid, feats):
    if uid == 13:
        feats["input_ids"][5] = VOCAB + 7


def test_id_outside_vocabulary_raises_clear_error(tmp_path):
    write_data(str(tmp_path), 32, 2, mutate=_bad_id)
    # uid 13 is record 6 of shard 1 (shard s holds uids s, s + 2, ...).
    shard = os.path.join(str(tmp_path), "train-00001-of-00002.tfrecord")
    with pytest.raises(
        DataError,
        match=rf"^{shard}, record 6: token id {VOCAB + 7} is outside "
        r"the vocabulary \[0, 805\) of .*tokenizer \(split",
    ):
        take(_pipe(str(tmp_path), "train", 8, seed=0, masking=DYN), 4)


def _bad_position(uid, feats):
    if uid == 2:
        feats["masked_lm_positions"][-1] = len(feats["input_ids"]) + 1


def test_static_mask_outside_its_example_raises(tmp_path):
    write_data(str(tmp_path), 8, 1, static=True, mutate=_bad_position)
    shard = os.path.join(str(tmp_path), "train-00000-of-00001.tfrecord")
    with pytest.raises(DataError, match=f"^{shard}, record 2: a masked_lm position lies outside"):
        take(_pipe(str(tmp_path), "train", 8, seed=0), 1)
    with pytest.raises(DataError, match="the shards are already masked"):
        _pipe(str(tmp_path), "train", 8, seed=0, masking=DYN)


def _too_long(uid, feats):
    if uid == 3:
        ids = feats["input_ids"]
        feats["input_ids"] = ids[:-1] + [7] * (30 - len(ids)) + [SEP]  # 30 tokens
        feats["token_type_ids"] = [0] * 30


def test_length_checks(tmp_path, data96):
    write_data(str(tmp_path), 16, 1, mutate=_too_long)
    with pytest.raises(DataError, match="30 tokens, more than max_seq_length 16"):
        take(_pipe(str(tmp_path), "train", 16, seed=0, masking=DYN), 1)
    d, _ = data96  # lengths up to 16
    with pytest.raises(DataError, match="more than max_position_embeddings 14 - position_offset 2"):
        take(
            _pipe(
                d, "train", 96, seed=0, masking=DYN, max_position_embeddings=14, position_offset=2
            ),
            1,
        )
    assert take(_pipe(d, "train", 96, seed=0, masking=DYN, max_position_embeddings=16), 1)


def test_bad_manifests_and_arguments_fail_in_one_line(tmp_path, data96):
    d, _ = data96
    here = str(tmp_path)
    path = os.path.join(here, "manifest.json")

    def fails(match, manifest=None, **kwargs):
        if manifest is not None:
            with open(path, "w") as f:
                json.dump(manifest, f)
        with pytest.raises(DataError, match=match) as e:
            _pipe(
                kwargs.pop("data_dir", here),
                kwargs.pop("split", "train"),
                8,
                seed=0,
                masking=kwargs.pop("masking", DYN),
                **kwargs,
            )
        assert "\n" not in str(e.value)

    fails(f"{path}: not found")
    with open(path, "w") as f:
        f.write("{not json")
    fails(f"{path}: not valid JSON")
    with open(os.path.join(d, "manifest.json")) as f:
        good = json.load(f)
    fails(f"{path}: shard train-00000-of-00004.tfrecord is missing", good)
    for shard in good["splits"]["train"]["shards"]:
        os.symlink(os.path.join(d, shard["file"]), os.path.join(here, shard["file"]))
    broken = json.loads(json.dumps(good))
    broken["splits"]["train"]["shards"][0]["examples"] = -1
    broken["splits"]["train"]["examples"] = 96 - 24 - 1
    fails(rf"{path}: splits.train.shards\[0\].examples must be an integer", broken)
    broken["splits"]["train"]["shards"][0]["examples"] = "many"
    fails(f"{path}: malformed", broken)
    broken = json.loads(json.dumps(good))
    broken["version"] = 2
    fails(f"{path}: version 2 is not supported", broken)
    fails(f"{os.path.join(here, 'tokenizer')}: tokenizer directory is missing", good)
    os.symlink(os.path.join(d, "tokenizer"), os.path.join(here, "tokenizer"))
    _pipe(here, "train", 8, seed=0, masking=DYN)  # complete now
    broken = json.loads(json.dumps(good))
    broken["tokenizer"]["sha256"] = "0" * 64
    fails("tokenizer.json: sha256 differs", broken)
    fails("no split 'validation'; it has train", data_dir=d, split="validation")
    fails(r"pass masking=MaskingConfig\(...\)", data_dir=d, masking=None)
    with pytest.raises(ValueError, match="not divisible by process_count=3"):
        _pipe(d, "train", 8, seed=0, masking=DYN, process_count=3)
    with pytest.raises(ValueError, match="state"):
        Pipeline.restore({"step": -1}, Manifest.read(d), PipelineConfig("train", 8, seed=0))


def test_a_damaged_shard_is_named_when_first_opened(tmp_path):
    """Bytes flipped in a shard (same size): its sha256 no longer matches the manifest,
    which the pipeline checks before reading the shard; the error names the file. A
    manifest without shard digests (older data) still fails on the records, naming the
    split."""
    write_data(str(tmp_path), 16, 2)
    shard = os.path.join(str(tmp_path), "train-00001-of-00002.tfrecord")
    with open(shard, "r+b") as f:
        f.seek(30)
        f.write(b"\xff" * 8)
    with pytest.raises(DataError) as e:
        take(_pipe(str(tmp_path), "train", 8, seed=0, masking=DYN), 3)
    assert str(e.value) == (
        f"{shard}: its sha256 differs from {tmp_path}/manifest.json; "
        "the shard is damaged or was replaced. Prepare the data again"
    )
    path = os.path.join(str(tmp_path), "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    for s in manifest["splits"]["train"]["shards"]:
        del s["sha256"]
    with open(path, "w") as f:
        json.dump(manifest, f)
    with pytest.raises(DataError, match="train-\\*.tfrecord: cannot read the records"):
        take(_pipe(str(tmp_path), "train", 8, seed=0, masking=DYN), 3)


def test_shards_shorter_than_the_manifest_says(tmp_path):
    write_data(str(tmp_path), 20, 2)
    path = os.path.join(str(tmp_path), "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    manifest["splits"]["train"]["shards"][1]["examples"] += 1
    manifest["splits"]["train"]["examples"] += 1
    with open(path, "w") as f:
        json.dump(manifest, f)
    with pytest.raises(DataError, match="shards hold fewer examples than it lists"):
        take(_pipe(str(tmp_path), "train", 4, seed=0, masking=DYN), 8)


# ------------------------------------------------------------------ global arrays


def test_batches_become_global_arrays_on_8_simulated_devices(data96, tmp_path):
    """A pipeline batch as training shards it (`train.global_batch`: batch axis over the
    mesh's data and fsdp axes, the rest replicated)."""
    d, _ = data96
    (batch,) = take(_pipe(d, "train", 16, seed=0, masking=DYN), 1)
    np.savez(tmp_path / "batch.npz", **batch)
    # A fresh process: JAX in this one may already be initialised with 1 device.
    script = textwrap.dedent(
        f"""
        import jax, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from bertjax.train import global_batch
        assert jax.device_count() == 8
        batch = dict(np.load({str(tmp_path / "batch.npz")!r}))
        mesh = Mesh(np.array(jax.devices()).reshape(2, 2, 2), ("data", "fsdp", "tensor"))
        g = global_batch(batch, mesh, None)
        for key, value in batch.items():
            assert g[key].shape == value.shape and g[key].dtype == value.dtype, key
            assert g[key].sharding == NamedSharding(
                mesh, P(("data", "fsdp"), *([None] * (value.ndim - 1)))), key
            np.testing.assert_array_equal(np.asarray(g[key]), value)
            assert len(g[key].addressable_shards) == 8
            for s in g[key].addressable_shards:
                assert s.data.shape[0] == value.shape[0] // 4
                np.testing.assert_array_equal(np.asarray(s.data), value[s.index])
        try:
            global_batch({{"x": np.zeros((6, 2))}}, mesh, None)
        except Exception as e:
            assert "6" in str(e)
        else:
            raise AssertionError("no error")
        print("OK")
        """
    )
    result = clilib.python("-c", script, devices=8, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
    assert "tensorflow" not in result.stderr.lower()


def test_tensorflow_sees_no_accelerator(data96):
    tf = pipeline._tf()
    assert tf.config.get_visible_devices("GPU") == []


# ------------------------------------------------------------------ with prepare.py


@pytest.mark.parametrize("masking", ["static", "dynamic"])
def test_reads_what_prepare_writes(tmp_path, masking):
    from bertjax.data import prepare
    from bertjax.data.prepare_settings import PrepareSettings
    from bertjax.data.records import read_examples
    from bertjax.data.tokenizers import train_wordpiece

    rng = np.random.default_rng(0)
    words = [f"word{i}" for i in range(60)] + ["alpha", "beta", "gamma", "delta"]
    docs = [
        [" ".join(rng.choice(words, size=int(rng.integers(3, 12)))) + "." for _ in range(6)]
        for _ in range(40)
    ]
    tok = train_wordpiece((" ".join(d) for d in docs), vocab_size=200)
    settings = PrepareSettings(
        instances="nsp",
        max_seq_length=24,
        masking=masking,
        dupe_factor=2,
        docs_per_shard=20,
        num_workers=0,
    )
    manifest = prepare.prepare(docs, tok, str(tmp_path), settings, progress=False)
    expected = [
        ex
        for s in manifest["splits"]["train"]["shards"]
        for ex in read_examples(os.path.join(str(tmp_path), s["file"]))
    ]
    assert len(expected) == manifest["splits"]["train"]["examples"] > 8
    # One pass, no shuffle buffer: the order is the file order interleaved record by record.
    pipe = _pipe(
        str(tmp_path),
        "train",
        4,
        seed=0,
        shuffle_buffer=1,
        repeat=False,
        masking=None if masking == "static" else MaskingConfig(max_predictions_per_seq=4),
    )
    rows = [(b, i) for b in pipe for i in range(4) if b["attention_mask"][i, 0]]
    assert len(rows) == len(expected)

    def record(ids, types, pair, positions, labels):
        return (tuple(ids), tuple(types), int(pair), tuple(positions), tuple(labels))

    want = sorted(
        record(
            ex["input_ids"],
            ex["token_type_ids"],
            ex["pair_label"][0],
            ex.get("masked_lm_positions", ()),
            ex.get("masked_lm_ids", ()),
        )
        for ex in expected
    )
    have = []
    for b, i in rows:
        n = int(b["attention_mask"][i].sum())
        k = int(b["masked_lm_weights"][i].sum())
        assert (b["attention_mask"][i, :n] == 1).all() and (b["input_ids"][i, n:] == 0).all()
        static = masking == "static"
        have.append(
            record(
                (b["input_ids"][i] if static else _unmasked(b)[i])[:n],
                b["token_type_ids"][i, :n],
                b["pair_labels"][i],
                b["masked_lm_positions"][i, :k] if static else (),
                b["masked_lm_ids"][i, :k] if static else (),
            )
        )
    assert sorted(have) == want
