#!/usr/bin/env bash
# Runs Weft locally: starts PostgreSQL if needed, creates a fresh database, applies the
# migrations, creates an admin token, prints it and the URL, then runs `weft serve`.
# Usage: scripts/run-local.sh            (listens on 127.0.0.1:8080; WEFT_LISTEN overrides)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh >/dev/null
pg_isready -q -h 127.0.0.1 -p 5432 || { echo "run-local: PostgreSQL is not running on 127.0.0.1:5432 (try scripts/services.sh)" >&2; exit 1; }

db=${WEFT_LOCAL_DB:-weft_local}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$( [ -d /var/cache/weft-target ] && echo /var/cache/weft-target || echo target)}
cargo build -q --bin weft
weft="$CARGO_TARGET_DIR/debug/weft"

psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
export WEFT_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export WEFT_LISTEN=${WEFT_LISTEN:-127.0.0.1:8080}
"$weft" migrate
token=$("$weft" token create --role admin --name local-admin)

cat <<INFO

  Weft is starting on http://$WEFT_LISTEN  (database: $db)
  Admin token (shown once):  $token

  Try:
    curl -s -H "Authorization: Bearer $token" http://$WEFT_LISTEN/api/v1/vlan-pools
    curl -s http://$WEFT_LISTEN/api/v1/openapi.json

INFO
exec "$weft" serve
