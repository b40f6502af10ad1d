#!/usr/bin/env bash
# The data-per-site study (experiments/data_per_site.yaml): 2, 4 and 8 training patients per
# site, then FCL minus fcl_no_exchange (and minus Local CL) against patients per site.
# Extra arguments go to every run (e.g. --set 'finetune.folds=[0]' for a quick look).
# Run again into the same runs/ folders: add --overwrite (the old files move to previous-*/).
set -euo pipefail
cd "$(dirname "$0")/.."
FCL_RAY=${FCL_RAY:-.venv/bin/fcl-ray}
OUT=${OUT:-experiments/results/data_per_site}
inputs=()
for patients in 2 4 8; do
  cases=$(( patients * 3 / 2 ))            # 3 folds: a third of the cases is tested
  run_dir=runs/data_per_site/p${patients}
  "$FCL_RAY" run experiments/data_per_site.yaml --set data.cases_per_client=${cases} \
      --set experiment.output_dir=${run_dir} "$@"
  inputs+=("${run_dir}/results.csv:${patients}")
done
"${FCL_RAY%fcl-ray}python" experiments/data_per_site_plot.py "${inputs[@]}" --out "$OUT"
