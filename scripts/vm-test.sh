#!/usr/bin/env bash
# Runs weft-agent's 802.1Q tests (linux-bridge regular mode, macvlan on <uplink>.<vlan>)
# inside a throwaway QEMU VM booting Debian's kernel, because the development/CI kernel has
# no 8021q module. Builds an initramfs with busybox, the needed kernel modules, iproute2 and
# the cargo-built test binary with its shared libraries; reads the verdict from the serial
# console. Needs: qemu-system-x86, linux-image-amd64, busybox-static (scripts/install-deps.sh).
# Exit status: 0 when the tests pass, 1 when they fail, 77 (and a loud SKIPPED) when the
# VM cannot be built here.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "vm-test: $*" >&2; }
skip() { echo "SKIPPED: vm-test: $*" >&2; exit 77; }

command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not installed"
[ -x /bin/busybox ] || skip "busybox-static not installed"
command -v cpio >/dev/null || skip "cpio not installed"
kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -1)
[ -n "$kernel" ] || skip "no Debian kernel in /boot (apt-get install linux-image-amd64)"
ver=${kernel#/boot/vmlinuz-}
moddir=/lib/modules/$ver/kernel
[ -d "$moddir" ] || skip "no modules for $ver"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
log "building the weft-agent test binary"
# A workspace build, as `cargo nextest run --workspace` does next in scripts/test.sh: a
# `-p weft-agent` build resolves features on its own and would compile dependencies twice.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo test --workspace --no-run --message-format=json >"$work/build.json" 2>"$work/build.log" ||
  { tail -40 "$work/build.log" >&2; log "the build failed"; exit 1; }
bin=$(grep '"reason":"compiler-artifact"' "$work/build.json" | grep 'crates/agent#' |
  grep '"name":"agent"' | grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | tail -1)
[ -x "$bin" ] || { log "could not find the test binary"; exit 1; }
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,tmp,run,dev,lib/modules,etc}

# busybox for the shell and coreutils; real iproute2/util-linux/iputils for the tests.
cp /bin/busybox "$root/bin/busybox"
copy_with_libs() {
  local f=$1 dest=$root$1
  mkdir -p "$(dirname "$dest")"; cp -L "$f" "$dest"
  ldd "$f" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"; cp -Ln "$lib" "$root$lib" 2>/dev/null || true
  done
}
for tool in dash ip nsenter unshare ping sysctl; do copy_with_libs "$(command -v $tool)"; done
copy_with_libs "$bin"
mv "$root$bin" "$root/weft-agent-tests"
strip --strip-debug "$root/weft-agent-tests" 2>/dev/null || true

for m in llc stp garp mrp 8021q bridge veth macvlan; do
  f=$(find "$moddir" -name "$m.ko*" | head -1)
  [ -n "$f" ] || skip "module $m missing for $ver"
  case $f in
    *.ko.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
done

cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
# busybox sh runs its own applets before PATH; the tests need iproute2, so sh is dash.
ln -sf /usr/bin/dash /bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t tmpfs tmp /tmp; mount -t tmpfs run /run
mount -t devtmpfs dev /dev 2>/dev/null
for m in llc stp garp mrp 8021q bridge veth macvlan; do insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
WEFT_VM_TESTS=1 RUST_BACKTRACE=1 /weft-agent-tests --test-threads=1 vlan:: --skip macvlan::
echo "WEFT-VM-VERDICT rc=$?"
poweroff -f
INIT
chmod +x "$root/init"

log "packing initramfs"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"

log "booting $kernel under TCG (about 10-30 s)"
timeout 600 qemu-system-x86_64 -accel tcg -m 1024 -nographic -no-reboot \
  -kernel "$kernel" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 quiet panic=-1" | tee "$work/console.log" >&2 || true

verdict=$(grep -ao 'WEFT-VM-VERDICT rc=[0-9]*' "$work/console.log" | tail -1 | tr -d '\r')
case $verdict in
  "WEFT-VM-VERDICT rc=0") log "802.1Q tests passed in the VM"; exit 0 ;;
  "") log "no verdict from the VM (boot failure or timeout)"; exit 1 ;;
  *) log "802.1Q tests failed in the VM ($verdict)"; exit 1 ;;
esac
