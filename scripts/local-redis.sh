#!/usr/bin/env bash
# A loopback redis-server for tests and development (the chunk index of the shared cache).
#   scripts/local-redis.sh start   # installs redis-server if missing, starts it, prints an `export` line
#   scripts/local-redis.sh stop
#   scripts/local-redis.sh run     # installs if missing and runs in the foreground (for Aspire)
set -euo pipefail
DIR="${MLFS_REDIS_DIR:-/tmp/mlfs-local-redis}"
PORT="${MLFS_REDIS_PORT:-16379}"

print_env() { echo "export MLFS_REDIS=127.0.0.1:${PORT}"; }

install() {
  if ! command -v redis-server >/dev/null; then
    echo "local-redis: installing redis-server" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq redis-server >&2
  fi
}

case "${1:-}" in
  run)
    install
    exec redis-server --bind 127.0.0.1 --port "$PORT" --save "" --appendonly no ;;
  start)
    install
    mkdir -p "$DIR"
    if ! redis-cli -p "$PORT" ping >/dev/null 2>&1; then
      redis-server --bind 127.0.0.1 --port "$PORT" --dir "$DIR" --save "" --appendonly no \
        --daemonize yes --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" >&2
      for _ in $(seq 1 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    fi
    print_env ;;
  stop) redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|env|run" >&2; exit 2 ;;
esac
