#!/usr/bin/env bash
# End-to-end checks of mlfs on Debian 12's own kernel (Linux 6.1, FUSE 7.38, no passthrough), booted
# in qemu with software emulation (KVM is not offered here). Run on purpose (a few minutes; the root
# file system is built once and kept in $MLFS_OLDKERNEL_DIR), not in CI. Needs root.
#   bench/old-kernel.sh
# Inside the VM, nginx serves the model with Range support and mlfs mounts it through plain URLs. The
# checks: read every file exactly, random preads, a second open (through the daemon, spliced: no passthrough
# before 7.40), a hot switch to v2, and a clean unmount on SIGTERM. Each prints PASS or FAIL on the
# serial console; the script exits 0 only when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${MLFS_OLDKERNEL_DIR:-/var/tmp/mlfs-oldkernel}"
rootfs="$dir/rootfs"
scripts/ensure-packages.sh qemu-system-x86 debootstrap e2fsprogs python3

if [[ ! -e $rootfs/.complete ]]; then
  rm -rf "$rootfs"; mkdir -p "$rootfs"
  echo "old-kernel: debootstrap (once)" >&2
  debootstrap --variant=minbase bookworm "$rootfs" >/dev/null
  for m in proc sys dev dev/pts; do mount --bind "/$m" "$rootfs/$m"; done
  trap 'for m in dev/pts dev sys proc; do umount -l "$rootfs/$m" 2>/dev/null || true; done' EXIT
  chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    linux-image-amd64 kmod nginx-light initramfs-tools procps util-linux fuse3 iproute2 >/dev/null
  for m in dev/pts dev sys proc; do umount -l "$rootfs/$m"; done
  trap - EXIT
  touch "$rootfs/.complete"
fi

[[ -x artifacts/mlfs/mlfs ]] || scripts/build.sh >/dev/null
rm -f "$rootfs/usr/local/bin/mlfs" && cp artifacts/mlfs/mlfs "$rootfs/usr/local/bin/mlfs"

# The model (v1 and a v2 whose weights differ in one chunk), manifests with http://127.0.0.1:8080 URLs.
rm -rf "$rootfs/srv/model" && mkdir -p "$rootfs/srv/model/v1" "$rootfs/srv/model/v2"
python3 - "$rootfs/srv/model" <<'EOF'
import os, random, sys
root = sys.argv[1]
rng = random.Random(61)
files = {"config.json": 700, "tokenizer.json": 30000, "model.safetensors": 40 << 20}
for name, size in files.items():
    data = bytearray(rng.randbytes(size))
    open(os.path.join(root, "v1", name), "wb").write(data)
    if name == "model.safetensors":
        data[9 << 20] ^= 0xFF
    open(os.path.join(root, "v2", name), "wb").write(data)
EOF
for v in v1 v2; do
  artifacts/mlfs/mlfs generate --id oldkernel --version $v --url-prefix http://127.0.0.1:8080/$v --prefetch config.json,tokenizer.json \
    "$rootfs/srv/model/$v" > "$rootfs/srv/model/$v.json"
done
# Never write through a path of the rootfs: its links are absolute (sites-enabled/default points at
# /etc/nginx/..., which from here is the host's own file). Remove, then create.
rm -f "$rootfs/etc/nginx/sites-enabled/default" "$rootfs/etc/nginx/conf.d/mlfs.conf"
printf 'server { listen 127.0.0.1:8080; root /srv/model; }\n' >"$rootfs/etc/nginx/conf.d/mlfs.conf"

rm -f "$rootfs/test.sh"
cat >"$rootfs/test.sh" <<'EOF'
#!/bin/bash
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null; mount -t tmpfs tmp /tmp
mkdir -p /run /mnt/model; mount -t tmpfs run /run
ip link set lo up
modprobe fuse
echo "KERNEL $(uname -r)"
mkdir -p /var/lib/nginx /var/log/nginx
nginx -t 2>&1 | tail -1
nginx -g 'daemon off;' &
i=0; while ! (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
ss -ltn | tail -n +2
ok=1
check() { if [ "$1" = 0 ]; then echo "PASS $2"; else echo "FAIL $2"; ok=0; fi; }
mlfs mount --manifest /srv/model/v1.json --cache-dir /var/cache/mlfs --ready-file /tmp/ready /mnt/model > /tmp/mount.log 2>&1 &
pid=$!
i=0; while [ ! -e /tmp/ready ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
check $([ -e /tmp/ready ]; echo $?) "mount ready"
for f in config.json tokenizer.json model.safetensors; do cmp -s /mnt/model/$f /srv/model/v1/$f; check $? "read $f"; done
r=0; for off in 1 4095 1048577 9437183 20000000 41943039; do
  a=$(dd if=/mnt/model/model.safetensors bs=1 skip=$off count=1 2>/dev/null | od -An -tx1)
  b=$(dd if=/srv/model/v1/model.safetensors bs=1 skip=$off count=1 2>/dev/null | od -An -tx1)
  [ "$a" = "$b" ] || r=1
done; check $r "random preads"
sync; echo 3 > /proc/sys/vm/drop_caches   # the second open's READs reach the daemon again
cmp -s /mnt/model/model.safetensors /srv/model/v1/model.safetensors; check $? "second open (through the daemon)"
spliced=$(mlfs status --json /mnt/model | grep -o '"spliced_reads":[0-9]*' | cut -d: -f2)
[ "${spliced:-0}" -gt 0 ]; check $? "second open spliced from the cache file (${spliced:-0} READs)"
grep -q "passthrough off" /tmp/ready; check $? "passthrough reported off (7.38)"
mlfs switch --manifest /srv/model/v2.json /mnt/model > /tmp/switch.log 2>&1; check $? "switch to v2"
cmp -s /mnt/model/model.safetensors /srv/model/v2/model.safetensors; check $? "read v2 after the switch"
kill -TERM $pid; wait $pid; check $? "clean exit on SIGTERM"
grep -q " /mnt/model " /proc/mounts; [ $? -ne 0 ]; check $? "unmounted"
[ $ok = 1 ] && echo "ALL PASS" || { echo "SOME FAILED"; cat /tmp/mount.log; }
echo o > /proc/sysrq-trigger
sleep 30 # init must not exit before the power-off lands
EOF
chmod +x "$rootfs/test.sh"
rm -rf "$rootfs/var/cache/mlfs"

kernel=$(ls "$rootfs"/boot/vmlinuz-* | head -1); initrd=$(ls "$rootfs"/boot/initrd.img-* | head -1)
rm -f "$dir/disk.img"
mkfs.ext4 -q -d "$rootfs" "$dir/disk.img" 2G
log="$dir/console.log"
echo "old-kernel: booting $(basename "$kernel") under qemu (TCG)" >&2
start=$(date +%s)
timeout 900 qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m 2G -smp 2 -nographic -no-reboot \
  -kernel "$kernel" -initrd "$initrd" -append "root=/dev/vda rw console=ttyS0 init=/test.sh panic=-1 edd=off quiet" \
  -drive file="$dir/disk.img",format=raw,if=virtio >"$log" 2>&1 || true
grep -E "^(KERNEL|PASS|FAIL|SKIP|ALL PASS|SOME FAILED)" "$log" | tr -d '\r'
echo "old-kernel: $(( $(date +%s) - start )) s in qemu; console log in $log" >&2
grep -q "^ALL PASS" "$log"
