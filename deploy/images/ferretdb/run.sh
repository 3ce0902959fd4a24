#!/usr/bin/env bash
# Entry point of the local FerretDB image: PostgreSQL on a unix socket only (no TCP port, so
# host networking adds no port but FerretDB's), then FerretDB on FERRETDB_LISTEN_ADDR. Starts as
# root to own the data directory, runs both servers as the user postgres; SIGTERM stops FerretDB,
# then PostgreSQL (fast shutdown); if either server exits, so does the container.
#   ferretdb-run          start
#   ferretdb-run probe    health check: {ping: 1} over the wire protocol
set -euo pipefail

data="${PGDATA:-/data/db/postgres}"
listen="${FERRETDB_LISTEN_ADDR:-0.0.0.0:27017}"
# FerretDB's PostgreSQL connections, as in deploy/local/infra.sh: too few deadlock FerretDB v1
# (docs/design.md, "Local engine notes").
pool="${FERRETDB_POOL:-200}"
socket=/run/postgresql
pg_bin=/usr/lib/postgresql/15/bin
as_postgres=(setpriv --reuid=postgres --regid=postgres --init-groups --)

if [[ "${1:-start}" == probe ]]; then
  host="${listen%:*}"
  [[ -z "$host" || "$host" == 0.0.0.0 ]] && host=127.0.0.1
  exec python3 /usr/local/bin/qbo-probe mongo "$host:${listen##*:}"
fi

mkdir -p "$data" "$socket"
chown postgres:postgres "$data" "$socket"
chmod 700 "$data"
if [[ ! -f "$data/PG_VERSION" ]]; then
  # Locale C and UTF-8 are what FerretDB checks for; only the socket, and it trusts its owner.
  "${as_postgres[@]}" "$pg_bin/initdb" -D "$data" -U ferretdb -E UTF8 --locale=C \
    --auth-local=trust >/dev/null
fi

"${as_postgres[@]}" "$pg_bin/postgres" -D "$data" -c listen_addresses= \
  -c unix_socket_directories="$socket" -c jit=off -c log_min_messages=warning \
  -c max_connections=$((pool + 20)) &
postgres=$!
until "$pg_bin/pg_isready" -q -h "$socket" -U ferretdb -d postgres; do
  kill -0 "$postgres" 2>/dev/null || { echo "ferretdb-run: postgres exited" >&2; exit 1; }
  sleep 0.2
done
if [[ "$("$pg_bin/psql" -h "$socket" -U ferretdb -d postgres -XAtc \
  "SELECT count(*) FROM pg_database WHERE datname = 'ferretdb'")" == 0 ]]; then
  "$pg_bin/psql" -h "$socket" -U ferretdb -d postgres -Xqc "CREATE DATABASE ferretdb"
fi

"${as_postgres[@]}" /usr/local/bin/ferretdb-local -listen-addr "$listen" \
  -postgresql-url "postgres:///ferretdb?host=$socket&user=ferretdb&pool_max_conns=$pool" &
ferretdb=$!

# shellcheck disable=SC2329 # the trap below calls it
stop() {
  kill -TERM "$ferretdb" 2>/dev/null || true
  wait "$ferretdb" || true
  kill -INT "$postgres" 2>/dev/null || true
  wait "$postgres" || true
  exit 0
}
trap stop TERM INT
wait -n "$postgres" "$ferretdb" || true
echo "ferretdb-run: a server exited; stopping" >&2
trap - TERM INT
kill -TERM "$ferretdb" 2>/dev/null || true
kill -INT "$postgres" 2>/dev/null || true
wait
exit 1
