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
where none is published (CPU), from a measured matmul (bertjax/peak_flops.py); never
above 1 (`Throughput`).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import time
import types
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, TextIO

import jax
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
