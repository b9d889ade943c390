/* The device checks of docs/protocol.md §5: step 4 by one of two decoders, the JWS (the JSON reader of
 * certrot_json.c) and the compact bundle of §12 (the CBOR reader), which both fill the same decoded form; then
 * steps 5-11 and the already-applied rule once, for both (check_decoded). No heap, no recursion. */
#include "certrot_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Sets reason to "<code>: <message>" as the reference device does, at most cap - 1 bytes (CERTROT_REASON_MAX), cut at
 * a UTF-8 character boundary. Values from a bundle go into messages, so every byte a JSON string would escape
 * (control characters, '"', '\\') is replaced: the reason's JSON form is then exactly its length, which bounds
 * the ack (CERTROT_ACK_MAX). */
void certrot_reason(char *reason, size_t cap, certrot_status s, const char *fmt, ...)
{
    if (!reason || cap == 0) return;
    int n = snprintf(reason, cap, "%s: ", certrot_status_name(s));
    if (n < 0 || (size_t)n >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(reason + n, cap - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = strlen(reason);
    if (m > 0 && (size_t)n + (size_t)m > len) { /* cut: drop a character the cut split */
        size_t k = len;
        while (k > 0 && ((uint8_t)reason[k - 1] & 0xC0) == 0x80) k--; /* back to the last lead byte */
        if (k > 0 && (uint8_t)reason[k - 1] >= 0xC0) {
            uint8_t lead = (uint8_t)reason[k - 1];
            size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
            if (len - (k - 1) < need) len = k - 1;
        }
        reason[len] = '\0';
    }
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)reason[i];
        if (c < 0x20 || c == 0x7F) reason[i] = '?';
        else if (c == '"') reason[i] = '\'';
        else if (c == '\\') reason[i] = '/';
    }
}

/* At most max bytes of the C string s into out (max + 1 bytes), cut at a UTF-8 character boundary. */
static const char *excerpt_of(const char *s, size_t max, char *out)
{
    size_t k = strlen(s);
    if (k > max) {
        k = max;
        while (k > 0 && ((uint8_t)s[k] & 0xC0) == 0x80) k--;
    }
    memcpy(out, s, k);
    out[k] = '\0';
    return out;
}

/* No control characters (U+0000-U+001F, U+007F): a jti an ack can echo in at most twice its length. */
static bool printable(const char *s)
{
    for (; *s; s++)
        if ((uint8_t)*s < 0x20 || *s == 0x7F) return false;
    return true;
}

/* A member that is a string. */
static bool json_str(const certrot_json *obj, const char *name, certrot_json *v)
{
    return certrot_json_find(obj, name, v) && certrot_json_type(v) == 's';
}

/* An integer member within +-2^53 (JSON numbers that are integers: 5, 5.0, 0.5e1). */
static bool json_int(const certrot_json *obj, const char *name, int64_t *out)
{
    certrot_json v;
    return certrot_json_find(obj, name, &v) && certrot_json_type(&v) == 'n' && certrot_json_int(&v, out);
}

/* Optional string member: absent or null is fine (*present false), anything but a string is a schema error. */
static bool json_opt_str(const certrot_json *obj, const char *name, certrot_json *v, bool *present)
{
    *present = false;
    if (!certrot_json_find(obj, name, v) || certrot_json_type(v) == 'z') return true;
    if (certrot_json_type(v) != 's') return false;
    *present = true;
    return true;
}

/* A string value unescaped into buf as a C string of at most cap - 1 bytes: false when longer or when it holds a
 * NUL (which a C string cannot carry). */
static bool json_cstr(const certrot_json *v, char *buf, size_t cap)
{
    long n = certrot_json_string(v, (uint8_t *)buf, cap - 1);
    if (n < 0 || (size_t)n > cap - 1 || memchr(buf, 0, (size_t)n)) return false;
    buf[n] = '\0';
    return true;
}

/* A string value for a message: at most cap - 1 bytes, cut at a UTF-8 character boundary, NUL-terminated. */
static const char *json_excerpt(const certrot_json *v, char *buf, size_t cap)
{
    long n = certrot_json_string(v, (uint8_t *)buf, cap); /* cap bytes: buf[cap - 1] is the first byte cut off */
    size_t k = n < 0 ? 0 : (size_t)n > cap - 1 ? cap - 1 : (size_t)n;
    if (n >= 0 && (size_t)n > k)
        while (k > 0 && ((uint8_t)buf[k] & 0xC0) == 0x80) k--; /* buf[k] continues a character: cut before it */
    buf[k] = '\0';
    return buf;
}

int certrot_thumbprint(const certrot_callbacks *cb, const uint8_t pubkey[65], char kid[CERTROT_KID_LEN + 1])
{
    /* 31 + 43 + 7 + 43 + 2 = 126 bytes */
    char jwk[128] = "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"";
    uint8_t digest[32];
    if (!cb->sha256 || pubkey[0] != 0x04) return -1;
    size_t n = strlen(jwk);
    n += (size_t)certrot_b64url_encode(pubkey + 1, 32, jwk + n, sizeof jwk - n);
    memcpy(jwk + n, "\",\"y\":\"", 7);
    n += 7;
    n += (size_t)certrot_b64url_encode(pubkey + 33, 32, jwk + n, sizeof jwk - n);
    memcpy(jwk + n, "\"}", 2);
    n += 2;
    if (cb->sha256(cb->user, (const uint8_t *)jwk, n, digest) != 0) return -1;
    return certrot_b64url_encode(digest, 32, kid, CERTROT_KID_LEN + 1) == CERTROT_KID_LEN ? 0 : -1;
}

int certrot_find_key(const certrot_ctx *ctx, const char *kid)
{
    for (size_t i = 0; i < ctx->key_count; i++)
        if (strcmp(ctx->keys[i].kid, kid) == 0) return (int)i;
    return -1;
}

enum { OP_WRITE, OP_DELETE, OP_TRUST_KEY, OP_KEYGEN, OP_ACTIVATE };

/* What step 4 extracts from an op, in either format; the range and content checks run in step 11. */
typedef struct {
    uint8_t kind;
    bool has_jwk, has_kid, jwk_ok, kid_ok;
    int64_t tag, type;
    bool has_pem, has_sha, has_type, sha_ok_len;
    const uint8_t *pem;         /* JWS: the pem, in scratch */
    size_t pem_len;
    const uint8_t *der;         /* compact: the first item of the der array, in the bundle buffer */
    const uint8_t *der_end;
    size_t der_count;
    const uint8_t *key;         /* trust_key: 0x04 || X || Y, then the received kid (NUL-terminated), in scratch */
    bool has_subject, subject_ok;
    const char *subject;        /* keygen: NUL-terminated, in scratch */
    char sha[65];               /* lowercase hex as received (JWS) or of the 32 bytes (compact) */
} op_in;

/* A bundle after step 4. */
typedef struct {
    char kid[CERTROT_KID_LEN + 8]; /* the signer's kid, base64url (truncated when longer: then it matches none) */
    const uint8_t *msg;            /* what the signature covers: the JWS signing input or the Sig_structure */
    size_t msg_len;
    bool sig_ok;                   /* a 64-byte signature was there */
    uint8_t sig[64];
    bool sub_fits;
    char sub[CERTROT_DEVICE_ID_MAX + 1];
    size_t op_total;
    size_t arena;                  /* scratch [0, arena) holds what the ops point to; step 11 adds PEMs after */
    op_in ops[CERTROT_MAX_OPS];
} decoded;

static void to_hex(const uint8_t *d, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[2 * n] = '\0';
}

static bool subject_ok(const char *s, size_t n)
{
    if (n < 1 || n > CERTROT_SUBJECT_MAX) return false;
    for (size_t j = 0; j < n; j++)
        if ((uint8_t)s[j] < 0x20 || s[j] == '"') return false;
    return true;
}

#define FAIL(st, ...)                                                                                      \
    do {                                                                                                    \
        certrot_reason(reason, reason_cap, (st), __VA_ARGS__);                                             \
        status = (st);                                                                                      \
        goto done;                                                                                          \
    } while (0)

/* ---- step 4, JWS -------------------------------------------------------------------------------------- */

static certrot_status decode_jws(certrot_ctx *ctx, const uint8_t *jws, size_t len, certrot_bundle *out, decoded *d,
                                 char *reason, size_t reason_cap)
{
    certrot_status status = CERTROT_OK;
    long sig_len = -1;

    /* ---- step 4: three segments of canonical base64url, header and claims parse ---- */
    const uint8_t *dot1 = memchr(jws, '.', len);
    const uint8_t *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - jws)) : NULL;
    if (!dot1 || !dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - jws)))
        FAIL(CERTROT_INVALID_BUNDLE, "a JWS compact serialisation has 3 parts");
    size_t hlen = (size_t)(dot1 - jws), clen = (size_t)(dot2 - dot1 - 1), slen = len - (size_t)(dot2 + 1 - jws);
    d->msg = jws;
    d->msg_len = (size_t)(dot2 - jws);

    /* Scratch layout while parsing: [header \0][claims \0][signature]. Never decode in place: the signature
     * is over the received text, which must stay intact. */
    uint8_t *s = ctx->scratch;
    size_t cap = ctx->scratch_cap;
    long hdec = certrot_b64url_decode((const char *)jws, hlen, s, cap);
    if (hdec < 0 || (size_t)hdec + 1 > cap) FAIL(CERTROT_INVALID_BUNDLE, "JWS parts are not base64url");
    s[hdec] = 0;
    uint8_t *c = s + hdec + 1;
    long cdec = certrot_b64url_decode((const char *)dot1 + 1, clen, c, cap - (size_t)hdec - 1);
    if (cdec < 0 || (size_t)(hdec + 1 + cdec + 1) > cap) FAIL(CERTROT_INVALID_BUNDLE, "JWS parts are not base64url");
    c[cdec] = 0;
    uint8_t *sg = c + cdec + 1;
    sig_len = certrot_b64url_decode((const char *)dot2 + 1, slen, sg, cap - (size_t)(hdec + 1 + cdec + 1));
    if (sig_len < 0) FAIL(CERTROT_INVALID_BUNDLE, "JWS parts are not base64url");
    if (sig_len == 64) {
        memcpy(d->sig, sg, 64);
        d->sig_ok = true;
    }

    certrot_json header = certrot_json_at(s, (size_t)hdec), alg, kid, typ;
    if (certrot_json_check(s, (size_t)hdec, NULL) != 0 || certrot_json_type(&header) != 'o')
        FAIL(CERTROT_INVALID_BUNDLE, "JWS header is not a JSON object");
    if (!json_str(&header, "alg", &alg) || !json_str(&header, "kid", &kid) || !json_str(&header, "typ", &typ))
        FAIL(CERTROT_INVALID_BUNDLE, "JWS header lacks alg, kid or typ");
    char excerpt[41];
    if (!certrot_json_string_is(&alg, "ES256"))
        FAIL(CERTROT_INVALID_BUNDLE, "alg %s is not ES256", json_excerpt(&alg, excerpt, sizeof excerpt));
    if (!certrot_json_string_is(&typ, "certrot-bundle+jwt"))
        FAIL(CERTROT_INVALID_BUNDLE, "typ %s is not certrot-bundle+jwt", json_excerpt(&typ, excerpt, sizeof excerpt));
    json_excerpt(&kid, d->kid, sizeof d->kid); /* a longer kid is cut, and then matches none */

    certrot_json claims = certrot_json_at(c, (size_t)cdec), iss, sub_v, jti_v, ops_j;
    if (certrot_json_check(c, (size_t)cdec, NULL) != 0 || certrot_json_type(&claims) != 'o')
        FAIL(CERTROT_INVALID_BUNDLE, "JWS payload is not a JSON object");
    if (!json_str(&claims, "iss", &iss) || !json_str(&claims, "sub", &sub_v) || !json_str(&claims, "jti", &jti_v) ||
        !json_int(&claims, "iat", &out->iat) || !json_int(&claims, "exp", &out->exp) ||
        !json_int(&claims, "seq", &out->seq) || !certrot_json_find(&claims, "ops", &ops_j) ||
        certrot_json_type(&ops_j) != 'a')
        FAIL(CERTROT_INVALID_BUNDLE, "JWS payload lacks a claim (iss, sub, jti, iat, exp, seq, ops) or has a wrong type");
    if (!json_cstr(&jti_v, out->jti, sizeof out->jti) || out->jti[0] == '\0' || !printable(out->jti)) {
        out->jti[0] = '\0'; /* the ack takes the parts' jti */
        FAIL(CERTROT_INVALID_BUNDLE, "jti must be 1..%d bytes without control characters", CERTROT_JTI_MAX);
    }
    d->sub_fits = json_cstr(&sub_v, d->sub, sizeof d->sub);

    /* Ops: structure now (step 4). What the ops point to (pems, keygen subjects, trust_key material) goes into the
     * arena scratch[0, w), over the header and the claims text, which is unescaped into it in place:
     *   Invariant: before op i, w <= the offset of op i's text in scratch; every write for op i lands in
     *   [w, end of op i's text) (checked: `room`), and op i's members are all read before the first write that
     *   could reach them (the pem or subject, unescaped forwards, each output byte after its input; trust_key
     *   material decoded into locals first).
     *   So later ops' text (and the claims members after `ops`, already read anyway) is never overwritten, and
     *   after op i, w <= the end of its text <= the start of op i+1's. The members before `ops` were read above. */
    size_t w = 0;
    certrot_json it = ops_j, op_j;
    while (certrot_json_next(&it, &op_j)) {
        d->op_total++;
        size_t index = d->op_total - 1;
        size_t room = (size_t)(op_j.end - ctx->scratch); /* writes for this op end by here */
        if (certrot_json_type(&op_j) != 'o') FAIL(CERTROT_INVALID_BUNDLE, "ops[%zu] is not an object", index);
        certrot_json kind_v, pem_v, sha_v, subject_v, okid_v, jwk_v, x_v, y_v, kty_v, crv_v;
        bool has_kind = json_str(&op_j, "op", &kind_v);
        bool trust = has_kind && certrot_json_string_is(&kind_v, "trust_key");
        bool is_keygen = has_kind && certrot_json_string_is(&kind_v, "keygen");
        bool identity = is_keygen || (has_kind && certrot_json_string_is(&kind_v, "activate"));
        bool is_write = has_kind && certrot_json_string_is(&kind_v, "write");
        int64_t tag = 0, type = 0;
        bool has_type = false, has_pem = false, has_sha = false, has_subject = false, has_okid = false, has_jwk = false;
        if (trust) {
            /* {"op":"trust_key","jwk":{"crv","kty","x","y"},"kid"}: a jwk that is there must have all four
             * string members (the reference decodes it as a struct); absent jwk/kid is step 11's. */
            has_jwk = certrot_json_find(&op_j, "jwk", &jwk_v) && certrot_json_type(&jwk_v) != 'z';
            if (!json_opt_str(&op_j, "kid", &okid_v, &has_okid) || (has_jwk && certrot_json_type(&jwk_v) != 'o') ||
                (has_jwk && (!json_str(&jwk_v, "kty", &kty_v) || !json_str(&jwk_v, "crv", &crv_v) ||
                             !json_str(&jwk_v, "x", &x_v) || !json_str(&jwk_v, "y", &y_v))))
                FAIL(CERTROT_INVALID_BUNDLE, "ops[%zu] does not match the schema", index);
        } else if (identity) {
            /* {"op":"keygen","tag":S,"subject":"CN=…"}, {"op":"activate","tag":S} (docs/protocol.md §11) */
            certrot_json type_v;
            has_type = certrot_json_find(&op_j, "type", &type_v) && certrot_json_type(&type_v) != 'z';
            if (!json_int(&op_j, "tag", &tag) || !json_opt_str(&op_j, "pem", &pem_v, &has_pem) ||
                !json_opt_str(&op_j, "subject", &subject_v, &has_subject))
                FAIL(CERTROT_INVALID_BUNDLE, "ops[%zu] does not match the schema", index);
        } else if (!has_kind || (!is_write && !certrot_json_string_is(&kind_v, "delete")) ||
                   !json_int(&op_j, "tag", &tag) || !json_int(&op_j, "type", &type) ||
                   !json_opt_str(&op_j, "pem", &pem_v, &has_pem) || !json_opt_str(&op_j, "sha256", &sha_v, &has_sha))
            FAIL(CERTROT_INVALID_BUNDLE, "ops[%zu] does not match the schema", index);
        if (d->op_total > CERTROT_MAX_OPS) continue; /* reported at step 10 */
        op_in *o = &d->ops[index];
        memset(o, 0, sizeof *o);
        o->kind = trust ? OP_TRUST_KEY : identity && is_keygen ? OP_KEYGEN : identity ? OP_ACTIVATE
                  : is_write ? OP_WRITE : OP_DELETE;
        o->has_type = has_type;
        o->tag = tag;
        o->type = type;
        if (trust) {
            uint8_t key[65 + CERTROT_KID_LEN + 1];
            char x[CERTROT_KID_LEN + 1], y[CERTROT_KID_LEN + 1];
            o->has_jwk = has_jwk;
            o->has_kid = has_okid;
            key[0] = 0x04;
            o->jwk_ok = has_jwk && certrot_json_string_is(&kty_v, "EC") && certrot_json_string_is(&crv_v, "P-256") &&
                        json_cstr(&x_v, x, sizeof x) && json_cstr(&y_v, y, sizeof y) &&
                        certrot_b64url_decode(x, strlen(x), key + 1, 32) == 32 &&
                        certrot_b64url_decode(y, strlen(y), key + 33, 32) == 32;
            o->kid_ok = has_okid && json_cstr(&okid_v, (char *)key + 65, CERTROT_KID_LEN + 1) &&
                        strlen((const char *)key + 65) == CERTROT_KID_LEN;
            if (o->jwk_ok) { /* the key is read only when the jwk is good (step 11) */
                if (w + sizeof key > room) FAIL(CERTROT_INVALID_BUNDLE, "ops[%zu] does not fit the scratch buffer", index);
                memcpy(ctx->scratch + w, key, sizeof key);
                o->key = ctx->scratch + w;
                w += sizeof key;
            }
            continue;
        }
        if (identity) {
            o->has_pem = has_pem;
            if (has_subject) {
                long sl = certrot_json_string(&subject_v, NULL, 0);
                o->has_subject = true;
                if (w + (size_t)sl + 1 > room)
                    FAIL(CERTROT_INVALID_BUNDLE, "ops[%zu] does not fit the scratch buffer", index);
                certrot_json_string(&subject_v, ctx->scratch + w, (size_t)sl);
                o->subject_ok = subject_ok((const char *)ctx->scratch + w, (size_t)sl);
                if (o->subject_ok) {
                    ctx->scratch[w + (size_t)sl] = '\0';
                    o->subject = (const char *)ctx->scratch + w;
                    w += (size_t)sl + 1;
                }
            }
            continue;
        }
        if (has_sha) { /* read before the pem is unescaped over the text */
            o->has_sha = true;
            o->sha_ok_len = json_cstr(&sha_v, o->sha, sizeof o->sha) && strlen(o->sha) == 64;
        }
        if (has_pem) {
            long pl = certrot_json_string(&pem_v, NULL, 0);
            if (w + (size_t)pl > room) FAIL(CERTROT_INVALID_BUNDLE, "ops[%zu] pem does not fit", index);
            certrot_json_string(&pem_v, ctx->scratch + w, (size_t)pl);
            o->has_pem = true;
            o->pem = ctx->scratch + w;
            o->pem_len = (size_t)pl;
            w += (size_t)pl;
        }
    }
    d->arena = w;

done:
    return status;
}

/* ---- step 4, compact bundle (docs/protocol.md §12) --------------------------------------------------- */

/* An integer claim: within ±2^53, as the JWS path (and every seq an inventory can report). */
static bool cbor_claim_int(const certrot_cbor *body, size_t pairs, const char *key, int64_t *out)
{
    certrot_cbor v;
    return certrot_cbor_find(body, pairs, key, &v) && certrot_cbor_int(&v, out) && *out >= -9007199254740992LL &&
           *out <= 9007199254740992LL;
}

static bool cbor_has(const certrot_cbor *body, size_t pairs, const char *key)
{
    certrot_cbor v;
    return certrot_cbor_find(body, pairs, key, &v);
}

static bool cbor_text_is(const certrot_cbor *body, size_t pairs, const char *key, const char *want)
{
    certrot_cbor v;
    const char *t;
    size_t n;
    return certrot_cbor_find(body, pairs, key, &v) && certrot_cbor_text(&v, &t, &n) && n == strlen(want) &&
           memcmp(t, want, n) == 0;
}

static bool cbor_bytes_of(const certrot_cbor *body, size_t pairs, const char *key, size_t want, const uint8_t **b)
{
    certrot_cbor v;
    size_t n;
    return certrot_cbor_find(body, pairs, key, &v) && certrot_cbor_bytes(&v, b, &n) && n == want;
}

static certrot_status decode_compact(certrot_ctx *ctx, const uint8_t *cose, size_t len, certrot_bundle *out,
                                     decoded *d, char *reason, size_t reason_cap)
{
    certrot_status status = CERTROT_OK;
    const char *why = NULL;
    if (certrot_cbor_check(cose, len, &why) != 0) FAIL(CERTROT_INVALID_CBOR, "%s", why);
    certrot_cbor c = {cose, cose + len};
    uint64_t tag;
    if (!certrot_cbor_tag(&c, &tag) || tag != 18)
        FAIL(CERTROT_INVALID_BUNDLE, "a compact bundle is a COSE_Sign1 with CBOR tag 18");
    /* [protected bstr, unprotected map, payload bstr, signature bstr] */
    size_t n, unprotected_pairs, prot_len, payload_len, sig_len;
    const uint8_t *prot, *payload, *sig, *prot_item, *payload_item;
    if (!certrot_cbor_array(&c, &n) || n != 4 || (prot_item = c.p, !certrot_cbor_bytes(&c, &prot, &prot_len)) ||
        !certrot_cbor_map(&c, &unprotected_pairs))
        FAIL(CERTROT_INVALID_CBOR, "a COSE_Sign1 is [protected bstr, unprotected map, payload bstr, signature bstr]");
    for (size_t i = 0; i < 2 * unprotected_pairs; i++) certrot_cbor_skip(&c);
    if ((payload_item = c.p, !certrot_cbor_bytes(&c, &payload, &payload_len)) || !certrot_cbor_bytes(&c, &sig, &sig_len))
        FAIL(CERTROT_INVALID_CBOR, "a COSE_Sign1 is [protected bstr, unprotected map, payload bstr, signature bstr]");
    /* protected: exactly {1: -7, 4: kid (32 bytes)}, which deterministically is A2 01 26 04 58 20 <kid> */
    static const uint8_t prot_prefix[] = {0xA2, 0x01, 0x26, 0x04, 0x58, 0x20};
    if (certrot_cbor_check(prot, prot_len, &why) != 0) FAIL(CERTROT_INVALID_CBOR, "protected header: %s", why);
    if (prot_len != sizeof prot_prefix + 32 || memcmp(prot, prot_prefix, sizeof prot_prefix) != 0)
        FAIL(CERTROT_INVALID_BUNDLE, "the protected header must be {1: -7 (ES256), 4: 32-byte kid}");
    certrot_b64url_encode(prot + sizeof prot_prefix, 32, d->kid, sizeof d->kid);
    if (unprotected_pairs != 0) FAIL(CERTROT_INVALID_BUNDLE, "the unprotected header must be empty");
    if (sig_len != 64) FAIL(CERTROT_INVALID_BUNDLE, "an ES256 signature is 64 bytes");
    memcpy(d->sig, sig, 64);
    d->sig_ok = true;

    /* payload: {iss, sub, jti (16-byte bstr), iat, exp, seq, ops} */
    if (certrot_cbor_check(payload, payload_len, &why) != 0) FAIL(CERTROT_INVALID_CBOR, "payload: %s", why);
    certrot_cbor pl = {payload, payload + payload_len};
    size_t pairs;
    if (!certrot_cbor_map(&pl, &pairs)) FAIL(CERTROT_INVALID_BUNDLE, "compact bundle payload: not a map");
    certrot_cbor v, ops;
    const char *iss, *sub;
    size_t iss_len, sub_len, op_count;
    const uint8_t *jti;
    if (!certrot_cbor_find(&pl, pairs, "iss", &v) || !certrot_cbor_text(&v, &iss, &iss_len) ||
        !certrot_cbor_find(&pl, pairs, "sub", &v) || !certrot_cbor_text(&v, &sub, &sub_len) ||
        !cbor_bytes_of(&pl, pairs, "jti", 16, &jti) || !cbor_claim_int(&pl, pairs, "iat", &out->iat) ||
        !cbor_claim_int(&pl, pairs, "exp", &out->exp) || !cbor_claim_int(&pl, pairs, "seq", &out->seq) ||
        !certrot_cbor_find(&pl, pairs, "ops", &ops) || !certrot_cbor_array(&ops, &op_count))
        FAIL(CERTROT_INVALID_BUNDLE,
             "compact bundle payload: needs iss, sub (text), jti (16-byte bstr), iat, exp, seq (integers) and ops");
    to_hex(jti, 16, out->jti);
    d->sub_fits = sub_len <= CERTROT_DEVICE_ID_MAX && memchr(sub, 0, sub_len) == NULL;
    if (d->sub_fits) {
        memcpy(d->sub, sub, sub_len);
        d->sub[sub_len] = '\0';
    }

    size_t used = 0; /* scratch: key material and subjects; the Sig_structure goes after them */
    for (size_t i = 0; i < op_count; i++) {
        certrot_cbor item = ops, kv;
        size_t op_pairs;
        certrot_cbor_skip(&ops);
        d->op_total++;
        const char *name = "";
        size_t name_len = 0;
        if (!certrot_cbor_map(&item, &op_pairs) || !certrot_cbor_find(&item, op_pairs, "op", &kv) ||
            !certrot_cbor_text(&kv, &name, &name_len))
            name_len = 0;
#define IS(s) (name_len == sizeof s - 1 && memcmp(name, s, name_len) == 0)
        uint8_t kind = IS("write") ? OP_WRITE : IS("delete") ? OP_DELETE : IS("trust_key") ? OP_TRUST_KEY
                       : IS("keygen") ? OP_KEYGEN : IS("activate") ? OP_ACTIVATE : 0xFF;
#undef IS
        if (kind == 0xFF) FAIL(CERTROT_INVALID_BUNDLE, "compact bundle op %zu: unknown or missing op", i + 1);
        op_in tmp, *o = d->op_total <= CERTROT_MAX_OPS ? &d->ops[i] : &tmp; /* more: reported at step 10 */
        memset(o, 0, sizeof *o);
        o->kind = kind;
        bool has_tag = cbor_has(&item, op_pairs, "tag") && cbor_claim_int(&item, op_pairs, "tag", &o->tag);
        bool has_type = cbor_has(&item, op_pairs, "type") && cbor_claim_int(&item, op_pairs, "type", &o->type);
        o->has_type = cbor_has(&item, op_pairs, "type");
        if (kind == OP_WRITE) {
            const uint8_t *digest;
            certrot_cbor der;
            size_t count = 0;
            bool ok = has_tag && has_type && certrot_cbor_find(&item, op_pairs, "der", &der) &&
                      certrot_cbor_array(&der, &count) && count > 0 && cbor_bytes_of(&item, op_pairs, "sha256", 32, &digest);
            o->der = der.p;
            for (size_t k = 0; ok && k < count; k++) {
                const uint8_t *b;
                size_t bl;
                ok = certrot_cbor_bytes(&der, &b, &bl);
            }
            if (!ok)
                FAIL(CERTROT_INVALID_BUNDLE,
                     "compact bundle op %zu: a write needs tag, type, der (array of bstr) and sha256 (32-byte bstr)", i + 1);
            o->der_end = der.p;
            o->der_count = count;
            o->has_pem = o->has_sha = o->sha_ok_len = true;
            to_hex(digest, 32, o->sha);
        } else if (kind == OP_DELETE) {
            if (!has_tag || !has_type) FAIL(CERTROT_INVALID_BUNDLE, "compact bundle op %zu: a delete needs tag and type", i + 1);
        } else if (kind == OP_TRUST_KEY) {
            certrot_cbor jwk;
            size_t jwk_pairs;
            const uint8_t *x, *y, *kid;
            if (!certrot_cbor_find(&item, op_pairs, "jwk", &jwk) || !certrot_cbor_map(&jwk, &jwk_pairs) ||
                !cbor_text_is(&jwk, jwk_pairs, "kty", "EC") || !cbor_text_is(&jwk, jwk_pairs, "crv", "P-256") ||
                !cbor_bytes_of(&jwk, jwk_pairs, "x", 32, &x) || !cbor_bytes_of(&jwk, jwk_pairs, "y", 32, &y) ||
                !cbor_bytes_of(&item, op_pairs, "kid", 32, &kid))
                FAIL(CERTROT_INVALID_BUNDLE,
                     "compact bundle op %zu: a trust_key needs jwk {kty EC, crv P-256, x, y: 32-byte bstr} and a "
                     "32-byte kid", i + 1);
            if (o == &tmp) continue;
            if (used + 65 + CERTROT_KID_LEN + 1 > ctx->scratch_cap)
                FAIL(CERTROT_INVALID_BUNDLE, "compact bundle op %zu does not fit the scratch buffer", i + 1);
            uint8_t *k = ctx->scratch + used;
            used += 65 + CERTROT_KID_LEN + 1;
            k[0] = 0x04;
            memcpy(k + 1, x, 32);
            memcpy(k + 33, y, 32);
            certrot_b64url_encode(kid, 32, (char *)k + 65, CERTROT_KID_LEN + 1); /* the kid as sent, compared later */
            o->key = k;
            o->has_jwk = o->has_kid = o->jwk_ok = o->kid_ok = true;
        } else { /* keygen, activate */
            if (!has_tag) FAIL(CERTROT_INVALID_BUNDLE, "compact bundle op %zu: %s needs tag", i + 1, name_len == 6 ? "a keygen" : "an activate");
            o->has_pem = cbor_has(&item, op_pairs, "der") || cbor_has(&item, op_pairs, "pem");
            if (kind == OP_KEYGEN) {
                const char *subject;
                size_t sl;
                if (!certrot_cbor_find(&item, op_pairs, "subject", &kv) || !certrot_cbor_text(&kv, &subject, &sl))
                    FAIL(CERTROT_INVALID_BUNDLE, "compact bundle op %zu: a keygen needs tag and subject", i + 1);
                o->has_subject = true;
                o->subject_ok = subject_ok(subject, sl);
                if (o->subject_ok && o != &tmp) {
                    if (used + sl + 1 > ctx->scratch_cap)
                        FAIL(CERTROT_INVALID_BUNDLE, "compact bundle op %zu does not fit the scratch buffer", i + 1);
                    memcpy(ctx->scratch + used, subject, sl);
                    ctx->scratch[used + sl] = '\0';
                    o->subject = (const char *)ctx->scratch + used;
                    used += sl + 1;
                }
            }
        }
    }
    d->arena = used;

    /* Sig_structure ["Signature1", protected, h'', payload] after them: the two bstrs as received. */
    size_t prot_item_len = (size_t)(prot + prot_len - prot_item), payload_item_len = (size_t)(payload + payload_len - payload_item);
    size_t ss_len = 1 + 11 + prot_item_len + 1 + payload_item_len;
    if (ss_len > ctx->scratch_cap - used)
        FAIL(CERTROT_TOO_LARGE, "the %zu-byte Sig_structure does not fit the scratch buffer (%zu bytes free)", ss_len,
             ctx->scratch_cap - used);
    uint8_t *ss = ctx->scratch + used;
    ss[0] = 0x84;
    ss[1] = 0x6A;
    memcpy(ss + 2, "Signature1", 10);
    memcpy(ss + 12, prot_item, prot_item_len);
    ss[12 + prot_item_len] = 0x40;
    memcpy(ss + 13 + prot_item_len, payload_item, payload_item_len);
    d->msg = ss;
    d->msg_len = ss_len;

done:
    return status;
}

/* ---- steps 5-11, both formats ---------------------------------------------------------------------- */

/* A compact write's PEM: every DER checked as X.509, then the CERTIFICATE blocks built into scratch. */
static certrot_status build_pem(certrot_ctx *ctx, decoded *d, op_in *o, char *reason, size_t reason_cap)
{
    certrot_status status = CERTROT_OK;
    certrot_cbor der = {o->der, o->der_end};
    size_t total = 0;
    for (size_t k = 0; k < o->der_count; k++) {
        const uint8_t *b;
        size_t bl;
        if (!certrot_cbor_bytes(&der, &b, &bl) || !certrot_der_is_certificate(b, bl))
            FAIL(CERTROT_INVALID_BUNDLE, "write op on tag %lld: certificate %zu is not DER X.509", (long long)o->tag, k + 1);
        total += certrot_pem_block_len(bl);
    }
    if (total > CERTROT_MAX_CREDENTIAL)
        FAIL(CERTROT_CREDENTIAL_TOO_LARGE, "credential for tag %lld is %zu bytes; at most %d", (long long)o->tag, total,
             CERTROT_MAX_CREDENTIAL);
    if (total > ctx->scratch_cap - d->arena)
        FAIL(CERTROT_TOO_LARGE, "the PEM of tag %lld (%zu bytes) does not fit the scratch buffer (%zu bytes free)",
             (long long)o->tag, total, ctx->scratch_cap - d->arena);
    uint8_t *pem = ctx->scratch + d->arena;
    size_t n = 0;
    der.p = o->der;
    for (size_t k = 0; k < o->der_count; k++) {
        const uint8_t *b;
        size_t bl;
        certrot_cbor_bytes(&der, &b, &bl);
        n += (size_t)certrot_der_to_pem(b, bl, pem + n, total - n);
    }
    o->pem = pem;
    o->pem_len = n;
    d->arena += n;
done:
    return status;
}

static certrot_status check_decoded(certrot_ctx *ctx, decoded *d, certrot_bundle *out, char *reason, size_t reason_cap)
{
    certrot_status status = CERTROT_OK;
    /* ---- step 5: pinned key ---- */
    int key_index = certrot_find_key(ctx, d->kid);
    if (key_index < 0) FAIL(CERTROT_UNKNOWN_KID, "no pinned key has kid %s", d->kid);
    const certrot_trusted_key *key = &ctx->keys[key_index];

    /* ---- step 6: signature over the received signing input / the Sig_structure ---- */
    if (!d->sig_ok || !ctx->cfg.cb.es256_verify ||
        ctx->cfg.cb.es256_verify(ctx->cfg.cb.user, key->pubkey, d->msg, d->msg_len, d->sig) != 0)
        FAIL(CERTROT_BAD_SIGNATURE, "the ES256 signature does not verify");

    bool own = d->sub_fits && strcmp(d->sub, ctx->cfg.device_id) == 0;
    /* ---- already-applied rule: before step 8, which would reject it ---- */
    if (own && ctx->applied_jti[0] && strcmp(out->jti, ctx->applied_jti) == 0) {
        status = CERTROT_ALREADY_APPLIED;
        goto done;
    }
    /* ---- step 7 ---- */
    if (!own)
    {
        char sub[65];
        FAIL(CERTROT_INVALID_BUNDLE, "bundle is for %s, not %s", d->sub_fits ? excerpt_of(d->sub, 64, sub) : "(too long)",
             ctx->cfg.device_id);
    }
    /* ---- step 8 ---- */
    if (out->seq <= ctx->applied_seq)
        FAIL(CERTROT_INVALID_BUNDLE, "seq %lld is not above the applied seq %lld", (long long)out->seq,
             (long long)ctx->applied_seq);
    /* ---- step 9: only when the device knows the time ---- */
    int64_t now;
    if (ctx->cfg.cb.now && ctx->cfg.cb.now(ctx->cfg.cb.user, &now) == 0) {
        if (out->exp <= now) FAIL(CERTROT_INVALID_BUNDLE, "bundle expired at %lld", (long long)out->exp);
        if (out->iat > now + CERTROT_IAT_SKEW)
            FAIL(CERTROT_INVALID_BUNDLE, "bundle issued in the future (iat %lld)", (long long)out->iat);
    }
    /* ---- step 10 ---- */
    if (d->op_total == 0) FAIL(CERTROT_INVALID_BUNDLE, "bundle has no ops");
    if (d->op_total > CERTROT_MAX_OPS)
        FAIL(CERTROT_INVALID_BUNDLE, "bundle has %zu ops; this device handles at most %d", d->op_total, CERTROT_MAX_OPS);
    /* ---- step 11: each op in order ---- */
    size_t new_keys = 0;
    for (size_t i = 0; i < d->op_total; i++) {
        op_in *o = &d->ops[i];
        if (o->kind == OP_TRUST_KEY) {
            const uint8_t *k = o->key;
            char tp[CERTROT_KID_LEN + 1];
            if (!o->has_jwk || !o->has_kid) FAIL(CERTROT_INVALID_BUNDLE, "trust_key op lacks jwk or kid");
            if (!o->jwk_ok || (ctx->cfg.cb.pubkey_check && ctx->cfg.cb.pubkey_check(ctx->cfg.cb.user, k) != 0))
                FAIL(CERTROT_INVALID_KEY, "the JWK is not a P-256 public key");
            if (certrot_thumbprint(&ctx->cfg.cb, k, tp) != 0) FAIL(CERTROT_INVALID_BUNDLE, "sha256 callback failed");
            if (!o->kid_ok || strcmp(tp, (const char *)k + 65) != 0)
                FAIL(CERTROT_INVALID_BUNDLE, "trust_key kid is not the thumbprint of its jwk");
            out->ops[i].is_trust_key = true;
            out->ops[i].pubkey = k;
            out->ops[i].kid = (const char *)k + 65;
            /* a key not trusted yet, and not already added by an earlier op of this bundle */
            bool seen = certrot_find_key(ctx, tp) >= 0;
            for (size_t j = 0; j < i && !seen; j++)
                seen = out->ops[j].is_trust_key && strcmp(out->ops[j].kid, tp) == 0;
            if (!seen) new_keys++;
            continue;
        }
        if (o->kind == OP_KEYGEN || o->kind == OP_ACTIVATE) {
            const char *name = o->kind == OP_KEYGEN ? "keygen" : "activate";
            if (o->tag < 0 || o->tag > CERTROT_MAX_TAG || o->has_type || o->has_pem)
                FAIL(CERTROT_INVALID_BUNDLE, "%s op needs a tag in 0..%ld and no type or pem", name,
                     (long)CERTROT_MAX_TAG);
            if (o->kind == OP_KEYGEN && (!o->has_subject || !o->subject_ok))
                FAIL(CERTROT_INVALID_BUNDLE, "keygen op needs a subject of 1..%d bytes without quotes or controls",
                     CERTROT_SUBJECT_MAX);
            if (ctx->active_tag < 0)
                FAIL(CERTROT_INVALID_BUNDLE, "%s op: this device does not renew its identity", name);
            if (o->kind == OP_KEYGEN && o->tag == ctx->active_tag)
                FAIL(CERTROT_INVALID_BUNDLE, "keygen in the active tag %lld would destroy the identity in use",
                     (long long)o->tag);
            out->ops[i].is_keygen = o->kind == OP_KEYGEN;
            out->ops[i].is_activate = o->kind == OP_ACTIVATE;
            out->ops[i].tag = (uint32_t)o->tag;
            if (o->kind == OP_KEYGEN) out->ops[i].subject = o->subject;
            continue;
        }
        if (o->tag < 0 || o->tag > CERTROT_MAX_TAG || o->type < 0 || o->type > 6)
            FAIL(CERTROT_INVALID_BUNDLE, "op on tag %lld type %lld is out of range", (long long)o->tag,
                 (long long)o->type);
        bool is_write = o->kind == OP_WRITE;
        out->ops[i].is_write = is_write;
        out->ops[i].tag = (uint32_t)o->tag;
        out->ops[i].type = (uint8_t)o->type;
        if (!is_write) continue;
        if (!o->has_pem || !o->has_sha)
            FAIL(CERTROT_INVALID_BUNDLE, "write op on tag %lld lacks pem or sha256", (long long)o->tag);
        /* compact: the PEM normal form of the DER, built now (the signature is checked: the Sig_structure in
         * scratch is no longer needed) */
        if (o->der && (status = build_pem(ctx, d, o, reason, reason_cap)) != CERTROT_OK) goto done;
        if (o->pem_len > CERTROT_MAX_CREDENTIAL)
            FAIL(CERTROT_CREDENTIAL_TOO_LARGE, "credential for tag %lld is %zu bytes; at most %d",
                 (long long)o->tag, o->pem_len, CERTROT_MAX_CREDENTIAL);
        if (!certrot_pem_is_normal(o->pem, o->pem_len))
            FAIL(CERTROT_INVALID_PEM, "credential for tag %lld breaks the PEM rules", (long long)o->tag);
        uint8_t digest[32];
        char hex[65];
        if (!ctx->cfg.cb.sha256 || ctx->cfg.cb.sha256(ctx->cfg.cb.user, o->pem, o->pem_len, digest) != 0)
            FAIL(CERTROT_INVALID_BUNDLE, "sha256 callback failed");
        to_hex(digest, 32, hex);
        if (!o->sha_ok_len || strcmp(hex, o->sha) != 0)
            FAIL(CERTROT_INVALID_BUNDLE, "sha256 of tag %lld does not match its pem", (long long)o->tag);
        out->ops[i].pem = o->pem;
        out->ops[i].pem_len = o->pem_len;
    }
    /* Only once every op passed: room for the keys to add (none is ever removed). */
    if (ctx->key_count + new_keys > CERTROT_MAX_KEYS)
        FAIL(CERTROT_KEY_TABLE_FULL, "cannot trust %zu more key(s): this device keeps at most %d and has %zu",
             new_keys, CERTROT_MAX_KEYS, ctx->key_count);
    out->op_count = d->op_total;
done:
    return status;
}

#undef FAIL

typedef certrot_status (*decoder)(certrot_ctx *, const uint8_t *, size_t, certrot_bundle *, decoded *, char *, size_t);

static certrot_status check(certrot_ctx *ctx, decoder decode, const uint8_t *bytes, size_t len, certrot_bundle *out,
                            char *reason, size_t reason_cap)
{
    char dummy[1];
    if (!reason) {
        reason = dummy;
        reason_cap = sizeof dummy;
    }
    reason[0] = '\0';
    if (!ctx || !bytes || !out) return CERTROT_ERR_ARG;
    memset(out, 0, sizeof *out);
    decoded d;
    memset(&d, 0, sizeof d);
    certrot_status st = decode(ctx, bytes, len, out, &d, reason, reason_cap);
    return st == CERTROT_OK ? check_decoded(ctx, &d, out, reason, reason_cap) : st;
}

certrot_status certrot_check_bundle(certrot_ctx *ctx, const uint8_t *jws, size_t len, certrot_bundle *out,
                                    char *reason, size_t reason_cap)
{
    return check(ctx, decode_jws, jws, len, out, reason, reason_cap);
}

certrot_status certrot_check_compact(certrot_ctx *ctx, const uint8_t *cose, size_t len, certrot_bundle *out,
                                     char *reason, size_t reason_cap)
{
    return check(ctx, decode_compact, cose, len, out, reason, reason_cap);
}
