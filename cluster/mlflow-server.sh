#!/usr/bin/env bash
# A real MLflow tracking server for fcl-ray runs and sweeps.
#
#   cluster/mlflow-server.sh up       # start it in the background, wait until it answers
#   cluster/mlflow-server.sh uri      # print the tracking URI to export as MLFLOW_TRACKING_URI
#   cluster/mlflow-server.sh status
#   cluster/mlflow-server.sh down     # stop exactly the processes this script started
#
# Settings (environment):
#   MLFLOW_HOST      interface to bind (default 127.0.0.1 = loopback only; on a cluster use the
#                    head's private IP or 0.0.0.0 and keep it behind a firewall)
#   MLFLOW_PORT      port (default 5000)
#   MLFLOW_DIR       state folder: pid, log, default stores (default runs/mlflow-server)
#   MLFLOW_BACKEND   backend store (default sqlite:///$MLFLOW_DIR/mlflow.db;
#                    e.g. postgresql://user:pass@db:5432/mlflow)
#   MLFLOW_ARTIFACTS artifact store the server proxies (default $MLFLOW_DIR/artifacts;
#                    e.g. s3://bucket/fcl-ray or gs://bucket/fcl-ray)
#   MLFLOW_WORKERS   server worker processes (default 1)
#   MLFLOW_ALLOWED_HOSTS  extra Host headers to accept when bound beyond loopback
#   MLFLOW_BIN       the mlflow executable (default .venv/bin/mlflow, else mlflow on PATH)
set -euo pipefail

HOST=${MLFLOW_HOST:-127.0.0.1}
PORT=${MLFLOW_PORT:-5000}
DIR=${MLFLOW_DIR:-runs/mlflow-server}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
BACKEND=${MLFLOW_BACKEND:-sqlite:///$DIR/mlflow.db}
ARTIFACTS=${MLFLOW_ARTIFACTS:-$DIR/artifacts}
WORKERS=${MLFLOW_WORKERS:-1}
HERE=$(cd "$(dirname "$0")/.." && pwd)
if [[ -n "${MLFLOW_BIN:-}" ]]; then BIN=$MLFLOW_BIN
elif [[ -x "$HERE/.venv/bin/mlflow" ]]; then BIN=$HERE/.venv/bin/mlflow
else BIN=$(command -v mlflow)
fi
PIDFILE=$DIR/server.pid
LOG=$DIR/server.log
URI_HOST=$HOST
[[ "$HOST" == "0.0.0.0" ]] && URI_HOST=127.0.0.1
URI="http://$URI_HOST:$PORT"

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-}" in
  up)
    if running; then echo "mlflow server already running (pid $(cat "$PIDFILE")) at $URI"; exit 0; fi
    extra=()
    [[ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]] && extra+=(--allowed-hosts "$MLFLOW_ALLOWED_HOSTS")
    # setsid: the server and its workers form one process group that 'down' stops together.
    setsid "$BIN" server --host "$HOST" --port "$PORT" --workers "$WORKERS" \
      --backend-store-uri "$BACKEND" --serve-artifacts --artifacts-destination "$ARTIFACTS" \
      "${extra[@]}" >"$LOG" 2>&1 < /dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 240); do
      if curl -fsS "$URI/health" >/dev/null 2>&1; then
        echo "mlflow server up at $URI (backend $BACKEND, artifacts $ARTIFACTS, log $LOG)"
        echo "export MLFLOW_TRACKING_URI=$URI"
        exit 0
      fi
      if ! running; then echo "mlflow server exited; see $LOG:" >&2; tail -20 "$LOG" >&2; exit 1; fi
      sleep 0.5
    done
    echo "mlflow server did not answer on $URI within 120 s; see $LOG" >&2
    exit 1 ;;
  down)
    if ! running; then echo "mlflow server not running"; rm -f "$PIDFILE"; exit 0; fi
    pid=$(cat "$PIDFILE")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
    echo "mlflow server stopped" ;;
  status)
    if running; then echo "running (pid $(cat "$PIDFILE")) at $URI"; else echo "not running"; exit 1; fi ;;
  uri)
    echo "$URI" ;;
  *)
    echo "usage: $0 up|down|status|uri   (settings: MLFLOW_HOST, MLFLOW_PORT, MLFLOW_DIR, ...)" >&2
    exit 2 ;;
esac
