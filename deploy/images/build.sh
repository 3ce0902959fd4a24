#!/usr/bin/env bash
# Builds the container images from what the package registries serve, for machines that reach
# no image registry (docs/design.md, "Container images"):
#   qbo-local/python:3.11-bookworm  Debian bookworm (debootstrap) with Debian's Python 3.11
#   qbo-sync:local                  the project's Dockerfile, unchanged but for PYTHON_IMAGE
#   qbo-local/kafka:4.1.1           the Kafka jars infra.sh resolves with Maven, on Debian's Java 17
#   qbo-local/ferretdb:1.24.2       the FerretDB binary infra.sh builds with Go, on Debian's PostgreSQL
#
#   deploy/images/build.sh [all|base|app|kafka|ferretdb]   (default: all)
#
# Idempotent and cached: the base is rebuilt only when its inputs change (QBO_IMAGES_REFRESH=1
# forces it, e.g. for Debian's security updates), the others reuse Docker's layer cache. Needs a
# Docker engine (deploy/images/engine.sh), root (debootstrap), and what infra.sh install needs.
# Every build step uses the host's network: the engine runs without a bridge (loopback only).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="${QBO_LOCAL_DIR:-$root/.local}"

base_image="${QBO_BASE_IMAGE:-qbo-local/python:3.11-bookworm}"
app_image="${QBO_APP_IMAGE:-qbo-sync:local}"
kafka_image="${QBO_KAFKA_IMAGE:-qbo-local/kafka:4.1.1}"
ferretdb_image="${QBO_FERRETDB_IMAGE:-qbo-local/ferretdb:1.24.2}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
packages=python3,python3-venv,python-is-python3,ca-certificates
# A TLS-inspecting proxy between this machine and PyPI needs its certificate authority inside
# the image too, for the Dockerfile's pip install: the host's local ones are copied in.
local_cas=/usr/local/share/ca-certificates

# The classic builder: BuildKit would fetch the frontend named by the Dockerfile's `# syntax=`
# line from Docker Hub, and needs the buildx plugin, which Debian's docker.io lacks.
export DOCKER_BUILDKIT=0

say() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }

timed() { # timed WHAT COMMAND…
  local what="$1" start=$SECONDS
  shift
  "$@"
  say "$what: $((SECONDS - start)) s"
}

base_stamp() {
  {
    echo "bookworm $packages $mirror $security_mirror v1"
    find "$local_cas" -name '*.crt' -type f -print0 2>/dev/null | sort -z | xargs -0r cat
  } | sha256sum | cut -c1-16
}

image_env() { # image_env IMAGE NAME: the value of an ENV of that image, if it exists
  docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$1" 2>/dev/null \
    | sed -n "s/^$2=//p"
}

build_base() {
  local stamp rootfs
  stamp="$(base_stamp)"
  if [[ "${QBO_IMAGES_REFRESH:-0}" != 1 && "$(image_env "$base_image" QBO_BASE_STAMP)" == "$stamp" ]]; then
    say "$base_image is up to date"
    return 0
  fi
  command -v debootstrap >/dev/null || die "debootstrap is required (apt-get install debootstrap)"
  [[ $EUID -eq 0 ]] || die "debootstrap needs root"
  rootfs="$(mktemp -d "${TMPDIR:-/var/tmp}/qbo-rootfs.XXXXXX")"
  # shellcheck disable=SC2064 # the path is known now
  trap "rm -rf '$rootfs'" RETURN
  say "debootstrap of Debian bookworm with $packages"
  debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" \
    >"$state/logs/debootstrap.log" 2>&1 \
    || { tail -30 "$state/logs/debootstrap.log" >&2; die "debootstrap failed (see $state/logs/debootstrap.log)"; }
  cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security_mirror bookworm-security main
SOURCES
  if compgen -G "$local_cas/*.crt" >/dev/null; then
    cp "$local_cas"/*.crt "$rootfs/usr/local/share/ca-certificates/"
  fi
  # No service starts inside an image build; Debian's own images say so the same way.
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod 755 "$rootfs/usr/sbin/policy-rc.d"
  {
    chroot "$rootfs" update-ca-certificates
    chroot "$rootfs" apt-get update
    DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get -y upgrade
    chroot "$rootfs" apt-get clean
  } >>"$state/logs/debootstrap.log" 2>&1 \
    || { tail -30 "$state/logs/debootstrap.log" >&2; die "updating the base failed (see $state/logs/debootstrap.log)"; }
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/tmp/* \
    "$rootfs"/var/log/*.log "$rootfs"/etc/resolv.conf "$rootfs"/etc/hostname
  tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "ENV QBO_BASE_STAMP=$stamp" \
    --change 'CMD ["python3"]' \
    - "$base_image" >/dev/null
  say "$base_image: $(docker image inspect -f '{{.Size}}' "$base_image" | numfmt --to=iec)"
}

build_app() {
  docker build --network host --build-arg "PYTHON_IMAGE=$base_image" -t "$app_image" \
    -f "$root/Dockerfile" "$root" >"$state/logs/build-app.log" 2>&1 \
    || { tail -30 "$state/logs/build-app.log" >&2; die "docker build of $app_image failed (see $state/logs/build-app.log)"; }
}

build_from_context() { # build_from_context IMAGE DIR FILE…: DIR's Dockerfile with FILEs beside it
  local image="$1" dir="$2" context
  shift 2
  context="$(mktemp -d "${TMPDIR:-/var/tmp}/qbo-context.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$context'" RETURN
  cp -r "$dir"/. "$@" "$context/"
  cp "$here/probe.py" "$context/"
  # The same content gives the same layer: fresh copies (a new clone, new jars) keep the cache.
  find "$context" -exec touch -h -d @0 {} +
  docker build --network host --build-arg "BASE_IMAGE=$base_image" -t "$image" "$context" \
    >"$state/logs/build-$(basename "$dir").log" 2>&1 \
    || { tail -30 "$state/logs/build-$(basename "$dir").log" >&2; die "docker build of $image failed (see $state/logs/build-$(basename "$dir").log)"; }
}

build_kafka() {
  "$root/deploy/local/infra.sh" install
  build_from_context "$kafka_image" "$here/kafka" "$state/kafka/libs"
}

build_ferretdb() {
  "$root/deploy/local/infra.sh" install
  build_from_context "$ferretdb_image" "$here/ferretdb" "$state/bin/ferretdb-local"
}

docker info >/dev/null 2>&1 || die "no Docker engine answers (deploy/images/engine.sh starts one)"
mkdir -p "$state/logs"

case "${1:-all}" in
  base) timed "$base_image" build_base ;;
  app) timed "$app_image" build_app ;;
  kafka) timed "$kafka_image" build_kafka ;;
  ferretdb) timed "$ferretdb_image" build_ferretdb ;;
  all)
    # One after another: the machine's two cores are shared.
    timed "$base_image" build_base
    timed "$app_image" build_app
    timed "$kafka_image" build_kafka
    timed "$ferretdb_image" build_ferretdb
    ;;
  *) die "usage: $0 [all|base|app|kafka|ferretdb]" ;;
esac
