#!/usr/bin/env bash
# make serve: a local Prefect server on 127.0.0.1:4200, a process worker, every
# deployment in prefect.yaml and the automations of automations.yaml (zombie runs become
# Crashed). Ctrl-C (or SIGTERM) stops the worker and the server.
set -euo pipefail
cd "$(dirname "$0")/.."
HOST=127.0.0.1
PORT=${PREFECT_PORT:-4200}
export PREFECT_API_URL="http://$HOST:$PORT/api"
mkdir -p "${PREFECT_HOME:-.prefect}"
LOG="${PREFECT_HOME:-.prefect}/server.log"

if python -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('$HOST', $PORT)) != 0)"; then
  echo "error: something already listens on $HOST:$PORT; stop it or set PREFECT_PORT" >&2
  exit 2
fi

SERVER=""; WORKER=""
stop() {
  trap - EXIT INT TERM
  echo; echo "stopping worker and server..."
  if [ -n "$WORKER" ] && kill -0 "$WORKER" 2>/dev/null; then
    # A Prefect worker wants two signals before it exits.
    kill -INT "$WORKER" 2>/dev/null || true; sleep 1; kill -INT "$WORKER" 2>/dev/null || true
    for _ in $(seq 1 10); do kill -0 "$WORKER" 2>/dev/null || break; sleep 1; done
    kill -KILL "$WORKER" 2>/dev/null || true
  fi
  if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER" 2>/dev/null || true
    for _ in $(seq 1 15); do kill -0 "$SERVER" 2>/dev/null || break; sleep 1; done
    kill -KILL "$SERVER" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  echo "stopped."
}
trap stop EXIT INT TERM

echo "starting Prefect server on http://$HOST:$PORT (log: $LOG)"
prefect server start --host "$HOST" --port "$PORT" >"$LOG" 2>&1 &
SERVER=$!
for i in $(seq 1 120); do
  if python -c "import urllib.request; urllib.request.urlopen('$PREFECT_API_URL/health', timeout=2)" 2>/dev/null; then
    break
  fi
  kill -0 "$SERVER" 2>/dev/null || { echo "error: the server exited; see $LOG" >&2; tail -20 "$LOG" >&2; exit 1; }
  [ "$i" -eq 120 ] && { echo "error: server not healthy after 120 s; see $LOG" >&2; exit 1; }
  sleep 1
done
echo "server healthy"

prefect work-pool inspect local >/dev/null 2>&1 || prefect work-pool create local --type process
prefect --no-prompt deploy --all
# Created, or updated by name: a killed run is marked Crashed ~90 s after its last heartbeat.
python -m flows.automations automations.yaml
echo
echo "UI:  http://$HOST:$PORT    run:  PREFECT_API_URL=$PREFECT_API_URL prefect deployment run 'demo/demo'"
echo "worker running; Ctrl-C stops everything"
# Heartbeats every 30 s (Prefect's minimum) also for runs of deployments made outside
# prefect.yaml: crash-zombie-flow-runs allows 90 s between two of them.
PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30 prefect worker start --pool local &
WORKER=$!
wait "$WORKER" || true
