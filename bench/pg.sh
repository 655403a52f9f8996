# Sourced by the central benches (bench/ingest_pg.sh, bench/fleet.sh): a real PostgreSQL in
# "$work/pg" (initdb, trust auth, user relais, fsync=on, a random loopback port), run as nobody
# under root (PostgreSQL refuses root). Sets pgbin, pgport, pgpid, url and the psql command
# array; the caller's cleanup stops it (kill -INT "$pgpid").
pg_start() {
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -z "$pgbin" ] || [ ! -x "$pgbin/postgres" ]; then
    echo "$(basename "$0"): PostgreSQL is not installed (apt-get install postgresql)" >&2
    exit 1
  fi
  local as_pg=()
  mkdir "$work/pg"
  if [ "$(id -u)" = 0 ]; then
    chown nobody:nogroup "$work/pg"
    as_pg=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
  fi
  "${as_pg[@]}" "$pgbin/initdb" -U relais --auth=trust -E UTF8 -D "$work/pg/data" >/dev/null
  pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "${as_pg[@]}" "$pgbin/postgres" -D "$work/pg/data" -p "$pgport" -k "$work/pg" \
    -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200 2>"$work/pg/log" &
  pgpid=$!
  url="postgres://relais@127.0.0.1:$pgport/postgres"
  export PGOPTIONS="-c client_min_messages=warning"
  psql=("$pgbin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pgport" -U relais -d postgres)
  for _ in $(seq 100); do "${psql[@]}" -c 'SELECT 1' >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "$(basename "$0"): PostgreSQL did not start: $(tail -5 "$work/pg/log")" >&2
  exit 1
}
