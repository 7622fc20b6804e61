#!/usr/bin/env bash
# Installs those of the given Debian packages that are not installed yet (idempotent): one
# `apt-get update` and one `apt-get install`, only when something is missing. Root, or sudo.
#   scripts/ensure-packages.sh PACKAGE...
set -euo pipefail
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
echo "installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
