#!/usr/bin/env bash
# Seeds the development stack: a sample model in two versions (v2 changes config.json and adds an
# adapter; the weights are shared), pushed content-addressed to S3, and their manifests, signed with a
# key made for this run, in S3 beside the model and in MLFS_DEV_DIR/manifests.
#   MLFS_BIN=path/to/mlfs MLFS_DEV_DIR=~/.cache/mlfs-dev scripts/seed-sample.sh
# Needs AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (the AppHost passes them).
set -euo pipefail
cd "$(dirname "$0")/.."
mlfs="${MLFS_BIN:-artifacts/mlfs/mlfs}"
work="${MLFS_DEV_DIR:-${XDG_RUNTIME_DIR:-$HOME/.cache}/mlfs-dev}"
size_mb="${MLFS_SAMPLE_MB:-256}"
mkdir -p "$work/manifests"
command -v python3 >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq python3 >/dev/null; }
command -v curl >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; }

for _ in $(seq 1 120); do  # the S3 server may still be starting
  curl -fsS -o /dev/null --max-time 2 "$AWS_ENDPOINT_URL" 2>/dev/null && break
  curl -sS -o /dev/null --max-time 2 -w '%{http_code}' "$AWS_ENDPOINT_URL" 2>/dev/null | grep -qE '^[1-5]' && break
  sleep 0.5
done

if [[ ! -f "$work/model-v1/model.safetensors" ]]; then
  python3 scripts/sample-model.py "$work/model-v1" "$size_mb" 1
fi
rm -rf "$work/model-v2" && cp -r "$work/model-v1" "$work/model-v2"
python3 - "$work/model-v2" <<'PY'
import json, os, struct, sys
d = sys.argv[1]
cfg = json.load(open(os.path.join(d, "config.json")))
cfg["revision"] = 2
json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
header = json.dumps({"adapter.weight": {"dtype": "F32", "shape": [16, 16], "data_offsets": [0, 1024]}}).encode()
header += b" " * ((8 - len(header) % 8) % 8)
with open(os.path.join(d, "adapter.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header + bytes(1024))
PY
# The publisher's key: made for this run (a stack started again signs with a new one), private to this user.
install -d -m 700 "$work/keys"
rm -f "$work/keys/publisher.pem" "$work/keys/publisher.pem.pub"
"$mlfs" sign --new-key "$work/keys/publisher.pem"
# Signed manifests, written beside the model in S3 (the mounts fetch and verify them there) and locally.
for version in v1 v2; do
  "$mlfs" push "$work/model-$version" s3://models/sample --id sample --version "$version" --prefetch config.json,tokenizer.json \
    --content-addressed --sign-key "$work/keys/publisher.pem" -o "s3://models/sample/manifests/$version.json"
  "$mlfs" push "$work/model-$version" s3://models/sample --id sample --version "$version" --prefetch config.json,tokenizer.json \
    --content-addressed --sign-key "$work/keys/publisher.pem" -o "$work/manifests/$version.json"
done
echo "seeded: s3://models/sample/manifests/v1.json and v2.json (signed; copies in $work/manifests), key $work/keys/publisher.pem.pub"
