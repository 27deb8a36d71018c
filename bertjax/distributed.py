"""Multi-host start-up: one call, before any JAX array exists, joins this process to its peers.

Every host of a pod or cluster runs the same command; `initialize` decides how they meet:

  explicit   --coordinator_address (with --num_processes, --process_id) was given: any cluster.
  cloud_tpu  a multi-host Cloud TPU VM slice, or several slices (Multislice): JAX finds the
             coordinator, process count and id itself (environment, then the GCE metadata server).
  slurm      a Slurm job step with more than one task: JAX reads the SLURM_* variables.
  single     anything else: one process, nothing to initialise.

The decision is `detect`, a pure function of an environment mapping, so it is testable without
a cluster; it asks for exactly what JAX's own detectors (jax/_src/clusters/slurm_cluster.py and
cloud_tpu_cluster.py) read, so that "auto-detected" here means JAX will detect it too.

    python -m bertjax train --config=configs/pretrain.py:bert_base --workdir=gs://bucket/run
    python -m bertjax train ... --coordinator_address=10.0.0.1:1234 --num_processes=4 \\
        --process_id=$RANK                                  # any other cluster
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Mapping

from absl import flags, logging

COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    "",
    "HOST:PORT of process 0's coordinator service. Set it (with "
    "--num_processes and --process_id) on clusters that Cloud TPU / Slurm detection misses.",
)
NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", 0, "Total processes in the run; required with --coordinator_address."
)
PROCESS_ID = flags.DEFINE_integer(
    "process_id",
    -1,
    "This process's rank in [0, --num_processes); required with --coordinator_address.",
)
LOCAL_DEVICE_IDS = flags.DEFINE_string(
    "local_device_ids",
    "",
    "Comma-separated local device ids this process drives (GPU), e.g. "
    "0,1,2,3 for one process per 4-GPU node under Slurm; default: JAX's choice.",
)
CPU_COLLECTIVES = flags.DEFINE_string(
    "cpu_collectives",
    "",
    "Cross-process collectives for multi-process runs on CPU devices: "
    "gloo or mpi; empty keeps JAX's default (gloo in the pinned jax).",
)

MODES = ("explicit", "cloud_tpu", "slurm", "single")

# JAX's SlurmCluster.is_env_present needs all of these; SLURM_STEP_NODELIST exists only
# inside an srun step, so a bare batch script (one shell, not the tasks) stays single.
SLURM_KEYS = (
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
)
# The TPU metadata server; JAX honours the same override.
_METADATA = "http://{host}/computeMetadata/v1/instance/attributes/{key}"
_METADATA_TIMEOUT_S = 10.0


def _count(value: str | None) -> int:
    """An integer environment value, 0 when unset or malformed (then JAX would not use it)."""
    try:
        return int(str(value).strip().strip("'\""))
    except ValueError:
        return 0


def _tpu_processes(environ: Mapping[str, str]) -> int:
    """Processes in one TPU slice as JAX's GkeTpuCluster counts them (0 when not a TPU env)."""
    # JAX prefers TPU_PROCESS_ADDRESSES (several processes per host) when it is set at all.
    key = "TPU_PROCESS_ADDRESSES" if "TPU_PROCESS_ADDRESSES" in environ else "TPU_WORKER_HOSTNAMES"
    return len([host for host in environ.get(key, "").split(",") if host.strip()])


def detect(environ: Mapping[str, str], coordinator_address: str = "") -> str:
    """How this process should join the run: one of MODES, without side effects.

    Args:
      environ: environment variables (os.environ, plus what `tpu_metadata_environ` read).
      coordinator_address: the --coordinator_address flag; when set it wins over any cluster.
    Returns:
      "explicit", "cloud_tpu", "slurm" or "single".
    """
    if coordinator_address:
        return "explicit"
    # JAX tries Slurm before Cloud TPU; a present Slurm step decides alone, as it does there.
    if all(key in environ for key in SLURM_KEYS):
        return "slurm" if _count(environ["SLURM_NTASKS"]) > 1 else "single"
    slices = _count(environ.get("MEGASCALE_NUM_SLICES"))
    if _tpu_processes(environ) > 1 or slices > 1:
        return "cloud_tpu"
    return "single"


def parse_tpu_metadata(endpoints: str, tpu_env: str) -> dict[str, str]:
    """The detection keys hidden in a GCE TPU VM's metadata, as environment variables.

    Args:
      endpoints: the `worker-network-endpoints` attribute: `host,host` or, in the older
        format, `name:id:ip,name:id:ip` (one entry per worker of the slice).
      tpu_env: the `tpu-env` attribute, lines of `KEY: 'value'` (MEGASCALE_* for Multislice).
    Returns:
      TPU_WORKER_HOSTNAMES and MEGASCALE_NUM_SLICES where present, for `detect`.
    """
    out: dict[str, str] = {}
    hosts = [entry.split(":")[-1].strip() for entry in endpoints.split(",") if entry.strip()]
    if hosts:
        out["TPU_WORKER_HOSTNAMES"] = ",".join(hosts)
    for line in tpu_env.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "MEGASCALE_NUM_SLICES":
            out["MEGASCALE_NUM_SLICES"] = value.strip().strip("'\"")
    return out


def _on_cloud_tpu_vm() -> bool:
    """True when JAX found TPU chips and libtpu at import and may ask the metadata server."""
    if "TPU_SKIP_MDS_QUERY" in os.environ:  # JAX's own switch: no metadata server here
        return False
    try:
        from jax._src import cloud_tpu_init  # set by `import jax`; no public equivalent
    except ImportError:
        return False
    return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def _metadata(key: str) -> str:
    """One instance attribute from the GCE metadata server, "" when it cannot be read."""
    host = os.environ.get("GCE_METADATA_IP", "metadata.google.internal")
    request = urllib.request.Request(
        _METADATA.format(host=host, key=key), headers={"Metadata-Flavor": "Google"}
    )
    try:
        with urllib.request.urlopen(request, timeout=_METADATA_TIMEOUT_S) as response:
            return response.read().decode("utf-8", "replace")
    except (OSError, ValueError) as e:  # URLError and timeouts are OSErrors
        logging.warning("GCE metadata %r unreadable (%s); assuming one TPU host", key, e)
        return ""


def tpu_metadata_environ() -> dict[str, str]:
    """Detection keys of a TPU VM created with gcloud, whose environment does not hold them.

    Only for `detect`: never written to os.environ, where JAX's GKE detector would take
    TPU_WORKER_HOSTNAMES as its own and then miss TPU_WORKER_ID.
    """
    if not _on_cloud_tpu_vm():
        return {}
    return parse_tpu_metadata(_metadata("worker-network-endpoints"), _metadata("tpu-env"))


def parse_device_ids(text: str) -> list[int] | None:
    """`"0,1,2"` -> [0, 1, 2]; "" -> None (JAX's default); anything else a one-line error."""
    if not text.strip():
        return None
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        ids = []
    if not ids or min(ids) < 0 or len(set(ids)) != len(ids):
        raise ValueError(
            f"--local_device_ids={text!r} is not a comma-separated list of "
            "distinct non-negative integers"
        )
    return ids


def _check_explicit(coordinator_address: str, num_processes: int, process_id: int) -> None:
    """Fails fast, naming the flag, on what jax.distributed.initialize would reject late."""
    if not coordinator_address:
        for name, value, unset in (
            ("num_processes", num_processes, 0),
            ("process_id", process_id, -1),
        ):
            if value != unset:
                raise ValueError(
                    f"--{name} is used only with --coordinator_address: set "
                    f"that too, or drop --{name} to auto-detect the cluster"
                )
        return
    host, _, port = coordinator_address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--coordinator_address={coordinator_address!r} is not HOST:PORT")
    if num_processes == 0:
        raise ValueError("--num_processes is required with --coordinator_address")
    if process_id == -1:
        raise ValueError("--process_id is required with --coordinator_address")
    if num_processes < 1:
        raise ValueError(f"--num_processes={num_processes} must be at least 1")
    if not 0 <= process_id < num_processes:
        raise ValueError(
            f"--process_id={process_id} is outside [0, {num_processes}) "
            f"for --num_processes={num_processes}"
        )


def initialize(
    coordinator_address: str = "",
    num_processes: int = 0,
    process_id: int = -1,
    local_device_ids: str = "",
    cpu_collectives: str = "",
) -> str:
    """Joins this process to a multi-process run if there is one; call before any JAX array.

    Args:
      coordinator_address: HOST:PORT of process 0; "" to auto-detect (Cloud TPU, Slurm).
      num_processes: total processes; required with coordinator_address (0 = unset).
      process_id: this process's rank; required with coordinator_address (-1 = unset).
      local_device_ids: comma-separated device ids for this process ("" = JAX's default:
        all local devices, or one GPU per Slurm task).
      cpu_collectives: "gloo" or "mpi" for multi-process CPU runs; "" leaves JAX's default
        (gloo in jax 0.10; naming it keeps a run independent of that default).
    Returns:
      The mode used: "explicit", "cloud_tpu", "slurm", "single", or "already" when
      jax.distributed was initialised before (nothing is done twice).
    Raises:
      ValueError: a bad or missing flag (named in the one-line message), before JAX is called.
    """
    import jax  # here: `train --help` imports this module for its flags and must not load JAX

    _check_explicit(coordinator_address, num_processes, process_id)
    device_ids = parse_device_ids(local_device_ids)
    if jax.distributed.is_initialized():
        return "already"
    if cpu_collectives:
        # Read when the CPU client is built, which initialize() below triggers: set it first.
        try:
            jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
        except ValueError as e:
            raise ValueError(f"--cpu_collectives={cpu_collectives!r}: {e}") from e
    mode = detect(os.environ, coordinator_address)
    if mode == "single":
        # A gcloud-created TPU VM keeps its worker list in metadata, not in the environment.
        mode = detect({**tpu_metadata_environ(), **os.environ})
    if mode == "single":
        if device_ids is not None:
            raise ValueError(
                "--local_device_ids applies to multi-process runs; on one process "
                "choose devices with CUDA_VISIBLE_DEVICES instead"
            )
        logging.info("jax.distributed: single process")
        return mode
    if mode == "explicit":
        logging.info(
            "jax.distributed: process %d of %d, coordinator %s",
            process_id,
            num_processes,
            coordinator_address,
        )
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            local_device_ids=device_ids,
        )
        return mode
    logging.info("jax.distributed: %s detected; JAX fills in coordinator and ranks", mode)
    try:
        if device_ids is None:
            jax.distributed.initialize()
        else:
            jax.distributed.initialize(local_device_ids=device_ids)
    except ValueError as e:  # JAX's detector disagreed with ours: say what to do instead
        why = " ".join(str(e).split())  # one line, whatever JAX wrote
        raise ValueError(
            f"{mode} environment found but jax.distributed.initialize() could not "
            f"configure it ({why}); pass --coordinator_address, --num_processes "
            "and --process_id"
        ) from e
    return mode


def initialize_from_flags() -> str:
    """`initialize` with this module's absl flags (parsed by `python -m bertjax`)."""
    return initialize(
        COORDINATOR.value,
        NUM_PROCESSES.value,
        PROCESS_ID.value,
        LOCAL_DEVICE_IDS.value,
        CPU_COLLECTIVES.value,
    )
