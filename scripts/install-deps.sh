#!/usr/bin/env bash
# Installs the system packages the tests and the local demo need (Debian), and sqlx-cli
# (scripts/install-sqlx-cli.sh).
# Idempotent: does nothing when everything is already there.
set -euo pipefail
"$(dirname "$0")/install-sqlx-cli.sh" >/dev/null
pkgs=(docker.io openvswitch-switch busybox-static tcpdump qemu-system-x86 linux-image-amd64
      netavark iproute2 iputils-ping postgresql-client cpio xz-utils)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages ${missing[*]} and not root; install them yourself" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
