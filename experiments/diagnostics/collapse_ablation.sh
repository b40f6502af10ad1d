#!/usr/bin/env bash
# Issue 10's one-client ablation: the health of FCL after 150 steps (site 0, 9 volumes of the
# benchmark phantom) with the old formulation, each fix alone, and all fixes (the defaults).
# Prints one JSON line per setting. Usage: bash experiments/diagnostics/collapse_ablation.sh
set -euo pipefail
PY=${PY:-.venv/bin/python}
H="experiments/diagnostics/health_check.py fcl --steps ${STEPS:-150} --json --volumes 9 --config experiments/synthetic_benchmark.yaml"
OLD="--set model.head_norm=none --set pretrain.fresh_negatives=none --set pretrain.views=shrink --set pretrain.bank_size=128"
run() { $PY $H "$@"; }
run $OLD &
run --set model.head_norm=none --set pretrain.views=shrink --set pretrain.bank_size=128 &   # fix 1 alone
wait
run --set model.head_norm=none --set pretrain.fresh_negatives=none --set pretrain.bank_size=128 &  # fix 3 alone
run --set model.head_norm=none --set pretrain.fresh_negatives=none --set pretrain.views=shrink &  # fix 4 alone
wait
run --set pretrain.fresh_negatives=none --set pretrain.views=shrink --set pretrain.bank_size=128 &  # BN head alone
run --set pretrain.fresh_negatives=none &   # BN head + zoom + auto bank, stale negatives only
wait
run &                                       # all fixes (the defaults)
run --set pretrain.momentum=0.999 &         # all fixes, MoCo's momentum
wait
