#!/usr/bin/env bash
# Local infrastructure without Docker: a single-node KRaft Apache Kafka broker run with `java`
# from jars that Maven resolves from Maven Central, and FerretDB (MongoDB wire protocol over
# SQLite) built with the Go toolchain. Everything lives under .local/ (git-ignored).
#
#   deploy/local/infra.sh up       install what is missing, start both, wait until ready (idempotent)
#   deploy/local/infra.sh down     stop both (idempotent)
#   deploy/local/infra.sh status   say what runs where
#   deploy/local/infra.sh install  only fetch/build (used by CI before the tests)
#   deploy/local/infra.sh reset    stop both and delete their data
#
# Ports: QBO_KAFKA_PORT (9092), QBO_KAFKA_CONTROLLER_PORT (9093), QBO_MONGO_PORT (27017).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="${QBO_LOCAL_DIR:-$root/.local}"
logs="$state/logs"
run="$state/run"

kafka_port="${QBO_KAFKA_PORT:-9092}"
controller_port="${QBO_KAFKA_CONTROLLER_PORT:-9093}"
mongo_port="${QBO_MONGO_PORT:-27017}"
kafka_heap="${QBO_KAFKA_HEAP:--Xms256m -Xmx768m}"

kafka_libs="$state/kafka/libs"
kafka_data="$state/kafka/data"
ferret_bin="$state/bin/ferretdb-local"
ferret_data="$state/ferretdb"

say() { printf '[infra] %s\n' "$*" >&2; }
die() { printf '[infra] error: %s\n' "$*" >&2; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required ($2)"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() { # alive NAME -> 0 if our pid file names a live process
  local pidfile="$run/$1.pid"
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

install_kafka() {
  local stamp
  stamp="$(stamp_of "$here/kafka/pom.xml")"
  if [[ -f "$kafka_libs/.stamp" && "$(cat "$kafka_libs/.stamp")" == "$stamp" ]]; then
    return 0
  fi
  need mvn "Apache Maven resolves the Kafka jars"
  need java "Java 17+ runs the Kafka broker"
  say "resolving Apache Kafka jars from Maven Central (first run only)"
  rm -rf "$kafka_libs"
  mkdir -p "$kafka_libs"
  (cd "$here/kafka" && mvn -q -B -ntp dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$kafka_libs" -Dmdep.prependGroupId=false) \
    >"$logs/maven.log" 2>&1 || { tail -30 "$logs/maven.log" >&2; die "maven failed (see $logs/maven.log)"; }
  rm -rf "$here/kafka/target"
  echo "$stamp" >"$kafka_libs/.stamp"
}

install_ferretdb() {
  local stamp
  stamp="$(stamp_of "$here/tools/go.mod" "$here/tools/go.sum" "$here/tools/cmd/ferretdb-local/main.go")"
  if [[ -x "$ferret_bin" && -f "$ferret_bin.stamp" && "$(cat "$ferret_bin.stamp")" == "$stamp" ]]; then
    return 0
  fi
  need go "the Go toolchain builds FerretDB"
  say "building FerretDB v1.24.2 with go install (first run only)"
  mkdir -p "$state/bin"
  (cd "$here/tools" && GOBIN="$state/bin" GOFLAGS=-mod=mod go install ./cmd/ferretdb-local) \
    >"$logs/go-install.log" 2>&1 || { tail -30 "$logs/go-install.log" >&2; die "go install failed (see $logs/go-install.log)"; }
  echo "$stamp" >"$ferret_bin.stamp"
}

check_port_free() { # check_port_free NAME PORT
  if port_open "$2"; then
    die "port $2 (for $1) is taken by another process; stop it or pick another port with QBO_${1^^}_PORT=…"
  fi
}

start_kafka() {
  if alive kafka; then say "kafka already running on 127.0.0.1:$kafka_port"; return 0; fi
  check_port_free kafka "$kafka_port"
  check_port_free kafka_controller "$controller_port"
  mkdir -p "$kafka_data"
  local props="$state/kafka/server.properties"
  sed -e "s|@KAFKA_PORT@|$kafka_port|g" -e "s|@CONTROLLER_PORT@|$controller_port|g" \
      -e "s|@DATA_DIR@|$kafka_data|g" "$here/kafka/server.properties.in" >"$props"
  local java_opts=(-Djava.awt.headless=true -Dkafka.logs.dir="$logs"
    -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" -XX:+UseG1GC -XX:MaxGCPauseMillis=20)
  if [[ ! -f "$kafka_data/meta.properties" ]]; then
    local cluster_id
    cluster_id="$(python3 -c 'import base64,uuid;print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
    java "${java_opts[@]}" -cp "$kafka_libs/*" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$props" >"$logs/kafka-format.log" 2>&1 \
      || { cat "$logs/kafka-format.log" >&2; die "formatting the Kafka log dir failed"; }
  fi
  # shellcheck disable=SC2086
  setsid nohup java $kafka_heap "${java_opts[@]}" -cp "$kafka_libs/*" kafka.Kafka "$props" \
    >"$logs/kafka.out" 2>&1 </dev/null &
  echo $! >"$run/kafka.pid"
}

start_ferretdb() {
  if alive ferretdb; then say "ferretdb already running on 127.0.0.1:$mongo_port"; return 0; fi
  check_port_free mongo "$mongo_port"
  mkdir -p "$ferret_data"
  setsid nohup "$ferret_bin" -listen-addr "127.0.0.1:$mongo_port" -sqlite-dir "$ferret_data" \
    >"$logs/ferretdb.log" 2>&1 </dev/null &
  echo $! >"$run/ferretdb.pid"
}

wait_ready() { # wait_ready NAME PORT SECONDS
  local deadline=$((SECONDS + $3))
  until port_open "$2"; do
    alive "$1" || { tail -40 "$logs/$1".* >&2 || true; die "$1 exited during start-up (logs in $logs)"; }
    ((SECONDS < deadline)) || die "$1 did not open port $2 within $3 s (logs in $logs)"
    sleep 0.2
  done
}

stop() { # stop NAME
  local pidfile="$run/$1.pid"
  [[ -f "$pidfile" ]] || return 0
  local pid
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { say "$1 did not stop in 10 s; killing"; kill -KILL "$pid" 2>/dev/null || true; }
    say "stopped $1"
  fi
  rm -f "$pidfile"
}

mkdir -p "$logs" "$run"
case "${1:-up}" in
  install)
    install_kafka
    install_ferretdb
    ;;
  up)
    install_kafka
    install_ferretdb
    start_ferretdb
    start_kafka
    wait_ready ferretdb "$mongo_port" 30
    wait_ready kafka "$kafka_port" 90
    say "kafka    127.0.0.1:$kafka_port  (KAFKA_BOOTSTRAP_SERVERS)"
    say "ferretdb mongodb://127.0.0.1:$mongo_port/  (MONGODB_URI)"
    ;;
  down)
    stop kafka
    stop ferretdb
    ;;
  status)
    for name in kafka ferretdb; do
      if alive "$name"; then echo "$name: running (pid $(cat "$run/$name.pid"))"; else echo "$name: stopped"; fi
    done
    ;;
  reset)
    stop kafka
    stop ferretdb
    rm -rf "$kafka_data" "$ferret_data"
    say "data removed"
    ;;
  *)
    die "usage: $0 up|down|status|install|reset"
    ;;
esac
