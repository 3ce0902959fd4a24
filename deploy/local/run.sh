#!/usr/bin/env bash
# `make run`: the whole system on this machine with embedded defaults and no Intuit account.
# Infrastructure is started by `make infra-up` first; this starts the QBO emulator and the two
# services in the foreground, prefixes their logs, and stops them all on Ctrl-C.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="$root/.venv/bin/python"
cd "$root"

# shellcheck source=deploy/local/run-lib.sh
source "$here/run-lib.sh"
local_endpoints
trap stop_all INT TERM EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # wait_port NAME PORT
  for _ in $(seq 1 100); do port_open "$2" && return 0; sleep 0.1; done
  echo "[run] $1 did not start on port $2" >&2; exit 1
}

start emulator "$py" -u -m qbo_emulator --host 127.0.0.1 --port "$emulator_port" \
  --seed-customers 5 --seed-invoices-per-customer 20
wait_port emulator "$emulator_port"

start sync "$py" -u -m services.sync --host 127.0.0.1 --port "$sync_port"
start api "$py" -u -m services.api --host 127.0.0.1 --port "$api_port"
wait_port sync "$sync_port"
wait_port api "$api_port"

cat <<MSG
[run] QBO emulator  http://127.0.0.1:$emulator_port   (stands in for Intuit; no account needed)
[run] sync service  http://127.0.0.1:$sync_port   (bearer token: dev-sync-token; connect links: POST /connect-links)
[run] api           http://127.0.0.1:$api_port/api   (bearer token: dev-token; /openapi.json)
[run] Kafka 127.0.0.1:${QBO_KAFKA_PORT:-9092}, FerretDB mongodb://127.0.0.1:${QBO_MONGO_PORT:-27017}/ — Ctrl-C stops the services; 'make infra-down' stops the infrastructure
MSG
# Connect the emulator's company, map a demo customer and refresh it, so the dashboard shows
# invoices straight away; prints the dashboard URL.
"$py" deploy/local/demo.py --sync-url "http://127.0.0.1:$sync_port" \
  --api-url "http://127.0.0.1:$api_port" || echo "[run] demo set-up failed (see above)" >&2
wait
