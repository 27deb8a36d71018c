#!/usr/bin/env bash
# Distillation and ELECTRA on the built-in demo corpus, on a CPU; prints the figures that
# benchmarks/RESULTS.md records.
#
#   benchmarks/objectives_demo.sh [OUT_DIR]      (default /tmp/bertjax_objectives)
#
# 1. MLM data (dynamic masking) from the demo corpus, with a WordPiece vocabulary of 8000.
# 2. A bert_mini teacher: 2000 steps of MLM (TEACHER_STEPS).
# 3. bert_tiny distilled from it, and the same bert_tiny trained alone with MLM, for the
#    same 600 steps, same data order, optimizer and seed; both start from scratch (the
#    widths differ, so there are no teacher layers to copy).
# 4. electra_tiny for 600 steps on the same data (runlocal: generator samples at temperature 2).
# Each run evaluates on the validation split (all of it) at its end. Re-running resumes
# what is not done (logs are appended to; the last evaluation in each is the figure).
# About 40 minutes on 2 cores, most of it the teacher.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/bertjax_objectives}
teacher_steps=${TEACHER_STEPS:-2000}
python=${PYTHON:-python}
eval_all=(--config.train.eval_steps=0 --config.train.eval_every=600)

"$python" -m bertjax prepare data --config=configs/distill.py:bert_mini_to_bert_tiny,runlocal \
  --config.data.dir="$out/demo_mlm"
"$python" -m bertjax train --config=configs/pretrain.py:bert_mini,runlocal --config.task=mlm \
  --config.data.dir="$out/demo_mlm" --workdir="$out/teacher" \
  --config.train.steps="$teacher_steps" --config.train.eval_steps=0 \
  --config.train.eval_every="$teacher_steps" | tee -a "$out/teacher.log"
"$python" -m bertjax train --config=configs/distill.py:bert_mini_to_bert_tiny,runlocal \
  --config.distill.teacher_path="$out/teacher/model" --config.data.dir="$out/demo_mlm" \
  --workdir="$out/distilled" "${eval_all[@]}" | tee -a "$out/distilled.log"
"$python" -m bertjax train --config=configs/pretrain.py:bert_tiny,runlocal --config.task=mlm \
  --config.data.dir="$out/demo_mlm" --workdir="$out/alone" "${eval_all[@]}" | tee -a "$out/alone.log"
"$python" -m bertjax train --config=configs/pretrain.py:electra_tiny,runlocal \
  --config.data.dir="$out/demo_mlm" --workdir="$out/electra" "${eval_all[@]}" \
  | tee -a "$out/electra.log"

echo
echo "== figures (last evaluation of each run) =="
for run in teacher distilled alone electra; do
  echo "$run: $(grep '^eval step' "$out/$run.log" | tail -1)"
done
