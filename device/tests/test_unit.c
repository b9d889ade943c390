/* Unit tests: codecs, PEM normal form, builders, reassembly, checks, and applying against the fake modem. */
#include "certrot_device.h"
#include "fake_modem.h"
#include "host_crypto.h"
#include "../src/certrot_internal.h" /* the CBOR reader, tested on its own */

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>

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
    char list[600];
    CHECK(fake_modem_cmng_list(&fm, list, sizeof list) > 0);
    char upper[65];
    for (int i = 0; i < 65; i++) upper[i] = (char)(new_sha[i] >= 'a' ? new_sha[i] - 32 : new_sha[i]);
    char expect[120];
    sprintf(expect, "%%CMNG: 42,0,\"%s\"\r\n", upper);
    CHECK(strncmp(list, expect, strlen(expect)) == 0);
    /* The modem's reserved tags, listed as a real modem lists them, are not credentials of the inventory. */
    CHECK(strstr(list, "%CMNG: 4294967293,10,") != NULL);
    certrot_cred reserved;
    CHECK(certrot_parse_cmng_line("%CMNG: 4294967293,10,\"2C43952EE9E000FF2ACC4E2ED0897C0A72AD5FA72C3D934E81741CBD54F05BD1\"", &reserved) == -1);
    CHECK(certrot_parse_cmng_line("%CMNG: 4294967294,6,\"A3CC4121A62D4BB103AE92F70A77A456886AE3CD5B2D156A200A1B90D9E92E05\"", &reserved) == -1);
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

/* ---- compact bundles (docs/protocol.md §12) ------------------------------------------------------- */

/* A CBOR writer for the tests: shortest heads; map keys are written in their deterministic order by hand. */
typedef struct {
    uint8_t *p;
    size_t n;
} cb;

static void cb_head(cb *b, int major, uint64_t v)
{
    uint8_t m = (uint8_t)(major << 5);
    if (v < 24) b->p[b->n++] = (uint8_t)(m | v);
    else if (v < 0x100) b->p[b->n++] = m | 24, b->p[b->n++] = (uint8_t)v;
    else if (v < 0x10000) b->p[b->n++] = m | 25, b->p[b->n++] = (uint8_t)(v >> 8), b->p[b->n++] = (uint8_t)v;
    else {
        b->p[b->n++] = m | 26;
        for (int s = 24; s >= 0; s -= 8) b->p[b->n++] = (uint8_t)(v >> s);
    }
}
static void cb_bytes(cb *b, const void *d, size_t n)
{
    cb_head(b, 2, n);
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void cb_text(cb *b, const char *s)
{
    cb_head(b, 3, strlen(s));
    memcpy(b->p + b->n, s, strlen(s));
    b->n += strlen(s);
}
static void cb_int(cb *b, int64_t v) { v >= 0 ? cb_head(b, 0, (uint64_t)v) : cb_head(b, 1, (uint64_t)(-1 - v)); }
static void cb_raw(cb *b, const void *d, size_t n)
{
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static const uint8_t cjti1[16] = {0x9f, 0x2c, 0x4e, 0x61, 0xb0, 0xa8, 0x4d, 0x7f, 0xa3, 0xc5, 0xe2, 0xd1, 0xb6, 0xf8, 0x0a, 0x47};

/* The claims map: keys exp, iat, iss, jti, ops, seq, sub (the deterministic order); ops already encoded. */
static size_t cose_payload(uint8_t *out, const char *sub, const uint8_t jti[16], int64_t seq, const uint8_t *ops,
                           size_t ops_len, size_t op_count)
{
    cb b = {out, 0};
    cb_head(&b, 5, 7);
    cb_text(&b, "exp"), cb_int(&b, 0x7fffffff);
    cb_text(&b, "iat"), cb_int(&b, 0);
    cb_text(&b, "iss"), cb_text(&b, "certrot");
    cb_text(&b, "jti"), cb_bytes(&b, jti, 16);
    cb_text(&b, "ops"), cb_head(&b, 4, op_count), cb_raw(&b, ops, ops_len);
    cb_text(&b, "seq"), cb_int(&b, seq);
    cb_text(&b, "sub"), cb_text(&b, sub);
    return b.n;
}

static void kid_bytes(const char *k, uint8_t out[32]) { certrot_b64url_decode(k, strlen(k), out, 32); }

/* A tagged COSE_Sign1 over payload, signed by s with the protected header prot (NULL: {1: -7, 4: kid of s}). */
static size_t cose_sign(uint8_t *out, const host_signer *s, const uint8_t *prot, size_t prot_len, const uint8_t *payload,
                        size_t len)
{
    uint8_t p[64], sig[64];
    static uint8_t ss[20000];
    if (!prot) {
        char k[44];
        host_signer_kid(s, k);
        memcpy(p, "\xA2\x01\x26\x04\x58\x20", 6);
        kid_bytes(k, p + 6);
        prot = p;
        prot_len = 38;
    }
    cb t = {ss, 0};
    cb_head(&t, 4, 4), cb_text(&t, "Signature1"), cb_bytes(&t, prot, prot_len), cb_bytes(&t, "", 0), cb_bytes(&t, payload, len);
    host_signer_sign(s, ss, t.n, sig);
    cb b = {out, 0};
    cb_head(&b, 6, 18), cb_head(&b, 4, 4), cb_bytes(&b, prot, prot_len), cb_head(&b, 5, 0), cb_bytes(&b, payload, len);
    cb_bytes(&b, sig, 64);
    return b.n;
}

/* A real certificate (OpenSSL), as DER, and OpenSSL's PEM of it (the normal form). */
static size_t cert_der(const char *cn, uint8_t *der, char *pem, size_t pem_cap)
{
    char key_pem[1024];
    CHECK(host_factory_identity(cn, pem, pem_cap, key_pem, sizeof key_pem) == 0);
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    unsigned char *p = der;
    int n = x ? i2d_X509(x, &p) : -1;
    CHECK(n > 0);
    BIO *out = BIO_new(BIO_s_mem());
    char *data;
    PEM_write_bio_X509(out, x); /* normal form: 64-character lines, LF */
    long m = BIO_get_mem_data(out, &data);
    memcpy(pem, data, (size_t)m);
    pem[m] = '\0';
    BIO_free(out);
    X509_free(x);
    return n > 0 ? (size_t)n : 0;
}

static uint8_t der1[2048], der2[2048];
static size_t der1_len, der2_len;
static char pem1[4096], pem2[4096], chain12[8192];

/* A write op {op, der, tag, type, sha256}: der items given, sha256 over `pem` (or raw `sha` when given). */
static size_t cose_write_op(uint8_t *out, long tag, const uint8_t *const *ders, const size_t *lens, size_t count,
                            const char *pem, size_t pem_len)
{
    uint8_t d[32];
    host_sha256(NULL, (const uint8_t *)pem, pem_len, d);
    cb b = {out, 0};
    cb_head(&b, 5, 5);
    cb_text(&b, "op"), cb_text(&b, "write");
    cb_text(&b, "der"), cb_head(&b, 4, count);
    for (size_t i = 0; i < count; i++) cb_bytes(&b, ders[i], lens[i]);
    cb_text(&b, "tag"), cb_int(&b, tag);
    cb_text(&b, "type"), cb_int(&b, 0);
    cb_text(&b, "sha256"), cb_bytes(&b, d, 32);
    return b.n;
}

typedef struct {
    fake_modem fm;
    certrot_ctx ctx;
    uint8_t buf[CERTROT_NRF91_COSE_BUF];
    uint8_t scratch[CERTROT_NRF91_COSE_SCRATCH];
} cdevice;

static cdevice *cdevice_new(const char *old, size_t old_len)
{
    cdevice *d = calloc(1, sizeof *d);
    fake_modem_init(&d->fm);
    fake_modem_provision(&d->fm, 42, 0, old, old_len);
    certrot_config cfg = {.device_id = DEV, .keys = pinned, .key_count = 1, .takes_compact = true};
    cfg.cb.sha256 = host_sha256;
    cfg.cb.es256_verify = host_es256_verify;
    cfg.cb.pubkey_check = host_pubkey_check;
    fake_modem_callbacks(&cfg.cb, &d->fm);
    CHECK(certrot_init(&d->ctx, &cfg, d->buf, sizeof d->buf, d->scratch, sizeof d->scratch) == CERTROT_OK);
    return d;
}

/* One compact part [jti, n, total, data]. */
static size_t cose_part(uint8_t *out, const uint8_t jti[16], int n, int total, const uint8_t *data, size_t len)
{
    cb b = {out, 0};
    cb_head(&b, 4, 4), cb_bytes(&b, jti, 16), cb_int(&b, n), cb_int(&b, total), cb_bytes(&b, data, len);
    return b.n;
}

static certrot_status cfeed(certrot_ctx *ctx, const uint8_t *cose, size_t len, certrot_result *r)
{
    static uint8_t part[20000];
    size_t n = cose_part(part, cjti1, 1, 1, cose, len);
    return certrot_on_part(ctx, part, n, 0, r);
}

static uint8_t cose[20000], payload[20000], ops_c[20000];

/* The good one-write bundle of the two test certificates into tag 42, seq 1. */
static size_t good_cose(uint8_t *out, int64_t seq)
{
    const uint8_t *ders[2] = {der1, der2};
    size_t lens[2] = {der1_len, der2_len};
    size_t o = cose_write_op(ops_c, 42, ders, lens, 2, chain12, strlen(chain12));
    size_t p = cose_payload(payload, DEV, cjti1, seq, ops_c, o, 1);
    return cose_sign(out, signer, NULL, 0, payload, p);
}

static void compact_setup(void)
{
    der1_len = cert_der("compact-one", der1, pem1, sizeof pem1);
    der2_len = cert_der("compact-two", der2, pem2, sizeof pem2);
    snprintf(chain12, sizeof chain12, "%s%s", pem1, pem2);
}

static void test_compact_codecs(void)
{
    /* DER to PEM: OpenSSL's PEM of the same DER, byte for byte */
    static uint8_t pem[8192];
    long n = certrot_der_to_pem(der1, der1_len, pem, sizeof pem);
    CHECK(n > 0 && (size_t)n == strlen(pem1) && memcmp(pem, pem1, (size_t)n) == 0);
    CHECK((size_t)n == certrot_pem_block_len(der1_len));
    CHECK(certrot_der_to_pem(der1, der1_len, pem, (size_t)n - 1) == -1);
    for (size_t len = 1; len <= 200; len++) { /* every padding and line case */
        uint8_t raw[200];
        RAND_bytes(raw, (int)len);
        long m = certrot_der_to_pem(raw, len, pem, sizeof pem);
        CHECK(m > 0 && (size_t)m == certrot_pem_block_len(len) && certrot_pem_is_normal(pem, (size_t)m));
    }
    /* X.509 at the ASN.1 level */
    CHECK(certrot_der_is_certificate(der1, der1_len) && certrot_der_is_certificate(der2, der2_len));
    CHECK(!certrot_der_is_certificate(der1, der1_len - 1));         /* truncated */
    uint8_t bad[2100];
    memcpy(bad, der1, der1_len);
    bad[der1_len] = 0;
    CHECK(!certrot_der_is_certificate(bad, der1_len + 1));          /* trailing byte */
    bad[0] = 0x31;
    CHECK(!certrot_der_is_certificate(bad, der1_len));              /* SET, not SEQUENCE */
    memcpy(bad, der1, der1_len);
    bad[4] = 0x31;                                                  /* tbsCertificate not a SEQUENCE */
    CHECK(!certrot_der_is_certificate(bad, der1_len));
    memcpy(bad, der1, der1_len);
    bad[der1_len - 1 - 72] ^= 0; /* unchanged: still fine */
    CHECK(certrot_der_is_certificate(bad, der1_len));
    /* a length in the long form where the short one fits, and an indefinite length */
    static const uint8_t nonmin[] = {0x30, 0x81, 0x03, 0x02, 0x01, 0x00};
    static const uint8_t indef[] = {0x30, 0x80, 0x02, 0x01, 0x00, 0x00, 0x00};
    CHECK(!certrot_der_is_certificate(nonmin, sizeof nonmin) && !certrot_der_is_certificate(indef, sizeof indef));
    uint8_t junk[600];
    RAND_bytes(junk, sizeof junk);
    CHECK(!certrot_der_is_certificate(junk, sizeof junk));
    /* every single-byte truncation or cut of the good DER is refused */
    bool all = true;
    for (size_t cut = 0; cut < der1_len; cut++) all &= !certrot_der_is_certificate(der1, cut);
    CHECK(all);
}

static void test_compact_apply(void)
{
    certrot_result r;
    cdevice *d = cdevice_new(old_pem, strlen(old_pem));
    char inv[2048];
    CHECK(fake_modem_inventory(&d->fm, &d->ctx, 2048, inv, sizeof inv) > 0 && strstr(inv, ",\"formats\":[\"cose\"]}"));
    size_t n = good_cose(cose, 1);
    CHECK(n < CERTROT_NRF91_COSE_BUF);
    CHECK(cfeed(&d->ctx, cose, n, &r) == CERTROT_APPLIED && r.ack == CERTROT_ACK_APPLIED && r.republish_inventory);
    CHECK(strcmp(r.jti, JTI1) == 0 && "the ack jti is the 32 hex digits of the jti bytes");
    const fake_slot *s = fake_modem_get(&d->fm, 42, 0);
    CHECK(s && s->len == strlen(chain12) && memcmp(s->data, chain12, s->len) == 0 && "the PEM normal form of the DER");
    CHECK(d->fm.refused == 0 && d->fm.flash_seq == 1 && strcmp(d->fm.flash_jti, JTI1) == 0);
    /* re-sent after a daemon restart: applied again, nothing written */
    int writes = d->fm.writes;
    CHECK(cfeed(&d->ctx, cose, n, &r) == CERTROT_ALREADY_APPLIED && r.ack == CERTROT_ACK_APPLIED && d->fm.writes == writes);

    /* in 3 parts, out of order, one twice: a bundle with the next seq and the other chain order */
    const uint8_t *ders[2] = {der2, der1};
    size_t lens[2] = {der2_len, der1_len};
    char chain21[8192];
    snprintf(chain21, sizeof chain21, "%s%s", pem2, pem1);
    uint8_t jti2[16] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
    size_t o = cose_write_op(ops_c, 42, ders, lens, 2, chain21, strlen(chain21));
    size_t p = cose_payload(payload, DEV, jti2, 2, ops_c, o, 1);
    n = cose_sign(cose, signer, NULL, 0, payload, p);
    static uint8_t parts[3][2000];
    size_t plen[3], cut = n / 3;
    for (int i = 0; i < 3; i++)
        plen[i] = cose_part(parts[i], jti2, i + 1, 3, cose + i * cut, i == 2 ? n - 2 * cut : cut);
    CHECK(certrot_on_part(&d->ctx, parts[2], plen[2], 0, &r) == CERTROT_WAITING);
    CHECK(certrot_on_part(&d->ctx, parts[2], plen[2], 0, &r) == CERTROT_WAITING); /* duplicate */
    CHECK(certrot_on_part(&d->ctx, parts[0], plen[0], 0, &r) == CERTROT_WAITING);
    /* stalled: the incomplete ack names the missing part, with the hex jti */
    CHECK(certrot_poll(&d->ctx, 31, &r) && r.ack == CERTROT_ACK_INCOMPLETE && r.missing_count == 1 && r.missing[0] == 2);
    CHECK(strcmp(r.jti, JTI2) == 0);
    CHECK(certrot_on_part(&d->ctx, parts[1], plen[1], 40, &r) == CERTROT_APPLIED && strcmp(r.jti, JTI2) == 0);
    s = fake_modem_get(&d->fm, 42, 0);
    CHECK(s && s->len == strlen(chain21) && memcmp(s->data, chain21, s->len) == 0);

    /* a JSON part of another jti in between restarts the assembly; JWS still works on this device */
    write_op(ops_buf, 42, new_pem, NULL);
    size_t j = make_jws(jws, DEV, "jws-on-compact", 3, 0, 0x7fffffff, ops_buf);
    CHECK(j < CERTROT_NRF91_COSE_BUF);
    static char msg[61000];
    int m = sprintf(msg, "{\"jti\":\"jws-on-compact\",\"part\":1,\"parts\":1,\"data\":\"%s\"}", jws);
    CHECK(certrot_on_part(&d->ctx, (uint8_t *)msg, (size_t)m, 50, &r) == CERTROT_APPLIED);
    s = fake_modem_get(&d->fm, 42, 0);
    CHECK(s && s->len == strlen(new_pem) && memcmp(s->data, new_pem, s->len) == 0);

    /* too large for the compact buffer: rejected with the parts' hex jti, the rest of it dropped */
    static uint8_t big[CERTROT_NRF91_COSE_BUF + 100];
    memset(big, 0x41, sizeof big);
    size_t b1 = cose_part(parts[0], cjti1, 1, 3, big, 1900);
    CHECK(certrot_on_part(&d->ctx, parts[0], b1, 60, &r) == CERTROT_WAITING);
    b1 = cose_part(parts[0], cjti1, 2, 3, big, 1900);
    CHECK(certrot_on_part(&d->ctx, parts[0], b1, 60, &r) == CERTROT_WAITING);
    b1 = cose_part(parts[0], cjti1, 3, 3, big, 1900);
    CHECK(certrot_on_part(&d->ctx, parts[0], b1, 60, &r) == CERTROT_TOO_LARGE && r.ack == CERTROT_ACK_REJECTED &&
          strcmp(r.jti, JTI1) == 0);
    CHECK(certrot_on_part(&d->ctx, parts[0], b1, 60, &r) == CERTROT_IGNORED && r.ack == CERTROT_ACK_NONE);
    free(d);
}

/* Every kind of malformed compact part is ignored (§5 step 2), and a device without takes_compact ignores all. */
static void test_compact_parts(void)
{
    certrot_result r;
    cdevice *d = cdevice_new(old_pem, strlen(old_pem));
    uint8_t m[200], data[4] = {1, 2, 3, 4};
    size_t n = cose_part(m, cjti1, 1, 2, data, 4);
    CHECK(certrot_on_part(&d->ctx, m, n, 0, &r) == CERTROT_WAITING);
    n = cose_part(m, cjti1, 0, 2, data, 4);
    CHECK(certrot_on_part(&d->ctx, m, n, 0, &r) == CERTROT_IGNORED); /* part 0 */
    n = cose_part(m, cjti1, 3, 2, data, 4);
    CHECK(certrot_on_part(&d->ctx, m, n, 0, &r) == CERTROT_IGNORED); /* part > parts */
    n = cose_part(m, cjti1, 1, 65, data, 4);
    CHECK(certrot_on_part(&d->ctx, m, n, 0, &r) == CERTROT_IGNORED); /* 65 parts */
    n = cose_part(m, cjti1, 1, 2, data, 4);
    m[n] = 0x00;
    CHECK(certrot_on_part(&d->ctx, m, n + 1, 0, &r) == CERTROT_IGNORED); /* trailing byte */
    CHECK(certrot_on_part(&d->ctx, m, n - 1, 0, &r) == CERTROT_IGNORED); /* truncated */
    cb b = {m, 0};
    cb_head(&b, 4, 4), cb_bytes(&b, cjti1, 15), cb_int(&b, 1), cb_int(&b, 1), cb_bytes(&b, data, 4);
    CHECK(certrot_on_part(&d->ctx, m, b.n, 0, &r) == CERTROT_IGNORED); /* 15-byte jti */
    b.n = 0;
    cb_head(&b, 4, 4), cb_bytes(&b, cjti1, 16), m[b.n++] = 0x18, m[b.n++] = 0x01, cb_int(&b, 1), cb_bytes(&b, data, 4);
    CHECK(certrot_on_part(&d->ctx, m, b.n, 0, &r) == CERTROT_IGNORED); /* part 1 with a long head */
    b.n = 0;
    cb_head(&b, 4, 4), cb_bytes(&b, cjti1, 16), cb_int(&b, 1), cb_int(&b, 1), m[b.n++] = 0x5f, cb_bytes(&b, data, 4),
        m[b.n++] = 0xff;
    CHECK(certrot_on_part(&d->ctx, m, b.n, 0, &r) == CERTROT_IGNORED); /* indefinite data */
    CHECK(certrot_on_part(&d->ctx, (const uint8_t *)"\x84", 1, 0, &r) == CERTROT_IGNORED);
    /* the assembly of part 1/2 survived all of that */
    CHECK(certrot_poll(&d->ctx, 100, &r) && r.missing_count == 1 && r.missing[0] == 2 && strcmp(r.jti, JTI1) == 0);
    free(d);

    device *j = device_new(); /* JWS only: no formats in the inventory, compact parts ignored */
    char inv[2048];
    CHECK(fake_modem_inventory(&j->fm, &j->ctx, 2048, inv, sizeof inv) > 0 && strstr(inv, "formats") == NULL);
    size_t c = good_cose(cose, 1);
    CHECK(cfeed(&j->ctx, cose, c, &r) == CERTROT_IGNORED && r.ack == CERTROT_ACK_NONE && j->fm.writes == 0);
    free(j);

    /* takes_compact needs the larger scratch */
    certrot_ctx ctx;
    static uint8_t jb[CERTROT_NRF91_COSE_BUF], sb[CERTROT_NRF91_COSE_SCRATCH];
    certrot_config cfg = {.device_id = DEV, .keys = pinned, .key_count = 1, .takes_compact = true};
    cfg.cb.sha256 = host_sha256;
    cfg.cb.es256_verify = host_es256_verify;
    CHECK(certrot_init(&ctx, &cfg, jb, sizeof jb, sb, sizeof sb - 1) == CERTROT_ERR_ARG);
    CHECK(certrot_init(&ctx, &cfg, jb, sizeof jb, sb, sizeof sb) == CERTROT_OK);
}

/* ---- reassembly order (issue #36 finding 1) -------------------------------------------------------- */

static uint8_t hex_byte(const char *s)
{
    unsigned v = 0;
    sscanf(s, "%2x", &v);
    return (uint8_t)v;
}

/* The two orders of issue #36: part 2 (empty) first, then part 1 ("x"); in JSON on a JWS device and as compact
 * parts on a compact device. They used to make the in-place permutation swap bytes outside the assembly buffer
 * (reverse() with a negative length); now the bundle "x" is assembled, rejected, and nothing else is touched. */
static void test_reassembly_empty_part(void)
{
    certrot_result r;
    device *d = device_new();
    memset(d->jws, 0xA5, sizeof d->jws);
    CHECK(send(d, "{\"jti\":\"a\",\"part\":2,\"parts\":2,\"data\":\"\"}", 0, &r) == CERTROT_WAITING);
    CHECK(send(d, "{\"jti\":\"a\",\"part\":1,\"parts\":2,\"data\":\"x\"}", 0, &r) == CERTROT_INVALID_BUNDLE);
    CHECK(r.ack == CERTROT_ACK_REJECTED && strcmp(r.jti, "a") == 0 && strstr(r.reason, "3 parts") != NULL);
    CHECK(d->jws[0] == 'x');
    bool intact = true;
    for (size_t i = 1; i < sizeof d->jws; i++) intact &= d->jws[i] == 0xA5;
    CHECK(intact && "nothing written after the 1-byte bundle");
    CHECK(d->fm.writes == 0 && !certrot_poll(&d->ctx, 1000, &r));
    free(d);

    cdevice *c = cdevice_new(old_pem, strlen(old_pem));
    memset(c->buf, 0xA5, sizeof c->buf);
    static const char *const hexparts[2] = {"845041414141414141414141414141414141020240",
                                            "84504141414141414141414141414141414101024178"};
    certrot_status st[2];
    for (int i = 0; i < 2; i++) {
        uint8_t m[64];
        size_t n = strlen(hexparts[i]) / 2;
        for (size_t k = 0; k < n; k++) m[k] = hex_byte(hexparts[i] + 2 * k);
        st[i] = certrot_on_part(&c->ctx, m, n, 0, &r);
    }
    CHECK(st[0] == CERTROT_WAITING && st[1] == CERTROT_INVALID_CBOR && r.ack == CERTROT_ACK_REJECTED);
    CHECK(strcmp(r.jti, "41414141414141414141414141414141") == 0);
    CHECK(c->buf[0] == 'x');
    intact = true;
    for (size_t i = 1; i < sizeof c->buf; i++) intact &= c->buf[i] == 0xA5;
    CHECK(intact && "nothing written after the 1-byte bundle");
    CHECK(c->fm.writes == 0);
    free(c);
}

/* xorshift64*, seeded from CERTROT_TEST_SEED or the clock (printed on failure, to replay a run). */
static uint64_t rng_state;
static uint32_t rnd(uint32_t bound)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 33) % bound;
}

static bool next_perm(int *a, int n)
{
    int i = n - 2;
    while (i >= 0 && a[i] >= a[i + 1]) i--;
    if (i < 0) return false;
    int j = n - 1;
    while (a[j] <= a[i]) j--;
    int t = a[i];
    a[i] = a[j];
    a[j] = t;
    for (int l = i + 1, h = n - 1; l < h; l++, h--) t = a[l], a[l] = a[h], a[h] = t;
    return true;
}

typedef struct {
    certrot_ctx *ctx;
    uint8_t *buf;
    size_t cap;
    bool compact;
    unsigned trial;
    int bad; /* trials that went wrong */
} reasm_rig;

/* One part message for trial jti `trial`: JSON with base64url data (no '.', so never a JWS) or compact. */
static size_t reasm_msg(const reasm_rig *g, uint8_t *out, int n, int total, const uint8_t *data, size_t len)
{
    if (g->compact) {
        uint8_t jti[16] = {0};
        memcpy(jti, &g->trial, sizeof g->trial);
        jti[15] = 0x5a;
        return cose_part(out, jti, n, total, data, len);
    }
    return (size_t)sprintf((char *)out, "{\"jti\":\"r%u\",\"part\":%d,\"parts\":%d,\"data\":\"%.*s\"}", g->trial, n, total,
                           (int)len, (const char *)data);
}

/* Sends parts `order` (a permutation of 0..total-1) of lengths len[], with random duplicates carrying other data
 * in between; checks WAITING until the last one, then a rejection with the buffer holding exactly
 * part 1 || ... || part total and nothing after it changed. */
static void reasm_trial(reasm_rig *g, const int *order, int total, const size_t *len)
{
    static uint8_t data[CERTROT_MAX_PARTS][80], expect[CERTROT_MAX_PARTS * 80], msg[400], junk[80];
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t sum = 0;
    certrot_result r;
    for (int i = 0; i < total; i++) {
        for (size_t k = 0; k < len[i]; k++) data[i][k] = g->compact ? (uint8_t)rnd(256) : (uint8_t)alpha[rnd(64)];
        memcpy(expect + sum, data[i], len[i]);
        sum += len[i];
    }
    for (size_t k = 0; k < sizeof junk; k++) junk[k] = (uint8_t)alpha[rnd(64)];
    g->trial++;
    memset(g->buf, 0xA5, g->cap);
    bool ok = true;
    for (int i = 0; i < total && ok; i++) {
        int p = order[i];
        certrot_status st = certrot_on_part(g->ctx, msg, reasm_msg(g, msg, p + 1, total, data[p], len[p]), 0, &r);
        if (i < total - 1) {
            ok &= st == CERTROT_WAITING && r.ack == CERTROT_ACK_NONE;
            if (ok && rnd(4) == 0) { /* a duplicate of a part already in, with other bytes: dropped */
                int q = order[rnd((uint32_t)i + 1)];
                st = certrot_on_part(g->ctx, msg, reasm_msg(g, msg, q + 1, total, junk, rnd(sizeof junk)), 0, &r);
                ok &= st == CERTROT_WAITING && r.ack == CERTROT_ACK_NONE;
            }
        } else {
            ok &= st != CERTROT_WAITING && st != CERTROT_IGNORED && r.ack == CERTROT_ACK_REJECTED;
        }
    }
    ok = ok && memcmp(g->buf, expect, sum) == 0;
    for (size_t k = sum; k < g->cap && ok; k++) ok &= g->buf[k] == 0xA5;
    if (!ok && g->bad++ < 3) {
        printf("  %s trial %u: %d parts, order", g->compact ? "compact" : "JSON", g->trial, total);
        for (int i = 0; i < total; i++) printf(" %d(%zu)", order[i] + 1, len[order[i]]);
        printf(": %s (%s)\n", certrot_status_name(r.status), r.reason);
    }
}

/* Every arrival order of 1..5 parts, with lengths that include zero (all zero, one zero, zeros at both ends,
 * random), and random orders of 6..64 parts, in both formats: the bundle is always the parts in part order. */
static void test_reassembly_random(void)
{
    const char *seed_env = getenv("CERTROT_TEST_SEED");
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0) : (uint64_t)time(NULL);
    rng_state = seed ? seed : 1;
    device *jd = device_new();
    cdevice *cd = cdevice_new(old_pem, strlen(old_pem));
    reasm_rig rigs[2] = {{&jd->ctx, jd->jws, sizeof jd->jws, false, 0, 0}, {&cd->ctx, cd->buf, sizeof cd->buf, true, 0, 0}};
    unsigned trials = 0;
    for (int f = 0; f < 2; f++) {
        reasm_rig *g = &rigs[f];
        for (int total = 1; total <= 5; total++) {
            for (int shape = 0; shape < 8; shape++) {
                size_t len[5];
                for (int i = 0; i < total; i++) {
                    switch (shape) {
                    case 0: len[i] = 0; break;                                   /* every part empty */
                    case 1: len[i] = i == 0 ? 0 : 1 + rnd(5); break;             /* the first empty */
                    case 2: len[i] = i == total - 1 ? 0 : 1 + rnd(5); break;     /* the last empty */
                    case 3: len[i] = i % 2 ? 0 : 1 + rnd(3); break;              /* every other one empty */
                    case 4: len[i] = 1; break;                                   /* equal lengths */
                    default: len[i] = rnd(4) == 0 ? 0 : rnd(70); break;          /* random, zeros likely */
                    }
                }
                int order[5];
                for (int i = 0; i < total; i++) order[i] = i;
                do {
                    reasm_trial(g, order, total, len);
                    trials++;
                } while (next_perm(order, total));
            }
        }
        for (int t = 0; t < 1000; t++) {
            int total = 6 + (int)rnd(CERTROT_MAX_PARTS - 5), order[CERTROT_MAX_PARTS];
            size_t len[CERTROT_MAX_PARTS];
            for (int i = 0; i < total; i++) {
                order[i] = i;
                len[i] = rnd(3) == 0 ? 0 : rnd(60); /* at most 64 x 59 bytes: fits the compact buffer */
            }
            for (int i = total - 1; i > 0; i--) { /* Fisher-Yates */
                int j = (int)rnd((uint32_t)i + 1), tmp = order[i];
                order[i] = order[j];
                order[j] = tmp;
            }
            reasm_trial(g, order, total, len);
            trials++;
        }
    }
    CHECK(rigs[0].bad == 0 && rigs[1].bad == 0);
    if (rigs[0].bad || rigs[1].bad) printf("  (CERTROT_TEST_SEED=%llu to replay)\n", (unsigned long long)seed);
    CHECK(trials == 2 * ((1 + 2 + 6 + 24 + 120) * 8 + 1000)); /* 4448 */
    CHECK(jd->fm.writes == 0 && cd->fm.writes == 0);
    free(jd);
    free(cd);
}

/* ---- the JSON reader (issue #36 finding 2: no cJSON, no heap, no recursion) ------------------------ */

static bool json_ok(const char *s) { return certrot_json_check((const uint8_t *)s, strlen(s), NULL) == 0; }

static bool json_int_of(const char *s, int64_t *v)
{
    certrot_json c = certrot_json_at((const uint8_t *)s, strlen(s));
    return json_ok(s) && certrot_json_int(&c, v);
}

static void test_json_reader(void)
{
    static const char *const good[] = {
        "{}", "[]", " \t\r\n{} ", "0", "-0", "\"\"", "true", "false", "null", "1.5e-3", "-12E+3", "123456789",
        "{\"a\":[1,-0,0.5,1e3,1E+3,-1.5e-3,true,false,null,\"x\\u00e9\\ud83d\\ude00\\n\\\"\\\\\\/\\b\\f\\r\\t\"]}",
        "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"", "[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]", "{\"a\":{\"b\":{\"c\":[]}}}",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        const char *why = "";
        bool ok = certrot_json_check((const uint8_t *)good[i], strlen(good[i]), &why) == 0;
        if (!ok) printf("  rejected %s: %s\n", good[i], why);
        CHECK(ok);
    }
    static const char *const bad[] = {
        "", " ", "{", "}", "[1,]", "{\"a\":1,}", "01", "-01", "+1", "1.", ".5", "1e", "1e+", "-", "--1", "0x10",
        "\"\\x\"", "\"\x01\"", "\"\\ud800\"", "\"\\ud800\\u0041\"", "\"\\udc00\"", "\"\\u12g4\"", "\"\xff\"",
        "\"\xc0\x80\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"", "{\"a\" 1}", "{1:2}", "{\"a\"}", "[1 2]", "tru",
        "nul", "True", "1 2", "{} {}", "\"abc", "[1]]", "[1}", "{\"a\":1]", "[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]",
        "NaN", "Infinity", "'a'", "[,1]", "{,}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        bool rejected = !json_ok(bad[i]);
        if (!rejected) printf("  accepted %s\n", bad[i]);
        CHECK(rejected);
    }
    CHECK(certrot_json_check((const uint8_t *)"1\0", 2, NULL) != 0); /* a NUL after the value */

    /* integers: exact, in any notation, within +-2^53 */
    static const struct { const char *text; bool ok; int64_t v; } ints[] = {
        {"10", true, 10}, {"1.0", true, 1}, {"1e3", true, 1000}, {"100e-2", true, 1}, {"-0", true, 0},
        {"0.000e5", true, 0}, {"0e999999", true, 0}, {"-7", true, -7}, {"9007199254740992", true, 9007199254740992LL},
        {"-9007199254740992", true, -9007199254740992LL}, {"90071992547409920e-1", true, 9007199254740992LL},
        {"0.5", false, 0}, {"1.5e0", false, 0}, {"9007199254740993", false, 0}, {"1e16", false, 0},
        {"1.00000000000000001", false, 0}, {"12345678901234567e-1", false, 0}, {"1e-400", false, 0},
        {"1e99999999999", false, 0}, {"123456789012345678901234567890", false, 0}, {"\"1\"", false, 0},
        {"2147483647", true, 2147483647}, {"16842753.000", true, 16842753},
    };
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
        int64_t v = -1;
        bool ok = json_int_of(ints[i].text, &v);
        if (ok != ints[i].ok || (ok && v != ints[i].v)) printf("  int %s: %d %lld\n", ints[i].text, ok, (long long)v);
        CHECK(ok == ints[i].ok && (!ok || v == ints[i].v));
    }

    /* strings: unescaped to UTF-8; the whole length is returned when out is short */
    const char *s = "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u0041\\u00e9\\u20ac\\ud83d\\ude00\"";
    certrot_json c = certrot_json_at((const uint8_t *)s, strlen(s));
    uint8_t out[64];
    static const char want[] = "a\"b\\c/d\b\f\n\r\tA\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    CHECK(json_ok(s) && certrot_json_string(&c, out, sizeof out) == (long)strlen(want) && memcmp(out, want, strlen(want)) == 0);
    CHECK(certrot_json_string(&c, out, 3) == (long)strlen(want) && memcmp(out, "a\"b", 3) == 0);
    CHECK(certrot_json_string(&c, NULL, 0) == (long)strlen(want));
    /* in place, forwards: the string's own bytes */
    char inplace[] = "\"\\u0041\\u0042\\ud83d\\ude00x\"";
    certrot_json ip = certrot_json_at((const uint8_t *)inplace, strlen(inplace));
    CHECK(certrot_json_string(&ip, (uint8_t *)inplace, 7) == 7 && memcmp(inplace, "AB\xf0\x9f\x98\x80x", 7) == 0);

    /* objects: the first member of a key (as cJSON), keys compared unescaped; arrays iterated */
    const char *o = "{ \"j\\u0074i\" : \"first\" , \"jti\":\"second\", \"n\":[1, {\"a\":[2,3]} ,\"x\", [] ], \"z\":null }";
    certrot_json obj = certrot_json_at((const uint8_t *)o, strlen(o)), v, el;
    CHECK(json_ok(o) && certrot_json_type(&obj) == 'o');
    CHECK(certrot_json_find(&obj, "jti", &v) && certrot_json_string_is(&v, "first"));
    CHECK(certrot_json_find(&obj, "z", &v) && certrot_json_type(&v) == 'z');
    CHECK(!certrot_json_find(&obj, "missing", &v) && !certrot_json_find(&obj, "a", &v));
    CHECK(certrot_json_find(&obj, "n", &v) && certrot_json_type(&v) == 'a');
    int types[8], count = 0;
    while (count < 8 && certrot_json_next(&v, &el)) types[count++] = certrot_json_type(&el);
    CHECK(count == 4 && types[0] == 'n' && types[1] == 'o' && types[2] == 's' && types[3] == 'a');
}

/* The inputs of issue #36 finding 2 and their kin: ignored (or rejected) in bounded stack, without heap. */
static void test_json_hostile(void)
{
    certrot_result r;
    device *d = device_new();
    static char m[4200];
    /* a 1,997-byte part of nested arrays: cJSON recursed ~1,000 deep (about 102 KB of stack) */
    size_t n = 0;
    for (int i = 0; i < 998; i++) m[n++] = '[';
    m[n++] = '0';
    for (int i = 0; i < 998; i++) m[n++] = ']';
    CHECK(n == 1997 && send(d, m, 0, &r) == CERTROT_IGNORED && r.ack == CERTROT_ACK_NONE);
    /* nested objects */
    n = 0;
    for (int i = 0; i < 400; i++) n += (size_t)sprintf(m + n, "{\"a\":");
    m[n++] = '1';
    for (int i = 0; i < 400; i++) m[n++] = '}';
    m[n] = '\0';
    CHECK(send(d, m, 0, &r) == CERTROT_IGNORED);
    /* a 2 KB array of zeros: cJSON made 2,047 allocations (64 KB) */
    n = 0;
    m[n++] = '[';
    for (int i = 0; i < 1023; i++) n += (size_t)sprintf(m + n, i ? ",0" : "0");
    m[n++] = ']';
    m[n] = '\0';
    CHECK(strlen(m) >= 2047 && send(d, m, 0, &r) == CERTROT_IGNORED);
    /* a part with an extra member nested 16 deep is a part; 17 deep is not */
    char deep[200];
    n = (size_t)sprintf(deep, "{\"x\":");
    for (int i = 0; i < 15; i++) deep[n++] = '[';
    for (int i = 0; i < 15; i++) deep[n++] = ']';
    sprintf(deep + n, ",\"jti\":\"d\",\"part\":1,\"parts\":2,\"data\":\"AB\"}");
    CHECK(send(d, deep, 0, &r) == CERTROT_WAITING);
    n = (size_t)sprintf(deep, "{\"x\":");
    for (int i = 0; i < 16; i++) deep[n++] = '[';
    for (int i = 0; i < 16; i++) deep[n++] = ']';
    sprintf(deep + n, ",\"jti\":\"d\",\"part\":1,\"parts\":2,\"data\":\"AB\"}");
    CHECK(send(d, deep, 0, &r) == CERTROT_IGNORED);
    /* not parts: trailing bytes, invalid UTF-8, a jti with a NUL, part 1.5, parts as a string */
    const char *bad[] = {"{\"jti\":\"a\",\"part\":1,\"parts\":1,\"data\":\"x\"} x", "{\"jti\":\"\xff\",\"part\":1,\"parts\":1,\"data\":\"x\"}",
                         "{\"jti\":\"a\\u0000\",\"part\":1,\"parts\":1,\"data\":\"x\"}", "{\"jti\":\"a\",\"part\":1.5,\"parts\":2,\"data\":\"x\"}",
                         "{\"jti\":\"a\",\"part\":1,\"parts\":\"1\",\"data\":\"x\"}", "{\"jti\":\"a\",\"part\":01,\"parts\":1,\"data\":\"x\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) CHECK(send(d, bad[i], 0, &r) == CERTROT_IGNORED);
    free(d);

    /* escaped data is unescaped into the assembly (part 2 as \u escapes); numbers in other notations */
    d = device_new();
    write_op(ops_buf, 42, new_pem, NULL);
    make_jws(jws, DEV, JTI1, 1, 0, 0x7fffffff, ops_buf);
    size_t len = strlen(jws), half = len / 2;
    static char esc[60000];
    size_t e = 0;
    for (size_t i = half; i < len; i++) e += (size_t)sprintf(esc + e, "\\u%04x", (unsigned char)jws[i]);
    static char p1[40000], p2[80000];
    sprintf(p1, "{\"jti\":\"" JTI1 "\",\"part\":1.0,\"parts\":0.2e1,\"data\":\"%.*s\"}", (int)half, jws);
    sprintf(p2, "{\"data\":\"%s\",\"parts\":2,\"part\":2,\"jti\":\"\\u0039f2c4e61b0a84d7fa3c5e2d1b6f80a47\"}", esc);
    CHECK(send(d, p1, 0, &r) == CERTROT_WAITING);
    CHECK(send(d, p2, 0, &r) == CERTROT_APPLIED && strcmp(r.jti, JTI1) == 0);
    free(d);

    /* signed claims nested too deep, or with a deep member: invalid_bundle, never a deep parse */
    d = device_new();
    char header[200];
    sprintf(header, "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"certrot-bundle+jwt\"}", kid);
    n = (size_t)sprintf(claims_buf, "{\"x\":");
    for (int i = 0; i < 500; i++) claims_buf[n++] = '[';
    for (int i = 0; i < 500; i++) claims_buf[n++] = ']';
    sprintf(claims_buf + n, ",\"exp\":2147483647,\"iat\":0,\"iss\":\"certrot\",\"jti\":\"deep\",\"ops\":[%s],\"seq\":1,\"sub\":\"%s\"}",
            ops_buf, DEV);
    sign_raw(signer, header, claims_buf, jws);
    CHECK(feed(d, jws, "deep", &r) == CERTROT_INVALID_BUNDLE && strstr(r.reason, "not a JSON object") != NULL &&
          strcmp(r.jti, "deep") == 0 && d->fm.writes == 0);
    free(d);
}

/* ---- acks fit CERTROT_ACK_MAX, whole UTF-8 characters (issue #36 finding 3) ------------------------ */

/* The ack of r: built into CERTROT_ACK_MAX bytes, and strict JSON (so whole UTF-8 characters). Its length or -1. */
static long ack_fits(const certrot_result *r)
{
    char a[CERTROT_ACK_MAX];
    long n = certrot_build_ack(r, a, sizeof a);
    if (n < 0 || certrot_json_check((const uint8_t *)a, (size_t)n, NULL) != 0) return -1;
    for (const char *p = r->reason; *p; p++)
        if ((uint8_t)*p < 0x20 || *p == '"' || *p == '\\') return -1;
    return n;
}

static void test_ack_bounds(void)
{
    certrot_result r;
    char q64[6 * 64 + 1] = "", c64[6 * 64 + 1] = "", ctl40[6 * 40 + 1] = "", header[600], m[2000];
    for (int i = 0; i < 64; i++) strcat(q64, "\\\""), strcat(c64, "\\u0001");
    for (int i = 0; i < 40; i++) strcat(ctl40, "\\u0001");

    /* issue #36: a jti of 64 x U+0001 and an alg of 40 control characters made a 699-byte ack; such a jti is not a
     * part now (no ack can echo it within bounds, and the daemon's jtis are hex) */
    device *d = device_new();
    sprintf(m, "{\"jti\":\"%s\",\"part\":1,\"parts\":1,\"data\":\"x.y.z\"}", c64);
    CHECK(send(d, m, 0, &r) == CERTROT_IGNORED);
    /* the longest jti an ack carries: 64 quotes (128 bytes escaped), with that alg */
    sprintf(header, "{\"alg\":\"%s\",\"kid\":\"%s\",\"typ\":\"certrot-bundle+jwt\"}", ctl40, kid);
    write_op(ops_buf, 42, new_pem, NULL);
    sprintf(claims_buf, "{\"exp\":2147483647,\"iat\":0,\"iss\":\"certrot\",\"jti\":\"%s\",\"ops\":[%s],\"seq\":1,\"sub\":\"%s\"}",
            c64, ops_buf, DEV);
    sign_raw(signer, header, claims_buf, jws);
    static char msg[61000];
    sprintf(msg, "{\"jti\":\"%s\",\"part\":1,\"parts\":1,\"data\":\"%s\"}", q64, jws);
    CHECK(send(d, msg, 0, &r) == CERTROT_INVALID_BUNDLE && strstr(r.reason, "alg ????") != NULL);
    long n = ack_fits(&r);
    CHECK(n > 0 && strlen(r.jti) == 64);
    /* an alg of 3-byte characters: the 40-byte excerpt in the reason ends on a whole one (13 of them) */
    char euros[200] = "";
    for (int i = 0; i < 20; i++) strcat(euros, "\xe2\x82\xac");
    sprintf(header, "{\"alg\":\"%s\",\"kid\":\"%s\",\"typ\":\"certrot-bundle+jwt\"}", euros, kid);
    sign_raw(signer, header, claims_buf, jws);
    sprintf(msg, "{\"jti\":\"p0\",\"part\":1,\"parts\":1,\"data\":\"%s\"}", jws);
    CHECK(send(d, msg, 0, &r) == CERTROT_INVALID_BUNDLE && ack_fits(&r) > 0);
    CHECK(strncmp(r.reason, "invalid_bundle: alg ", 20) == 0 && strncmp(r.reason + 20, euros, 39) == 0 &&
          strcmp(r.reason + 59, " is not ES256") == 0);
    /* claims jti of control characters: invalid_bundle, acked with the parts' jti */
    sprintf(header, "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"certrot-bundle+jwt\"}", kid);
    sign_raw(signer, header, claims_buf, jws);
    sprintf(msg, "{\"jti\":\"p1\",\"part\":1,\"parts\":1,\"data\":\"%s\"}", jws);
    CHECK(send(d, msg, 0, &r) == CERTROT_INVALID_BUNDLE && strcmp(r.jti, "p1") == 0 && strstr(r.reason, "control") && ack_fits(&r) > 0);
    free(d);

    /* the largest acks a result can make: failed with the most negative code and a 200-byte reason of 3-byte
     * characters (cut whole) and control characters; incomplete with 63 parts missing; both with 64 quotes */
    memset(&r, 0, sizeof r);
    memset(r.jti, '"', 64);
    r.ack = CERTROT_ACK_FAILED;
    r.has_code = true;
    r.code = INT32_MIN;
    static char big[2000];
    strcpy(big, "x\x01\"\\");
    for (int i = 0; i < 120; i++) strcat(big, "\xe2\x82\xac"); /* the euro sign */
    certrot_reason(r.reason, sizeof r.reason, CERTROT_MODEM_FAILED, "%s", big);
    n = ack_fits(&r);
    CHECK(n > 0 && n <= 391 && strlen(r.reason) <= CERTROT_REASON_MAX && strncmp(r.reason, "modem_error: x?'/", 17) == 0);
    for (size_t cap = 20; cap <= sizeof r.reason; cap++) { /* every cut is at a character boundary */
        certrot_reason(r.reason, cap, CERTROT_MODEM_FAILED, "%s", big);
        CHECK(ack_fits(&r) > 0 && strlen(r.reason) < cap);
    }
    d = device_new();
    sprintf(m, "{\"jti\":\"%s\",\"part\":1,\"parts\":64,\"data\":\"AAAA\"}", q64);
    CHECK(send(d, m, 0, &r) == CERTROT_WAITING);
    CHECK(certrot_poll(&d->ctx, 100, &r) && r.missing_count == 63 && (n = ack_fits(&r)) > 0 && n <= 355);
    free(d);

    /* a sub of 2-byte characters after one byte, and a device ID of them: the reason is cut whole */
    static device *u;
    u = calloc(1, sizeof *u);
    static char long_id[CERTROT_DEVICE_ID_MAX + 1] = "";
    for (int i = 0; i < 64; i++) strcat(long_id, "\xc3\xa9");
    fake_modem_init(&u->fm);
    certrot_config cfg = {.device_id = long_id, .keys = pinned, .key_count = 1};
    cfg.cb.sha256 = host_sha256;
    cfg.cb.es256_verify = host_es256_verify;
    fake_modem_callbacks(&cfg.cb, &u->fm);
    CHECK(certrot_init(&u->ctx, &cfg, u->jws, sizeof u->jws, u->scratch, sizeof u->scratch) == CERTROT_OK);
    char sub[300] = "a";
    for (int i = 0; i < 60; i++) strcat(sub, "\xc3\xa9");
    make_jws(jws, sub, JTI1, 1, 0, 0x7fffffff, ops_buf);
    CHECK(feed(u, jws, JTI1, &r) == CERTROT_INVALID_BUNDLE && strncmp(r.reason, "invalid_bundle: bundle is for a\xc3\xa9", 33) == 0);
    CHECK(ack_fits(&r) > 0 && strlen(r.reason) <= CERTROT_REASON_MAX);
    free(u);
}

/* Rejected, with this status and reason, and nothing written or taken offline. */
static void expect_compact_reject(cdevice *d, const uint8_t *c, size_t n, certrot_status want, const char *why)
{
    certrot_result r;
    int writes = d->fm.writes, offline = d->fm.offline_calls;
    certrot_status st = cfeed(&d->ctx, c, n, &r);
    if (st != want || (why && !strstr(r.reason, why)))
        printf("  got %s (%s), want %s (%s)\n", certrot_status_name(st), r.reason, certrot_status_name(want), why ? why : "");
    CHECK(st == want && r.ack == CERTROT_ACK_REJECTED && r.reason[0] != '\0');
    CHECK(!why || strstr(r.reason, why) != NULL);
    CHECK(d->fm.writes == writes && d->fm.offline_calls == offline);
}

/* A good bundle with one byte of its encoding changed, then re-signed: the signature is fine, the CBOR is not. */
static void test_compact_encoding_rules(void)
{
    cdevice *d = cdevice_new(old_pem, strlen(old_pem));
    const uint8_t *ders[2] = {der1, der2};
    size_t lens[2] = {der1_len, der2_len};
    size_t o = cose_write_op(ops_c, 42, ders, lens, 2, chain12, strlen(chain12));
    size_t p, n;
    cb b;

    /* non-deterministic: seq 1 as 0x18 0x01 (a longer head than needed) */
    p = cose_payload(payload, DEV, cjti1, 1, ops_c, o, 1);
    {
        size_t at = p - strlen(DEV) - 1 - 4 - 1; /* the seq value, before "sub" and its text */
        CHECK(payload[at] == 0x01 && payload[at - 1] == 'q');
        memmove(payload + at + 1, payload + at, p - at);
        payload[at] = 0x18;
        n = cose_sign(cose, signer, NULL, 0, payload, p + 1);
        expect_compact_reject(d, cose, n, CERTROT_INVALID_CBOR, "longer than needed");
    }
    /* the same in the outer array: the payload's bstr head as 0x5a (4-byte length) */
    p = cose_payload(payload, DEV, cjti1, 1, ops_c, o, 1);
    n = cose_sign(cose, signer, NULL, 0, payload, p);
    {
        static uint8_t c2[20000];
        size_t at = 2 + 40 + 1; /* D2 84, protected bstr (2 + 38), A0 */
        CHECK(cose[at] == 0x59);
        memcpy(c2, cose, at);
        c2[at] = 0x5a, c2[at + 1] = 0, c2[at + 2] = 0;
        memcpy(c2 + at + 3, cose + at + 1, n - at - 1);
        expect_compact_reject(d, c2, n + 2, CERTROT_INVALID_CBOR, "longer than needed");
    }
    /* duplicate key: "iss" twice */
    b = (cb){payload, 0};
    cb_head(&b, 5, 8), cb_text(&b, "exp"), cb_int(&b, 0x7fffffff), cb_text(&b, "iat"), cb_int(&b, 0);
    cb_text(&b, "iss"), cb_text(&b, "certrot"), cb_text(&b, "iss"), cb_text(&b, "certrot");
    cb_text(&b, "jti"), cb_bytes(&b, cjti1, 16), cb_text(&b, "ops"), cb_head(&b, 4, 1), cb_raw(&b, ops_c, o);
    cb_text(&b, "seq"), cb_int(&b, 1), cb_text(&b, "sub"), cb_text(&b, DEV);
    n = cose_sign(cose, signer, NULL, 0, payload, b.n);
    expect_compact_reject(d, cose, n, CERTROT_INVALID_CBOR, "key twice");
    /* unsorted keys: iat before exp */
    b = (cb){payload, 0};
    cb_head(&b, 5, 7), cb_text(&b, "iat"), cb_int(&b, 0), cb_text(&b, "exp"), cb_int(&b, 0x7fffffff);
    cb_text(&b, "iss"), cb_text(&b, "certrot"), cb_text(&b, "jti"), cb_bytes(&b, cjti1, 16);
    cb_text(&b, "ops"), cb_head(&b, 4, 1), cb_raw(&b, ops_c, o), cb_text(&b, "seq"), cb_int(&b, 1), cb_text(&b, "sub"), cb_text(&b, DEV);
    n = cose_sign(cose, signer, NULL, 0, payload, b.n);
    expect_compact_reject(d, cose, n, CERTROT_INVALID_CBOR, "order");
    /* unsorted by length first: "sha256" before "tag" in the op */
    {
        uint8_t op2[4000], dg[32];
        host_sha256(NULL, (const uint8_t *)chain12, strlen(chain12), dg);
        cb q = {op2, 0};
        cb_head(&q, 5, 5), cb_text(&q, "op"), cb_text(&q, "write"), cb_text(&q, "der"), cb_head(&q, 4, 2);
        cb_bytes(&q, der1, der1_len), cb_bytes(&q, der2, der2_len), cb_text(&q, "sha256"), cb_bytes(&q, dg, 32);
        cb_text(&q, "tag"), cb_int(&q, 42), cb_text(&q, "type"), cb_int(&q, 0);
        p = cose_payload(payload, DEV, cjti1, 1, op2, q.n, 1);
        n = cose_sign(cose, signer, NULL, 0, payload, p);
        expect_compact_reject(d, cose, n, CERTROT_INVALID_CBOR, "order");
    }
    /* indefinite length: the ops array as 0x9f ... 0xff */
    b = (cb){payload, 0};
    cb_head(&b, 5, 7), cb_text(&b, "exp"), cb_int(&b, 0x7fffffff), cb_text(&b, "iat"), cb_int(&b, 0);
    cb_text(&b, "iss"), cb_text(&b, "certrot"), cb_text(&b, "jti"), cb_bytes(&b, cjti1, 16);
    cb_text(&b, "ops"), payload[b.n++] = 0x9f, cb_raw(&b, ops_c, o), payload[b.n++] = 0xff;
    cb_text(&b, "seq"), cb_int(&b, 1), cb_text(&b, "sub"), cb_text(&b, DEV);
    n = cose_sign(cose, signer, NULL, 0, payload, b.n);
    expect_compact_reject(d, cose, n, CERTROT_INVALID_CBOR, "indefinite");
    /* trailing bytes: after the COSE_Sign1, and after the payload map (signed) */
    n = good_cose(cose, 1);
    cose[n] = 0x00;
    expect_compact_reject(d, cose, n + 1, CERTROT_INVALID_CBOR, "after the CBOR item");
    p = cose_payload(payload, DEV, cjti1, 1, ops_c, o, 1);
    payload[p] = 0xf6;
    n = cose_sign(cose, signer, NULL, 0, payload, p + 1);
    expect_compact_reject(d, cose, n, CERTROT_INVALID_CBOR, "after the CBOR item");
    /* wrong tag (17, COSE_Mac0), and no tag */
    n = good_cose(cose, 1);
    cose[0] = 0xd1;
    expect_compact_reject(d, cose, n, CERTROT_INVALID_BUNDLE, "tag 18");
    n = good_cose(cose, 1);
    expect_compact_reject(d, cose + 1, n - 1, CERTROT_INVALID_BUNDLE, "tag 18");
    /* wrong protected headers */
    {
        uint8_t prot[64], k[32];
        kid_bytes(kid, k);
        p = cose_payload(payload, DEV, cjti1, 1, ops_c, o, 1);
        memcpy(prot, "\xA1\x01\x26", 3); /* {1: -7}, no kid */
        n = cose_sign(cose, signer, prot, 3, payload, p);
        expect_compact_reject(d, cose, n, CERTROT_INVALID_BUNDLE, "protected header");
        memcpy(prot, "\xA2\x01\x38\x22\x04\x58\x20", 7); /* alg -35 (ES384) */
        memcpy(prot + 7, k, 32);
        n = cose_sign(cose, signer, prot, 39, payload, p);
        expect_compact_reject(d, cose, n, CERTROT_INVALID_BUNDLE, "protected header");
        memcpy(prot, "\xA2\x01\x26\x04\x58\x1f", 6); /* a 31-byte kid */
        memcpy(prot + 6, k, 31);
        n = cose_sign(cose, signer, prot, 37, payload, p);
        expect_compact_reject(d, cose, n, CERTROT_INVALID_BUNDLE, "protected header");
        memcpy(prot, "\xA3\x01\x26\x03\x00\x04\x58\x20", 8); /* a third member */
        memcpy(prot + 8, k, 32);
        n = cose_sign(cose, signer, prot, 40, payload, p);
        expect_compact_reject(d, cose, n, CERTROT_INVALID_BUNDLE, "protected header");
        memcpy(prot, "\xA2\x04\x58\x20", 4); /* keys out of order: 4 before 1 */
        memcpy(prot + 4, k, 32);
        memcpy(prot + 36, "\x01\x26", 2);
        n = cose_sign(cose, signer, prot, 38, payload, p);
        expect_compact_reject(d, cose, n, CERTROT_INVALID_CBOR, "order");
    }
    /* a non-empty unprotected header, a short signature, a payload that is not a map */
    n = good_cose(cose, 1);
    {
        static uint8_t c2[20000];
        size_t at = 2 + 40; /* the A0 */
        CHECK(cose[at] == 0xa0);
        memcpy(c2, cose, at);
        memcpy(c2 + at, "\xa1\x04\x41\x00", 4);
        memcpy(c2 + at + 4, cose + at + 1, n - at - 1);
        expect_compact_reject(d, c2, n + 3, CERTROT_INVALID_BUNDLE, "unprotected");
        memcpy(c2, cose, n - 66);
        c2[n - 66] = 0x58, c2[n - 65] = 63;
        memcpy(c2 + n - 64, cose + n - 64, 63);
        expect_compact_reject(d, c2, n - 1, CERTROT_INVALID_BUNDLE, "64 bytes");
    }
    b = (cb){payload, 0};
    cb_head(&b, 4, 0);
    n = cose_sign(cose, signer, NULL, 0, payload, b.n);
    expect_compact_reject(d, cose, n, CERTROT_INVALID_BUNDLE, "not a map");
    /* a claim missing (no iss), a jti of 15 bytes */
    b = (cb){payload, 0};
    cb_head(&b, 5, 6), cb_text(&b, "exp"), cb_int(&b, 0x7fffffff), cb_text(&b, "iat"), cb_int(&b, 0);
    cb_text(&b, "jti"), cb_bytes(&b, cjti1, 16), cb_text(&b, "ops"), cb_head(&b, 4, 1), cb_raw(&b, ops_c, o);
    cb_text(&b, "seq"), cb_int(&b, 1), cb_text(&b, "sub"), cb_text(&b, DEV);
    n = cose_sign(cose, signer, NULL, 0, payload, b.n);
    expect_compact_reject(d, cose, n, CERTROT_INVALID_BUNDLE, "needs iss");
    /* no ops */
    p = cose_payload(payload, DEV, cjti1, 1, ops_c, 0, 0);
    n = cose_sign(cose, signer, NULL, 0, payload, p);
    expect_compact_reject(d, cose, n, CERTROT_INVALID_BUNDLE, "no ops");
    /* unknown op, a write without der */
    b = (cb){ops_c, 0};
    cb_head(&b, 5, 1), cb_text(&b, "op"), cb_text(&b, "format");
    p = cose_payload(payload, DEV, cjti1, 1, ops_c, b.n, 1);
    n = cose_sign(cose, signer, NULL, 0, payload, p);
    expect_compact_reject(d, cose, n, CERTROT_INVALID_BUNDLE, "unknown or missing op");
    CHECK(d->fm.writes == 0 && fake_modem_get(&d->fm, 42, 0)->len == strlen(old_pem));
    free(d);

    /* the reader on its own */
    const char *why;
    static const struct {
        const char *hex;
        const char *why;
    } cases[] = {
        {"a0", NULL},
        {"a201020304", NULL},
        {"a203040102", "order"},
        {"a201020103", "twice"},
        {"a2616202616103", "order"},
        {"a2616102616280", NULL},
        {"a2616102616203", NULL},
        {"a2626161010102", "order"}, /* shorter key first: 1 (0x01) < "aa" */
        {"1817", "longer"},
        {"190017", "longer"},
        {"1a0000ffff", "longer"},
        {"1b00000000ffffffff", "longer"},
        {"1b0000000100000000", NULL},
        {"5f4101ff", "indefinite"},
        {"9f01ff", "indefinite"},
        {"bf0102ff", "indefinite"},
        {"1c", "reserved"},
        {"f93c00", "floats"},
        {"f818", "simple"},
        {"f5", NULL},
        {"62c328", "UTF-8"},
        {"62c3a9", NULL},
        {"63eda080", "UTF-8"},
        {"83010203", NULL},
        {"8301020304", "after"},
        {"830102", "past the end"},
        {"9a7fffffff00", "past the end"},
        {"5a7fffffff00", "past the end"},
        {"d2", "ends"},
        {"", "ends"},
        {"818181818181818181818181818181818100", "too deep"},
        {"8181818181818181818181818181818100", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t in[64];
        size_t len = 0;
        for (const char *h = cases[i].hex; h[0] && h[1]; h += 2) {
            unsigned v;
            if (sscanf(h, "%2x", &v) == 1) in[len++] = (uint8_t)v;
        }
        int rc = certrot_cbor_check(in, len, &why);
        bool ok = cases[i].why ? rc != 0 && why && strstr(why, cases[i].why) : rc == 0;
        if (!ok) printf("  cbor %s: rc %d (%s)\n", cases[i].hex, rc, why ? why : "-");
        CHECK(ok);
    }
}

/* Every byte of a valid compact bundle changed, one at a time (two ways): never applied, nothing written. */
static void test_compact_tamper_every_byte(void)
{
    cdevice *d = cdevice_new(old_pem, strlen(old_pem));
    size_t n = good_cose(cose, 1);
    static uint8_t t[20000];
    int bad = 0;
    for (int way = 0; way < 2; way++) {
        for (size_t i = 0; i < n; i++) {
            memcpy(t, cose, n);
            t[i] ^= way ? 0xff : 0x01;
            certrot_result r;
            certrot_status st = cfeed(&d->ctx, t, n, &r);
            if (r.ack != CERTROT_ACK_REJECTED || st == CERTROT_APPLIED || r.reason[0] == '\0') {
                if (bad++ < 5) printf("  byte %zu ^ %s: %s %s\n", i, way ? "ff" : "01", certrot_status_name(st), r.reason);
            }
        }
    }
    CHECK(bad == 0);
    CHECK(d->fm.writes == 0 && d->fm.offline_calls == 0);
    certrot_result r;
    CHECK(cfeed(&d->ctx, cose, n, &r) == CERTROT_APPLIED && "the untouched bundle still applies");
    free(d);
}

/* DER that does not parse, and a digest that does not match: rejected before anything is written. */
static void test_compact_bad_der(void)
{
    cdevice *d = cdevice_new(old_pem, strlen(old_pem));
    static uint8_t broken[2100];
    static uint8_t pem[8192];
    size_t o, p, n;
    struct {
        size_t len;
        const char *why;
    } cuts[] = {{der1_len - 1, "truncated"}, {der1_len + 1, "trailing byte"}, {300, "random"}};
    for (int k = 0; k < 3; k++) {
        memcpy(broken, der1, der1_len);
        broken[der1_len] = 0;
        if (k == 2) RAND_bytes(broken, 300);
        const uint8_t *ders[2] = {der2, broken};
        size_t lens[2] = {der2_len, cuts[k].len};
        /* the sha256 is the one of the PEM of exactly these bytes, so only the X.509 check can catch it */
        size_t m = (size_t)certrot_der_to_pem(der2, der2_len, pem, sizeof pem);
        m += (size_t)certrot_der_to_pem(broken, cuts[k].len, pem + m, sizeof pem - m);
        o = cose_write_op(ops_c, 42, ders, lens, 2, (const char *)pem, m);
        p = cose_payload(payload, DEV, cjti1, 1, ops_c, o, 1);
        n = cose_sign(cose, signer, NULL, 0, payload, p);
        expect_compact_reject(d, cose, n, CERTROT_INVALID_BUNDLE, "certificate 2 is not DER X.509");
    }
    /* a digest that is not that of the PEM normal form (here: of the PEM with CRLF line ends) */
    {
        const uint8_t *ders[1] = {der1};
        size_t lens[1] = {der1_len};
        char crlf[8192];
        size_t c = 0;
        for (const char *s = pem1; *s; s++) {
            if (*s == '\n') crlf[c++] = '\r';
            crlf[c++] = *s;
        }
        o = cose_write_op(ops_c, 42, ders, lens, 1, crlf, c);
        p = cose_payload(payload, DEV, cjti1, 1, ops_c, o, 1);
        n = cose_sign(cose, signer, NULL, 0, payload, p);
        expect_compact_reject(d, cose, n, CERTROT_INVALID_BUNDLE, "does not match");
    }
    /* a write op on another device ... and a bundle for another sub */
    o = cose_write_op(ops_c, 42, (const uint8_t *const[]){der1}, (size_t[]){der1_len}, 1, pem1, strlen(pem1));
    p = cose_payload(payload, "nrf-other", cjti1, 1, ops_c, o, 1);
    n = cose_sign(cose, signer, NULL, 0, payload, p);
    expect_compact_reject(d, cose, n, CERTROT_INVALID_BUNDLE, "bundle is for nrf-other");
    /* signed by a key the device does not trust; then a good signature over other bytes */
    p = cose_payload(payload, DEV, cjti1, 1, ops_c, o, 1);
    n = cose_sign(cose, other_signer, NULL, 0, payload, p);
    expect_compact_reject(d, cose, n, CERTROT_UNKNOWN_KID, "no pinned key");
    CHECK(d->fm.writes == 0 && d->fm.offline_calls == 0 && fake_modem_get(&d->fm, 42, 0)->len == strlen(old_pem));
    free(d);
}

/* Rollback copies live in the compact buffer: one full 4096-byte credential fits and is restored; a second
 * previous credential that does not fit fails the bundle before anything is written. */
static void test_compact_rollback_room(void)
{
    static char big_old[5000];
    size_t bl = make_pem(big_old, 2900);
    CHECK(bl <= 4096 && bl > 3900);
    cdevice *d = cdevice_new(big_old, bl);
    d->fm.require_digest = true; /* the broker only takes the old chain: the reconnect fails */
    d->fm.broker_tag = 42;
    sha_hex(big_old, bl, d->fm.broker_sha);
    certrot_result r;
    size_t n = good_cose(cose, 1);
    CHECK(cfeed(&d->ctx, cose, n, &r) == CERTROT_RECONNECT_FAILED && r.ack == CERTROT_ACK_FAILED);
    const fake_slot *s = fake_modem_get(&d->fm, 42, 0);
    CHECK(s && s->len == bl && memcmp(s->data, big_old, bl) == 0 && "the 4 KB previous chain was restored");

    /* two writes whose previous contents (4 KB + 600 B) do not both fit the 4096-byte buffer */
    d->fm.require_digest = false;
    fake_modem_provision(&d->fm, 43, 0, new_pem, strlen(new_pem));
    uint8_t two[8000];
    size_t o = cose_write_op(two, 42, (const uint8_t *const[]){der1}, (size_t[]){der1_len}, 1, pem1, strlen(pem1));
    o += cose_write_op(two + o, 43, (const uint8_t *const[]){der2}, (size_t[]){der2_len}, 1, pem2, strlen(pem2));
    uint8_t j3[16] = {3};
    size_t p = cose_payload(payload, DEV, j3, 2, two, o, 2);
    n = cose_sign(cose, signer, NULL, 0, payload, p);
    int writes = d->fm.writes, offline = d->fm.offline_calls;
    CHECK(cfeed(&d->ctx, cose, n, &r) == CERTROT_MODEM_FAILED && r.ack == CERTROT_ACK_FAILED);
    CHECK(strstr(r.reason, "read back") != NULL);
    CHECK(d->fm.writes == writes && d->fm.offline_calls == offline && "nothing written without a rollback copy");
    s = fake_modem_get(&d->fm, 42, 0);
    CHECK(s && s->len == bl && memcmp(s->data, big_old, bl) == 0);
    free(d);
}

/* trust_key and keygen ops as compact bundles. */
static void test_compact_key_ops(void)
{
    cdevice *d = cdevice_new(old_pem, strlen(old_pem));
    uint8_t pub[65], k[32], op[400];
    host_signer_pubkey(other_signer, pub);
    kid_bytes(other_kid, k);
    certrot_result r;
    for (int variant = 1; variant < 4; variant++) {
        cb b = {op, 0};
        uint8_t kk[32];
        memcpy(kk, k, 32);
        if (variant == 1) kk[0] ^= 1; /* kid is not the thumbprint */
        uint8_t y[32];
        memcpy(y, pub + 33, 32);
        if (variant == 3) y[31] ^= 1; /* not on the curve */
        cb_head(&b, 5, 3), cb_text(&b, "op"), cb_text(&b, "trust_key");
        cb_text(&b, "jwk"), cb_head(&b, 5, 4), cb_text(&b, "x"), cb_bytes(&b, pub + 1, 32);
        cb_text(&b, "y"), cb_bytes(&b, y, variant == 2 ? 31 : 32);
        cb_text(&b, "crv"), cb_text(&b, "P-256"), cb_text(&b, "kty"), cb_text(&b, "EC");
        cb_text(&b, "kid"), cb_bytes(&b, kk, 32);
        size_t p = cose_payload(payload, DEV, cjti1, 1, op, b.n, 1);
        size_t n = cose_sign(cose, signer, NULL, 0, payload, p);
        if (variant == 1) expect_compact_reject(d, cose, n, CERTROT_INVALID_BUNDLE, "thumbprint");
        if (variant == 2) expect_compact_reject(d, cose, n, CERTROT_INVALID_BUNDLE, "32-byte bstr");
        if (variant == 3) expect_compact_reject(d, cose, n, CERTROT_INVALID_KEY, "P-256");
    }
    {
        cb b = {op, 0};
        cb_head(&b, 5, 3), cb_text(&b, "op"), cb_text(&b, "trust_key");
        cb_text(&b, "jwk"), cb_head(&b, 5, 4), cb_text(&b, "x"), cb_bytes(&b, pub + 1, 32);
        cb_text(&b, "y"), cb_bytes(&b, pub + 33, 32), cb_text(&b, "crv"), cb_text(&b, "P-256");
        cb_text(&b, "kty"), cb_text(&b, "EC"), cb_text(&b, "kid"), cb_bytes(&b, k, 32);
        size_t p = cose_payload(payload, DEV, cjti1, 1, op, b.n, 1);
        size_t n = cose_sign(cose, signer, NULL, 0, payload, p);
        CHECK(cfeed(&d->ctx, cose, n, &r) == CERTROT_APPLIED && d->fm.offline_calls == 0);
        CHECK(certrot_key_count(&d->ctx) == 2 && strcmp(certrot_key_kid(&d->ctx, 1), other_kid) == 0);
        /* a bundle signed by the installed key verifies */
        uint8_t j2[16] = {2};
        size_t o = cose_write_op(ops_c, 42, (const uint8_t *const[]){der1}, (size_t[]){der1_len}, 1, pem1, strlen(pem1));
        p = cose_payload(payload, DEV, j2, 2, ops_c, o, 1);
        n = cose_sign(cose, other_signer, NULL, 0, payload, p);
        CHECK(cfeed(&d->ctx, cose, n, &r) == CERTROT_APPLIED);
        const fake_slot *s = fake_modem_get(&d->fm, 42, 0);
        CHECK(s && s->len == strlen(pem1) && memcmp(s->data, pem1, s->len) == 0);
    }
    /* keygen on a device that does not renew its identity: the shared step 11 rejects it */
    {
        cb b = {op, 0};
        cb_head(&b, 5, 3), cb_text(&b, "op"), cb_text(&b, "keygen"), cb_text(&b, "tag"), cb_int(&b, 16842754);
        cb_text(&b, "subject"), cb_text(&b, "CN=" DEV);
        uint8_t j4[16] = {4};
        size_t p = cose_payload(payload, DEV, j4, 3, op, b.n, 1);
        size_t n = cose_sign(cose, signer, NULL, 0, payload, p);
        expect_compact_reject(d, cose, n, CERTROT_INVALID_BUNDLE, "does not renew its identity");
        b.n = 0; /* a subject with a quote: rejected as in the JWS */
        cb_head(&b, 5, 3), cb_text(&b, "op"), cb_text(&b, "keygen"), cb_text(&b, "tag"), cb_int(&b, 16842754);
        cb_text(&b, "subject"), cb_text(&b, "CN=\"x");
        p = cose_payload(payload, DEV, j4, 3, op, b.n, 1);
        n = cose_sign(cose, signer, NULL, 0, payload, p);
        expect_compact_reject(d, cose, n, CERTROT_INVALID_BUNDLE, "subject");
    }
    free(d);
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
    compact_setup();
    run("compact: DER to PEM, X.509 at the ASN.1 level", test_compact_codecs);
    run("compact: applied, PEM normal form stored, re-ack, parts, stall, JWS too, too large", test_compact_apply);
    run("compact: malformed parts ignored; JWS-only device ignores compact; init scratch", test_compact_parts);
    run("reassembly: an empty part before a later one (issue #36), JSON and compact", test_reassembly_empty_part);
    run("JSON reader: strict grammar, depth 16, exact integers, escapes, first member", test_json_reader);
    run("JSON: nested/wide hostile parts ignored, escaped data unescaped, deep signed claims rejected", test_json_hostile);
    run("acks fit CERTROT_ACK_MAX: longest jti, control characters, 200-byte reasons cut whole", test_ack_bounds);
    run("reassembly: every arrival order of parts with random and empty lengths, duplicates, both formats", test_reassembly_random);
    run("compact: long heads, duplicate/unsorted keys, indefinite, trailing, tag, headers rejected", test_compact_encoding_rules);
    run("compact: a changed byte at every position is rejected", test_compact_tamper_every_byte);
    run("compact: DER that does not parse, wrong digest, other sub/key: nothing written", test_compact_bad_der);
    run("compact: rollback copy of a 4 KB chain; no room for a second: failed before writing", test_compact_rollback_room);
    run("compact: trust_key installed and used, bad kid/jwk/point; keygen rules", test_compact_key_ops);

    host_signer_free(signer);
    host_signer_free(other_signer);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
