#!/usr/bin/env bash
# A Docker engine for the local images, and Docker Compose v2 (docs/design.md, "Container images").
#
#   deploy/images/engine.sh up      use the engine that answers (DOCKER_HOST or the default
#                                   socket), else start Debian's dockerd here, loopback only;
#                                   then make sure `docker compose` (2.24+) is there
#   deploy/images/engine.sh down    stop the dockerd this script started (no other)
#   deploy/images/engine.sh status  say which engine answers
#
# What is missing is installed, as root: Debian's docker.io and debootstrap with apt-get, and the
# compose plugin built with `go install` from the Go module proxy (Debian's docker-compose 1.29
# rejects compose.yaml's top-level `name` and the override's `!reset`). The dockerd started here
# has no default bridge, no iptables rules and no IP forwarding: containers use the host's
# network, and the tests and compose.local-images.yaml bind them to 127.0.0.1. Its data root is
# the engine's default, kept between runs as the image cache.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="${QBO_LOCAL_DIR:-$root/.local}"
pidfile="$state/run/dockerd.pid"
compose_version=v2.29.7
# Where the docker CLI looks for plugins (CI may run without HOME).
plugins="${DOCKER_CONFIG:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.docker}/cli-plugins"

say() { printf '[engine] %s\n' "$*" >&2; }
die() { printf '[engine] error: %s\n' "$*" >&2; exit 1; }

answers() { timeout 20 docker info >/dev/null 2>&1; }

running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

apt_install() { # apt_install PACKAGE…: Debian's packages, without starting their services
  if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
    die "install Debian's $* (apt-get install $*, as root)"
  fi
  say "installing Debian's $* with apt-get (first run only)"
  local policy=/usr/sbin/policy-rc.d ours=0
  if [[ ! -e "$policy" ]]; then
    # The package would start dockerd with its default bridge: the start here is ours.
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
  fi
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "$@"; } >"$state/logs/apt-engine.log" 2>&1 \
    || { ((ours)) && rm -f "$policy"; tail -20 "$state/logs/apt-engine.log" >&2; die "apt-get install $* failed"; }
  ((ours)) && rm -f "$policy"
  return 0
}

socket() { # the unix socket dockerd serves: DOCKER_HOST's, else the default
  local host="${DOCKER_HOST:-unix:///var/run/docker.sock}"
  [[ "$host" == unix://* ]] || die "DOCKER_HOST=$host answers nothing, and dockerd is started here only on a unix socket"
  echo "${host#unix://}"
}

start_engine() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
  [[ $EUID -eq 0 ]] || die "no Docker engine answers, and starting dockerd needs root"
  local sock
  sock="$(socket)"
  say "starting dockerd on $sock (no bridge, no iptables; loopback only)"
  mkdir -p "$(dirname "$sock")"
  setsid nohup dockerd --host "unix://$sock" --pidfile "$pidfile" \
    --bridge=none --iptables=false --ip-forward=false --ip-masq=false --userland-proxy=false \
    >>"$state/logs/dockerd.log" 2>&1 </dev/null &
  local deadline=$((SECONDS + 60))
  until answers; do
    ((SECONDS < deadline)) || { tail -20 "$state/logs/dockerd.log" >&2; die "dockerd did not answer within 60 s"; }
    sleep 0.5
  done
}

compose_ok() { # docker compose 2.24 or later (`!reset` in the override)
  local version
  version="$(docker compose version --short 2>/dev/null)" || return 1
  version="${version#v}"
  [[ "$version" =~ ^2\.([0-9]+) ]] && ((BASH_REMATCH[1] >= 24))
}

install_compose() {
  compose_ok && return 0
  command -v go >/dev/null || die "Docker Compose 2.24+ is missing, and Go is needed to build it"
  say "building Docker Compose $compose_version with go install (first run only, 2 to 4 minutes)"
  local bin
  bin="$(mktemp -d)"
  GOBIN="$bin" GOFLAGS=-mod=mod go install \
    -ldflags "-X github.com/docker/compose/v2/internal.Version=$compose_version" \
    "github.com/docker/compose/v2/cmd@$compose_version" >"$state/logs/go-compose.log" 2>&1 \
    || { rm -rf "$bin"; tail -20 "$state/logs/go-compose.log" >&2; die "go install of compose failed"; }
  mkdir -p "$plugins"
  mv "$bin/cmd" "$plugins/docker-compose"
  rm -rf "$bin"
  compose_ok || die "the compose plugin built in $plugins does not answer"
}

mkdir -p "$state/logs" "$state/run"

case "${1:-up}" in
  up)
    if answers; then
      say "a Docker engine answers ($(docker info -f '{{.ServerVersion}}' 2>/dev/null))"
    else
      start_engine
    fi
    install_compose
    ;;
  down)
    if running; then
      pid="$(cat "$pidfile")"
      kill -TERM "$pid"
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && die "dockerd ($pid) did not stop within 30 s"
      say "stopped dockerd"
    fi
    rm -f "$pidfile"
    ;;
  status)
    if answers; then
      echo "engine: $(docker info -f '{{.ServerVersion}}') ($(running && echo "started here" || echo "not started here"))"
    else
      echo "engine: none answers"
    fi
    ;;
  *)
    die "usage: $0 up|down|status"
    ;;
esac
