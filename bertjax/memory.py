"""The ahead-of-time memory check: the train step compiled before the first one, what it
needs in memory, and whether it fits.

`train` compiles the step of every phase at its largest batch shape (full-length rows)
before the first step, reads XLA's memory analysis of the compiled program (per device:
arguments, outputs, temporaries, generated code; donated arguments counted once) and
compares it with what a device has: an accelerator's memory limit
(`memory_stats()["bytes_limit"]`), on a CPU the RAM the kernel reports available, shared
by the local CPU devices. A step that does not fit stops the command with one line of
figures and what to change, before any file is written: a job that would be killed by
the kernel, or fail with RESOURCE_EXHAUSTED after its first checkpoint, is refused in
seconds instead. `bench train` fits its batch with the same figures and the `compile`
command runs the same lowering against a Cloud TPU topology (bertjax/tools/aot.py,
bertjax/tools/tpu_compile.py).

XLA's figures are what its buffer assignment plans; the runtime adds a little (the
allocator's fragmentation, the input pipeline's host memory on a CPU), so a step that
uses more than `HEADROOM` of the device is refused too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from bertjax import experiment, sharding

GiB = float(1 << 30)
HEADROOM = 0.95  # the share of a device's memory a step may plan to use


class MemoryCheckError(ValueError):
    """The train step does not fit in device memory (one line with the figures)."""


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """Bytes one device needs to run the compiled step (XLA's memory analysis)."""

    arguments: int
    outputs: int
    aliased: int  # outputs written into donated arguments: counted once
    temporaries: int
    code: int

    @property
    def total(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.code

    @classmethod
    def of(cls, compiled: Any) -> StepMemory:
        m = compiled.memory_analysis()
        if m is None:  # a backend without the analysis
            return cls(0, 0, 0, 0, 0)
        return cls(
            int(m.argument_size_in_bytes),
            int(m.output_size_in_bytes),
            int(m.alias_size_in_bytes),
            int(m.temp_size_in_bytes),
            int(m.generated_code_size_in_bytes),
        )

    def words(self) -> str:
        return (
            f"{size(self.total)} per device (arguments {size(self.arguments)}, outputs "
            f"{size(self.outputs - self.aliased)} beyond the donated state, temporaries "
            f"{size(self.temporaries)})"
        )


def size(n: float) -> str:
    """Bytes as GiB, or MiB below one GiB."""
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / (1 << 20):.1f} MiB"


def available_memory(devices: list[Any] | None = None) -> tuple[int | None, str]:
    """(bytes one device may use, where the figure comes from); (None, why) when
    unknown. Accelerators: the smallest `bytes_limit` of the local devices. CPU: the
    kernel's MemAvailable (Linux) shared by the local CPU devices."""
    devices = list(jax.local_devices() if devices is None else devices)
    if devices[0].platform != "cpu":
        limits = [(d.memory_stats() or {}).get("bytes_limit") for d in devices]
        if all(limits):
            return int(min(limits)), f"{devices[0].device_kind} memory limit"
        return None, "the device reports no memory limit"
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        free = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None, "no /proc/meminfo"
    n = len(devices)
    return free // n, ("RAM available" + (f" / {n} CPU devices" if n > 1 else ""))


def abstract_batch(
    task: Any, cfg: Any, batch_size: int, seq_len: int, mesh: Any, rules: Any, seed: int = 0
) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch of `batch_size` full-length rows as ShapeDtypeStructs sharded as
    `train` shards batches (the shapes of the task's synthetic batches)."""
    rows = task.synthetic_batches(cfg, min(batch_size, 2), seq_len, seed, 1)[0]
    return {
        k: jax.ShapeDtypeStruct(
            (batch_size, *np.shape(v)[1:]),
            np.asarray(v).dtype,
            sharding=sharding.batch_sharding(mesh, np.ndim(v), rules),
        )
        for k, v in rows.items()
    }


def signature(batch: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], Any]]:
    """{key: (shape, dtype)}: a batch a compiled step takes (arrays or abstract)."""
    return {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in batch.items()}


def compile_step(setup: Any, step: Any, batch: Mapping[str, Any], aux: Any) -> Any:
    """`step` compiled for the abstract state and `batch` (ShapeDtypeStructs)."""
    with sharding.activation_rules_context(setup.mesh, setup.rules):
        return step.lower(setup.target, dict(batch), aux).compile()


def refusal(memory: StepMemory, limit: int, source: str, what: str, config: Any) -> str:
    """The one line that refuses a step: the figures and what to change."""
    t = config.train
    accum = int(config.optim.get("grad_accum_steps", 1)) if "optim" in config else 1
    remat = config.model.get("remat", "none") if "model" in config else "none"
    return (
        f"{what} needs {memory.words()}, more than the {size(limit)} "
        f"({HEADROOM:.0%} of {source}) one device has: lower train.batch_size "
        f"({int(t.batch_size)}), raise optim.grad_accum_steps ({accum}), set "
        f"model.remat=full (now {remat}), or shard over more devices (mesh "
        f"{dict(config.mesh)})"
    )


def check_phases(
    setup: Any, phases: list[Any], aux: Any, step: Any, log: Any = print
) -> dict[int, Any]:
    """Compiles `step` (the loop's jitted train step) for every phase at its largest
    shapes and checks it fits; MemoryCheckError otherwise. Returns {phase index:
    (compiled step, the `signature` of the batch it takes)}: the loop runs it for
    batches of that signature, so nothing is compiled twice."""
    limit, source = available_memory()
    out = {}
    for phase in phases:
        seq_len = experiment.phase_seq_len(setup.config, phase)
        batch = abstract_batch(
            setup.task, setup.cfg, phase.batch_size, seq_len, setup.mesh, setup.rules, setup.seed
        )
        compiled = compile_step(setup, step, batch, aux)
        memory = StepMemory.of(compiled)
        what = f"the train step (batch {phase.batch_size} x {seq_len}" + (
            f", phase {phase.index + 1})" if len(phases) > 1 else ")"
        )
        if limit is not None and memory.total > HEADROOM * limit:
            raise MemoryCheckError(
                refusal(memory, int(HEADROOM * limit), source, what, setup.config)
            )
        if limit is not None:
            log(f"memory: {what} needs {size(memory.total)} per device of {size(limit)} ({source})")
        out[phase.index] = (compiled, signature(batch))
    return out
