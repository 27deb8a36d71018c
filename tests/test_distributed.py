"""Multi-host start-up (bertjax.distributed): detection, flag checks, and a real 2-process run.

Detection and argument checks run in this process with jax.distributed.initialize replaced by
a recorder. The real run starts this file twice as a script (`worker` mode), two processes on
127.0.0.1 with 2 CPU devices each and gloo collectives; each writes its findings to a JSON file
(not stdout, where Gloo's C++ logging interleaves) that the test asserts on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import clilib
import jax
import numpy as np
import pytest

from bertjax import distributed as dist

CLUSTER_PREFIXES = ("SLURM_", "TPU_", "MEGASCALE_", "JAX_COORDINATOR", "JAX_LOCAL_DEVICE")
SLURM_ONE_STEP = {
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_NODELIST": "gpu[001-002]",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
}
TPU_POD = {"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5", "TPU_WORKER_ID": "1"}


# --- detect: pure --------------------------------------------------------------------


@pytest.mark.parametrize(
    "environ,want",
    [
        ({}, "single"),
        ({"HOME": "/root", "PATH": "/usr/bin"}, "single"),
        # One TPU VM host (v4-8, v5litepod-8): its own name only.
        ({"TPU_WORKER_HOSTNAMES": "10.0.0.2", "TPU_WORKER_ID": "0"}, "single"),
        ({"TPU_WORKER_HOSTNAMES": "", "TPU_WORKER_ID": "0"}, "single"),
        (TPU_POD, "cloud_tpu"),
        # Several processes on one host count as processes, as in JAX (TPU_PROCESS_ADDRESSES wins).
        (
            {
                "TPU_PROCESS_ADDRESSES": "localhost:8476,localhost:8477",
                "TPU_WORKER_HOSTNAMES": "h0",
            },
            "cloud_tpu",
        ),
        ({"TPU_PROCESS_ADDRESSES": "localhost:8476", "TPU_WORKER_HOSTNAMES": "h0,h1"}, "single"),
        # Multislice: two single-host slices are still two processes.
        (
            {
                "TPU_WORKER_HOSTNAMES": "10.0.0.2",
                "MEGASCALE_NUM_SLICES": "2",
                "MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.2",
            },
            "cloud_tpu",
        ),
        ({"MEGASCALE_NUM_SLICES": "1"}, "single"),
        ({**SLURM_ONE_STEP, "SLURM_NTASKS": "1"}, "single"),
        ({**SLURM_ONE_STEP, "SLURM_NTASKS": "2"}, "slurm"),
        ({**SLURM_ONE_STEP, "SLURM_NTASKS": "16"}, "slurm"),
        # The batch shell of a 2-task job is no step: JAX would not detect it either.
        ({"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2", "SLURM_PROCID": "0"}, "single"),
        ({**SLURM_ONE_STEP, "SLURM_NTASKS": "two"}, "single"),
    ],
)
def test_detect_from_the_environment(environ, want):
    assert dist.detect(environ) == want
    assert dist.detect(environ, "") == want


@pytest.mark.parametrize("environ", [{}, TPU_POD, {**SLURM_ONE_STEP, "SLURM_NTASKS": "2"}])
def test_explicit_address_wins_over_the_environment(environ):
    assert dist.detect(environ, coordinator_address="10.0.0.1:1234") == "explicit"


def test_tpu_vm_metadata_both_endpoint_formats_and_multislice():
    tpu_env = "ACCELERATOR_TYPE: 'v4-32'\nMEGASCALE_NUM_SLICES: '2'\nWORKER_ID: '0'\n"
    new = dist.parse_tpu_metadata("t1v-w-0,t1v-w-1", tpu_env)
    assert new == {"TPU_WORKER_HOSTNAMES": "t1v-w-0,t1v-w-1", "MEGASCALE_NUM_SLICES": "2"}
    old = dist.parse_tpu_metadata("w0:0:10.0.0.2,w1:1:10.0.0.3", "")
    assert old == {"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"}
    assert dist.detect(old) == "cloud_tpu"
    assert dist.detect(dist.parse_tpu_metadata("w0:0:10.0.0.2", "WORKER_ID: '0'")) == "single"
    assert dist.parse_tpu_metadata("", "") == {}


@pytest.mark.parametrize(
    "text,want", [("", None), ("  ", None), ("0", [0]), ("0,1,2,3", [0, 1, 2, 3]), ("3, 1", [3, 1])]
)
def test_parse_device_ids(text, want):
    assert dist.parse_device_ids(text) == want


@pytest.mark.parametrize("text", ["a", "0,,1", "0,0", "-1", "0;1", ","])
def test_parse_device_ids_rejects_with_the_flag_name(text):
    with pytest.raises(ValueError, match=f"--local_device_ids={text!r}"):
        dist.parse_device_ids(text)


# --- initialize: decisions, with JAX's side replaced by recorders ---------------------


@pytest.fixture
def calls(monkeypatch) -> list:
    """Records jax.distributed.initialize and the CPU-collectives update, in call order."""
    for key in list(os.environ):
        if key.startswith(CLUSTER_PREFIXES):
            monkeypatch.delenv(key)
    log: list = []
    monkeypatch.setattr(
        jax.distributed,
        "initialize",
        lambda *args, **kwargs: log.append(("initialize", args, kwargs)),
    )
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.config, "update", lambda name, value: log.append((name, value)))
    monkeypatch.setattr(dist, "_on_cloud_tpu_vm", lambda: False)
    return log


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (
            dict(coordinator_address="10.0.0.1:1234", process_id=0),
            "--num_processes is required with --coordinator_address",
        ),
        (
            dict(coordinator_address="10.0.0.1:1234", num_processes=2),
            "--process_id is required with --coordinator_address",
        ),
        (
            dict(coordinator_address="10.0.0.1:1234", num_processes=2, process_id=2),
            r"--process_id=2 is outside \[0, 2\)",
        ),
        (
            dict(coordinator_address="10.0.0.1:1234", num_processes=2, process_id=-5),
            r"--process_id=-5 is outside \[0, 2\)",
        ),
        (
            dict(coordinator_address="10.0.0.1:1234", num_processes=-2, process_id=0),
            "--num_processes=-2 must be at least 1",
        ),
        (
            dict(coordinator_address="10.0.0.1", num_processes=2, process_id=0),
            "--coordinator_address='10.0.0.1' is not HOST:PORT",
        ),
        (dict(num_processes=2), "--num_processes is used only with --coordinator_address"),
        (dict(process_id=1), "--process_id is used only with --coordinator_address"),
        (
            dict(
                coordinator_address="10.0.0.1:1234",
                num_processes=2,
                process_id=0,
                local_device_ids="0,x",
            ),
            "--local_device_ids='0,x'",
        ),
        (dict(local_device_ids="0,1"), "--local_device_ids applies to multi-process runs"),
    ],
)
def test_bad_arguments_fail_before_jax_is_called(calls, kwargs, needle):
    with pytest.raises(ValueError, match=needle) as err:
        dist.initialize(**kwargs)
    assert "\n" not in str(err.value)
    assert not [c for c in calls if c[0] == "initialize"]


def test_unknown_cpu_collectives_named_by_jax_enum_check(monkeypatch):
    """The real jax.config.update rejects the value; nothing is set, nothing initialised."""
    called = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: called.append(k))
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    before = jax.config.jax_cpu_collectives_implementation
    with pytest.raises(ValueError, match="--cpu_collectives='nccl'.*gloo") as err:
        dist.initialize(cpu_collectives="nccl")
    assert "\n" not in str(err.value)
    assert jax.config.jax_cpu_collectives_implementation == before
    assert called == []


def test_explicit_passes_every_argument_after_cpu_collectives(calls):
    mode = dist.initialize("10.0.0.1:1234", 4, 3, "0,1", cpu_collectives="gloo")
    assert mode == "explicit"
    assert calls == [
        ("jax_cpu_collectives_implementation", "gloo"),
        (
            "initialize",
            (),
            dict(
                coordinator_address="10.0.0.1:1234",
                num_processes=4,
                process_id=3,
                local_device_ids=[0, 1],
            ),
        ),
    ]
    calls.clear()
    assert dist.initialize("host:99", 1, 0) == "explicit"
    assert calls == [
        (
            "initialize",
            (),
            dict(
                coordinator_address="host:99", num_processes=1, process_id=0, local_device_ids=None
            ),
        )
    ]


@pytest.mark.parametrize(
    "environ,mode",
    [
        (TPU_POD, "cloud_tpu"),
        ({**SLURM_ONE_STEP, "SLURM_NTASKS": "2"}, "slurm"),
    ],
)
def test_auto_detected_clusters_leave_the_rest_to_jax(calls, monkeypatch, environ, mode):
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    assert dist.initialize() == mode
    assert calls == [("initialize", (), {})]
    calls.clear()
    # One process per node on a GPU cluster: the node's GPUs, passed through.
    assert dist.initialize(local_device_ids="0,1,2,3") == mode
    assert calls == [("initialize", (), dict(local_device_ids=[0, 1, 2, 3]))]


def test_single_process_calls_nothing(calls, monkeypatch):
    monkeypatch.setenv("SLURM_NTASKS", "1")
    for key, value in SLURM_ONE_STEP.items():
        monkeypatch.setenv(key, value)
    assert dist.initialize() == "single"
    assert dist.initialize(cpu_collectives="gloo") == "single"
    assert calls == [("jax_cpu_collectives_implementation", "gloo")]


def test_gcloud_tpu_vm_is_found_through_metadata(calls, monkeypatch):
    """A gcloud-created pod slice has no TPU_* variables; its worker list is metadata."""
    asked = []
    metadata = {
        "worker-network-endpoints": "w0:0:10.0.0.2,w1:1:10.0.0.3",
        "tpu-env": "WORKER_ID: '1'\n",
    }
    monkeypatch.setattr(dist, "_on_cloud_tpu_vm", lambda: True)
    monkeypatch.setattr(dist, "_metadata", lambda key: asked.append(key) or metadata[key])
    assert dist.initialize() == "cloud_tpu"
    assert calls == [("initialize", (), {})]
    assert "TPU_WORKER_HOSTNAMES" not in os.environ  # JAX's GKE detector must not see it
    # A one-host VM asks the same and stays single; off a TPU VM nothing is asked.
    metadata["worker-network-endpoints"] = "w0:0:10.0.0.2"
    assert dist.initialize() == "single"
    monkeypatch.setattr(dist, "_on_cloud_tpu_vm", lambda: False)
    assert dist.initialize() == "single"
    assert asked == ["worker-network-endpoints", "tpu-env"] * 2


def test_jax_rejecting_the_detected_cluster_names_the_flags(calls, monkeypatch):
    def refuse(**kwargs):
        raise ValueError("coordinator_address should be defined.\nSee the docs.")

    monkeypatch.setattr(jax.distributed, "initialize", refuse)
    for key, value in TPU_POD.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(
        ValueError, match="cloud_tpu environment found.*--coordinator_address"
    ) as err:
        dist.initialize()
    assert "\n" not in str(err.value)


def test_already_initialised_is_not_initialised_again(calls, monkeypatch):
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    assert dist.initialize("10.0.0.1:1234", 2, 0, cpu_collectives="gloo") == "already"
    assert dist.initialize() == "already"
    assert calls == []


def test_flags_are_defined_once_with_unset_defaults():
    from absl import flags

    want = {
        "coordinator_address": "",
        "num_processes": 0,
        "process_id": -1,
        "local_device_ids": "",
        "cpu_collectives": "",
    }
    for name, default in want.items():
        assert flags.FLAGS[name].default == default
        assert flags.FLAGS.find_module_defining_flag(name) == "bertjax.distributed"


# --- a real run: two processes on 127.0.0.1 -------------------------------------------


def _worker(result: str, process_id: int, port: str) -> subprocess.Popen:
    """Runs this file as `python test_distributed.py worker RESULT_JSON --flags...`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLUSTER_PREFIXES)}
    flags = [
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={process_id}",
        "--cpu_collectives=gloo",
    ]
    return clilib.start(
        [sys.executable, os.path.abspath(__file__), "worker", result, *flags],
        env=env,
        devices=2,
        stderr=subprocess.STDOUT,
    )


def test_two_processes_on_localhost(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    paths = [tmp_path / f"{i}.json" for i in range(2)]
    procs = [_worker(str(path), i, port) for i, path in enumerate(paths)]
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, out[-3000:]
    finally:
        for proc in procs:  # a failed or hung peer would otherwise wait for its partner
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    rows = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    for i, path in enumerate(paths):
        got = json.loads(path.read_text())
        assert got["mode"] == "explicit"
        assert got["again"] == "already"
        assert (got["process_index"], got["process_count"]) == (i, 2)
        assert (got["local_device_count"], got["device_count"]) == (2, 4)
        assert got["local_rows"] == [4 * i, 4 * i + 2]  # the rows this process supplied
        assert got["total"] == 276.0 == float(rows.sum())  # 0 + 1 + ... + 23: both halves
        # Row order matters here: sum over rows r of r * (9r + 3), the row sum of row r.
        assert got["weighted"] == float((np.arange(8)[:, None] * rows).sum()) == 1344.0


def _one_of_two() -> dict:
    """A worker's side: join via the flags, build a global array, reduce over both processes."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mode = dist.initialize_from_flags()
    again = dist.initialize_from_flags()
    pid = jax.process_index()
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data"))
    rows = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    batch = jax.make_array_from_process_local_data(sharding, rows[4 * pid : 4 * pid + 4])
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    total = jax.jit(lambda x: x.sum(), out_shardings=replicated)(batch)
    weighted = jax.jit(
        lambda x: (x * np.arange(8, dtype=np.float32)[:, None]).sum(), out_shardings=replicated
    )(batch)
    return {
        "mode": mode,
        "again": again,
        "process_index": pid,
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "local_rows": sorted(shard.index[0].start for shard in batch.addressable_shards),
        "total": float(np.asarray(total.addressable_data(0))),
        "weighted": float(np.asarray(weighted.addressable_data(0))),
    }


if __name__ == "__main__":
    from absl import flags as absl_flags

    _, path, *flag_args = sys.argv[1:]
    absl_flags.FLAGS(["worker", *flag_args])
    findings = _one_of_two()
    with open(path, "w") as f:
        json.dump(findings, f)
