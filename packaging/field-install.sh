#!/usr/bin/env bash
# The field technician's install, timed: an unboxed Debian 12 machine (a fresh scratch root) to a
# provisioned, healthy agent, following README "Installing a store box" step by step:
#
#   1. apt install --no-install-recommends ./relais_X_ARCH.deb, exactly as the README says, with
#      no network at all (unshare -n), after `apt update` made the recommended pcscd known to apt
#      as on a box that was online once: the store box often has no internet at install time
#   2. relais provision BUNDLE.tar.gz        (a bundle made here as central ops would)
#   3. systemctl restart relais              (here: no systemd as PID 1 in a chroot, so what the
#                                             unit does: StateDirectory, User=relais, ExecStart)
#   4. wait for /v1/health/ready, then relais doctor → exit 0 with the broker and ACL checks passed
#
# Central's side (untimed, as it exists before the technician arrives): a fleet CA, a real
# Mosquitto with mutual TLS and the contract's ACL (docs/mosquitto/) on a random loopback port,
# the box's client certificate, an ops key (relaisctl keygen), API tokens, and the store's first
# snapshot set served over HTTPS (`relaisctl snapshot build`).
#
#   packaging/field-install.sh relais_X_amd64.deb [RELAISCTL]
#
# Prints `field install: …` lines with the seconds of each step and exits 1 when the box does not
# end up healthy. Root needed (chroot); nothing on the host changes.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=$(realpath "${1:?usage: packaging/field-install.sh relais_X_ARCH.deb [RELAISCTL]}")
relaisctl=$(realpath -m "${2:-${CARGO_TARGET_DIR:-target}/release/relaisctl}")
[ -x "$relaisctl" ] || { echo "field-install.sh: no relaisctl at $relaisctl (cargo build --release --bin relaisctl)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "field-install.sh: needs root (chroot)" >&2; exit 2; }
. scripts/deps.sh
ensure_packages openssl mosquitto curl >/dev/null

. packaging/scratch-root.sh
root=$(mktemp -d /var/tmp/relais-field-root.XXXXXX)
central=$(mktemp -d)
agent_pid='' broker_pid='' https_pid=''
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null
  [ -n "$https_pid" ] && kill "$https_pid" 2>/dev/null
  scratch_root_drop "$root"
  rm -rf "$central"
}
trap cleanup EXIT
scratch_root_make "$root" >/dev/null
in_root() { chroot "$root" "$@"; }
ms() { date +%s%3N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }

echo "==> central: fleet CA, mutual-TLS Mosquitto with the contract's ACL, the box's bundle"
agent=store-0042/till-1
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port) https_port=$(free_port)
(
  cd "$central"
  cert() {   # cert NAME CN EXTENSIONS
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=${2//\//\\/}" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -out "$1.pem" -extfile <(printf '%b' "$3") 2>/dev/null
  }
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -keyout ca.key -out ca.pem \
    -subj "/CN=Relais fleet CA" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  cert broker localhost 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n'
  cert box "$agent" 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n'
  sed -e "s|^listener .*|listener $port 127.0.0.1|" -e "s|/etc/mosquitto/certs/|$central/|" \
      -e "s|/etc/mosquitto/acl|$central/acl|" -e 's|^persistence .*|persistence false|' \
      -e '/^persistence_location/d' -e '/^log_dest/d' "$OLDPWD/docs/mosquitto/mosquitto.conf" >mosquitto.conf
  cp "$OLDPWD/docs/mosquitto/acl" acl
  mkdir -p bundle && cp ca.pem bundle/ && cp box.pem bundle/client.pem && cp box.key bundle/client.key
  printf 'agent_id = "%s"\nbroker = "mqtts://localhost:%s"\nsnapshot_url = "https://localhost:%s/manifest.json"\nack = "central"\n' \
    "$agent" "$port" "$https_port" >bundle/bundle.toml
  "$relaisctl" keygen --out ops >/dev/null
  cp ops/ops.pub bundle/
  for till in till-1 till-2; do echo "$till $(openssl rand -base64 32)"; done >bundle/api-tokens
  tar czf box-bundle.tar.gz bundle
  # The neighbouring till's bundle, valid in every respect, on the same USB stick.
  cert box2 store-0042/till-2 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n'
  cp -r bundle till-2-bundle && cp box2.pem till-2-bundle/client.pem && cp box2.key till-2-bundle/client.key
  sed -i 's|^agent_id = .*|agent_id = "store-0042/till-2"|' till-2-bundle/bundle.toml
  # The store's first snapshot set, served over HTTPS as central does (docs/snapshot-format.md).
  mkdir -p ndjson
  echo '{"gtin":"04006381333931","sku":"SKU-0042","name":"Alpenhof Whole Milk 1 L"}' >ndjson/products.ndjson
  echo '{"sku":"SKU-0042","price_minor":129,"currency":"EUR","valid_from":"2026-01-01T00:00:00Z"}' >ndjson/prices.ndjson
  echo '{"sku":"SKU-0042","on_hand":24}' >ndjson/stock.ndjson
  echo '{"customer_id":"C-1","display_name":"Marie D.","loyalty_balance":120,"loyalty_watermark_seq":0,"card_tokens":[]}' >ndjson/customers.ndjson
  echo '{"order_id":"W-1","line":0,"sku":"SKU-0042","qty":1,"status":"open"}' >ndjson/reservations.ndjson
  "$relaisctl" snapshot build --version 1 --out snapshots products=ndjson/products.ndjson prices=ndjson/prices.ndjson \
    stock=ndjson/stock.ndjson customers=ndjson/customers.ndjson reservations=ndjson/reservations.ndjson >/dev/null
)
chmod -R a+rX "$central"   # mosquitto drops root for its own user before reading the ACL
mosquitto -c "$central/mosquitto.conf" >"$central/mosquitto.log" 2>&1 &
broker_pid=$!
python3 - "$central" "$https_port" >"$central/https.log" 2>&1 <<'PY' &
import functools, http.server, ssl, sys
d, port = sys.argv[1], int(sys.argv[2])
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=f"{d}/snapshots")
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(f"{d}/broker.pem", f"{d}/broker.key")
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
httpd.serve_forever()
PY
https_pid=$!
for p in $port $https_port; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done
cp "$deb" "$root/tmp/relais.deb"
# A box that was online once knows the archive's packages (and so the recommended pcscd): without
# that, apt would skip an unknown recommendation and the offline rehearsal would prove nothing.
in_root apt-get update -qq >"$central/apt-update.log" 2>&1 || { cat "$central/apt-update.log"; exit 1; }
in_root apt-cache show pcscd >/dev/null 2>&1 || { echo "field-install.sh: apt in the root does not know pcscd" >&2; exit 1; }
cp "$central/box-bundle.tar.gz" "$root/root/box-bundle.tar.gz"

echo "==> technician: install, provision, start, doctor"
t0=$(ms)
# The README's command, in a network namespace with no interface but lo: nothing can be fetched.
unshare --net chroot "$root" apt install --no-install-recommends /tmp/relais.deb </dev/null >"$central/install.log" 2>&1 \
  || { cat "$central/install.log"; echo "field-install.sh: the offline apt install failed" >&2; exit 1; }
in_root dpkg-query -W -f='${Status}\n' relais | grep -q 'install ok installed' || { cat "$central/install.log"; exit 1; }
t1=$(ms)
in_root relais provision /root/box-bundle.tar.gz >"$central/provision.log" 2>&1 || { cat "$central/provision.log"; exit 1; }
t2=$(ms)
# What `systemctl restart relais` does with relais.service: StateDirectory=relais (0750, owned
# by the service user), then ExecStart as User=relais.
install -d -m 0750 "$root/var/lib/relais"; in_root chown relais:relais /var/lib/relais
chroot --userspec=relais:relais "$root" /usr/bin/relais --config /etc/relais/relais.toml run >"$central/agent.log" 2>&1 &
agent_pid=$!
ready=0
for _ in $(seq 300); do
  if curl -fsS "http://127.0.0.1:8750/v1/health/ready" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$agent_pid" 2>/dev/null || break
  sleep 0.05
done
t3=$(ms)
[ $ready = 1 ] || { echo "the agent did not become ready:"; cat "$central/agent.log"; exit 1; }
# Healthy = every doctor check passes; the replica check passes once the agent has fetched and
# imported the first snapshot set, which it starts at once when its replica is empty.
for _ in $(seq 60); do
  doctor_status=0
  in_root relais doctor --json >"$central/doctor.json" 2>/dev/null || doctor_status=$?
  [ "$doctor_status" -eq 0 ] && break
  sleep 0.25
done
t4=$(ms)
python3 - "$central/doctor.json" <<'PY' || doctor_status=9
import json, sys
report = json.load(open(sys.argv[1]))
findings = report["checks"]
by = {f["check"]: f["status"] for f in findings}
for f in findings:
    if f["status"] != "pass":
        print(f"    {f['status']}: {f['check']}: {f.get('detail', '')}")
sys.exit(0 if by.get("broker") == "pass" and by.get("acl") == "pass" else 1)
PY
echo "field install: offline apt install $(secs "$t0" "$t1") s, provision $(secs "$t1" "$t2") s, start → ready $(secs "$t2" "$t3") s, first snapshot + doctor passing $(secs "$t3" "$t4") s (exit $doctor_status)"
if [ "$doctor_status" -ne 0 ]; then
  echo "field install: FAILED — the box is not healthy:"; cat "$central/doctor.json"; tail -20 "$central/agent.log"; exit 1
fi
echo "field install: unboxed Debian 12 → provisioned, healthy agent in $(secs "$t0" "$t4") s (broker + ACL checks pass over mutual TLS)"

# The rest of the technician's visit: the label for the sticker, and the box refusing the
# neighbouring till's bundle (the USB stick holds every till's).
t5=$(ms)
in_root relais identity --png /root/label.png >"$central/identity.txt" 2>&1 || { cat "$central/identity.txt"; exit 1; }
t6=$(ms)
grep -q "$agent" "$central/identity.txt" && [ -s "$root/root/label.png" ] \
  || { echo "field install: the label does not name $agent"; cat "$central/identity.txt"; exit 1; }
cp -r "$central/till-2-bundle" "$root/root/till-2"
other_status=0
in_root relais provision /root/till-2 >"$central/other.log" 2>&1 || other_status=$?
grep -q 'this box is store-0042/till-1' "$central/other.log" && [ "$other_status" -eq 78 ] \
  || { echo "field install: another till's bundle was not refused (exit $other_status)"; cat "$central/other.log"; exit 1; }
echo "field install: label (relais identity --png) $(secs "$t5" "$t6") s; another till's bundle refused with exit $other_status, identity kept"
