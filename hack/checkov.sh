#!/usr/bin/env bash
# Static security scan of the Helm chart's rendered manifests with checkov.
#
# checkov is ~300 MB of dependencies with pins of its own, so it lives in a side virtualenv
# in the cache, not in the project's .venv:
#   ${KUBEWORKERS_CACHE:-~/.cache/kubeworkers}/checkov-venv
#
# Usage: hack/checkov.sh --install   create the side venv (checkov pinned below)
#        hack/checkov.sh              render every install mode and scan it, skipping the
#                                     checks docs/security.md justifies
# tests/unit/test_helm_security_scan.py runs the same scan and fails on any finding that
# docs/security.md does not justify.
set -euo pipefail

CHECKOV_VERSION=3.3.30
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${KUBEWORKERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubeworkers}"
VENV="$CACHE/checkov-venv"

if [[ "${1:-}" == "--install" ]]; then
  if [[ -x "$VENV/bin/checkov" ]] && "$VENV/bin/checkov" --version | grep -qx "$CHECKOV_VERSION"; then
    echo "$VENV/bin/checkov"; exit 0
  fi
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
  echo "$VENV/bin/checkov"; exit 0
fi

CHECKOV="${KUBEWORKERS_CHECKOV:-$VENV/bin/checkov}"
[[ -x "$CHECKOV" ]] || { echo "checkov missing: run hack/checkov.sh --install" >&2; exit 1; }
HELM="${KUBEWORKERS_HELM:-$(bash "$ROOT/hack/build-binaries.sh" --print-dir)/helm}"
[[ -x "$HELM" ]] || HELM="$(command -v helm)" || { echo "helm missing: run hack/build-binaries.sh" >&2; exit 1; }

# The justified checks are the CKV_K8S_* ids in docs/security.md's table.
# shellcheck source=hack/versions.env
source "$ROOT/hack/versions.env"
render() { "$HELM" template kw "$ROOT/helm/kubeworkers" -n kw-system --kube-version "$KUBERNETES_VERSION" "$@"; }
skips="$(grep -oE '^\| *CKV_K8S_[0-9]+' "$ROOT/docs/security.md" | tr -d '| ' | sort -u | paste -sd, - || true)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
render >"$out/default.yaml"
render --set operator.watchNamespace=team-a >"$out/namespaced.yaml"
render --set redis.persistence.enabled=false >"$out/redis-ephemeral.yaml"
render --set redis.enabled=false --set redis.url=rediss://redis.example:6380/0 >"$out/external-redis.yaml"
render --set networkPolicy.enabled=false >"$out/no-network-policies.yaml"
render \
  --set metrics.serviceMonitor.enabled=true --set metrics.podMonitor.enabled=true \
  --set metrics.grafanaDashboard.enabled=true >"$out/monitoring.yaml"
"$CHECKOV" --quiet --compact --skip-download --framework kubernetes -d "$out" ${skips:+--skip-check "$skips"}
