#!/usr/bin/env bash
# Every benchmark, one after the other, then one report: a table on stdout, bench/results/report.json
# and bench/results/report.svg. Run on purpose (about 22 minutes here), never in CI. Needs root and /dev/fuse.
#   bench/run.sh [--size-mib N] [--runs N] [--micro]
#     --size-mib  the streamed file (default 4096: the peak-RSS target is for a 4 GiB stream)
#     --runs      runs per measure; each figure is the median (default 3; latency 3x, model load 2x+1 as many)
#     --micro     also the BenchmarkDotNet microbenchmarks (several minutes more)
set -euo pipefail
cd "$(dirname "$0")/.."
size=4096 runs=3 micro=0
while (($#)); do
  case $1 in
    --size-mib) size=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --micro) micro=1; shift ;;
    *) echo "usage: bench/run.sh [--size-mib N] [--runs N] [--micro]" >&2; exit 2 ;;
  esac
done

# What the benchmarks use: the local S3 server, nginx, the peers, boto3 (the plain client), torch.
scripts/ensure-packages.sh fuse3 swift swift-proxy swift-account swift-container swift-object memcached curl python3 bc \
  nginx-light rclone s3fs python3-boto3 python3-torch socat redis-server iproute2 gcc
scripts/build.sh >/dev/null   # the AOT binary users run

# The S3 server's state (4 GiB and more of objects) lives apart and goes at the end.
export MLFS_S3_DIR=/tmp/mlfs-bench-s3
trap 'scripts/local-s3.sh stop >/dev/null 2>&1 || true; rm -rf "$MLFS_S3_DIR"' EXIT
# Every figure of the report comes from this run (generate-many.py and manifest-scale.py are run on their own).
rm -rf bench/results/{fuse-throughput,latency,model-load,generate-speed,fleet,network,report}.json bench/results/report.svg
if ((micro)); then rm -rf bench/results/micro; fi
echo "== throughput (${size} MiB, ${runs} runs)"; python3 bench/fuse-throughput.py --size-mib "$size" --runs "$runs"
echo "== latency";                            python3 bench/latency.py --runs $((runs * 3))
echo "== model load";                         python3 bench/model-load.py --runs $((runs * 2 + 1))  # disk-bound: noisier
echo "== generate";                           bench/generate-speed.sh 1024
echo "== fleet (4 nodes, origin capped at 100 MB/s)"; python3 bench/fleet.py --size-mib 256
echo "== network (S3 behind 30 ms round trips, per-connection caps)"; python3 bench/network.py --runs "$runs"
if ((micro)); then
  echo "== microbenchmarks"
  dotnet run -c Release --project bench/MlArtifactFs.Benchmarks -- micro --filter '*' --job short --exporters csv --artifacts bench/results/micro
fi
echo "== report"
python3 bench/report.py
