#!/usr/bin/env bash
# Build (once) the control-plane binaries the local cluster needs, from the Go
# module proxy, into a cache outside the repository:
#
#   ${KUBEWORKERS_CACHE:-~/.cache/kubeworkers}/bin/<component>-<version>/<binary>
#
# Usage: hack/build-binaries.sh [--print-dir]
#   --print-dir   only print the directory that holds (or will hold) the binaries
#
# Lookup order per binary: $KUBEBUILDER_ASSETS, then PATH (only if the version
# matches the pin in hack/versions.env), then the cache, then a build.
#
# Why a throwaway module: k8s.io/kubernetes' go.mod replaces every k8s.io/<staging>
# module with ./staging/..., so `go install k8s.io/kubernetes/cmd/...@v` is refused.
# We require k8s.io/kubernetes from a scratch module and replace each staging module
# with its published v0.<minor>.<patch> tag instead. etcd's server module has the
# same problem (it replaces its sibling modules), hence the same trick.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

CACHE="${KUBEWORKERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubeworkers}"
OUT="$CACHE/bin/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED=0

if [[ "${1:-}" == "--print-dir" ]]; then echo "$OUT"; exit 0; fi
mkdir -p "$OUT"

log() { printf '[build-binaries %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# want_version BINARY VERSION_SUBSTRING -> prints a path to a usable binary or nothing
have_binary() {
  local name="$1" want="$2" candidate
  for candidate in "${KUBEBUILDER_ASSETS:+$KUBEBUILDER_ASSETS/$name}" "$(command -v "$name" 2>/dev/null || true)"; do
    [[ -n "$candidate" && -x "$candidate" ]] || continue
    if "$candidate" --version 2>&1 | grep -q -- "$want"; then echo "$candidate"; return 0; fi
    if "$candidate" version 2>&1 | grep -q -- "$want"; then echo "$candidate"; return 0; fi
  done
  return 1
}

link_or_build() {  # name version-substring build-function
  local name="$1" want="$2" fn="$3" found
  if [[ -x "$OUT/$name" ]]; then return 0; fi
  if found="$(have_binary "$name" "$want")"; then
    log "using $found ($want)"; ln -sf "$found" "$OUT/$name"; return 0
  fi
  log "building $name $want (cold builds take minutes; cached in $OUT)"
  local start=$SECONDS
  "$fn"
  log "built $name in $((SECONDS - start))s"
}

build_kubernetes() {
  local mod="$CACHE/src/kubernetes-$KUBERNETES_VERSION" minor patch
  minor="$(echo "$KUBERNETES_VERSION" | cut -d. -f2)"
  patch="$(echo "$KUBERNETES_VERSION" | cut -d. -f3)"
  mkdir -p "$mod"
  if [[ ! -f "$mod/go.sum" ]]; then
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    {
      echo "module kubeworkers.local/k8sbuild"
      echo
      echo "go 1.26"
      echo
      echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
      echo
      grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/' "$gomod" \
        | awk -v v="v0.$minor.$patch" '{print "replace " $1 " => " $1 " " v}'
    } >"$mod/go.mod"
    # Resolve the full module graph once; later builds reuse go.mod/go.sum.
    (cd "$mod" && GOFLAGS="$GOFLAGS -mod=mod" go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBERNETES_VERSION" \
       "k8s.io/kubernetes/cmd/kube-controller-manager@$KUBERNETES_VERSION" \
       "k8s.io/kubernetes/cmd/kube-scheduler@$KUBERNETES_VERSION")
  fi
  local ld="-s -w"
  ld+=" -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
  ld+=" -X k8s.io/component-base/version.gitMajor=1"
  ld+=" -X k8s.io/component-base/version.gitMinor=$minor"
  ld+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ld+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
  ld+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
  ld+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
  ld+=" -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  (cd "$mod" && GOFLAGS="$GOFLAGS -mod=mod" go build -trimpath -tags selinux,notest -ldflags "$ld" \
     -o "$OUT/$BIN" "k8s.io/kubernetes/cmd/$BIN")
}

build_etcd() {
  local mod="$CACHE/src/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  if [[ ! -f "$mod/go.mod" ]]; then
    (cd "$mod" && go mod init kubeworkers.local/etcdbuild >/dev/null 2>&1 \
      && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  fi
  (cd "$mod" && GOFLAGS="$GOFLAGS -mod=mod" go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3)
}

build_kwok() { GOBIN="$OUT" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"; }
build_helm() {
  # Helm's default "cluster version" for template/lint is a build-time constant (v1.20 unless set).
  local minor helm_kube=""
  minor="$(echo "$KUBERNETES_VERSION" | cut -d. -f2)"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    helm_kube+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  GOBIN="$OUT" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION $helm_kube" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

for BIN in kube-apiserver kube-controller-manager kube-scheduler; do
  link_or_build "$BIN" "Kubernetes $KUBERNETES_VERSION" build_kubernetes
done
link_or_build etcd "etcd Version: ${ETCD_VERSION#v}" build_etcd
link_or_build kwok "$KWOK_VERSION" build_kwok
link_or_build helm "$HELM_VERSION" build_helm

log "binaries ready in $OUT"
echo "$OUT"
