#!/usr/bin/env bash
# Schemathesis (the OpenAPI-driven API fuzzer) against the real agent: `relais demo` on a small
# demo store in a temp directory, on a free loopback port, with a token file so auth is
# configured; every check Schemathesis has, a bounded number of cases per operation. A request
# valid under docs/openapi.json that the agent refuses, any 5xx, or an answer the document does
# not describe is a failure. CI runs it (.ci/run) after the test suite.
#
#   scripts/schemathesis.sh            # uses target/debug/relais (built if missing)
#   RELAIS_BIN=target/release/relais SCHEMATHESIS_EXAMPLES=50 scripts/schemathesis.sh
#
# Prints `schemathesis: N operations, M cases, F failures` (also into
# target/schemathesis-summary.txt) and exits non-zero on any failure. The agent is always
# stopped; its log and Schemathesis's reports stay in target/schemathesis/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

# Pinned: a newer Schemathesis adds checks and generation phases, which is welcome, but as a
# change of its own, not as a surprise in an unrelated CI run.
SCHEMATHESIS_VERSION=4.32.5
# Cases per operation and phase: 400 is about 8,700 cases in 100 s on two cores.
examples=${SCHEMATHESIS_EXAMPLES:-400}
# A fixed seed: the same cases on every run, so a failure in CI reproduces here.
seed=${SCHEMATHESIS_SEED:-16}

out=target/schemathesis
mkdir -p "$out"
summary_file=target/schemathesis-summary.txt
rm -f "$summary_file"

# The venv: Debian 12's python3 needs python3-venv for `-m venv` (ensurepip); curl waits for
# the agent.
ensure_packages python3-venv
python=/usr/bin/python3
[ -x "$python" ] || python=$(command -v python3)
venv=target/schemathesis-venv
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$"; then
  echo "==> installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

bin=${RELAIS_BIN:-target/debug/relais}
if [ ! -x "$bin" ]; then
  echo "==> cargo build --bin relais (no $bin)"
  ensure_rust
  ensure_packages
  cargo build --locked --bin relais
  bin=target/debug/relais
fi

tmp=$(mktemp -d)
agent=""
stop_agent() {
  if [ -n "$agent" ] && kill -0 "$agent" 2>/dev/null; then
    kill -TERM "$agent" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$agent" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$agent" 2>/dev/null || true
    wait "$agent" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap stop_agent EXIT
trap 'exit 130' INT TERM

# A free loopback port: the kernel picks one, the agent binds it a moment later.
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
token=$("$python" -c 'import secrets; print(secrets.token_urlsafe(32))')
(umask 077 && printf 'schemathesis %s\n' "$token" >"$tmp/api-tokens")
cat >"$tmp/relais.toml" <<EOF
[api]
token_file = "$tmp/api-tokens"

# The largest body the config allows (16 MiB): a body the document calls valid (500 lines of
# 4096-character barcodes are 2 MB) must not meet the default 64 KiB limit.
max_body_bytes = 16777216

[log]
level = "warn"
EOF

echo "==> relais demo on $base (data in $tmp)"
# A small store: the cases exercise validation and lookups, not volume.
"$bin" --config "$tmp/relais.toml" demo --dir "$tmp/demo" --listen "127.0.0.1:$port" \
  --products 300 --customers 100 --no-simulated-devices >"$out/agent.log" 2>&1 &
agent=$!
for _ in $(seq 1 300); do
  if curl -fsS -o /dev/null "$base/v1/health/ready" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$agent" 2>/dev/null; then
    echo "schemathesis: the agent did not start; its log:" >&2
    tail -30 "$out/agent.log" >&2
    exit 1
  fi
  sleep 0.2
done
curl -fsS -o /dev/null "$base/v1/health/ready" || {
  echo "schemathesis: the agent is not ready after 60 s; see $out/agent.log" >&2
  exit 1
}

echo "==> schemathesis run docs/openapi.json --checks all, $examples examples per operation"
status=0
started=$(date +%s)
# --url: the document's own server is the default 127.0.0.1:8750; the guard accepts an IP
# literal as Host and Schemathesis sends no Origin, so nothing else needs configuring.
# The two live streams are left out: they answer 200 and then stream until the client leaves,
# which a request/response fuzzer can only meet with a read timeout (an error, every case);
# tests/api_stream.rs and tests/status_page.rs exercise them.
# The token is a throwaway of this run, so the output is not sanitised: a failure's reproduction
# shows the idempotency key it sent.
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}" \
  "$venv/bin/schemathesis" --config-file scripts/schemathesis.toml run docs/openapi.json \
  --url "$base" \
  --checks all \
  --header "Authorization: Bearer $token" \
  --exclude-path /v1/events --exclude-path /v1/devices/live \
  --max-examples "$examples" \
  --seed "$seed" \
  --generation-database none \
  --workers 1 \
  --request-timeout 10 \
  --no-color \
  --output-sanitize false \
  --report ndjson --report-ndjson-path "$out/events.ndjson" \
  >"$out/run.log" 2>&1 || status=$?
elapsed=$(($(date +%s) - started))
cat "$out/run.log"

# The figures from Schemathesis's own event stream: operations tested, cases sent, distinct
# failures (operation, check, failure) and errors (a request that got no answer).
figures=$("$python" - "$out/events.ndjson" <<'EOF'
import json, sys
operations, cases, failures, errors = set(), set(), set(), 0
with open(sys.argv[1]) as f:
    for line in f:
        event = json.loads(line)
        if "NonFatalError" in event:
            errors += 1
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished.get("recorder") or {}
        label = recorder.get("label")
        # The stateful phase's scenarios are labelled "Stateful tests", not by operation.
        if finished.get("phase") != "stateful":
            operations.add(label)
        cases.update(recorder.get("cases") or {})
        for check_list in (recorder.get("checks") or {}).values():
            for check in check_list:
                if check.get("status") == "failure":
                    failure = (check.get("failure_info") or {}).get("failure") or {}
                    failures.add((label, check.get("name"), failure.get("code"), failure.get("message")))
print(len(operations), len(cases), len(failures), errors)
EOF
) || figures="? ? ? ?"
read -r n_ops n_cases n_failures n_errors <<<"$figures"
if [ "$status" -ne 0 ] && [ "$n_failures" = 0 ] && [ "$n_errors" = 0 ]; then
  n_failures="?"
fi
line="schemathesis: $n_ops operations, $n_cases cases, $n_failures failures, $n_errors errors (checks all, $examples examples per operation, ${elapsed}s)"
echo "$line" | tee "$summary_file"
exit $status
