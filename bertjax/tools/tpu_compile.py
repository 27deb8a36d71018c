"""Ahead-of-time compilation of the real train step for a Cloud TPU slice, on any machine.

`python -m bertjax compile --config=... --topology=v5e:4x4 [--num_slices=N]` builds the
config's sharded train step for the devices of a TPU topology that libtpu describes
without any TPU present (`jax.experimental.topologies.get_topology_desc`), compiles it
with XLA's TPU compiler, and reports per-chip HBM against the chip's, whether it fits,
FLOPs per step (XLA's cost analysis and our formula) and the step time and tokens/s
that implies at the chip's peak and at a stated MFU. A job that does not fit fails
here, in a minute on a laptop, instead of after the slice is rented.

libtpu: the `libtpu` wheel of the version jax pins (jax 0.10.2: `libtpu==0.0.42.*`),
installed OUTSIDE the environment's site-packages, so that ordinary runs never try to
start a TPU:

    pip install --target ~/.cache/bertjax/libtpu "libtpu==0.0.42.*"

It is found by `--libtpu=PATH`, else $TPU_LIBRARY_PATH, else that directory, else an
importable `libtpu` (on a TPU VM). libtpu's start-up complaints about the missing TPU
(accelerator type, worker hostnames) are kept off the terminal unless loading fails.

XLA's TPU compiler takes minutes on a CPU (measured on a 2-core machine shared with other
work, v5e:2x2, batch 256 x 128: bert_tiny 3.5 min, 3.3 min of CPU time; bert_base
10.5 min, 7.1 min of CPU time; BERT-Large on v5e:4x4 can take 25 min and more), inside
one native call: a line every 30 s says it is still at work, and Ctrl-C or SIGTERM end
the process at once with one line (`interruptible`).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from bertjax.tools.tpu_topology import Topology

DEFAULT_LIBTPU = os.path.join(
    os.path.expanduser("~"), ".cache", "bertjax", "libtpu", "libtpu", "libtpu.so"
)
INSTALL = 'pip install --target ~/.cache/bertjax/libtpu "libtpu==0.0.42.*"'
PROGRESS_EVERY = 30.0  # seconds between the "still compiling" lines


class TopologyError(ValueError):
    """libtpu could not describe the topology (one line, libtpu's words)."""


def find_libtpu(path: str | None = None) -> str:
    """The libtpu.so to load; FileNotFoundError saying how to install it."""
    for candidate in (path, os.environ.get("TPU_LIBRARY_PATH"), DEFAULT_LIBTPU):
        if candidate:
            if os.path.isdir(candidate):
                candidate = (
                    os.path.join(candidate, "libtpu", "libtpu.so")
                    if not os.path.isfile(os.path.join(candidate, "libtpu.so"))
                    else os.path.join(candidate, "libtpu.so")
                )
            if os.path.isfile(candidate):
                return os.path.abspath(candidate)
            if candidate == path:
                raise FileNotFoundError(f"--libtpu={path}: no libtpu.so there")
    try:
        import libtpu  # a TPU VM's

        return libtpu.get_library_path()
    except ImportError:
        pass
    raise FileNotFoundError(
        f"compile needs libtpu, which is not installed: {INSTALL} "
        "(or pass --libtpu=PATH to a libtpu.so)"
    )


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[list[str]]:
    """Sends file descriptor 2 to a temporary file (libtpu's C++ logging); yields a list
    that holds what was written once the block ends."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    out: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode(errors="replace"))


def devices(topology: Topology, libtpu: str | None = None) -> list[Any]:
    """The compile-only devices of `topology` (all hosts, all slices)."""
    os.environ["TPU_LIBRARY_PATH"] = find_libtpu(libtpu)
    # What a TPU VM's metadata would say; without them libtpu logs complaints.
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    # Compile-only: another process holding libtpu (a second compile) is no conflict.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    with _quiet_stderr() as log:
        try:
            desc = topologies.get_topology_desc(
                platform="tpu",
                topology_name=topology.name,
                # v4: one device per chip (its two cores as one), as JAX runs it on a VM.
                chip_config_name="megacore" if topology.chip.name == "v4" else "default",
                chips_per_host_bounds=topology.host_bounds,
                num_slices=topology.num_slices,
                wrap=(False, False, False),
            )
        except Exception as e:  # noqa: BLE001 -- libtpu's, in its words
            failure = e
        else:
            failure = None
    if failure is not None:
        detail = " ".join(str(failure).split())[:300]
        hint = " ".join(log[0].split())[-300:] if log and log[0].strip() else ""
        raise TopologyError(
            f"libtpu could not describe {topology.name}: {detail}" + (f" ({hint})" if hint else "")
        )
    return list(desc.devices)


def elapsed(seconds: float) -> str:
    """ "45 s", "1 min 30 s", "1 h 2 min"."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


@contextlib.contextmanager
def progress(what: str, log: Callable[[str], Any], every: float = PROGRESS_EVERY) -> Iterator[None]:
    """Logs "WHAT: 1 min 30 s ..." every `every` seconds while the block runs (XLA's
    compiler releases the GIL, so a thread can speak while it works)."""
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not done.wait(every):
            log(f"{what}: {elapsed(time.monotonic() - start)} ...")
            sys.stdout.flush()

    thread = threading.Thread(target=beat, name="compile-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextlib.contextmanager
def interruptible(doing: Callable[[], str]) -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM end the process at once with one line, "error:
    interrupted after 1 min 5 s (DOING)", status 130 (143 for SIGTERM), even while a
    native call that does not return to Python (XLA's compiler) runs: the main thread
    would only see a Python signal handler after that call ends, minutes later. Python's
    C-level handler writes the signal's number to a wakeup pipe at once, and a thread
    waiting on the pipe prints and leaves with os._exit (nothing is written that needs
    cleaning up). Installing the handlers also replaces libtpu's, which dump a C++
    stack trace on SIGTERM; the previous handlers return when the block ends. Only in
    the main thread (elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    start = time.monotonic()
    read, write = os.pipe()
    os.set_blocking(write, False)

    def watch() -> None:
        got = os.read(read, 1)
        if not got:  # the pipe was closed: the block ended
            return
        number = got[0]
        what = (
            "interrupted"
            if number == signal.SIGINT
            else f"stopped by {signal.Signals(number).name}"
        )
        line = f"error: {what} after {elapsed(time.monotonic() - start)} ({doing()})\n"
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os.write(2, line.encode())
        os._exit(130 if number == signal.SIGINT else 128 + number)

    watcher = threading.Thread(target=watch, name="compile-signals", daemon=True)
    watcher.start()
    previous = {
        sig: signal.signal(sig, lambda *_: None)  # the watcher acts
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    previous_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        os.close(write)
        watcher.join()
        os.close(read)


def _cost_flops(compiled: Any) -> float | None:
    """FLOPs of one device's program by XLA's cost analysis (None when absent)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops else None


def _exhausted(e: BaseException) -> str | None:
    """XLA's out-of-memory verdict in one line, if `e` is one."""
    text = " ".join(str(e).split())
    if "RESOURCE_EXHAUSTED" not in text:
        return None
    m = re.search(r"RESOURCE_EXHAUSTED:?\s*(.*?)(?:\. |$)", text)
    return (m.group(1) if m else text)[:300].rstrip(". ")


def compile_for(
    config: Any,
    topology: Topology,
    *,
    libtpu: str | None = None,
    mfu: float = 0.5,
    log: Any = print,
    progress_every: float = PROGRESS_EVERY,
) -> list[dict[str, Any]]:
    """Compiles every phase's train step of `config` for `topology` and logs the report
    (module docstring), a progress line every `progress_every` seconds while XLA
    compiles; returns a dict of figures per phase. MemoryCheckError (one line, the
    figures) when a phase does not fit in the chip's HBM."""

    from bertjax import experiment
    from bertjax.models import attention
    from bertjax.tools import aot
    from bertjax.train import train_step_fn

    if not 0 < mfu <= 1:
        raise ValueError(f"--mfu={mfu}: must be in (0, 1]")
    if progress_every <= 0:
        raise ValueError(f"--progress_every={progress_every:g}: must be > 0")
    every = progress_every
    devs = devices(topology, libtpu)
    hosts = len({d.process_index for d in devs})
    config = config.copy_and_resolve_references()
    if int(config.train.steps) == 0:  # fine-tuning: epochs over data not read here
        config.train.steps = 1000
    token = attention.TARGET_PLATFORM.set("tpu")
    doing = [f"building the train step for {topology.name}"]
    guard = contextlib.ExitStack()
    guard.enter_context(interruptible(lambda: doing[0]))
    try:
        setup = experiment.build_setup(config, devs)
        cfg, task = setup.cfg, setup.task
        phases = task.phases()
        experiment.check_batch_sizes(phases, setup.mesh, setup.rules)
        aux = aot.abstract_teacher(task)
        step = train_step_fn(setup)
        log(
            f"compile: {cfg.family} L{cfg.num_layers} H{cfg.hidden_size}, task {task.name}, "
            f"compute {cfg.dtype}, on {topology.name} x {topology.num_slices} slice(s): "
            f"{len(devs)} chips, {hosts} host(s), mesh {dict(setup.mesh.shape)}"
        )
        n, chips = len(phases), len(devs)
        return [
            _compile_phase(config, setup, step, aux, p, n, topology, chips, mfu, log, every, doing)
            for p in phases
        ]
    finally:
        attention.TARGET_PLATFORM.reset(token)
        guard.close()


def _compile_phase(
    config: Any,
    setup: Any,
    step: Any,
    aux: Any,
    phase: Any,
    num_phases: int,
    topology: Topology,
    chips: int,
    mfu: float,
    log: Any,
    progress_every: float,
    doing: list[str],
) -> dict[str, Any]:
    """Compiles one phase's train step and logs its report (`_report`); returns its
    figures. MemoryCheckError when it does not fit in the chip's HBM; `doing[0]` says
    what runs (for `interruptible`)."""
    from bertjax import experiment, memory

    cfg, task = setup.cfg, setup.task
    seq = experiment.phase_seq_len(config, phase)
    what = f"the train step (batch {phase.batch_size} x {seq}" + (
        f", phase {phase.index + 1})" if num_phases > 1 else ")"
    )
    batch = memory.abstract_batch(
        task, cfg, phase.batch_size, seq, setup.mesh, setup.rules, setup.seed
    )
    doing[0] = f"compiling {what} for {topology.name}"
    log(
        f"{doing[0]} with XLA's TPU compiler: minutes on a CPU, a line every "
        f"{progress_every:g} s; Ctrl-C stops it"
    )
    sys.stdout.flush()
    try:
        with progress(doing[0], log, progress_every):
            compiled = memory.compile_step(setup, step, batch, aux)
    except Exception as e:  # noqa: BLE001 -- XLA's TPU compiler
        verdict = _exhausted(e)
        if verdict is None:
            raise
        # Measured (RESULTS.md, "Scanned layers on a TPU target"): the loop takes less.
        loop = ", set model.scan_layers=False (the loop takes less HBM)" if cfg.scan_layers else ""
        raise memory.MemoryCheckError(
            f"{what} does not fit in {topology.chip.name}'s "
            f"{topology.chip.hbm_gib:g} GiB HBM per chip (XLA: {verdict}); lower "
            f"train.batch_size ({int(config.train.batch_size)}), raise "
            f"optim.grad_accum_steps, set model.remat=full{loop}, or use more chips"
        ) from None
    row = _report(compiled, topology, chips, task.flops(cfg, seq).total, phase, seq, mfu, log, what)
    if not row["fits"]:
        hbm = topology.chip.hbm_gib * memory.GiB
        raise memory.MemoryCheckError(
            memory.refusal(
                row["memory"],
                int(memory.HEADROOM * hbm),
                f"{topology.chip.name}'s HBM",
                what,
                config,
            )
        )
    del row["memory"]
    return row


def _report(
    compiled: Any,
    topology: Topology,
    chips: int,
    flops_per_token: float,
    phase: Any,
    seq: int,
    mfu: float,
    log: Any,
    what: str,
) -> dict[str, Any]:
    """Logs one compiled phase's memory, FLOPs and step time at peak and at `mfu`; returns
    its figures (with "memory", the memory.StepMemory)."""
    from bertjax.memory import HEADROOM, GiB, StepMemory

    hbm = topology.chip.hbm_gib * GiB
    memory = StepMemory.of(compiled)
    fits = memory.total <= HEADROOM * hbm
    tokens = phase.batch_size * seq
    formula = flops_per_token * tokens
    xla = _cost_flops(compiled)
    at_peak = formula / (topology.chip.peak_bf16 * chips)
    row = {
        "phase": phase.index + 1,
        "batch_size": phase.batch_size,
        "seq_len": seq,
        "hbm_per_chip": memory.total,
        "hbm_limit": hbm,
        "fits": fits,
        "flops_formula": formula,
        "flops_xla": xla * chips if xla else None,
        "step_s_at_peak": at_peak,
        "step_s_at_mfu": at_peak / mfu,
        "tokens_per_s_at_mfu": tokens / (at_peak / mfu),
        "memory": memory,
    }
    log(
        f"{what}: HBM {memory.words()} of {topology.chip.hbm_gib:g} GiB per chip: "
        + ("fits" if fits else "does NOT fit")
    )
    xla_words = (
        f"XLA's cost analysis {row['flops_xla']:.3e} (it can undercount loops)"
        if xla
        else "no cost analysis from XLA"
    )
    log(f"  FLOPs per step: {formula:.3e} by bertjax's formula (bertjax/flops.py), {xla_words}")
    log(
        f"  at the chips' peak ({topology.chip.peak_bf16 / 1e12:g} TFLOP/s bf16 each): "
        f"step {at_peak * 1e3:.3g} ms, {tokens / at_peak:,.0f} tokens/s; at {mfu:.0%} "
        f"MFU: step {row['step_s_at_mfu'] * 1e3:.3g} ms, "
        f"{row['tokens_per_s_at_mfu']:,.0f} tokens/s"
    )
    return row
