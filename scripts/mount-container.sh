#!/usr/bin/env bash
# Runs the mount service in a container (podman, rootful), in the foreground, the way the README's
# container section shows: the AppHost's container mode starts this as its `mount` resource.
#   scripts/mount-container.sh IMAGE STATE_DIR MOUNT_POINT [mlfs mount options...]
# - STATE_DIR (manifests, cache, ready file) is bound at the same path inside, so every path the
#   AppHost hands over means the same thing on both sides.
# - MOUNT_POINT is bound with rshared propagation, so the FUSE mount made inside shows on the host.
#   That needs a shared mount on the host side; where the mount point sits on a private one (no
#   systemd), it is bound onto itself and made shared for the container's lifetime.
# - /run/mlfs (the control sockets) is shared, so `mlfs switch` on the host reaches the daemon.
# - Credentials and telemetry settings pass as `-e NAME` (values from this environment), never as
#   arguments: nothing of them shows in `ps`.
# SIGTERM/SIGINT stop the container (mlfs unmounts on SIGTERM); the script then undoes its bind.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 3 ]] || { echo "usage: $0 IMAGE STATE_DIR MOUNT_POINT [mlfs mount options...]" >&2; exit 2; }
image=$1 state=$2 mount_point=$3; shift 3
source scripts/podman-conf.sh
[[ $(id -u) == 0 ]] || { echo "mount-container: rootful podman is needed to mount FUSE for the host (run as root)" >&2; exit 1; }
if ! podman image exists "$image"; then
  echo "mount-container: $image is not present; building it (scripts/container-image.sh)" >&2
  scripts/container-image.sh "$image"
fi

mkdir -p "$mount_point"
install -d -m 700 /run/mlfs
bound=0
if [[ $(findmnt -no PROPAGATION -T "$mount_point") != shared* ]]; then
  mount --bind "$mount_point" "$mount_point"
  mount --make-shared "$mount_point"
  bound=1
fi
name="mlfs-dev-mount-$(printf %s "$mount_point" | sha256sum | cut -c1-12)"

passed=()
for var in AWS_ENDPOINT_URL AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN MLFS_REDIS MLFS_PEER_TOKEN; do
  [[ -n ${!var:-} ]] && passed+=(-e "$var")
done
while read -r var; do passed+=(-e "$var"); done < <(compgen -e | grep '^OTEL_' || true)

cleanup() {
  podman stop -t 20 "$name" >/dev/null 2>&1 || true
}
trap cleanup TERM INT
podman run --rm --replace --name "$name" --cap-add SYS_ADMIN --device /dev/fuse --network host \
  "${passed[@]}" \
  -v "$state:$state" -v "$mount_point:$mount_point:rshared" -v /run/mlfs:/run/mlfs \
  "$image" mount "$@" "$mount_point" &
container=$!
rc=0
wait "$container" || rc=$?
# A trapped signal ends the first wait early; wait for the container itself to finish stopping.
if kill -0 "$container" 2>/dev/null; then rc=0; wait "$container" || rc=$?; fi
if (( bound )); then
  umount "$mount_point" 2>/dev/null || umount -l "$mount_point"
fi
exit "$rc"
