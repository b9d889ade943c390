/* A small CBOR reader (RFC 8949) for compact bundles (docs/protocol.md §12): no heap, no recursion, bounds
 * checked. certrot_cbor_check() accepts exactly one item in the core deterministic encoding (§4.2.1): definite
 * lengths, shortest heads, map keys in the bytewise order of their encodings and none twice, valid UTF-8 text,
 * nesting at most CERTROT_CBOR_MAX_DEPTH, nothing after the item. The readers then walk checked input without
 * copying: byte and text strings are pointers into it. */
#include "certrot_internal.h"

#include <string.h>

/* The head at p: major type, argument and head length. Refuses indefinite lengths, reserved additional
 * information and a head longer than its argument needs. Major type 7 is handled by the callers. */
static int read_head(const uint8_t *p, const uint8_t *end, uint8_t *major, uint64_t *arg, size_t *hlen,
                     const char **why)
{
    if (p >= end) {
        *why = "CBOR ends inside an item";
        return -1;
    }
    uint8_t info = p[0] & 31;
    *major = p[0] >> 5;
    if (info < 24) {
        *arg = info;
        *hlen = 1;
        return 0;
    }
    if (info > 27) {
        *why = info == 31 ? "indefinite-length CBOR items are not accepted" : "reserved CBOR additional information";
        return -1;
    }
    size_t n = (size_t)1 << (info - 24);
    if ((size_t)(end - p) < 1 + n) {
        *why = "CBOR ends inside an item";
        return -1;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v = v << 8 | p[1 + i];
    static const uint64_t least[] = {24, 0x100, 0x10000, 0x100000000u};
    if (v < least[info - 24]) {
        *why = "CBOR head longer than needed (not the core deterministic encoding)";
        return -1;
    }
    *arg = v;
    *hlen = 1 + n;
    return 0;
}

static bool utf8_ok(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, least;
        if ((c & 0xE0) == 0xC0) k = 1, cp = c & 0x1F, least = 0x80;
        else if ((c & 0xF0) == 0xE0) k = 2, cp = c & 0x0F, least = 0x800;
        else if ((c & 0xF8) == 0xF0) k = 3, cp = c & 0x07, least = 0x10000;
        else return false;
        if (n - i - 1 < k) return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if (cp < least || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += k + 1;
    }
    return true;
}

typedef struct {
    uint64_t left;        /* items still to come in this container (a map counts keys and values) */
    const uint8_t *key;   /* map: where the key being read starts */
    const uint8_t *prev;  /* map: the previous key's encoding */
    size_t prev_len;
    bool map;
} level;

int certrot_cbor_check(const uint8_t *p, size_t len, const char **why)
{
    const char *unused;
    if (!why) why = &unused;
    *why = NULL;
    if (!p) {
        *why = "no CBOR";
        return -1;
    }
    level st[CERTROT_CBOR_MAX_DEPTH + 1];
    const uint8_t *pos = p, *end = p + len;
    size_t depth = 0;
    memset(&st[0], 0, sizeof st[0]);
    st[0].left = 1; /* the one top-level item */
    for (;;) {
        level *l = &st[depth];
        if (l->map && l->left % 2 == 0) l->key = pos;
        if (pos >= end) {
            *why = "CBOR ends inside an item";
            return -1;
        }
        if (pos[0] >> 5 == 7) {
            uint8_t info = pos[0] & 31;
            if (info < 20 || info > 23) { /* false, true, null, undefined only */
                *why = info >= 25 && info <= 27 ? "CBOR floats are not accepted in a bundle"
                       : info == 31             ? "indefinite-length CBOR items are not accepted"
                                                : "unsupported CBOR simple value";
                return -1;
            }
            pos++;
        } else {
            uint8_t major;
            uint64_t arg;
            size_t hl;
            if (read_head(pos, end, &major, &arg, &hl, why) != 0) return -1;
            pos += hl;
            uint64_t rest = (uint64_t)(end - pos);
            if (major == 2 || major == 3) {
                if (arg > rest) {
                    *why = "CBOR string runs past the end";
                    return -1;
                }
                if (major == 3 && !utf8_ok(pos, (size_t)arg)) {
                    *why = "CBOR text string is not UTF-8";
                    return -1;
                }
                pos += arg;
            } else if (major >= 4) { /* array, map, tag */
                /* every item takes at least a byte: a count beyond what is left is a lie */
                if ((major == 4 && arg > rest) || (major == 5 && arg > rest / 2)) {
                    *why = major == 4 ? "CBOR array runs past the end" : "CBOR map runs past the end";
                    return -1;
                }
                if (major == 6 || arg > 0) {
                    if (depth + 1 > CERTROT_CBOR_MAX_DEPTH) {
                        *why = "CBOR nested too deep";
                        return -1;
                    }
                    depth++;
                    memset(&st[depth], 0, sizeof st[depth]);
                    st[depth].left = major == 4 ? arg : major == 5 ? 2 * arg : 1;
                    st[depth].map = major == 5;
                    continue;
                }
            }
        }
        /* An item is complete: count it in its container, and every container it completes. */
        for (;;) {
            l = &st[depth];
            if (l->map && l->left % 2 == 0) { /* it was a key: after the previous one, bytewise */
                size_t kl = (size_t)(pos - l->key);
                if (l->prev) {
                    size_t m = l->prev_len < kl ? l->prev_len : kl;
                    int c = memcmp(l->prev, l->key, m);
                    if (c == 0 && l->prev_len == kl) {
                        *why = "CBOR map has a key twice";
                        return -1;
                    }
                    if (c > 0 || (c == 0 && l->prev_len > kl)) {
                        *why = "CBOR map keys are not in the core deterministic order";
                        return -1;
                    }
                }
                l->prev = l->key;
                l->prev_len = kl;
            }
            if (--l->left > 0) break;
            if (depth == 0) {
                if (pos != end) {
                    *why = "bytes after the CBOR item";
                    return -1;
                }
                return 0;
            }
            depth--;
        }
    }
}

/* ---- readers --------------------------------------------------------------------------------------- */

/* The head at the cursor, without moving it; false at the end, on a simple value, or on a malformed head. */
static bool peek(const certrot_cbor *c, uint8_t *major, uint64_t *arg, size_t *hlen)
{
    const char *why;
    if (c->p >= c->end || c->p[0] >> 5 == 7) return false;
    return read_head(c->p, c->end, major, arg, hlen, &why) == 0;
}

bool certrot_cbor_skip(certrot_cbor *c)
{
    const uint8_t *p = c->p;
    uint64_t pending = 1;
    while (pending) {
        if (p >= c->end) return false;
        pending--;
        if (p[0] >> 5 == 7) {
            if ((p[0] & 31) > 23) return false;
            p++;
            continue;
        }
        certrot_cbor at = {p, c->end};
        uint8_t major;
        uint64_t arg;
        size_t hl;
        if (!peek(&at, &major, &arg, &hl)) return false;
        p += hl;
        uint64_t rest = (uint64_t)(c->end - p);
        if (major == 2 || major == 3) {
            if (arg > rest) return false;
            p += arg;
        } else if (major == 4 || major == 5) {
            if (arg > rest) return false;
            pending += major == 4 ? arg : 2 * arg;
        } else if (major == 6) {
            pending++;
        }
    }
    c->p = p;
    return true;
}

static bool take(certrot_cbor *c, uint8_t want, uint64_t *arg)
{
    uint8_t major;
    size_t hl;
    if (!peek(c, &major, arg, &hl) || major != want) return false;
    c->p += hl;
    return true;
}

bool certrot_cbor_int(certrot_cbor *c, int64_t *out)
{
    uint8_t major;
    uint64_t arg;
    size_t hl;
    if (!peek(c, &major, &arg, &hl) || major > 1 || arg > (uint64_t)INT64_MAX) return false;
    *out = major == 0 ? (int64_t)arg : -1 - (int64_t)arg;
    c->p += hl;
    return true;
}

static bool string(certrot_cbor *c, uint8_t major, const uint8_t **s, size_t *n)
{
    certrot_cbor at = *c;
    uint64_t arg;
    if (!take(&at, major, &arg) || arg > (uint64_t)(at.end - at.p)) return false;
    *s = at.p;
    *n = (size_t)arg;
    c->p = at.p + arg;
    return true;
}

bool certrot_cbor_bytes(certrot_cbor *c, const uint8_t **s, size_t *n) { return string(c, 2, s, n); }

bool certrot_cbor_text(certrot_cbor *c, const char **s, size_t *n)
{
    const uint8_t *b; /* not through a cast of s: const char * and const uint8_t * may not alias */
    if (!string(c, 3, &b, n)) return false;
    *s = (const char *)b;
    return true;
}

bool certrot_cbor_array(certrot_cbor *c, size_t *n)
{
    uint64_t arg;
    certrot_cbor at = *c;
    if (!take(&at, 4, &arg) || arg > (uint64_t)(at.end - at.p)) return false;
    *n = (size_t)arg;
    *c = at;
    return true;
}

bool certrot_cbor_map(certrot_cbor *c, size_t *n)
{
    uint64_t arg;
    certrot_cbor at = *c;
    if (!take(&at, 5, &arg) || arg > (uint64_t)(at.end - at.p) / 2) return false;
    *n = (size_t)arg;
    *c = at;
    return true;
}

bool certrot_cbor_tag(certrot_cbor *c, uint64_t *tag) { return take(c, 6, tag); }

bool certrot_cbor_find(const certrot_cbor *body, size_t pairs, const char *key, certrot_cbor *value)
{
    certrot_cbor c = *body;
    size_t klen = strlen(key);
    for (size_t i = 0; i < pairs; i++) {
        const char *k = "";
        size_t n = 0;
        certrot_cbor at = c;
        if (certrot_cbor_text(&at, &k, &n) && n == klen && memcmp(k, key, n) == 0) {
            *value = at;
            return true;
        }
        if (!certrot_cbor_skip(&c) || !certrot_cbor_skip(&c)) return false;
    }
    return false;
}
