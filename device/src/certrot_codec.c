/* Base64url, the PEM normal-form check, and the ack/inventory JSON writers. */
#include "certrot_device.h"

#include <string.h>

static const char b64url_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64url_value(uint8_t c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

static int b64std_value(uint8_t c)
{
    if (c == '+') return 62;
    if (c == '/') return 63;
    if (c == '-' || c == '_') return -1;
    return b64url_value(c);
}

long certrot_b64url_decode(const char *in, size_t len, uint8_t *out, size_t out_cap)
{
    /* A length of 1 mod 4 cannot come from any byte string. */
    if (len % 4 == 1) return -1;
    size_t need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    if (need > out_cap) return -1;
    /* Output index never passes input index (3 bytes per 4 chars), so decoding in place is safe. */
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((uint8_t)in[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* Canonical: the unused low bits of the last character must be zero, otherwise two texts would
     * decode to the same bytes (the Swift server re-encodes and compares, which is the same rule). */
    if (bits > 0 && acc != 0) return -1;
    return (long)o;
}

long certrot_b64url_encode(const uint8_t *in, size_t len, char *out, size_t out_cap)
{
    size_t need = len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0);
    if (need + 1 > out_cap) return -1;
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8);
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
    return (long)o;
}

/* ---- PEM normal form ------------------------------------------------------------------------------- */

static const char pem_begin[] = "-----BEGIN CERTIFICATE-----\n";
static const char pem_end[] = "-----END CERTIFICATE-----\n";

/*
 * Checks the normal form directly instead of parse + re-encode (which would need a DER buffer): a block
 * is the exact BEGIN line, base64 lines of exactly 64 characters and one last line of 1..64, and the
 * exact END line. The body as a whole must be canonical padded standard base64 of at least one byte,
 * because re-encoding the decoded DER is what must give back these bytes.
 */
bool certrot_pem_is_normal(const uint8_t *pem, size_t len)
{
    const size_t blen = sizeof pem_begin - 1, elen = sizeof pem_end - 1;
    size_t i = 0;
    if (len == 0) return false;
    while (i < len) {
        if (len - i < blen || memcmp(pem + i, pem_begin, blen) != 0) return false;
        i += blen;
        size_t body = 0;        /* base64 characters in this block */
        size_t pad = 0;         /* '=' seen */
        int last_value = 0;     /* value of the last non-pad character */
        bool short_line = false;
        for (;;) {
            if (i >= len) return false;
            if (pem[i] == '-') break;                 /* the END line */
            if (short_line) return false;             /* only the last body line may be short */
            size_t line = 0;
            while (i < len && pem[i] != '\n') {
                uint8_t c = pem[i];
                if (c == '=') {
                    pad++;
                } else {
                    int v = b64std_value(c);
                    if (v < 0 || pad) return false;   /* bad character, or data after padding */
                    last_value = v;
                }
                line++;
                i++;
            }
            if (i >= len || line == 0 || line > 64) return false;
            i++; /* '\n' */
            body += line;
            if (line < 64) short_line = true;
        }
        if (len - i < elen || memcmp(pem + i, pem_end, elen) != 0) return false;
        i += elen;
        if (body == 0 || body % 4 != 0 || pad > 2) return false;
        if (body - pad < 2) return false;             /* no data bytes */
        /* Canonical padding: with "==" the last data char carries 4 unused bits, with "=" two. */
        if (pad == 2 && (last_value & 0x0f)) return false;
        if (pad == 1 && (last_value & 0x03)) return false;
    }
    return true;
}

/* ---- DER certificates to PEM (compact bundles, docs/protocol.md §12) --------------------------------- */

static const char b64std_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t certrot_pem_block_len(size_t der_len)
{
    size_t body = (der_len + 2) / 3 * 4;
    return (sizeof pem_begin - 1) + body + (body + 63) / 64 + (sizeof pem_end - 1);
}

long certrot_der_to_pem(const uint8_t *der, size_t len, uint8_t *out, size_t out_cap)
{
    if (!der || !out || len == 0) return -1;
    size_t need = certrot_pem_block_len(len);
    if (need > out_cap) return -1;
    size_t o = 0, col = 0;
    memcpy(out, pem_begin, sizeof pem_begin - 1);
    o += sizeof pem_begin - 1;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)der[i] << 16;
        if (i + 1 < len) v |= (uint32_t)der[i + 1] << 8;
        if (i + 2 < len) v |= der[i + 2];
        char q[4] = {b64std_alphabet[v >> 18 & 63], b64std_alphabet[v >> 12 & 63],
                     i + 1 < len ? b64std_alphabet[v >> 6 & 63] : '=', i + 2 < len ? b64std_alphabet[v & 63] : '='};
        for (int k = 0; k < 4; k++) {
            out[o++] = (uint8_t)q[k];
            if (++col == 64) {
                out[o++] = '\n';
                col = 0;
            }
        }
    }
    if (col) out[o++] = '\n';
    memcpy(out + o, pem_end, sizeof pem_end - 1);
    o += sizeof pem_end - 1;
    return (long)o;
}

/* One DER TLV at p (n bytes available): low tag number form, definite length in the fewest bytes. */
static bool der_tlv(const uint8_t *p, size_t n, uint8_t *tag, size_t *hdr, size_t *clen)
{
    if (n < 2 || (p[0] & 0x1f) == 0x1f) return false;
    *tag = p[0];
    if (p[1] < 0x80) {
        *hdr = 2;
        *clen = p[1];
    } else {
        size_t k = p[1] & 0x7f, v = 0;
        if (k == 0 || k > 3 || n < 2 + k || p[2] == 0) return false; /* indefinite, huge, or not minimal */
        for (size_t i = 0; i < k; i++) v = v << 8 | p[2 + i];
        if (v < 0x80) return false;
        *hdr = 2 + k;
        *clen = v;
    }
    return *clen <= n - *hdr;
}

/* Takes the next TLV of [*p, *p + *n) if its tag is `want`: its content in *c / *cl. */
static bool der_next(const uint8_t **p, size_t *n, uint8_t want, const uint8_t **c, size_t *cl)
{
    uint8_t tag;
    size_t h, l;
    if (*n == 0 || (*p)[0] != want || !der_tlv(*p, *n, &tag, &h, &l)) return false;
    if (c) *c = *p + h;
    if (cl) *cl = l;
    *p += h + l;
    *n -= h + l;
    return true;
}

/* AlgorithmIdentifier content: an OID, then at most one parameters element. */
static bool der_alg(const uint8_t *p, size_t n)
{
    const uint8_t *c;
    size_t cl, h;
    uint8_t tag;
    if (!der_next(&p, &n, 0x06, &c, &cl) || cl == 0) return false;
    if (n == 0) return true;
    return der_tlv(p, n, &tag, &h, &cl) && h + cl == n;
}

bool certrot_der_is_certificate(const uint8_t *der, size_t len)
{
    const uint8_t *p = der, *c, *t;
    size_t n = len, cl, tl;
    if (!der || !der_next(&p, &n, 0x30, &c, &cl) || n != 0) return false; /* Certificate, nothing after */
    p = c;
    n = cl;
    if (!der_next(&p, &n, 0x30, &t, &tl)) return false; /* tbsCertificate */
    if (!der_next(&p, &n, 0x30, &c, &cl) || !der_alg(c, cl)) return false; /* signatureAlgorithm */
    if (!der_next(&p, &n, 0x03, &c, &cl) || cl == 0 || c[0] > 7 || (cl == 1 && c[0])) return false;
    if (n != 0) return false;
    /* tbsCertificate: [0] version, serial, signature, issuer, validity, subject, subjectPublicKeyInfo,
     * then [1] issuerUniqueID, [2] subjectUniqueID, [3] extensions, each at most once and in order. */
    p = t;
    n = tl;
    if (n && p[0] == 0xA0) {
        const uint8_t *v;
        size_t vl;
        if (!der_next(&p, &n, 0xA0, &c, &cl) || !der_next(&c, &cl, 0x02, &v, &vl) || cl != 0 || vl == 0) return false;
    }
    if (!der_next(&p, &n, 0x02, &c, &cl) || cl == 0) return false;
    if (!der_next(&p, &n, 0x30, &c, &cl) || !der_alg(c, cl)) return false;
    if (!der_next(&p, &n, 0x30, NULL, NULL)) return false; /* issuer */
    if (!der_next(&p, &n, 0x30, &c, &cl)) return false;   /* validity: two times */
    {
        const uint8_t *v = c;
        size_t vn = cl;
        for (int i = 0; i < 2; i++)
            if (!der_next(&v, &vn, 0x17, NULL, NULL) && !der_next(&v, &vn, 0x18, NULL, NULL)) return false;
        if (vn != 0) return false;
    }
    if (!der_next(&p, &n, 0x30, NULL, NULL)) return false; /* subject */
    if (!der_next(&p, &n, 0x30, &c, &cl)) return false;   /* subjectPublicKeyInfo */
    {
        const uint8_t *a, *k = c;
        size_t al, kn = cl, bl;
        const uint8_t *b;
        if (!der_next(&k, &kn, 0x30, &a, &al) || !der_alg(a, al) || !der_next(&k, &kn, 0x03, &b, &bl) || bl == 0 ||
            b[0] > 7 || kn != 0)
            return false;
    }
    /* [1] and [2] are IMPLICIT BIT STRINGs (primitive), [3] the extensions */
    der_next(&p, &n, 0x81, NULL, NULL);
    der_next(&p, &n, 0x82, NULL, NULL);
    der_next(&p, &n, 0xA3, NULL, NULL);
    return n == 0;
}

/* ---- JSON writing ---------------------------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t cap, n;
    bool overflow;
} jw;

static void jw_raw(jw *w, const char *s, size_t len)
{
    if (w->overflow || w->n + len + 1 > w->cap) {
        w->overflow = true;
        return;
    }
    memcpy(w->p + w->n, s, len);
    w->n += len;
    w->p[w->n] = '\0';
}

static void jw_str(jw *w, const char *s) { jw_raw(w, s, strlen(s)); }

static void jw_int(jw *w, int64_t v)
{
    char tmp[24];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[sizeof tmp - 1 - n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) tmp[sizeof tmp - 1 - n++] = '-';
    jw_raw(w, tmp + sizeof tmp - n, n);
}

/* A JSON string literal; escapes quotes, backslashes and control characters. */
static void jw_quoted(jw *w, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    jw_raw(w, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            jw_raw(w, e, 2);
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            jw_raw(w, e, 6);
        } else {
            jw_raw(w, (const char *)&c, 1);
        }
    }
    jw_raw(w, "\"", 1);
}

long certrot_build_csr(const char *jti, uint32_t tag, const char *keygen, char *out, size_t out_cap)
{
    if (!jti || !keygen || !out || jti[0] == '\0' || strlen(jti) > CERTROT_JTI_MAX || keygen[0] == '\0' ||
        tag > (uint32_t)CERTROT_MAX_TAG)
        return -1;
    jw w = {out, out_cap, 0, out_cap == 0};
    jw_str(&w, "{\"v\":1,\"jti\":");
    jw_quoted(&w, jti);
    jw_str(&w, ",\"tag\":");
    jw_int(&w, tag);
    jw_str(&w, ",\"keygen\":");
    jw_quoted(&w, keygen);
    jw_str(&w, "}");
    return w.overflow || w.n > 4096 ? -1 : (long)w.n;
}

long certrot_build_ack(const certrot_result *res, char *out, size_t out_cap)
{
    static const char *const names[] = {NULL, "applied", "rejected", "failed", "incomplete"};
    if (!res || !out || res->ack == CERTROT_ACK_NONE || res->ack > CERTROT_ACK_INCOMPLETE || res->jti[0] == '\0')
        return -1;
    if (res->ack == CERTROT_ACK_INCOMPLETE && res->missing_count == 0) return -1;
    jw w = {out, out_cap, 0, out_cap == 0};
    jw_str(&w, "{\"jti\":");
    jw_quoted(&w, res->jti);
    jw_str(&w, ",\"status\":\"");
    jw_str(&w, names[res->ack]);
    jw_str(&w, "\"");
    if (res->has_code) {
        jw_str(&w, ",\"code\":");
        jw_int(&w, res->code);
    }
    if (res->reason[0]) {
        jw_str(&w, ",\"reason\":");
        jw_quoted(&w, res->reason);
    }
    if (res->ack == CERTROT_ACK_INCOMPLETE) {
        jw_str(&w, ",\"missing\":[");
        for (unsigned i = 0; i < res->missing_count; i++) {
            if (i) jw_str(&w, ",");
            jw_int(&w, res->missing[i]);
        }
        jw_str(&w, "]");
    }
    jw_str(&w, "}");
    return w.overflow ? -1 : (long)w.n;
}

static bool is_lower_hex64(const char *s)
{
    for (int i = 0; i < 64; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return s[64] == '\0';
}

/* §2: each kid 1..64 base64url characters. */
static bool is_kid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++)
        if (b64url_value((uint8_t)s[i]) < 0) return false;
    return true;
}

static long build_inventory(int64_t seq, uint32_t max_message, const certrot_cred *creds, size_t count,
                            const certrot_trusted_key *keys, size_t key_count, bool with_keys, int64_t active,
                            bool cose, char *out, size_t out_cap)
{
    if (!out || seq < 0 || count > 256 || (count && !creds)) return -1;
    if (with_keys && (key_count > 8 || (key_count && !keys))) return -1;
    for (size_t i = 0; i < key_count; i++)
        if (!is_kid(keys[i].kid)) return -1;
    if (max_message && (max_message < 256 || max_message > 268435455u)) return -1;
    for (size_t i = 0; i < count; i++) {
        if (creds[i].tag > (uint32_t)CERTROT_MAX_TAG || creds[i].type > 6 || !is_lower_hex64(creds[i].sha256))
            return -1;
        if (creds[i].serial && strlen(creds[i].serial) > 64) return -1;
        for (size_t j = 0; j < i; j++)
            if (creds[j].tag == creds[i].tag && creds[j].type == creds[i].type) return -1;
    }
    jw w = {out, out_cap, 0, out_cap == 0};
    jw_str(&w, "{\"v\":1,\"seq\":");
    jw_int(&w, seq);
    if (max_message) {
        jw_str(&w, ",\"maxMessage\":");
        jw_int(&w, max_message);
    }
    jw_str(&w, ",\"creds\":[");
    for (size_t i = 0; i < count; i++) {
        if (i) jw_str(&w, ",");
        jw_str(&w, "{\"tag\":");
        jw_int(&w, creds[i].tag);
        jw_str(&w, ",\"type\":");
        jw_int(&w, creds[i].type);
        jw_str(&w, ",\"sha256\":\"");
        jw_str(&w, creds[i].sha256);
        jw_str(&w, "\"");
        if (creds[i].has_not_after) {
            jw_str(&w, ",\"notAfter\":");
            jw_int(&w, creds[i].not_after);
        }
        if (creds[i].serial) {
            jw_str(&w, ",\"serial\":");
            jw_quoted(&w, creds[i].serial);
        }
        jw_str(&w, "}");
    }
    jw_str(&w, "]");
    if (with_keys) {
        jw_str(&w, ",\"keys\":[");
        for (size_t i = 0; i < key_count; i++) {
            if (i) jw_str(&w, ",");
            jw_quoted(&w, keys[i].kid);
        }
        jw_str(&w, "]");
    }
    if (active >= 0) {
        jw_str(&w, ",\"active\":");
        jw_int(&w, active);
    }
    if (cose) jw_str(&w, ",\"formats\":[\"cose\"]"); /* takes compact bundles (§12) */
    jw_str(&w, "}");
    return w.overflow ? -1 : (long)w.n;
}

long certrot_build_inventory(int64_t seq, uint32_t max_message, const certrot_cred *creds, size_t count,
                             char *out, size_t out_cap)
{
    return build_inventory(seq, max_message, creds, count, NULL, 0, false, -1, false, out, out_cap);
}

long certrot_build_inventory_ctx(const certrot_ctx *ctx, uint32_t max_message, const certrot_cred *creds,
                                 size_t count, char *out, size_t out_cap)
{
    if (!ctx) return -1;
    return build_inventory(ctx->applied_seq, max_message, creds, count, ctx->keys, ctx->key_count, true,
                           ctx->active_tag, ctx->cfg.takes_compact, out, out_cap);
}

/* `%CMNG: <sec_tag>,<type>[,"<SHA-256 hex>"]` as the modem answers AT%CMNG=1. */
int certrot_parse_cmng_line(const char *line, certrot_cred *cred)
{
    static const char prefix[] = "%CMNG:";
    if (!line || !cred || strncmp(line, prefix, sizeof prefix - 1) != 0) return -1;
    const char *p = line + sizeof prefix - 1;
    while (*p == ' ') p++;
    uint64_t tag = 0;
    if (*p < '0' || *p > '9') return -1;
    while (*p >= '0' && *p <= '9') {
        tag = tag * 10 + (uint64_t)(*p++ - '0');
        if (tag > (uint64_t)CERTROT_MAX_TAG) return -1;
    }
    if (*p++ != ',') return -1;
    while (*p == ' ') p++;
    if (*p < '0' || *p > '6' || p[1] != ',') return -1;
    uint8_t type = (uint8_t)(*p - '0');
    p += 2;
    while (*p == ' ') p++;
    if (*p == '"') p++;
    char hex[65];
    for (int i = 0; i < 64; i++) {
        char c = p[i];
        if (c >= 'A' && c <= 'F') c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return -1;
        hex[i] = c;
    }
    hex[64] = '\0';
    p += 64;
    if (*p == '"') p++;
    while (*p == ' ' || *p == '\r' || *p == '\n') p++;
    if (*p) return -1;
    memset(cred, 0, sizeof *cred);
    cred->tag = (uint32_t)tag;
    cred->type = type;
    memcpy(cred->sha256, hex, sizeof hex);
    return 0;
}
