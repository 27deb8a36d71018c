"""What `bench train` and `compile` add to the memory check (bertjax/memory.py): the
largest batch whose step fits, and the teacher's parameters as shapes.

`bench train` halves a batch that does not fit until its step does (`fit_batch`); the
`compile` command (bertjax/tools/tpu_compile.py) lowers the step of every phase against a
Cloud TPU topology with the teacher as ShapeDtypeStructs (`abstract_teacher`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from bertjax import memory, sharding
from bertjax.memory import HEADROOM, StepMemory
from bertjax.train import train_step_fn


def abstract_teacher(task: Any) -> Any:
    """The task's teacher parameters (distillation) as ShapeDtypeStructs in its compute
    dtype, as the step takes them; None without a teacher."""
    teacher = task.teacher
    if teacher is None:
        return None
    from bertjax.models import build, init_params

    return jax.eval_shape(
        lambda: jax.tree.map(lambda x: x.astype(teacher.dtype), init_params(build(teacher), 0))
    )


def batch_quantum(mesh: Any, rules: Any) -> int:
    """How many shards the batch dimension is split into (batches must be multiples)."""
    axes = sharding.batch_sharding(mesh, 1, rules).spec[0]
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    return int(np.prod([mesh.shape[a] for a in axes], dtype=np.int64))


def fit_batch(
    setup: Any, batch_size: int, seq_len: int, aux: Any = None, log: Any = print
) -> tuple[int, StepMemory | None]:
    """The largest of batch_size, batch_size / 2, ... (multiples of the batch shards)
    whose train step fits in one device's memory, and its memory; MemoryCheckError if
    not even the smallest fits. `bench train`'s choice when the configured batch is
    too large."""
    step = train_step_fn(setup)
    limit, source = memory.available_memory()
    quantum = batch_quantum(setup.mesh, setup.rules)
    b = batch_size
    while True:
        batch = memory.abstract_batch(
            setup.task, setup.cfg, b, seq_len, setup.mesh, setup.rules, setup.seed
        )
        need = StepMemory.of(memory.compile_step(setup, step, batch, aux))
        if limit is None or need.total <= HEADROOM * limit:
            return b, (need if limit is not None else None)
        what = f"the train step (batch {b} x {seq_len})"
        if b <= quantum:
            raise memory.MemoryCheckError(
                memory.refusal(need, int(HEADROOM * limit), source, what, setup.config)
            )
        smaller = max(quantum, b // 2 // quantum * quantum)
        log(
            f"memory: {what} needs {memory.size(need.total)} per device, more than "
            f"{memory.size(HEADROOM * limit)} ({HEADROOM:.0%} of {source}); trying batch "
            f"{smaller}"
        )
        b = smaller
