#!/usr/bin/env bash
# Warmup-stable-decay on the demo corpus, on a CPU: per pretraining seed, one stable run,
# two decays branched from it at different steps, and the average of its late
# checkpoints, each scored on held-out MLM and on the demo tasks; then `compare`'s table
# and plots of the runs. Prints the figures benchmarks/RESULTS.md records.
#
#   benchmarks/recipes_demo.sh [OUT_DIR]      (default /tmp/bertjax_recipes)
#
# Environment (defaults): STEPS=3000 (the stable run), BRANCHES="2000 2500" (decays start
# there), DECAY=500 (steps of each decay, 1-sqrt shape), SEEDS="0 1 2",
# TASKS=demo_next,demo_boundary (fine-tuned from every model, one seed each; "" skips
# fine-tuning), PYTHON=python.
# 1. Data: the quickstart's (bert_tiny, runlocal: 64 tokens, batch 32, the demo vocabulary);
#    held-out documents: the demo construction over other packages' docstrings
#    (benchmarks/demo_intruder_heldout.py), so the MLM score is not on memorised text.
# 2. Per seed: stable = STEPS steps at the peak rate after warmup (optim.decay=wsd,
#    decay_steps=0), a checkpoint kept every DECAY steps; decay_B = a branch from
#    stable@B decaying over DECAY steps (init_from_checkpoint); average = the uniform
#    average of stable's last three kept checkpoints (`average`).
# 3. Each model: `evaluate --documents --lengths=64` (masked-token accuracy and loss on
#    the held-out documents); the TASKS fine-tuned from it (config.downstream:
#    WORKDIR/results.json).
# Re-running resumes: finished runs and scores are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/bertjax_recipes}
steps=${STEPS:-3000}
branches=${BRANCHES:-"2000 2500"}
decay=${DECAY:-500}
seeds=${SEEDS:-"0 1 2"}
tasks=${TASKS-demo_next,demo_boundary}
python=${PYTHON:-python}
preset=configs/pretrain.py:bert_tiny,runlocal
mkdir -p "$out"

if [ ! -f "$out/data/manifest.json" ]; then
  "$python" -m bertjax prepare data --config="$preset" --config.data.dir="$out/data"
fi
if [ ! -f "$out/heldout.txt" ]; then
  "$python" benchmarks/demo_intruder_heldout.py --out="$out/heldout_intruder" \
    --documents="$out/heldout.txt"
fi

common=(--config="$preset" --config.data.dir="$out/data" --config.optim.decay=wsd
  --config.train.eval_steps=0 --config.train.eval_every=0
  --config.downstream.tasks="$tasks"
  --config.downstream.config="configs/finetune.py:{task},bert_tiny,runlocal")

score() {  # MODEL_DIR -> MODEL_DIR/../mlm_heldout.json
  local json
  json="$(dirname "$1")/mlm_heldout.json"
  if [ ! -f "$json" ]; then
    "$python" -m bertjax evaluate --checkpoint="$1" --documents="$out/heldout.txt" \
      --lengths=64 --out="$json"
  fi
}

for seed in $seeds; do
  run="$out/seed$seed"
  mkdir -p "$run"
  # keep_every=DECAY keeps every branch point whatever train.max_to_keep says.
  "$python" -m bertjax train "${common[@]}" --workdir="$run/stable" --config.seed="$seed" \
    --config.train.steps="$steps" --config.optim.decay_steps=0 \
    --config.train.keep_every="$decay" | tee -a "$run/stable.log"
  score "$run/stable/model"
  for b in $branches; do
    "$python" -m bertjax train "${common[@]}" --workdir="$run/decay_$b" \
      --config.seed="$seed" --config.init_from_checkpoint="$run/stable@$b" \
      --config.train.steps="$((b + decay))" --config.optim.decay_steps="$decay" \
      --config.optim.decay_shape=1-sqrt | tee -a "$run/decay_$b.log"
    score "$run/decay_$b/model"
  done
  if [ ! -f "$run/average/model/config.json" ]; then
    "$python" -m bertjax average --workdir="$run/stable" --last=3 --out="$run/average/model"
  fi
  score "$run/average/model"
  if [ -n "$tasks" ] && [ ! -f "$run/average/results.json" ]; then
    # The same fine-tuning as the runs' config.downstream, from the averaged model.
    "$python" - "$run/average" "${common[@]}" <<'EOF'
import sys

from bertjax import configfile
from bertjax.tools import downstream

workdir, flags = sys.argv[1], sys.argv[2:]
config = configfile.load_config(flags[0].split("=", 1)[1])
for flag in flags[1:]:
    key, value = flag[len("--config."):].split("=", 1)
    configfile.set_key(config, key, value, flag)
downstream.run(config, workdir)
EOF
  fi
done

"$python" - "$out" $seeds <<'EOF'
import json
import os
import statistics
import sys

out, seeds = sys.argv[1], sys.argv[2:]
models = sorted(
    {m for s in seeds for m in os.listdir(f"{out}/seed{s}") if os.path.isdir(f"{out}/seed{s}/{m}")},
    key=lambda m: (m != "stable", m),
)
print("\n== figures: median [min-max] over seeds", " ".join(seeds), "==")
rows = {}
for m in models:
    cells = {}
    for s in seeds:
        d = f"{out}/seed{s}/{m}"
        mlm = json.load(open(f"{d}/mlm_heldout.json")) if os.path.exists(f"{d}/mlm_heldout.json") else {}
        for key, v in mlm.items():  # "mlm@64": {"accuracy", "loss", ...}
            cells.setdefault(f"held-out {key} accuracy", []).append(v["accuracy"])
            cells.setdefault(f"held-out {key} loss", []).append(v["loss"])
        if os.path.exists(f"{d}/results.json"):
            for task, r in json.load(open(f"{d}/results.json"))["downstream"].items():
                cells.setdefault(f"{task} {r['metric']}", []).append(r["median"])
    rows[m] = cells
columns = sorted({c for cells in rows.values() for c in cells})
print("| model | " + " | ".join(columns) + " |")
print("| --- " * (len(columns) + 1) + "|")
for m, cells in rows.items():
    def cell(c):
        v = cells.get(c)
        if not v:
            return "-"
        return f"{statistics.median(v):.4f} [{min(v):.4f}-{max(v):.4f}] (n={len(v)})"
    print(f"| {m} | " + " | ".join(cell(c) for c in columns) + " |")
EOF

for seed in $seeds; do
  report="$out/seed$seed/report"
  runs=("$out/seed$seed/stable")
  for b in $branches; do runs+=("$out/seed$seed/decay_$b"); done
  "$python" -m bertjax compare "${runs[@]}" --out="$report" --overwrite >/dev/null
  echo "compare: $report/report.md, loss.png, downstream.png"
done
