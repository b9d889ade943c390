/* JWS parsing and the device checks of docs/protocol.md §5 (steps 4-11 and the already-applied rule).
 * cJSON is used only here and in certrot_device.c (part envelope); every tree is freed before return. */
#include "certrot_internal.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Sets reason to "<code>: <message>" as the reference device does. */
void certrot_reason(char *reason, size_t cap, certrot_status s, const char *fmt, ...)
{
    if (!reason || cap == 0) return;
    int n = snprintf(reason, cap, "%s: ", certrot_status_name(s));
    if (n < 0 || (size_t)n >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason + n, cap - (size_t)n, fmt, ap);
    va_end(ap);
}

/* Doubles hold integers exactly up to 2^53; claims beyond that are refused rather than rounded. */
static bool json_int(const cJSON *item, int64_t *out)
{
    if (!cJSON_IsNumber(item)) return false;
    double d = item->valuedouble;
    if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0)) return false;
    int64_t v = (int64_t)d;
    if ((double)v != d) return false;
    *out = v;
    return true;
}

static const char *json_str(const cJSON *obj, const char *name)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

/* Optional string member: absent or null is fine, anything but a string is a schema error. */
static bool json_opt_str(const cJSON *obj, const char *name, const char **out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
    *out = NULL;
    if (!item || cJSON_IsNull(item)) return true;
    if (!cJSON_IsString(item)) return false;
    *out = item->valuestring;
    return true;
}

/* Parses `len` bytes at `text` (followed by a NUL at text[len]) as one JSON value, nothing after it. */
static cJSON *parse_exact(const uint8_t *text, size_t len)
{
    return cJSON_ParseWithLengthOpts((const char *)text, len + 1, NULL, 1);
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

/* What step 4 extracts from an op; the range and content checks run in step 11. For trust_key, pem_off
 * is where the decoded key (65 bytes) and the received kid (44 bytes, when it is 43 characters) sit in
 * scratch. */
typedef struct {
    uint8_t kind;
    bool is_write;
    bool has_jwk, has_kid, jwk_ok, kid_ok;
    int64_t tag, type;
    bool has_pem, has_sha, has_type;
    size_t pem_off, pem_len;
    bool has_subject, subject_ok;
    size_t subject_off;
    char sha[65];
    bool sha_ok_len;
} op_in;

static void to_hex(const uint8_t *d, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[2 * n] = '\0';
}

certrot_status certrot_check_bundle(certrot_ctx *ctx, const uint8_t *jws, size_t len, certrot_bundle *out,
                                    char *reason, size_t reason_cap)
{
    char dummy[1];
    if (!reason) {
        reason = dummy;
        reason_cap = sizeof dummy;
    }
    reason[0] = '\0';
    if (!ctx || !jws || !out) return CERTROT_ERR_ARG;
    memset(out, 0, sizeof *out);

#define FAIL(st, ...)                                                                                      \
    do {                                                                                                    \
        certrot_reason(reason, reason_cap, (st), __VA_ARGS__);                                             \
        status = (st);                                                                                      \
        goto done;                                                                                          \
    } while (0)

    certrot_status status = CERTROT_OK;
    cJSON *header = NULL, *claims = NULL;
    uint8_t sig[64];
    long sig_len = -1;
    op_in ops[CERTROT_MAX_OPS];
    size_t op_total = 0;
    char sub[CERTROT_DEVICE_ID_MAX + 1] = "";
    bool sub_fits = false;
    const certrot_trusted_key *key = NULL;

    /* ---- step 4: three segments of canonical base64url, header and claims parse ---- */
    const uint8_t *dot1 = memchr(jws, '.', len);
    const uint8_t *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - jws)) : NULL;
    if (!dot1 || !dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - jws)))
        FAIL(CERTROT_INVALID_BUNDLE, "a JWS compact serialisation has 3 parts");
    size_t hlen = (size_t)(dot1 - jws), clen = (size_t)(dot2 - dot1 - 1), slen = len - (size_t)(dot2 + 1 - jws);
    size_t signing_len = (size_t)(dot2 - jws);

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
    if (sig_len == 64) memcpy(sig, sg, 64);

    header = parse_exact(s, (size_t)hdec);
    if (!cJSON_IsObject(header)) FAIL(CERTROT_INVALID_BUNDLE, "JWS header is not a JSON object");
    const char *alg = json_str(header, "alg"), *kid = json_str(header, "kid"), *typ = json_str(header, "typ");
    if (!alg || !kid || !typ) FAIL(CERTROT_INVALID_BUNDLE, "JWS header lacks alg, kid or typ");
    if (strcmp(alg, "ES256") != 0) FAIL(CERTROT_INVALID_BUNDLE, "alg %.40s is not ES256", alg);
    if (strcmp(typ, "certrot-bundle+jwt") != 0)
        FAIL(CERTROT_INVALID_BUNDLE, "typ %.40s is not certrot-bundle+jwt", typ);
    int key_index = certrot_find_key(ctx, kid);
    if (key_index >= 0) key = &ctx->keys[key_index];
    char kid_copy[CERTROT_KID_LEN + 8];
    snprintf(kid_copy, sizeof kid_copy, "%s", kid);

    claims = parse_exact(c, (size_t)cdec);
    if (!cJSON_IsObject(claims)) FAIL(CERTROT_INVALID_BUNDLE, "JWS payload is not a JSON object");
    const char *iss = json_str(claims, "iss"), *sub_s = json_str(claims, "sub"), *jti = json_str(claims, "jti");
    const cJSON *ops_j = cJSON_GetObjectItemCaseSensitive(claims, "ops");
    if (!iss || !sub_s || !jti || !json_int(cJSON_GetObjectItemCaseSensitive(claims, "iat"), &out->iat) ||
        !json_int(cJSON_GetObjectItemCaseSensitive(claims, "exp"), &out->exp) ||
        !json_int(cJSON_GetObjectItemCaseSensitive(claims, "seq"), &out->seq) || !cJSON_IsArray(ops_j))
        FAIL(CERTROT_INVALID_BUNDLE, "JWS payload lacks a claim (iss, sub, jti, iat, exp, seq, ops) or has a wrong type");
    size_t jlen = strlen(jti);
    if (jlen == 0 || jlen > CERTROT_JTI_MAX) FAIL(CERTROT_INVALID_BUNDLE, "jti must be 1..%d bytes", CERTROT_JTI_MAX);
    memcpy(out->jti, jti, jlen + 1);
    sub_fits = strlen(sub_s) <= CERTROT_DEVICE_ID_MAX;
    if (sub_fits) snprintf(sub, sizeof sub, "%s", sub_s);

    /* Ops: structure now (step 4); pems are copied to the start of scratch, over the claims text that
     * cJSON has already parsed (unescaped pems are never longer than their JSON form). */
    size_t pem_used = 0;
    const cJSON *op_j;
    cJSON_ArrayForEach(op_j, ops_j)
    {
        op_total++;
        if (!cJSON_IsObject(op_j)) FAIL(CERTROT_INVALID_BUNDLE, "ops[%zu] is not an object", op_total - 1);
        const char *kind = json_str(op_j, "op"), *pem = NULL, *sha = NULL;
        int64_t tag = 0, type = 0;
        bool trust = kind && strcmp(kind, "trust_key") == 0;
        bool identity = kind && (strcmp(kind, "keygen") == 0 || strcmp(kind, "activate") == 0);
        const char *subject = NULL;
        bool has_type = false;
        const char *okid = NULL, *kty = NULL, *crv = NULL, *x = NULL, *y = NULL;
        const cJSON *jwk = NULL;
        if (trust) {
            /* {"op":"trust_key","jwk":{"crv","kty","x","y"},"kid"}: a jwk that is there must have all four
             * string members (the reference decodes it as a struct); absent jwk/kid is step 11's. */
            jwk = cJSON_GetObjectItemCaseSensitive(op_j, "jwk");
            if (jwk && cJSON_IsNull(jwk)) jwk = NULL;
            if (!json_opt_str(op_j, "kid", &okid) || (jwk && !cJSON_IsObject(jwk)) ||
                (jwk && (!(kty = json_str(jwk, "kty")) || !(crv = json_str(jwk, "crv")) || !(x = json_str(jwk, "x")) ||
                         !(y = json_str(jwk, "y")))))
                FAIL(CERTROT_INVALID_BUNDLE, "ops[%zu] does not match the schema", op_total - 1);
        } else if (identity) {
            /* {"op":"keygen","tag":S,"subject":"CN=…"}, {"op":"activate","tag":S} (docs/protocol.md §11) */
            const cJSON *type_j = cJSON_GetObjectItemCaseSensitive(op_j, "type");
            has_type = type_j && !cJSON_IsNull(type_j);
            if (!json_int(cJSON_GetObjectItemCaseSensitive(op_j, "tag"), &tag) || !json_opt_str(op_j, "pem", &pem) ||
                !json_opt_str(op_j, "subject", &subject))
                FAIL(CERTROT_INVALID_BUNDLE, "ops[%zu] does not match the schema", op_total - 1);
        } else if (!kind || (strcmp(kind, "write") != 0 && strcmp(kind, "delete") != 0) ||
                   !json_int(cJSON_GetObjectItemCaseSensitive(op_j, "tag"), &tag) ||
                   !json_int(cJSON_GetObjectItemCaseSensitive(op_j, "type"), &type) || !json_opt_str(op_j, "pem", &pem) ||
                   !json_opt_str(op_j, "sha256", &sha))
            FAIL(CERTROT_INVALID_BUNDLE, "ops[%zu] does not match the schema", op_total - 1);
        if (op_total > CERTROT_MAX_OPS) continue; /* reported at step 10 */
        op_in *o = &ops[op_total - 1];
        memset(o, 0, sizeof *o);
        o->kind = trust                         ? OP_TRUST_KEY
                  : identity && kind[0] == 'k' ? OP_KEYGEN
                  : identity                   ? OP_ACTIVATE
                  : kind[0] == 'w'             ? OP_WRITE
                                               : OP_DELETE;
        o->has_type = has_type;
        o->is_write = o->kind == OP_WRITE;
        o->tag = tag;
        o->type = type;
        if (trust) {
            /* The cJSON trees hold their own copies of every string, so scratch (the decoded claims text)
             * can be overwritten: the key material goes after the pems. */
            if (pem_used + 65 + CERTROT_KID_LEN + 1 > ctx->scratch_cap)
                FAIL(CERTROT_INVALID_BUNDLE, "ops[%zu] does not fit the scratch buffer", op_total - 1);
            uint8_t *k = ctx->scratch + pem_used;
            o->pem_off = pem_used;
            pem_used += 65 + CERTROT_KID_LEN + 1;
            o->has_jwk = jwk != NULL;
            o->has_kid = okid != NULL;
            k[0] = 0x04;
            o->jwk_ok = jwk && strcmp(kty, "EC") == 0 && strcmp(crv, "P-256") == 0 &&
                        certrot_b64url_decode(x, strlen(x), k + 1, 32) == 32 &&
                        certrot_b64url_decode(y, strlen(y), k + 33, 32) == 32;
            o->kid_ok = okid && strlen(okid) == CERTROT_KID_LEN;
            if (o->kid_ok) memcpy(k + 65, okid, CERTROT_KID_LEN + 1);
            continue;
        }
        if (identity) {
            o->has_pem = pem != NULL;
            if (subject) {
                size_t sl = strlen(subject);
                o->has_subject = true;
                o->subject_ok = sl >= 1 && sl <= CERTROT_SUBJECT_MAX;
                for (size_t j = 0; j < sl && o->subject_ok; j++)
                    o->subject_ok = (uint8_t)subject[j] >= 0x20 && subject[j] != '"';
                if (o->subject_ok) {
                    if (pem_used + sl + 1 > ctx->scratch_cap)
                        FAIL(CERTROT_INVALID_BUNDLE, "ops[%zu] does not fit the scratch buffer", op_total - 1);
                    memcpy(ctx->scratch + pem_used, subject, sl + 1);
                    o->subject_off = pem_used;
                    pem_used += sl + 1;
                }
            }
            continue;
        }
        if (pem) {
            size_t pl = strlen(pem);
            if (pem_used + pl > ctx->scratch_cap) /* cannot happen (pems are shorter than the claims); be safe */
                FAIL(CERTROT_INVALID_BUNDLE, "ops[%zu] pem does not fit", op_total - 1);
            memmove(ctx->scratch + pem_used, pem, pl);
            o->has_pem = true;
            o->pem_off = pem_used;
            o->pem_len = pl;
            pem_used += pl;
        }
        if (sha) {
            o->has_sha = true;
            o->sha_ok_len = strlen(sha) == 64;
            if (o->sha_ok_len) memcpy(o->sha, sha, 65);
        }
    }
    cJSON_Delete(claims);
    claims = NULL;
    cJSON_Delete(header);
    header = NULL;

    /* ---- step 5: pinned key ---- */
    if (!key) FAIL(CERTROT_UNKNOWN_KID, "no pinned key has kid %s", kid_copy);

    /* ---- step 6: signature over the received signing input ---- */
    if (sig_len != 64 || !ctx->cfg.cb.es256_verify ||
        ctx->cfg.cb.es256_verify(ctx->cfg.cb.user, key->pubkey, jws, signing_len, sig) != 0)
        FAIL(CERTROT_BAD_SIGNATURE, "the ES256 signature does not verify");

    bool own = sub_fits && strcmp(sub, ctx->cfg.device_id) == 0;
    /* ---- already-applied rule: before step 8, which would reject it ---- */
    if (own && ctx->applied_jti[0] && strcmp(out->jti, ctx->applied_jti) == 0) {
        status = CERTROT_ALREADY_APPLIED;
        goto done;
    }
    /* ---- step 7 ---- */
    if (!own) FAIL(CERTROT_INVALID_BUNDLE, "bundle is for %.64s, not %s", sub_fits ? sub : "(too long)", ctx->cfg.device_id);
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
    if (op_total == 0) FAIL(CERTROT_INVALID_BUNDLE, "bundle has no ops");
    if (op_total > CERTROT_MAX_OPS)
        FAIL(CERTROT_INVALID_BUNDLE, "bundle has %zu ops; this device handles at most %d", op_total, CERTROT_MAX_OPS);
    /* ---- step 11: each op in order ---- */
    size_t new_keys = 0;
    for (size_t i = 0; i < op_total; i++) {
        op_in *o = &ops[i];
        if (o->kind == OP_TRUST_KEY) {
            const uint8_t *k = ctx->scratch + o->pem_off;
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
            if (o->kind == OP_KEYGEN) out->ops[i].subject = (const char *)ctx->scratch + o->subject_off;
            continue;
        }
        if (o->tag < 0 || o->tag > CERTROT_MAX_TAG || o->type < 0 || o->type > 6)
            FAIL(CERTROT_INVALID_BUNDLE, "op on tag %lld type %lld is out of range", (long long)o->tag,
                 (long long)o->type);
        out->ops[i].is_write = o->is_write;
        out->ops[i].tag = (uint32_t)o->tag;
        out->ops[i].type = (uint8_t)o->type;
        if (!o->is_write) continue;
        if (!o->has_pem || !o->has_sha)
            FAIL(CERTROT_INVALID_BUNDLE, "write op on tag %lld lacks pem or sha256", (long long)o->tag);
        const uint8_t *pem = ctx->scratch + o->pem_off;
        if (o->pem_len > CERTROT_MAX_CREDENTIAL)
            FAIL(CERTROT_CREDENTIAL_TOO_LARGE, "credential for tag %lld is %zu bytes; at most %d",
                 (long long)o->tag, o->pem_len, CERTROT_MAX_CREDENTIAL);
        if (!certrot_pem_is_normal(pem, o->pem_len))
            FAIL(CERTROT_INVALID_PEM, "credential for tag %lld breaks the PEM rules", (long long)o->tag);
        uint8_t digest[32];
        char hex[65];
        if (!ctx->cfg.cb.sha256 || ctx->cfg.cb.sha256(ctx->cfg.cb.user, pem, o->pem_len, digest) != 0)
            FAIL(CERTROT_INVALID_BUNDLE, "sha256 callback failed");
        to_hex(digest, 32, hex);
        if (!o->sha_ok_len || strcmp(hex, o->sha) != 0)
            FAIL(CERTROT_INVALID_BUNDLE, "sha256 of tag %lld does not match its pem", (long long)o->tag);
        out->ops[i].pem = pem;
        out->ops[i].pem_len = o->pem_len;
    }
    /* Only once every op passed: room for the keys to add (none is ever removed). */
    if (ctx->key_count + new_keys > CERTROT_MAX_KEYS)
        FAIL(CERTROT_KEY_TABLE_FULL, "cannot trust %zu more key(s): this device keeps at most %d and has %zu",
             new_keys, CERTROT_MAX_KEYS, ctx->key_count);
    out->op_count = op_total;

done:
    cJSON_Delete(claims);
    cJSON_Delete(header);
    return status;
#undef FAIL
}
