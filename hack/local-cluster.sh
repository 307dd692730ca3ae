#!/usr/bin/env bash
# Local Kubernetes control plane for tests and demos: up | down [--purge] | status | env
# Thin wrapper around hack/local_cluster.py (see its docstring).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="python3"; fi
fi
cd "$ROOT"
exec "$PY" -m hack.local_cluster "$@"
