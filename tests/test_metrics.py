"""Metric logging, peak FLOP/s and throughput against TensorBoard's reader and hand arithmetic."""

import io
import math
import os
import sys
import textwrap
import types

import clilib
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bertjax import metrics, peak_flops
from bertjax.metrics import MetricWriter, Throughput


def _read_scalars(logdir):
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_read_back_by_tensorboard(tmp_path):
    with MetricWriter(str(tmp_path), stream=io.StringIO()) as writer:
        writer.write_scalars(10, {"loss": np.float32(5.25), "learning_rate": 1e-4})
        writer.write_scalars(20, {"loss": jnp.asarray(4.125), "learning_rate": 2e-4})
        writer.write_scalars(
            20,
            {"mlm_accuracy": jnp.asarray(0.3, jnp.bfloat16), "skipped": jnp.asarray(3, jnp.int32)},
            prefix="eval",
        )
    assert _read_scalars(tmp_path) == {
        "train/loss": [(10, 5.25), (20, 4.125)],
        "train/learning_rate": [(10, float(np.float32(1e-4))), (20, float(np.float32(2e-4)))],
        # bfloat16 0.3 is 0.30078125; the event stores it as float32 exactly.
        "eval/mlm_accuracy": [(20, 0.30078125)],
        "eval/skipped": [(20, 3.0)],
    }


def test_events_in_a_bucket_are_uploaded_during_the_run(bucket, tmp_path):
    """A gs:// logdir (the local Cloud Storage emulator): the event file appears in the
    bucket once upload_every_s has passed, while the writer is open, and whole at close."""
    from bertjax import paths

    logdir = bucket + "/logs"
    writer = MetricWriter(logdir, stream=io.StringIO(), upload_every_s=0.0)
    writer.write_scalars(1, {"loss": 2.5})
    [name] = paths.listdir(logdir)  # uploaded by the write, before close
    writer._upload_every_s = 3600.0
    writer.write_scalars(2, {"loss": 2.0})  # within the hour: not uploaded yet
    with paths.local_copy(f"{logdir}/{name}") as local:
        assert _read_scalars(os.path.dirname(local)) == {"train/loss": [(1, 2.5)]}
    writer.close()
    with paths.local_copy(f"{logdir}/{name}") as local:
        assert _read_scalars(os.path.dirname(local)) == {"train/loss": [(1, 2.5), (2, 2.0)]}


def test_disabled_writer_creates_nothing_and_prints_nothing(tmp_path, capsys):
    logdir = tmp_path / "logs"
    for stream in (io.StringIO(), None):
        writer = MetricWriter(str(logdir), enabled=False, stream=stream)
        writer.write_scalars(1, {"loss": 1.0})
        writer.flush()
        writer.close()
        assert stream is None or stream.getvalue() == ""
    assert not logdir.exists()
    assert capsys.readouterr().out == ""


def test_missing_tensorboard_fails_only_with_a_logdir(tmp_path, monkeypatch):
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "tensorboard.summary.writer.event_file_writer", None)
    out = io.StringIO()
    MetricWriter(None, stream=out).write_scalars(1, {"loss": 1.0})
    assert out.getvalue() == "train step 1: loss=1.0000\n"
    with pytest.raises(ImportError, match="tensorboard"):
        MetricWriter(str(tmp_path))


def test_no_logdir_prints_to_stdout_and_writes_no_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with MetricWriter(None) as writer:
        writer.write_scalars(7, {"loss": 2.0})
    assert capsys.readouterr().out == "train step 7: loss=2.0000\n"
    assert list(tmp_path.iterdir()) == []


def test_printed_line_has_prefix_step_and_each_value():
    out = io.StringIO()
    writer = MetricWriter(None, stream=out)
    writer.write_scalars(
        120,
        {
            "loss": 5.12341,
            "mlm_accuracy": np.float32(0.1234),
            "learning_rate": jnp.asarray(1e-4),
            "tokens_per_s": 12345.4,
            "sequences_per_s": 96.45,
            "steps_per_s": 2.5,
            "mfu": 0.0,
            "skipped_updates": np.int64(1234567),
            "grad_norm": float("nan"),
            "param_norm": 2.5e7,
        },
    )
    writer.write_scalars(130, {"loss": 4.0}, prefix="eval")
    assert out.getvalue().splitlines() == [
        "train step 120: loss=5.1234 mlm_accuracy=0.1234 learning_rate=1.000e-04"
        " tokens_per_s=12,345 sequences_per_s=96.45 steps_per_s=2.5 mfu=0"
        " skipped_updates=1,234,567 grad_norm=nan param_norm=2.500e+07",
        "eval step 130: loss=4.0000",
    ]


def test_writing_events_does_not_import_tensorflow(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        from bertjax.metrics import MetricWriter
        with MetricWriter({str(tmp_path)!r}) as writer:
            writer.write_scalars(1, {{"loss": 1.5}})
        assert any(f.startswith("events.out.tfevents") for f in os.listdir({str(tmp_path)!r}))
        print("tensorboard" in sys.modules, "tensorflow" in sys.modules)
    """)
    run = clilib.python("-c", script, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "True False"
    assert _read_scalars(tmp_path) == {"train/loss": [(1, 1.5)]}


# Dense (non-sparse) figures per JAX device, from the vendors' pages cited in metrics.py.
@pytest.mark.parametrize(
    "kind, dtype, expected",
    [
        ("TPU v2", "bfloat16", 22.5e12),  # 45 TFLOPs per chip, 2 cores = 2 devices
        ("TPU v3", "bfloat16", 61.5e12),  # 123 per chip, 2 cores = 2 devices
        ("TPU v4", "bfloat16", 275e12),  # megacore: one device per chip
        ("TPU v5 lite", "bfloat16", 197e12),
        ("TPU v5", "bfloat16", 459e12),  # v5p as JAX names it
        ("TPU v5p", "bfloat16", 459e12),
        ("TPU v6 lite", "bfloat16", 918e12),
        ("TPU7x", "bfloat16", 1153.5e12),  # 2307 per chip, 2 cores = 2 devices
        ("TPU v4", "float32", 275e12),  # default precision: one bf16 pass on the MXU
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989.5e12),  # SXM: 1,979 with sparsity
        ("NVIDIA H100 PCIe", "bfloat16", 756.5e12),
        ("NVIDIA H100 NVL", "bfloat16", 835.5e12),
        ("NVIDIA H200", "bfloat16", 989.5e12),
        ("NVIDIA H200", "float32", 494.5e12),  # TF32
        ("NVIDIA A100-SXM4-80GB", "bfloat16", 312e12),
        ("NVIDIA A100 80GB PCIe", "bf16", 312e12),
        ("NVIDIA A100-SXM4-40GB", "float32", 156e12),  # TF32
        ("NVIDIA A10", "bfloat16", 125e12),
        ("NVIDIA L4", "bfloat16", 121e12),
        ("NVIDIA L4", "float32", 60e12),
        ("NVIDIA A10G", "bfloat16", None),  # no vendor datasheet; not "NVIDIA A10"
        ("NVIDIA L40S", "bfloat16", None),  # not "NVIDIA L4"
        ("TPU v4 lite", "bfloat16", None),  # v4i: not "TPU v4"
        ("cpu", "bfloat16", None),
        ("TPU v4", "int8", None),
    ],
)
def test_peak_table(kind, dtype, expected):
    got = peak_flops.peak_flops_per_device(kind, dtype)
    assert got == (None if expected is None else pytest.approx(expected, rel=1e-12))


def test_resolve_peak_flops_sources(monkeypatch):
    assert peak_flops.resolve_peak_flops(override=1.5e14) == (1.5e14, "config")
    with pytest.raises(ValueError, match="override"):
        peak_flops.resolve_peak_flops(override=-1.0)
    tpu = types.SimpleNamespace(device_kind="TPU v4")
    monkeypatch.setattr(peak_flops.jax, "devices", lambda: [tpu])
    assert peak_flops.resolve_peak_flops() == (275e12, "table: TPU v4")
    cpu = types.SimpleNamespace(device_kind="cpu")
    monkeypatch.setattr(peak_flops.jax, "devices", lambda: [cpu])
    monkeypatch.setattr(peak_flops, "measure_peak_flops", lambda dtype: 123.0)
    assert peak_flops.resolve_peak_flops(dtype="float32") == (123.0, "measured matmul (float32)")


def test_mfu_hand_computed():
    # 6e9 FLOPs/token * 1e5 tokens/s = 6e14 FLOP/s over 8 devices * 1e14 = 0.75.
    assert metrics.mfu(6e9, 1e5, 1e14, 8) == pytest.approx(0.75)
    assert metrics.mfu(6e9, 1e5, 0.0, 8) == 0.0


def test_throughput_windows_hand_computed(monkeypatch):
    clock = iter([100.0, 102.0, 106.0, 106.0])
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    meter = Throughput(flops_per_token=1e9, peak_flops_per_device=1e13, num_devices=4)
    with pytest.raises(RuntimeError, match="start"):
        meter.rates(1, tokens=1, sequences=1)
    meter.start(10)  # t = 100
    # 20 steps, 320 sequences of 128 tokens in 2 s.
    first = meter.rates(30, tokens=40960, sequences=320)  # t = 102
    assert first == pytest.approx(
        {
            "steps_per_s": 10.0,
            "sequences_per_s": 160.0,
            "tokens_per_s": 20480.0,
            "mfu": 1e9 * 20480 / (1e13 * 4),
        }
    )  # 0.512
    # The window restarted at step 30, t = 102: 10 steps in 4 s.
    second = meter.rates(40, tokens=8192, sequences=64)  # t = 106
    assert second == pytest.approx(
        {"steps_per_s": 2.5, "sequences_per_s": 16.0, "tokens_per_s": 2048.0, "mfu": 0.0512}
    )
    # An empty window (no time passed) gives zeros, not a division by zero.
    assert meter.rates(40, tokens=0, sequences=0) == {
        "steps_per_s": 0.0,
        "sequences_per_s": 0.0,
        "tokens_per_s": 0.0,
        "mfu": 0.0,
    }


def test_throughput_unknown_peak_gives_zero_mfu(monkeypatch):
    clock = iter([0.0, 1.0])
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    meter = Throughput(flops_per_token=1e9, peak_flops_per_device=0.0, num_devices=1)
    meter.start(0)
    rates = meter.rates(1, tokens=100, sequences=1)
    assert rates["tokens_per_s"] == 100.0 and rates["mfu"] == 0.0


def test_measure_peak_flops_is_positive_and_finite():
    flops = peak_flops.measure_peak_flops("float32", n=64, seconds=0.05)
    # A unit slip (no factor 2 n^3, seconds vs ms) would land far outside CPU range.
    assert math.isfinite(flops) and 1e6 < flops < 1e15


def test_mfu_never_above_one_the_peak_rises_to_the_achieved_rate(monkeypatch, capsys):
    """A peak measured while other work ran is too low: the step then "beats" it. The
    reported MFU stays at 1 for that window, later windows are against the achieved
    rate, and one warning says what happened with both figures."""
    clock = iter([0.0, 1.0, 2.0, 3.0])
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    # 1e9 FLOPs/token at 2.5e4 tokens/s over 2 devices: 1.25e13 FLOP/s per device,
    # against a peak of 1e13: mfu would be 1.25.
    meter = Throughput(
        flops_per_token=1e9,
        peak_flops_per_device=1e13,
        num_devices=2,
        peak_source="measured matmul (float32)",
    )
    meter.start(0)
    first = meter.rates(10, tokens=25_000, sequences=100)
    assert first["tokens_per_s"] == 25_000.0 and first["mfu"] == 1.0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: "), err
    assert "1.250e+13" in err[0] and "1.000e+13 (measured matmul (float32))" in err[0]
    assert "mfu=1.25" in err[0]
    # The next window runs at 80% of the achieved rate: 0.8 against the new peak.
    second = meter.rates(20, tokens=20_000, sequences=80)
    assert second["mfu"] == pytest.approx(1e9 * 20_000 / (1.25e13 * 2))  # 0.8
    # The same rate again: 1, without a second warning.
    assert meter.rates(30, tokens=25_000, sequences=100)["mfu"] == pytest.approx(1.0)
    assert capsys.readouterr().err == ""


def test_measured_peak_is_the_fastest_batch_not_the_mean(monkeypatch):
    """Other work slowing some of the timed batches must not lower the peak: the
    figure is 2 n^3 calls / seconds of the fastest batch."""
    n, calls = 64, []
    # The clock at the start and after each batch: 1 call in 0.01 s, then 2 calls in
    # 0.5 s and 3 in 0.5 s (the machine got busy); 1.01 s >= 1 s ends the timing.
    clock = iter([0.0, 0.01, 0.51, 1.01])
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    real_jit = metrics.jax.jit

    def counting_jit(fn):
        jitted = real_jit(fn)

        def call(*args):
            calls.append(1)
            return jitted(*args)

        return call

    monkeypatch.setattr(metrics.jax, "jit", counting_jit)
    flops = peak_flops.measure_peak_flops("float32", n=n, seconds=1.0)
    assert len(calls) == 1 + 1 + 2 + 3  # the warm-up, then the three timed batches
    assert flops == pytest.approx(2 * n**3 / 0.01)  # the mean would be 2 n^3 * 6 / 1.01
