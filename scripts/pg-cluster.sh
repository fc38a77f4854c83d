#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, entirely inside one folder:
#
#   scripts/pg-cluster.sh start DIR   # initdb into DIR/data, start it; prints its URL
#   scripts/pg-cluster.sh stop DIR    # stop it (DIR is left for the caller to remove)
#   scripts/pg-cluster.sh restart DIR # pg_ctl restart (tests of reconnection)
#
# It listens on a Unix socket in DIR and on 127.0.0.1 at a free port, trusts
# local connections (nothing but this machine can reach it) and touches
# nothing outside DIR. fsync is off (a test cluster loses nothing that
# matters in a crash) unless CINECUT_PG_FSYNC=on (the benchmarks). initdb refuses to run as root, so as root the
# cluster belongs to the `postgres` user (Debian's postgresql package
# makes it).
set -euo pipefail

action="${1:?usage: pg-cluster.sh start|stop|restart DIR}"
dir="$(cd "${2:?usage: pg-cluster.sh start|stop|restart DIR}" && pwd)"

bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); run bash scripts/setup.sh" >&2
  exit 1
fi

as_owner=()
if [ "$(id -u)" -eq 0 ]; then
  as_owner=(runuser -u postgres --)
fi

fsync="${CINECUT_PG_FSYNC:-off}"
options="-c listen_addresses=127.0.0.1 -k $dir -c fsync=$fsync -c max_connections=200"

case "$action" in
  start)
    if [ -n "${as_owner[*]}" ]; then
      chown postgres: "$dir"
    fi
    "${as_owner[@]}" "$bin/initdb" --pgdata="$dir/data" --auth=trust --username=postgres \
      --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    # A free loopback port: the kernel picks one, and it is handed on at once.
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "${as_owner[@]}" "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait --silent \
      -o "$options -p $port" start \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "$port" >"$dir/port"
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    [ -d "$dir/data" ] || exit 0
    "${as_owner[@]}" "$bin/pg_ctl" --pgdata="$dir/data" --wait --silent --mode=fast stop || true
    ;;
  restart)
    port="$(cat "$dir/port")"
    "${as_owner[@]}" "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait --silent \
      --mode=fast -o "$options -p $port" restart
    ;;
  *)
    echo "unknown action $action (start, stop or restart)" >&2
    exit 2
    ;;
esac
