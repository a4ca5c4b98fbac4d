#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs and starts what the tests need,
# then runs every test of the workspace. Root-only tests (netns, Docker, OVS, QEMU)
# say loudly when they skip because a capability is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then scripts/install-deps.sh; fi
eval "$(scripts/services.sh)"
# The DATABASE_URL above has no schema: the query macros read the committed .sqlx/ instead.
export SQLX_OFFLINE=true
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$( [ -d /var/cache/weft-target ] && echo /var/cache/weft-target || echo target)}
# The end-to-end tests of weft (tests/api/e2e.rs) run real agents from this binary. Built the
# way vm-test.sh and nextest build (the whole workspace, test features), so nothing is compiled
# twice: a `-p weft-agent` build resolves features on its own.
cargo test -q --workspace --no-run
export WEFT_AGENT_BIN="$CARGO_TARGET_DIR/debug/weft-agent"
status=0
# Real 802.1Q (linux-bridge regular mode, macvlan on <uplink>.<vlan>) needs a kernel with 8021q:
# these tests run in a QEMU VM on Debian's kernel. Exit 77 = skipped (it says so loudly).
scripts/vm-test.sh || { rc=$?; [ "$rc" -eq 77 ] || status=$rc; }
cargo nextest run --workspace --no-fail-fast "$@" || status=$?
# The OpenAPI document against the running server (every schemathesis check, bounded examples).
scripts/schemathesis.sh || status=$?
exit $status
