#!/usr/bin/env bash
# Pretrain on a Cloud TPU VM slice (single host or pod): create or reuse the TPU, put this
# repository on every worker, install the requirements with jax[tpu], and start the same
# training command on all workers at once.
#
# Usage:
#   TPU_NAME=NAME ZONE=ZONE [VARIABLE=VALUE ...] launch/tpu_vm.sh PRESET WORKDIR [overrides...]
#
# Examples:
#   TPU_NAME=bert-v4 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 \
#     launch/tpu_vm.sh bert_base gs://my-bucket/runs/bert_base \
#     --config.data.dir=gs://my-bucket/data/bert_base
#   TPU_NAME=bert-v5e ZONE=us-west4-a ACCELERATOR_TYPE=v5litepod-16 \
#     RUNTIME_VERSION=v2-alpha-tpuv5-lite PROVISIONING=spot QUEUED=1 DETACH=1 \
#     launch/tpu_vm.sh roberta_base gs://my-bucket/runs/roberta --config.data.dir=gs://...
#
# Arguments:
#   PRESET    the part after the colon of configs/pretrain.py:PRESET (e.g. bert_base);
#             TEACHER_to_STUDENT (e.g. bert_base_to_distilbert_base) selects configs/distill.py;
#             a config file FILE.py[:ARG] is used as is (`bertjax sweep --print_commands`).
#   WORKDIR   checkpoints and metrics. Use gs://... for a pod slice (every host writes its
#             shards of one checkpoint) and for spot/preemptible TPUs (a preempted VM's disk
#             is gone); a local path works only on a single-host slice such as v4-8.
#   the rest  passed unchanged to `python -m bertjax train` (e.g. --config.data.dir=gs://...).
#
# Environment variables:
#   TPU_NAME          (required) TPU VM node name; reused when it exists and is READY.
#   ZONE              (required) zone of the TPU, e.g. us-central2-b.
#   PROJECT           Google Cloud project; default: gcloud's configured project.
#   ACCELERATOR_TYPE  slice type when creating, e.g. v4-8, v4-32, v5litepod-16, v6e-64
#                     (default v4-8).
#   RUNTIME_VERSION   TPU VM software version when creating (default tpu-ubuntu2204-base, for
#                     v4; v5e: v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e).
#   PROVISIONING      on-demand (default), spot (--spot) or preemptible (--preemptible; not
#                     with QUEUED=1).
#   QUEUED            1: request the TPU through a queued resource (`gcloud compute tpus
#                     queued-resources create`) and wait until it is ACTIVE; 0 (default): create
#                     it directly with `gcloud compute tpus tpu-vm create`.
#   QUEUED_NAME       queued-resource name (default: TPU_NAME-qr).
#   RECREATE          1 (default): a PREEMPTED TPU (or a SUSPENDED/FAILED queued resource) is
#                     deleted and created again, so re-running this script after a preemption
#                     resumes the run; 0: stop with an error instead.
#   REPO_URL          git URL to clone on the workers (at GIT_REF); default: copy this working
#                     tree (uncommitted changes included; .git, .venv, workdir, out excluded) with scp.
#   GIT_REF           branch, tag or commit for REPO_URL (default main).
#   REMOTE_DIR        directory on each worker, relative to the home directory (default bertjax).
#   SKIP_SETUP        1: skip copying and installing (the workers already have them).
#   DETACH            1: start training under nohup and return; output goes to
#                     REMOTE_DIR/train.log on every worker. 0 (default): stream the output of all
#                     workers here (closing this terminal then stops the run).
#   DRY_RUN           1: print the gcloud commands instead of running them.
#
# The training command finds the pod by itself (bertjax.distributed: JAX reads the TPU VM's
# metadata), so no host list or rank is passed. When the TPU is preempted, every host receives
# SIGTERM, saves the same step to WORKDIR and exits 0; running this same command again
# recreates the TPU (RECREATE=1) and resumes from that checkpoint.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; }
if [[ $# -lt 2 ]]; then usage; exit 2; fi
preset=$1
# FILE.py[:ARG] is a config file as --config= takes it (a sweep's run: `bertjax sweep
# --print_commands`); TEACHER_to_STUDENT a distillation config; else a pretraining preset.
if [[ "$preset" == *.py || "$preset" == *.py:* ]]; then config=$preset
elif [[ "$preset" == *_to_* ]]; then config=configs/distill.py:$preset
else config=configs/pretrain.py:$preset; fi
workdir=$2
shift 2
: "${TPU_NAME:?set TPU_NAME (see launch/tpu_vm.sh usage)}"
: "${ZONE:?set ZONE (see launch/tpu_vm.sh usage)}"
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-8}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
PROVISIONING=${PROVISIONING:-on-demand}
QUEUED=${QUEUED:-0}
QUEUED_NAME=${QUEUED_NAME:-$TPU_NAME-qr}
RECREATE=${RECREATE:-1}
GIT_REF=${GIT_REF:-main}
REMOTE_DIR=${REMOTE_DIR:-bertjax}
DETACH=${DETACH:-0}
DRY_RUN=${DRY_RUN:-0}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rdir=$(printf '%q' "$REMOTE_DIR")  # quoted once for the remote shell
where=(--zone="$ZONE")
if [[ -n "${PROJECT:-}" ]]; then where+=(--project="$PROJECT"); fi

die() { echo "tpu_vm.sh: $*" >&2; exit 1; }
say() { echo "tpu_vm.sh: $*" >&2; }
run() {  # a gcloud (or other) command; printed instead under DRY_RUN=1
  if [[ "$DRY_RUN" == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}

case "$PROVISIONING" in
  on-demand) provisioning=() ;;
  spot) provisioning=(--spot) ;;
  preemptible)
    [[ "$QUEUED" == 1 ]] && die "PROVISIONING=preemptible needs QUEUED=0 (queued resources offer spot)"
    provisioning=(--preemptible) ;;
  *) die "PROVISIONING=$PROVISIONING is not on-demand, spot or preemptible" ;;
esac
if [[ "$workdir" != gs://* ]]; then
  say "warning: WORKDIR=$workdir is local to each worker; a pod slice or a preemptible TPU needs gs://"
fi

# --- 1. the TPU: reuse, recreate after preemption, or create -----------------------------
tpu_state() {  # READY, CREATING, PREEMPTED, ...; empty when the node does not exist
  [[ "$DRY_RUN" == 1 ]] && return 0
  gcloud compute tpus tpu-vm describe "$TPU_NAME" "${where[@]}" --format='value(state)' \
    2>/dev/null || true
}
queued_state() {  # WAITING_FOR_RESOURCES, PROVISIONING, ACTIVE, FAILED, SUSPENDED, ...
  [[ "$DRY_RUN" == 1 ]] && return 0
  gcloud compute tpus queued-resources describe "$QUEUED_NAME" "${where[@]}" \
    --format='value(state.state)' 2>/dev/null || true
}

create_tpu() {
  if [[ "$QUEUED" == 1 ]]; then
    say "requesting $ACCELERATOR_TYPE as queued resource $QUEUED_NAME"
    run gcloud compute tpus queued-resources create "$QUEUED_NAME" "${where[@]}" \
      --node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
      --runtime-version="$RUNTIME_VERSION" "${provisioning[@]}"
    [[ "$DRY_RUN" == 1 ]] && return 0
    while :; do
      state=$(queued_state)
      case "$state" in
        ACTIVE) break ;;
        FAILED|SUSPENDED|SUSPENDING) die "queued resource $QUEUED_NAME is $state" ;;
        *) say "queued resource $QUEUED_NAME: ${state:-not visible yet}; waiting"; sleep 60 ;;
      esac
    done
  else
    say "creating TPU VM $TPU_NAME ($ACCELERATOR_TYPE, $PROVISIONING)"
    run gcloud compute tpus tpu-vm create "$TPU_NAME" "${where[@]}" \
      --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${provisioning[@]}"
  fi
}

delete_tpu() {
  [[ "$RECREATE" == 1 ]] || die "TPU $TPU_NAME is $1; delete it or set RECREATE=1"
  say "TPU $TPU_NAME is $1: deleting it to create it again"
  if [[ "$QUEUED" == 1 ]]; then
    run gcloud compute tpus queued-resources delete "$QUEUED_NAME" "${where[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${where[@]}" --quiet
  fi
}

if [[ "$QUEUED" == 1 ]]; then
  state=$(queued_state)
  case "$state" in
    "") create_tpu ;;
    ACTIVE) say "reusing queued resource $QUEUED_NAME" ;;
    FAILED|SUSPENDED) delete_tpu "$state"; create_tpu ;;
    *) die "queued resource $QUEUED_NAME is $state; wait for ACTIVE and run again" ;;
  esac
else
  state=$(tpu_state)
  case "$state" in
    "") create_tpu ;;
    READY) say "reusing TPU VM $TPU_NAME" ;;
    PREEMPTED|TERMINATED) delete_tpu "$state"; create_tpu ;;
    *) die "TPU VM $TPU_NAME is $state; wait for READY and run again" ;;
  esac
fi

ssh_all() {  # one command on every worker at once
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${where[@]}" --worker=all --command="$1"
}

# --- 2. code and requirements on every worker ---------------------------------------------
jax_version=$(sed -n 's/^jax==\([^ #]*\).*/\1/p' "$repo/requirements.txt")
[[ -n "$jax_version" ]] || die "no jax==VERSION pin in requirements.txt"
if [[ "${SKIP_SETUP:-0}" != 1 ]]; then
  if [[ -n "${REPO_URL:-}" ]]; then
    say "cloning $REPO_URL@$GIT_REF on every worker"
    ssh_all "set -e; if [ ! -d $rdir/.git ]; then git clone $(printf '%q' "$REPO_URL") $rdir; fi
cd $rdir && git fetch --quiet origin && git checkout --quiet $(printf '%q' "$GIT_REF") \
  && (git pull --quiet --ff-only 2>/dev/null || true)"
  else
    say "copying $repo to every worker"
    archive=$(mktemp "${TMPDIR:-/tmp}/bertjax.XXXXXX.tar.gz")
    trap 'rm -f "$archive"' EXIT
    tar -C "$repo" --exclude=./.git --exclude=./.venv --exclude=__pycache__ \
      --exclude=.pytest_cache --exclude=.ruff_cache --exclude=./workdir --exclude=./out \
      --exclude=./build --exclude=./dist -czf "$archive" .
    run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:bertjax.tar.gz" "${where[@]}" \
      --worker=all
    ssh_all "set -e; mkdir -p $rdir && tar -xzf bertjax.tar.gz -C $rdir && rm bertjax.tar.gz"
  fi
  say "installing requirements with jax[tpu]==$jax_version on every worker"
  # The project needs Python >= 3.11; older images get one through uv.
  ssh_all "set -e; cd $rdir
if [ ! -x .venv/bin/python ]; then
  if python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then python3 -m venv .venv
  else python3 -m pip install --user --quiet uv && ~/.local/bin/uv venv --seed --python 3.11 .venv
  fi
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt 'jax[tpu]==$jax_version'"
fi

# --- 3. the same training command on every worker ----------------------------------------
train=$(printf '%q ' .venv/bin/python -m bertjax train --config="$config" \
  --workdir="$workdir" "$@")
if [[ "$DETACH" == 1 ]]; then
  say "starting training on every worker; output in ~/$REMOTE_DIR/train.log there"
  ssh_all "cd $rdir && nohup $train >train.log 2>&1 </dev/null &"
else
  say "training on every worker (Ctrl-C here stops the ssh sessions, not a clean save)"
  ssh_all "cd $rdir && $train"
fi
