#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs and starts what the tests need,
# then runs every test of the workspace. Root-only tests (netns, Docker, OVS, QEMU)
# say loudly when they skip because a capability is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then scripts/install-deps.sh; fi
eval "$(scripts/services.sh)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$( [ -d /var/cache/weft-target ] && echo /var/cache/weft-target || echo target)}
cargo nextest run --workspace --no-fail-fast "$@"
