#!/usr/bin/env bash
# kubeworkers on kind, for machines with Docker (our CI machines have none: the tests use the
# local control plane instead, see docs/testing.md).
#
#   1. create the kind cluster from kind-config.yaml (kept if it exists)
#   2. build the operator and worker images and load them into the cluster's nodes
#   3. apply the CRDs server-side (what an upgrade needs too), helm upgrade --install the chart
#   4. apply examples/workerpool.yaml and examples/job.yaml and show the Job
#
# Usage: hack/kind-up.sh [--down]
# Environment: KIND_CLUSTER_NAME (kubeworkers), KIND_NODE_IMAGE, KUBEWORKERS_NAMESPACE
# (kubeworkers-system), KUBEWORKERS_EXAMPLES_NAMESPACE (default), KUBEWORKERS_HELM_ARGS (extra
# `helm upgrade` arguments, e.g. "--set redis.persistence.size=5Gi"), KUBEWORKERS_EXAMPLE_TIMEOUT
# (seconds to wait for the example Job, 180), DOCKER, KIND, KUBECTL, HELM (binaries; default:
# from PATH, helm also from the hack/build-binaries.sh cache).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER_NAME:-kubeworkers}"
NAMESPACE="${KUBEWORKERS_NAMESPACE:-kubeworkers-system}"
# The example WorkerPool names this worker image; its namespace gets the chart's Redis Secret.
EXAMPLES_NAMESPACE="${KUBEWORKERS_EXAMPLES_NAMESPACE:-default}"
EXAMPLE_TIMEOUT="${KUBEWORKERS_EXAMPLE_TIMEOUT:-180}"
read -r -a EXTRA_HELM_ARGS <<<"${KUBEWORKERS_HELM_ARGS:-}"
OPERATOR_IMAGE=kubeworkers-operator:dev
WORKER_IMAGE=kubeworkers-worker:dev

log() { printf '[kind-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

find_tool() {  # name env-override -> path
  local name="$1" override="$2" cached
  if [[ -n "$override" ]]; then echo "$override"; return; fi
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
  if [[ -x "$ROOT/.venv/bin/$name" ]]; then echo "$ROOT/.venv/bin/$name"; return; fi
  if [[ "$name" == helm ]]; then
    cached="$(bash "$ROOT/hack/build-binaries.sh" --print-dir)/helm"
    if [[ -x "$cached" ]]; then echo "$cached"; return; fi
  fi
  die "$name not found: install it or set ${name^^}=/path/to/$name"
}

DOCKER="$(find_tool docker "${DOCKER:-}")"
KIND="$(find_tool kind "${KIND:-}")"
KUBECTL="$(find_tool kubectl "${KUBECTL:-}")"
HELM="$(find_tool helm "${HELM:-}")"
"$DOCKER" info >/dev/null 2>&1 || die "docker cannot reach a Docker engine (is the daemon running?)"

if [[ "${1:-}" == "--down" ]]; then
  "$KIND" delete cluster --name "$CLUSTER"
  exit 0
fi

if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "kind cluster $CLUSTER exists; reusing it"
else
  log "creating kind cluster $CLUSTER"
  "$KIND" create cluster --name "$CLUSTER" --config "$ROOT/kind-config.yaml" \
    ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 180s
fi
export KUBECONFIG="${KUBECONFIG:-$HOME/.kube/config}"
"$KUBECTL" config use-context "kind-$CLUSTER" >/dev/null

log "building $OPERATOR_IMAGE and $WORKER_IMAGE"
DOCKER_BUILDKIT=1 "$DOCKER" build -f "$ROOT/operator/Dockerfile" -t "$OPERATOR_IMAGE" "$ROOT"
[[ -f "$ROOT/worker_image/Dockerfile" ]] || die "worker_image/Dockerfile is missing"
DOCKER_BUILDKIT=1 "$DOCKER" build -f "$ROOT/worker_image/Dockerfile" -t "$WORKER_IMAGE" "$ROOT"
log "loading the images into the nodes"
"$KIND" load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$WORKER_IMAGE"

# Helm installs crds/ only on first install and never upgrades them; applying them first,
# server-side, makes a re-run of this script an upgrade that also updates the CRDs.
log "applying CRDs"
"$KUBECTL" apply --server-side --force-conflicts -f "$ROOT/crds/"
"$KUBECTL" wait --for condition=Established --timeout=60s \
  crd/jobs.workers.io crd/workerpools.workers.io

# The chart writes the Redis Secret into the examples' namespace, so it must exist first.
"$KUBECTL" create namespace "$EXAMPLES_NAMESPACE" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null

log "installing the chart into $NAMESPACE"
"$HELM" upgrade --install kubeworkers "$ROOT/helm/kubeworkers" \
  --namespace "$NAMESPACE" --create-namespace \
  --set operator.image.repository="${OPERATOR_IMAGE%:*}" \
  --set operator.image.tag="${OPERATOR_IMAGE##*:}" \
  --set operator.image.pullPolicy=Never \
  --set "redis.secretNamespaces={$EXAMPLES_NAMESPACE}" \
  --wait --timeout 5m ${EXTRA_HELM_ARGS[@]+"${EXTRA_HELM_ARGS[@]}"}

log "applying the examples in namespace $EXAMPLES_NAMESPACE"
"$KUBECTL" apply -n "$EXAMPLES_NAMESPACE" -f "$ROOT/examples/workerpool.yaml"
"$KUBECTL" apply -n "$EXAMPLES_NAMESPACE" -f "$ROOT/examples/job.yaml"
"$KUBECTL" wait -n "$EXAMPLES_NAMESPACE" --for=jsonpath='{.status.phase}'=Succeeded \
  --timeout="${EXAMPLE_TIMEOUT}s" jobs.workers.io/word-count \
  || log "the example Job has not succeeded yet; see: kubectl describe jobs.workers.io word-count"
"$KUBECTL" get -n "$EXAMPLES_NAMESPACE" workerpools.workers.io,jobs.workers.io

cat >&2 <<NEXT

kubeworkers runs on kind cluster "$CLUSTER" (context kind-$CLUSTER).
  kubectl get jobs.workers.io -w                  # watch Jobs
  kubectl apply -f examples/slow-job.yaml         # more work, watch the pool scale
  kubectl -n $NAMESPACE logs deploy/kubeworkers   # operator log
  bash hack/kind-up.sh --down                     # delete the cluster
NEXT
