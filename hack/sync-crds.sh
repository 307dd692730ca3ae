#!/usr/bin/env bash
# Copy the CRDs (crds/, the single source of truth) into the Helm chart's crds/ folder.
# tests/unit/test_helm_chart.py fails when the two differ, so run this after editing crds/.
#
# Usage: hack/sync-crds.sh [--check]
#   --check   change nothing; exit 1 and name the files that differ
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/crds"
DST="$ROOT/helm/kubeworkers/crds"

shopt -s nullglob
sources=("$SRC"/*.yaml)
if (( ${#sources[@]} == 0 )); then
  echo "sync-crds: no CRDs in $SRC" >&2
  exit 1
fi

if [[ "${1:-}" == "--check" ]]; then
  if diff -r "$SRC" "$DST" >/dev/null; then exit 0; fi
  echo "sync-crds: $DST differs from $SRC; run hack/sync-crds.sh" >&2
  diff -rq "$SRC" "$DST" >&2 || true
  exit 1
fi

mkdir -p "$DST"
# Remove CRDs that no longer exist upstream, so a renamed CRD does not linger in the chart.
for shipped in "$DST"/*.yaml; do
  [[ -e "$SRC/$(basename "$shipped")" ]] || rm -v -- "$shipped"
done
cp -v -- "${sources[@]}" "$DST/"
