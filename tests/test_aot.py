"""The memory check: the train step compiled before the first one, its memory analysis
against what a device has (bertjax/memory.py; bench train's batch fitting in
bertjax/tools/aot.py)."""

from __future__ import annotations

import pytest
import trainlib

from bertjax import experiment, memory
from bertjax import train as train_lib
from bertjax.tools import aot


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("aot")
    corpus = trainlib.write_corpus(str(root / "corpus.txt"), n_docs=40)
    return trainlib.prepare("bert", str(root / "data"), corpus)


def test_an_oversized_batch_is_refused_before_anything_is_written(data, tmp_path):
    """2^20 rows of 32 tokens need far more than this machine's RAM: one line with the
    figures and what to change; the workdir is never created."""
    c = trainlib.config("bert", data, **{"train.batch_size": 1 << 20})
    workdir = tmp_path / "run"
    with pytest.raises(memory.MemoryCheckError) as e:
        train_lib.train(c, str(workdir))
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("the train step (batch 1048576 x 32) needs "), message
    assert " GiB per device (arguments " in message and ", temporaries " in message
    limit, source = memory.available_memory()
    assert (
        f"(95% of {source}) one device has: lower train.batch_size (1048576), raise "
        "optim.grad_accum_steps (1), set model.remat=full (now none), or shard over "
        "more devices (mesh " in message
    )
    assert not workdir.exists()


def test_the_check_passes_and_logs_a_step_that_fits(data, tmp_path, capsys):
    """Also: the CPU peak for MFU is measured in the compute dtype the run uses."""
    c = trainlib.config(
        "bert", data, **{"train.steps": 2, "train.checkpoint_every": 2, "train.peak_flops": 0.0}
    )
    assert train_lib.train(c, str(tmp_path / "run"))["status"] == "done"
    out = capsys.readouterr().out.splitlines()
    lines = [ln for ln in out if ln.startswith("memory: ")]
    assert len(lines) == 1 and lines[0].startswith(
        "memory: the train step (batch 8 x 32) needs "
    ), lines
    assert any(ln.endswith("FLOP/s/device (measured matmul (float32))") for ln in out), out


def test_fit_batch_takes_the_largest_halving_that_fits(data, monkeypatch):
    """Against a pretended 16 MiB device: the chosen batch's step fits, twice that batch
    does not (both measured by compiling them)."""
    c = trainlib.config("bert", data, **{"train.batch_size": 1024})
    setup = experiment.build_setup(c)
    limit = 16 << 20
    monkeypatch.setattr(memory, "available_memory", lambda devices=None: (limit, "pretend"))
    lines = []
    b, need = aot.fit_batch(setup, 1024, 32, log=lines.append)
    assert 1 <= b < 1024 and need.total <= memory.HEADROOM * limit
    step = train_lib.train_step_fn(setup)

    def need_of(rows):
        batch = memory.abstract_batch(setup.task, setup.cfg, rows, 32, setup.mesh, setup.rules)
        return memory.StepMemory.of(memory.compile_step(setup, step, batch, None)).total

    assert need_of(b) == need.total
    assert need_of(2 * b) > memory.HEADROOM * limit
    assert len(lines) == (1024 // b).bit_length() - 1  # one line per halving
    assert lines[-1].endswith(f"(95% of pretend); trying batch {b}")


def test_available_memory_on_this_machine_is_memavailable():
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    free = int(info["MemAvailable"].split()[0]) * 1024
    limit, source = memory.available_memory()
    assert source == "RAM available" and abs(limit - free) < 0.05 * free
