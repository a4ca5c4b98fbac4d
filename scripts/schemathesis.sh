#!/usr/bin/env bash
# Schema-driven tests of the central service: starts apic-sim and `weft serve` on a fresh
# database with an admin token, runs schemathesis with every check against openapi/weft.json
# (settings in scripts/schemathesis.toml), and stops both and drops the database again. Any failure (a response the document does not describe,
# a 5xx, a refused valid or accepted invalid input) fails the script, so the document and the
# server cannot drift apart.
#
# SCHEMATHESIS_EXAMPLES (default 20) bounds the examples per operation, SCHEMATHESIS_SEED (default
# 1) makes a run repeatable. Needs DATABASE_URL (scripts/services.sh exports it) and
# `schemathesis` on PATH (scripts/install-deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATABASE_URL:?DATABASE_URL is not set (eval \"\$(scripts/services.sh)\")}"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build -q -p weft --bin weft -p apic-sim --bin apic-sim
weft="$CARGO_TARGET_DIR/debug/weft"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

db="weft_schemathesis_$$"
psql -q "$DATABASE_URL" -c "CREATE DATABASE $db"
export WEFT_DATABASE_URL="${DATABASE_URL%/*}/$db"
sim_port=$(free_port)
"$CARGO_TARGET_DIR/debug/apic-sim" --topology deploy/sim/topology.json --port "$sim_port" >/dev/null 2>&1 &
sim=$!
port=$(free_port)
log=$(mktemp)
# Generated hosts carry made-up agent URLs, and an attach sends weft to them: every outgoing
# request except to this machine goes to a proxy address where nothing listens, so nothing
# leaves the machine whatever the examples say.
nowhere=http://127.0.0.1:9
no_egress=(HTTP_PROXY=$nowhere HTTPS_PROXY=$nowhere ALL_PROXY=$nowhere NO_PROXY=127.0.0.1,localhost
           http_proxy=$nowhere https_proxy=$nowhere all_proxy=$nowhere no_proxy=127.0.0.1,localhost)
env "${no_egress[@]}" WEFT_LISTEN="127.0.0.1:$port" WEFT_LOG_FILTER=warn \
  WEFT_APIC_CONTROLLERS="http://127.0.0.1:$sim_port" WEFT_APIC_USERNAME=admin WEFT_APIC_PASSWORD=password \
  "$weft" serve >"$log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" "$sim" 2>/dev/null || true
  wait "$pid" "$sim" 2>/dev/null || true
  psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  rm -f "$log"
}
trap cleanup EXIT

base="http://127.0.0.1:$port"
for _ in $(seq 100); do
  curl -sf "$base/readyz" >/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "schemathesis: weft did not start" >&2; exit 1; }
  sleep 0.1
done
token=$("$weft" token create --role admin --name schemathesis)

rc=0
schemathesis --config-file scripts/schemathesis.toml run openapi/weft.json --url "$base" --checks all \
  --header "Authorization: Bearer $token" \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-20}" --seed "${SCHEMATHESIS_SEED:-1}" \
  --generation-database none --no-color || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "schemathesis: failures above; server log:" >&2
  tail -n 50 "$log" >&2
fi
exit "$rc"
