#!/bin/sh
# Cross-implementation vectors: the Swift `certrot bundle make` signs bundles at test time, the C library
# (build/test_vectors) must accept the good ones and reject each bad one with the status the contract names.
# Fails (does not skip) when the certrot binary is missing.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
CERTROT_BIN=${CERTROT_BIN:-$here/../.build/debug/certrot}
if [ ! -x "$CERTROT_BIN" ]; then
    echo "vectors.sh: certrot binary not found at $CERTROT_BIN (build it or set CERTROT_BIN)" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

dev=nrf-352656100123456
kid=$("$CERTROT_BIN" keys generate --out key.pem)
"$CERTROT_BIN" keys export --key key.pem --format pem > pub.pem
"$CERTROT_BIN" keys generate --out other.pem > /dev/null
# signing-key rotation: the next key, installed with a trust_key op signed by the current one
next_kid=$("$CERTROT_BIN" keys generate --out next.pem)
"$CERTROT_BIN" keys export --key next.pem --format pem > next-pub.pem

ca() { # ca NAME: a self-signed P-256 CA, and its normal form (openssl writes 64-char LF lines)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 -subj "/CN=$1" \
        -keyout "$1.key" -out "$1.raw" 2>/dev/null
    openssl x509 -in "$1.raw" -out "$1.pem"
}
ca new
digest=$(sha256sum new.pem | cut -d' ' -f1)
# more than 4096 bytes of normalised chain: 8 RSA-2048 certificates
for i in 1 2 3 4 5 6 7 8; do
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=big$i" -keyout /dev/null -out "big$i.raw" 2>/dev/null
    openssl x509 -in "big$i.raw" >> big.pem
done
# much bigger than the 14336-byte assembly buffer (only with --raw)
for i in 1 2 3; do cat big.pem; done > huge.pem
sed 's/$/\r/' new.pem > crlf.pem

make_b() { "$CERTROT_BIN" bundle make --key key.pem --device "$dev" --tag 42 --chain new.pem "$@"; }
now=$(date +%s)

make_b --seq 1 > good.jws
make_b --seq 1 --parts --max-message 256 > good.parts
make_b --seq 7 --jti 0123456789abcdef0123456789abcdef > resend.jws
"$CERTROT_BIN" bundle make --key key.pem --device nrf-other --tag 42 --chain new.pem > other-sub.jws
"$CERTROT_BIN" bundle make --key other.pem --device "$dev" --tag 42 --chain new.pem > other-key.jws
make_b --seq 3 > stale.jws
make_b --iat $((now - 1000)) --lifetime 10 > expired.jws
make_b --iat $((now + 3600)) > future.jws
"$CERTROT_BIN" bundle make --key key.pem --device "$dev" --tag 42 --chain big.pem --raw > oversize.jws
"$CERTROT_BIN" bundle make --key key.pem --device "$dev" --tag 42 --chain huge.pem --raw --parts > huge.parts
"$CERTROT_BIN" bundle make --key key.pem --device "$dev" --tag 42 --chain crlf.pem --raw > crlf.jws
if "$CERTROT_BIN" bundle make --key key.pem --device "$dev" --tag 42 --chain big.pem > /dev/null 2>&1; then
    echo "vectors.sh: certrot accepted a chain over 4096 bytes without --raw" >&2
fi
"$CERTROT_BIN" bundle make --key key.pem --device "$dev" --trust-key next-pub.pem --seq 1 > trust.jws
"$CERTROT_BIN" bundle make --key key.pem --device "$dev" --trust-key next-pub.pem --seq 1 --parts --max-message 256 > trust.parts
"$CERTROT_BIN" bundle make --key next.pem --device "$dev" --tag 42 --chain new.pem --seq 2 > by-next.jws
"$CERTROT_BIN" bundle make --key key.pem --device "$dev" --trust-key next-pub.pem --tag 42 --chain new.pem --seq 1 > trust-and-chain.jws
"$CERTROT_BIN" bundle make --key other.pem --device "$dev" --trust-key next-pub.pem --seq 1 > trust-by-other.jws
# Compact bundles (docs/protocol.md §12): the same cases as COSE_Sign1 in hex, for a device of the compact profile.
# A chain of 4 RSA certificates: over 4096 bytes of PEM, but its compact bundle fits the 4096-byte buffer.
for i in 1 2 3 4; do openssl x509 -in "big$i.raw" >> big4.pem; done
make_c() { "$CERTROT_BIN" bundle make --format cose --key key.pem --device "$dev" --tag 42 --chain new.pem "$@"; }
make_c --seq 1 > good.cose
make_c --seq 1 --parts --max-message 256 > good-cose.parts
make_c --seq 7 --jti 0123456789abcdef0123456789abcdef > resend.cose
"$CERTROT_BIN" bundle make --format cose --key key.pem --device nrf-other --tag 42 --chain new.pem > other-sub.cose
"$CERTROT_BIN" bundle make --format cose --key other.pem --device "$dev" --tag 42 --chain new.pem > other-key.cose
make_c --seq 3 > stale.cose
make_c --iat $((now - 1000)) --lifetime 10 > expired.cose
make_c --iat $((now + 3600)) > future.cose
"$CERTROT_BIN" bundle make --format cose --key key.pem --device "$dev" --tag 42 --chain big4.pem --raw > oversize.cose
"$CERTROT_BIN" bundle make --format cose --key key.pem --device "$dev" --tag 42 --chain big.pem --raw --parts > big-cose.parts
if "$CERTROT_BIN" bundle make --format cose --key key.pem --device "$dev" --tag 42 --chain crlf.pem --raw > /dev/null 2>&1; then
    echo "vectors.sh: certrot made a compact bundle of a CRLF chain" >&2 # DER has no line endings: not representable
    exit 1
fi
"$CERTROT_BIN" bundle make --format cose --key key.pem --device "$dev" --trust-key next-pub.pem --seq 1 > trust.cose
"$CERTROT_BIN" bundle make --format cose --key key.pem --device "$dev" --trust-key next-pub.pem --seq 1 --parts --max-message 256 > trust-cose.parts
"$CERTROT_BIN" bundle make --format cose --key next.pem --device "$dev" --tag 42 --chain new.pem --seq 2 > by-next.cose
"$CERTROT_BIN" bundle make --format cose --key key.pem --device "$dev" --trust-key next-pub.pem --tag 42 --chain new.pem --seq 1 > trust-and-chain.cose
"$CERTROT_BIN" bundle make --format cose --key other.pem --device "$dev" --trust-key next-pub.pem --seq 1 > trust-by-other.cose
ca newer # both formats on one device: a JWS bundle after the compact ones
newer_digest=$(sha256sum newer.pem | cut -d' ' -f1)
"$CERTROT_BIN" bundle make --key next.pem --device "$dev" --tag 42 --chain newer.pem --seq 3 > by-next-3.jws
"$CERTROT_BIN" bundle inspect --pubkey pub.pem good.cose > inspect.txt 2>&1 || { cat inspect.txt; exit 1; }

# sanity: certrot's own checks agree that the good bundle verifies
"$CERTROT_BIN" bundle inspect --pubkey pub.pem good.jws > inspect.txt 2>&1 || { cat inspect.txt; exit 1; }

# name expect now applied_seq last_jti mode file digest
cat > manifest <<M
good-jws                applied              -        -  -                                 jws            good.jws      $digest
good-jws-time-known     applied              $now     -  -                                 jws            good.jws      $digest
good-parts              applied              -        -  -                                 parts          good.parts    $digest
good-parts-reversed     applied              $now     -  -                                 parts-reversed good.parts    $digest
already-applied         already_applied      -        7  0123456789abcdef0123456789abcdef  jws            resend.jws    -
tampered-header         unknown_kid          -        -  -                                 tamper0        good.jws      -
tampered-claims         bad_signature        -        -  -                                 tamper1        good.jws      -
tampered-signature      bad_signature        -        -  -                                 tamper2        good.jws      -
other-sub               invalid_bundle       -        -  -                                 jws            other-sub.jws -
other-key               unknown_kid          -        -  -                                 jws            other-key.jws -
stale-seq               invalid_bundle       -        5  -                                 jws            stale.jws     -
equal-seq               invalid_bundle       -        3  -                                 jws            stale.jws     -
expired                 invalid_bundle       $now     -  -                                 jws            expired.jws   -
expired-time-unknown    applied              -        -  -                                 jws            expired.jws   $digest
issued-in-future        invalid_bundle       $now     -  -                                 jws            future.jws    -
oversize-chain          credential_too_large -        -  -                                 jws            oversize.jws  -
crlf-pem                invalid_pem          -        -  -                                 jws            crlf.jws      -
bundle-over-buffer      bundle_too_large     -        -  -                                 parts          huge.parts    -
signed-by-next-untrusted unknown_kid         -        -  -                                 jws            by-next.jws   -
trust-key               applied              $now     -  -                                 jws            trust.jws     kid:$next_kid
+signed-by-next         applied              -        -  -                                 jws            by-next.jws   $digest
trust-key-parts         applied              -        -  -                                 parts-reversed trust.parts   kid:$next_kid
+signed-by-next-2       applied              -        -  -                                 jws            by-next.jws   $digest
trust-key-and-chain     applied              -        -  -                                 jws            trust-and-chain.jws $digest,kid:$next_kid
+trust-and-chain-resent already_applied      -        -  -                                 jws            trust-and-chain.jws -
trust-key-by-other-key  unknown_kid          -        -  -                                 jws            trust-by-other.jws -
cose-good               applied              -        -  -                                 cose           good.cose     $digest
cose-good-time-known    applied              $now     -  -                                 cose           good.cose     $digest
cose-good-parts         applied              -        -  -                                 cose-parts     good-cose.parts $digest
cose-good-parts-reversed applied             $now     -  -                                 cose-parts-reversed good-cose.parts $digest
+cose-resent-parts      already_applied      -        -  -                                 cose-parts     good-cose.parts -
cose-already-applied    already_applied      -        7  0123456789abcdef0123456789abcdef  cose           resend.cose   -
cose-tampered-kid       unknown_kid          -        -  -                                 cose-kid       good.cose     -
cose-tampered-signature bad_signature        -        -  -                                 cose-sig       good.cose     -
cose-other-sub          invalid_bundle       -        -  -                                 cose           other-sub.cose -
cose-other-key          unknown_kid          -        -  -                                 cose           other-key.cose -
cose-stale-seq          invalid_bundle       -        5  -                                 cose           stale.cose    -
cose-equal-seq          invalid_bundle       -        3  -                                 cose           stale.cose    -
cose-expired            invalid_bundle       $now     -  -                                 cose           expired.cose  -
cose-expired-time-unknown applied            -        -  -                                 cose           expired.cose  $digest
cose-issued-in-future   invalid_bundle       $now     -  -                                 cose           future.cose   -
cose-oversize-chain     credential_too_large -        -  -                                 cose           oversize.cose -
cose-bundle-over-buffer bundle_too_large     -        -  -                                 cose-parts     big-cose.parts -
cose-signed-by-next-untrusted unknown_kid    -        -  -                                 cose           by-next.cose  -
cose-trust-key          applied              $now     -  -                                 cose           trust.cose    kid:$next_kid
+cose-signed-by-next    applied              -        -  -                                 cose           by-next.cose  $digest
+jws-signed-by-next     applied              -        -  -                                 jws            by-next-3.jws $newer_digest
cose-trust-key-parts    applied              -        -  -                                 cose-parts-reversed trust-cose.parts kid:$next_kid
+cose-signed-by-next-2  applied              -        -  -                                 cose           by-next.cose  $digest
cose-trust-key-and-chain applied             -        -  -                                 cose           trust-and-chain.cose $digest,kid:$next_kid
+cose-trust-and-chain-resent already_applied -        -  -                                 cose           trust-and-chain.cose -
cose-trust-key-by-other-key unknown_kid      -        -  -                                 cose           trust-by-other.cose -
M
# The C fake modem's AT%KEYGEN output (CSR + COSE_Sign1 attestation) as the daemon reads it.
"$here/build/test_vectors" --keygen keygen.txt identity.pem 16842754
if "$CERTROT_BIN" cert inspect --identity-key identity.pem --tag 16842754 keygen.txt > inspect.txt 2>&1 &&
    grep -q "verified under the identity key" inspect.txt; then
    KEYGEN_CHECK=ok
else
    KEYGEN_CHECK="$(tr '\n' ' ' < inspect.txt | cut -c1-300)"
fi
export KEYGEN_CHECK
"$here/build/test_vectors" pub.pem "$kid" "$dev" manifest
