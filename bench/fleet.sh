#!/usr/bin/env bash
# Central under a simulated fleet (issue 15, item 5): a real Mosquitto with the contract's ACL,
# WORKERS `relaisctl ingest --share` workers on one sink (a SQLite file, or PostgreSQL with
# SINK=postgres), `relaisctl simulate fleet` at each agent count given, and `relaisctl ledger run
# --apply-only` on the same sink; one JSON
# line per run on stdout (commit → central ack latency) and one for the ledger (commit → ledger
# commit latency, issue 15's "p99 ≤ 1 s").
#
#   bench/fleet.sh                        # 1000 agents, 1 fact/s each, 30 s, 2 workers
#   AGENTS="250 500 1000 2000" bench/fleet.sh   # look for the knee
#   WORKERS=1 RATE=1 DURATION=60s bench/fleet.sh
#   SINK=postgres bench/fleet.sh          # the ingest and the ledger on a real PostgreSQL
#
# Needs mosquitto (apt-get install mosquitto). Builds relaisctl in release first.
set -euo pipefail
cd "$(dirname "$0")/.."
AGENTS=${AGENTS:-1000}
WORKERS=${WORKERS:-2}
RATE=${RATE:-1}
DURATION=${DURATION:-30s}
SINK=${SINK:-sqlite}
case "$SINK" in
  sqlite|postgres) ;;
  *) echo "fleet: SINK must be sqlite or postgres, not $SINK" >&2; exit 2 ;;
esac
# RELAISCTL: a release relaisctl already built (bench/run-all.sh passes the one it built with the
# benches: building `--bin relaisctl` alone unifies other features and rebuilds every dependency).
if [ -n "${RELAISCTL:-}" ]; then
  ctl=$RELAISCTL
else
  cargo build --release --bin relaisctl >&2
  ctl=${CARGO_TARGET_DIR:-target}/release/relaisctl
fi
work=$(mktemp -d)
chmod 755 "$work"  # mosquitto drops root for its own user, which must read the ACL
pids=()
pgpid=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -z "$pgpid" ] || { kill -INT "$pgpid" 2>/dev/null || true; sleep 0.5; }
  [ -n "${FLEET_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
if [ "$SINK" = postgres ]; then
  . bench/pg.sh
  pg_start
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'pattern readwrite relais/v1/%%u/#\n\nuser central\ntopic readwrite relais/v1/#\n' >"$work/acl"
chmod 644 "$work/acl"
cat >"$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
acl_file $work/acl
persistence false
max_queued_messages 10000000
# Each client keeps a slot per message the broker lets it have in flight: with 0 (unlimited)
# the broker announces 65,535 and every simulated agent holds ~12 MB of empty slots.
max_inflight_messages 100
log_dest stderr
log_type error
CONF
ulimit -n "$(ulimit -Hn)"
/usr/sbin/mosquitto -c "$work/mosquitto.conf" 2>"$work/mosquitto.log" &
pids+=($!)
sleep 0.5
for n in $AGENTS; do
  if [ "$SINK" = postgres ]; then
    "${psql[@]}" -c "CREATE DATABASE fleet_$n"
    sink="postgres://relais@127.0.0.1:$pgport/fleet_$n"
  else
    sink="$work/sink-$n.db"
  fi
  # Each count gets its own workers and share group, stopped before the next count: workers
  # of an earlier count left in the group would take part of this count's messages into
  # their own sink.
  workers=()
  for w in $(seq 1 "$WORKERS"); do
    "$ctl" ingest --broker "mqtt://127.0.0.1:$port" --sink "$sink" --share "bench$n" \
      --client-id "ingest-$n-$w" >/dev/null 2>>"$work/ingest.log" &
    pids+=($!)
    workers+=($!)
  done
  "$ctl" ledger run --broker "mqtt://127.0.0.1:$port" --sink "$sink" --apply-only \
    --client-id "ledger-$n" --json >"$work/ledger-$n.json" 2>>"$work/ledger.log" &
  ledger=$!
  pids+=($ledger)
  sleep 1
  echo "# $n agents × $RATE/s for $DURATION, $WORKERS ingest workers, $SINK sink ($(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg))" >&2
  "$ctl" simulate fleet --broker "mqtt://127.0.0.1:$port" --agents "$n" --rate "$RATE" \
    --duration "$DURATION" --prefix "bench$n" --json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); r["bench"]="fleet"; r["workers"]='"$WORKERS"'; r["sink"]="'"$SINK"'"; print(json.dumps(r))' || echo "# $n agents: simulate fleet failed (exit ${PIPESTATUS[0]})" >&2
  # The ledger applies what is left, then reports (SIGINT).
  sleep 2
  kill -INT "$ledger" 2>/dev/null || true
  wait "$ledger" 2>/dev/null || true
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["bench"]="fleet_ledger"; r["agents"]=int(sys.argv[2]); r["sink"]=sys.argv[3]; print(json.dumps(r))' "$work/ledger-$n.json" "$n" "$SINK" \
    || echo "# $n agents: no ledger report" >&2
  for w in "${workers[@]}"; do kill -INT "$w" 2>/dev/null || true; wait "$w" 2>/dev/null || true; done
done
