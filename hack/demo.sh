#!/usr/bin/env bash
# `make demo`: the whole product on this machine, no Docker needed.
#   up    a control plane of its own + redis-server + CRDs + operator (cluster-wide, as the
#         chart runs it) + kubelet stand-in for worker pods, then apply examples/workerpool.yaml
#         and examples/job.yaml and show `kubectl get jobs.workers.io`; then the delayed Job, the
#         sequence (examples/extraction-workflow.yaml), the fan-out (examples/orchestrator.yaml)
#         and the Schedule, not waited for; and the web console (kubeworkers ui) on loopback
#   down  stop everything `up` started, its control plane included
#   env   print the export line for the demo's kubeconfig
# State, kubeconfig and logs: $KUBEWORKERS_DEMO_DIR, default .local/demo/. The tests run their
# own control plane (.local/), so `make test` never sees the demo's operator or objects, and the
# demo's cluster-wide operator never sees the tests' namespaces: both may run at once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEMO="${KUBEWORKERS_DEMO_DIR:-$ROOT/.local/demo}"
PY="$ROOT/.venv/bin/python"
KUBECTL="$ROOT/.venv/bin/kubectl"
export KUBECONFIG="$DEMO/kubeconfig"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
cluster() { "$PY" -m hack.local_cluster --dir "$DEMO" "$@"; }

stop_pid() {  # name
  local f="$DEMO/$1.pid"
  [[ -f "$f" ]] || return 0
  local pid; pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

start_bg() {  # name cmd...
  local name="$1"; shift
  if [[ -f "$DEMO/$name.pid" ]] && kill -0 "$(cat "$DEMO/$name.pid")" 2>/dev/null; then return 0; fi
  setsid "$@" >"$DEMO/$name.log" 2>&1 < /dev/null &
  echo $! >"$DEMO/$name.pid"
}

down() {
  say "stopping the demo ($DEMO)"
  stop_pid ui
  stop_pid pod-runner
  stop_pid operator
  stop_pid redis
  [[ -x "$PY" ]] && cluster down
}

up() {
  bash hack/ensure-prereqs.sh --for demo
  mkdir -p "$DEMO"
  say "the demo's own control plane in $DEMO (the first run compiles it: 15-25 minutes on 2 cores)"
  cluster up

  say "redis-server"
  local port
  if [[ -f "$DEMO/redis.port" ]]; then port="$(cat "$DEMO/redis.port")"; else
    port="$($PY -c 'from hack.net import free_port; print(free_port())')"
    echo "$port" >"$DEMO/redis.port"
  fi
  mkdir -p "$DEMO/redis-data"
  start_bg redis redis-server --port "$port" --bind 127.0.0.1 --dir "$DEMO/redis-data" \
    --appendonly yes --save ""
  local url="redis://127.0.0.1:$port/0"
  for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

  say "CRDs and the Redis Secret"
  $KUBECTL apply --server-side -f crds/ >/dev/null
  $KUBECTL wait --for condition=Established crd/jobs.workers.io crd/workerpools.workers.io crd/schedules.workers.io --timeout=60s >/dev/null
  $KUBECTL create secret generic kubeworkers-redis --from-literal=url="$url" \
    --dry-run=client -o yaml | $KUBECTL apply -f - >/dev/null

  say "operator (cluster-wide) and the kubelet stand-in for worker pods"
  start_bg operator env KUBEWORKERS_REDIS_URL="$url" .venv/bin/kubeworkers-operator --metrics-port 0
  start_bg pod-runner "$PY" -m hack.pod_runner --namespace default --selector workers.io/pool \
    --log-dir "$DEMO/pods" --env KUBEWORKERS_METRICS_PORT=0

  say "the web console (kubeworkers ui, docs/console.md): loopback only, actions on"
  local ui_port
  if [[ -f "$DEMO/ui.pid" ]] && kill -0 "$(cat "$DEMO/ui.pid")" 2>/dev/null; then ui_port="$(cat "$DEMO/ui.port")"; else
    ui_port="$($PY -c 'from hack.net import free_port; print(free_port())')"
    echo "$ui_port" >"$DEMO/ui.port"
  fi
  start_bg ui env KUBEWORKERS_REDIS_URL="$url" .venv/bin/kubeworkers ui --namespace default \
    --port "$ui_port" --enable-actions
  "$PY" -c 'import sys; from hack.polling import wait_for; from hack.net import port_is_free
wait_for(lambda: not port_is_free(int(sys.argv[1])), timeout=20, what="the console to listen")' "$ui_port"

  say "kubectl apply -f examples/workerpool.yaml -f examples/job.yaml"
  $KUBECTL apply -f examples/workerpool.yaml -f examples/job.yaml
  local name; name="$($KUBECTL create --dry-run=client -o jsonpath='{.metadata.name}' -f examples/job.yaml)"
  say "waiting for job $name (the pool wakes from zero, a worker runs it, the operator copies the status)"
  local phase=""
  for _ in $(seq 1 240); do
    phase="$($KUBECTL get jobs.workers.io "$name" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    case "$phase" in Succeeded|Failed|Cancelled) break ;; esac
    sleep 0.5
  done
  $KUBECTL get workerpools,jobs.workers.io
  echo
  # Not waited for either: it starts 20 s from now (its notBefore, rewritten to that time).
  say "kubectl apply -f examples/delayed-job.yaml (a delayed Job: notBefore 20 s from now)"
  # notBefore is immutable: a demo brought up again replaces the delayed Job of its last run.
  $KUBECTL delete jobs.workers.io delayed-word-count --ignore-not-found --wait=true
  sed "s/2026-12-02T12:00:00Z/$(date -u -d '+20 seconds' +%FT%TZ)/" examples/delayed-job.yaml | $KUBECTL apply -f -
  $KUBECTL get jobs.workers.io delayed-word-count -o jsonpath='{.status.phase} until {.status.notBefore}{"\n"}' || true
  # Not waited for: a sequence (parse -> extract -> store); its extract step fails once and is retried.
  say "kubectl apply -f examples/extraction-workflow.yaml (a sequence of three steps, one Job)"
  $KUBECTL apply -f examples/extraction-workflow.yaml
  # Not waited for: the persona ingestion (fan-out and joins); one quote fails on purpose.
  say "kubectl apply -f examples/orchestrator.yaml (a parent, its children and their joins)"
  $KUBECTL apply -f examples/orchestrator.yaml
  # Not waited for: its first run starts 30 s after it is created.
  say "kubectl apply -f examples/schedule.yaml (a Schedule: a maintenance run every 30 s)"
  $KUBECTL apply -f examples/schedule.yaml
  $KUBECTL get schedules.workers.io
  echo
  say "status.output of $name"
  $KUBECTL get jobs.workers.io "$name" -o jsonpath='{.status.output}'; echo
  echo
  echo "Console: http://127.0.0.1:$(cat "$DEMO/ui.port")/   (pools, jobs, dead letters, handlers; retry, cancel, replay)"
  echo "Next: export KUBECONFIG=$KUBECONFIG"
  echo "      kubectl apply -f examples/slow-job.yaml && kubectl get jobs.workers.io -w"
  echo "      kubectl get schedules.workers.io -w   (runs: kubectl get wj -l workers.io/schedule)"
  echo "      kubectl get jobs.workers.io delayed-word-count -w   (starts at its status.notBefore)"
  echo "      kubectl get jobs.workers.io extract-report -o wide -w   (its STEP column: step 1/3 parse ... 3/3 store)"
  echo "      kubectl get jobs.workers.io ingest-ada -o jsonpath='{.status.children}'   (kubeworkers children default/ingest-ada)"
  echo "      (logs: $DEMO/, stop with: make demo-down)"
  [[ "$phase" == "Succeeded" ]]
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  env) echo "export KUBECONFIG=$KUBECONFIG" ;;
  *) echo "usage: hack/demo.sh up|down|env" >&2; exit 2 ;;
esac
