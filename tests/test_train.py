"""The train loop (bertjax/train.py) end to end on tiny prepared corpora.

In-process: losses fall for BERT, RoBERTa and ALBERT; non-finite batches are skipped
and counted, and too many in a row stop the run. In subprocesses (the real command):
a run killed with SIGKILL at several points, one of them inside a checkpoint save,
resumes to parameters and optimizer state bit-identical to an uninterrupted run; a
SIGTERM saves and exits 0. Multi-device and multi-process runs: tests/test_train_multi.py.
"""

from __future__ import annotations

import os
import signal

import faults
import numpy as np
import pytest
import trainlib

from bertjax import train as train_lib


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return trainlib.write_corpus(str(tmp_path_factory.mktemp("corpus") / "corpus.txt"))


@pytest.fixture(scope="module")
def data(tmp_path_factory, corpus):
    """family -> prepared data directory (made on first use)."""
    made: dict[str, str] = {}

    def get(family: str) -> str:
        if family not in made:
            made[family] = trainlib.prepare(
                family, str(tmp_path_factory.mktemp(f"data_{family}")), corpus
            )
        return made[family]

    return get


def _loss_curve(result: dict, workdir: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(workdir, "logs"))
    acc.Reload()
    return [e.value for e in acc.Scalars("train/mlm_loss")]


@pytest.mark.parametrize("family,lr", [("bert", 2e-3), ("roberta", 2e-3), ("albert", 0.05)])
def test_losses_fall(family, lr, data, tmp_path):
    c = trainlib.config(
        family,
        data(family),
        **{
            "train.steps": 60,
            "train.log_every": 20,
            "train.checkpoint_every": 0,
            "train.eval_every": 60,
            "optim.learning_rate": lr,
        },
    )
    result = train_lib.train(c, str(tmp_path))
    curve = _loss_curve(result, str(tmp_path))
    assert len(curve) == 3
    # Uniform guessing over the vocabulary costs log(V) ~ 5.7-6.0 nats; the model learns
    # the corpus' word order well below that within 60 steps.
    assert curve[-1] < curve[0] - 0.5, curve
    assert curve[-1] < np.log(c.model.vocab_size) - 1.0, curve
    assert result["status"] == "done" and result["step"] == 60 and result["skipped"] == 0
    pair = {"bert": "nsp", "albert": "sop"}.get(family)
    if pair:
        assert f"{pair}_accuracy" in result["metrics"]
    assert 0 < result["metrics"]["tokens_per_s"] and 0 < result["metrics"]["mfu"] < 1


def _poison(monkeypatch, steps_to_poison):
    """Makes the loop's batches at the given (1-based) steps carry NaN loss weights."""
    real = train_lib.global_batch
    calls = {"n": 0}

    def poisoned(batch, mesh, rules):
        calls["n"] += 1
        if calls["n"] in steps_to_poison:
            batch = {**batch, "masked_lm_weights": np.full_like(batch["masked_lm_weights"], np.nan)}
        return real(batch, mesh, rules)

    monkeypatch.setattr(train_lib, "global_batch", poisoned)


def test_nan_batches_are_skipped_and_counted(data, tmp_path, monkeypatch):
    _poison(monkeypatch, {3, 4, 7})
    c = trainlib.config(
        "bert",
        data("bert"),
        **{"train.steps": 8, "train.checkpoint_every": 4, "train.max_consecutive_skips": 3},
    )
    result = train_lib.train(c, str(tmp_path))
    assert result["status"] == "done" and result["skipped"] == 3
    # The committed checkpoints hold finite values only and count the skips.
    from bertjax.checkpoint import TrainCheckpoints

    ckpts = TrainCheckpoints(str(tmp_path / "checkpoints"), async_save=False)
    assert ckpts.all_steps() == [4, 8]
    ckpts.close()


def test_consecutive_non_finite_steps_stop_the_run(data, tmp_path, monkeypatch):
    _poison(monkeypatch, set(range(5, 100)))
    c = trainlib.config(
        "bert",
        data("bert"),
        **{"train.steps": 12, "train.checkpoint_every": 4, "train.max_consecutive_skips": 3},
    )
    with pytest.raises(
        train_lib.TrainingError,
        match=r"3 consecutive steps up to step 7 .*"
        r"the last checkpoint is 4",
    ):
        train_lib.train(c, str(tmp_path))


def test_non_finite_state_is_never_saved(tmp_path):
    import jax.numpy as jnp

    from bertjax.checkpoint import NonFiniteStateError, TrainCheckpoints

    ckpts = TrainCheckpoints(str(tmp_path / "c"), async_save=False)
    with pytest.raises(NonFiniteStateError, match="step 3 holds NaN or Inf"):
        ckpts.save(3, {"w": jnp.array([1.0, jnp.nan])}, {}, {})
    ckpts.save(4, {"w": jnp.array([1.0, 2.0])}, {}, {})
    ckpts.wait()
    assert ckpts.all_steps() == [4]
    ckpts.close()


# --- the real command: kill, resume, terminate ----------------------------------------


def _latest(workdir) -> int | None:
    from bertjax.checkpoint import TrainCheckpoints

    ckpts = TrainCheckpoints(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        return ckpts.latest_step()
    finally:
        ckpts.close()


def _tmp_entries(workdir) -> list[str]:
    return [n for n in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in n]


def test_kill_at_any_point_then_resume_is_bit_exact(data, tmp_path):
    c = trainlib.config("bert", data("bert"), **{"train.steps": 12, "train.checkpoint_every": 4})
    full = str(tmp_path / "full")
    r = trainlib.run(trainlib.train_cmd(c, full))
    assert r.returncode == 0, r.stderr[-3000:]
    want = trainlib.state_hash(full)
    assert want["step"] == "12"

    work = str(tmp_path / "killed")

    def cmd(fault: str = "") -> list[str]:
        return trainlib.train_cmd(c, work, fault=fault)

    # 1. SIGKILL between checkpoints: step 6 is lost, checkpoint 4 survives.
    r = trainlib.run(cmd("kill_after_step:6"))
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert _latest(work) == 4
    # 2. SIGKILL while checkpoint 8 is being written: its temporary directory is left
    #    behind, and it is not a checkpoint.
    r = trainlib.run(cmd("kill_in_save:8"))
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert "train step 5:" in r.stdout  # it resumed from 4, not from scratch
    assert _tmp_entries(work), os.listdir(os.path.join(work, "checkpoints"))
    assert _latest(work) == 4
    # 3. SIGKILL right after a checkpoint: resuming starts from 8, and the leftover of
    #    the interrupted save is cleaned up.
    r = trainlib.run(cmd("kill_after_step:9"))
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert "train step 5:" in r.stdout and _latest(work) == 8
    assert not _tmp_entries(work)
    # 4. To the end.
    r = trainlib.run(cmd())
    assert r.returncode == 0, r.stderr[-3000:]
    assert "step 8/12 from checkpoint" in r.stdout
    assert trainlib.state_hash(work) == want


def test_sigterm_saves_the_step_and_exits_zero(data, tmp_path):
    c = trainlib.config("bert", data("bert"), **{"train.steps": 12, "train.checkpoint_every": 0})
    work = str(tmp_path / "w")
    r = trainlib.run(trainlib.train_cmd(c, work, fault="sigterm_at_step:5"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stopped at step 5 by a termination signal" in r.stdout
    assert _latest(work) == 5


def test_bad_config_is_one_line_error(data, tmp_path):
    for flag, needle in [
        ("--config.train.batch_size=0", "train.batch_size=0"),
        ("--config.data.dir=/nonexistent", "/nonexistent"),
        ("--config.mesh.tensor=3", "product 3"),
        ("--config.model.vocab_size=100", "model.vocab_size=100"),
        ("--config.max_seq_length=100000", "max_seq_length=100000"),
        ("--config.phase2.fraction=0.5", "phase2.data_dir is required"),
    ]:
        c = trainlib.config("bert", data("bert"))
        r = trainlib.run([*trainlib.train_cmd(c, str(tmp_path / "w")), flag])
        assert r.returncode == 1, (flag, r.stderr[-2000:])
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("error:") and needle in last, (flag, last)
        assert not os.path.exists(tmp_path / "w")  # nothing written before the check


def test_a_batch_the_devices_cannot_split_and_a_bad_workdir_are_named(data, tmp_path):
    c = trainlib.config("bert", data("bert"), **{"train.batch_size": 12})
    r = trainlib.run(trainlib.train_cmd(c, str(tmp_path / "w")), devices=8)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and last == (
        "error: train.batch_size=12 does not split over the 8 devices the batch is sharded "
        "on (mesh.data=8 x mesh.fsdp=1); use a multiple of 8"
    ), r.stderr[-2000:]
    assert not os.path.exists(tmp_path / "w")
    (tmp_path / "a_file").write_text("")
    r = trainlib.run(
        trainlib.train_cmd(trainlib.config("bert", data("bert")), str(tmp_path / "a_file" / "run"))
    )
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and last == f"error: {tmp_path}/a_file/run: Not a directory", last


def test_a_model_vocabulary_larger_than_the_tokenizer_is_named(data, tmp_path, capsys):
    c = trainlib.config(
        "bert",
        data("bert"),
        **{"train.steps": 1, "model.vocab_size": 30522, "train.checkpoint_every": 0},
    )
    train_lib.train(c, str(tmp_path))
    out = capsys.readouterr().out
    assert "warning: model.vocab_size=30522, but the tokenizer of" in out
    assert out.index("warning: model.vocab_size") < out.index("train step 1")
    assert "masking" not in out  # the config's masking is the data's


@pytest.mark.parametrize(
    "override, needle",
    [
        (
            {"data.masking": "dynamic"},
            "warning: data.masking=dynamic, but {path} was prepared "
            "with static masking: its stored masks are used",
        ),
        (
            {"masking.strategy": "whole_word"},
            "warning: {path} holds static masks made with "
            "strategy=token, but masking.strategy=whole_word: the stored masks are used",
        ),
    ],
)
def test_a_config_whose_masking_the_data_overrules_is_told(
    data, tmp_path, capsys, override, needle
):
    c = trainlib.config(
        "bert", data("bert"), **{"train.steps": 1, "train.checkpoint_every": 0, **override}
    )
    train_lib.train(c, str(tmp_path))
    out = capsys.readouterr().out
    assert needle.format(path=os.path.join(data("bert"), "manifest.json")) in out, out[:2000]


def test_workdir_of_another_model_is_refused(data, tmp_path):
    c = trainlib.config("bert", data("bert"), **{"train.steps": 2, "train.checkpoint_every": 2})
    train_lib.train(c, str(tmp_path))
    c.model.hidden_size = 48
    with pytest.raises(train_lib.TrainingError, match="hidden_size"):
        train_lib.train(c, str(tmp_path))


def test_a_resume_at_another_batch_size_is_refused(data, tmp_path):
    """The data position counts batches: at another batch size the resumed run would skip
    or re-read examples, so it stops in one line naming both sizes."""
    c = trainlib.config("bert", data("bert"), **{"train.steps": 4, "train.checkpoint_every": 2})
    stopped = train_lib.train(c, str(tmp_path), hooks=[faults.Fault("sigterm_at_step", 2)])
    assert stopped["status"] == "preempted"
    batch = int(c.train.batch_size)
    c.train.batch_size = batch * 2
    with pytest.raises(
        train_lib.TrainingError,
        match=f"checkpoints/2: phase 1 was trained at batch size {batch}, the "
        f"config says {batch * 2}; resuming would skip or re-read",
    ):
        train_lib.train(c, str(tmp_path))
    c.train.batch_size = batch  # the same size resumes
    assert train_lib.train(c, str(tmp_path))["status"] == "done"


def test_a_failed_init_from_leaves_no_workdir(data, tmp_path):
    c = trainlib.config(
        "bert", data("bert"), **{"train.steps": 2, "init_from": str(tmp_path / "nowhere")}
    )
    with pytest.raises(FileNotFoundError, match="nowhere"):
        train_lib.train(c, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")  # no config.json, no empty checkpoints/


def test_command_without_workdir_fails_cleanly():
    r = trainlib.run(trainlib.train_cmd(trainlib.config("bert"), "x")[:5], timeout=120)
    assert r.returncode == 1 and "--workdir is required" in r.stderr


def test_two_phases_resume_across_the_boundary(data, corpus, tmp_path, monkeypatch, capsys):
    long = trainlib.prepare(
        "bert",
        str(tmp_path / "data64"),
        corpus,
        **{"max_seq_length": 64, "max_predictions_per_seq": 8},
    )
    c = trainlib.config(
        "bert",
        data("bert"),
        **{
            "train.steps": 8,
            "train.checkpoint_every": 0,
            "phase2.fraction": 0.5,
            "phase2.data_dir": long,
            "phase2.max_seq_length": 64,
            "phase2.max_predictions_per_seq": 8,
            "phase2.batch_size": 4,
        },
    )
    full = train_lib.train(c, str(tmp_path / "full"))
    assert full["status"] == "done" and full["step"] == 8
    out = capsys.readouterr().out
    assert "phase 1/2: steps 0..4, batch 8 x 32" in out
    assert "phase 2/2: steps 4..8, batch 4 x 64" in out
    want = trainlib.state_hash(str(tmp_path / "full"))
    # Preempted in phase 2, then resumed: the same bits as the uninterrupted run.
    stopped = train_lib.train(
        c, str(tmp_path / "split"), hooks=[faults.Fault("sigterm_at_step", 6)]
    )
    assert stopped["status"] == "preempted" and stopped["step"] == 6
    assert train_lib.train(c, str(tmp_path / "split"))["step"] == 8
    assert trainlib.state_hash(str(tmp_path / "split")) == want


def test_the_same_data_at_another_path_is_the_same_run(data, tmp_path, capsys):
    """The data order depends on the data's content and the seed, not on where the
    directory lies: a moved copy trains and resumes bit-identically; data that differ
    from the checkpoint's stop a resumed run unless told otherwise."""
    import json
    import shutil

    original = data("bert")
    moved = shutil.copytree(original, str(tmp_path / "elsewhere" / "data"))
    shards = json.load(open(os.path.join(original, "manifest.json")))["splits"]["train"]
    assert len(shards["shards"]) >= 3  # an order to get wrong
    overrides = {"train.steps": 8, "train.checkpoint_every": 0, "data.shuffle_buffer": 1}
    train_lib.train(trainlib.config("bert", original, **overrides), str(tmp_path / "a"))
    want = trainlib.state_hash(str(tmp_path / "a"))
    train_lib.train(trainlib.config("bert", moved, **overrides), str(tmp_path / "b"))
    assert trainlib.state_hash(str(tmp_path / "b")) == want
    # Preempted on the original, resumed on the copy.
    stopped = train_lib.train(
        trainlib.config("bert", original, **overrides),
        str(tmp_path / "c"),
        hooks=[faults.Fault("sigterm_at_step", 4)],
    )
    assert stopped["step"] == 4
    capsys.readouterr()
    train_lib.train(trainlib.config("bert", moved, **overrides), str(tmp_path / "c"))
    assert trainlib.state_hash(str(tmp_path / "c")) == want
    assert f"data: {moved} (the checkpoint was trained on {original}" in capsys.readouterr().out
    # Other data (here: a manifest that says something else) under a checkpoint.
    stopped = train_lib.train(
        trainlib.config("bert", original, **overrides),
        str(tmp_path / "d"),
        hooks=[faults.Fault("sigterm_at_step", 4)],
    )
    manifest = json.load(open(os.path.join(moved, "manifest.json")))
    manifest["input_stats"]["bytes"] += 1
    with open(os.path.join(moved, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    with pytest.raises(train_lib.TrainingError, match="manifest.json differs from the data"):
        train_lib.train(trainlib.config("bert", moved, **overrides), str(tmp_path / "d"))
    assert trainlib.state_hash(str(tmp_path / "d"))["step"] == "4"  # nothing written
    told = trainlib.config("bert", moved, **overrides, **{"train.allow_data_change": True})
    assert train_lib.train(told, str(tmp_path / "d"))["step"] == 8
    assert "continuing on the new data" in capsys.readouterr().out


def test_preparing_finished_data_again_keeps_the_run_resumable(data, corpus, tmp_path):
    """`prepare data` run again over finished data (re-running the README's quickstart),
    here with another worker count, rewrites manifest.json's run statistics and nothing
    the data depend on: a run trained on it resumes, bit-identical to one never stopped."""
    import json
    import shutil

    d = shutil.copytree(data("bert"), str(tmp_path / "data"))
    overrides = {"train.steps": 8, "train.checkpoint_every": 0, "data.shuffle_buffer": 1}
    train_lib.train(trainlib.config("bert", d, **overrides), str(tmp_path / "a"))
    want = trainlib.state_hash(str(tmp_path / "a"))
    stopped = train_lib.train(
        trainlib.config("bert", d, **overrides),
        str(tmp_path / "b"),
        hooks=[faults.Fault("sigterm_at_step", 4)],
    )
    assert stopped["step"] == 4
    with open(os.path.join(d, "manifest.json")) as f:
        before = json.load(f)
    trainlib.prepare("bert", d, corpus, **{"data.num_workers": 2})
    with open(os.path.join(d, "manifest.json")) as f:
        after = json.load(f)
    assert after["input_stats"]["shards_reused"] > before["input_stats"]["shards_reused"]
    assert after["splits"] == before["splits"]  # the same shards, as the digests say
    assert (
        train_lib.train(trainlib.config("bert", d, **overrides), str(tmp_path / "b"))["step"] == 8
    )
    assert trainlib.state_hash(str(tmp_path / "b")) == want


@pytest.mark.parametrize("form", ["BertForMaskedLM", "BertModel"])
def test_init_from_a_transformers_checkpoint_fits_the_heads_and_trains(
    form, data, tmp_path, capsys
):
    """A BertForMaskedLM (no pooler, no NSP head) or a bare encoder starts an MLM + NSP
    run: what it has is loaded bit for bit, what it lacks is created, and the table says
    which."""
    import re

    import jax

    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    from bertjax.convert.hfdir import read_hf_dir

    hf_config = transformers.BertConfig(
        vocab_size=trainlib.VOCAB["bert"],
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    src = str(tmp_path / "hf")
    getattr(transformers, form)(hf_config).save_pretrained(src)
    c = trainlib.config(
        "bert", data("bert"), **{"train.steps": 6, "train.checkpoint_every": 0, "init_from": src}
    )
    trainer = train_lib.Trainer(c, str(tmp_path / "run"))
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^\s+(\w+)\s+(loaded|created|dropped)\s", out, re.M))
    fresh_heads = {"BertForMaskedLM": ("pooler", "nsp"), "BertModel": ("mlm", "nsp")}[form]
    assert rows == {
        "embeddings": "loaded",
        "encoder": "loaded",
        **{h: "created" if h in fresh_heads else "loaded" for h in ("pooler", "mlm", "nsp")},
    }, out
    _, want, _ = read_hf_dir(src)
    for module, status in rows.items():
        if status == "loaded":
            jax.tree.map(
                np.testing.assert_array_equal,
                jax.tree.map(np.asarray, trainer.state["params"][module]),
                want[module],
            )
    result = trainer.run()
    assert result["status"] == "done" and result["step"] == 6 and result["skipped"] == 0
    assert np.isfinite(result["metrics"]["loss"]) and "nsp_accuracy" in result["metrics"]
