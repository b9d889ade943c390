/* libFuzzer target: the JSON reader. Checked input must be walked to its end; strings unescape to valid UTF-8 of
 * the length measured; integers are integral and within +-2^53. */
#include "../../src/certrot_internal.h"

#include <stdlib.h>
#include <string.h>

static void walk(certrot_json *c, int depth)
{
    if (depth > CERTROT_JSON_MAX_DEPTH + 1) abort();
    certrot_json v = *c, el, m;
    switch (certrot_json_type(&v)) {
    case 'o':
        certrot_json_find(&v, "jti", &m);
        certrot_json_find(&v, "ops", &m);
        break;
    case 'a': {
        certrot_json it = v;
        while (certrot_json_next(&it, &el)) walk(&el, depth + 1);
        break;
    }
    case 's': {
        long n = certrot_json_string(&v, NULL, 0);
        if (n < 0) abort();
        uint8_t *buf = malloc((size_t)n + 4);
        if (certrot_json_string(&v, buf, (size_t)n) != n) abort();
        /* the unescaped bytes, quoted again with every byte escaped as needed, are strict JSON: valid UTF-8 */
        uint8_t *q = malloc((size_t)n * 6 + 3);
        size_t k = 0;
        q[k++] = '"';
        for (long i = 0; i < n; i++) {
            if (buf[i] < 0x20 || buf[i] == '"' || buf[i] == '\\') {
                static const char hex[] = "0123456789abcdef";
                q[k++] = '\\', q[k++] = 'u', q[k++] = '0', q[k++] = '0', q[k++] = (uint8_t)hex[buf[i] >> 4],
                q[k++] = (uint8_t)hex[buf[i] & 15];
            } else {
                q[k++] = buf[i];
            }
        }
        q[k++] = '"';
        if (certrot_json_check(q, k, NULL) != 0) abort();
        free(q);
        free(buf);
        break;
    }
    case 'n': {
        int64_t i;
        if (certrot_json_int(&v, &i) && (i > 9007199254740992LL || i < -9007199254740992LL)) abort();
        break;
    }
    case 'b': case 'z': break;
    default: abort();
    }
    certrot_json s = *c;
    if (!certrot_json_skip(&s) || s.p > s.end) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *why = NULL;
    if (certrot_json_check(data, size, &why) != 0) {
        if (!why) abort();
        return 0;
    }
    certrot_json c = certrot_json_at(data, size);
    walk(&c, 0);
    if (!certrot_json_skip(&c) || c.p != data + size) abort(); /* one value, nothing after it */
    return 0;
}
