#!/bin/sh
# End to end: mosquitto on a free loopback port, `certrot serve` with a temp sqlite store and a signing-key
# rotation under way (keyRotation.nextKey), and build/host_fleet (N devices on the C library) holding an old
# CA in tag 42 and pinning only the current key. Passes when `certrot status --json` reports
# states.verified >= N and signing.next.devicesTrusting == N within 60 s, and every device rotated and
# installed the next key without a rejected or failed ack. Half the fleet lists "formats":["cose"] and runs with
# the compact profile's buffers: those devices must get only compact bundles, the others only JWS ones. Then the devices' client certificates: a
# `client-cert` campaign renews every device's identity (keygen in the fake modem, CSR, certificate, activate),
# and passes when it completes with every device on its new tag. Loopback only; children killed on exit.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
CERTROT_BIN=${CERTROT_BIN:-$here/../.build/debug/certrot}
MOSQUITTO=${MOSQUITTO:-/usr/sbin/mosquitto}
N=${E2E_DEVICES:-20}
fail() { echo "e2e.sh: $*" >&2; echo "0 passed, 1 failed"; exit 1; }
[ -x "$CERTROT_BIN" ] || fail "certrot binary not found at $CERTROT_BIN (build it or set CERTROT_BIN)"
[ -x "$MOSQUITTO" ] || fail "mosquitto not found at $MOSQUITTO"
[ -x "$here/build/host_fleet" ] || fail "build/host_fleet missing (run make)"

tmp=$(mktemp -d)
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# A free loopback port: mosquitto exits at once when it cannot bind, so try a few random ones.
port=""
for try in 1 2 3 4 5 6 7 8 9 10; do
    p=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 30000))
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$p" > "$tmp/mosquitto.conf"
    "$MOSQUITTO" -c "$tmp/mosquitto.conf" > "$tmp/mosquitto.log" 2>&1 &
    mpid=$!
    sleep 0.5
    if kill -0 "$mpid" 2>/dev/null; then port=$p; pids="$mpid"; break; fi
done
[ -n "$port" ] || fail "could not start mosquitto on a loopback port"

cd "$tmp"
kid=$("$CERTROT_BIN" keys generate --out key.pem)
next_kid=$("$CERTROT_BIN" keys generate --out next.pem)
chmod 600 key.pem next.pem
"$CERTROT_BIN" keys export --key key.pem --format pem > pub.pem
for name in old new; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 -subj "/CN=$name CA" \
        -keyout "$name.key" -out "$name.raw" 2>/dev/null
    openssl x509 -in "$name.raw" -out "$name.pem"
done
"$CERTROT_BIN" issuer init --cert device-ca.pem --key device-ca-key.pem > /dev/null
chmod 600 device-ca-key.pem
# The fleet writes its modems' identity keys before it connects; the daemon reads them at start.
C=$((N / 2)) # devices 1, 3, 5, ... take compact bundles
"$here/build/host_fleet" --port "$port" --devices "$N" --per-conn 10 --pubkey pub.pem --kid "$kid" \
    --old-ca old.pem --prefix "e2e-$$" --identities identities.jsonl --compact-every 2 > fleet.log 2>&1 &
fleet=$!
pids="$pids $fleet"
for i in 1 2 3 4 5 6 7 8 9 10; do
    [ -f identities.jsonl ] && [ "$(wc -l < identities.jsonl)" -ge "$N" ] && break
    sleep 0.5
done
cat > certrot.yaml <<Y
broker:
  url: mqtt://127.0.0.1:$port
  clientId: certrot-e2e
store: sqlite:$tmp/certrot.db
signingKey: $tmp/key.pem
keyRotation: {nextKey: $tmp/next.pem, threshold: 0.9}
ackTimeout: 30s
retry: {base: 1s, factor: 2, cap: 5s, attempts: 5}
targets:
  - {name: broker-ca, tag: 42, type: 0, chain: $tmp/new.pem}
catalogue:
  - {name: old-ca, chain: $tmp/old.pem}
issuers:
  - {name: device-ca, cert: $tmp/device-ca.pem, key: $tmp/device-ca-key.pem, validity: 90d, crl: $tmp/device-ca.crl}
identities: $tmp/identities.jsonl
clientCerts:
  - {name: device-identity, issuer: device-ca, tags: [16842753, 16842754], caChain: broker-ca, renewBefore: 30d}
Y
"$CERTROT_BIN" serve --config certrot.yaml > serve.log 2>&1 &
pids="$pids $!"

deadline=$(( $(date +%s) + 60 ))
verified=0
trusting=0
while [ "$(date +%s)" -lt "$deadline" ]; do
    out=$("$CERTROT_BIN" status --broker "mqtt://127.0.0.1:$port" --json --timeout 5 2>/dev/null | tr -d ' \n' || true)
    # sorted keys: the fleet-wide "states" object comes before "targets"
    states=$(printf '%s' "$out" | sed -n 's/.*"states":{\([^}]*\)},"targets".*/\1/p')
    verified=$(printf '%s' "$states" | sed -n 's/.*"verified":\([0-9]*\).*/\1/p')
    verified=${verified:-0}
    trusting=$(printf '%s' "$out" | sed -n 's/.*"devicesTrusting":\([0-9]*\).*/\1/p')
    trusting=${trusting:-0}
    echo "e2e: verified $verified/$N, trusting the next key $trusting/$N"
    [ "$verified" -ge "$N" ] && [ "$trusting" -ge "$N" ] && break
    sleep 2
done
# The identities: a client-cert campaign renews every device's client certificate in its standby tag.
broker="mqtt://127.0.0.1:$port"
campaign=$("$CERTROT_BIN" campaign create --broker "$broker" --name identities --client-cert device-identity --all \
    --json 2>&1 | tr -d ' \n' | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
state=none
while [ -n "$campaign" ] && [ "$(date +%s)" -lt $((deadline + 60)) ]; do
    out=$("$CERTROT_BIN" campaign status --broker "$broker" "$campaign" --json --timeout 5 2>/dev/null | tr -d ' \n' || true)
    state=$(printf '%s' "$out" | sed -n 's/.*"state":"\([a-z]*\)","states".*/\1/p')
    echo "e2e: identities campaign $campaign ${state:-?}"
    [ "$state" = completed ] && break
    sleep 2
done
kill "$fleet" 2>/dev/null || true
wait "$fleet" 2>/dev/null || true
cat fleet.log
if [ "$verified" -ge "$N" ] && [ "$trusting" -ge "$N" ] && [ "$state" = completed ] &&
    grep -q "$N rotated, [0-9]* applied acks, 0 rejected, 0 failed, [0-9]* dropped, $N trust an installed key, $N renewed their identity" fleet.log &&
    grep -q "$C take cose ($C of them rotated), [0-9]* compact bundles applied, [0-9]* JWS bundles applied, 0 parts of the other format" fleet.log &&
    [ "$(sed -n 's/.*), \([0-9]*\) compact bundles applied.*/\1/p' fleet.log)" -ge $((C * 3)) ] &&
    [ "$(sed -n 's/.*applied, \([0-9]*\) JWS bundles applied.*/\1/p' fleet.log)" -ge $(((N - C) * 3)) ]; then
    echo "ok   e2e: $N devices rotated by certrot serve and verified; all trust the next key $next_kid; all renewed their client certificate; $C of them by compact bundles, the others by JWS"
    echo "1 passed, 0 failed"
else
    echo "--- certrot serve log (tail)"; tail -20 serve.log
    echo "--- last status: $out"
    fail "fleet not verified ($verified/$N verified, $trusting/$N trusting the next key, identities campaign ${state:-none})"
fi
