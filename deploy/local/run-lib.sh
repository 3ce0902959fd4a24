# Sourced by run.sh (and its tests): the local endpoints derived from the ports, and starting
# and stopping the processes run.sh owns.

# local_endpoints: export the ports and every URL the services are configured with, derived from
# QBO_EMULATOR_PORT, QBO_SYNC_PORT and QBO_API_PORT, so moving a port moves every URL that names
# it. A URL already set in the environment (real Intuit, say) is kept.
local_endpoints() {
  emulator_port="${QBO_EMULATOR_PORT:-8790}"
  sync_port="${QBO_SYNC_PORT:-8000}"
  api_port="${QBO_API_PORT:-8080}"
  local emulator="http://127.0.0.1:$emulator_port"
  export QBO_API_BASE_URL="${QBO_API_BASE_URL:-$emulator}"
  export QBO_OAUTH_AUTHORIZE_URL="${QBO_OAUTH_AUTHORIZE_URL:-$emulator/connect/oauth2}"
  export QBO_OAUTH_TOKEN_URL="${QBO_OAUTH_TOKEN_URL:-$emulator/oauth2/v1/tokens/bearer}"
  export QBO_OAUTH_REVOKE_URL="${QBO_OAUTH_REVOKE_URL:-$emulator/v2/oauth2/tokens/revoke}"
  export QBO_REDIRECT_URI="${QBO_REDIRECT_URI:-http://127.0.0.1:$sync_port/oauth/callback}"
  export SYNC_PUBLIC_URL="${SYNC_PUBLIC_URL:-http://127.0.0.1:$sync_port}"
}

# start NAME COMMAND...: run COMMAND in the background with its output prefixed by [NAME].
# The prefixing sed reads through a process substitution, so `$!` (what stop_all signals) is the
# command itself, not the sed at the end of a pipeline.
pids=()
start() {
  local name="$1"; shift
  "$@" > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=("$!")
}

# stop_all: TERM every started command and wait for them; their log prefixers end with them.
stop_all() {
  trap - INT TERM EXIT
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
