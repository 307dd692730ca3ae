#!/usr/bin/env bash
# What `make demo`, `make test` and CI (.ci/run) need on this machine, installed when that
# can be done without asking, else demanded in one line that says what to run.
# The one place these requirements live: the Makefile and .ci/run call this script.
#
# Usage: hack/ensure-prereqs.sh [--for demo|test|venv] [--check]
#   --for demo   python3 >= 3.11 with venv, redis-server >= 7.0, redis-sentinel (the Sentinel
#                failover tests), openssl, make; Go >= 1.26 only while
#                the control-plane binaries are not built yet; the project's .venv
#   --for test   the same, plus checkov's side venv (the chart's security-scan test) and chromium with
#                chromium-driver (the web console's browser tests) (default)
#   --for venv   only the project's .venv
#   --check      install nothing: report what is missing and exit 1 if anything is
#
# System packages are installed with apt-get when this runs as root or with password-less
# sudo; otherwise the script stops with the apt-get line to run. Go is never installed
# (Debian's is too old): it is needed once, to build the binaries into ~/.cache/kubeworkers.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

FOR=test
CHECK=0
while (($#)); do
  case "$1" in
    --for) FOR="$2"; shift 2 ;;
    --check) CHECK=1; shift ;;
    *) echo "usage: hack/ensure-prereqs.sh [--for demo|test|venv] [--check]" >&2; exit 2 ;;
  esac
done
case "$FOR" in demo|test|venv) ;; *) echo "--for: demo, test or venv" >&2; exit 2 ;; esac

say() { printf '[prereqs] %s\n' "$*" >&2; }
die() { printf '[prereqs] %s\n' "$*" >&2; exit 1; }

# version_at_least HAVE WANT (dotted numbers)
version_at_least() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

# ------------------------------------------------------------------ system packages

python_ok() {
  command -v python3 >/dev/null && python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}
chromium_ok() { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }
redis_ok() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || return 1
  local v; v="$(redis-server --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p')"
  version_at_least "$v" 7.0
}

if [[ "$FOR" != venv ]]; then
  packages=()
  python_ok || packages+=(python3 python3-venv)
  redis_ok || packages+=(redis-server)
  command -v redis-sentinel >/dev/null || packages+=(redis-sentinel)
  command -v openssl >/dev/null || packages+=(openssl)
  command -v make >/dev/null || packages+=(make)
  if [[ "$FOR" == test ]]; then
    chromium_ok || packages+=(chromium)
    command -v chromedriver >/dev/null || packages+=(chromium-driver)
  fi
  if ((${#packages[@]})); then
    line="apt-get install -y --no-install-recommends ${packages[*]}"
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then
      if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"; else SUDO="-"; fi
    fi
    if ((CHECK)) || [[ "$SUDO" == "-" ]] || ! command -v apt-get >/dev/null; then
      die "missing: ${packages[*]} (redis-server >= 7.0, python3 >= 3.11 with venv). Run: sudo $line"
    fi
    say "installing ${packages[*]}"
    $SUDO apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${packages[@]}" >&2
    python_ok && redis_ok && command -v redis-sentinel >/dev/null || die "installed ${packages[*]}, but python3 >= 3.11 redis-server >= 7.0 or redis-sentinel is still missing; this distribution's packages are too old"
    if [[ "$FOR" == test ]]; then
      chromium_ok && command -v chromedriver >/dev/null || die "installed ${packages[*]}, but chromium or chromedriver is still missing"
    fi
  fi

  # Go is needed only to build the control-plane binaries, once.
  bins="$(bash hack/build-binaries.sh --print-dir)"
  built=1
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kwok helm; do
    [[ -x "$bins/$b" ]] || built=0
  done
  if ((!built)); then
    gov="$(go env GOVERSION 2>/dev/null | sed 's/^go//' || true)"
    if [[ -z "$gov" ]] || ! version_at_least "$gov" 1.26; then
      die "Go >= 1.26 is needed once, to build the control-plane binaries into $bins (found: ${gov:-none}). Install it from https://go.dev/dl/ and put its bin/ on PATH, then run this again"
    fi
  fi
fi

# ------------------------------------------------------------------ the project's venv

VENV="$ROOT/.venv"
STAMP="$VENV/.kubeworkers-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]]; then
  ((CHECK)) && die "the project's virtualenv is missing or out of date. Run: bash hack/ensure-prereqs.sh --for venv"
  python_ok || die "python3 >= 3.11 with the venv module is needed. Run: sudo apt-get install -y python3 python3-venv"
  say "installing the project into $VENV (pip install -e '.[dev]')"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]' >&2
  echo "$want" >"$STAMP"
fi

# ------------------------------------------------------------------ checkov (the chart's scan test)

if [[ "$FOR" == test ]]; then
  if ((CHECK)); then
    checkov="${KUBEWORKERS_CHECKOV:-${KUBEWORKERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubeworkers}/checkov-venv/bin/checkov}"
    [[ -x "$checkov" ]] || die "checkov is missing. Run: bash hack/checkov.sh --install"
  else
    bash hack/checkov.sh --install >/dev/null
  fi
fi
exit 0
