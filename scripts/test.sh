#!/usr/bin/env bash
# The test command: installs everything the tests need (idempotent), builds, and runs every test.
# Services: the S3 test fixture starts a loopback S3 server (MinIO via Testcontainers when a Docker
# engine answers, else OpenStack Swift + s3api from scripts/local-s3.sh) and stops it at the end.
# Needs root (or sudo) for apt-get and for FUSE mounts.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

# System packages the tests use: fuse3 (fusermount3), the local S3 server (swift + memcached),
# redis-server (and redis-cli), curl (the scripts' health checks), python3 (the mmap test's child
# process, the sample model), coreutils (ls, stat, dd, sha256sum, cat), procps (kill),
# mount (mount, umount: tmpfs for the disk-full test) and util-linux (setpriv: the unprivileged tests;
# unshare: the no-/dev/fuse test), podman + runc + debootstrap (the container test: the image is built
# from a debootstrap base, since no registry is reachable here) and gcc (the NativeAOT binary in it),
# iproute2 (ip netns, veth, bridge: the fleet tests' nodes), python3-yaml (the deploy examples' syntax) and
# b3sum (the BLAKE3 reference implementation's command line: generate's chunk hashes are checked against it) and
# openssl (checks `mlfs sign`'s ECDSA signatures).
scripts/ensure-packages.sh fuse3 swift swift-proxy swift-account swift-container swift-object memcached \
  redis-server redis-tools curl python3 coreutils procps mount util-linux podman runc debootstrap gcc \
  iproute2 python3-yaml b3sum openssl
# npm installs the implementations not written here that output is checked with (tests/interop: sigstore-js
# verifies `mlfs sign`'s bundles). Node from Debian unless a node with npm is there already.
command -v npm >/dev/null || scripts/ensure-packages.sh nodejs npm
npm ci --prefix tests/interop --silent --no-audit --no-fund
[[ -e /dev/fuse ]] || $SUDO modprobe fuse || { echo "test.sh: /dev/fuse is missing and the fuse module could not be loaded" >&2; exit 1; }

# Warnings are errors by Directory.Build.props; on failure show every error, not just a summary.
build_log=$(mktemp)
if ! dotnet build MlArtifactFs.sln -c Release >"$build_log" 2>&1; then
  grep -E "error|Error" "$build_log" | sort -u >&2 || cat "$build_log" >&2
  rm -f "$build_log"
  exit 1
fi
tail -n 3 "$build_log"; rm -f "$build_log"

# The mount service's image for the container test: the AOT binary of this tree on a debootstrap base
# (the base is made once and kept). Podman here needs runc and no default ulimits (scripts/podman-conf.sh).
source scripts/podman-conf.sh
scripts/build.sh >/dev/null
scripts/container-image.sh localhost/mlfs:test

# The test services keep their state apart from a developer's (scripts/local-s3.sh's default dir), and
# are removed at the end with everything else the run made.
export MLFS_S3_DIR=/tmp/mlfs-test-s3
log=$(mktemp)
tmp_before=$(mktemp) mounts_before=$(mktemp)
ls -A /tmp | sort >"$tmp_before"
grep ' fuse\.mlfs ' /proc/mounts | sort >"$mounts_before" || true
trap 'rm -f "$log" "$tmp_before" "$mounts_before"' EXIT
set +e
# A hung test host is killed (and named) rather than eating the CI budget. Should a reader be stuck on a
# mount whose daemon hangs (the host cannot die then), a watchdog stops the daemons after 60 minutes, which
# fails those reads and lets the run end.
(
  trap 'kill $nap 2>/dev/null; exit 0' TERM
  sleep 3600 </dev/null >/dev/null 2>&1 & nap=$!
  wait $nap
  echo "test.sh: the tests did not finish within 60 minutes; killing their mount daemons and test hosts" >&2
  pkill -KILL -f 'mlfs(-avx512)? mount' || true
  grep ' fuse\.mlfs ' /proc/mounts | cut -d' ' -f2 | xargs -r -n1 umount -l || true
  pkill -KILL -f testhost || true
) &
watchdog=$!
dotnet test MlArtifactFs.sln -c Release --no-build --blame-hang-timeout 10m 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
kill "$watchdog" 2>/dev/null || true
set -e
scripts/local-s3.sh stop >/dev/null 2>&1 || true
rm -rf /tmp/mlfs-test-s3 /tmp/mlfs-test-redis

# Tests clean up what they start: no mount and no temp file of ours may outlive the run. (Only ours:
# .NET processes of the build and test host leave their own diagnostics entries, which come and go.)
leftovers=$(comm -13 "$tmp_before" <(ls -A /tmp | sort) | grep -E '^mlfs-' || true)
mounts=$(comm -13 "$mounts_before" <(grep ' fuse\.mlfs ' /proc/mounts | sort) || true)
if [[ -n $leftovers || -n $mounts ]]; then
  echo "test.sh: the tests left behind:" >&2
  [[ -n $leftovers ]] && sed 's|^|  /tmp/|' <<<"$leftovers" >&2
  [[ -n $mounts ]] && sed 's|^|  mount: |' <<<"$mounts" >&2
  status=1
fi

# One closing line for the whole run, summed over the test projects.
awk '/(Passed|Failed)! +- +Failed:/ {
       for (i = 1; i <= NF; i++) {
         if ($i == "Failed:") f += $(i+1); if ($i == "Passed:") p += $(i+1); if ($i == "Skipped:") s += $(i+1)
       }
     }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log" | tr -d ','| sed 's/ passed/ passed,/; s/ failed/ failed,/'
exit "$status"
