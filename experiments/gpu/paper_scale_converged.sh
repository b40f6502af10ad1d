#!/usr/bin/env bash
# One GPU session (issue 20): the paper-scale recipe on the converged protocol, as much of it
# as one device command holds. Fold 0, N=1, random init / Local CL / FCL, local mode first
# (one queue per client), then federated; each phase has its own time limit and keeps what
# finished (results.csv is written after each phase). Pre-training rates: those the converged
# sweep chose on the 48-px benchmark's validation sites (LR_PER_METHOD), not tuned at this scale.
# Runs from the repo root where `python -m fcl_ray` works (the device bundle:
# bash .devbundle/setup.sh && export PYTHONPATH=/tmp/site:$PWD). Writes to $OUT (or ./gpu-out).
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
LOCAL_S=${LOCAL_S:-240}; FED_S=${FED_S:-200}
METHODS=${METHODS:-[random,local_cl,fcl]}; FOLDS=${FOLDS:-[0]}
LR_PER_METHOD=${LR_PER_METHOD:-{local_cl: 0.0003, fcl: 0.003\}}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/device.txt" 2>&1
echo "cpus $(nproc)" >> "$OUT/device.txt"
common=(--set "pretrain.methods=$METHODS" --set "pretrain.lr_per_method=$LR_PER_METHOD"
        --set "finetune.folds=$FOLDS" --set 'finetune.n_labeled=[1]' --set finetune.upper_bound=false
        --set federation.checkpoint_every=0)
for phase in local federated; do
  limit=$LOCAL_S; [ "$phase" = federated ] && limit=$FED_S
  start=$(date +%s)
  PYTHONUNBUFFERED=1 timeout "$limit" python -m fcl_ray run experiments/synthetic_paper_scale.yaml \
    "${common[@]}" --set "finetune.modes=[$phase]" --set "experiment.output_dir=/tmp/ps_$phase" \
    > "$OUT/paper_scale_$phase.log" 2>&1
  echo "$phase exit $? wall $(( $(date +%s) - start ))s" | tee -a "$OUT/device.txt"
  cp "/tmp/ps_$phase/results.csv" "$OUT/results_$phase.csv" 2>/dev/null
  cp "/tmp/ps_$phase/rounds.jsonl" "$OUT/rounds_$phase.jsonl" 2>/dev/null
  grep -E "wall time|took|pre-training fold|round 20/20 health" "$OUT/paper_scale_$phase.log" | tail -12
done
