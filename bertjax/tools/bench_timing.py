"""How `bench train` times a train step, the same way on both sides (ours in
bench_train.py, transformers' in bench_vs_torch.py): untimed warm-up steps, then about
`seconds` of steps dispatched without a host sync and waited for once; the rates and
MFU of the timed steps, and the process's peak memory where no device reports it.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from bertjax.metrics import mfu

Batch = dict[str, np.ndarray]  # the synthetic batches both sides train on


# --- timing --------------------------------------------------------------------------


def _timed(
    run_step: Callable[[int], Any], wait: Callable[[Any], None], seconds: float, warmup: int
) -> dict[str, Any]:
    """Runs `warmup` untimed steps, then about `seconds` of steps with one wait at the end.

    run_step(i) dispatches step i and returns its loss (a device value); wait(x) blocks
    until x is computed. The timed step count comes from the last two warm-up steps, so
    the loop itself never syncs with the host. Returns steps, seconds, first and last
    losses (the device values).
    """
    first = run_step(0)
    wait(first)
    for i in range(1, warmup - 2):
        wait(run_step(i))
    start = time.perf_counter()
    wait(run_step(warmup - 2))
    wait(run_step(warmup - 1))
    per_step = (time.perf_counter() - start) / 2
    count = max(3, math.ceil(seconds / max(per_step, 1e-9)))
    start = time.perf_counter()
    for i in range(warmup, warmup + count):
        last = run_step(i)
    wait(last)
    return {"steps": count, "seconds": time.perf_counter() - start, "first": first, "last": last}


def _max_rss() -> int:
    """Peak resident memory of this process in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rates(
    timing: Mapping[str, Any],
    batch_size: int,
    seq_len: int,
    flops: float,
    peak: float,
    num_devices: int,
) -> dict[str, float]:
    steps_per_s = timing["steps"] / timing["seconds"]
    tokens = steps_per_s * batch_size * seq_len
    return {
        "step_ms": 1e3 / steps_per_s,
        "seq_per_s": steps_per_s * batch_size,
        "tokens_per_s": tokens,
        "mfu": mfu(flops, tokens, peak, num_devices),
    }
