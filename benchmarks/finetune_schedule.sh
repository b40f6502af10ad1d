#!/usr/bin/env bash
# Local fine-tuning wall time, before/after in one run (issue 20, point 2): the same converged
# grid (benchmark phantom, 4 clients, random init at N=1,2,4,8 plus the upper bound, fold 0,
# local mode) run by an older checkout (one local grid per method) and by this tree (one queue
# per client for every method of the fold, largest budgets first), back to back.
# Usage: benchmarks/finetune_schedule.sh BEFORE_DIR OUT_DIR [MAX_STEPS]
set -eu
BEFORE=${1:?checkout to compare with}; OUT=${2:?output folder}; MAX_STEPS=${3:-300}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$HERE/.venv/bin/python}
mkdir -p "$OUT"
for side in before after; do
  dir=$BEFORE; [ $side = after ] && dir=$HERE
  start=$(date +%s)
  # both sides read this tree's benchmark YAML (the converged protocol)
  (cd "$dir" && PYTHONPATH=$dir $PY -W ignore -m fcl_ray -q run "$HERE/experiments/synthetic_benchmark.yaml" \
     --set 'pretrain.methods=[random]' --set 'finetune.folds=[0]' --set 'finetune.modes=[local]' \
     --set finetune.max_steps=$MAX_STEPS --set finetune.patience=5 --set tracking.enabled=false \
     --set experiment.output_dir=$OUT/$side > "$OUT/$side.log" 2>&1)
  echo "$side: $(( $(date +%s) - start )) s wall, load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/wall.txt"
done
