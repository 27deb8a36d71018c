"""Training on several devices and several processes.

- 8 simulated CPU devices (this file run as a script in a subprocess, XLA_FLAGS set
  before JAX starts): one train step with data, fsdp and tensor sharding gives the same
  loss and parameters as on one device, for MLM+NSP on three meshes and for ELECTRA and
  distillation (a sharded teacher passed to the step) on 2x2x2; a checkpoint written
  on a 2x2x2 mesh resumes on an 8x1x1 mesh (and, in this test process, on one device)
  and ends where the uninterrupted run ends.
- Two processes on 127.0.0.1 (4 CPU devices each, gloo collectives): the real train
  command, SIGTERM to both mid-run, both save the same step and exit 0, and the resumed
  run ends bit-identical to an uninterrupted two-process run; the same with the data
  and the workdir in a bucket (the local Cloud Storage emulator) and SIGKILL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import clilib
import numpy as np
import pytest
import trainlib

# Sharded and one-device results differ by the order of float32 reductions (a psum over
# devices instead of one sum, per-shard partial sums), which moves a value by a few ulps
# of the magnitudes summed, and more when other processes compete for the cores and XLA's
# thread pool splits work differently. So every comparison is relative to the magnitude
# of what is compared: |a - b| / max(1, |b|) per tensor (max over its elements). 1e-5 is
# ~80 float32 ulps: it held ELECTRA's loss (~35, 50 x the RTD loss) that once moved by
# 1.5e-5 (4e-7 relative) under load, and stays orders of magnitude below what a wrong
# sharding gives (1e-2 and up).
TOL = 1e-5
MESHES = ("2,2,2", "1,4,2", "8,1,1")


def relative_diff(a, b) -> float:
    """max |a - b| / max(1, max |b|) over one tensor (or a scalar)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b))) / max(1.0, float(np.max(np.abs(b))))


def _restored_params(workdir: str) -> dict[str, np.ndarray]:
    """The newest checkpoint's params as host arrays, keyed by path."""
    import jax

    _, state = trainlib.restore_host(workdir)
    return {
        jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(state["params"])
    }


def _max_diff(a: dict, b: dict) -> float:
    """The largest `relative_diff` of two trees' tensors, b the reference."""
    assert a.keys() == b.keys()
    return max(relative_diff(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("multi")
    corpus = trainlib.write_corpus(str(root / "corpus.txt"))
    return trainlib.prepare("bert", str(root / "data"), corpus)


@pytest.fixture(scope="module")
def eight(data, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("eight")
    r = clilib.python(os.path.abspath(__file__), "eight", data, str(out), devices=8, timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    with open(out / "result.json") as f:
        return {**json.load(f), "dir": str(out)}


@pytest.mark.parametrize("mesh", MESHES)
def test_sharded_step_matches_one_device(eight, mesh):
    got = eight["step"][mesh]
    assert got["devices"] == 8
    assert got["loss_diff"] < TOL and got["param_diff"] < TOL
    assert got["opt_diff"] < TOL
    assert got["params_changed"]  # the step did update them


@pytest.mark.parametrize("objective", ["electra", "distillation"])
def test_sharded_electra_and_distillation_steps_match_one_device(eight, objective):
    got = eight["objectives"][objective]
    assert got["loss_diff"] < TOL and got["param_diff"] < TOL and got["opt_diff"] < TOL
    assert got["params_changed"]


def test_resume_on_another_mesh_and_device_count(eight, data, tmp_path):
    # On 8 devices: 4 steps on 2x2x2, 4 more on 8x1x1 == 8 steps on 2x2x2.
    assert eight["remesh"]["param_diff"] < TOL
    assert not eight["remesh"]["moved_aside"]
    # Here, on one device: resume the 2x2x2 checkpoint of step 4 and go on to 8.
    from bertjax import train

    work = str(tmp_path / "one_device")
    shutil.copytree(os.path.join(eight["dir"], "first4"), work)
    c = trainlib.config("bert", data, **_REMESH)
    result = train.train(c, work)
    assert result["step"] == 8
    assert not os.path.exists(os.path.join(work, "damaged_checkpoints"))
    assert (
        _max_diff(_restored_params(work), _restored_params(os.path.join(eight["dir"], "full8")))
        < TOL
    )


# --- two processes ---------------------------------------------------------------------


def _two_process_cmds(c, workdir: str, port: int) -> list[list[str]]:
    return [
        trainlib.train_cmd(
            c,
            workdir,
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={i}",
            "--cpu_collectives=gloo",
        )
        for i in range(2)
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(c, workdir: str, logs: str) -> list[subprocess.Popen]:
    os.makedirs(logs, exist_ok=True)
    procs = []
    for i, cmd in enumerate(_two_process_cmds(c, workdir, _free_port())):
        # Files, not pipes: Gloo's logging interleaves, and a full pipe would block a child.
        out = open(os.path.join(logs, f"{i}.log"), "w")
        procs.append(clilib.start(cmd, devices=4, stdout=out, stderr=subprocess.STDOUT))
    return procs


def _wait(procs: list[subprocess.Popen], logs: str, timeout: float = 300) -> list[str]:
    try:
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    texts = [open(os.path.join(logs, f"{i}.log")).read() for i in range(len(procs))]
    for p, text in zip(procs, texts, strict=True):
        assert p.returncode == 0, text[-3000:]
    return texts


def _wait_for_line(
    procs: list[subprocess.Popen], logs: str, text: str, timeout: float = 240
) -> None:
    """Until process 0's log holds `text`; fails if a process ends or time runs out."""
    deadline = time.time() + timeout
    while text not in open(os.path.join(logs, "0.log")).read():
        assert time.time() < deadline and all(p.poll() is None for p in procs), open(
            os.path.join(logs, "0.log")
        ).read()[-3000:]
        time.sleep(0.05)


def _wait_for_commit(
    procs: list[subprocess.Popen], logs: str, directory: str, timeout: float = 240
) -> None:
    """Until a checkpoint before the last step is committed in `directory`, the
    processes still running."""
    from bertjax.checkpoint import TrainCheckpoints

    deadline = time.time() + timeout
    while not TrainCheckpoints(directory, read_only=True).all_steps():
        assert time.time() < deadline and all(p.poll() is None for p in procs), open(
            os.path.join(logs, "0.log")
        ).read()[-3000:]
        time.sleep(0.2)
    assert all(p.poll() is None for p in procs), "the run ended before it was killed"


def test_two_processes_sigterm_save_same_step_and_resume(data, tmp_path):
    c = trainlib.config(
        "bert", data, **{"train.steps": 16, "train.checkpoint_every": 0, "mesh.fsdp": 2}
    )
    full = str(tmp_path / "full")
    _wait(_start(c, full, str(tmp_path / "logs_full")), str(tmp_path / "logs_full"))
    want = trainlib.state_hash(full)
    assert want["step"] == "16"

    work, logs = str(tmp_path / "work"), str(tmp_path / "logs_term")
    procs = _start(c, work, logs)
    _wait_for_line(procs, logs, "train step 3:")
    procs[1].send_signal(signal.SIGTERM)  # the hosts hear it at different moments
    time.sleep(0.3)
    procs[0].send_signal(signal.SIGTERM)
    texts = _wait(procs, logs)
    stopped = [line for line in texts[0].splitlines() if "stopped at step" in line]
    assert stopped, texts[0][-3000:]
    step = int(stopped[0].split("stopped at step ")[1].split()[0])
    assert 3 <= step < 16
    assert trainlib.state_hash(work)["step"] == str(step)  # one checkpoint, the same step

    logs = str(tmp_path / "logs_resume")
    texts = _wait(_start(c, work, logs), logs)
    assert f"step {step}/16 from checkpoint" in texts[0]
    assert trainlib.state_hash(work) == want


def test_two_processes_with_data_and_workdir_in_a_bucket_killed_then_resumed(bucket, tmp_path):
    """A pod job as Cloud TPU runs it, on the local Cloud Storage emulator: `prepare data`
    into the bucket, two processes train with the workdir there, both are SIGKILLed
    mid-run, and two fresh processes (nothing kept on local disk: the data cache is a
    new temporary directory) resume from the bucket alone and end bit-identical to an
    uninterrupted run."""
    corpus = trainlib.write_corpus(str(tmp_path / "corpus.txt"))
    data = trainlib.prepare("bert", f"{bucket}/data", corpus)
    c = trainlib.config(
        "bert", data, **{"train.steps": 12, "train.checkpoint_every": 4, "mesh.fsdp": 2}
    )
    full, logs = f"{bucket}/full", str(tmp_path / "logs_full")
    _wait(_start(c, full, logs), logs)
    want = trainlib.state_hash(full)
    assert want["step"] == "12"

    work, logs = f"{bucket}/work", str(tmp_path / "logs_kill")
    procs = _start(c, work, logs)
    _wait_for_line(procs, logs, "train step 6:")
    # Checkpoints are written in the background: on a loaded machine step 4's may not be
    # committed at step 6 yet. Kill once one is (a resume from nothing would pass too).
    _wait_for_commit(procs, logs, f"{work}/checkpoints")
    for p in procs:
        p.kill()
    for p in procs:
        p.wait(timeout=60)
    logs = str(tmp_path / "logs_resume")
    texts = _wait(_start(c, work, logs), logs)
    assert f"from checkpoint {work}/checkpoints/" in texts[0], texts[0][-3000:]
    assert trainlib.state_hash(work) == want


# --- the 8-device side (run as a script) -------------------------------------------------

_REMESH = {"train.steps": 8, "train.checkpoint_every": 4, "optim.total_steps": 8}


def _eight(data: str, out: str) -> dict:
    import functools

    import flax.linen as nn
    import jax

    from bertjax import experiment, sharding, steps, train
    from bertjax.data.manifest import Manifest
    from bertjax.data.pipeline import Pipeline, PipelineConfig

    assert jax.device_count() == 8
    result: dict = {"step": {}}
    c = trainlib.config("bert", data, **{"model.dropout_rate": 0.1})
    s = experiment.build_setup(c)
    optim, tx, init = s.optim, s.tx, s.init
    step_fn = functools.partial(
        steps.train_step, loss_fn=s.task.loss_fn(s.model), tx=tx, optim=optim, seed=0
    )
    batch = next(
        iter(
            Pipeline(
                Manifest.read(data), PipelineConfig("train", 16, 0, masking=None, shuffle_buffer=8)
            )
        )
    )

    # Reference: one device, no mesh; two steps so the optimizer state is non-trivial.
    with jax.default_device(jax.devices()[0]):
        ref = jax.jit(lambda: nn.unbox(init()))()
        ref1, _ = jax.jit(step_fn)(ref, batch)
        ref2, ref_metrics = jax.jit(step_fn)(ref1, batch)
    ref2 = jax.device_get(ref2)

    def leaves_diff(a, b) -> float:
        """The largest `relative_diff` over the leaves of two trees, b the reference."""
        return max(
            relative_diff(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        )

    for mesh_str in MESHES:
        shape = dict(zip(sharding.MESH_AXES, map(int, mesh_str.split(",")), strict=True))
        mesh = sharding.make_mesh(shape)
        state, shardings = sharding.create_sharded(init, None, mesh)
        batch_sh = {k: sharding.batch_sharding(mesh, np.ndim(v)) for k, v in batch.items()}
        with sharding.activation_rules_context(mesh):
            jitted = jax.jit(
                step_fn,
                in_shardings=(shardings, batch_sh),
                out_shardings=(shardings, sharding.replicated(mesh)),
                donate_argnums=(0,),
            )
            state, _ = jitted(state, jax.device_put(batch, batch_sh))
            state, metrics = jitted(state, jax.device_put(batch, batch_sh))
        host = jax.device_get(state)
        result["step"][mesh_str] = {
            "devices": len(jax.tree.leaves(state["params"])[0].sharding.device_set),
            "loss_diff": relative_diff(metrics["loss"].value, ref_metrics["loss"].value),
            "param_diff": leaves_diff(host["params"], ref2["params"]),
            "opt_diff": leaves_diff(host["opt_state"], ref2["opt_state"]),
            "params_changed": leaves_diff(host["params"], jax.device_get(ref["params"])) > 0,
        }

    result["objectives"] = _other_objectives(batch, leaves_diff)

    # Re-meshing: 4 steps on 2x2x2 (checkpoint 4), resumed on 8x1x1 to step 8, against
    # 8 uninterrupted steps on 2x2x2.
    meshed = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}
    full8 = os.path.join(out, "full8")
    train.train(trainlib.config("bert", data, **{**_REMESH, **meshed}), full8)
    first4 = os.path.join(out, "first4")
    train.train(trainlib.config("bert", data, **{**_REMESH, **meshed, "train.steps": 4}), first4)
    resumed = os.path.join(out, "resumed")
    shutil.copytree(first4, resumed)
    train.train(trainlib.config("bert", data, **{**_REMESH, "mesh.data": -1}), resumed)
    result["remesh"] = {
        "param_diff": _max_diff(_restored_params(resumed), _restored_params(full8)),
        # The state digest of a 2x2x2 save verifies on 8x1x1: not moved.
        "moved_aside": os.path.exists(os.path.join(resumed, "damaged_checkpoints")),
    }
    return result


def _other_objectives(batch: dict, leaves_diff) -> dict:
    """ELECTRA and distillation: two steps on one device against two on a 2x2x2 mesh."""
    return {
        objective: _objective_on_mesh(objective, batch, leaves_diff)
        for objective in ("electra", "distillation")
    }


def _objective_on_mesh(objective: str, batch: dict, leaves_diff) -> dict:
    import functools

    import flax.linen as nn
    import jax

    from bertjax import experiment, sharding, steps
    from bertjax.models import build, init_params

    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    if objective == "electra":
        c = trainlib.config("electra", "", **{"model.dropout_rate": 0.1})
    else:
        c = trainlib.distill_config("", "", teacher_layers=2)
    s = experiment.build_setup(c)
    optim, tx, init = s.optim, s.tx, s.init
    teacher = build(s.task.teacher) if s.task.teacher is not None else None

    def teacher_init():
        return init_params(teacher, 1)

    step_fn = functools.partial(
        steps.train_step, loss_fn=s.task.loss_fn(s.model), tx=tx, optim=optim, seed=0
    )
    with jax.default_device(jax.devices()[0]):
        ref0 = jax.jit(lambda: nn.unbox(init()))()
        teacher_params = jax.jit(lambda: nn.unbox(teacher_init()))() if teacher else None
        ref1, _ = jax.jit(step_fn)(ref0, batch, teacher_params)
        ref2, ref_metrics = jax.jit(step_fn)(ref1, batch, teacher_params)
    ref2 = jax.device_get(ref2)
    state, shardings = sharding.create_sharded(init, None, mesh)
    teacher_params = sharding.create_sharded(teacher_init, None, mesh)[0] if teacher else None
    batch_sh = {k: sharding.batch_sharding(mesh, np.ndim(v)) for k, v in batch.items()}
    with sharding.activation_rules_context(mesh):
        jitted = jax.jit(
            step_fn, donate_argnums=(0,), out_shardings=(shardings, sharding.replicated(mesh))
        )
        placed = jax.device_put(batch, batch_sh)
        state, _ = jitted(state, placed, teacher_params)
        state, metrics = jitted(state, placed, teacher_params)
    host = jax.device_get(state)
    return {
        "loss_diff": relative_diff(metrics["loss"].value, ref_metrics["loss"].value),
        "param_diff": leaves_diff(host["params"], ref2["params"]),
        "opt_diff": leaves_diff(host["opt_state"], ref2["opt_state"]),
        "params_changed": leaves_diff(host["params"], jax.device_get(ref0["params"])) > 0,
    }


if __name__ == "__main__":
    mode, data_dir, out_dir = sys.argv[1:]
    assert mode == "eight"
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(_eight(data_dir, out_dir), f)
