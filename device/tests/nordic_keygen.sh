#!/bin/sh
# The fake modem's AT%KEYGEN answers read by Nordic's own parser (nrfcloud-utils' modem_credentials_parser, pinned
# in scripts/bootstrap): every answer parses, its attested digest matches its CSR, and the UUID and sec tag are the
# ones the fake modem put there. Prints "N passed, M failed".
here=$(cd "$(dirname "$0")/.." && pwd)
build/fake_keygen 8 > build/fake_keygen.txt || { echo "fake_keygen failed"; echo "0 passed, 1 failed"; exit 1; }
python3 "$here/../scripts/nordic-keygen-check" build/fake_keygen.txt
