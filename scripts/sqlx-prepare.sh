#!/usr/bin/env bash
# Regenerates sqlx's offline query data (.sqlx/, committed) from a database built from
# migrations/ alone, so that every other build checks the queries without a database
# (SQLX_OFFLINE=true).
#   scripts/sqlx-prepare.sh          after changing a query or a migration: recreates and migrates
#                                    the database weft_sqlx, then rewrites .sqlx/. weft_sqlx stays
#                                    for live checking while editing (see README, "Changing a query");
#                                    WEFT_SQLX_DB names another database (engineers working side by side).
#   scripts/sqlx-prepare.sh --check  CI: fails when .sqlx/ differs from what the queries and the
#                                    migrations give (a scratch database, dropped afterwards).
# Needs PostgreSQL on 127.0.0.1:5432; installs sqlx-cli when missing (scripts/install-sqlx-cli.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$(scripts/install-sqlx-cli.sh):$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$( [ -d /var/cache/weft-target ] && echo /var/cache/weft-target || echo target)}

server=${WEFT_SQLX_SERVER:-postgres://postgres@127.0.0.1:5432}
if [ "${1:-}" = --check ]; then
  db=weft_sqlx_check_$$
  trap 'sqlx database drop -y -f --database-url "$server/$db" >/dev/null 2>&1 || true' EXIT
else
  db=${WEFT_SQLX_DB:-weft_sqlx}
fi
export DATABASE_URL="$server/$db"
sqlx database reset -y -f --source migrations >/dev/null
# prepare runs the macros against DATABASE_URL itself; an inherited SQLX_OFFLINE must not stop it.
env -u SQLX_OFFLINE cargo sqlx prepare --workspace ${1:+"$1"}
