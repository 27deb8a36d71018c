#!/usr/bin/env bash
# Pretrain on this machine: one process on all local devices, or a CPU rehearsal of a
# multi-host run with several processes on 127.0.0.1.
#
# Usage:
#   launch/local.sh PRESET WORKDIR [--config.KEY=VALUE | --flag=VALUE ...]
#
# Examples:
#   launch/local.sh bert_tiny,runlocal /tmp/bert_tiny --config.data.dir=/tmp/demo_data
#   launch/local.sh bert_base gs://my-bucket/bert_base --config.data.dir=gs://my-bucket/data
#   CPU_DEVICES=8 launch/local.sh bert_tiny,runlocal /tmp/mesh_test \
#       --config.data.dir=/tmp/demo_data --config.mesh.fsdp=2    # 8 simulated CPU devices
#   PROCESSES=2 CPU_DEVICES=4 launch/local.sh bert_tiny,runlocal /tmp/two_hosts \
#       --config.data.dir=/tmp/demo_data                          # 2 "hosts" x 4 devices
#
# Arguments:
#   PRESET     the part after the colon of configs/pretrain.py:PRESET, e.g. bert_base or
#              bert_tiny,runlocal (see the docstring of configs/pretrain.py for the list);
#              TEACHER_to_STUDENT[,runlocal] selects configs/distill.py instead; a config
#              file FILE.py[:ARG] is used as is (the runs `bertjax sweep --print_commands`
#              prints, e.g. configs/ablations/masking.py:cpu).
#   WORKDIR    checkpoints and metrics: a local path or gs://... Re-running the same command
#              resumes from the last complete checkpoint there.
#   the rest   passed unchanged to `python -m bertjax train`.
#
# Environment variables (all optional):
#   PYTHON       interpreter; default: .venv/bin/python in the repository if present, else python3.
#   CPU_DEVICES  run on the CPU with this many simulated devices (XLA's
#                --xla_force_host_platform_device_count); unset: JAX picks the accelerator.
#   PROCESSES    processes to start on 127.0.0.1 (default 1). Above 1 this is a CPU rehearsal
#                of a multi-host run: each process gets --coordinator_address,
#                --num_processes, --process_id and --cpu_collectives=gloo, exactly as a cluster
#                would give them; process 0 prints here, the others log to LOG_DIR.
#   PORT         coordinator port for PROCESSES > 1; default: a free port.
#   LOG_DIR      where processes 1.. write process_N.log; default: a new directory under /tmp.
#
# SIGTERM to this script is passed to every process (Ctrl-C reaches them directly, as SIGINT):
# the training command saves the same step on every process and exits 0, so running the same
# command again resumes.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
preset=$1
# FILE.py[:ARG] is a config file as --config= takes it (a sweep's run: `bertjax sweep
# --print_commands`); TEACHER_to_STUDENT a distillation config; else a pretraining preset.
if [[ "$preset" == *.py || "$preset" == *.py:* ]]; then config=$preset
elif [[ "$preset" == *_to_* ]]; then config=configs/distill.py:$preset
else config=configs/pretrain.py:$preset; fi
workdir=$2
shift 2

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
processes=${PROCESSES:-1}

if [[ -n "${CPU_DEVICES:-}" || "$processes" -gt 1 ]]; then
  export JAX_PLATFORMS=cpu
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${CPU_DEVICES:-1}"
fi

train=("$PYTHON" -m bertjax train --config="$config" --workdir="$workdir")

if [[ "$processes" -le 1 ]]; then
  # exec: signals reach Python directly, and its exit status is ours.
  exec "${train[@]}" "$@"
fi

# --- PROCESSES > 1: a multi-host rehearsal on this machine ---------------------------------
port=${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
log_dir=${LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/bertjax-local.XXXXXX")}
mkdir -p "$log_dir"
echo "local.sh: $processes processes, coordinator 127.0.0.1:$port, logs of 1.. in $log_dir" >&2

pids=()
# shellcheck disable=SC2317  # reached through the trap
forward() {  # SIGTERM/SIGINT: every process gets SIGTERM once, like the hosts of a pod
  trap '' TERM INT
  echo "local.sh: forwarding SIGTERM to ${pids[*]}" >&2
  kill -TERM "${pids[@]}" 2>/dev/null || true
}
trap forward TERM INT

for ((i = 0; i < processes; i++)); do
  flags=(--coordinator_address="127.0.0.1:$port" --num_processes="$processes"
         --process_id="$i" --cpu_collectives=gloo)
  if [[ $i -eq 0 ]]; then
    "${train[@]}" "${flags[@]}" "$@" &
  else
    "${train[@]}" "${flags[@]}" "$@" >"$log_dir/process_$i.log" 2>&1 &
  fi
  pids+=("$!")
done

status=0
for pid in "${pids[@]}"; do
  # A trapped signal interrupts `wait` while the process still runs: wait until it is gone,
  # then once more for its saved exit status (bash keeps it).
  while kill -0 "$pid" 2>/dev/null; do wait "$pid" || true; done
  code=0
  wait "$pid" || code=$?
  if [[ $code -ne 0 && $status -eq 0 ]]; then status=$code; fi
done
exit "$status"
