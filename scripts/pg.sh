# shellcheck shell=bash
# Starts a throwaway PostgreSQL for tests and benchmarks; sourced by scripts/test
# and scripts/bench. Uses Debian's PostgreSQL 15 binaries (PG_BIN to override).
# As root, the server runs as the `postgres` user (PostgreSQL refuses root).
#
#   pg_start [durable]   start it; exports TESSERA_TEST_DATABASE_URL; stops on exit
#
# Without "durable", fsync is off: tests check behaviour, not crash safety of the
# disk. Benchmarks pass "durable" so every commit is flushed as in production.

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

pg_free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}

pg_start() {
  local mode=${1:-fast}
  if [ ! -x "$PG_BIN/initdb" ]; then
    echo "PostgreSQL binaries not found in $PG_BIN (set PG_BIN)" >&2
    return 1
  fi
  PG_DIR=$(mktemp -d /tmp/tessera-pg.XXXXXX)
  local port run=()
  port=$(pg_free_port)
  if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$PG_DIR"
    run=(runuser -u postgres --)
  fi
  local settings="-c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=256MB"
  if [ "$mode" != durable ]; then
    settings="$settings -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  fi
  if ! "${run[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 \
      --no-sync >"$PG_DIR/initdb.log" 2>&1; then
    cat "$PG_DIR/initdb.log" >&2
    return 1
  fi
  if ! "${run[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
      -o "-p $port -k $PG_DIR $settings" start >/dev/null; then
    cat "$PG_DIR/server.log" >&2
    return 1
  fi
  PG_RUN=("${run[@]}")
  export TESSERA_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  trap pg_stop EXIT
  echo "PostgreSQL ($mode) on 127.0.0.1:$port, data in $PG_DIR" >&2
}

pg_stop() {
  if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ]; then
    "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  fi
}
