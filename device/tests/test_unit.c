/* Unit tests: codecs, PEM normal form, builders, reassembly, checks, and applying against the fake modem. */
#include "certrot_device.h"
#include "fake_modem.h"
#include "host_crypto.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed, case_failed;

#define CHECK(cond)                                                                                        \
    do {                                                                                                    \
        if (!(cond)) {                                                                                      \
            printf("  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                        \
            case_failed = 1;                                                                                \
        }                                                                                                   \
    } while (0)

static void run(const char *name, void (*fn)(void))
{
    case_failed = 0;
    fn();
    printf("%s %s\n", case_failed ? "FAIL" : "ok  ", name);
    if (case_failed) failed++;
    else passed++;
}

/* ---- helpers: PEMs, JSON, signed bundles ---------------------------------------------------------- */

#define DEV "nrf-352656100123456"

static host_signer *signer, *other_signer;
static char kid[44], other_kid[44];
static certrot_key pinned[1];

/* A PEM "certificate" in normal form around der_len random bytes (the device never parses X.509). */
static size_t make_pem(char *out, size_t der_len)
{
    unsigned char der[4096], b64[6000];
    RAND_bytes(der, (int)der_len);
    int n = EVP_EncodeBlock(b64, der, (int)der_len);
    size_t o = (size_t)sprintf(out, "-----BEGIN CERTIFICATE-----\n");
    for (int i = 0; i < n; i += 64) {
        int l = n - i < 64 ? n - i : 64;
        memcpy(out + o, b64 + i, (size_t)l);
        o += (size_t)l;
        out[o++] = '\n';
    }
    o += (size_t)sprintf(out + o, "-----END CERTIFICATE-----\n");
    return o;
}

static void sha_hex(const char *data, size_t len, char out[65])
{
    uint8_t d[32];
    host_sha256(NULL, (const uint8_t *)data, len, d);
    for (int i = 0; i < 32; i++) sprintf(out + 2 * i, "%02x", d[i]);
}

static void json_escape(const char *in, char *out)
{
    for (; *in; in++) {
        if (*in == '\n') { *out++ = '\\'; *out++ = 'n'; }
        else if (*in == '\r') { *out++ = '\\'; *out++ = 'r'; }
        else if (*in == '"' || *in == '\\') { *out++ = '\\'; *out++ = *in; }
        else *out++ = *in;
    }
    *out = '\0';
}

/* A write op JSON for pem (sha256 from the pem unless sha is given). */
static void write_op(char *out, long tag, const char *pem, const char *sha)
{
    static char esc[20000];
    char h[65];
    json_escape(pem, esc);
    sha_hex(pem, strlen(pem), h);
    sprintf(out, "{\"op\":\"write\",\"tag\":%ld,\"type\":0,\"pem\":\"%s\",\"sha256\":\"%s\"}", tag, esc, sha ? sha : h);
}

/* Signs header + claims into a JWS. */
static size_t sign_raw(const host_signer *s, const char *header, const char *claims, char *out)
{
    size_t o = (size_t)certrot_b64url_encode((const uint8_t *)header, strlen(header), out, 100000);
    out[o++] = '.';
    o += (size_t)certrot_b64url_encode((const uint8_t *)claims, strlen(claims), out + o, 100000);
    uint8_t sig[64];
    host_signer_sign(s, (const uint8_t *)out, o, sig);
    out[o++] = '.';
    o += (size_t)certrot_b64url_encode(sig, 64, out + o, 200);
    return o;
}

static char ops_buf[30000], claims_buf[40000];

static size_t make_jws(char *out, const char *sub, const char *jti, long seq, long iat, long exp, const char *ops)
{
    char header[200];
    sprintf(header, "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"certrot-bundle+jwt\"}", kid);
    sprintf(claims_buf, "{\"exp\":%ld,\"iat\":%ld,\"iss\":\"certrot\",\"jti\":\"%s\",\"ops\":[%s],\"seq\":%ld,\"sub\":\"%s\"}",
            exp, iat, jti, ops, seq, sub);
    return sign_raw(signer, header, claims_buf, out);
}

/* ---- a device on the fake modem ------------------------------------------------------------------- */

typedef struct {
    fake_modem fm;
    certrot_ctx ctx;
    uint8_t jws[CERTROT_NRF91_JWS_BUF];
    uint8_t scratch[CERTROT_SCRATCH_FOR(CERTROT_NRF91_JWS_BUF)];
} device;

static char old_pem[6000], new_pem[6000];
static char old_sha[65], new_sha[65];

static device *device_new(void)
{
    device *d = calloc(1, sizeof *d);
    fake_modem_init(&d->fm);
    fake_modem_provision(&d->fm, 42, 0, old_pem, strlen(old_pem));
    certrot_config cfg = {.device_id = DEV, .keys = pinned, .key_count = 1};
    cfg.cb.sha256 = host_sha256;
    cfg.cb.es256_verify = host_es256_verify;
    cfg.cb.pubkey_check = host_pubkey_check;
    fake_modem_callbacks(&cfg.cb, &d->fm);
    certrot_status st = certrot_init(&d->ctx, &cfg, d->jws, sizeof d->jws, d->scratch, sizeof d->scratch);
    CHECK(st == CERTROT_OK);
    return d;
}

/* Feeds a whole JWS as one part. */
static certrot_status feed(device *d, const char *jws, const char *jti, certrot_result *res)
{
    static char msg[61000];
    int n = sprintf(msg, "{\"jti\":\"%s\",\"part\":1,\"parts\":1,\"data\":\"%s\"}", jti, jws);
    return certrot_on_part(&d->ctx, (const uint8_t *)msg, (size_t)n, 0, res);
}

static char jws[60000];
#define JTI1 "9f2c4e61b0a84d7fa3c5e2d1b6f80a47"
#define JTI2 "0123456789abcdef0123456789abcdef"

/* ---- tests ---------------------------------------------------------------------------------------- */

static void test_b64url(void)
{
    uint8_t in[16], out[32];
    char text[40];
    for (size_t len = 0; len <= 16; len++) {
        RAND_bytes(in, (int)len);
        long n = certrot_b64url_encode(in, len, text, sizeof text);
        CHECK(n >= 0 && strchr(text, '=') == NULL);
        CHECK(certrot_b64url_decode(text, (size_t)n, out, sizeof out) == (long)len);
        CHECK(memcmp(in, out, len) == 0);
    }
    CHECK(certrot_b64url_decode("QQ", 2, out, 32) == 1 && out[0] == 'A');
    CHECK(certrot_b64url_decode("QR", 2, out, 32) == -1);      /* non-zero unused bits */
    CHECK(certrot_b64url_decode("QUI", 3, out, 32) == 2);
    CHECK(certrot_b64url_decode("QUJ", 3, out, 32) == -1);
    CHECK(certrot_b64url_decode("QQ==", 4, out, 32) == -1);    /* padding */
    CHECK(certrot_b64url_decode("a+b/", 4, out, 32) == -1);    /* standard alphabet */
    CHECK(certrot_b64url_decode("ab c", 4, out, 32) == -1);    /* whitespace */
    CHECK(certrot_b64url_decode("abcde", 5, out, 32) == -1);   /* 1 mod 4 */
    CHECK(certrot_b64url_decode("-_-_", 4, out, 32) == 3 && out[0] == 0xfb && out[1] == 0xff && out[2] == 0xbf);
    CHECK(certrot_b64url_decode("QUJD", 4, out, 2) == -1);     /* output too small */
    char inplace[] = "aGVsbG8gd29ybGQ";
    CHECK(certrot_b64url_decode(inplace, strlen(inplace), (uint8_t *)inplace, sizeof inplace) == 11);
    CHECK(memcmp(inplace, "hello world", 11) == 0);
}

static void test_pem(void)
{
    static char p[12000], q[12000];
    size_t n = make_pem(p, 509);
    CHECK(certrot_pem_is_normal((uint8_t *)p, n));
    size_t n2 = n + make_pem(p + n, 700); /* two blocks */
    CHECK(certrot_pem_is_normal((uint8_t *)p, n2));
    for (size_t der = 1; der <= 5; der++) { /* every padding case, short bodies */
        size_t m = make_pem(q, der);
        CHECK(certrot_pem_is_normal((uint8_t *)q, m));
    }
    CHECK(make_pem(q, 48) && certrot_pem_is_normal((uint8_t *)q, strlen(q))); /* body of exactly 64 chars */
    CHECK(!certrot_pem_is_normal((uint8_t *)p, n - 1));                       /* no final \n */
    CHECK(!certrot_pem_is_normal((uint8_t *)"", 0));
    /* CRLF */
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') q[o++] = '\r';
        q[o++] = p[i];
    }
    CHECK(!certrot_pem_is_normal((uint8_t *)q, o));
    /* leading space on a body line */
    memcpy(q, p, n);
    memmove(q + 29, q + 28, n - 28);
    q[28] = ' ';
    CHECK(!certrot_pem_is_normal((uint8_t *)q, n + 1));
    /* trailing space after BEGIN */
    memcpy(q, p, n);
    memmove(q + 28, q + 27, n - 27);
    q[27] = ' ';
    CHECK(!certrot_pem_is_normal((uint8_t *)q, n + 1));
    /* text before */
    sprintf(q, "subject=CN=x\n%.*s", (int)n, p);
    CHECK(!certrot_pem_is_normal((uint8_t *)q, strlen(q)));
    /* text between blocks */
    memcpy(q, p, n);
    memcpy(q + n, "\n", 1);
    memcpy(q + n + 1, p + n, n2 - n);
    CHECK(!certrot_pem_is_normal((uint8_t *)q, n2 + 1));
    /* other label */
    sprintf(q, "-----BEGIN PUBLIC KEY-----\nQUJD\n-----END PUBLIC KEY-----\n");
    CHECK(!certrot_pem_is_normal((uint8_t *)q, strlen(q)));
    /* lines of 63 then 64 (re-encoding would fold differently) */
    sprintf(q, "-----BEGIN CERTIFICATE-----\n%.63s\n%.64s\n-----END CERTIFICATE-----\n", p + 28, p + 28 + 64);
    CHECK(!certrot_pem_is_normal((uint8_t *)q, strlen(q)));
    /* non-canonical padding bits, empty body, blank line */
    CHECK(!certrot_pem_is_normal((uint8_t *)"-----BEGIN CERTIFICATE-----\nQR==\n-----END CERTIFICATE-----\n", 59));
    CHECK(certrot_pem_is_normal((uint8_t *)"-----BEGIN CERTIFICATE-----\nQQ==\n-----END CERTIFICATE-----\n", 59));
    CHECK(!certrot_pem_is_normal((uint8_t *)"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", 54));
    CHECK(!certrot_pem_is_normal((uint8_t *)"-----BEGIN CERTIFICATE-----\n\nQQ==\n-----END CERTIFICATE-----\n", 60));
    CHECK(!certrot_pem_is_normal((uint8_t *)"-----BEGIN CERTIFICATE-----\nQQ=\n-----END CERTIFICATE-----\n", 58));
    CHECK(!certrot_pem_is_normal((uint8_t *)"-----BEGIN CERTIFICATE-----\nQ=Q=\n-----END CERTIFICATE-----\n", 59));
    CHECK(!certrot_pem_is_normal((uint8_t *)"-----BEGIN CERTIFICATE-----\nQQ==\n-----END CERTIFICATE-----\n\n", 60));
}

static void test_builders(void)
{
    char out[600];
    certrot_result r;
    memset(&r, 0, sizeof r);
    strcpy(r.jti, JTI1);
    r.ack = CERTROT_ACK_APPLIED;
    CHECK(certrot_build_ack(&r, out, sizeof out) > 0);
    CHECK(strcmp(out, "{\"jti\":\"" JTI1 "\",\"status\":\"applied\"}") == 0);
    r.ack = CERTROT_ACK_REJECTED;
    strcpy(r.reason, "bad_signature: the ES256 signature does not verify");
    certrot_build_ack(&r, out, sizeof out);
    CHECK(strcmp(out, "{\"jti\":\"" JTI1 "\",\"status\":\"rejected\",\"reason\":\"bad_signature: the ES256 signature does not verify\"}") == 0);
    r.ack = CERTROT_ACK_FAILED;
    r.has_code = true;
    r.code = 518;
    strcpy(r.reason, "write \"while\" online\n");
    certrot_build_ack(&r, out, sizeof out);
    CHECK(strcmp(out, "{\"jti\":\"" JTI1 "\",\"status\":\"failed\",\"code\":518,\"reason\":\"write \\\"while\\\" online\\u000a\"}") == 0);
    memset(&r, 0, sizeof r);
    strcpy(r.jti, JTI1);
    r.ack = CERTROT_ACK_INCOMPLETE;
    CHECK(certrot_build_ack(&r, out, sizeof out) == -1); /* no missing list */
    r.missing_count = 2;
    r.missing[0] = 2;
    r.missing[1] = 5;
    certrot_build_ack(&r, out, sizeof out);
    CHECK(strcmp(out, "{\"jti\":\"" JTI1 "\",\"status\":\"incomplete\",\"missing\":[2,5]}") == 0);
    CHECK(certrot_build_ack(&r, out, 20) == -1);

    certrot_cred c[2];
    CHECK(certrot_parse_cmng_line("%CMNG: 42,0,\"3C5E0F6E1B0F5E5D0B4A9C2F0E7D8A6B5C4D3E2F1A0B9C8D7E6F5A4B3C2D1E0F\"\r", &c[0]) == 0);
    CHECK(c[0].tag == 42 && c[0].type == 0 && strcmp(c[0].sha256, "3c5e0f6e1b0f5e5d0b4a9c2f0e7d8a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f") == 0);
    c[0].has_not_after = true;
    c[0].not_after = 1767225599;
    CHECK(certrot_parse_cmng_line("%CMNG: 16842753,0,\"8AD0A3C5F1E2D4B6A7C8E9F0A1B2C3D4E5F6A7B8C9D0E1F2A3B4C5D6E7F8A9B0\"", &c[1]) == 0);
    CHECK(certrot_parse_cmng_line("%CMNG: 42,7,\"8AD0\"", &c[1]) == -1 ? 1 : 0);
    certrot_parse_cmng_line("%CMNG: 16842753,0,\"8AD0A3C5F1E2D4B6A7C8E9F0A1B2C3D4E5F6A7B8C9D0E1F2A3B4C5D6E7F8A9B0\"", &c[1]);
    CHECK(certrot_parse_cmng_line("OK", &c[1]) == -1);
    certrot_parse_cmng_line("%CMNG: 16842753,0,\"8AD0A3C5F1E2D4B6A7C8E9F0A1B2C3D4E5F6A7B8C9D0E1F2A3B4C5D6E7F8A9B0\"", &c[1]);
    long n = certrot_build_inventory(2, 2048, c, 2, out, sizeof out);
    CHECK(n > 0);
    CHECK(strcmp(out, "{\"v\":1,\"seq\":2,\"maxMessage\":2048,\"creds\":["
                      "{\"tag\":42,\"type\":0,\"sha256\":\"3c5e0f6e1b0f5e5d0b4a9c2f0e7d8a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f\",\"notAfter\":1767225599},"
                      "{\"tag\":16842753,\"type\":0,\"sha256\":\"8ad0a3c5f1e2d4b6a7c8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0\"}]}") == 0);
    c[1].tag = 42; /* duplicate (tag, type) */
    CHECK(certrot_build_inventory(2, 2048, c, 2, out, sizeof out) == -1);
    CHECK(certrot_build_inventory(0, 0, NULL, 0, out, sizeof out) > 0 && strcmp(out, "{\"v\":1,\"seq\":0,\"creds\":[]}") == 0);
}

static void test_fake_modem_rules(void)
{
    static fake_modem fm;
    certrot_callbacks cb = {0};
    fake_modem_init(&fm);
    fake_modem_callbacks(&cb, &fm);
    CHECK(cb.key_write(&fm, 42, 0, new_pem, strlen(new_pem)) == -EPERM && fm.last_cme == 518);
    CHECK(cb.key_delete(&fm, 42, 0) == -EPERM);
    cb.go_offline(&fm);
    static char bad[12000];
    size_t o = 0;
    for (const char *p = new_pem; *p; p++) {
        if (*p == '\n') bad[o++] = '\r';
        bad[o++] = *p;
    }
    CHECK(cb.key_write(&fm, 42, 0, bad, o) == -EINVAL && fm.last_cme == 527);
    sprintf(bad, " %s", new_pem);
    CHECK(cb.key_write(&fm, 42, 0, bad, strlen(bad)) == -EINVAL);
    make_pem(bad, 3100); /* ~4.3 KB */
    CHECK(strlen(bad) > 4096 && cb.key_write(&fm, 42, 0, bad, strlen(bad)) == -ENOMEM);
    CHECK(cb.key_write(&fm, 42, 0, new_pem, strlen(new_pem)) == 0);
    cb.go_online(&fm);
    char list[400];
    CHECK(fake_modem_cmng_list(&fm, list, sizeof list) > 0);
    char upper[65];
    for (int i = 0; i < 65; i++) upper[i] = (char)(new_sha[i] >= 'a' ? new_sha[i] - 32 : new_sha[i]);
    char expect[120];
    sprintf(expect, "%%CMNG: 42,0,\"%s\"\r\n", upper);
    CHECK(strcmp(list, expect) == 0);
}

/* Splits jws into `parts` slices and returns the part messages. */
static int split(const char *j, const char *jti, int parts, char msgs[][4000])
{
    size_t len = strlen(j), slice = (len + (size_t)parts - 1) / (size_t)parts;
    for (int i = 0; i < parts; i++) {
        size_t off = (size_t)i * slice, l = off >= len ? 0 : (len - off < slice ? len - off : slice);
        sprintf(msgs[i], "{\"jti\":\"%s\",\"part\":%d,\"parts\":%d,\"data\":\"%.*s\"}", jti, i + 1, parts, (int)l, j + off);
    }
    return parts;
}

static certrot_status send(device *d, const char *m, int64_t now, certrot_result *r)
{
    return certrot_on_part(&d->ctx, (const uint8_t *)m, strlen(m), now, r);
}

static char msgs[64][4000];

static void test_reassembly(void)
{
    certrot_result r;
    write_op(ops_buf, 42, new_pem, NULL);
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, ops_buf);

    /* out of order with duplicates */
    device *d = device_new();
    split(jws, JTI1, 5, msgs);
    int order[] = {3, 1, 3, 5, 2, 1, 4};
    for (int i = 0; i < 7; i++) {
        certrot_status st = send(d, msgs[order[i] - 1], i, &r);
        if (i < 6) CHECK(st == CERTROT_WAITING && r.ack == CERTROT_ACK_NONE);
        else CHECK(st == CERTROT_APPLIED && r.ack == CERTROT_ACK_APPLIED && strcmp(r.jti, JTI1) == 0);
    }
    CHECK(fake_modem_get(&d->fm, 42, 0)->len == strlen(new_pem));
    free(d);

    /* missing part: poll asks for it after the stall time, then gives up after 3 asks */
    d = device_new();
    split(jws, JTI1, 4, msgs);
    send(d, msgs[0], 100, &r);
    send(d, msgs[2], 101, &r);
    CHECK(!certrot_poll(&d->ctx, 110, &r));
    CHECK(certrot_poll(&d->ctx, 131, &r) && r.ack == CERTROT_ACK_INCOMPLETE && r.missing_count == 2 &&
          r.missing[0] == 2 && r.missing[1] == 4 && strcmp(r.jti, JTI1) == 0);
    char ack[200];
    certrot_build_ack(&r, ack, sizeof ack);
    CHECK(strcmp(ack, "{\"jti\":\"" JTI1 "\",\"status\":\"incomplete\",\"missing\":[2,4]}") == 0);
    CHECK(certrot_poll(&d->ctx, 161, &r));
    CHECK(certrot_poll(&d->ctx, 191, &r));
    CHECK(!certrot_poll(&d->ctx, 221, &r)); /* gave up */
    CHECK(!certrot_poll(&d->ctx, 999, &r));
    free(d);

    /* parts of another jti start over */
    d = device_new();
    split(jws, JTI1, 3, msgs);
    send(d, msgs[0], 0, &r);
    send(d, msgs[1], 0, &r);
    static char other[3][4000];
    char jws2[8000];
    make_jws(jws2, DEV, JTI2, 2, 0, 0x7fffffff, ops_buf);
    split(jws2, JTI2, 3, other);
    CHECK(send(d, other[0], 0, &r) == CERTROT_WAITING);
    CHECK(send(d, msgs[2], 0, &r) == CERTROT_WAITING);     /* JTI1 again: starts over, needs all */
    CHECK(send(d, msgs[0], 0, &r) == CERTROT_WAITING);
    CHECK(send(d, msgs[1], 0, &r) == CERTROT_APPLIED && strcmp(r.jti, JTI1) == 0);
    free(d);

    /* invalid parts are ignored without an ack */
    d = device_new();
    const char *bad[] = {"", "null", "{}", "[1]", "{\"jti\":\"a\",\"part\":0,\"parts\":1,\"data\":\"x\"}",
                         "{\"jti\":\"a\",\"part\":2,\"parts\":1,\"data\":\"x\"}", "{\"jti\":\"a\",\"part\":1,\"parts\":65,\"data\":\"x\"}",
                         "{\"jti\":\"a\",\"part\":1.5,\"parts\":2,\"data\":\"x\"}", "{\"jti\":1,\"part\":1,\"parts\":1,\"data\":\"x\"}",
                         "{\"jti\":\"a\",\"part\":1,\"parts\":1}", "{\"jti\":\"\",\"part\":1,\"parts\":1,\"data\":\"x\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(send(d, bad[i], 0, &r) == CERTROT_IGNORED && r.ack == CERTROT_ACK_NONE);
    free(d);

    /* a bundle over the buffer is rejected, not truncated */
    d = device_new();
    static char big[20000];
    memset(big, 'A', 3000);
    big[3000] = 0;
    for (int i = 1; i <= 5; i++) {
        sprintf(msgs[i - 1], "{\"jti\":\"%s\",\"part\":%d,\"parts\":5,\"data\":\"%s\"}", JTI2, i, big);
        certrot_status st = send(d, msgs[i - 1], 0, &r);
        if (i < 5) CHECK(st == CERTROT_WAITING);
        else CHECK(st == CERTROT_TOO_LARGE && r.ack == CERTROT_ACK_REJECTED && strcmp(r.jti, JTI2) == 0 &&
                   strstr(r.reason, "does not fit") != NULL);
    }
    CHECK(d->fm.writes == 0 && !certrot_poll(&d->ctx, 1000, &r)); /* assembly discarded */
    /* the rest of the rejected bundle (a 6th part, re-sent parts) is dropped silently: no new assembly,
     * no second rejected ack */
    for (int i = 0; i < 5; i++) CHECK(send(d, msgs[i], 1, &r) == CERTROT_IGNORED && r.ack == CERTROT_ACK_NONE);
    CHECK(!certrot_poll(&d->ctx, 2000, &r));
    /* another bundle is still assembled */
    split(jws, JTI1, 2, msgs);
    CHECK(send(d, msgs[0], 2, &r) == CERTROT_WAITING);
    CHECK(send(d, msgs[1], 2, &r) == CERTROT_APPLIED);
    free(d);

    /* 6 parts, rejected at the 5th: the 6th does not start a new assembly and reject again */
    d = device_new();
    int acks = 0;
    for (int i = 1; i <= 6; i++) {
        sprintf(msgs[0], "{\"jti\":\"%s\",\"part\":%d,\"parts\":6,\"data\":\"%.3000s\"}", JTI2, i, big);
        send(d, msgs[0], 0, &r);
        acks += r.ack != CERTROT_ACK_NONE;
        if (i == 6) CHECK(r.status == CERTROT_IGNORED);
    }
    CHECK(acks == 1 && !certrot_poll(&d->ctx, 1000, &r));
    free(d);

    /* 64 parts, reverse order */
    d = device_new();
    split(jws, JTI1, 64, msgs);
    for (int i = 63; i >= 0; i--) send(d, msgs[i], 0, &r);
    CHECK(r.status == CERTROT_APPLIED);
    free(d);
}

static void test_apply_and_rotate(void)
{
    certrot_result r;
    device *d = device_new();
    write_op(ops_buf, 42, new_pem, NULL);
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, ops_buf);
    CHECK(feed(d, jws, JTI1, &r) == CERTROT_APPLIED && r.republish_inventory);
    const fake_slot *s = fake_modem_get(&d->fm, 42, 0);
    CHECK(s && s->len == strlen(new_pem) && memcmp(s->data, new_pem, s->len) == 0);
    CHECK(d->fm.offline_calls == 1 && d->fm.online_calls == 1 && d->fm.conn_tests == 1 && d->fm.online);
    CHECK(d->fm.refused == 0 && d->fm.flash_seq == 1 && strcmp(d->fm.flash_jti, JTI1) == 0);
    char inv[600], expect[600];
    CHECK(fake_modem_inventory(&d->fm, &d->ctx, 2048, inv, sizeof inv) > 0);
    sprintf(expect, "{\"v\":1,\"seq\":1,\"maxMessage\":2048,\"creds\":[{\"tag\":42,\"type\":0,\"sha256\":\"%s\"}],\"keys\":[\"%s\"]}",
            new_sha, kid);
    CHECK(strcmp(inv, expect) == 0);

    /* re-sent after a server restart: applied again, nothing written */
    int writes = d->fm.writes;
    CHECK(feed(d, jws, JTI1, &r) == CERTROT_ALREADY_APPLIED && r.ack == CERTROT_ACK_APPLIED && r.republish_inventory);
    CHECK(d->fm.writes == writes && d->fm.offline_calls == 1);

    /* the state survives a reboot: a new context loads seq and jti */
    certrot_config cfg = d->ctx.cfg;
    CHECK(certrot_init(&d->ctx, &cfg, d->jws, sizeof d->jws, d->scratch, sizeof d->scratch) == CERTROT_OK);
    CHECK(certrot_applied_seq(&d->ctx) == 1);
    CHECK(feed(d, jws, JTI1, &r) == CERTROT_ALREADY_APPLIED);

    /* same seq, new jti: stale */
    make_jws(jws, DEV, JTI2, 1, 0, 0x7fffffff, ops_buf);
    CHECK(feed(d, jws, JTI2, &r) == CERTROT_INVALID_BUNDLE && r.ack == CERTROT_ACK_REJECTED && strstr(r.reason, "seq 1") != NULL);

    /* a bundle whose content is already there: applied without going offline */
    make_jws(jws, DEV, JTI2, 2, 0, 0x7fffffff, ops_buf);
    CHECK(feed(d, jws, JTI2, &r) == CERTROT_APPLIED && d->fm.offline_calls == 1 && d->fm.flash_seq == 2);

    /* delete op */
    char ops[200];
    sprintf(ops, "{\"op\":\"delete\",\"tag\":42,\"type\":0}");
    make_jws(jws, DEV, "d1", 3, 0, 0x7fffffff, ops);
    CHECK(feed(d, jws, "d1", &r) == CERTROT_APPLIED && fake_modem_get(&d->fm, 42, 0) == NULL);
    free(d);
}

static void test_rollback(void)
{
    certrot_result r;
    /* The broker still uses the old CA: the reconnect with the new chain fails; the old one comes back. */
    device *d = device_new();
    d->fm.require_digest = true;
    d->fm.broker_tag = 42;
    strcpy(d->fm.broker_sha, old_sha);
    write_op(ops_buf, 42, new_pem, NULL);
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, ops_buf);
    CHECK(feed(d, jws, JTI1, &r) == CERTROT_RECONNECT_FAILED && r.ack == CERTROT_ACK_FAILED && r.has_code);
    CHECK(r.code == -ECONNREFUSED && strstr(r.reason, "reconnect") != NULL && !r.republish_inventory);
    const fake_slot *s = fake_modem_get(&d->fm, 42, 0);
    CHECK(s && s->len == strlen(old_pem) && memcmp(s->data, old_pem, s->len) == 0);
    CHECK(d->fm.online && d->fm.refused == 0 && d->fm.writes == 2 && d->fm.conn_tests == 2);
    CHECK(certrot_applied_seq(&d->ctx) == 0 && d->fm.flash_seq == 0);
    char ack[400];
    CHECK(certrot_build_ack(&r, ack, sizeof ack) > 0 && strstr(ack, "\"status\":\"failed\",\"code\":-111") != NULL);

    /* the retry (new jti, new seq) once the broker moved to the new CA */
    strcpy(d->fm.broker_sha, new_sha);
    make_jws(jws, DEV, JTI2, 2, 0, 0x7fffffff, ops_buf);
    CHECK(feed(d, jws, JTI2, &r) == CERTROT_APPLIED && d->fm.flash_seq == 2);
    free(d);

    /* A write error: the modem's code in the ack, the previous chain still there. */
    d = device_new();
    d->fm.fail_write_code = -ENOMEM;
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, ops_buf);
    CHECK(feed(d, jws, JTI1, &r) == CERTROT_MODEM_FAILED && r.ack == CERTROT_ACK_FAILED && r.code == -ENOMEM);
    s = fake_modem_get(&d->fm, 42, 0);
    CHECK(s && s->len == strlen(old_pem) && memcmp(s->data, old_pem, s->len) == 0 && d->fm.online);
    free(d);

    /* Two ops, the second write fails: the first is rolled back, and a tag that was empty is emptied. */
    d = device_new();
    char op2[20000];
    write_op(ops_buf, 42, new_pem, NULL);
    write_op(op2, 43, new_pem, NULL);
    strcat(ops_buf, ",");
    strcat(ops_buf, op2);
    d->fm.require_digest = true;
    d->fm.broker_tag = 42;
    strcpy(d->fm.broker_sha, old_sha);
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, ops_buf);
    CHECK(feed(d, jws, JTI1, &r) == CERTROT_RECONNECT_FAILED);
    s = fake_modem_get(&d->fm, 42, 0);
    CHECK(s && s->len == strlen(old_pem) && fake_modem_get(&d->fm, 43, 0) == NULL);
    free(d);
}

/* Each bad bundle is rejected with the expected code, and nothing touches the modem. */
static void expect_reject(const char *j, certrot_status want, const char *reason_part, bool time_known, int64_t now)
{
    certrot_result r;
    device *d = device_new();
    d->fm.time_known = time_known;
    d->fm.now = now;
    certrot_status st = feed(d, j, JTI1, &r);
    CHECK(st == want && r.ack == CERTROT_ACK_REJECTED);
    if (st != want || (reason_part && !strstr(r.reason, reason_part)))
        printf("    got %s (%s), want %s\n", certrot_status_name(st), r.reason, certrot_status_name(want));
    CHECK(d->fm.writes == 0 && d->fm.offline_calls == 0 && strlen(r.jti) > 0);
    free(d);
}

static void test_checks(void)
{
    char header[200], op[20000];
    write_op(ops_buf, 42, new_pem, NULL);
    make_jws(jws, "nrf-other", JTI1, 1, 0, 0x7fffffff, ops_buf);
    expect_reject(jws, CERTROT_INVALID_BUNDLE, "not " DEV, false, 0);

    /* unknown kid and bad signature */
    sprintf(header, "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"certrot-bundle+jwt\"}", other_kid);
    sprintf(claims_buf, "{\"exp\":2000000000,\"iat\":1,\"iss\":\"certrot\",\"jti\":\"%s\",\"ops\":[%s],\"seq\":1,\"sub\":\"%s\"}", JTI1, ops_buf, DEV);
    sign_raw(other_signer, header, claims_buf, jws);
    expect_reject(jws, CERTROT_UNKNOWN_KID, other_kid, false, 0);
    sprintf(header, "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"certrot-bundle+jwt\"}", kid);
    sign_raw(other_signer, header, claims_buf, jws);
    expect_reject(jws, CERTROT_BAD_SIGNATURE, NULL, false, 0);
    /* a wrong-length signature is bad_signature too (valid base64url) */
    size_t n = sign_raw(signer, header, claims_buf, jws);
    jws[n - 2] = '\0'; /* 84 characters: 63 bytes */
    expect_reject(jws, CERTROT_BAD_SIGNATURE, NULL, false, 0);

    /* header rules */
    sprintf(header, "{\"alg\":\"HS256\",\"kid\":\"%s\",\"typ\":\"certrot-bundle+jwt\"}", kid);
    sign_raw(signer, header, claims_buf, jws);
    expect_reject(jws, CERTROT_INVALID_BUNDLE, "alg", false, 0);
    sprintf(header, "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"JWT\"}", kid);
    sign_raw(signer, header, claims_buf, jws);
    expect_reject(jws, CERTROT_INVALID_BUNDLE, "typ", false, 0);
    /* missing claim */
    sprintf(header, "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"certrot-bundle+jwt\"}", kid);
    sprintf(claims_buf, "{\"exp\":2000000000,\"iss\":\"certrot\",\"jti\":\"%s\",\"ops\":[%s],\"seq\":1,\"sub\":\"%s\"}", JTI1, ops_buf, DEV);
    sign_raw(signer, header, claims_buf, jws);
    expect_reject(jws, CERTROT_INVALID_BUNDLE, "lacks a claim", false, 0);
    /* trailing garbage after the claims object */
    sprintf(claims_buf, "{\"exp\":2000000000,\"iat\":1,\"iss\":\"certrot\",\"jti\":\"%s\",\"ops\":[%s],\"seq\":1,\"sub\":\"%s\"}x", JTI1, ops_buf, DEV);
    sign_raw(signer, header, claims_buf, jws);
    expect_reject(jws, CERTROT_INVALID_BUNDLE, NULL, false, 0);
    /* structure */
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, ops_buf);
    static char j2[60010];
    sprintf(j2, "%s.x", jws);
    expect_reject(j2, CERTROT_INVALID_BUNDLE, "3 parts", false, 0);
    strcpy(j2, jws);
    *strchr(j2, '.') = '=';
    expect_reject(j2, CERTROT_INVALID_BUNDLE, NULL, false, 0);

    /* time: expired / future only when the time is known */
    make_jws(jws, DEV, JTI1, 1, 1000, 2000, ops_buf);
    expect_reject(jws, CERTROT_INVALID_BUNDLE, "expired", true, 2000);
    {
        certrot_result r;
        device *d = device_new();
        CHECK(feed(d, jws, JTI1, &r) == CERTROT_APPLIED); /* time unknown: accepted */
        free(d);
    }
    make_jws(jws, DEV, JTI1, 1, 1301, 5000, ops_buf);
    expect_reject(jws, CERTROT_INVALID_BUNDLE, "future", true, 1000);
    {
        certrot_result r;
        device *d = device_new();
        d->fm.time_known = true;
        d->fm.now = 1001; /* iat = now + 300: allowed */
        CHECK(feed(d, jws, JTI1, &r) == CERTROT_APPLIED);
        free(d);
    }

    /* ops */
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, "");
    expect_reject(jws, CERTROT_INVALID_BUNDLE, "no ops", false, 0);
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, "{\"op\":\"write\",\"tag\":42,\"type\":7,\"pem\":\"x\",\"sha256\":\"y\"}");
    expect_reject(jws, CERTROT_INVALID_BUNDLE, "out of range", false, 0);
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, "{\"op\":\"write\",\"tag\":2147483648,\"type\":0,\"pem\":\"x\",\"sha256\":\"y\"}");
    expect_reject(jws, CERTROT_INVALID_BUNDLE, "out of range", false, 0);
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, "{\"op\":\"rename\",\"tag\":42,\"type\":0}");
    expect_reject(jws, CERTROT_INVALID_BUNDLE, "schema", false, 0);
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, "{\"op\":\"write\",\"tag\":42,\"type\":0}");
    expect_reject(jws, CERTROT_INVALID_BUNDLE, "lacks pem", false, 0);
    static char crlf[12000];
    size_t o = 0;
    for (const char *p = new_pem; *p; p++) {
        if (*p == '\n') crlf[o++] = '\r';
        crlf[o++] = *p;
    }
    crlf[o] = 0;
    write_op(op, 42, crlf, NULL);
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, op);
    expect_reject(jws, CERTROT_INVALID_PEM, "PEM rules", false, 0);
    static char big[12000];
    make_pem(big, 3100);
    write_op(op, 42, big, NULL);
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, op);
    expect_reject(jws, CERTROT_CREDENTIAL_TOO_LARGE, "4096", false, 0);
    write_op(op, 42, new_pem, old_sha);
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, op);
    expect_reject(jws, CERTROT_INVALID_BUNDLE, "does not match", false, 0);
    char upper[65];
    for (int i = 0; i < 65; i++) upper[i] = (char)(new_sha[i] >= 'a' ? new_sha[i] - 32 : new_sha[i]);
    write_op(op, 42, new_pem, upper);
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, op);
    expect_reject(jws, CERTROT_INVALID_BUNDLE, "does not match", false, 0);
    /* the first bad op stops everything, even after a good one */
    write_op(ops_buf, 42, new_pem, NULL);
    strcat(ops_buf, ",");
    write_op(op, 43, crlf, NULL);
    strcat(ops_buf, op);
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, ops_buf);
    expect_reject(jws, CERTROT_INVALID_PEM, "tag 43", false, 0);

    /* a tampered signing input: one character of the claims changed */
    write_op(ops_buf, 42, new_pem, NULL);
    n = make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, ops_buf);
    static char copy[60000];
    strcpy(copy, jws);
    CHECK(host_tamper(copy, 1, "CERTIFICATE-----\\n") == 0);
    expect_reject(copy, CERTROT_BAD_SIGNATURE, NULL, false, 0);
    strcpy(copy, jws);
    CHECK(host_tamper(copy, 0, "\"kid\":\"") == 0);
    expect_reject(copy, CERTROT_UNKNOWN_KID, NULL, false, 0);
    strcpy(copy, jws);
    CHECK(host_tamper(copy, 2, NULL) == 0);
    expect_reject(copy, CERTROT_BAD_SIGNATURE, NULL, false, 0);
    (void)n;
}

/* ---- trust_key ------------------------------------------------------------------------------------ */

/* A JWS signed by s under kid k (make_jws uses the pinned signer). */
static size_t make_jws_by(const host_signer *s, const char *k, char *out, const char *jti, long seq, const char *ops)
{
    char header[200];
    sprintf(header, "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"certrot-bundle+jwt\"}", k);
    sprintf(claims_buf, "{\"exp\":2147483647,\"iat\":0,\"iss\":\"certrot\",\"jti\":\"%s\",\"ops\":[%s],\"seq\":%ld,\"sub\":\"%s\"}",
            jti, ops, seq, DEV);
    return sign_raw(s, header, claims_buf, out);
}

/* The RFC 7638 thumbprint, computed here independently of the library. */
static void thumbprint(const uint8_t pub[65], char out[44])
{
    char x[44], y[44], j[200];
    uint8_t d[32];
    certrot_b64url_encode(pub + 1, 32, x, sizeof x);
    certrot_b64url_encode(pub + 33, 32, y, sizeof y);
    int n = sprintf(j, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
    host_sha256(NULL, (const uint8_t *)j, (size_t)n, d);
    certrot_b64url_encode(d, 32, out, 44);
}

/* {"op":"trust_key",...} for the key of s; member order as the daemon sends it (sorted). */
static void trust_op(char *out, const host_signer *s)
{
    uint8_t pub[65];
    char x[44], y[44], k[44];
    host_signer_pubkey(s, pub);
    certrot_b64url_encode(pub + 1, 32, x, sizeof x);
    certrot_b64url_encode(pub + 33, 32, y, sizeof y);
    thumbprint(pub, k);
    sprintf(out, "{\"jwk\":{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"},\"kid\":\"%s\",\"op\":\"trust_key\"}",
            x, y, k);
}

static certrot_status feed_by(device *d, const host_signer *s, const char *k, const char *jti, long seq, const char *ops,
                              certrot_result *r)
{
    make_jws_by(s, k, jws, jti, seq, ops);
    return feed(d, jws, jti, r);
}

static bool inventory_has_keys(device *d, const char *keys_json)
{
    char inv[1000], want[400];
    if (fake_modem_inventory(&d->fm, &d->ctx, 2048, inv, sizeof inv) < 0) return false;
    sprintf(want, ",\"keys\":[%s]}", keys_json);
    size_t n = strlen(inv), w = strlen(want);
    return n >= w && strcmp(inv + n - w, want) == 0;
}

static void test_trust_key(void)
{
    certrot_result r;
    char op[400], ops[2000], want[400];
    host_signer *next = host_signer_new();
    char next_kid[44];
    host_signer_kid(next, next_kid);

    /* Not trusted yet: a bundle signed by the next key is unknown_kid. */
    device *d = device_new();
    write_op(ops_buf, 42, new_pem, NULL);
    CHECK(feed_by(d, next, next_kid, "n0", 1, ops_buf, &r) == CERTROT_UNKNOWN_KID);
    sprintf(want, "\"%s\"", kid);
    CHECK(inventory_has_keys(d, want));

    /* A trust_key-only bundle: applied without an offline cycle, the key persisted and reported. */
    trust_op(op, next);
    CHECK(feed_by(d, signer, kid, "t1", 1, op, &r) == CERTROT_APPLIED && r.ack == CERTROT_ACK_APPLIED && r.republish_inventory);
    CHECK(d->fm.offline_calls == 0 && d->fm.writes == 0 && d->fm.conn_tests == 0);
    CHECK(certrot_key_count(&d->ctx) == 2 && strcmp(certrot_key_kid(&d->ctx, 1), next_kid) == 0);
    CHECK(d->fm.flash_key_count == 2 && strcmp(d->fm.flash_keys[1].kid, next_kid) == 0 && d->fm.key_stores == 1);
    CHECK(d->fm.flash_seq == 1 && strcmp(d->fm.flash_jti, "t1") == 0);
    sprintf(want, "\"%s\",\"%s\"", kid, next_kid);
    CHECK(inventory_has_keys(d, want));

    /* A bundle signed by the newly trusted key verifies and is applied. */
    CHECK(feed_by(d, next, next_kid, "n1", 2, ops_buf, &r) == CERTROT_APPLIED && d->fm.offline_calls == 1);
    CHECK(memcmp(fake_modem_get(&d->fm, 42, 0)->data, new_pem, strlen(new_pem)) == 0);
    /* and the old key still works (never removed) */
    CHECK(feed_by(d, signer, kid, "o1", 3, ops_buf, &r) == CERTROT_APPLIED);

    /* After a reboot the installed key is loaded from flash. */
    certrot_config cfg = d->ctx.cfg;
    CHECK(certrot_init(&d->ctx, &cfg, d->jws, sizeof d->jws, d->scratch, sizeof d->scratch) == CERTROT_OK);
    CHECK(certrot_key_count(&d->ctx) == 2 && inventory_has_keys(d, want));
    CHECK(feed_by(d, next, next_kid, "n2", 4, ops_buf, &r) == CERTROT_APPLIED);
    /* trusting a key again is a no-op (applied, nothing stored) */
    CHECK(feed_by(d, next, next_kid, "t2", 5, op, &r) == CERTROT_APPLIED && d->fm.key_stores == 1 &&
          certrot_key_count(&d->ctx) == 2);
    /* a corrupted flash entry is skipped */
    d->fm.flash_keys[1].pubkey[10] ^= 1;
    CHECK(certrot_init(&d->ctx, &cfg, d->jws, sizeof d->jws, d->scratch, sizeof d->scratch) == CERTROT_OK);
    CHECK(certrot_key_count(&d->ctx) == 1);
    free(d);

    /* write + trust_key in one bundle: both or neither. */
    d = device_new();
    write_op(ops, 42, new_pem, NULL);
    strcat(ops, ",");
    strcat(ops, op);
    CHECK(feed_by(d, signer, kid, "wt", 1, ops, &r) == CERTROT_APPLIED && certrot_key_count(&d->ctx) == 2 &&
          d->fm.flash_key_count == 2);
    free(d);
    /* the reconnect with the new chain fails: the chain is rolled back and the key not kept */
    d = device_new();
    d->fm.require_digest = true;
    d->fm.broker_tag = 42;
    strcpy(d->fm.broker_sha, old_sha);
    CHECK(feed_by(d, signer, kid, "wt", 1, ops, &r) == CERTROT_RECONNECT_FAILED && r.ack == CERTROT_ACK_FAILED);
    CHECK(certrot_key_count(&d->ctx) == 1 && d->fm.flash_key_count == 0 && d->fm.key_stores == 0);
    sprintf(want, "\"%s\"", kid);
    CHECK(inventory_has_keys(d, want) && feed_by(d, next, next_kid, "n1", 2, ops_buf, &r) == CERTROT_UNKNOWN_KID);
    free(d);
    /* the write itself fails */
    d = device_new();
    d->fm.fail_write_code = -ENOMEM;
    CHECK(feed_by(d, signer, kid, "wt", 1, ops, &r) == CERTROT_MODEM_FAILED && certrot_key_count(&d->ctx) == 1 &&
          d->fm.flash_key_count == 0);
    free(d);
    /* the key table cannot be stored: the write is rolled back too */
    d = device_new();
    d->fm.fail_store_keys_code = -EIO;
    CHECK(feed_by(d, signer, kid, "wt", 1, ops, &r) == CERTROT_STORE_FAILED && r.ack == CERTROT_ACK_FAILED &&
          r.code == -EIO && strstr(r.reason, "trusted keys") != NULL);
    const fake_slot *sl = fake_modem_get(&d->fm, 42, 0);
    CHECK(sl && sl->len == strlen(old_pem) && memcmp(sl->data, old_pem, sl->len) == 0 && d->fm.online);
    CHECK(certrot_key_count(&d->ctx) == 1 && d->fm.flash_seq == 0 && certrot_applied_seq(&d->ctx) == 0);
    free(d);

    /* Bad trust_key ops are rejected and change nothing. */
    uint8_t pub[65];
    char x[44], y[44], tk[44];
    host_signer_pubkey(next, pub);
    certrot_b64url_encode(pub + 1, 32, x, sizeof x);
    certrot_b64url_encode(pub + 33, 32, y, sizeof y);
    struct {
        const char *fmt;
        certrot_status want;
        const char *reason;
    } bad[] = {
        /* kid of another key */
        {"{\"jwk\":{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"},\"kid\":\"%s\",\"op\":\"trust_key\"}",
         CERTROT_INVALID_BUNDLE, "thumbprint"},
        {"{\"jwk\":{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"},\"op\":\"trust_key\"}%.0s",
         CERTROT_INVALID_BUNDLE, "lacks jwk or kid"},
        {"{\"kid\":\"%.0s%.0s%s\",\"op\":\"trust_key\"}", CERTROT_INVALID_BUNDLE, "lacks jwk or kid"},
        {"{\"jwk\":{\"crv\":\"P-256\",\"kty\":\"RSA\",\"x\":\"%s\",\"y\":\"%s\"},\"kid\":\"%s\",\"op\":\"trust_key\"}",
         CERTROT_INVALID_KEY, "P-256"},
        {"{\"jwk\":{\"crv\":\"P-384\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"},\"kid\":\"%s\",\"op\":\"trust_key\"}",
         CERTROT_INVALID_KEY, NULL},
        {"{\"jwk\":{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%.42s\",\"y\":\"%s\"},\"kid\":\"%s\",\"op\":\"trust_key\"}",
         CERTROT_INVALID_KEY, NULL}, /* x of 42 characters: not 32 bytes */
        {"{\"jwk\":{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s=\",\"y\":\"%s\"},\"kid\":\"%s\",\"op\":\"trust_key\"}",
         CERTROT_INVALID_KEY, NULL}, /* padding */
        {"{\"jwk\":{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%sAA\"},\"kid\":\"%s\",\"op\":\"trust_key\"}",
         CERTROT_INVALID_KEY, NULL}, /* 33 bytes */
        {"{\"jwk\":{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":7%.0s},\"kid\":\"%s\",\"op\":\"trust_key\"}",
         CERTROT_INVALID_BUNDLE, "schema"}, /* y not a string */
        {"{\"jwk\":\"%s%s\",\"kid\":\"%s\",\"op\":\"trust_key\"}", CERTROT_INVALID_BUNDLE, "schema"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sprintf(op, bad[i].fmt, x, y, i == 0 ? kid : next_kid);
        d = device_new();
        certrot_status st = feed_by(d, signer, kid, "bad", 1, op, &r);
        CHECK(st == bad[i].want && r.ack == CERTROT_ACK_REJECTED && certrot_key_count(&d->ctx) == 1 && d->fm.key_stores == 0);
        CHECK(!bad[i].reason || strstr(r.reason, bad[i].reason));
        if (st != bad[i].want || (bad[i].reason && !strstr(r.reason, bad[i].reason)))
            printf("    case %zu: got %s (%s)\n", i, certrot_status_name(st), r.reason);
        free(d);
    }
    /* a point that is not on the curve (pubkey_check), with its correct thumbprint */
    pub[64] ^= 1;
    certrot_b64url_encode(pub + 33, 32, y, sizeof y);
    thumbprint(pub, tk);
    sprintf(op, "{\"jwk\":{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"},\"kid\":\"%s\",\"op\":\"trust_key\"}", x, y, tk);
    d = device_new();
    CHECK(feed_by(d, signer, kid, "bad", 1, op, &r) == CERTROT_INVALID_KEY && certrot_key_count(&d->ctx) == 1);
    /* the bad op stops the bundle even after a good write */
    write_op(ops, 42, new_pem, NULL);
    strcat(ops, ",");
    strcat(ops, op);
    CHECK(feed_by(d, signer, kid, "bad", 1, ops, &r) == CERTROT_INVALID_KEY && d->fm.writes == 0);
    free(d);

    /* Table full: 1 pinned + 3 installed = CERTROT_MAX_KEYS (4); a 5th key is rejected, nothing written. */
    host_signer *more[4];
    ops[0] = '\0';
    for (int i = 0; i < 4; i++) more[i] = host_signer_new();
    for (int i = 0; i < 3; i++) {
        trust_op(op, more[i]);
        if (i) strcat(ops, ",");
        strcat(ops, op);
    }
    d = device_new();
    CHECK(feed_by(d, signer, kid, "three", 1, ops, &r) == CERTROT_APPLIED && certrot_key_count(&d->ctx) == CERTROT_MAX_KEYS);
    CHECK(d->fm.flash_key_count == CERTROT_MAX_KEYS && d->fm.key_stores == 1);
    trust_op(op, more[3]);
    write_op(ops, 42, new_pem, NULL);
    strcat(ops, ",");
    strcat(ops, op);
    CHECK(feed_by(d, signer, kid, "fifth", 2, ops, &r) == CERTROT_KEY_TABLE_FULL && r.ack == CERTROT_ACK_REJECTED &&
          strstr(r.reason, "at most 4") != NULL);
    CHECK(d->fm.writes == 0 && d->fm.offline_calls == 0 && certrot_key_count(&d->ctx) == CERTROT_MAX_KEYS &&
          d->fm.key_stores == 1 && certrot_applied_seq(&d->ctx) == 1);
    char ack[400];
    CHECK(certrot_build_ack(&r, ack, sizeof ack) > 0 && strstr(ack, "\"status\":\"rejected\",\"reason\":\"key_table_full: ") != NULL);
    /* re-trusting a key it has needs no room */
    trust_op(op, more[0]);
    CHECK(feed_by(d, signer, kid, "again", 2, op, &r) == CERTROT_APPLIED);
    /* every installed key verifies */
    for (int i = 0; i < 3; i++) {
        char k[44];
        host_signer_kid(more[i], k);
        CHECK(feed_by(d, more[i], k, i == 0 ? "m0" : i == 1 ? "m1" : "m2", 3 + i, ops_buf, &r) == CERTROT_APPLIED);
    }
    free(d);
    for (int i = 0; i < 4; i++) host_signer_free(more[i]);
    host_signer_free(next);
}

static void test_init_args(void)
{
    certrot_ctx ctx;
    static uint8_t jb[1000], sb[1000];
    certrot_config cfg = {.device_id = DEV, .keys = pinned, .key_count = 1};
    CHECK(certrot_init(&ctx, &cfg, jb, sizeof jb, sb, sizeof sb) == CERTROT_ERR_ARG); /* no crypto */
    cfg.cb.sha256 = host_sha256;
    cfg.cb.es256_verify = host_es256_verify;
    CHECK(certrot_init(&ctx, &cfg, jb, sizeof jb, sb, 100) == CERTROT_ERR_ARG);       /* scratch too small */
    CHECK(certrot_init(&ctx, &cfg, jb, sizeof jb, sb, CERTROT_SCRATCH_FOR(sizeof jb)) == CERTROT_OK);
    cfg.device_id = "";
    CHECK(certrot_init(&ctx, &cfg, jb, sizeof jb, sb, sizeof sb) == CERTROT_ERR_ARG);
    cfg.device_id = DEV;
    /* a pinned kid that is not the thumbprint of its key */
    certrot_key wrong = pinned[0];
    wrong.kid = other_kid;
    cfg.keys = &wrong;
    CHECK(certrot_init(&ctx, &cfg, jb, sizeof jb, sb, sizeof sb) == CERTROT_ERR_ARG);
    wrong.kid = NULL; /* computed */
    CHECK(certrot_init(&ctx, &cfg, jb, sizeof jb, sb, sizeof sb) == CERTROT_OK && strcmp(certrot_key_kid(&ctx, 0), kid) == 0);
    cfg.key_count = CERTROT_MAX_KEYS + 1;
    CHECK(certrot_init(&ctx, &cfg, jb, sizeof jb, sb, sizeof sb) == CERTROT_ERR_ARG);
}

/* ---- client-certificate renewal: keygen and activate (docs/protocol.md §11) ---- */

#define TAG_A 16842753
#define TAG_B 16842754

static char id_cert[4096], id_key[1024];

static device *device_with_identity(host_signer *identity)
{
    device *d = calloc(1, sizeof *d);
    fake_modem_init(&d->fm);
    fake_modem_provision(&d->fm, 42, 0, old_pem, strlen(old_pem));
    certrot_config cfg = {.device_id = DEV, .keys = pinned, .key_count = 1, .active_tag = TAG_A};
    cfg.cb.sha256 = host_sha256;
    cfg.cb.es256_verify = host_es256_verify;
    fake_modem_callbacks(&cfg.cb, &d->fm);
    CHECK(host_factory_identity(DEV, id_cert, sizeof id_cert, id_key, sizeof id_key) == 0);
    CHECK(fake_modem_identity(&d->fm, &cfg.cb, identity, TAG_A, id_cert, id_key) == 0);
    CHECK(certrot_init(&d->ctx, &cfg, d->jws, sizeof d->jws, d->scratch, sizeof d->scratch) == CERTROT_OK);
    return d;
}

/* The keygen output inside the CSR message the device published. */
static void csr_output(const fake_modem *fm, char *out, size_t cap)
{
    const char *k = strstr(fm->csr, "\"keygen\":\"");
    out[0] = '\0';
    if (!k) return;
    k += 10;
    const char *end = strchr(k, '"');
    size_t n = end ? (size_t)(end - k) : 0;
    if (n < cap) {
        memcpy(out, k, n);
        out[n] = '\0';
    }
}

static void test_identity(void)
{
    certrot_result r;
    host_signer *identity = host_signer_new();
    device *d = device_with_identity(identity);
    char inv[1200], ops[9000], output[2100], cert[4096], json[4400];
    CHECK(fake_modem_inventory(&d->fm, &d->ctx, 2048, inv, sizeof inv) > 0);
    CHECK(strstr(inv, ",\"active\":16842753}") != NULL);

    /* keygen in the standby tag: the tag emptied, a key generated offline, the CSR published, then applied */
    fake_modem_provision(&d->fm, TAG_B, 0, old_pem, strlen(old_pem)); /* leftovers of an earlier identity */
    sprintf(ops, "{\"op\":\"keygen\",\"subject\":\"CN=" DEV "\",\"tag\":%d}", TAG_B);
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, ops);
    CHECK(feed(d, jws, JTI1, &r) == CERTROT_APPLIED && r.ack == CERTROT_ACK_APPLIED && r.republish_inventory);
    CHECK(d->fm.keygens == 1 && d->fm.csrs_published == 1 && d->fm.online);
    CHECK(fake_modem_get(&d->fm, TAG_B, 0) == NULL && fake_modem_get(&d->fm, TAG_B, 2) != NULL);
    CHECK(fake_modem_get(&d->fm, TAG_A, 1) != NULL && fake_modem_get(&d->fm, TAG_A, 2) != NULL);
    sprintf(json, "{\"v\":1,\"jti\":\"%s\",\"tag\":%d,\"keygen\":\"", JTI1, TAG_B);
    CHECK(strncmp(d->fm.csr, json, strlen(json)) == 0);
    csr_output(&d->fm, output, sizeof output);
    CHECK(strchr(output, '.') != NULL && host_issue_for_keygen(output, cert, sizeof cert) == 0);
    CHECK(certrot_active_tag(&d->ctx) == TAG_A);

    /* keygen again (a retry): the key there is deleted first, as KEYGEN refuses a tag that holds one (519) */
    make_jws(jws, DEV, JTI2, 2, 0, 0x7fffffff, ops);
    CHECK(feed(d, jws, JTI2, &r) == CERTROT_APPLIED && d->fm.keygens == 2 && d->fm.refused == 0);
    csr_output(&d->fm, output, sizeof output);
    CHECK(host_issue_for_keygen(output, cert, sizeof cert) == 0);

    /* never in the active tag: rejected before anything is touched */
    sprintf(ops, "{\"op\":\"keygen\",\"subject\":\"CN=x\",\"tag\":%d}", TAG_A);
    make_jws(jws, DEV, "k3", 3, 0, 0x7fffffff, ops);
    CHECK(feed(d, jws, "k3", &r) == CERTROT_INVALID_BUNDLE && r.ack == CERTROT_ACK_REJECTED &&
          strstr(r.reason, "active tag") != NULL && d->fm.keygens == 2);
    /* a subject with a quote, a keygen with a type: rejected */
    sprintf(ops, "{\"op\":\"keygen\",\"subject\":\"CN=\\\"x\",\"tag\":%d}", TAG_B);
    make_jws(jws, DEV, "k4", 3, 0, 0x7fffffff, ops);
    CHECK(feed(d, jws, "k4", &r) == CERTROT_INVALID_BUNDLE && strstr(r.reason, "subject") != NULL);
    sprintf(ops, "{\"op\":\"activate\",\"tag\":%d,\"type\":1}", TAG_B);
    make_jws(jws, DEV, "k5", 3, 0, 0x7fffffff, ops);
    CHECK(feed(d, jws, "k5", &r) == CERTROT_INVALID_BUNDLE);

    /* the certificate and the chain written into B, then activate B: the device now connects with B */
    char w1[5000], w2[5000];
    write_op(w1, TAG_B, cert, NULL);
    w1[strlen(w1) - 1] = '\0'; /* retype: type 1 (write_op writes type 0) */
    char *type = strstr(w1, "\"type\":0");
    CHECK(type != NULL);
    if (type) type[7] = '1';
    strcat(w1, "}");
    write_op(w2, TAG_B, new_pem, NULL);
    sprintf(ops, "%s,%s,{\"op\":\"activate\",\"tag\":%d}", w1, w2, TAG_B);
    make_jws(jws, DEV, "i1", 4, 0, 0x7fffffff, ops);
    CHECK(feed(d, jws, "i1", &r) == CERTROT_APPLIED && r.ack == CERTROT_ACK_APPLIED);
    CHECK(certrot_active_tag(&d->ctx) == TAG_B && d->fm.active_tag == TAG_B);
    CHECK(fake_modem_inventory(&d->fm, &d->ctx, 2048, inv, sizeof inv) > 0 && strstr(inv, ",\"active\":16842754}"));
    CHECK(fake_modem_get(&d->fm, TAG_A, 1) != NULL && "the old tag is kept as the way back");

    /* the next renewal, into A; the connection with A fails: back on B, acked failed activate_failed */
    sprintf(ops, "{\"op\":\"keygen\",\"subject\":\"CN=" DEV "\",\"tag\":%d}", TAG_A);
    make_jws(jws, DEV, "k6", 5, 0, 0x7fffffff, ops);
    CHECK(feed(d, jws, "k6", &r) == CERTROT_APPLIED);
    d->fm.activation_fails = true;
    csr_output(&d->fm, output, sizeof output);
    CHECK(host_issue_for_keygen(output, cert, sizeof cert) == 0);
    write_op(w1, TAG_A, new_pem, NULL);
    sprintf(ops, "%s,{\"op\":\"activate\",\"tag\":%d}", w1, TAG_A);
    make_jws(jws, DEV, "i2", 6, 0, 0x7fffffff, ops);
    int activations = d->fm.activations;
    CHECK(feed(d, jws, "i2", &r) == CERTROT_ACTIVATE_FAILED && r.ack == CERTROT_ACK_FAILED);
    CHECK(strcmp(r.reason, "activate_failed") == 0 && r.has_code);
    CHECK(d->fm.activations == activations + 2 && certrot_active_tag(&d->ctx) == TAG_B && d->fm.active_tag == TAG_B);
    CHECK(certrot_applied_seq(&d->ctx) == 5 && "a failed bundle is not applied");
    char ack[400];
    CHECK(certrot_build_ack(&r, ack, sizeof ack) > 0 && strstr(ack, "\"reason\":\"activate_failed\"") != NULL);
    free(d);

    /* a device without the identity callbacks reports no active tag and rejects keygen */
    d = device_new();
    CHECK(fake_modem_inventory(&d->fm, &d->ctx, 2048, inv, sizeof inv) > 0 && strstr(inv, "active") == NULL);
    sprintf(ops, "{\"op\":\"keygen\",\"subject\":\"CN=x\",\"tag\":%d}", TAG_B);
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, ops);
    CHECK(feed(d, jws, JTI1, &r) == CERTROT_INVALID_BUNDLE && strstr(r.reason, "does not renew") != NULL);
    free(d);
    host_signer_free(identity);
}

int main(void)
{
    signer = host_signer_new();
    other_signer = host_signer_new();
    host_signer_kid(signer, kid);
    host_signer_kid(other_signer, other_kid);
    pinned[0].kid = kid;
    host_signer_pubkey(signer, pinned[0].pubkey);
    make_pem(old_pem, 509);
    make_pem(new_pem, 600);
    sha_hex(old_pem, strlen(old_pem), old_sha);
    sha_hex(new_pem, strlen(new_pem), new_sha);

    run("base64url strict and canonical", test_b64url);
    run("PEM normal form", test_pem);
    run("ack and inventory builders, AT%CMNG=1 lines", test_builders);
    run("fake modem enforces nRF91 rules", test_fake_modem_rules);
    run("reassembly: order, duplicates, stall, other jti, oversize", test_reassembly);
    run("apply, re-ack, reboot, stale seq, delete", test_apply_and_rotate);
    run("rollback on failed reconnect and failed write", test_rollback);
    run("device checks reject bad bundles", test_checks);
    run("trust_key: install, persist, report, verify, rollback, bad jwk, table full", test_trust_key);
    run("init argument checks", test_init_args);
    run("identity renewal: keygen in the standby tag, CSR, activate, activate_failed", test_identity);

    host_signer_free(signer);
    host_signer_free(other_signer);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
