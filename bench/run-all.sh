#!/usr/bin/env bash
# Run every Relais benchmark in sequence. Machine-readable results (one JSON object per
# measurement) go to stdout; human-readable progress and figures go to stderr.
#
#   bench/run-all.sh                          # full scale (1M rows), ~12 minutes on 2 cores
#   RELAIS_BENCH_SCALE=0.02 bench/run-all.sh  # CI smoke run, ~1 minute
#   bench/run-all.sh lookup movements         # only some benches
#
# Environment: RELAIS_BENCH_SCALE (default 1.0) scales row counts and durations;
# RELAIS_BENCH_RUNS (default 3) is the number of runs whose median is reported;
# RELAIS_BENCH_KEEP=1 keeps the scratch directories; TMPDIR chooses where they go (the
# movements bench measures the disk holding TMPDIR). Nothing is written to the repository.
set -euo pipefail

cd "$(dirname "$0")/.."

benches=("$@")
if [ ${#benches[@]} -eq 0 ]; then
    benches=(import lookup movements footprint scan_latency rfid decode delta_apply snapshot sync_drain http_lookup tickets sse_fanout fleet_push ingest_pg offline_day)
fi

if ! command -v mosquitto_pub >/dev/null 2>&1; then
    echo "run-all: the sync_drain, tickets and fleet_push benches need mosquitto (and mosquitto_pub) (apt-get install mosquitto mosquitto-clients)" >&2
    exit 1
fi
# wrk: the http_lookup bench's load generator; installed when missing (sudo only if not root).
. scripts/deps.sh
ensure_packages wrk >&2
# postgresql: the ingest_pg bench's server (bench/ingest_pg.sh runs its own initdb).
ensure_packages postgresql >&2
if ! command -v sqlite3 >/dev/null 2>&1; then
    echo "run-all: the import bench needs the sqlite3 CLI (apt-get install sqlite3)" >&2
    exit 1
fi

echo "# relais benchmarks: scale=${RELAIS_BENCH_SCALE:-1.0} runs=${RELAIS_BENCH_RUNS:-3} $(date -u +%Y-%m-%dT%H:%M:%SZ) $(git rev-parse --short HEAD 2>/dev/null || echo no-git)" >&2
echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# Build once up front (the target dir may be shared: waiting on the cargo lock is normal).
cargo build --release --benches --bins >&2
# The shell benches use that relaisctl rather than build `--bin relaisctl` alone (other features).
export RELAISCTL=${CARGO_TARGET_DIR:-target}/release/relaisctl

status=0
for bench in "${benches[@]}"; do
    echo "## $bench" >&2
    if [ "$bench" = ingest_pg ]; then
        # A shell bench (PostgreSQL, Mosquitto and relaisctl processes), scaled the same way.
        if ! bench/ingest_pg.sh; then
            echo "run-all: bench $bench failed" >&2
            status=1
        fi
        continue
    fi
    if ! cargo bench --quiet --bench "$bench"; then
        echo "run-all: bench $bench failed" >&2
        status=1
    fi
done
exit $status
