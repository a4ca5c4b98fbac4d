#!/usr/bin/env bash
# Installs the system packages the tests and the local demo need (Debian), PostgreSQL
# server included (scripts/services.sh creates and starts its cluster).
# Idempotent: does nothing when everything is already there.
set -euo pipefail
pkgs=(docker.io openvswitch-switch busybox-static tcpdump qemu-system-x86 linux-image-amd64
      netavark iproute2 iputils-ping nftables postgresql postgresql-client cpio xz-utils)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# pip, for schemathesis below, only when the python3 on PATH has none.
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages ${missing[*]} and not root; install them yourself" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi

# schemathesis (PyPI, pinned) for scripts/schemathesis.sh; only when missing or another version.
schemathesis_version=4.32.5
if [ "$(schemathesis --version 2>/dev/null | awk '{print $NF}')" != "$schemathesis_version" ]; then
  echo "install-deps: installing schemathesis $schemathesis_version"
  # Debian's own python3 refuses system-wide pip installs (PEP 668) unless told otherwise.
  python3 -m pip install -q "schemathesis==$schemathesis_version" 2>/dev/null ||
    python3 -m pip install -q --break-system-packages "schemathesis==$schemathesis_version"
fi
