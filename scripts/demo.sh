#!/usr/bin/env bash
# The main job on a fresh machine: a local S3 server, a sample model uploaded to it, and that model
# mounted with mlfs at $MLFS_DEMO_MOUNT (default /mnt/mlfs-demo). Ctrl-C unmounts and stops.
#   scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mountpoint="${MLFS_DEMO_MOUNT:-/mnt/mlfs-demo}"
# State in a private directory of this user, never a fixed name under /tmp (another user could prepare it).
work="${MLFS_DEMO_DIR:-${XDG_RUNTIME_DIR:-$HOME/.cache}/mlfs-demo}"
mkdir -p -m 700 "$work"
if [[ -L $work || ! -O $work || -n $(find "$work" -maxdepth 0 -perm /022) ]]; then
  echo "demo: $work is not a private directory of this user; set MLFS_DEMO_DIR" >&2; exit 1
fi
echo "demo: state in $work" >&2

export DEBIAN_FRONTEND=noninteractive
command -v fusermount3 >/dev/null || { apt-get update -qq && apt-get install -y -qq fuse3 >/dev/null; }
command -v python3 >/dev/null || apt-get install -y -qq python3 >/dev/null

eval "$(scripts/local-s3.sh start)"
[[ -x artifacts/mlfs/mlfs ]] || scripts/build.sh || MLFS_AOT=0 scripts/build.sh
mlfs=artifacts/mlfs/mlfs

echo "demo: writing a sample model to $work/model" >&2
rm -rf "$work/model" && mkdir -p "$work"
python3 scripts/sample-model.py "$work/model" 64 1

# Upload through Swift's native API (the demo server is Swift + s3api); mlfs then reads it over S3.
auth=$(curl -fsS -D - -o /dev/null -H "X-Auth-User: $AWS_ACCESS_KEY_ID" -H "X-Auth-Key: $AWS_SECRET_ACCESS_KEY" "$AWS_ENDPOINT_URL/auth/v1.0")
token=$(echo "$auth" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-auth-token"{print $2}')
storage=$(echo "$auth" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-storage-url"{print $2}')
curl -fsS -X PUT -H "X-Auth-Token: $token" "$storage/models" -o /dev/null
for f in config.json tokenizer.json model.safetensors; do
  curl -fsS -X PUT -H "X-Auth-Token: $token" -T "$work/model/$f" "$storage/models/demo/v1/$f" -o /dev/null
done

"$mlfs" generate --id demo --version v1 --url-prefix s3://models/demo/v1 --prefetch config.json,tokenizer.json "$work/model" > "$work/demo-v1.json"
mkdir -p "$mountpoint"
echo "demo: mounting at $mountpoint (try: ls -l $mountpoint; $mlfs status $mountpoint). Ctrl-C to stop." >&2
exec "$mlfs" mount --manifest "$work/demo-v1.json" --cache-dir "$work/cache" "$mountpoint"
