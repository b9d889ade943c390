#!/bin/sh
# Runs every test suite and prints the total as "N passed, M failed" (the last line; CI reads it).
# Exits non-zero when any suite fails or does not report.
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
total_pass=0
total_fail=0
for suite in "build/test_unit" "sh tests/nordic_keygen.sh" "sh tests/vectors.sh" "sh tests/e2e.sh"; do
    echo "== $suite"
    out=$($suite 2>&1)
    rc=$?
    printf '%s\n' "$out"
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1)
    p=$(printf '%s' "$line" | sed -n 's/^\([0-9]*\) passed.*/\1/p')
    f=$(printf '%s' "$line" | sed -n 's/.*passed, \([0-9]*\) failed$/\1/p')
    if [ -z "$line" ]; then p=0; f=1; fi
    if [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then f=1; fi
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
done
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
