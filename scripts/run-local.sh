#!/usr/bin/env bash
# Runs Weft locally. As root, installs what is missing (scripts/install-deps.sh, PostgreSQL
# server included), starts the services (PostgreSQL, Docker, the offline test image), creates a
# fresh database and runs the whole demo (`weft-lab demo`, crates/lab): apic-sim with its
# simulated data plane, three simulated hosts (network namespaces cabled into leaf ports, each
# with its own Open vSwitch and a weft-agent), weft, two EPGs and four Docker containers
# attached through the API; it prints the URL, an admin token and commands to try, and on
# Ctrl-C or SIGTERM removes everything (namespaces, links, OVS daemons, containers, the
# database). A crashed earlier run's leftovers are removed at start.
# Not root (or no Docker/Open vSwitch/nftables): weft and apic-sim only, without a data plane
# (creating namespaces and links needs root); it says why.
# Usage: scripts/run-local.sh [--exit-after-setup]
#   (weft on 127.0.0.1:8080, or the demo's 198.18.250.1:8080; the port of WEFT_LISTEN
#    overrides; WEFT_LOCAL_NO_APIC=1 runs without an APIC and without the demo)
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

# Runs "$@" in the background and exits with its status: Ctrl-C or SIGTERM to this script is
# passed on as SIGTERM, and the script waits for the command's own cleanup to end (not exec:
# the EXIT traps must run afterwards).
run_passing_signals() {
    "$@" &
    local pid=$!
    trap 'kill -TERM '"$pid"' 2>/dev/null' INT TERM
    local status=0
    wait "$pid" || status=$?
    # A trapped signal interrupts the first wait; wait again for the real exit.
    if kill -0 "$pid" 2>/dev/null; then wait "$pid" || status=$?; fi
    exit "$status"
}

# The demo: everything on this machine, as root, when the data plane can run here.
lab="$CARGO_TARGET_DIR/debug/weft-lab"
why=
if [ -n "${WEFT_LOCAL_NO_APIC:-}" ]; then why="WEFT_LOCAL_NO_APIC is set"
elif [ "$(id -u)" -ne 0 ]; then why="not root: simulated hosts need network namespaces, links and Open vSwitch"
else why=$("$lab" check 2>&1) && why= || true
fi
if [ -z "$why" ]; then
    drop_db() { psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; }
    trap drop_db EXIT
    port=${WEFT_LISTEN:-127.0.0.1:8080}; port=${port##*:}
    run_passing_signals "$lab" demo --weft "$weft" --agent "$CARGO_TARGET_DIR/debug/weft-agent" --port "$port" "$@"
fi
echo "run-local: running weft and apic-sim without the simulated data plane and hosts ($why)" >&2

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
# weft finishes in-flight requests and exits; then the EXIT trap stops apic-sim.
run_passing_signals "$weft" serve
