#!/usr/bin/env bash
# Builds the single native `mlfs` executable (NativeAOT) at artifacts/mlfs/mlfs.
#   scripts/build.sh            # NativeAOT (needs gcc or clang; Debian's build-essential)
#   MLFS_AOT=0 scripts/build.sh # ReadyToRun single file instead (no native toolchain needed)
set -euo pipefail
cd "$(dirname "$0")/.."
out=artifacts/mlfs
if [[ "${MLFS_AOT:-1}" == "1" ]]; then
  if ! command -v clang >/dev/null && ! command -v gcc >/dev/null; then
    echo "build: NativeAOT needs a C toolchain: apt-get install -y build-essential (or run with MLFS_AOT=0)" >&2
    exit 1
  fi
  dotnet publish src/Mlfs/Mlfs.csproj -c Release -r linux-x64 -o "$out" -p:PublishAot=true
else
  dotnet publish src/Mlfs/Mlfs.csproj -c Release -r linux-x64 -o "$out" -p:PublishAot=false \
    -p:PublishSingleFile=true -p:PublishReadyToRun=true --self-contained true
fi
rm -f "$out"/*.pdb "$out"/*.dbg
echo "built $out/mlfs ($(du -h "$out/mlfs" | cut -f1))"
