/* Painted-stack measurement of certrot_on_part (README.md, "Memory"): the stack the library itself (and libc's
 * snprintf) takes for the worst inputs, hostile and valid. The callbacks are cheap stand-ins (a small SHA-256, an
 * ES256 "verify" that accepts, a RAM credential store), so their own stack (PSA crypto, modem_key_mgmt on a device;
 * OpenSSL here) is not counted; add your callbacks' needs.
 * Host: each input runs on a pthread whose stack is painted first; the deepest unpainted byte gives the use.
 * Cortex-M4 (-DSTACK_PROBE_BARE, arm-none-eabi-gcc, run on QEMU's mps2-an386 with semihosting): the main stack below
 * the probe's frame is painted. Prints one line per input: "<name> <bytes>". */
#include "certrot_device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef STACK_PROBE_BARE
#include <pthread.h>
#endif

/* ---- SHA-256 (FIPS 180-4), small ---- */
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
    0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
    0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
    0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
#define ROR(x, n) ((x) >> (n) | (x) << (32 - (n)))
static void block(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64], a[8];
    for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++)
        w[i] = w[i - 16] + (ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ w[i - 15] >> 3) + w[i - 7] +
               (ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ w[i - 2] >> 10);
    memcpy(a, h, sizeof a);
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = a[7] + (ROR(a[4], 6) ^ ROR(a[4], 11) ^ ROR(a[4], 25)) + ((a[4] & a[5]) ^ (~a[4] & a[6])) + K[i] + w[i];
        uint32_t t2 = (ROR(a[0], 2) ^ ROR(a[0], 13) ^ ROR(a[0], 22)) + ((a[0] & a[1]) ^ (a[0] & a[2]) ^ (a[1] & a[2]));
        memmove(a + 1, a, 7 * sizeof *a);
        a[4] += t1;
        a[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++) h[i] += a[i];
}
static int sha256(void *user, const uint8_t *d, size_t n, uint8_t out[32])
{
    (void)user;
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    uint8_t last[128] = {0};
    size_t full = n / 64 * 64, rest = n - full;
    for (size_t i = 0; i < full; i += 64) block(h, d + i);
    memcpy(last, d + full, rest);
    last[rest] = 0x80;
    size_t tail = rest < 56 ? 64 : 128;
    uint64_t bits = (uint64_t)n * 8;
    for (int i = 0; i < 8; i++) last[tail - 1 - i] = (uint8_t)(bits >> (8 * i));
    block(h, last);
    if (tail == 128) block(h, last + 64);
    for (int i = 0; i < 8; i++) out[4 * i] = (uint8_t)(h[i] >> 24), out[4 * i + 1] = (uint8_t)(h[i] >> 16),
                                out[4 * i + 2] = (uint8_t)(h[i] >> 8), out[4 * i + 3] = (uint8_t)h[i];
    return 0;
}

/* ---- stand-in callbacks ---- */
static int verify_any(void *u, const uint8_t k[65], const uint8_t *m, size_t n, const uint8_t s[64])
{
    (void)u, (void)k, (void)m, (void)n, (void)s;
    return 0;
}
static struct { bool used; uint32_t tag; uint8_t type; size_t len; uint8_t data[4096]; } slot[4];
static bool offline;
static int find(uint32_t tag, uint8_t type)
{
    for (int i = 0; i < 4; i++)
        if (slot[i].used && slot[i].tag == tag && slot[i].type == type) return i;
    return -1;
}
static int k_exists(void *u, uint32_t t, uint8_t y, bool *e) { (void)u; *e = find(t, y) >= 0; return 0; }
static int k_cmp(void *u, uint32_t t, uint8_t y, const void *b, size_t n)
{
    (void)u;
    int i = find(t, y);
    return i >= 0 && slot[i].len == n && memcmp(slot[i].data, b, n) == 0 ? 0 : 1;
}
static int k_read(void *u, uint32_t t, uint8_t y, void *b, size_t *n)
{
    (void)u;
    int i = find(t, y);
    if (i < 0) return -2;
    if (*n < slot[i].len) return -12;
    memcpy(b, slot[i].data, slot[i].len);
    *n = slot[i].len;
    return 0;
}
static int k_write(void *u, uint32_t t, uint8_t y, const void *b, size_t n)
{
    (void)u;
    int i = find(t, y);
    if (!offline) return 518;
    if (n > 4096) return -12;
    for (int j = 0; i < 0 && j < 4; j++)
        if (!slot[j].used) i = j;
    if (i < 0) return -28;
    slot[i].used = true, slot[i].tag = t, slot[i].type = y, slot[i].len = n;
    memcpy(slot[i].data, b, n);
    return 0;
}
static int k_delete(void *u, uint32_t t, uint8_t y)
{
    (void)u;
    int i = find(t, y);
    if (i >= 0) slot[i].used = false;
    return 0;
}
static int go_off(void *u) { (void)u; offline = true; return 0; }
static int go_on(void *u) { (void)u; offline = false; return 0; }
static int conn(void *u, uint32_t s) { (void)u, (void)s; return 0; }

/* ---- inputs ---- */
#define DEV "nrf-352656100123456"
static certrot_ctx ctx;
static uint8_t buf[CERTROT_NRF91_JWS_BUF], scratch[CERTROT_SCRATCH_FOR(CERTROT_NRF91_JWS_BUF)];
static certrot_key key = {.kid = NULL, .pubkey = {4, 1, 2, 3}};
static char kid[44];
static char msg[20000], text[16000];
static uint8_t bin[8000];
static certrot_result res;
static certrot_status status;

static void setup(bool compact)
{
    memset(slot, 0, sizeof slot);
    offline = false;
    certrot_config cfg = {.device_id = DEV, .keys = &key, .key_count = 1, .takes_compact = compact};
    cfg.cb.sha256 = sha256, cfg.cb.es256_verify = verify_any;
    cfg.cb.key_exists = k_exists, cfg.cb.key_cmp = k_cmp, cfg.cb.key_read = k_read, cfg.cb.key_write = k_write;
    cfg.cb.key_delete = k_delete, cfg.cb.go_offline = go_off, cfg.cb.go_online = go_on, cfg.cb.test_connection = conn;
    certrot_init(&ctx, &cfg, buf, compact ? CERTROT_NRF91_COSE_BUF : sizeof buf, scratch,
                 compact ? CERTROT_NRF91_COSE_SCRATCH : sizeof scratch);
    strcpy(kid, certrot_key_kid(&ctx, 0));
}

static size_t b64(const char *s, size_t n, char *out) { return (size_t)certrot_b64url_encode((const uint8_t *)s, n, out, 20000); }

/* A JWS (signature: 64 zero bytes, accepted) of these claims, as one JSON part. */
static size_t jws_part(const char *claims)
{
    char header[160];
    static char j[16000];
    int hn = snprintf(header, sizeof header, "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"certrot-bundle+jwt\"}", kid);
    size_t n = b64(header, (size_t)hn, j);
    j[n++] = '.';
    n += b64(claims, strlen(claims), j + n);
    j[n++] = '.';
    uint8_t sig[64] = {0};
    n += (size_t)certrot_b64url_encode(sig, 64, j + n, 100);
    return (size_t)snprintf(msg, sizeof msg, "{\"jti\":\"p\",\"part\":1,\"parts\":1,\"data\":\"%s\"}", j);
}

static void hexd(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", d[i]);
}

/* the inputs; each returns the message in msg/bin and its length */
static size_t in_nested_arrays(void) /* issue #36: cJSON recursed ~1,000 deep on this */
{
    size_t n = 0;
    for (int i = 0; i < 998; i++) msg[n++] = '[';
    msg[n++] = '0';
    for (int i = 0; i < 998; i++) msg[n++] = ']';
    return n;
}
static size_t in_wide_array(void) /* issue #36: 2,047 cJSON allocations */
{
    size_t n = 0;
    msg[n++] = '[';
    for (int i = 0; i < 1023; i++) n += (size_t)sprintf(msg + n, i ? ",0" : "0");
    msg[n++] = ']';
    return n;
}
static size_t in_deep_envelope(void) /* a part with a member nested to the limit */
{
    size_t n = (size_t)sprintf(msg, "{\"x\":");
    for (int i = 0; i < 15; i++) msg[n++] = '[';
    for (int i = 0; i < 15; i++) msg[n++] = ']';
    return n + (size_t)sprintf(msg + n, ",\"jti\":\"d\",\"part\":1,\"parts\":2,\"data\":\"AB\"}");
}
static const char pem[] = "-----BEGIN CERTIFICATE-----\nMIIBAzCBq6ADAgECAgEBMAoGCCqGSM49BAMCMA8xDTALBgNVBAMMBHByb2Jl\n"
                          "-----END CERTIFICATE-----\n";
static size_t in_jws_write(void) /* a valid write: decode, checks, read-back, write, reconnect, store */
{
    uint8_t d[32];
    char hex[65], esc[400];
    sha256(NULL, (const uint8_t *)pem, strlen(pem), d);
    hexd(d, 32, hex);
    size_t e = 0;
    for (const char *p = pem; *p; p++) {
        if (*p == '\n') esc[e++] = '\\', esc[e++] = 'n';
        else esc[e++] = *p;
    }
    esc[e] = 0;
    snprintf(text, sizeof text, "{\"exp\":2147483647,\"iat\":0,\"iss\":\"certrot\",\"jti\":\"w1\",\"ops\":[{\"op\":\"write\","
             "\"tag\":42,\"type\":0,\"pem\":\"%s\",\"sha256\":\"%s\"}],\"seq\":1,\"sub\":\"" DEV "\"}", esc, hex);
    return jws_part(text);
}
static void jwk_of(char *x, char *y, char *tp) /* the pinned key's coordinates, and its thumbprint */
{
    certrot_b64url_encode(key.pubkey + 1, 32, x, 44);
    certrot_b64url_encode(key.pubkey + 33, 32, y, 44);
    strcpy(tp, kid);
}
static size_t in_jws_trust_key(void) /* a valid trust_key: the thumbprint path */
{
    char x[44], y[44], tp[44];
    jwk_of(x, y, tp);
    snprintf(text, sizeof text, "{\"exp\":2147483647,\"iat\":0,\"iss\":\"certrot\",\"jti\":\"t1\",\"ops\":[{\"op\":\"trust_key\","
             "\"jwk\":{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"},\"kid\":\"%s\"}],\"seq\":1,\"sub\":\"" DEV "\"}",
             x, y, tp);
    return jws_part(text);
}
static size_t in_jws_deep_claims(void) /* claims with a member nested to the limit */
{
    size_t n = (size_t)sprintf(text, "{\"x\":");
    for (int i = 0; i < 15; i++) text[n++] = '[';
    for (int i = 0; i < 15; i++) text[n++] = ']';
    sprintf(text + n, ",\"exp\":2147483647,\"iat\":0,\"iss\":\"c\",\"jti\":\"d1\",\"ops\":[],\"seq\":1,\"sub\":\"" DEV "\"}");
    return jws_part(text);
}

/* CBOR writing */
static size_t head(uint8_t *o, int major, size_t v)
{
    if (v < 24) return o[0] = (uint8_t)(major << 5 | v), 1;
    if (v < 256) return o[0] = (uint8_t)(major << 5 | 24), o[1] = (uint8_t)v, 2;
    return o[0] = (uint8_t)(major << 5 | 25), o[1] = (uint8_t)(v >> 8), o[2] = (uint8_t)v, 3;
}
static size_t text_(uint8_t *o, const char *s)
{
    size_t n = head(o, 3, strlen(s));
    memcpy(o + n, s, strlen(s));
    return n + strlen(s);
}
static size_t bytes_(uint8_t *o, const void *d, size_t len)
{
    size_t n = head(o, 2, len);
    memcpy(o + n, d, len);
    return n + len;
}
static size_t compact_part(const uint8_t *bundle, size_t len)
{
    static const uint8_t jti[16] = "compact-jti-0001";
    size_t n = 0;
    bin[n++] = 0x84;
    n += bytes_(bin + n, jti, 16);
    bin[n++] = 1, bin[n++] = 1;
    n += bytes_(bin + n, bundle, len);
    return n;
}
static size_t in_compact_trust_key(void) /* the deepest static path: check_compact, the shared checks, thumbprint */
{
    static uint8_t pl[1000], cose[1200];
    uint8_t k[32];
    certrot_b64url_decode(kid, strlen(kid), k, 32);
    size_t p = 0;
    p += head(pl + p, 5, 7);
    p += text_(pl + p, "exp"), p += head(pl + p, 0, 0), pl[p - 1] = 0x1a, memcpy(pl + p, "\x7f\xff\xff\xff", 4), p += 4;
    p += text_(pl + p, "iat"), pl[p++] = 0;
    p += text_(pl + p, "iss"), p += text_(pl + p, "certrot");
    p += text_(pl + p, "jti"), p += bytes_(pl + p, "compact-jti-0001", 16);
    p += text_(pl + p, "ops"), p += head(pl + p, 4, 1);
    p += head(pl + p, 5, 3);
    p += text_(pl + p, "op"), p += text_(pl + p, "trust_key");
    p += text_(pl + p, "jwk"), p += head(pl + p, 5, 4);
    p += text_(pl + p, "x"), p += bytes_(pl + p, key.pubkey + 1, 32);
    p += text_(pl + p, "y"), p += bytes_(pl + p, key.pubkey + 33, 32);
    p += text_(pl + p, "crv"), p += text_(pl + p, "P-256");
    p += text_(pl + p, "kty"), p += text_(pl + p, "EC");
    p += text_(pl + p, "kid"), p += bytes_(pl + p, k, 32);
    p += text_(pl + p, "seq"), pl[p++] = 1;
    p += text_(pl + p, "sub"), p += text_(pl + p, DEV);
    uint8_t prot[38] = {0xA2, 0x01, 0x26, 0x04, 0x58, 0x20};
    memcpy(prot + 6, k, 32);
    size_t c = 0;
    cose[c++] = 0xD2, cose[c++] = 0x84;
    c += bytes_(cose + c, prot, sizeof prot);
    cose[c++] = 0xA0;
    c += bytes_(cose + c, pl, p);
    uint8_t sig[64] = {0};
    c += bytes_(cose + c, sig, 64);
    return compact_part(cose, c);
}
static size_t in_compact_deep(void) /* a compact bundle nested to the CBOR limit */
{
    static uint8_t d[64];
    size_t n = 0;
    d[n++] = 0xD2;
    for (int i = 0; i < 15; i++) d[n++] = 0x81;
    d[n++] = 0;
    return compact_part(d, n);
}

typedef struct {
    const char *name;
    bool compact, binary;
    size_t (*make)(void);
} input;
static const input inputs[] = {
    {"json-nested-arrays-1997B", false, false, in_nested_arrays},
    {"json-wide-array-2KB", false, false, in_wide_array},
    {"json-part-member-depth-16", false, false, in_deep_envelope},
    {"jws-claims-depth-16", false, false, in_jws_deep_claims},
    {"jws-write-applied", false, false, in_jws_write},
    {"jws-trust_key-applied", false, false, in_jws_trust_key},
    {"compact-depth-16", true, true, in_compact_deep},
    {"compact-trust_key-applied", true, true, in_compact_trust_key},
};

static size_t cur_len;
static const input *cur;
static bool baseline;
static void run_one(void)
{
    if (!baseline) status = certrot_on_part(&ctx, cur->binary ? bin : (const uint8_t *)msg, cur_len, 0, &res);
}

#define PAINT 0xA5
#ifndef STACK_PROBE_BARE
#define STACK_SIZE (256 * 1024)
static void *thread_main(void *arg)
{
    (void)arg;
    run_one();
    return NULL;
}
static size_t measure(void)
{
    static uint8_t *stack;
    if (!stack) stack = aligned_alloc(4096, STACK_SIZE);
    memset(stack, PAINT, STACK_SIZE);
    pthread_attr_t a;
    pthread_t t;
    pthread_attr_init(&a);
    pthread_attr_setstack(&a, stack, STACK_SIZE);
    pthread_create(&t, &a, thread_main, NULL);
    pthread_join(t, NULL);
    size_t i = 0;
    while (i < STACK_SIZE && stack[i] == PAINT) i++;
    return STACK_SIZE - i; /* includes the thread start (a few hundred bytes of libc) */
}
#else
#define PAINT_BYTES (24 * 1024)
__attribute__((noinline)) static size_t measure(void)
{
    uintptr_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    uint8_t *top = (uint8_t *)(sp - 256), *low = top - PAINT_BYTES; /* below this frame, with a margin */
    for (uint8_t *p = low; p < top; p++) *p = PAINT;
    run_one();
    uint8_t *p = low;
    while (p < top && *p == PAINT) p++;
    return (size_t)(top - p);
}
#endif

int main(void)
{
    size_t worst = 0;
    baseline = true;
    size_t base = measure(); /* the thread start (host) or the call (bare): subtracted */
    baseline = false;
    for (size_t i = 0; i < sizeof inputs / sizeof *inputs; i++) {
        cur = &inputs[i];
        setup(cur->compact);
        cur_len = cur->make();
        size_t used = measure() - base;
        if (used > worst) worst = used;
        printf("%-28s %6u B  (%s)\n", cur->name, (unsigned)used, res.reason[0] ? res.reason : certrot_status_name(status));
    }
    printf("%-28s %6u B  (baseline %u B subtracted)\n", "worst", (unsigned)worst, (unsigned)base);
    return 0;
}
