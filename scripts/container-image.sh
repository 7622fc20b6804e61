#!/usr/bin/env bash
# Builds the mount service's container image (default name localhost/mlfs:dev) with podman or docker.
#   scripts/container-image.sh [IMAGE]
# Where the Dockerfile's base images can be pulled (a registry answers within 15 s), it builds the
# Dockerfile. Otherwise (no registry reachable, as on our CI machines) it makes the same image from a
# Debian base made with debootstrap (Debian's packages are reachable) plus the NativeAOT binary built
# here: the same entrypoint, user (root: mounting needs CAP_SYS_ADMIN), volumes and fuse3.
# Podman on Debian 12 needs the runc runtime and no default ulimits: scripts/podman-conf.sh sets both.
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-localhost/mlfs:dev}"
base="localhost/mlfs-base:bookworm"

engine=""
if command -v podman >/dev/null; then engine=podman; source scripts/podman-conf.sh
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker
else echo "container-image: neither podman nor a docker engine is available (apt-get install podman runc)" >&2; exit 1; fi

if timeout 15 "$engine" pull -q docker.io/library/debian:12-slim >/dev/null 2>&1 && timeout 60 "$engine" pull -q mcr.microsoft.com/dotnet/sdk:10.0 >/dev/null 2>&1; then
  echo "container-image: base images pulled; building the Dockerfile" >&2
  "$engine" build -t "$image" .
  exit 0
fi

echo "container-image: no registry answers; building from a debootstrap base and the AOT binary built here" >&2
if ! "$engine" image exists "$base" 2>/dev/null && ! "$engine" image inspect "$base" >/dev/null 2>&1; then
  scripts/ensure-packages.sh debootstrap
  rootfs=$(mktemp -d /var/tmp/mlfs-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=fuse3,ca-certificates bookworm "$rootfs" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | "$engine" import - "$base" >/dev/null
  echo "container-image: base $base imported ($(du -sh "$rootfs" | cut -f1))" >&2
fi

[[ -x artifacts/mlfs/mlfs ]] || scripts/build.sh >/dev/null
context=$(mktemp -d /var/tmp/mlfs-image.XXXXXX)
trap 'rm -rf "$context" ${rootfs:+"$rootfs"}' EXIT
cp artifacts/mlfs/mlfs "$context/mlfs"
if [[ -e artifacts/mlfs/mlfs-avx512 ]]; then cp artifacts/mlfs/mlfs-avx512 "$context/"; fi # mlfs execs it on CPUs with AVX-512
# The Dockerfile's runtime stage, on the local base.
cat >"$context/Containerfile" <<EOF
FROM $base
RUN mkdir -p /var/cache/mlfs /mnt/model && chmod 0700 /var/cache/mlfs
COPY mlfs* /usr/local/bin/
VOLUME /var/cache/mlfs
ENTRYPOINT ["/usr/local/bin/mlfs"]
CMD ["--help"]
EOF
pull_never=(); [[ $engine == podman ]] && pull_never=(--pull=never)
previous=$("$engine" image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
"$engine" build "${pull_never[@]}" -q -t "$image" "$context" >/dev/null
# The image this one replaces would stay behind untagged (150 MB per rebuild); drop it unless in use.
if [[ -n $previous && $previous != $("$engine" image inspect -f '{{.Id}}' "$image") ]]; then
  "$engine" rmi "$previous" >/dev/null 2>&1 || true
fi
echo "container-image: built $image" >&2
