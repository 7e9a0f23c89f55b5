#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the case-records tests (tests/test_records*.py).
#   source .ci/postgres.sh       # installs PostgreSQL from Debian if missing, starts it, exports TEST_DATABASE_URL
#   eval "$(.ci/postgres.sh)"    # the same; run as a command it prints the export line (progress goes to stderr)
#   .ci/postgres.sh stop         # stops the server started last and removes its data folder
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then  # sourced: do the work in a child shell, keep only its export here
  _pg_export=$(bash "${BASH_SOURCE[0]}" "$@") || return 1
  eval "$_pg_export"
  unset _pg_export
  return 0
fi
set -euo pipefail
STATE=${PG_TEST_STATE:-/tmp/repro-pg-test.env}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }  # the server refuses root

if [[ "${1:-}" == "stop" ]]; then
  if [[ -f "$STATE" ]]; then
    # shellcheck disable=SC1090
    source "$STATE"
    as_pg "$(pg_bin)/pg_ctl" -D "$PG_TEST_DATADIR" -m fast stop >/dev/null || true
    rm -rf "$(dirname "$PG_TEST_DATADIR")" "$STATE"
  fi
  exit 0
fi

if [[ -z "$(pg_bin)" ]]; then
  echo "installing PostgreSQL from Debian ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  for i in $(seq 60); do  # another apt run may hold the lock
    apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null && break
    sleep 10
  done
fi
BIN=$(pg_bin)
[[ -n "$BIN" ]] || { echo "PostgreSQL could not be installed" >&2; exit 1; }
[[ $(id -u) != 0 ]] || id postgres >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql --shell /bin/bash postgres

DATADIR=$(mktemp -d /tmp/repro-pg.XXXXXX)
[[ $(id -u) != 0 ]] || chown postgres "$DATADIR"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg "$BIN/initdb" -D "$DATADIR/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
as_pg "$BIN/pg_ctl" -D "$DATADIR/data" -l "$DATADIR/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DATADIR -c fsync=on -c max_connections=100" start >/dev/null
as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres repro_test

PG_TEST_DATADIR="$DATADIR/data"
TEST_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$PORT/repro_test"
printf 'PG_TEST_DATADIR=%q\nTEST_DATABASE_URL=%q\n' "$PG_TEST_DATADIR" "$TEST_DATABASE_URL" > "$STATE"
echo "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT, data in $DATADIR" >&2
echo "export TEST_DATABASE_URL=$TEST_DATABASE_URL"
