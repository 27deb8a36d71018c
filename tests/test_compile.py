"""`python -m bertjax compile`: the real sharded train step compiled for Cloud TPU
topologies with libtpu, on this CPU-only machine (bertjax/tools/tpu_compile.py)."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time

import pytest
import trainlib
from clilib import BERTJAX, bertjax, start

from bertjax.tools import tpu_compile, tpu_topology

try:
    LIBTPU = tpu_compile.find_libtpu()
except FileNotFoundError:  # README's test command installs it; say so if it is missing
    LIBTPU = None
needs_libtpu = pytest.mark.skipif(LIBTPU is None, reason=f"libtpu missing: {tpu_compile.INSTALL}")

TINY = [
    "--config=configs/pretrain.py:bert_tiny",
    "--config.max_seq_length=128",
    "--config.train.batch_size=64",
]


def topology_name(text: str) -> str:
    return tpu_topology.parse_topology(text).name


def _compile(*args: str, timeout: float = 600):
    return bertjax("compile", *args, devices=1, timeout=timeout)


@needs_libtpu
@pytest.mark.parametrize(
    "topology, chips, hosts, hbm",
    [
        ("v5e:2x2", 4, 1, 16),
        ("v4-16", 8, 2, 32),  # v4:2x2x2, two hosts of four chips
    ],
)
def test_a_tiny_preset_compiles_for_two_topologies(topology, chips, hosts, hbm):
    """The Pallas flash kernel (attention dropout off, 128 tokens) is lowered too."""
    r = _compile(*TINY, "--config.model.attention_dropout_rate=0", f"--topology={topology}")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[1] == (
        f"compiling the train step (batch 64 x 128) for {topology_name(topology)} "
        "with XLA's TPU compiler: minutes on a CPU, a line every 30 s; Ctrl-C "
        "stops it"
    )
    lines = [ln for ln in lines if not ln.startswith("compiling ")]  # and its progress lines
    assert re.match(
        rf"compile: bert L2 H128, task mlm_nsp, compute bfloat16, on \S+ x 1 "
        rf"slice\(s\): {chips} chips, {hosts} host\(s\), mesh "
        rf"\{{'data': {chips}, 'fsdp': 1, 'tensor': 1\}}$",
        lines[0],
    ), lines[0]
    assert lines[1].startswith("the train step (batch 64 x 128): HBM ")
    assert lines[1].endswith(f"of {hbm} GiB per chip: fits")
    flops = re.search(
        r"FLOPs per step: (\S+) by bertjax's formula .*XLA's cost analysis "
        r"(\S+) ",
        lines[2],
    )
    formula, xla = float(flops.group(1)), float(flops.group(2))
    assert 0.7 < xla / formula < 1.5, lines[2]  # two independent counts of the same step
    assert "tokens/s; at 50% MFU: step " in lines[3]


@needs_libtpu
def test_the_tpu_kernel_is_what_auto_lowers_there():
    """auto attention on a TPU target without attention dropout: the Pallas kernel (a
    tpu_custom_call in the compiled program), under the mesh's shard_map."""
    import jax

    from bertjax import experiment, memory
    from bertjax.models import attention
    from bertjax.train import train_step_fn

    jax.config.update("jax_platforms", "cpu")
    top = tpu_topology.parse_topology("v5e:2x2")
    c = trainlib.config(
        "bert",
        "",
        **{
            "max_seq_length": 128,
            "train.batch_size": 8,
            "model.max_position_embeddings": 128,
            "model.attention_dropout_rate": 0.0,
        },
    )
    # tpu_compile.devices points this process at libtpu through its environment (as the
    # compile command wants); put it back, or the subprocesses that later tests in this
    # worker start would try to bring up a TPU and print libtpu's complaints.
    names = ("TPU_LIBRARY_PATH", "TPU_SKIP_MDS_QUERY", "ALLOW_MULTIPLE_LIBTPU_LOAD")
    saved = {name: os.environ.get(name) for name in names}
    token = attention.TARGET_PLATFORM.set("tpu")
    try:
        setup = experiment.build_setup(c, tpu_compile.devices(top))
        batch = memory.abstract_batch(setup.task, setup.cfg, 8, 128, setup.mesh, setup.rules)
        compiled = memory.compile_step(setup, train_step_fn(setup), batch, None)
    finally:
        attention.TARGET_PLATFORM.reset(token)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    assert "tpu_custom_call" in compiled.as_text()


@needs_libtpu
@pytest.mark.parametrize("scan", [False, True], ids=["loop", "scan"])
def test_an_oversized_config_is_refused_with_the_figures(scan):
    r = _compile(
        "--config=configs/pretrain.py:bert_tiny",
        "--config.train.batch_size=16384",
        "--config.max_seq_length=512",
        "--config.max_predictions_per_seq=80",
        f"--config.model.scan_layers={scan}",
        "--topology=v5e:2x2",
    )
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    loop = r", set model.scan_layers=False \(the loop takes less HBM\)" if scan else ""
    assert re.fullmatch(
        r"error: the train step \(batch 16384 x 512\) does not fit in v5e's 16 GiB HBM per "
        r"chip \(XLA: .*exceeds available HBM \([\d.]+G\)\); lower train.batch_size "
        rf"\(16384\), raise optim.grad_accum_steps, set model.remat=full{loop}, or use more "
        r"chips",
        last,
    ), last


@pytest.mark.parametrize(
    "text, name, chips",
    [
        ("v5e:4x4", "v5e:4x4", 16),
        ("v5litepod-16", "v5e:4x4", 16),
        ("v4-32", "v4:2x2x4", 16),
        ("v5p-16", "v5p:2x2x2", 8),
        ("v6e-8", "v6e:2x4", 8),
        ("v4:2x2x2", "v4:2x2x2", 8),
    ],
)
def test_topology_names_as_cloud_tpu_spells_them(text, name, chips):
    t = tpu_topology.parse_topology(text)
    assert (t.name, t.chips) == (name, chips)


@pytest.mark.parametrize(
    "text, message",
    [
        ("v5e:4x4x4", "a v5e topology has 2 dimensions"),
        ("v4-24", "not a v4 size this knows"),
        ("tpu7:2x2", "expected CHIP:SHAPE"),
    ],
)
def test_bad_topologies_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        tpu_topology.parse_topology(text)


def test_missing_libtpu_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.delenv("TPU_LIBRARY_PATH", raising=False)
    monkeypatch.setattr(tpu_compile, "DEFAULT_LIBTPU", str(tmp_path / "none" / "libtpu.so"))
    monkeypatch.setitem(__import__("sys").modules, "libtpu", None)
    with pytest.raises(
        FileNotFoundError,
        match=r"compile needs libtpu, which is not "
        r"installed: pip install --target",
    ):
        tpu_compile.find_libtpu()


@needs_libtpu
@pytest.mark.parametrize(
    "sig, status, words",
    [
        (signal.SIGINT, 130, "interrupted"),
        (signal.SIGTERM, 143, "stopped by SIGTERM"),  # was libtpu's C++ stack dump
    ],
)
def test_a_compile_in_progress_stops_at_once_on_ctrl_c_or_sigterm(sig, status, words):
    """XLA's TPU compiler runs for minutes in one native call that ignored Ctrl-C; a
    progress line says it is at work, and a signal ends it within seconds, one line."""
    p = start([*BERTJAX, "compile", *TINY, "--topology=v5e:2x2", "--progress_every=1"], devices=1)
    killer = threading.Timer(600, p.kill)  # a hung test fails instead of hanging
    killer.start()
    try:
        progress = None
        for line in p.stdout:
            if re.fullmatch(
                r"compiling the train step \(batch 64 x 128\) for v5e:2x2: "
                r"\d+ s \.\.\.",
                line.strip(),
            ):
                progress = line
                break
        assert progress is not None, p.stderr.read()[-3000:]
        sent = time.monotonic()
        p.send_signal(sig)
        status_seen = p.wait(timeout=30)
        waited = time.monotonic() - sent
        err = p.stderr.read()
    finally:
        killer.cancel()
        p.kill()
        p.stdout.close()
        p.stderr.close()
    assert status_seen == status, err[-3000:]
    assert waited < 30  # a compile of this size takes minutes on a CPU
    lines = err.splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"error: {words} after \d+ s \(compiling the train step \(batch 64 x 128\) for "
        r"v5e:2x2\)",
        lines[0],
    ), err[-3000:]


_BLOCKED = """
import sys, time
from bertjax.tools import tpu_compile
with tpu_compile.interruptible(lambda: "sleeping"):
    print("ready", flush=True)
    time.sleep(120)  # resumes after every signal whose handler returns: never ends early
print("the block ended", flush=True)
"""


@pytest.mark.parametrize(
    "sig, status, words",
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped by SIGTERM")],
)
def test_interruptible_ends_the_process_while_the_main_thread_is_held(sig, status, words):
    """Without libtpu: the main thread held in a call that does not return to Python."""
    p = start([sys.executable, "-c", _BLOCKED], devices=1)
    try:
        assert p.stdout.readline() == "ready\n"
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == status and out == ""
    assert re.fullmatch(rf"error: {words} after \d+ s \(sleeping\)\n", err), err


def test_progress_lines_while_a_block_runs():
    lines = []
    with tpu_compile.progress("compiling X", lines.append, every=0.05):
        time.sleep(0.3)
    count = len(lines)
    time.sleep(0.2)
    assert len(lines) == count >= 2  # none after the block
    assert all(ln == "compiling X: 0 s ..." for ln in lines)
    assert [tpu_compile.elapsed(s) for s in (5, 90, 3725)] == ["5 s", "1 min 30 s", "1 h 2 min"]
