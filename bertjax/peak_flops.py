"""The peak FLOP/s of one JAX device, the denominator of MFU (metrics.py's `mfu`,
`Throughput`): the dense figure published for the device kind (a table with its
sources), else a measured matmul (CPU), unless the config gives one.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

import jax
import jax.numpy as jnp

# --------------------------------------------------------------------------- peak FLOP/s

_T = 1e12

# Dense (no 2:4 sparsity) peak FLOP/s of ONE JAX device, as (bfloat16, float32).
# float32 means float32 operands at JAX's default matmul precision, which runs them on
# the matrix units at reduced precision: TF32 tensor cores on NVIDIA Ampere and later,
# one bfloat16 pass on TPU (docs.jax.dev/en/latest/201/precision.html). None: no
# published figure. NVIDIA datasheets print tensor figures "with sparsity"; dense is
# half of that. JAX device = TPU chip where the chip is a megacore (v4, v5p) or has one
# TensorCore (v5e, v6e); = one TensorCore where a chip's two cores are not fused (v2,
# v3, TPU7x), per the JAX ChipVersion table (docs.jax.dev, pallas.tpu.ChipVersion:
# TensorCores per chip, megacore support).
# A key matches device_kind case-insensitively when not followed by a letter or digit
# ("NVIDIA A10" is not "NVIDIA A100"/"A10G", "NVIDIA L4" not "L40S"); first match
# wins, so a more specific key comes first.
_PEAK_TABLE: tuple[tuple[str, float | None, float | None], ...] = (
    # cloud.google.com/tpu/docs/tpu7x: 2307 TFLOPs bf16 per chip, two TensorCores.
    ("TPU7x", 2307 * _T / 2, 2307 * _T / 2),
    # cloud.google.com/tpu/docs/v6e: 918 TFLOPs bf16 per chip, one TensorCore.
    ("TPU v6 lite", 918 * _T, 918 * _T),
    ("TPU v6e", 918 * _T, 918 * _T),
    # cloud.google.com/tpu/docs/v5e: 197 TFLOPs bf16 per chip, one TensorCore.
    ("TPU v5 lite", 197 * _T, 197 * _T),
    ("TPU v5e", 197 * _T, 197 * _T),
    # cloud.google.com/tpu/docs/v5p: 459 TFLOPs bf16 per chip (megacore); JAX names it
    # "TPU v5" (XLA also knows "TPU v5p").
    ("TPU v5p", 459 * _T, 459 * _T),
    ("TPU v5", 459 * _T, 459 * _T),
    # v4i (inference chip): no published figure.
    ("TPU v4 lite", None, None),
    # cloud.google.com/tpu/docs/v4: 275 TFLOPs bf16 per chip (megacore).
    ("TPU v4", 275 * _T, 275 * _T),
    # cloud.google.com/tpu/docs/v3: 123 TFLOPs bf16 per chip, two TensorCores.
    ("TPU v3", 123 * _T / 2, 123 * _T / 2),
    # Cloud TPU v2 (one board, 4 chips): 180 TFLOPs bf16 (Google's 2017 announcement),
    # 45 per chip, two TensorCores (cloud.google.com/tpu/docs/v2 publishes no table).
    ("TPU v2", 45 * _T / 2, 45 * _T / 2),
    # NVIDIA H200 NVL datasheet: BF16 1,671 / TF32 835 TFLOPS with sparsity.
    ("NVIDIA H200 NVL", 1671 * _T / 2, 835 * _T / 2),
    # NVIDIA H200 SXM datasheet: BF16 1,979 / TF32 989 TFLOPS with sparsity.
    ("NVIDIA H200", 1979 * _T / 2, 989 * _T / 2),
    # NVIDIA H100 datasheet (nvidia.com/en-us/data-center/h100), with sparsity:
    # NVL BF16 1,671 / TF32 835; PCIe BF16 1,513 / TF32 756; SXM BF16 1,979 / TF32 989.
    ("NVIDIA H100 NVL", 1671 * _T / 2, 835 * _T / 2),
    ("NVIDIA H100 PCIe", 1513 * _T / 2, 756 * _T / 2),
    ("NVIDIA H100", 1979 * _T / 2, 989 * _T / 2),
    # NVIDIA A100 datasheet (nvidia.com/en-us/data-center/a100): BF16 312, TF32 156 dense
    # (624 / 312 with sparsity); SXM and PCIe alike.
    ("NVIDIA A100", 312 * _T, 156 * _T),
    # NVIDIA A10 datasheet: BF16 125, TF32 62.5 dense (250 / 125 with sparsity). The
    # AWS-only A10G has different tensor throughput and no vendor datasheet, so it is
    # absent (measured instead).
    ("NVIDIA A10", 125 * _T, 62.5 * _T),
    # NVIDIA L4 datasheet: BF16 242 / TF32 120 TFLOPS with sparsity.
    ("NVIDIA L4", 242 * _T / 2, 120 * _T / 2),
)

_DTYPE_ALIASES = {"bf16": "bfloat16", "f32": "float32", "fp32": "float32"}


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, str) and dtype.lower() in _DTYPE_ALIASES:
        return _DTYPE_ALIASES[dtype.lower()]
    return jnp.dtype(dtype).name


def peak_flops_per_device(device_kind: str, dtype: str = "bfloat16") -> float | None:
    """Published dense peak FLOP/s of one JAX device of `device_kind`, or None if unknown.

    Args:
      device_kind: `jax.devices()[0].device_kind`, e.g. "TPU v4", "NVIDIA H100 PCIe".
      dtype: "bfloat16" or "float32" (at JAX's default matmul precision); other dtypes
        have no entry.
    """
    column = {"bfloat16": 0, "float32": 1}.get(_dtype_name(dtype))
    if column is None:
        return None
    for key, *peaks in _PEAK_TABLE:
        if re.search(re.escape(key) + r"(?![0-9a-z])", device_kind, re.IGNORECASE):
            return peaks[column]
    return None


def measure_peak_flops(dtype: str = "float32", n: int = 1024, seconds: float = 1.0) -> float:
    """Achieved FLOP/s of a jitted [n, n] @ [n, n] matmul (2 n^3 FLOPs) on jax.devices()[0].

    The stand-in peak where no figure is published (CPU): MFU against it says how
    close the model's step comes to the device's own best dense matmul. Calls are
    queued in growing batches and waited for once per batch, so dispatch overhead
    does not count; timing stops after `seconds` (wall clock, compile excluded). The
    figure is the fastest batch's, not the mean: other work on the machine (another
    job, this process's input pipeline starting) only slows some batches, and a peak
    measured low would put MFU above 1 later (`Throughput` says so when it happens).
    """
    device = jax.devices()[0]
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.device_put(jax.random.normal(ka, (n, n), _dtype_name(dtype)), device)
    b = jax.device_put(jax.random.normal(kb, (n, n), _dtype_name(dtype)), device)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()  # compile and warm up outside the timed window
    done, batch, best = 0, 1, 0.0
    start = last = time.perf_counter()
    while True:
        for _ in range(batch):
            out = matmul(a, b)
        out.block_until_ready()
        done += batch
        now = time.perf_counter()
        if now > last:
            best = max(best, 2 * n**3 * batch / (now - last))
        elapsed, last = now - start, now
        if elapsed >= seconds:
            break
        # Double the batch, but aim to end near `seconds` rather than overshoot 2x.
        remaining = (seconds - elapsed) * done / elapsed
        batch = max(1, min(2 * batch, math.ceil(remaining)))
    return best


def resolve_peak_flops(override: float = 0.0, dtype: str = "bfloat16") -> tuple[float, str]:
    """(peak FLOP/s per device, where it came from) for MFU on jax.devices()[0].

    Source is "config" for override > 0, "table: <device_kind>" for a published
    figure, else "measured matmul (<dtype>)" from `measure_peak_flops` (about 1 s).
    """
    if override < 0:
        raise ValueError(f"peak FLOP/s override must be >= 0 (0: look up), got {override}")
    if override > 0:
        return float(override), "config"
    kind = jax.devices()[0].device_kind
    peak = peak_flops_per_device(kind, dtype)
    if peak is not None:
        return peak, f"table: {kind}"
    return measure_peak_flops(dtype), f"measured matmul ({_dtype_name(dtype)})"
