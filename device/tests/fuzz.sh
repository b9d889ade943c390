#!/bin/sh
# libFuzzer runs of the device library (ASan + UBSan, the Swift toolchain's clang), from real seeds made at test time
# by the Swift `certrot bundle make` (as tests/vectors.sh), plus hand-made ones. Fails on any finding.
#   sh tests/fuzz.sh [SECONDS]        SECONDS per target (default 15; `make fuzz` runs 6 targets); a developer's
#                                     longer run: sh tests/fuzz.sh 3600
#   CERTROT_BIN  the certrot binary (default ../.build/debug/certrot); FUZZ_OUT the build dir (default build/fuzz)
# Targets: part_sig (certrot_on_part, ES256 verified for real), part_any (every signature taken as valid: steps 7-11
# and the modem procedure), cbor, json, cmng (AT%CMNG=1 lines), codecs (base64url, PEM, DER, builders).
# The corpus grows in $FUZZ_OUT/corpus/<target> across runs; findings are kept as $FUZZ_OUT/crash-*.
# Prints executions and coverage per target; last line "N passed, M failed".
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-15}
out=${FUZZ_OUT:-$here/build/fuzz}
CERTROT_BIN=${CERTROT_BIN:-$here/../.build/debug/certrot}
targets="part_sig part_any cbor json cmng codecs"
if [ ! -x "$CERTROT_BIN" ]; then
    echo "fuzz.sh: certrot binary not found at $CERTROT_BIN (build it or set CERTROT_BIN)" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
for t in $targets; do
    [ -x "$out/fuzz_$t" ] || { echo "fuzz.sh: $out/fuzz_$t missing (make -C device fuzz-build)" >&2; echo "0 passed, 1 failed"; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
seeds="$out/seeds"
rm -rf "$seeds"
for t in $targets; do mkdir -p "$seeds/$t" "$out/corpus/$t"; done

# ---- seeds: real bundles, signed by certrot ----
(
    set -e
    cd "$tmp"
    dev=nrf-352656100123456
    kid=$("$CERTROT_BIN" keys generate --out key.pem)
    "$CERTROT_BIN" keys export --key key.pem --format pem > "$out/pub.pem"
    "$CERTROT_BIN" keys generate --out next.pem > /dev/null
    "$CERTROT_BIN" keys export --key next.pem --format pem > next-pub.pem
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 -subj "/CN=fuzz" \
        -keyout ca.key -out ca.raw 2>/dev/null
    openssl x509 -in ca.raw -out new.pem
    openssl x509 -in ca.raw -outform DER -out new.der
    b() { "$CERTROT_BIN" bundle make --key key.pem --device "$dev" "$@"; }
    b --tag 42 --chain new.pem --seq 1 > good.jws
    b --tag 42 --chain new.pem --seq 1 --parts --max-message 256 > good.parts
    b --trust-key next-pub.pem --seq 1 > trust.jws
    b --trust-key next-pub.pem --tag 42 --chain new.pem --seq 1 > trust-chain.jws
    b --format cose --tag 42 --chain new.pem --seq 1 > good.cose
    b --format cose --tag 42 --chain new.pem --seq 1 --parts --max-message 256 > good-cose.parts
    b --format cose --trust-key next-pub.pem --seq 1 > trust.cose
    b --format cose --trust-key next-pub.pem --tag 42 --chain new.pem --seq 1 > trust-chain.cose
    "$CERTROT_BIN" bundle make --key key.pem --device nrf-other --tag 42 --chain new.pem > other-sub.jws
    sep=$(printf '\377PART')
    hex2bin() { perl -ne 'chomp; print pack("H*", $_)'; }
    u64() { basenc --base64url | tr -d '=\n'; }
    for f in good trust trust-chain other-sub; do
        { printf '\004'; tr -d '\n' < $f.jws; } > "$seeds/part_sig/jws-$f"
        { printf '\064'; tr -d '\n' < $f.jws; } > "$seeds/part_sig/jws-$f-4parts"
        { printf '\126'; tr -d '\n' < $f.jws; } > "$seeds/part_sig/jws-$f-2rev-time"
    done
    for f in good trust trust-chain; do
        { printf '\005'; hex2bin < $f.cose; } > "$seeds/part_sig/cose-$f"
        { printf '\165'; hex2bin < $f.cose; } > "$seeds/part_sig/cose-$f-4rev"
        hex2bin < $f.cose > "$seeds/cbor/$f.cose"
    done
    { printf '\000'; awk -v s="$sep" 'NR > 1 { printf "%s", s } { printf "%s", $0 }' good.parts; } > "$seeds/part_sig/parts"
    { printf '\001'; first=1; while read -r l; do [ $first = 1 ] || printf '%s' "$sep"; first=0; printf '%s' "$l" | hex2bin; done < good-cose.parts; } \
        > "$seeds/part_sig/cose-parts"
    i=0
    while read -r l; do i=$((i + 1)); printf '%s' "$l" | hex2bin > "$seeds/cbor/part$i"; done < good-cose.parts
    i=0
    while read -r l; do i=$((i + 1)); printf '%s' "$l" > "$seeds/json/part$i"; done < good.parts
    for f in good trust; do
        cut -d. -f1 $f.jws | tr -d '\n' | basenc --base64url -d > "$seeds/json/$f-header" 2>/dev/null || true
        cut -d. -f2 $f.jws | tr -d '\n' | { cat; printf '=='; } | basenc --base64url -d > "$seeds/json/$f-claims" 2>/dev/null || true
    done
    # Unsigned bundles of the ops certrot bundle make cannot make (keygen, activate, delete, bad trust_key):
    # meaningful to part_any, which takes any signature.
    hdr=$(printf '{"alg":"ES256","kid":"%s","typ":"certrot-bundle+jwt"}' "$kid" | u64)
    sig=$(head -c 64 /dev/zero | u64)
    claims() { printf '{"exp":2147483647,"iat":0,"iss":"certrot","jti":"%s","ops":[%s],"seq":%s,"sub":"%s"}' "$1" "$2" "$3" "$dev"; }
    n=0
    for ops in '{"op":"keygen","subject":"CN=nrf-352656100123456","tag":16842754}' \
        '{"op":"activate","tag":16842754}' \
        '{"op":"delete","tag":42,"type":0}' \
        '{"op":"write","tag":7,"type":1,"pem":"x","sha256":"00"},{"op":"delete","tag":8,"type":2}' \
        '{"op":"trust_key","jwk":{"crv":"P-256","kty":"EC","x":"AAAA","y":"AAAA"},"kid":"AAAA"}' \
        '{"op":"keygen","subject":"CN=a\u00e9","tag":16842754},{"op":"activate","tag":16842754,"pem":null}'; do
        n=$((n + 1))
        claims "u$n" "$ops" $((n + 1)) > "$seeds/json/unsigned-claims-$n"
        { printf '\004%s.' "$hdr"; claims "u$n" "$ops" $((n + 1)) | u64; printf '.%s' "$sig"; } > "$seeds/part_any/unsigned-$n"
    done
    cp "$seeds/part_sig/"* "$seeds/part_any/"
    cp good.jws new.pem new.der "$seeds/codecs/"
    cut -d. -f1 good.jws > "$seeds/codecs/header.b64url"
    printf '%%CMNG: 42,0,"2C43952EE9E000FF2ACC4E2ED0897C0A72AD5FA72C3D934E81741CBD54F05BD1"\r\n' > "$seeds/cmng/1"
    printf '%%CMNG: 16842753,1,"2c43952ee9e000ff2acc4e2ed0897c0a72ad5fa72c3d934e81741cbd54f05bd1"' > "$seeds/cmng/2"
    printf '%%CMNG: 2147483647, 6 ,2C43952EE9E000FF2ACC4E2ED0897C0A72AD5FA72C3D934E81741CBD54F05BD1\n' > "$seeds/cmng/3"
) || { echo "fuzz.sh: making the seeds failed"; echo "0 passed, 1 failed"; exit 1; }

# ---- runs ----
export CERTROT_FUZZ_PUBKEY="$out/pub.pem"
pass=0 fail=0
printf '%-9s %6s %10s %9s %6s %6s %6s  %s\n' target secs execs exec/s cov ft corpus result
for t in $targets; do
    log="$out/fuzz_$t.log"
    (cd "$out" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "./fuzz_$t" -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$out/crash-$t-" \
        "corpus/$t" "seeds/$t") > "$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | grep 'cov:' | tail -1)
    cov=$(printf '%s' "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(printf '%s' "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    corp=$(printf '%s' "$last" | sed -n 's/.* corp: \([0-9]*\).*/\1/p')
    if [ $rc -eq 0 ] && ! grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|deadly signal' "$log"; then
        result=ok pass=$((pass + 1))
    else
        result="FAIL (rc $rc, see $log)" fail=$((fail + 1))
        grep -E 'ERROR|runtime error|SUMMARY|Test unit written' "$log" | head -8 | sed 's/^/    /'
    fi
    printf '%-9s %6s %10s %9s %6s %6s %6s  %s\n' "$t" "$secs" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result"
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
