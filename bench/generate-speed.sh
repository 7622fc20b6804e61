#!/usr/bin/env bash
# `mlfs generate` hashing speed vs sha256sum and vs reading the data (cat), same file, same run
# (median of 3, file in the page cache). Writes bench/results/generate-speed.json.
#   bench/generate-speed.sh [SIZE_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1024}
scripts/ensure-packages.sh bc
[[ -x artifacts/mlfs/mlfs ]] || scripts/build.sh >/dev/null
dir=$(mktemp -d /tmp/mlfs-genbench-XXXX)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/model"
head -c $((size << 20)) /dev/urandom > "$dir/model/weights.bin"
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
median3() { local a b c; a=$("$@"); b=$("$@"); c=$("$@"); printf '%s\n' "$a" "$b" "$c" | sort -g | sed -n 2p; }
cat "$dir/model/weights.bin" > /dev/null   # warm: measure hashing, not the disk
read_s=$(median3 secs cat "$dir/model/weights.bin")
sum_s=$(median3 secs sha256sum "$dir/model/weights.bin")
gen_s=$(median3 secs artifacts/mlfs/mlfs generate --id b --version v1 --url-prefix s3://b/m --chunk-size 4M "$dir/model")
mbps() { echo "$size * 1.048576 / $1" | bc -l | xargs printf '%.0f'; }
ratio=$(echo "$sum_s / $gen_s" | bc -l | xargs printf '%.2f')
printf 'size %d MiB (page cache)\n' "$size"
printf 'cat        %6s MB/s\n' "$(mbps "$read_s")"
printf 'sha256sum  %6s MB/s\n' "$(mbps "$sum_s")"
printf 'generate   %6s MB/s (file + 4 MiB chunk hashes)  ratio vs sha256sum %s\n' "$(mbps "$gen_s")" "$ratio"
mkdir -p bench/results
printf '{\n  "size_MiB": %d,\n  "cat_MBps": %s,\n  "sha256sum_MBps": %s,\n  "generate_MBps": %s,\n  "generate_vs_sha256sum": %s\n}\n' \
  "$size" "$(mbps "$read_s")" "$(mbps "$sum_s")" "$(mbps "$gen_s")" "$ratio" > bench/results/generate-speed.json
