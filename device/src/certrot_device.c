/* Context, part reassembly, stall handling, and applying a checked bundle to the modem with rollback. */
#include "certrot_internal.h"

#include <string.h>

const char *certrot_status_name(certrot_status s)
{
    switch (s) {
    case CERTROT_OK: return "ok";
    case CERTROT_WAITING: return "waiting";
    case CERTROT_IGNORED: return "invalid_part";
    case CERTROT_TOO_LARGE: return "bundle_too_large";
    case CERTROT_INVALID_BUNDLE: return "invalid_bundle";
    case CERTROT_UNKNOWN_KID: return "unknown_kid";
    case CERTROT_BAD_SIGNATURE: return "bad_signature";
    case CERTROT_INVALID_PEM: return "invalid_pem";
    case CERTROT_CREDENTIAL_TOO_LARGE: return "credential_too_large";
    case CERTROT_INVALID_KEY: return "invalid_key";
    case CERTROT_KEY_TABLE_FULL: return "key_table_full";
    case CERTROT_INVALID_CBOR: return "invalid_cbor";
    case CERTROT_ALREADY_APPLIED: return "already_applied";
    case CERTROT_APPLIED: return "applied";
    case CERTROT_MODEM_FAILED: return "modem_error";
    case CERTROT_RECONNECT_FAILED: return "reconnect_failed";
    case CERTROT_STORE_FAILED: return "store_failed";
    case CERTROT_KEYGEN_FAILED: return "keygen_failed";
    case CERTROT_ACTIVATE_FAILED: return "activate_failed";
    case CERTROT_ERR_ARG: return "bad_argument";
    case CERTROT_ERR_NOSPACE: return "no_space";
    }
    return "unknown";
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void result_init(certrot_result *res)
{
    memset(res, 0, sizeof *res);
}

static void asm_reset(certrot_ctx *ctx)
{
    ctx->asm_parts = 0;
    ctx->asm_have = 0;
    ctx->asm_used = 0;
    ctx->asm_asks = 0;
    ctx->asm_jti[0] = '\0';
    ctx->asm_compact = false;
}

/* Adds a key (kid already checked to be its thumbprint) unless it is there. false when the table is full. */
static bool add_key(certrot_ctx *ctx, const char *kid, const uint8_t pubkey[65])
{
    if (certrot_find_key(ctx, kid) >= 0) return true;
    if (ctx->key_count >= CERTROT_MAX_KEYS) return false;
    certrot_trusted_key *k = &ctx->keys[ctx->key_count++];
    memcpy(k->kid, kid, CERTROT_KID_LEN + 1);
    memcpy(k->pubkey, pubkey, 65);
    return true;
}

/* Pinned keys from the config (their kid must be the thumbprint), then the stored ones that check out. */
static certrot_status load_keys(certrot_ctx *ctx, const certrot_config *cfg)
{
    char tp[CERTROT_KID_LEN + 1];
    if (cfg->key_count > CERTROT_MAX_KEYS || (cfg->key_count && !cfg->keys)) return CERTROT_ERR_ARG;
    for (size_t i = 0; i < cfg->key_count; i++) {
        if (certrot_thumbprint(&cfg->cb, cfg->keys[i].pubkey, tp) != 0) return CERTROT_ERR_ARG;
        if (cfg->keys[i].kid && strcmp(cfg->keys[i].kid, tp) != 0) return CERTROT_ERR_ARG;
        add_key(ctx, tp, cfg->keys[i].pubkey);
    }
    if (!cfg->cb.load_keys) return CERTROT_OK;
    certrot_trusted_key stored[CERTROT_MAX_KEYS];
    size_t n = 0;
    memset(stored, 0, sizeof stored);
    if (cfg->cb.load_keys(cfg->cb.user, stored, &n) != 0) return CERTROT_OK; /* flash unreadable: pinned only */
    if (n > CERTROT_MAX_KEYS) n = CERTROT_MAX_KEYS;
    for (size_t i = 0; i < n; i++) {
        stored[i].kid[CERTROT_KID_LEN] = '\0';
        /* a corrupted entry is skipped rather than trusted */
        if (certrot_thumbprint(&cfg->cb, stored[i].pubkey, tp) == 0 && strcmp(stored[i].kid, tp) == 0)
            add_key(ctx, tp, stored[i].pubkey);
    }
    return CERTROT_OK;
}

certrot_status certrot_init(certrot_ctx *ctx, const certrot_config *cfg, uint8_t *jws_buf, size_t jws_cap,
                            uint8_t *scratch, size_t scratch_cap)
{
    if (!ctx || !cfg || !jws_buf || !scratch || !cfg->device_id || !cfg->cb.sha256 || !cfg->cb.es256_verify)
        return CERTROT_ERR_ARG;
    /* Part offsets are 16-bit; 64 KB is far above any nRF91 bundle. */
    if (jws_cap < 64 || jws_cap > 65535 || scratch_cap < CERTROT_SCRATCH_FOR(jws_cap)) return CERTROT_ERR_ARG;
    /* Compact bundles: the Sig_structure (shorter than the bundle) and then the PEMs are built in scratch. */
    if (cfg->takes_compact && scratch_cap < CERTROT_COSE_SCRATCH_FOR(jws_cap)) return CERTROT_ERR_ARG;
    size_t idlen = strlen(cfg->device_id);
    if (idlen == 0 || idlen > CERTROT_DEVICE_ID_MAX) return CERTROT_ERR_ARG;
    memset(ctx, 0, sizeof *ctx);
    ctx->cfg = *cfg;
    if (!ctx->cfg.reconnect_timeout_s) ctx->cfg.reconnect_timeout_s = 60;
    if (!ctx->cfg.stall_s) ctx->cfg.stall_s = 30;
    if (!ctx->cfg.max_incomplete_asks) ctx->cfg.max_incomplete_asks = 3;
    ctx->jws = jws_buf;
    ctx->jws_cap = jws_cap;
    ctx->scratch = scratch;
    ctx->scratch_cap = scratch_cap;
    asm_reset(ctx);
    ctx->active_tag = -1;
    if (cfg->cb.keygen || cfg->cb.publish_csr || cfg->cb.activate) {
        /* Identity renewal needs all three, and a sec tag to report. */
        if (!cfg->cb.keygen || !cfg->cb.publish_csr || !cfg->cb.activate || cfg->active_tag > CERTROT_MAX_TAG)
            return CERTROT_ERR_ARG;
        ctx->active_tag = cfg->active_tag;
    }
    if (load_keys(ctx, cfg) != CERTROT_OK) return CERTROT_ERR_ARG;
    if (cfg->cb.load_state) {
        int64_t seq = 0;
        char jti[CERTROT_JTI_MAX + 1] = "";
        if (cfg->cb.load_state(cfg->cb.user, &seq, jti) == 0 && seq >= 0) {
            ctx->applied_seq = seq;
            jti[CERTROT_JTI_MAX] = '\0';
            copy_str(ctx->applied_jti, sizeof ctx->applied_jti, jti);
        }
    }
    return CERTROT_OK;
}

int64_t certrot_applied_seq(const certrot_ctx *ctx) { return ctx->applied_seq; }

int64_t certrot_active_tag(const certrot_ctx *ctx) { return ctx ? ctx->active_tag : -1; }

size_t certrot_key_count(const certrot_ctx *ctx) { return ctx ? ctx->key_count : 0; }

const char *certrot_key_kid(const certrot_ctx *ctx, size_t i)
{
    return ctx && i < ctx->key_count ? ctx->keys[i].kid : NULL;
}

/* ---- Reassembly ------------------------------------------------------------------------------------ */

/* Where part n (1-based) goes: after every stored part with a lower number. */
static size_t asm_insert_at(const certrot_ctx *ctx, unsigned n)
{
    size_t at = 0;
    for (unsigned i = 0; i + 1 < n; i++)
        if (ctx->asm_have & ((uint64_t)1 << i)) at += ctx->asm_len[i];
    return at;
}

static void fill_missing(const certrot_ctx *ctx, certrot_result *res)
{
    res->missing_count = 0;
    for (unsigned n = 1; n <= ctx->asm_parts; n++)
        if (!(ctx->asm_have & ((uint64_t)1 << (n - 1)))) res->missing[res->missing_count++] = (uint8_t)n;
}

static certrot_status process_bundle(certrot_ctx *ctx, size_t len, bool compact, const char *part_jti,
                                     certrot_result *res);

/* §4 reassembly, shared by JSON and compact parts: stores one checked part (1 <= n <= total <= 64, jti 1..64
 * bytes; the data dlen bytes at `data`, or the JSON string `json_data` whose unescaped length is dlen), rejects a
 * bundle that outgrows the buffer, and returns true once every part is in (then the bundle
 * is in order at the start of the buffer, ctx->asm_used bytes; the caller resets the assembly).
 *
 * Parts are kept in part order from the moment they arrive, in place (no second buffer):
 *   Invariant: jws[0, asm_used) is the concatenation, in increasing part number, of the data of the parts
 *   whose bit is set in asm_have; asm_len[i] is the length of part i+1 for every set bit; asm_used is the
 *   sum of those lengths (<= jws_cap).
 *   - asm_reset: no bit set, asm_used = 0: the empty concatenation.
 *   - Storing part n (bit n-1 clear, asm_used + dlen <= jws_cap checked first): by the invariant the parts
 *     numbered below n occupy exactly jws[0, at) with at = the sum of their lengths (asm_insert_at), and the
 *     parts numbered above n occupy jws[at, asm_used). memmove shifts the latter to [at + dlen, asm_used +
 *     dlen) (within the buffer by the check), the data goes to [at, at + dlen), bit n-1 and asm_len[n-1] are
 *     set and asm_used grows by dlen: the concatenation in part order again. An empty part (dlen = 0) moves
 *     nothing and adds nothing. No offset is stored, so none can go stale (the permutation this replaced
 *     kept arrival offsets and broke on an empty part stored at a later part's offset, issue #36).
 *   - A duplicate (bit set) or a rejection (too large) leaves the buffer untouched or resets the assembly.
 *   So once every bit 0..total-1 is set, jws[0, asm_used) is part 1 || part 2 || ... || part total. */
static bool asm_add(certrot_ctx *ctx, const char *jti, unsigned n, unsigned total, const uint8_t *data, size_t dlen,
                    const certrot_json *json_data, bool compact, int64_t now_s, certrot_result *res, size_t *bundle_len)
{
    size_t jlen = strlen(jti);
    /* The rest of a bundle already rejected as too large: drop silently, do not assemble and reject again. */
    if (ctx->rejected_jti[0] && strcmp(ctx->rejected_jti, jti) == 0) return false;

    /* Another jti, part count or format: start over (the daemon moved on to a new bundle). */
    if (ctx->asm_parts != total || ctx->asm_compact != compact || strcmp(ctx->asm_jti, jti) != 0) {
        asm_reset(ctx);
        ctx->asm_parts = (uint8_t)total;
        ctx->asm_compact = compact;
        memcpy(ctx->asm_jti, jti, jlen + 1);
    }
    ctx->asm_last_part_s = now_s;
    res->status = CERTROT_WAITING;
    uint64_t bit = (uint64_t)1 << (n - 1);
    if (ctx->asm_have & bit) return false; /* duplicate */

    if (ctx->asm_used + dlen > ctx->jws_cap) {
        /* Step 3: reject rather than truncate. */
        res->status = CERTROT_TOO_LARGE;
        res->ack = CERTROT_ACK_REJECTED;
        copy_str(res->jti, sizeof res->jti, ctx->asm_jti);
        certrot_reason(res->reason, sizeof res->reason, CERTROT_TOO_LARGE,
                       "bundle of at least %zu bytes does not fit the %zu-byte buffer", ctx->asm_used + dlen,
                       ctx->jws_cap);
        memcpy(ctx->rejected_jti, ctx->asm_jti, sizeof ctx->rejected_jti);
        asm_reset(ctx);
        return false;
    }
    size_t at = asm_insert_at(ctx, n);
    memmove(ctx->jws + at + dlen, ctx->jws + at, ctx->asm_used - at);
    if (json_data) certrot_json_string(json_data, ctx->jws + at, dlen);
    else if (dlen) memcpy(ctx->jws + at, data, dlen);
    ctx->asm_len[n - 1] = (uint16_t)dlen;
    ctx->asm_used += dlen;
    ctx->asm_have |= bit;
    if (ctx->asm_have != (total == 64 ? ~(uint64_t)0 : (((uint64_t)1 << total) - 1))) return false;
    *bundle_len = ctx->asm_used;
    return true;
}

/* A compact part (docs/protocol.md §12): the deterministic CBOR [jti (16-byte bstr), part, parts, data (bstr)],
 * 1 <= part <= parts <= 64. jti as 32 lowercase hex digits. */
static bool compact_part(const uint8_t *payload, size_t len, char jti[33], unsigned *n, unsigned *total,
                         const uint8_t **data, size_t *dlen)
{
    static const char hex[] = "0123456789abcdef";
    certrot_cbor c = {payload, payload + len};
    size_t count, jl;
    const uint8_t *j;
    int64_t part, parts;
    if (certrot_cbor_check(payload, len, NULL) != 0 || !certrot_cbor_array(&c, &count) || count != 4 ||
        !certrot_cbor_bytes(&c, &j, &jl) || jl != 16 || !certrot_cbor_int(&c, &part) ||
        !certrot_cbor_int(&c, &parts) || !certrot_cbor_bytes(&c, data, dlen))
        return false;
    if (!(parts >= 1 && parts <= CERTROT_MAX_PARTS && part >= 1 && part <= parts)) return false;
    for (size_t i = 0; i < 16; i++) {
        jti[2 * i] = hex[j[i] >> 4];
        jti[2 * i + 1] = hex[j[i] & 15];
    }
    jti[32] = '\0';
    *n = (unsigned)part;
    *total = (unsigned)parts;
    return true;
}

certrot_status certrot_on_part(certrot_ctx *ctx, const uint8_t *payload, size_t len, int64_t now_s,
                               certrot_result *res)
{
    if (!res) return CERTROT_ERR_ARG;
    result_init(res);
    if (!ctx || (!payload && len)) return res->status = CERTROT_ERR_ARG;
    res->status = CERTROT_IGNORED;
    size_t bundle_len = 0;
    char part_jti[CERTROT_JTI_MAX + 1];

    if (len > 0 && payload[0] == 0x84) {
        /* Compact part (CBOR). A device that does not list "cose" ignores it, as the reference does. */
        const uint8_t *data;
        size_t dlen;
        unsigned n, total;
        if (!ctx->cfg.takes_compact || !compact_part(payload, len, part_jti, &n, &total, &data, &dlen))
            return res->status;
        if (!asm_add(ctx, part_jti, n, total, data, dlen, NULL, true, now_s, res, &bundle_len)) return res->status;
        asm_reset(ctx);
        return process_bundle(ctx, bundle_len, true, part_jti, res);
    }

    /* Step 2: {"jti":string,"part":int,"parts":int,"data":string}, 1 <= part <= parts <= 64; other members are
     * ignored. The JSON reader: no heap, no recursion, nesting at most CERTROT_JSON_MAX_DEPTH. */
    certrot_json msg = certrot_json_at(payload, len), jti, part, parts, data;
    int64_t pn, pt;
    if (len == 0 || certrot_json_check(payload, len, NULL) != 0 || certrot_json_type(&msg) != 'o') return res->status;
    if (!certrot_json_find(&msg, "jti", &jti) || !certrot_json_find(&msg, "part", &part) ||
        !certrot_json_find(&msg, "parts", &parts) || !certrot_json_find(&msg, "data", &data) ||
        certrot_json_type(&data) != 's' || certrot_json_type(&part) != 'n' || certrot_json_type(&parts) != 'n' ||
        !certrot_json_int(&part, &pn) || !certrot_json_int(&parts, &pt))
        return res->status;
    if (!(pt >= 1 && pt <= CERTROT_MAX_PARTS && pn >= 1 && pn <= pt)) return res->status;
    /* A jti we could not echo in an ack (1..64 bytes, no control characters, so its JSON form is at most 128
     * bytes: CERTROT_ACK_MAX) is useless: treat as not a part. The daemon's jtis are hex. */
    long jlen = certrot_json_string(&jti, (uint8_t *)part_jti, CERTROT_JTI_MAX);
    if (jlen < 1 || jlen > CERTROT_JTI_MAX) return res->status;
    for (long i = 0; i < jlen; i++)
        if ((uint8_t)part_jti[i] < 0x20 || part_jti[i] == 0x7F) return res->status;
    part_jti[jlen] = '\0';
    long dlen = certrot_json_string(&data, NULL, 0);
    if (!asm_add(ctx, part_jti, (unsigned)pn, (unsigned)pt, NULL, (size_t)dlen, &data, false, now_s, res, &bundle_len))
        return res->status;
    asm_reset(ctx);
    return process_bundle(ctx, bundle_len, false, part_jti, res);
}

bool certrot_poll(certrot_ctx *ctx, int64_t now_s, certrot_result *res)
{
    if (!ctx || !res || ctx->asm_parts == 0) return false;
    if (now_s - ctx->asm_last_part_s < (int64_t)ctx->cfg.stall_s) return false;
    if (ctx->asm_asks >= ctx->cfg.max_incomplete_asks) {
        /* Give up: a late duplicate part must not start an endless loop of requests. */
        asm_reset(ctx);
        return false;
    }
    result_init(res);
    ctx->asm_asks++;
    ctx->asm_last_part_s = now_s;
    res->status = CERTROT_WAITING;
    res->ack = CERTROT_ACK_INCOMPLETE;
    copy_str(res->jti, sizeof res->jti, ctx->asm_jti);
    fill_missing(ctx, res);
    return true;
}

/* ---- Checking and applying ------------------------------------------------------------------------- */

static certrot_status process_bundle(certrot_ctx *ctx, size_t len, bool compact, const char *part_jti,
                                     certrot_result *res)
{
    certrot_bundle b;
    certrot_status st = compact ? certrot_check_compact(ctx, ctx->jws, len, &b, res->reason, sizeof res->reason)
                                : certrot_check_bundle(ctx, ctx->jws, len, &b, res->reason, sizeof res->reason);
    /* Ack with the claims' jti when they decoded, else with the parts' jti (§5) so the daemon can match. */
    copy_str(res->jti, sizeof res->jti, b.jti[0] ? b.jti : part_jti);
    res->status = st;
    if (st == CERTROT_ALREADY_APPLIED) {
        res->reason[0] = '\0';
        res->ack = CERTROT_ACK_APPLIED;
        res->republish_inventory = true;
        return st;
    }
    if (st != CERTROT_OK) {
        res->ack = CERTROT_ACK_REJECTED;
        return st;
    }
    return certrot_apply_bundle(ctx, &b, res);
}

typedef struct {
    bool skip;   /* already holds exactly this content (write) or nothing to delete */
    bool had;    /* a previous credential was read back */
    size_t off, len;
} backup;

/* Puts back what ops[0..count) replaced, last first. Returns the first error, 0 if all went well. */
static int restore(certrot_ctx *ctx, const certrot_bundle *b, const backup *bk, size_t count)
{
    const certrot_callbacks *cb = &ctx->cfg.cb;
    int first = 0;
    for (size_t i = count; i-- > 0;) {
        if (bk[i].skip) continue;
        const certrot_op *op = &b->ops[i];
        int err = bk[i].had ? cb->key_write(cb->user, op->tag, op->type, ctx->jws + bk[i].off, bk[i].len)
                            : cb->key_delete(cb->user, op->tag, op->type);
        if (err && !first) first = err;
    }
    return first;
}

static certrot_status fail(certrot_result *res, certrot_status st, int code, const char *what, int restore_err)
{
    res->status = st;
    res->ack = CERTROT_ACK_FAILED;
    res->has_code = true;
    res->code = code;
    res->republish_inventory = false;
    certrot_reason(res->reason, sizeof res->reason, st, "%s (error %d)%s", what, code,
                   restore_err ? "; restoring the previous content FAILED too" : "; previous content kept");
    return st;
}

/* The bundle's keygen and activate ops, in order. `used`: bytes of the JWS buffer the rollback copies hold;
 * the keygen output and its CSR message go after them. */
static certrot_status identity_ops(certrot_ctx *ctx, const certrot_bundle *b, size_t used, certrot_result *res)
{
    const certrot_callbacks *cb = &ctx->cfg.cb;
    for (size_t i = 0; i < b->op_count; i++) {
        const certrot_op *op = &b->ops[i];
        int err;
        if (op->is_keygen) {
            size_t room = ctx->jws_cap - used;
            if (room < 2 * 512) return fail(res, CERTROT_KEYGEN_FAILED, -12 /* ENOMEM */, "no room for AT%KEYGEN", 0);
            size_t out_cap = room / 2 < CERTROT_KEYGEN_MAX ? room / 2 : CERTROT_KEYGEN_MAX;
            char *output = (char *)ctx->jws + used, *json = output + out_cap;
            if ((err = cb->go_offline(cb->user)) != 0) {
                cb->go_online(cb->user);
                return fail(res, CERTROT_KEYGEN_FAILED, err, "cannot set the modem offline", 0);
            }
            /* KEYGEN refuses a tag that holds a key (519): empty the standby tag first. */
            for (uint8_t type = 0; type <= 2 && !err; type++) {
                bool exists = false;
                err = cb->key_exists(cb->user, op->tag, type, &exists);
                if (!err && exists) err = cb->key_delete(cb->user, op->tag, type);
            }
            output[0] = '\0';
            if (!err) err = cb->keygen(cb->user, op->tag, op->subject, output, out_cap);
            if (!err && (output[out_cap - 1] = '\0', output[0] == '\0')) err = -22 /* EINVAL: no output */;
            cb->go_online(cb->user);
            int reconnect = cb->test_connection(cb->user, ctx->cfg.reconnect_timeout_s);
            if (err) return fail(res, CERTROT_KEYGEN_FAILED, err, "AT%KEYGEN failed", 0);
            if (reconnect) return fail(res, CERTROT_RECONNECT_FAILED, reconnect, "reconnect after AT%KEYGEN failed", 0);
            long n = certrot_build_csr(b->jti, op->tag, output, json, room - out_cap);
            if (n < 0) return fail(res, CERTROT_KEYGEN_FAILED, -12, "the CSR message does not fit", 0);
            if ((err = cb->publish_csr(cb->user, json, (size_t)n)) != 0)
                return fail(res, CERTROT_KEYGEN_FAILED, err, "cannot publish the CSR", 0);
        } else if (op->is_activate) {
            uint32_t old = (uint32_t)ctx->active_tag;
            if ((err = cb->activate(cb->user, op->tag, ctx->cfg.reconnect_timeout_s)) != 0) {
                cb->activate(cb->user, old, ctx->cfg.reconnect_timeout_s); /* back to the identity that works */
                fail(res, CERTROT_ACTIVATE_FAILED, err, "", 0);
                copy_str(res->reason, sizeof res->reason, "activate_failed");
                return CERTROT_ACTIVATE_FAILED;
            }
            ctx->active_tag = op->tag;
            if (cb->store_active) cb->store_active(cb->user, op->tag);
        }
    }
    return CERTROT_OK;
}

certrot_status certrot_apply_bundle(certrot_ctx *ctx, const certrot_bundle *b, certrot_result *res)
{
    const certrot_callbacks *cb = &ctx->cfg.cb;
    if (!b || !res || b->op_count == 0 || b->op_count > CERTROT_MAX_OPS || !cb->key_exists || !cb->key_cmp ||
        !cb->key_read || !cb->key_write || !cb->key_delete || !cb->go_offline || !cb->go_online ||
        !cb->test_connection)
        return CERTROT_ERR_ARG;
    copy_str(res->jti, sizeof res->jti, b->jti);
    backup bk[CERTROT_MAX_OPS];
    memset(bk, 0, sizeof bk);
    size_t used = 0, changes = 0;
    int err;

    /* Read back what every op replaces. The assembly buffer is free now (the pems, keys and subjects live in
     * scratch), so the rollback copies go there: with the nrf91 JWS sizes it holds three full 4 KB chains, with
     * the compact ones (CERTROT_NRF91_COSE_BUF) one. A copy that does not fit fails key_read (-ENOMEM): the
     * bundle is acked failed before anything is written. */
    /* Room for the new keys (certrot_check_bundle checked it; a caller may apply a bundle checked earlier). */
    size_t new_keys = 0;
    for (size_t i = 0; i < b->op_count; i++)
        if (b->ops[i].is_trust_key && certrot_find_key(ctx, b->ops[i].kid) < 0) new_keys++;
    if (ctx->key_count + new_keys > CERTROT_MAX_KEYS) {
        res->status = CERTROT_KEY_TABLE_FULL;
        res->ack = CERTROT_ACK_REJECTED;
        certrot_reason(res->reason, sizeof res->reason, CERTROT_KEY_TABLE_FULL, "this device keeps at most %d keys",
                       CERTROT_MAX_KEYS);
        return CERTROT_KEY_TABLE_FULL;
    }

    for (size_t i = 0; i < b->op_count; i++) {
        const certrot_op *op = &b->ops[i];
        bool exists = false;
        if (op->is_trust_key || op->is_keygen || op->is_activate) {
            bk[i].skip = true; /* not a write: trust_key once the modem part has succeeded; keygen and activate
                                * after the writes, in the standby tag (identity_ops) */
            continue;
        }
        if ((err = cb->key_exists(cb->user, op->tag, op->type, &exists)) != 0)
            return fail(res, CERTROT_MODEM_FAILED, err, "cannot list the credential store", 0);
        if (!exists) {
            bk[i].skip = !op->is_write;
            changes += !bk[i].skip;
            continue;
        }
        if (op->is_write && cb->key_cmp(cb->user, op->tag, op->type, op->pem, op->pem_len) == 0) {
            bk[i].skip = true; /* already there: nothing to write, nothing to restore */
            continue;
        }
        size_t len = ctx->jws_cap - used;
        if ((err = cb->key_read(cb->user, op->tag, op->type, ctx->jws + used, &len)) != 0)
            return fail(res, CERTROT_MODEM_FAILED, err, "cannot read back the previous credential", 0);
        bk[i].had = true;
        bk[i].off = used;
        bk[i].len = len;
        used += len;
        changes++;
    }

    if (changes) {
        if ((err = cb->go_offline(cb->user)) != 0) {
            cb->go_online(cb->user);
            return fail(res, CERTROT_MODEM_FAILED, err, "cannot set the modem offline", 0);
        }
        for (size_t i = 0; i < b->op_count; i++) {
            if (bk[i].skip) continue;
            const certrot_op *op = &b->ops[i];
            err = op->is_write ? cb->key_write(cb->user, op->tag, op->type, op->pem, op->pem_len)
                               : cb->key_delete(cb->user, op->tag, op->type);
            if (err) {
                int r = restore(ctx, b, bk, i + 1);
                cb->go_online(cb->user);
                return fail(res, CERTROT_MODEM_FAILED, err, op->is_write ? "modem write failed" : "modem delete failed", r);
            }
        }
        /* Prove the new chain: the device must never be left without a working one. */
        err = cb->go_online(cb->user);
        if (!err) err = cb->test_connection(cb->user, ctx->cfg.reconnect_timeout_s);
        if (err) {
            cb->go_offline(cb->user);
            int r = restore(ctx, b, bk, b->op_count);
            cb->go_online(cb->user);
            cb->test_connection(cb->user, ctx->cfg.reconnect_timeout_s);
            return fail(res, CERTROT_RECONNECT_FAILED, err, "reconnect with the new credentials failed", r);
        }
    }

    /* keygen and activate (docs/protocol.md §11): in the standby tag, after the writes are in and proven. The
     * old tag is never touched, so there is nothing to restore: on failure the device stays on it. */
    certrot_status id = identity_ops(ctx, b, used, res);
    if (id != CERTROT_OK) return id;

    /* trust_key: add the keys only now that every write is in and proven, and persist the table. If that
     * fails, undo the whole bundle, so the keys never outlive a rolled-back write (or vice versa). */
    size_t old_count = ctx->key_count;
    for (size_t i = 0; i < b->op_count; i++)
        if (b->ops[i].is_trust_key) add_key(ctx, b->ops[i].kid, b->ops[i].pubkey);
    if (ctx->key_count != old_count && cb->store_keys &&
        (err = cb->store_keys(cb->user, ctx->keys, ctx->key_count)) != 0) {
        ctx->key_count = old_count;
        int r = 0;
        if (changes) {
            cb->go_offline(cb->user);
            r = restore(ctx, b, bk, b->op_count);
            cb->go_online(cb->user);
            cb->test_connection(cb->user, ctx->cfg.reconnect_timeout_s);
        }
        return fail(res, CERTROT_STORE_FAILED, err, "cannot store the trusted keys", r);
    }

    /* Persist before acking (§5 step 7). If flash fails the chain still works: ack applied, keep RAM state. */
    ctx->applied_seq = b->seq;
    copy_str(ctx->applied_jti, sizeof ctx->applied_jti, b->jti);
    if (cb->store_state) cb->store_state(cb->user, b->seq, b->jti);
    res->status = CERTROT_APPLIED;
    res->ack = CERTROT_ACK_APPLIED;
    res->has_code = false;
    res->reason[0] = '\0';
    res->republish_inventory = true;
    return CERTROT_APPLIED;
}
