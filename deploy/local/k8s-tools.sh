#!/usr/bin/env bash
# Renders the Kubernetes manifests in deploy/k8s without a cluster and without the network at
# render time. Kustomize v5 comes from, in order:
#   1. `kubectl kustomize`, when the kubectl on PATH embeds Kustomize v5 (kubectl >= 1.27);
#   2. otherwise `kustomize` built once with the Go toolchain from the tools module
#      deploy/local/tools (a `tool` line pins sigs.k8s.io/kustomize/kustomize/v5), cached in
#      .local/bin and rebuilt only when that module's go.mod/go.sum change.
#
#   deploy/local/k8s-tools.sh install       make sure a renderer is there (builds it if needed)
#   deploy/local/k8s-tools.sh which         say which renderer `build` uses
#   deploy/local/k8s-tools.sh build DIR     render a kustomization directory to stdout
#
# QBO_KUSTOMIZE=kubectl|go forces one of the two (the tests use `go` to check that both agree).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="${QBO_LOCAL_DIR:-$root/.local}"
logs="$state/logs"
kustomize_bin="$state/bin/kustomize"

say() { printf '[k8s-tools] %s\n' "$*" >&2; }
die() { printf '[k8s-tools] error: %s\n' "$*" >&2; exit 1; }

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

kubectl_has_kustomize_v5() {
  command -v kubectl >/dev/null 2>&1 || return 1
  local version
  # Prints e.g. "Kustomize Version: v5.5.0"; --client never contacts a cluster.
  version="$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\)\..*/\1/p')"
  [[ -n "$version" && "$version" -ge 5 ]]
}

install_go_kustomize() {
  local stamp
  stamp="$(stamp_of "$here/tools/go.mod" "$here/tools/go.sum")"
  if [[ -x "$kustomize_bin" && -f "$kustomize_bin.stamp" && "$(cat "$kustomize_bin.stamp")" == "$stamp" ]]; then
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "go is required to build kustomize (or put kubectl >= 1.27 on PATH)"
  say "building kustomize v5 with go install (first run only)"
  mkdir -p "$state/bin" "$logs"
  (cd "$here/tools" && GOBIN="$state/bin" GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5) \
    >"$logs/go-kustomize.log" 2>&1 || {
      tail -30 "$logs/go-kustomize.log" >&2
      die "go install kustomize failed (see $logs/go-kustomize.log)"
    }
  echo "$stamp" >"$kustomize_bin.stamp"
}

renderer() { # prints kubectl or go
  case "${QBO_KUSTOMIZE:-}" in
    kubectl) kubectl_has_kustomize_v5 || die "QBO_KUSTOMIZE=kubectl, but no kubectl with Kustomize v5 on PATH"; echo kubectl ;;
    go) echo go ;;
    "") if kubectl_has_kustomize_v5; then echo kubectl; else echo go; fi ;;
    *) die "QBO_KUSTOMIZE must be kubectl or go, not '$QBO_KUSTOMIZE'" ;;
  esac
}

cmd="${1:-}"
case "$cmd" in
  install)
    [[ "$(renderer)" == go ]] && install_go_kustomize
    exit 0
    ;;
  which)
    if [[ "$(renderer)" == kubectl ]]; then
      echo "kubectl kustomize ($(kubectl version --client 2>/dev/null | tr '\n' ' '))"
    else
      echo "kustomize built from deploy/local/tools ($kustomize_bin)"
    fi
    ;;
  build)
    [[ $# -eq 2 ]] || die "usage: $0 build DIR"
    [[ -f "$2/kustomization.yaml" ]] || die "$2 has no kustomization.yaml"
    if [[ "$(renderer)" == kubectl ]]; then
      exec kubectl kustomize "$2"
    fi
    install_go_kustomize
    exec "$kustomize_bin" build "$2"
    ;;
  *)
    echo "usage: $0 install|which|build DIR" >&2
    exit 2
    ;;
esac
