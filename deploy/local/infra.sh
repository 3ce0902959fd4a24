#!/usr/bin/env bash
# Local infrastructure without Docker: a single-node KRaft Apache Kafka broker run with `java`
# from jars that Maven resolves from Maven Central, Debian's PostgreSQL, and FerretDB (MongoDB
# wire protocol over that PostgreSQL) built with the Go toolchain. Everything lives under .local/
# (git-ignored).
#
#   deploy/local/infra.sh up       install what is missing, start all three, wait until ready (idempotent)
#   deploy/local/infra.sh down     stop them (idempotent)
#   deploy/local/infra.sh status   say what runs where
#   deploy/local/infra.sh install  only fetch/build/install (used by CI before the tests)
#   deploy/local/infra.sh reset    stop them and delete their data
#   deploy/local/infra.sh psql …   psql on FerretDB's PostgreSQL database (over the unix socket)
#
# Ports: QBO_KAFKA_PORT (9092), QBO_KAFKA_CONTROLLER_PORT (9093), QBO_MONGO_PORT (27017),
# QBO_POSTGRES_PORT (15432).
#
# PostgreSQL refuses to run as root: run as root, this script runs it as the system user
# qbo-postgres (created if missing), which owns the cluster's directories.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="${QBO_LOCAL_DIR:-$root/.local}"
logs="$state/logs"
run="$state/run"

kafka_port="${QBO_KAFKA_PORT:-9092}"
controller_port="${QBO_KAFKA_CONTROLLER_PORT:-9093}"
mongo_port="${QBO_MONGO_PORT:-27017}"
pg_port="${QBO_POSTGRES_PORT:-15432}"
kafka_heap="${QBO_KAFKA_HEAP:--Xms256m -Xmx768m}"
# FerretDB's PostgreSQL connections (see start_ferretdb: too few can deadlock FerretDB v1).
ferret_pool="${QBO_FERRETDB_POOL:-200}"

kafka_libs="$state/kafka/libs"
kafka_data="$state/kafka/data"
ferret_bin="$state/bin/ferretdb-local"
# PostgreSQL compares these paths with the ones its processes report, so they are canonical.
pg_dir="$(realpath -m "$state/postgres")"
pg_data="$pg_dir/data"
pg_socket="$pg_dir/socket"
pg_role=ferretdb     # the cluster's superuser, as which FerretDB connects
pg_database=ferretdb # FerretDB keeps each MongoDB database as a schema of this one
pg_os_user=""        # set by postgres_user: who runs the server
as_pg_user=()        # set by postgres_user: the command prefix that switches to that user
pg_bin=""            # set by find_postgres: Debian's /usr/lib/postgresql/<version>/bin

say() { printf '[infra] %s\n' "$*" >&2; }
die() { printf '[infra] error: %s\n' "$*" >&2; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required ($2)"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running() { # running PID -> 0 if that process lives
  kill -0 "$1" 2>/dev/null || return 1
  # A killed process stays a zombie until init reaps it, which may take a while: dead all the same.
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ "${stat##*) }" != Z* ]]
}

alive() { # alive NAME -> 0 if our pid file names a live process
  local pidfile="$run/$1.pid"
  [[ -f "$pidfile" ]] && running "$(cat "$pidfile")"
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
  stamp="$(stamp_of "$here/tools/go.mod" "$here/tools/go.sum" "$here"/tools/cmd/ferretdb-local/*.go)"
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

find_postgres() {
  if [[ -n "${QBO_POSTGRES_BIN:-}" ]]; then
    pg_bin="$QBO_POSTGRES_BIN"
  else
    # Debian keeps initdb and postgres out of PATH, one directory per major version.
    pg_bin="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -1)"
    [[ -n "$pg_bin" ]] || pg_bin="$(dirname "$(command -v initdb 2>/dev/null || echo /none/initdb)")"
  fi
  [[ -x "$pg_bin/postgres" && -x "$pg_bin/initdb" ]]
}

install_postgres() {
  find_postgres && return 0
  if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    die "PostgreSQL is required: install Debian's package postgresql (apt-get install postgresql, as root), or set QBO_POSTGRES_BIN to a directory holding initdb and postgres"
  fi
  say "installing Debian's PostgreSQL with apt-get (first run only)"
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; } \
    >"$logs/apt-postgresql.log" 2>&1 || { tail -30 "$logs/apt-postgresql.log" >&2; die "apt-get install postgresql failed (see $logs/apt-postgresql.log)"; }
  find_postgres || die "PostgreSQL was installed but no initdb/postgres found under /usr/lib/postgresql"
}

postgres_user() { # who runs PostgreSQL: the invoking user, or as root an unprivileged system user
  if [[ $EUID -ne 0 ]]; then
    pg_os_user="$(id -un)"
    return 0
  fi
  pg_os_user="${QBO_POSTGRES_OS_USER:-qbo-postgres}"
  if ! getent passwd "$pg_os_user" >/dev/null; then
    say "creating the system user $pg_os_user to run PostgreSQL"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$pg_os_user" || die "useradd $pg_os_user failed"
  fi
  # setpriv execs (no intermediate process), so the pid recorded is the postmaster's.
  as_pg_user=(setpriv --reuid="$pg_os_user" --regid="$pg_os_user" --init-groups --)
}

psql_local() { # psql_local ARGS… psql as the superuser over the unix socket (trusted)
  "$pg_bin/psql" -h "$pg_socket" -p "$pg_port" -U "$pg_role" -X -v ON_ERROR_STOP=1 "$@"
}

init_postgres() { # the cluster's directories and, once, initdb
  postgres_user
  # A unix socket path is limited to 107 bytes, ".s.PGSQL.<port>" included.
  ((${#pg_socket} <= 90)) || die "$pg_socket is too long for a unix socket; set QBO_LOCAL_DIR to a shorter directory"
  mkdir -p "$pg_data" "$pg_socket"
  chmod 700 "$pg_data" "$pg_socket"
  if [[ $EUID -eq 0 ]]; then
    chown "$pg_os_user:" "$pg_data" "$pg_socket"
    "${as_pg_user[@]}" test -w "$pg_data" -a -w "$pg_socket" \
      || die "the system user $pg_os_user cannot reach $pg_dir: every directory above it must be searchable by others (chmod o+x), or set QBO_LOCAL_DIR to a directory that is"
  fi
  [[ -f "$pg_data/PG_VERSION" ]] && return 0
  say "creating the PostgreSQL cluster in $pg_data (first run only)"
  # Locale C and UTF-8 are what FerretDB checks for. Local connections are trusted: only the
  # owner (and root) can enter the socket directory. TCP on loopback needs the password kept in
  # $pg_dir/password.
  "${as_pg_user[@]}" "$pg_bin/initdb" -D "$pg_data" -U "$pg_role" -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >"$logs/initdb.log" 2>&1 \
    || { cat "$logs/initdb.log" >&2; find "$pg_data" -mindepth 1 -delete; die "initdb failed"; }
}

postgres_leftovers() { # pids of processes still working in the data directory
  local p
  for p in /proc/[0-9]*; do
    [[ "$(readlink "$p/cwd" 2>/dev/null)" == "$pg_data" ]] && echo "${p#/proc/}"
  done
  return 0
}

clear_after_crash() {
  # After a SIGKILL of the postmaster its backends live on until they notice, holding the old
  # shared memory, and PostgreSQL refuses to start until they are gone. Give them a moment,
  # then end them: their postmaster is dead, so they serve nobody.
  local left
  for _ in $(seq 1 50); do
    left="$(postgres_leftovers)"
    [[ -z "$left" ]] && break
    sleep 0.1
  done
  if [[ -n "$left" ]]; then
    say "ending PostgreSQL processes left from a crashed server: $(echo $left)"
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
    for _ in $(seq 1 50); do [[ -z "$(postgres_leftovers)" ]] && break; sleep 0.1; done
  fi
  # The lock files (postmaster.pid, and one beside the socket) name the dead postmaster.
  # PostgreSQL replaces a stale one itself (and reuses the shared memory postmaster.pid names),
  # unless that pid still answers a signal: the killed postmaster as a zombie not yet reaped, or
  # another process that got its pid since. Those are removed here.
  local lock old
  for lock in "$pg_data/postmaster.pid" "$pg_socket/.s.PGSQL.$pg_port.lock"; do
    [[ -f "$lock" ]] || continue
    old="$(head -1 "$lock")"
    if [[ "$old" =~ ^[0-9]+$ ]] && kill -0 "$old" 2>/dev/null; then
      say "removing the stale $lock (its pid $old is not a running postmaster)"
      rm -f "$lock"
    fi
  done
}

adopt_postgres() { # a live postmaster on our data directory whose pid file went missing
  local lock="$pg_data/postmaster.pid" pid
  [[ -f "$lock" ]] || return 1
  pid="$(head -1 "$lock")"
  [[ "$pid" =~ ^[0-9]+$ ]] && running "$pid" || return 1
  [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$pg_data" ]] || return 1
  echo "$pid" >"$run/postgres.pid"
}

start_postgres() {
  if alive postgres || adopt_postgres; then say "postgres already running on 127.0.0.1:$pg_port"; return 0; fi
  check_port_free postgres "$pg_port"
  init_postgres
  clear_after_crash
  # Loopback only. fsync stays on and synchronous_commit too: a write FerretDB acknowledged must
  # survive a crash of the server, which the fault suite causes on purpose. JIT off: it only
  # adds compile time to the short queries FerretDB sends.
  setsid nohup "${as_pg_user[@]}" "$pg_bin/postgres" -D "$pg_data" -p "$pg_port" \
      -c listen_addresses=127.0.0.1 -c unix_socket_directories="$pg_socket" \
      -c jit=off -c log_min_messages=warning -c log_line_prefix='%m [%p] ' \
      -c max_connections=$((ferret_pool + 20)) \
    >>"$logs/postgres.log" 2>&1 </dev/null &
  echo $! >"$run/postgres.pid"
}

wait_postgres() { # wait_postgres SECONDS: until it accepts connections (crash recovery done)
  local deadline=$((SECONDS + $1))
  until "$pg_bin/pg_isready" -q -h "$pg_socket" -p "$pg_port" -U "$pg_role" -d postgres; do
    alive postgres || { tail -40 "$logs/postgres.log" >&2 || true; die "postgres exited during start-up (logs in $logs)"; }
    ((SECONDS < deadline)) || die "postgres did not accept connections within $1 s (logs in $logs)"
    sleep 0.2
  done
  [[ -f "$pg_dir/password" ]] && return 0
  # Once per cluster: FerretDB's database, and a password for TCP clients.
  if [[ "$(psql_local -d postgres -Atc "SELECT count(*) FROM pg_database WHERE datname = '$pg_database'")" == 0 ]]; then
    psql_local -d postgres -qc "CREATE DATABASE $pg_database" >/dev/null
  fi
  local password
  password="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
  psql_local -d postgres -qc "ALTER ROLE $pg_role PASSWORD '$password'" >/dev/null
  (umask 077 && echo "$password" >"$pg_dir/password.new") && mv "$pg_dir/password.new" "$pg_dir/password"
}

check_port_free() { # check_port_free NAME PORT
  if port_open "$2"; then
    die "port $2 (for $1) is taken by another process; stop it or pick another port with QBO_${1^^}_PORT=…"
  fi
}

check_ports() { # before installing or starting anything: the ports of what is not running yet
  alive ferretdb || check_port_free mongo "$mongo_port"
  alive kafka || { check_port_free kafka "$kafka_port"; check_port_free kafka_controller "$controller_port"; }
  alive postgres || adopt_postgres || check_port_free postgres "$pg_port"
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
  # Over the unix socket, as the trusted superuser. The pool is sized far above the concurrency
  # the services and tests reach: FerretDB v1 runs an update or findAndModify by holding one pooled
  # connection for its read while it takes a second one for the write, so as many concurrent
  # writes as the pool has connections deadlock the server for good (docs/design.md, "Local
  # engine notes"). PostgreSQL's max_connections leaves room for it (connections open on demand only).
  local url="postgres:///$pg_database?host=$pg_socket&port=$pg_port&user=$pg_role&pool_max_conns=$ferret_pool"
  setsid nohup "$ferret_bin" -listen-addr "127.0.0.1:$mongo_port" -postgresql-url "$url" \
    >>"$logs/ferretdb.log" 2>&1 </dev/null &
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

stop() { # stop NAME [SIGNAL]
  local pidfile="$run/$1.pid"
  [[ -f "$pidfile" ]] || return 0
  local pid
  pid="$(cat "$pidfile")"
  if running "$pid"; then
    kill "-${2:-TERM}" "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do running "$pid" || break; sleep 0.1; done
    running "$pid" && { say "$1 did not stop in 10 s; killing"; kill -KILL "$pid" 2>/dev/null || true; }
    say "stopped $1"
  fi
  rm -f "$pidfile"
}

# PostgreSQL's fast shutdown (SIGINT): its default on SIGTERM waits for every client to leave.
stop_all() {
  stop kafka
  stop ferretdb
  stop postgres INT
}

mkdir -p "$logs" "$run"

case "${1:-up}" in
  install)
    install_kafka
    install_ferretdb
    install_postgres
    ;;
  up)
    check_ports
    install_kafka
    install_ferretdb
    install_postgres
    postgres_user
    start_kafka # the slowest to start: first, it comes up while PostgreSQL does
    start_postgres
    wait_postgres 60
    start_ferretdb
    wait_ready ferretdb "$mongo_port" 30
    wait_ready kafka "$kafka_port" 90
    say "kafka    127.0.0.1:$kafka_port  (KAFKA_BOOTSTRAP_SERVERS)"
    say "ferretdb mongodb://127.0.0.1:$mongo_port/  (MONGODB_URI)"
    say "postgres 127.0.0.1:$pg_port  (user $pg_role, database $pg_database, password in $pg_dir/password; run by $pg_os_user)"
    ;;
  down)
    stop_all
    ;;
  status)
    for name in kafka ferretdb postgres; do
      if alive "$name"; then echo "$name: running (pid $(cat "$run/$name.pid"))"; else echo "$name: stopped"; fi
    done
    ;;
  reset)
    stop_all
    # $state/ferretdb: the SQLite data of the versions before PostgreSQL.
    rm -rf "$kafka_data" "$pg_dir" "$state/ferretdb"
    say "data removed"
    ;;
  psql)
    shift
    find_postgres || die "PostgreSQL is not installed (deploy/local/infra.sh install)"
    psql_local -d "$pg_database" "$@"
    ;;
  *)
    die "usage: $0 up|down|status|install|reset|psql [ARGS…]"
    ;;
esac
