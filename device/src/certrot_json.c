/* A small JSON reader (RFC 8259) for the part envelope and the JWS header and claims: no heap, no recursion,
 * bounds checked, the same shape as the CBOR reader. certrot_json_check() accepts exactly one value (whitespace
 * around it allowed) in the strict grammar: no leading zeros or '+', no trailing commas, strings of valid UTF-8
 * without raw control characters, valid escapes and surrogate pairs, nesting at most CERTROT_JSON_MAX_DEPTH. The
 * readers then walk checked input without copying, except certrot_json_string, which unescapes. Objects are
 * searched for the first member with a key (as cJSON, which this replaced, did). */
#include "certrot_internal.h"

#include <string.h>

static bool is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static const uint8_t *skip_ws(const uint8_t *p, const uint8_t *end)
{
    while (p < end && is_ws(*p)) p++;
    return p;
}

static int hex_value(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Four hex digits at p (end bounds), or -1. */
static long hex4(const uint8_t *p, const uint8_t *end)
{
    if (end - p < 4) return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_value(p[i]);
        if (h < 0) return -1;
        v = v << 4 | h;
    }
    return v;
}

/* Length of the UTF-8 sequence at p (shortest form, no surrogates, at most U+10FFFF), or 0. */
static size_t utf8_seq(const uint8_t *p, const uint8_t *end)
{
    uint8_t c = p[0];
    size_t k;
    uint32_t cp, least;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) k = 1, cp = c & 0x1F, least = 0x80;
    else if ((c & 0xF0) == 0xE0) k = 2, cp = c & 0x0F, least = 0x800;
    else if ((c & 0xF8) == 0xF0) k = 3, cp = c & 0x07, least = 0x10000;
    else return 0;
    if ((size_t)(end - p) < k + 1) return 0;
    for (size_t j = 1; j <= k; j++) {
        if ((p[j] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (p[j] & 0x3F);
    }
    if (cp < least || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return k + 1;
}

/* The string whose opening quote is at p: the position after its closing quote, or NULL (with *why). */
static const uint8_t *check_string(const uint8_t *p, const uint8_t *end, const char **why)
{
    p++;
    while (p < end) {
        uint8_t c = *p;
        if (c == '"') return p + 1;
        if (c < 0x20) {
            *why = "JSON string holds a raw control character";
            return NULL;
        }
        if (c == '\\') {
            if (end - p < 2) break;
            uint8_t e = p[1];
            if (e == 'u') {
                long u = hex4(p + 2, end);
                if (u < 0) {
                    *why = "bad \\u escape in a JSON string";
                    return NULL;
                }
                p += 6;
                if (u >= 0xDC00 && u <= 0xDFFF) {
                    *why = "lone low surrogate in a JSON string";
                    return NULL;
                }
                if (u >= 0xD800 && u <= 0xDBFF) {
                    long lo = end - p >= 6 && p[0] == '\\' && p[1] == 'u' ? hex4(p + 2, end) : -1;
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        *why = "lone high surrogate in a JSON string";
                        return NULL;
                    }
                    p += 6;
                }
                continue;
            }
            if (!memchr("\"\\/bfnrt", e, 8)) {
                *why = "bad escape in a JSON string";
                return NULL;
            }
            p += 2;
            continue;
        }
        size_t k = utf8_seq(p, end);
        if (k == 0) {
            *why = "JSON string is not UTF-8";
            return NULL;
        }
        p += k;
    }
    *why = "JSON string runs past the end";
    return NULL;
}

/* The number at p in the strict grammar: the position after it, or NULL. */
static const uint8_t *check_number(const uint8_t *p, const uint8_t *end)
{
    if (p < end && *p == '-') p++;
    if (p >= end) return NULL;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9')
        while (p < end && *p >= '0' && *p <= '9') p++;
    else return NULL;
    if (p < end && *p == '.') {
        const uint8_t *d = ++p;
        while (p < end && *p >= '0' && *p <= '9') p++;
        if (p == d) return NULL;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        const uint8_t *d = p;
        while (p < end && *p >= '0' && *p <= '9') p++;
        if (p == d) return NULL;
    }
    return p;
}

int certrot_json_check(const uint8_t *p, size_t len, const char **why)
{
    const char *unused;
    if (!why) why = &unused;
    *why = NULL;
    if (!p) {
        *why = "no JSON";
        return -1;
    }
    const uint8_t *end = p + len;
    enum { VALUE, VALUE_OR_CLOSE, KEY, KEY_OR_CLOSE, AFTER } state = VALUE;
    unsigned depth = 0;
    uint32_t in_object = 0; /* bit d-1: the container at depth d is an object */
    for (;;) {
        p = skip_ws(p, end);
        if (state == AFTER && depth == 0) {
            if (p != end) {
                *why = "bytes after the JSON value";
                return -1;
            }
            return 0;
        }
        if (p >= end) {
            *why = "JSON ends inside a value";
            return -1;
        }
        uint8_t c = *p;
        bool close = false;
        switch (state) {
        case VALUE_OR_CLOSE:
            if (c == ']') {
                close = true;
                break;
            }
            /* fall through */
        case VALUE:
            if (c == '{' || c == '[') {
                if (depth >= CERTROT_JSON_MAX_DEPTH) {
                    *why = "JSON nested too deep";
                    return -1;
                }
                depth++;
                if (c == '{') in_object |= (uint32_t)1 << (depth - 1);
                else in_object &= ~((uint32_t)1 << (depth - 1));
                state = c == '{' ? KEY_OR_CLOSE : VALUE_OR_CLOSE;
                p++;
                continue;
            }
            if (c == '"') {
                if (!(p = check_string(p, end, why))) return -1;
            } else if (c == '-' || (c >= '0' && c <= '9')) {
                if (!(p = check_number(p, end))) {
                    *why = "bad JSON number";
                    return -1;
                }
            } else if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
                p += 4;
            } else if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
                p += 5;
            } else if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
                p += 4;
            } else {
                *why = "not a JSON value";
                return -1;
            }
            state = AFTER;
            continue;
        case KEY_OR_CLOSE:
            if (c == '}') {
                close = true;
                break;
            }
            /* fall through */
        case KEY:
            if (c != '"') {
                *why = "JSON object key is not a string";
                return -1;
            }
            if (!(p = check_string(p, end, why))) return -1;
            p = skip_ws(p, end);
            if (p >= end || *p != ':') {
                *why = "JSON object key without ':'";
                return -1;
            }
            p++;
            state = VALUE;
            continue;
        case AFTER: {
            bool obj = in_object >> (depth - 1) & 1;
            if (c == ',') {
                state = obj ? KEY : VALUE;
                p++;
                continue;
            }
            if (c == (obj ? '}' : ']')) {
                close = true;
                break;
            }
            *why = obj ? "expected ',' or '}' in a JSON object" : "expected ',' or ']' in a JSON array";
            return -1;
        }
        }
        if (close) {
            depth--;
            p++;
            state = AFTER;
        }
    }
}

/* ---- readers (checked input) ----------------------------------------------------------------------- */

static void cursor_ws(certrot_json *c) { c->p = skip_ws(c->p, c->end); }

certrot_json certrot_json_at(const uint8_t *p, size_t len)
{
    certrot_json c = {p, p + len};
    cursor_ws(&c);
    return c;
}

int certrot_json_type(const certrot_json *v)
{
    if (v->p >= v->end) return 0;
    switch (*v->p) {
    case '{': return 'o';
    case '[': return 'a';
    case '"': return 's';
    case 't': case 'f': return 'b';
    case 'n': return 'z';
    default: return *v->p == '-' || (*v->p >= '0' && *v->p <= '9') ? 'n' : 0;
    }
}

/* The position after the string at p (opening quote), for checked input; NULL when it is cut. */
static const uint8_t *string_end(const uint8_t *p, const uint8_t *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\') p++;
        else if (*p == '"') return p + 1;
    }
    return NULL;
}

bool certrot_json_skip(certrot_json *c)
{
    const uint8_t *p = skip_ws(c->p, c->end), *end = c->end;
    size_t depth = 0;
    if (p >= end) return false;
    do {
        if (p >= end) return false;
        uint8_t ch = *p;
        if (ch == '"') {
            if (!(p = string_end(p, end))) return false;
        } else if (ch == '{' || ch == '[') {
            depth++;
            p++;
        } else if (ch == '}' || ch == ']') {
            if (depth == 0) return false;
            depth--;
            p++;
        } else if (ch == ',' || ch == ':' || is_ws(ch)) {
            if (depth == 0) return false;
            p++;
        } else {
            const uint8_t *s = p;
            while (p < end && (*p == '-' || *p == '+' || *p == '.' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
                               (*p >= 'A' && *p <= 'Z')))
                p++;
            if (p == s) return false;
        }
    } while (depth > 0);
    c->p = skip_ws(p, end);
    return true;
}

long certrot_json_string(const certrot_json *v, uint8_t *out, size_t cap)
{
    const uint8_t *p = v->p, *end = v->end;
    size_t n = 0;
    if (p >= end || *p != '"') return -1;
    for (p++; p < end && *p != '"';) {
        uint8_t u8[4];
        size_t k = 0;
        if (*p != '\\') {
            if (n < cap) out[n] = *p;
            n++;
            p++;
            continue;
        }
        if (end - p < 2) return -1;
        uint8_t e = p[1];
        if (e != 'u') {
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            const char *at = memchr(from, e, 8);
            if (!at) return -1;
            u8[k++] = (uint8_t)to[at - from];
            p += 2;
        } else {
            long cp = hex4(p + 2, end);
            if (cp < 0) return -1;
            p += 6;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                long lo = end - p >= 6 && p[0] == '\\' && p[1] == 'u' ? hex4(p + 2, end) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF) return -1;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return -1;
            }
            if (cp < 0x80) u8[k++] = (uint8_t)cp;
            else if (cp < 0x800) u8[k++] = (uint8_t)(0xC0 | cp >> 6), u8[k++] = (uint8_t)(0x80 | (cp & 0x3F));
            else if (cp < 0x10000)
                u8[k++] = (uint8_t)(0xE0 | cp >> 12), u8[k++] = (uint8_t)(0x80 | (cp >> 6 & 0x3F)),
                u8[k++] = (uint8_t)(0x80 | (cp & 0x3F));
            else
                u8[k++] = (uint8_t)(0xF0 | cp >> 18), u8[k++] = (uint8_t)(0x80 | (cp >> 12 & 0x3F)),
                u8[k++] = (uint8_t)(0x80 | (cp >> 6 & 0x3F)), u8[k++] = (uint8_t)(0x80 | (cp & 0x3F));
        }
        /* the whole escape is read before any of its bytes is written: out may trail the input in place */
        for (size_t i = 0; i < k; i++, n++)
            if (n < cap) out[n] = u8[i];
    }
    if (p >= end) return -1;
    return (long)n;
}

bool certrot_json_string_is(const certrot_json *v, const char *s)
{
    uint8_t buf[32];
    size_t len = strlen(s);
    long n = certrot_json_string(v, buf, sizeof buf);
    return n >= 0 && (size_t)n == len && len <= sizeof buf && memcmp(buf, s, len) == 0;
}

bool certrot_json_find(const certrot_json *obj, const char *key, certrot_json *value)
{
    certrot_json c = *obj;
    cursor_ws(&c);
    if (c.p >= c.end || *c.p != '{') return false;
    c.p++;
    cursor_ws(&c);
    while (c.p < c.end && *c.p == '"') {
        certrot_json k = c;
        if (!(c.p = string_end(c.p, c.end))) return false;
        cursor_ws(&c);
        if (c.p >= c.end || *c.p != ':') return false;
        c.p++;
        cursor_ws(&c);
        if (certrot_json_string_is(&k, key)) {
            *value = c;
            return true;
        }
        if (!certrot_json_skip(&c)) return false;
        if (c.p < c.end && *c.p == ',') {
            c.p++;
            cursor_ws(&c);
        }
    }
    return false;
}

bool certrot_json_next(certrot_json *it, certrot_json *elem)
{
    cursor_ws(it);
    if (it->p >= it->end) return false;
    if (*it->p == '[' || *it->p == ',') {
        it->p++;
        cursor_ws(it);
    }
    if (it->p >= it->end || *it->p == ']') return false;
    *elem = *it;
    if (!certrot_json_skip(it)) return false;
    elem->end = it->p; /* the element and the whitespace after it */
    return true;
}

bool certrot_json_int(const certrot_json *v, int64_t *out)
{
    const uint8_t *p = v->p, *end = check_number(v->p, v->end);
    if (!end) return false;
    bool neg = *p == '-';
    p += neg;
    /* significant digits of the mantissa (integer and fraction), the decimal exponent of the last one */
    uint64_t m = 0;
    int sig = 0, zeros = 0; /* digits taken into m; zeros seen after the last non-zero digit, not yet in m */
    long exp10 = 0;
    bool frac = false, lost = false;
    for (; p < end && *p != 'e' && *p != 'E'; p++) {
        if (*p == '.') {
            frac = true;
            continue;
        }
        int d = *p - '0';
        if (frac) exp10--;
        if (d == 0) {
            if (sig) zeros++;
            continue;
        }
        /* a non-zero digit: the zeros before it become significant */
        for (; zeros > 0; zeros--, sig++) {
            if (sig >= 17) lost = true;
            else m *= 10;
        }
        if (sig >= 17) lost = true;
        else m = m * 10 + (uint64_t)d;
        sig++;
    }
    /* m * 10^(zeros + exp10) when nothing was lost */
    long e = 0;
    if (p < end) {
        bool eneg = false;
        p++;
        if (*p == '+' || *p == '-') eneg = *p++ == '-';
        for (; p < end; p++)
            if (e < 100000) e = e * 10 + (*p - '0');
        if (eneg) e = -e;
    }
    if (m == 0) {
        *out = 0;
        return true;
    }
    if (lost) return false; /* 18 or more significant digits: beyond 2^53 or not an integer */
    long scale = (long)zeros + exp10 + e;
    if (scale < 0) return false; /* the last significant digit is below the units: not an integer */
    if (scale + sig > 16) return false; /* at least 10^16 > 2^53 */
    for (long i = 0; i < scale; i++) m *= 10;
    if (m > 9007199254740992ull) return false;
    *out = neg ? -(int64_t)m : (int64_t)m;
    return true;
}
