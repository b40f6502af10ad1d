#!/usr/bin/env bash
# Issue 14, second pass: what clients_per_actor and pretrain.health_every do to the cold
# start, the memory per client and the 2-step overhead, in one run on an idle machine.
# One fresh `fcl-ray bench` process per row, so each "first round" is a cold start.
# Usage: benchmarks/hosting_and_health.sh OUT_DIR
set -u
OUT=${1:?output folder}; PY=${PYTHON:-python}
mkdir -p "$OUT"
bench() {   # name, clients, steps, rounds, extra --set args...
  local name=$1 c=$2 steps=$3 rounds=$4; shift 4
  echo "== $name load: $(cut -d' ' -f1-3 /proc/loadavg)"
  $PY -W ignore -m fcl_ray -q bench --clients "$c" --local-steps "$steps" --rounds "$rounds" \
      --out "$OUT" --name "$name" "$@" > "$OUT/$name.log" 2>&1 || echo "   FAILED (see $name.log)"
}
# Cold start and memory per client: C=4 and C=8, one actor per client vs several per actor.
bench c4_s10_k1 4 10 3
bench c4_s10_k2 4 10 3 --set federation.clients_per_actor=2
bench c8_s10_k1 8 10 3
bench c8_s10_k2 8 10 3 --set federation.clients_per_actor=2
bench c8_s10_k4 8 10 3 --set federation.clients_per_actor=4
# The 2-step overhead: health every round vs every 5th, over 7 timed rounds (the median
# then reads a round without the probe when it runs every 5th).
bench c8_s2_health1 8 2 7 --set pretrain.health_every=1
bench c8_s2_health5 8 2 7 --set pretrain.health_every=5
bench c4_s2_health5 4 2 7 --set pretrain.health_every=5
