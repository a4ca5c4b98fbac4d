#!/usr/bin/env bash
# Runs Weft locally against apic-sim: as root, installs what is missing (scripts/install-deps.sh,
# PostgreSQL server included) and starts PostgreSQL if needed, creates a fresh database,
# applies the migrations, starts apic-sim (deploy/sim/topology.json) on a free port, creates an
# admin token, prints the URLs and the token, then runs `weft serve` configured for the
# simulator. apic-sim is stopped when weft exits.
# Usage: scripts/run-local.sh   (weft on 127.0.0.1:8080; WEFT_LISTEN overrides;
#                                WEFT_LOCAL_NO_APIC=1 runs without an APIC)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then scripts/install-deps.sh; fi
eval "$(scripts/services.sh)"
pg_isready -q -h 127.0.0.1 -p 5432 || { echo "run-local: PostgreSQL is not running on 127.0.0.1:5432 (try scripts/services.sh)" >&2; exit 1; }

db=${WEFT_LOCAL_DB:-weft_local}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$( [ -d /var/cache/weft-target ] && echo /var/cache/weft-target || echo target)}
# The query macros read the committed .sqlx/, not a database.
export SQLX_OFFLINE=true
# One build for both binaries: two `-p` builds resolve features separately and compile
# shared dependencies twice.
cargo build -q --workspace --bins
weft="$CARGO_TARGET_DIR/debug/weft"
sim="$CARGO_TARGET_DIR/debug/apic-sim"

psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
export WEFT_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export WEFT_LISTEN=${WEFT_LISTEN:-127.0.0.1:8080}
"$weft" migrate
token=$("$weft" token create --role admin --name local-admin)

sim_pid=
stop_sim() { [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null; return 0; }
trap stop_sim EXIT
apic_url="(none: WEFT_LOCAL_NO_APIC is set)"
if [ -z "${WEFT_LOCAL_NO_APIC:-}" ]; then
    sim_log=$(mktemp -t apic-sim.XXXXXX)
    # --port 0: the kernel picks a free port; the first stdout line names it.
    "$sim" --topology deploy/sim/topology.json --port 0 --password password >"$sim_log" 2>&1 &
    sim_pid=$!
    for _ in $(seq 50); do
        apic_url=$(sed -n 's/^apic-sim listening on //p' "$sim_log")
        [ -n "$apic_url" ] && break
        kill -0 "$sim_pid" 2>/dev/null || { cat "$sim_log" >&2; echo "run-local: apic-sim did not start" >&2; exit 1; }
        sleep 0.1
    done
    [ -n "$apic_url" ] || { echo "run-local: apic-sim did not report its address" >&2; exit 1; }
    export WEFT_APIC_CONTROLLERS="$apic_url" WEFT_APIC_USERNAME=admin WEFT_APIC_PASSWORD=password
fi

cat <<INFO

  Weft is starting on http://$WEFT_LISTEN  (database: $db)
  apic-sim (simulated APIC, user admin / password): $apic_url   (log: ${sim_log:-none})
  Admin token (shown once):  $token

  Try:
    curl -s -H "Authorization: Bearer $token" http://$WEFT_LISTEN/api/v1/fabric
    curl -s -H "Authorization: Bearer $token" http://$WEFT_LISTEN/api/v1/vlan-pools
    curl -s http://$WEFT_LISTEN/api/v1/openapi.json

INFO
# Not exec: the EXIT trap must run after weft stops to stop apic-sim. Ctrl-C or SIGTERM to
# this script is passed on to weft, which finishes in-flight requests and exits.
"$weft" serve &
weft_pid=$!
trap 'kill -TERM "$weft_pid" 2>/dev/null' INT TERM
status=0
wait "$weft_pid" || status=$?
# A trapped signal interrupts the first wait; wait again for weft's real exit.
if kill -0 "$weft_pid" 2>/dev/null; then wait "$weft_pid" || status=$?; fi
exit "$status"
