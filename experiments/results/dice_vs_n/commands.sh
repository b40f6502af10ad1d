#!/bin/bash
# Dice against N at noise 0.6 (issue 20 point 3 and the N columns), fold 0.
cd /work/main
run() { name=$1; shift; start=$(date +%s); echo "== $name start $(date -u +%H:%M:%S)";
  .venv/bin/fcl-ray run experiments/synthetic_benchmark.yaml --set 'finetune.folds=[0]' \
    --set 'finetune.n_labeled=[2,4,8]' --set finetune.upper_bound=false \
    --set tracking.enabled=false --set experiment.output_dir=runs/n_$name "$@" > runs/n_$name.log 2>&1
  echo "== $name rc $? $(( $(date +%s) - start )) s"; }
run random --set 'pretrain.methods=[random]'
run fcl_local --set 'pretrain.methods=[fcl]' --set 'finetune.modes=[local]'
run fedca_local --set 'pretrain.methods=[fedca]' --set 'finetune.modes=[local]'
run local_cl_local --set 'pretrain.methods=[local_cl]' --set 'finetune.modes=[local]'
