#!/usr/bin/env bash
# A real, signature-checking S3-compatible server on loopback, for tests and development when no
# container engine runs: OpenStack Swift with its s3api middleware (see shared DESIGN notes).
#
#   scripts/local-s3.sh start   # installs what is missing (apt-get), starts it, prints `export` lines
#   scripts/local-s3.sh stop
#   scripts/local-s3.sh env     # prints the `export` lines again
#   scripts/local-s3.sh run     # starts it and stays in the foreground; stops it on exit (for Aspire)
#
# State (rings, devices, configs, logs) lives in $MLFS_S3_DIR (default /tmp/mlfs-local-s3).
# Ports: proxy $MLFS_S3_PORT (default 18080); account, container and object servers on $MLFS_S3_PORT+10..+12;
# memcached on $MLFS_S3_PORT+13. Everything binds to 127.0.0.1 only.
set -euo pipefail

DIR="${MLFS_S3_DIR:-/tmp/mlfs-local-s3}"
PORT="${MLFS_S3_PORT:-18080}"
ACCOUNT_PORT=$((PORT + 10)); CONTAINER_PORT=$((PORT + 11)); OBJECT_PORT=$((PORT + 12)); MEMCACHED_PORT=$((PORT + 13))
ACCESS_KEY="test:tester"
SECRET_KEY="testing"

print_env() {
  echo "export AWS_ENDPOINT_URL=http://127.0.0.1:${PORT}"
  echo "export AWS_ACCESS_KEY_ID=${ACCESS_KEY}"
  echo "export AWS_SECRET_ACCESS_KEY=${SECRET_KEY}"
  echo "export AWS_REGION=us-east-1"
}

install_packages() {
  local need=()
  command -v swift-proxy-server >/dev/null || need+=(swift swift-proxy)
  command -v swift-account-server >/dev/null || need+=(swift-account)
  command -v swift-container-server >/dev/null || need+=(swift-container)
  command -v swift-object-server >/dev/null || need+=(swift-object)
  command -v memcached >/dev/null || need+=(memcached)
  command -v swift-ring-builder >/dev/null || need+=(swift)
  command -v curl >/dev/null || need+=(curl)
  if ((${#need[@]})); then
    echo "local-s3: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq "${need[@]}" >&2
  fi
  # The Debian package ships /etc/swift/swift.conf (hash prefix/suffix); make sure it is there.
  if [[ ! -f /etc/swift/swift.conf ]]; then
    mkdir -p /etc/swift
    printf '[swift-hash]\nswift_hash_path_suffix = mlfs-local\nswift_hash_path_prefix = mlfs-local\n' > /etc/swift/swift.conf
  fi
}

write_configs() {
  mkdir -p "$DIR/devices/d1" "$DIR/run" "$DIR/log"
  local user; user="$(id -un)"
  local common="bind_ip = 127.0.0.1
devices = $DIR/devices
mount_check = false
swift_dir = $DIR
user = $user
log_facility = LOG_LOCAL0
log_level = WARNING"
  cat > "$DIR/account-server.conf" <<CONF
[DEFAULT]
bind_port = $ACCOUNT_PORT
$common
[pipeline:main]
pipeline = account-server
[app:account-server]
use = egg:swift#account
CONF
  cat > "$DIR/container-server.conf" <<CONF
[DEFAULT]
bind_port = $CONTAINER_PORT
$common
[pipeline:main]
pipeline = container-server
[app:container-server]
use = egg:swift#container
CONF
  cat > "$DIR/object-server.conf" <<CONF
[DEFAULT]
bind_port = $OBJECT_PORT
$common
[pipeline:main]
pipeline = object-server
[app:object-server]
use = egg:swift#object
CONF
  cat > "$DIR/proxy-server.conf" <<CONF
[DEFAULT]
bind_port = $PORT
bind_ip = 127.0.0.1
swift_dir = $DIR
user = $user
workers = 2
log_facility = LOG_LOCAL0
log_level = WARNING
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk s3api tempauth copy slo dlo proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = $SECRET_KEY .admin
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$MEMCACHED_PORT
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
CONF
  local ring port
  for ring in account container object; do
    case $ring in account) port=$ACCOUNT_PORT ;; container) port=$CONTAINER_PORT ;; object) port=$OBJECT_PORT ;; esac
    if [[ ! -f "$DIR/$ring.ring.gz" ]]; then
      (cd "$DIR" && swift-ring-builder "$ring.builder" create 10 1 1 >/dev/null \
        && swift-ring-builder "$ring.builder" add "r1z1-127.0.0.1:$port/d1" 1 >/dev/null \
        && swift-ring-builder "$ring.builder" rebalance >/dev/null) || true
    fi
  done
}

is_up() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:${PORT}/healthcheck" 2>/dev/null; }

start_one() { # name command...
  local name=$1; shift
  local pidfile="$DIR/run/$name.pid"
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then return; fi
  setsid "$@" >"$DIR/log/$name.log" 2>&1 < /dev/null &
  echo $! > "$pidfile"
}

start() {
  if is_up; then print_env; return; fi
  install_packages
  write_configs
  start_one memcached memcached -l 127.0.0.1 -p "$MEMCACHED_PORT" -U 0 -u "$(id -un)" -m 64
  start_one account swift-account-server "$DIR/account-server.conf"
  start_one container swift-container-server "$DIR/container-server.conf"
  start_one object swift-object-server "$DIR/object-server.conf"
  start_one proxy swift-proxy-server "$DIR/proxy-server.conf"
  for _ in $(seq 1 120); do
    if is_up; then print_env; return; fi
    sleep 0.25
  done
  echo "local-s3: the S3 server did not answer on 127.0.0.1:${PORT} within 30 s; logs in $DIR/log:" >&2
  tail -n 20 "$DIR"/log/*.log >&2 || true
  exit 1
}

stop() {
  local f
  for f in "$DIR"/run/*.pid; do
    [[ -f "$f" ]] || continue
    local pid; pid="$(cat "$f")"
    # setsid made each server a process-group leader: stop its workers too.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    rm -f "$f"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) print_env ;;
  run)
    # Stop on exit only what this invocation started (a server that was already up is shared).
    if is_up; then owner=0; else owner=1; fi
    start
    if ((owner)); then
      trap 'stop; exit 0' TERM INT
      trap stop EXIT
    else
      trap 'exit 0' TERM INT
    fi
    while is_up; do sleep 2; done
    echo "local-s3: the S3 server stopped answering" >&2
    exit 1 ;;
  *) echo "usage: $0 start|stop|env|run" >&2; exit 2 ;;
esac
