#!/bin/sh
# `make size` for one compiler: flash/RAM of the library objects, the static RAM of one device per profile
# (tests/ram_probe.c: the context and the caller's buffers), and the peak stack of the entry points
# (-fstack-usage frames summed over -fcallgraph-info call paths; callbacks and libc not included).
#   size.sh LABEL CC SIZE NM "FLAGS" OUTDIR
set -eu
label=$1 cc=$2 sz=$3 nm=$4 flags=$5 out=$6
mkdir -p "$out"
rm -f "$out"/*.ci "$out"/*.su
for f in src/certrot_*.c; do
    # shellcheck disable=SC2086
    $cc $flags -Iinclude -I"$out/inc" -fstack-usage -fcallgraph-info=su -c "$f" -o "$out/$(basename "$f" .c).o"
done
# shellcheck disable=SC2086
$cc $flags -Iinclude -c tests/ram_probe.c -o "$out/ram_probe.o"
echo "== $label"
$sz "$out"/certrot_*.o
sym() { $nm -S -t d "$out/ram_probe.o" | awk -v s="$1" '$4 == s { print $2 + 0 }'; }
ctx=$(sym probe_ctx)
cb=$(sym probe_cose_buf) cs=$(sym probe_cose_scratch) jb=$(sym probe_jws_buf) js=$(sym probe_jws_scratch)
echo "static RAM per device (buffers + sizeof(certrot_ctx) = $ctx):"
echo "  compact profile: CERTROT_NRF91_COSE_BUF $cb + CERTROT_NRF91_COSE_SCRATCH $cs + ctx $ctx = $((cb + cs + ctx)) B"
echo "  JWS profile:     CERTROT_NRF91_JWS_BUF $jb + scratch $js + ctx $ctx = $((jb + js + ctx)) B"
echo "peak stack (-fstack-usage over the call graph):"
awk -v roots=certrot_on_part,certrot_json_check,certrot_cbor_check,certrot_check_compact,certrot_check_bundle,certrot_apply_bundle,certrot_poll,certrot_init,certrot_build_inventory_ctx \
    -f tests/stack.awk "$out"/*.ci
