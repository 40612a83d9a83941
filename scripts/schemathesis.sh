#!/usr/bin/env bash
# Runs schemathesis against a live `cva serve` on a fresh SQLite database, with an admin token,
# over the whole OpenAPI document: no 5xx, every response conforming to the document.
# Usage: scripts/schemathesis.sh [CVA_BINARY] (default: target/release/cva). Bounded in time.
set -euo pipefail
cva="${1:-${CARGO_TARGET_DIR:-target}/release/cva}"
work="$(mktemp -d)"
port="${CVA_ST_PORT:-18080}"
export DATABASE_URL="sqlite://$work/st.db"
export CVA_JWT_SECRET="$(head -c 48 /dev/urandom | base64)"
# With payments configured (the example file; its provider URL is never called: an admin may
# not send), so the batch routes answer as in production instead of 503.
export CVA_PAYMENTS_CONFIG="$(cd "$(dirname "$0")/.." && pwd)/data/payments.example.json"
password="schemathesis admin passphrase"
printf '%s\n' "$password" | "$cva" user add --username admin --role admin --password-stdin >/dev/null
"$cva" serve --listen "127.0.0.1:$port" 2>"$work/server.log" &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
token="$(curl -fs -X POST "http://127.0.0.1:$port/v1/auth/login" -H 'content-type: application/json' \
  -d "{\"username\": \"admin\", \"password\": \"$password\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
timeout 600 st run "http://127.0.0.1:$port/v1/openapi.json" \
  -H "Authorization: Bearer $token" \
  --exclude-path /v1/auth/logout \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --max-examples "${CVA_ST_EXAMPLES:-30}" \
  --request-timeout 10
