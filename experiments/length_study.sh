#!/usr/bin/env bash
# The pre-training length study of issue 28 (point 4) on phantom v2: N=1 local Dice and the
# frozen-encoder probes of Local CL and FCL against pre-training length (steps a client:
# rounds x 10 local steps), beside random init and the positive control (their rows do not
# depend on the length; they are run once, with the first length).
# Extra arguments go to every run (e.g. --set pretrain.momentum_schedule=cosine).
set -euo pipefail
cd "$(dirname "$0")/.."
FCL_RAY=${FCL_RAY:-.venv/bin/fcl-ray}
LENGTHS=${LENGTHS:-"150 600"}
first=1
for steps in $LENGTHS; do
  methods="[local_cl,fcl]"
  [ "$first" = 1 ] && methods="[random,supervised_encoder,local_cl,fcl]"
  "$FCL_RAY" run experiments/benchmark_v2.yaml --set pretrain.rounds=$(( steps / 10 )) \
      --set pretrain.local_steps=10 --set "pretrain.methods=${methods}" \
      --set 'finetune.modes=[local]' --set 'finetune.n_labeled=[1]' --set 'finetune.folds=[0]' \
      --set probes.enabled=true --set experiment.output_dir=runs/length/s${steps} "$@"
  first=0
done
