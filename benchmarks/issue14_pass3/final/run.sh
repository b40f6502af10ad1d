set -u
OUT=/tmp/bench_final; mkdir -p $OUT
PY=/work/main/.venv/bin/python
for cfg in "4 10" "8 2"; do
  set -- $cfg; c=$1; s=$2
  for side in base final; do
    dir=/work/main; [ $side = base ] && dir=/work/wt-base
    echo "== $side C=$c steps=$s load: $(cut -d' ' -f1-3 /proc/loadavg)"
    (cd $dir && PYTHONPATH=$dir $PY -W ignore -m fcl_ray -q bench --clients $c --local-steps $s --rounds 3 --out $OUT --name ${side}_c${c}_s${s} > $OUT/${side}_c${c}_s${s}.log 2>&1)
  done
done
