#!/usr/bin/env bash
# A multi-node Ray cluster on one machine: a head plus one worker node per site, each started
# with `ray start --block`, each worker tagged with a site resource (site_a: 1) and a node
# label (site=a). Dashboard on loopback; Ray token authentication on.
#
#   cluster/local.sh up        # start head + workers, wait until all nodes joined
#   cluster/local.sh env       # the exports for `ray job submit` / `fcl-ray sweep` (eval it)
#   cluster/local.sh status
#   cluster/local.sh down      # stop exactly the nodes this script started (never `ray stop`,
#                              # which would also stop other Ray instances on the machine)
#
# Settings (environment):
#   FCL_CLUSTER_DIR     state: Ray temp dir, pids, logs (default /tmp/fcl-ray-cluster-$USER)
#   FCL_CLUSTER_PORT    GCS port of the head (default 6390)
#   FCL_DASHBOARD_PORT  dashboard / Jobs API port, bound to 127.0.0.1 (default 8266)
#   FCL_PORT_BASE       first of the per-node ports (default 21000; each node takes 20 + 200)
#   FCL_SITES           worker nodes, one per site (default "a b" -> site_a, site_b)
#   FCL_HEAD_CPUS       logical CPUs of the head (default 1; job drivers, Tune trainables)
#   FCL_WORKER_CPUS     logical CPUs per worker (default 2)
#   FCL_WORKER_GPUS     GPUs per worker (default: whatever Ray detects)
#   RAY_BIN             the ray executable (default .venv/bin/ray, else ray on PATH)
#
# Token authentication: Ray keeps the token in ~/.ray/auth_token (created here if missing with
# `ray get-auth-token --generate`); every process of this cluster runs with RAY_AUTH_MODE=token,
# so the dashboard, the Jobs API and GCS reject requests without it. Clients on this machine
# (ray job submit, ray.init, JobSubmissionClient) need RAY_AUTH_MODE=token too (see `env`);
# elsewhere also RAY_AUTH_TOKEN=<token> or RAY_AUTH_TOKEN_PATH=<file>.
set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
DIR=${FCL_CLUSTER_DIR:-/tmp/fcl-ray-cluster-${USER:-$(id -un)}}
GCS_PORT=${FCL_CLUSTER_PORT:-6390}
DASH_PORT=${FCL_DASHBOARD_PORT:-8266}
PORT_BASE=${FCL_PORT_BASE:-21000}
SITES=${FCL_SITES:-a b}
HEAD_CPUS=${FCL_HEAD_CPUS:-1}
WORKER_CPUS=${FCL_WORKER_CPUS:-2}
if [[ -n "${RAY_BIN:-}" ]]; then RAY=$RAY_BIN
elif [[ -x "$HERE/.venv/bin/ray" ]]; then RAY=$HERE/.venv/bin/ray
else RAY=$(command -v ray)
fi
# Job entrypoints (`fcl-ray run ...`, `python ...`) resolve to the same environment as Ray.
export PATH="$(dirname "$RAY"):$PATH"
export RAY_AUTH_MODE=token
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0   # `down` should not wait for draining
export RAY_USAGE_STATS_ENABLED=0
unset RAY_ADDRESS

node_ports() {   # node index -> the ports of that node (distinct per node on one machine)
  local i=$1 b=$((PORT_BASE + $1 * 20)) w=$((PORT_BASE + 1000 + $1 * 200))
  echo "--node-manager-port $b --object-manager-port $((b + 1)) \
--dashboard-agent-grpc-port $((b + 2)) --dashboard-agent-listen-port $((b + 3)) \
--metrics-export-port $((b + 4)) --runtime-env-agent-port $((b + 5)) \
--min-worker-port $w --max-worker-port $((w + 199))"
}

start_node() {   # name, args...: `ray start --block` in its own process group
  local name=$1; shift
  # shellcheck disable=SC2046
  setsid "$RAY" start --block --disable-usage-stats --temp-dir "$DIR/ray" "$@" \
    >"$DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/$name.pid"
}

alive() { [[ -f "$DIR/$1.pid" ]] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

nodes_up() {     # number of alive nodes the head reports
  "$RAY" status --address "127.0.0.1:$GCS_PORT" 2>/dev/null | grep -c "^ *1 node_" || true
}

wait_nodes() {   # expected count, node name: 0 when up, 1 when that node's start failed
  for _ in $(seq 1 180); do
    [[ "$(nodes_up)" -ge "$1" ]] && return 0
    if ! alive "$2"; then echo "node $2 exited; see $DIR/$2.log:" >&2; tail -5 "$DIR/$2.log" >&2; return 1; fi
    sleep 1
  done
  echo "cluster did not reach $1 nodes within 180 s; logs in $DIR" >&2
  return 1
}

start_and_wait() {   # expected count, name, args...: up to 3 tries (a raylet has 30 s to
  local count=$1 name=$2; shift 2   # register with the GCS, which a loaded machine can miss)
  for try in 1 2 3; do
    start_node "$name" "$@"
    wait_nodes "$count" "$name" && return 0
    echo "retrying node $name ($try/3)" >&2
    kill -TERM "$(cat "$DIR/$name.pid")" 2>/dev/null || true
    sleep 2
  done
  return 1
}

stop_all() {
  local pids=()
  for f in "$DIR"/site_*.pid "$DIR"/head.pid; do
    [[ -f "$f" ]] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
  done
  for _ in $(seq 1 60); do
    local left=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [[ $left == 0 ]] && break
    sleep 0.5
  done
  # Anything of ours still there (each node is its own process group): SIGKILL the group.
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  rm -f "$DIR"/*.pid
}

case "${1:-}" in
  up)
    if alive head; then echo "cluster already up (head pid $(cat "$DIR/head.pid"))"; exit 0; fi
    mkdir -p "$DIR/ray"
    "$RAY" get-auth-token --generate >/dev/null 2>&1 || true
    [[ -s "$HOME/.ray/auth_token" || -n "${RAY_AUTH_TOKEN:-}" ]] || {
      echo "no Ray auth token (expected ~/.ray/auth_token)" >&2; exit 1; }
    # shellcheck disable=SC2046
    start_and_wait 1 head --head --port "$GCS_PORT" --node-ip-address 127.0.0.1 \
      --include-dashboard true --dashboard-host 127.0.0.1 --dashboard-port "$DASH_PORT" \
      --ray-client-server-port $((PORT_BASE + 19)) --num-cpus "$HEAD_CPUS" \
      --labels "fcl-ray/role=head" $(node_ports 0) || { stop_all; exit 1; }
    i=1
    for site in $SITES; do
      gpus=()
      [[ -n "${FCL_WORKER_GPUS:-}" ]] && gpus=(--num-gpus "$FCL_WORKER_GPUS")
      # shellcheck disable=SC2046
      start_and_wait $((i + 1)) "site_$site" --address "127.0.0.1:$GCS_PORT" --node-ip-address 127.0.0.1 \
        --num-cpus "$WORKER_CPUS" "${gpus[@]}" --resources "{\"site_$site\": 1}" \
        --labels "site=$site" $(node_ports "$i") || { stop_all; exit 1; }
      i=$((i + 1))
    done
    echo "Ray cluster up: head 127.0.0.1:$GCS_PORT + $((i - 1)) site worker(s) ($SITES)"
    echo "dashboard / Jobs API: http://127.0.0.1:$DASH_PORT (token auth on); state in $DIR"
    echo "eval \"\$($0 env)\"   # then: ray job submit --working-dir . -- fcl-ray run ..." ;;
  env)
    echo "export RAY_AUTH_MODE=token"
    echo "export RAY_ADDRESS=http://127.0.0.1:$DASH_PORT   # Jobs API (ray job submit/status/logs)"
    echo "# inside a job Ray sets RAY_ADDRESS itself; a driver on this machine joins with"
    echo "#   RAY_ADDRESS=127.0.0.1:$GCS_PORT fcl-ray sweep ..." ;;
  status)
    if ! alive head; then echo "cluster not running"; exit 1; fi
    "$RAY" status --address "127.0.0.1:$GCS_PORT" ;;
  down)
    stop_all
    rm -f "$DIR/ray/ray_current_cluster"
    echo "cluster stopped" ;;
  *)
    echo "usage: $0 up|down|status|env" >&2
    exit 2 ;;
esac
