#!/usr/bin/env bash
# The regime study of issue 28 (point 7) on phantom v2: FCL minus fcl_no_exchange and minus
# Local CL at N=1 local, against data.site_skew (0.1: each site mostly one phenotype; 1: sites
# differ; 100: every site alike), paired client-level CIs, one plot. This is where the paper's
# claim lives: the exchange should pay when a site lacks what others have.
# Extra arguments go to every run (e.g. --set 'finetune.folds=[0]').
# Run again into the same runs/ folders: add --overwrite (the old files move to previous-*/).
set -euo pipefail
cd "$(dirname "$0")/.."
FCL_RAY=${FCL_RAY:-.venv/bin/fcl-ray}
OUT=${OUT:-experiments/results/v2/regime}
inputs=()
for skew in 0.1 1 100; do
  run_dir=runs/regime/skew${skew}
  "$FCL_RAY" run experiments/benchmark_v2.yaml --set data.site_skew=${skew} \
      --set 'pretrain.methods=[local_cl,fcl_no_exchange,fcl]' --set 'finetune.modes=[local]' \
      --set 'finetune.n_labeled=[1]' --set experiment.output_dir=${run_dir} "$@"
  inputs+=("${run_dir}/results.csv:${skew}")
done
"${FCL_RAY%fcl-ray}python" experiments/data_per_site_plot.py --x site_skew "${inputs[@]}" --out "$OUT"
