#!/usr/bin/env bash
# Installs sqlx-cli (used by scripts/sqlx-prepare.sh) at the sqlx version of Cargo.lock into
# /var/cache/weft-tools (WEFT_TOOLS overrides), where CI on this machine keeps it between runs.
# Does nothing when that version is already there. Prints the directory of the binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=${WEFT_TOOLS:-/var/cache/weft-tools}
version=$(sed -n '/^name = "sqlx"$/{n;s/^version = "\(.*\)"$/\1/p;}' Cargo.lock)
if [ "$("$tools/bin/sqlx" --version 2>/dev/null | awk '{print $2}')" != "$version" ]; then
  echo "install-sqlx-cli: installing sqlx-cli $version into $tools (a few minutes, once)" >&2
  cargo install sqlx-cli --version "=$version" --no-default-features --features postgres,rustls \
    --locked --root "$tools" --quiet >&2
fi
echo "$tools/bin"
