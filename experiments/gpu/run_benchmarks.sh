#!/usr/bin/env bash
# One GPU session (issue 11): the benchmark's tuning sweep, then the paper-scale recipe.
# Runs from the repo root on a GPU node where `python -m fcl_ray` works (the device bundle:
# bash .devbundle/setup.sh && export PYTHONPATH=/tmp/site:$PWD). Writes to $OUT (or ./gpu-out).
# Each phase has a time limit; whatever finished is kept (results.csv is written per method).
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
TUNE_S=${TUNE_S:-240}; PAPER_S=${PAPER_S:-270}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/device.txt" 2>&1
nproc >> "$OUT/device.txt"
echo "== tuning sweep (limit ${TUNE_S}s)"
start=$(date +%s)
timeout "$TUNE_S" python - "$OUT" <<'PY'
import sys
from fcl_ray.sweep.run import run_sweep
from fcl_ray.sweep.spec import load_sweep
out = sys.argv[1]
import os
extra = os.environ.get("TUNE_SET", "").split(";") if os.environ.get("TUNE_SET") else []
spec = load_sweep("experiments/sweeps/benchmark_tuning.yaml", [
    "sweep.resources={cpus_per_client: 0.5, gpus_per_client: 0.04, coordinator_cpus: 0.1}",
    "sweep.max_concurrent_trials=6", "sweep.storage_path=/tmp/sweeps", *extra])
result = run_sweep(spec, log=print)
result.trials.to_csv(f"{out}/tuning_trials.csv", index=False)
print(result.trials.to_string())
PY
echo "tuning wall $(( $(date +%s) - start ))s" | tee -a "$OUT/device.txt"
# Cut short by the limit: the last report of every trial from Tune's own result files.
[ -f "$OUT/tuning_trials.csv" ] || python - "$OUT" <<'PY'
import glob, json, sys
import pandas as pd
rows = []
for path in glob.glob("/tmp/sweeps/benchmark-tuning/*/result.json"):
    lines = [json.loads(x) for x in open(path) if x.strip()]
    if lines:
        last = lines[-1]
        rows.append({**{k: v for k, v in last.get("config", {}).items()},
                     "iterations": last.get("training_iteration"),
                     "probe_dice": last.get("probe_dice"), "collapsed": last.get("collapsed", 0),
                     "mean_cosine": last.get("health/mean_cosine")})
pd.DataFrame(rows).to_csv(f"{sys.argv[1]}/tuning_trials_partial.csv", index=False)
print(pd.DataFrame(rows).to_string())
PY
echo "== paper-scale recipe (limit ${PAPER_S}s)"
start=$(date +%s)
timeout "$PAPER_S" python -m fcl_ray run experiments/synthetic_paper_scale.yaml \
  --set experiment.output_dir=/tmp/paper_scale --set federation.checkpoint_every=0 \
  > "$OUT/paper_scale.log" 2>&1
echo "paper-scale exit $? wall $(( $(date +%s) - start ))s" | tee -a "$OUT/device.txt"
cp /tmp/paper_scale/results.csv "$OUT/paper_scale_results.csv" 2>/dev/null
cp /tmp/paper_scale/rounds.jsonl "$OUT/paper_scale_rounds.jsonl" 2>/dev/null
tail -5 "$OUT/paper_scale.log"
