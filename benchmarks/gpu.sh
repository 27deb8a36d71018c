#!/usr/bin/env bash
# GPU figures in one run: `bench train --vs_torch` for BERT-Base at 128 and BERT-Large at
# 512 in bfloat16 on one NVIDIA GPU (ours: cuDNN flash attention, chosen by
# model.attention=auto once attention dropout is off; the reference: transformers with
# bf16 autocast, SDPA and torch.compile). Targets (the accelerators issue): Base s128
# >= 50% MFU, Large s512 >= 60% MFU, >= 1.5x the reference's tokens/s.
#
#   bash benchmarks/gpu.sh [OUT_DIR]        # on the GPU machine
#   GPU_SH_DRY_RUN=1 bash benchmarks/gpu.sh  # here, on a CPU: tiny shapes, same commands
#
# The GPU machine has jax with CUDA, flax, optax, orbax, torch and transformers but no
# ml-collections (and no TensorFlow, which this path never imports): put its wheel in
# .whl/ beside the repo first (.whl/ is git-ignored; the device tool carries it):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp -d .whl ml-collections==1.1.0
# Every figure goes to OUT_DIR/*.txt (default $OUT, else benchmarks/gpu_out) and is
# recorded by hand in benchmarks/RESULTS.md with the device, command and date.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-benchmarks/gpu_out}}"
mkdir -p "$out"
if ! python3 -c "import ml_collections" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || { echo "error: no ml-collections wheel in .whl/"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi"; python3 -c "import jax, torch, transformers; print('jax', \
jax.__version__, jax.devices(), '| torch', torch.__version__, '| transformers', \
transformers.__version__)"; } | tee "$out/device.txt"

if [ -n "${GPU_SH_DRY_RUN:-}" ]; then  # the same commands at sizes a CPU runs in seconds
  base=(--config=configs/pretrain.py:bert_tiny --config.train.batch_size=8)
  large=(--config=configs/pretrain.py:bert_mini --config.train.batch_size=4)
  modern=(--config=configs/pretrain.py:modernbert_tiny --config.train.batch_size=4
          --config.max_seq_length=64 --config.max_predictions_per_seq=20)
  seconds=2
else
  base=(--config=configs/pretrain.py:bert_base --config.train.batch_size=256)
  large=(--config=configs/pretrain.py:bert_large --config.train.batch_size=32)
  modern=(--config=configs/pretrain.py:modernbert_base --config.train.batch_size=32)
  seconds=30
fi
status=0
run() {  # NAME ARGS...: one bench, its output kept whatever happens
  local name=$1; shift
  echo "== $name: python -m bertjax bench train $*" | tee "$out/$name.txt"
  timeout 900 python3 -m bertjax bench train "$@" --config.model.attention_dropout_rate=0 \
      --vs_torch --seconds=$seconds 2>&1 | tee -a "$out/$name.txt"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "== $name failed: exit $rc" | tee -a "$out/$name.txt"; status=1; }
}
run bert_base_s128 "${base[@]}" --config.max_seq_length=128 --config.max_predictions_per_seq=20
run bert_large_s512 "${large[@]}" --config.max_seq_length=512 --config.max_predictions_per_seq=80
# ModernBERT-Base at its 1024 tokens and 30% masking against ModernBertForMaskedLM: global
# layers on cuDNN, local (128-token window) layers on xla (docs/architectures.md).
run modernbert_base_s1024 "${modern[@]}" --config.optim.warmup_tokens=0 \
    --config.optim.decay_tokens=0
# Packed rows (docs/packing.md): demo_next's own sentences (about 48 tokens) packed into
# rows of 128 against transformers fed padded to 128 (run_glue.py's default) and with
# dynamic padding, real tokens/s (bertjax/tools/bench_real.py). The tokenizer is trained
# here on the demo texts (no TensorFlow); packed rows run the xla kernel (cuDNN takes no
# segment ids in jax 0.10-0.11).
tok="$out/tokenizer"
python3 -c "import sys; from bertjax.data import demo_tasks; \
from bertjax.data.tokenizers import train_wordpiece; \
texts = [' '.join(w for s in run for w in s) for run in demo_tasks.documents()['train']]; \
train_wordpiece(texts, vocab_size=8000).save(sys.argv[1])" "$tok" || status=1
if [ -n "${GPU_SH_DRY_RUN:-}" ]; then
  packed=(--config=configs/finetune.py:demo_next,bert_tiny --config.train.batch_size=8)
else
  packed=(--config=configs/finetune.py:demo_next,bert_base --config.train.batch_size=32)
fi
run bert_base_packed_demo_next "${packed[@]}" --config.tokenizer.path="$tok"
grep -h "^ratio=\|^against\|^rows a step\|^== \|MFU" "$out"/*bert_*.txt
exit $status
