#!/usr/bin/env bash
# Before/after in one run: `fcl-ray bench` of the main checkout and of this tree, back to back,
# one fresh process per (C, steps) so every row's "first round" is a cold start.
# Usage: benchmarks/compare_main.sh MAIN_DIR OUT_DIR [ROUNDS]
set -u
MAIN=${1:?main checkout}; OUT=${2:?output folder}; ROUNDS=${3:-2}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
mkdir -p "$OUT"
for steps in 10 2; do
  for c in 4 8; do
    for side in main branch; do
      dir=$MAIN; [ $side = branch ] && dir=$HERE
      echo "== $side C=$c steps=$steps load: $(cut -d' ' -f1-3 /proc/loadavg)"
      (cd "$dir" && PYTHONPATH=$dir $PY -W ignore -m fcl_ray bench --clients $c --local-steps $steps \
         --rounds "$ROUNDS" --out "$OUT" --name "${side}_c${c}_s${steps}" 2>&1 \
         | grep -E "^C=|client actors|^ +[0-9]" | head -3)
    done
  done
done
