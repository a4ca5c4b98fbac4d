#!/usr/bin/env bash
# Starts the services the tests and the demo need, each only if it is not running:
# PostgreSQL, the Docker engine (no iptables, no default bridge), and a private
# userspace Open vSwitch (this kernel has no openvswitch module).
# Prints the environment the tests read (eval "$(scripts/services.sh)").
set -euo pipefail
log() { echo "services: $*" >&2; }
root=$( [ "$(id -u)" -eq 0 ] && echo yes || echo no )

# PostgreSQL: a cluster (Debian's package creates one; a machine where it was removed gets a
# new one), started, and reachable from 127.0.0.1 as `postgres` without a password: the tests
# and the demo create throw-away databases there. Never touches a cluster that already answers.
pg_ok() { psql -qtA -h 127.0.0.1 -U postgres -d postgres -c 'select 1' >/dev/null 2>&1; }
if ! pg_ok && [ "$root" = yes ] && command -v pg_ctlcluster >/dev/null; then
  ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
  if [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    log "creating PostgreSQL $ver cluster main"
    pg_createcluster "$ver" main >/dev/null
  fi
  ver=$(ls /etc/postgresql | sort -V | tail -1)
  hba=/etc/postgresql/$ver/main/pg_hba.conf
  if ! grep -qE '^host\s+all\s+(all|postgres)\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    log "PostgreSQL: trusting local TCP connections (127.0.0.1, ::1) in $hba, for tests and the demo"
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main reload >/dev/null 2>&1 || true
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    log "starting PostgreSQL $ver"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  fi
  for _ in $(seq 1 30); do pg_ok && break; sleep 1; done
fi
pg_ok || log "PostgreSQL does not answer on 127.0.0.1:5432 as postgres (not root, or it failed to start)"

if [ "$root" = yes ]; then
  # Docker engine
  if command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    (dockerd --iptables=false --bridge=none --storage-driver=vfs >/var/log/dockerd.log 2>&1 &)
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  fi
  # Offline busybox test image (rebuilt when an earlier build left a broken one)
  if docker info >/dev/null 2>&1 && ! docker run --rm --net=none weft-test/busybox:local true >/dev/null 2>&1; then
    log "building weft-test/busybox:local from busybox-static"
    d=$(mktemp -d); mkdir -p "$d/bin"
    cp /bin/busybox "$d/bin/busybox"
    # `busybox --list` names busybox itself: linking it would replace the binary with a loop.
    for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$d/bin/$a"; done
    tar -C "$d" -cf "$d.tar" .
    docker import --change 'ENV PATH=/bin' "$d.tar" weft-test/busybox:local >/dev/null
    rm -rf "$d" "$d.tar"
  fi
  # Open vSwitch, userspace datapath, private run directory
  ovs_dir=/var/run/weft-ovs
  if command -v ovsdb-server >/dev/null && ! ovs-vsctl --db="unix:$ovs_dir/db.sock" show >/dev/null 2>&1; then
    log "starting ovsdb-server and ovs-vswitchd in $ovs_dir"
    mkdir -p "$ovs_dir"
    [ -f "$ovs_dir/conf.db" ] || ovsdb-tool create "$ovs_dir/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    ovsdb-server "$ovs_dir/conf.db" --remote="punix:$ovs_dir/db.sock" --pidfile="$ovs_dir/ovsdb.pid" \
      --unixctl="$ovs_dir/ovsdb.ctl" --log-file="$ovs_dir/ovsdb.log" --detach
    ovs-vsctl --db="unix:$ovs_dir/db.sock" --no-wait init
    ovs-vswitchd "unix:$ovs_dir/db.sock" --pidfile="$ovs_dir/vswitchd.pid" \
      --unixctl="$ovs_dir/vswitchd.ctl" --log-file="$ovs_dir/vswitchd.log" --detach
  fi
  echo "export WEFT_TEST_OVSDB=unix:$ovs_dir/db.sock"
fi
echo "export DATABASE_URL=\${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# That database has no schema: builds check queries against the committed .sqlx/ instead.
echo "export SQLX_OFFLINE=\${SQLX_OFFLINE:-true}"
