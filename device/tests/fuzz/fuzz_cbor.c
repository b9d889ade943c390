/* libFuzzer target: the CBOR reader. Checked input must be walked to its end by certrot_cbor_skip, and the typed
 * readers must stay inside it. */
#include "../../src/certrot_internal.h"

#include <stdlib.h>

static void walk(certrot_cbor *c, int depth)
{
    certrot_cbor at = *c;
    size_t n;
    int64_t i;
    uint64_t tag;
    const uint8_t *s;
    const char *t;
    if (depth > CERTROT_CBOR_MAX_DEPTH + 1) abort();
    if (certrot_cbor_array(&at, &n)) {
        for (size_t k = 0; k < n; k++) walk(&at, depth + 1);
    } else if (certrot_cbor_map(&at, &n)) {
        certrot_cbor v;
        certrot_cbor_find(&at, n, "ops", &v);
        for (size_t k = 0; k < 2 * n; k++) walk(&at, depth + 1);
    } else if (certrot_cbor_tag(&at, &tag)) {
        walk(&at, depth + 1);
    } else if (certrot_cbor_bytes(&at, &s, &n) || certrot_cbor_text(&at, &t, &n) || certrot_cbor_int(&at, &i)) {
    } else if (!certrot_cbor_skip(&at)) {
        abort(); /* a simple value: skip takes it */
    }
    certrot_cbor sk = *c;
    if (!certrot_cbor_skip(&sk) || sk.p != at.p) abort(); /* skip and the readers agree */
    if (at.p > at.end) abort();
    *c = at;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *why = NULL;
    if (certrot_cbor_check(data, size, &why) != 0) {
        if (!why) abort();
        return 0;
    }
    certrot_cbor c = {data, data + size};
    walk(&c, 0);
    if (c.p != data + size) abort(); /* one item, nothing after it */
    return 0;
}
