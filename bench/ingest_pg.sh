#!/usr/bin/env bash
# Ingest into PostgreSQL (issue 15's benchmark): events/s stored and acknowledged by 1, 2 and 4
# `relaisctl ingest --share` workers, beside the limit measured in the same run: `COPY` of the
# same rows into a table of the same shape (same columns, primary key and indexes).
#
# Load: `relaisctl simulate fleet --backlog N`: AGENTS agents that each come back online with
# N store facts and send them as fast as central's acks allow (batches of 1,000, as the agent's
# drain does). A real PostgreSQL (initdb in a scratch dir, fsync=on, run as nobody under root)
# and a real Mosquitto, everything on this machine. One JSON line per measurement on stdout.
#
#   bench/ingest_pg.sh                              # 20 agents × 25,000 facts (500,000 events)
#   RELAIS_BENCH_SCALE=0.02 bench/ingest_pg.sh      # CI smoke run (500 facts per agent)
#   WORKERS_LIST="2" AGENTS=40 bench/ingest_pg.sh
#
# Needs mosquitto and postgresql (scripts/test.sh installs both). Builds relaisctl in release.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${RELAIS_BENCH_SCALE:-1.0}
AGENTS=${AGENTS:-20}
WORKERS_LIST=${WORKERS_LIST:-"1 2 4"}
FACTS=${FACTS:-25000}
BACKLOG=$(python3 -c "print(max(50, round($FACTS * float('$SCALE'))))")
# Messages Mosquitto lets each worker hold unacknowledged: what a group can reach.
INFLIGHT=${INFLIGHT:-100}
. bench/pg.sh
# RELAISCTL: a release relaisctl already built (bench/run-all.sh passes the one it built with the
# benches: building `--bin relaisctl` alone unifies other features and rebuilds every dependency).
if [ -n "${RELAISCTL:-}" ]; then
  ctl=$RELAISCTL
else
  cargo build --release --bin relaisctl >&2
  ctl=${CARGO_TARGET_DIR:-target}/release/relaisctl
fi
work=$(mktemp -d)
chmod 755 "$work"  # mosquitto and postgres drop root and must reach their files
pids=()
pgpid=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -z "$pgpid" ] || kill -INT "$pgpid" 2>/dev/null || true
  sleep 0.5
  [ -n "${RELAIS_BENCH_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pg_start

port=$(free_port)
printf 'pattern readwrite relais/v1/%%u/#\n\nuser central\ntopic readwrite relais/v1/#\n' >"$work/acl"
chmod 644 "$work/acl"
cat >"$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
acl_file $work/acl
persistence false
max_queued_messages 10000000
max_inflight_messages $INFLIGHT
log_dest stderr
log_type error
CONF
/usr/sbin/mosquitto -c "$work/mosquitto.conf" 2>"$work/mosquitto.log" &
pids+=($!)
sleep 0.5

events=$((AGENTS * BACKLOG))
echo "# ingest into PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'): $AGENTS agents × $BACKLOG facts = $events events; workers: $WORKERS_LIST ($(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg))" >&2

# The limit: COPY of the rows the workers stored, into a fresh table of the same shape; the
# median of 3. Measured once, after the first workers' run (the rows are theirs).
copy_limit() {
  "${psql[@]}" -c "\\copy (SELECT * FROM events) TO '$work/rows.csv' WITH (FORMAT csv)"
  local runs=()
  for _ in 1 2 3; do
    "${psql[@]}" -c "DROP TABLE IF EXISTS copy_events; CREATE TABLE copy_events (LIKE events INCLUDING ALL)"
    local t0 t1
    t0=$(date +%s.%N)
    "${psql[@]}" -c "\\copy copy_events FROM '$work/rows.csv' WITH (FORMAT csv)"
    t1=$(date +%s.%N)
    runs+=("$(python3 -c "print($t1 - $t0)")")
  done
  "${psql[@]}" -c "DROP TABLE copy_events"
  copy_s=$(printf '%s\n' "${runs[@]}" | sort -g | sed -n 2p)
  copy_rows=$(wc -l <"$work/rows.csv")
  copy_eps=$(python3 -c "print(round($copy_rows / $copy_s))")
  echo "{\"bench\":\"ingest_pg_copy\",\"rows\":$copy_rows,\"seconds\":$copy_s,\"events_per_s\":$copy_eps}"
  echo "# COPY of $copy_rows rows: ${copy_s}s, $copy_eps rows/s (median of 3)" >&2
}

results=()
copy_eps=
for w in $WORKERS_LIST; do
  # A fresh sink each run: the workers make the schema again.
  "${psql[@]}" -c "DROP TABLE IF EXISTS events, agent_facts, relais_sink_schema CASCADE;
                   DROP FUNCTION IF EXISTS relais_settle CASCADE" 2>/dev/null
  wpids=()
  for i in $(seq 1 "$w"); do
    "$ctl" ingest --broker "mqtt://127.0.0.1:$port" --sink "$url" --share "bench$w" \
      --client-id "ingest-$w-$i" >/dev/null 2>>"$work/ingest.log" &
    wpids+=($!)
    pids+=($!)
  done
  for _ in $(seq 100); do
    [ "$("${psql[@]}" -c "SELECT to_regclass('public.agent_facts') IS NOT NULL" 2>/dev/null)" = t ] && break
    sleep 0.1
  done
  sleep 0.5
  report=$("$ctl" simulate fleet --broker "mqtt://127.0.0.1:$port" --agents "$AGENTS" \
    --backlog "$BACKLOG" --rate 1 --duration 0s --ack-timeout 300s --drain 600s \
    --prefix "pg$w" --json)
  for p in "${wpids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${wpids[@]}"; do wait "$p" 2>/dev/null || true; done
  held=$("${psql[@]}" -c "SELECT count(*) FROM events")
  results+=("$(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print(json.dumps({"workers": int(sys.argv[2]), "events": r["backlog_facts"], "held": int(sys.argv[3]),
                  "unacked": r["unacked"], "seconds": round(r["backlog_drained_s"], 3),
                  "events_per_s": round(r["backlog_per_s"])}))' "$report" "$w" "$held")")
  echo "# $w worker(s): $(echo "${results[-1]}")" >&2
  [ -n "$copy_eps" ] || copy_limit
done
for r in "${results[@]}"; do
  python3 -c '
import json, sys
r = json.loads(sys.argv[1]); copy = float(sys.argv[2])
r = {"bench": "ingest_pg", **r, "copy_events_per_s": round(copy), "ratio_to_copy": round(r["events_per_s"] / copy, 3)}
print(json.dumps(r))
if r["held"] != r["events"] or r["unacked"] != 0:
    sys.exit("ingest_pg: %d workers held %d of %d events (%d unacked)" % (r["workers"], r["held"], r["events"], r["unacked"]))' "$r" "$copy_eps"
done
