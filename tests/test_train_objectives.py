"""Distillation and ELECTRA through the train loop (bertjax/train.py) on tiny corpora.

A 4-layer BERT teacher is trained first (MLM on MLM instances) and written as a model
directory; DistilBERT students distil from it. In-process: the student starts from
exactly the teacher's layers, the teacher never enters a checkpoint, a distilled
student beats one trained alone, ELECTRA's discriminator beats the all-"original"
baseline, and the exported models load in transformers with matching logits. In
subprocesses: a run killed with SIGKILL resumes bit-identical for both tasks.
"""

from __future__ import annotations

import os
import signal

import jax
import numpy as np
import pytest
import trainlib

from bertjax import checkpoint, modeldir
from bertjax import train as train_lib


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return trainlib.write_corpus(str(tmp_path_factory.mktemp("corpus") / "corpus.txt"))


@pytest.fixture(scope="module")
def mlm_data(tmp_path_factory, corpus) -> str:
    """MLM instances with dynamic masking (DistilBERT's data), 400-token WordPiece."""
    return trainlib.prepare("distilbert", str(tmp_path_factory.mktemp("mlm")), corpus)


@pytest.fixture(scope="module")
def electra_data(tmp_path_factory, corpus) -> str:
    return trainlib.prepare("electra", str(tmp_path_factory.mktemp("electra")), corpus)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, mlm_data) -> str:
    """A 4-layer BERT trained 300 steps on mlm_data: its WORKDIR/model directory."""
    work = str(tmp_path_factory.mktemp("teacher"))
    c = trainlib.config(
        "bert",
        mlm_data,
        **{
            "task": "mlm",
            "model.num_layers": 4,
            "model.vocab_size": 400,
            "train.steps": 300,
            "train.log_every": 100,
            "train.checkpoint_every": 0,
            "train.export_model": True,
            "optim.learning_rate": 3e-3,
        },
    )
    result = train_lib.train(c, work)
    assert result["metrics"]["mlm_loss"] < 3.0, result["metrics"]
    return os.path.join(work, "model")


def _eval(workdir: str) -> dict[str, float]:
    """The last evaluation's scalars from the run's TensorBoard files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(workdir, "logs"))
    acc.Reload()
    return {
        tag[len("eval/") :]: acc.Scalars(tag)[-1].value
        for tag in acc.Tags()["scalars"]
        if tag.startswith("eval/")
    }


def test_student_starts_from_teacher_layers_and_the_teacher_is_never_saved(
    mlm_data, teacher, tmp_path, capsys
):
    c = trainlib.distill_config(
        mlm_data, teacher, **{"train.steps": 4, "train.checkpoint_every": 4}
    )
    trainer = train_lib.Trainer(c, str(tmp_path))
    _, teacher_params = modeldir.load(teacher)
    student = jax.tree.map(np.asarray, jax.device_get(trainer.state["params"]))
    for j, i in enumerate([0, 3]):  # evenly spaced: the first and last of 4
        jax.tree.map(
            np.testing.assert_array_equal,
            student["encoder"][f"layer_{j}"],
            teacher_params["encoder"][f"layer_{i}"],
        )
    jax.tree.map(np.testing.assert_array_equal, student["mlm"], teacher_params["mlm"])
    out = capsys.readouterr().out
    assert "from teacher layers [0, 3]" in out and "same vocabulary as the data" in out
    result = trainer.run()
    assert result["status"] == "done" and {"mlm_kl", "cos_loss"} <= set(result["metrics"])
    _, state = trainlib.restore_host(str(tmp_path))
    # The checkpoint holds the student alone: its tree and its parameter count.
    assert jax.tree.structure(state["params"]) == jax.tree.structure(student)
    saved = sum(x.size for x in jax.tree.leaves(state["params"]))
    assert saved == sum(x.size for x in jax.tree.leaves(student))
    assert not any(
        "teacher" in jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state)
    )
    meta = checkpoint.TrainCheckpoints(str(tmp_path / "checkpoints"), async_save=False)
    try:
        assert meta.read_meta(4)["teacher"]["path"] == os.path.abspath(teacher)
    finally:
        meta.close()


def test_distilled_student_beats_the_same_student_alone(mlm_data, teacher, tmp_path):
    # From scratch on both sides: the teacher helps only through the loss.
    common = {
        "train.steps": 100,
        "train.log_every": 50,
        "train.checkpoint_every": 0,
        "train.eval_every": 100,
        "train.eval_steps": 0,
        "distill.init": "scratch",
        "optim.learning_rate": 3e-3,
    }
    distilled = train_lib.train(
        trainlib.distill_config(mlm_data, teacher, **common), str(tmp_path / "distilled")
    )
    alone = train_lib.train(
        trainlib.config(
            "distilbert",
            mlm_data,
            **{k: v for k, v in common.items() if not k.startswith("distill.")},
        ),
        str(tmp_path / "alone"),
    )
    assert distilled["step"] == alone["step"] == 100
    d, a = _eval(str(tmp_path / "distilled")), _eval(str(tmp_path / "alone"))
    print(
        f"eval MLM loss after 100 steps: distilled {d['mlm_loss']:.4f}, alone "
        f"{a['mlm_loss']:.4f}; teacher accuracy {d['mlm_teacher_accuracy']:.3f}"
    )
    assert d["mlm_loss"] < a["mlm_loss"] - 0.05, (d, a)


def test_electra_discriminator_beats_the_all_original_baseline(electra_data, tmp_path):
    c = trainlib.config(
        "electra",
        electra_data,
        **{
            "train.steps": 80,
            "train.log_every": 40,
            "train.checkpoint_every": 0,
            "train.eval_every": 80,
            "train.eval_steps": 0,
            "optim.learning_rate": 3e-3,
        },
    )
    result = train_lib.train(c, str(tmp_path / "run"))
    m = _eval(str(tmp_path / "run"))
    print(
        f"ELECTRA eval after 80 steps: rtd_accuracy {m['rtd_accuracy']:.4f}, baseline "
        f"{m['rtd_baseline_accuracy']:.4f}, generator mlm_loss {m['mlm_loss']:.3f}"
    )
    assert m["rtd_accuracy"] > m["rtd_baseline_accuracy"] + 0.01, m
    assert 0 < m["rtd_replaced"] < 0.2 and result["skipped"] == 0


def _torch_inputs(batch):
    import torch

    return {
        k: torch.from_numpy(np.asarray(batch[k]).astype(np.int64))
        for k in ("input_ids", "attention_mask")
    }


@pytest.mark.parametrize("objective", ["distillation", "electra"])
def test_exported_models_match_transformers(objective, electra_data, mlm_data, teacher, tmp_path):
    import torch
    import transformers

    from bertjax.convert.hfdir import export_hf
    from bertjax.models import build

    if objective == "electra":
        c = trainlib.config(
            "electra", electra_data, **{"train.steps": 6, "train.export_model": True}
        )
    else:
        c = trainlib.distill_config(
            mlm_data, teacher, **{"train.steps": 6, "train.export_model": True}
        )
    work = str(tmp_path / "run")
    train_lib.train(c, work)
    export_hf(os.path.join(work, "model"), str(tmp_path / "hf"))
    cfg, params = modeldir.load(os.path.join(work, "model"))
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(5, cfg.vocab_size, (2, 12)).astype(np.int32),
        "attention_mask": np.ones((2, 12), np.int32),
    }
    batch["attention_mask"][1, 9:] = 0
    model = build(cfg)
    with torch.no_grad():
        if objective == "electra":
            logits, _ = model.apply(
                {"params": params}, batch["input_ids"], None, batch["attention_mask"]
            )
            disc, gen = logits["discriminator"], logits["generator"]
            hf_disc = transformers.ElectraForPreTraining.from_pretrained(
                str(tmp_path / "hf" / "discriminator")
            ).eval()
            hf_gen = transformers.ElectraForMaskedLM.from_pretrained(
                str(tmp_path / "hf" / "generator")
            ).eval()
            pairs = [
                (disc, hf_disc(**_torch_inputs(batch)).logits),
                (gen, hf_gen(**_torch_inputs(batch)).logits),
            ]
        else:
            logits, _ = model.apply(
                {"params": params}, batch["input_ids"], None, batch["attention_mask"]
            )
            hf = transformers.DistilBertForMaskedLM.from_pretrained(str(tmp_path / "hf")).eval()
            pairs = [(logits["mlm"], hf(**_torch_inputs(batch)).logits)]
    real = batch["attention_mask"].astype(bool)
    for ours, theirs in pairs:
        ours, theirs = np.asarray(ours), theirs.numpy()
        assert np.all(np.isfinite(ours)) and np.all(np.isfinite(theirs))
        np.testing.assert_allclose(ours[real], theirs[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("objective", ["distillation", "electra"])
def test_kill_then_resume_is_bit_exact(objective, electra_data, mlm_data, teacher, tmp_path):
    if objective == "electra":
        c = trainlib.config(
            "electra", electra_data, **{"train.steps": 8, "train.checkpoint_every": 4}
        )
    else:
        c = trainlib.distill_config(
            mlm_data, teacher, **{"train.steps": 8, "train.checkpoint_every": 4}
        )
    full = str(tmp_path / "full")
    r = trainlib.run(trainlib.train_cmd(c, full))
    assert r.returncode == 0, r.stderr[-3000:]
    want = trainlib.state_hash(full)
    work = str(tmp_path / "killed")
    r = trainlib.run(trainlib.train_cmd(c, work, fault="kill_after_step:6"))
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    r = trainlib.run(trainlib.train_cmd(c, work))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "step 4/8 from checkpoint" in r.stdout
    assert trainlib.state_hash(work) == want
