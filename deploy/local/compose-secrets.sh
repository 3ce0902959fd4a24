#!/usr/bin/env bash
# Random keys, secrets and tokens for `docker compose up`, written once to the git-ignored
# .local/compose/: sync.env, api.env and emulator.env, each with only what its container needs.
# Nothing is printed: read the bearer tokens from those files.
# The containers listen beyond loopback, where the published development values are refused.
# Running it again keeps the existing files (delete .local/compose/ to start over; stored QBO
# tokens then no longer decrypt, so reconnect the company).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$(cd "$here/../.." && pwd)/.local/compose"
umask 077
mkdir -p "$dir"

if [[ -f "$dir/sync.env" && -f "$dir/api.env" && -f "$dir/emulator.env" ]]; then
  echo "[compose-secrets] $dir already holds them; nothing to do"
  exit 0
fi

random() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
key="$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')"
verifier="$(random)"
link_secret="$(random)"
sync_token="$(random)"
api_token="$(random)"

cat > "$dir/sync.env" <<ENV
TOKEN_ENCRYPTION_KEYS=k1:$key
TOKEN_ENCRYPTION_PRIMARY_KEY_ID=k1
OAUTH_STATE_SECRET=$(random)
CONNECT_LINK_SECRET=$link_secret
SYNC_API_TOKENS=$sync_token
QBO_WEBHOOK_VERIFIER_TOKEN=$verifier
ENV
cat > "$dir/api.env" <<ENV
API_TOKENS=$api_token
CONNECT_LINK_SECRET=$link_secret
ENV
# The emulator signs its webhooks with the verifier token sync checks.
cat > "$dir/emulator.env" <<ENV
QBO_EMULATOR_WEBHOOK_VERIFIER_TOKEN=$verifier
ENV

cat <<MSG
[compose-secrets] written to $dir (readable by you only)
[compose-secrets] bearer tokens: API_TOKENS in api.env (dashboard, /api), SYNC_API_TOKENS in
[compose-secrets] sync.env (mapping, connections, connect links)
MSG
