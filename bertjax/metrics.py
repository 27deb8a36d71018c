"""Training metrics out of the loop: TensorBoard scalars, one log line, throughput and MFU.

  with MetricWriter(workdir, enabled=jax.process_index() == 0) as writer:
      peak, source = resolve_peak_flops(config.peak_flops, dtype="bfloat16")
      meter = Throughput(flops_per_token, peak, jax.device_count(), peak_source=source)
      meter.start(step)
      ...
      writer.write_scalars(step, {**metrics, **meter.rates(step, tokens, sequences)})

MetricWriter writes TensorBoard event files with the `tensorboard` package alone and
never imports TensorFlow (DESIGN.md: TensorFlow only in bertjax/data), so a GPU box
with only JAX installed logs the same files. MFU is model FLOPs (bertjax/flops.py)
over the dense peak FLOP/s of the devices, from a table of published figures or,
where none is published (CPU), from a measured matmul; never above 1 (`Throughput`).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import tempfile
import time
import types
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from bertjax import paths

# --------------------------------------------------------------------------- means


class Mean(NamedTuple):
    """A metric of one batch with its explicit denominator: `value` is a mean over `count`
    items (masked predictions, labelled rows, real tokens, or 1 for a per-batch figure),
    so means over batches, logging windows or hosts combine exactly:
    sum(value * count) / sum(count). A pytree, so it passes through jit and device_get."""

    value: Any
    count: Any


def combine(batches: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Means of metrics over batches: a `Mean` weighted by its counts (0 when every count
    is 0), a plain value by the number of batches."""
    if not batches:
        return {}
    out: dict[str, float] = {}
    for key, first in batches[0].items():
        if isinstance(first, Mean):
            values = np.asarray([float(b[key].value) for b in batches], np.float64)
            counts = np.asarray([float(b[key].count) for b in batches], np.float64)
            total = counts.sum()
            out[key] = float((values * counts).sum() / total) if total else 0.0
        else:
            out[key] = float(np.mean([float(b[key]) for b in batches]))
    return out


# --------------------------------------------------------------------------- writer


def _tensorboard() -> tuple[Any, Any, Any]:
    """(EventFileWriter, event_pb2, summary_pb2) from `tensorboard`, without TensorFlow.

    tensorboard resolves its file I/O (`tensorboard.compat.tf`) lazily, on first use:
    to TensorFlow when it can import it, else to a bundled pure-Python stub. Merely
    having TF installed would thus import it (seconds and hundreds of MB) the first
    time an event file is opened. The `tensorboard.compat.notf` marker module, which
    tensorboard's own TF-free build ships, selects the stub. It is set only while TF
    is not imported yet: a process that already holds TF (the data pipeline) lets
    tensorboard use its gfile, which also writes gs:// paths. Without TF, remote
    paths go through fsspec (gcsfs for gs://) if installed.
    """
    if "tensorflow" not in sys.modules:
        sys.modules.setdefault(
            "tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf")
        )
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as e:
        raise ImportError(
            "writing TensorBoard event files needs the `tensorboard` package "
            "(pip install -r requirements.txt); pass logdir=None to log to stdout only"
        ) from e
    return EventFileWriter, event_pb2, summary_pb2


def _host_value(value: Any) -> int | float:
    """A python int (integer/bool dtypes) or float from a python, numpy or 0-d jax scalar."""
    arr = np.asarray(value)  # a jax array is copied to host here
    if arr.dtype.kind in "biu":
        return int(arr)
    return float(arr)


def format_value(name: str, value: int | float) -> str:
    """How `value` reads in the log line.

    Integers and throughputs (`*_per_s` >= 1000) get thousands separators
    (`tokens_per_s=12,345`); very small or very large floats are scientific
    (`learning_rate=1.000e-04`); the rest keep four decimals (`loss=5.1234`).
    """
    if isinstance(value, int):
        return f"{value:,d}"
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    if name.endswith("_per_s"):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if abs(value) < 1e-3 or abs(value) >= 1e6:
        return f"{value:.3e}"
    return f"{value:.4f}"


class MetricWriter:
    """Scalars to TensorBoard event files under `logdir` and one line per call to a stream.

    Args:
      logdir: directory for the event files (created if missing); None logs to the
        stream only. A gs:// URL: the events are written to a local temporary directory
        and each event file is uploaded whole (an object store cannot append; TensorFlow's
        GCS writer does the same) at `flush`, at `close`, and after a write once
        `upload_every_s` seconds have passed since the last upload.
      enabled: False on non-chief hosts (`jax.process_index() != 0`): nothing is
        written or printed, so a pod logs each step once.
      stream: where the line goes; sys.stdout (as it is at write time) when None.
      upload_every_s: for a gs:// logdir, the least time between two uploads (each a
        PUT of the whole file): TensorBoard sees the run at most this late.
    """

    def __init__(
        self,
        logdir: str | None,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        upload_every_s: float = 60.0,
    ):
        self.logdir = logdir
        self.enabled = enabled
        self._stream = stream
        self._writer = None
        self._closed = False
        self._staging: str | None = None  # local directory of a gs:// logdir's events
        self._upload_every_s, self._uploaded_at = float(upload_every_s), time.monotonic()
        if enabled and logdir is not None:
            writer_cls, self._event_pb2, self._summary_pb2 = _tensorboard()
            if paths.is_remote(logdir):
                self._staging = tempfile.mkdtemp(prefix="bertjax-events-")
            self._writer = writer_cls(self._staging or logdir)

    def write_scalars(self, step: int, scalars: Mapping[str, Any], prefix: str = "train") -> None:
        """Logs `scalars` at `step`: TensorBoard tags `{prefix}/{name}` and one printed line.

        Values may be python or numpy scalars or 0-d jax arrays; TensorBoard stores them
        as float32. The line keeps the mapping's key order:
        `train step 120: loss=5.1234 learning_rate=1.000e-04 tokens_per_s=12,345`.
        """
        if not self.enabled:
            return
        if self._closed:
            raise RuntimeError("MetricWriter.write_scalars after close()")
        step = int(step)
        values = {name: _host_value(v) for name, v in scalars.items()}
        if self._writer is not None:
            summary = self._summary_pb2.Summary(
                value=[
                    self._summary_pb2.Summary.Value(tag=f"{prefix}/{name}", simple_value=float(v))
                    for name, v in values.items()
                ]
            )
            self._writer.add_event(
                self._event_pb2.Event(wall_time=time.time(), step=step, summary=summary)
            )
            if (
                self._staging is not None
                and time.monotonic() - self._uploaded_at >= self._upload_every_s
            ):
                self._writer.flush()
                self._upload()
        fields = " ".join(f"{name}={format_value(name, v)}" for name, v in values.items())
        stream = self._stream or sys.stdout
        print(f"{prefix} step {step}: {fields}".rstrip(), file=stream)
        # A pipe (a launcher, a subprocess in a test) buffers; the line should show now.
        stream.flush()

    def flush(self) -> None:
        """Writes queued events to disk and flushes the stream."""
        if not self.enabled:
            return
        if self._writer is not None:
            self._writer.flush()
            self._upload()
        (self._stream or sys.stdout).flush()

    def _upload(self) -> None:
        if self._staging is not None:
            for name in os.listdir(self._staging):
                paths.upload(os.path.join(self._staging, name), paths.join(self.logdir, name))
            self._uploaded_at = time.monotonic()

    def close(self) -> None:
        """Flushes and closes the event file; safe to call twice."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._upload()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        self._closed = True

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


# --------------------------------------------------------------------------- throughput


def mfu(
    flops_per_token: float, tokens_per_s: float, peak_flops_per_device: float, num_devices: int
) -> float:
    """Model FLOPs utilization: flops_per_token * tokens_per_s / (peak * devices).

    tokens_per_s is global (all devices); 0 when the peak is 0 or unknown.
    """
    if peak_flops_per_device is None or peak_flops_per_device <= 0 or num_devices <= 0:
        return 0.0
    return flops_per_token * tokens_per_s / (peak_flops_per_device * num_devices)


class Throughput:
    """Rates over the window since the last `start` or `rates` call (time.perf_counter).

    MFU is never above 1: a window whose model FLOP/s exceed the peak shows that the
    peak is too low (measured while other work ran, or set too low in the config), so
    the achieved rate becomes the peak from then on, MFU is 1 for that window, and one
    warning line on stderr says so with both figures.

    Args:
      flops_per_token: training FLOPs per token (bertjax.flops.train_flops_per_token).
      peak_flops_per_device: dense peak FLOP/s of one device (resolve_peak_flops).
      num_devices: devices the step runs on (jax.device_count()).
      peak_source: where the peak came from (resolve_peak_flops), for that warning.
    """

    def __init__(
        self,
        flops_per_token: float,
        peak_flops_per_device: float,
        num_devices: int,
        peak_source: str = "",
    ):
        self.flops_per_token = flops_per_token
        self.peak_flops_per_device = peak_flops_per_device
        self.peak_source = peak_source
        self.num_devices = num_devices
        self._step: int | None = None
        self._time = 0.0

    def start(self, step: int) -> None:
        """Opens a window at `step` now (after compilation, so it is not timed)."""
        self._step = int(step)
        self._time = time.perf_counter()

    def rates(self, step: int, tokens: int, sequences: int) -> dict[str, float]:
        """Rates since the window opened, then reopens it at `step`.

        Args:
          step: the current step.
          tokens, sequences: global counts processed in the window (all hosts).
        Returns:
          {"steps_per_s", "sequences_per_s", "tokens_per_s", "mfu"}; zeros for an
          empty window.
        """
        if self._step is None:
            raise RuntimeError("Throughput.rates before start()")
        now = time.perf_counter()
        elapsed = now - self._time
        if elapsed > 0:
            steps_per_s = (int(step) - self._step) / elapsed
            sequences_per_s = sequences / elapsed
            tokens_per_s = tokens / elapsed
        else:
            steps_per_s = sequences_per_s = tokens_per_s = 0.0
        self._step, self._time = int(step), now
        utilisation = mfu(
            self.flops_per_token, tokens_per_s, self.peak_flops_per_device, self.num_devices
        )
        if utilisation > 1:
            self._raise_peak(utilisation)
            utilisation = 1.0
        return {
            "steps_per_s": steps_per_s,
            "sequences_per_s": sequences_per_s,
            "tokens_per_s": tokens_per_s,
            "mfu": utilisation,
        }

    def _raise_peak(self, utilisation: float) -> None:
        """The step beat the peak: the achieved FLOP/s per device is the peak from now."""
        old = self.peak_flops_per_device
        self.peak_flops_per_device = old * utilisation
        source = f" ({self.peak_source})" if self.peak_source else ""
        if jax.process_index() == 0:
            print(
                f"warning: the train step ran at {self.peak_flops_per_device:.3e} model "
                f"FLOP/s per device, above the peak MFU was measured against, "
                f"{old:.3e}{source}, which would make mfu={utilisation:.3g}: that peak "
                "was too low (measured while other work ran, or set too low in "
                "train.peak_flops); MFU is against the achieved rate from here on",
                file=sys.stderr,
                flush=True,
            )
