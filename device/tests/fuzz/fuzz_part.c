/* libFuzzer target: certrot_on_part, the device's entry point for hostile input, on a fresh device per input.
 * Input: a flags byte, then either parts separated by FUZZ_SEP, or (bit 2) one whole bundle that the harness wraps
 * into parts itself, so that mutations hit the bundle and not the envelope. Flags: bit 0 the compact profile (and
 * compact parts in bundle mode), bit 1 the device knows the time, bit 2 bundle mode, bits 4-5 parts - 1 in bundle
 * mode, bit 6 send them last first. The modem has an identity (keygen, activate). Built twice: FUZZ_SIG_ANY=0 verifies ES256 for real (OpenSSL) against the key in $CERTROT_FUZZ_PUBKEY
 * (the key the seeds were signed with), FUZZ_SIG_ANY=1 takes every signature as valid, so that the fuzzer reaches
 * steps 7-11 and the modem procedure (fake modem) with bundles it mutated.
 * Properties checked besides the sanitizers: every ack fits CERTROT_ACK_MAX and is strict JSON; an applied bundle's
 * inventory builds; the fake modem never holds a credential over 4096 bytes or one written while online. */
#include "certrot_device.h"
#include "fake_modem.h"
#include "host_crypto.h"
#include "../../src/certrot_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_SEP "\xff" "PART"
#ifndef FUZZ_SIG_ANY
#define FUZZ_SIG_ANY 0
#endif

static certrot_key pinned;
static bool verbose; /* CERTROT_FUZZ_VERBOSE=1: print each part's status (to see what a seed reaches) */
static host_signer *identity;
static char factory_cert[4096], factory_key[1024];
static struct {
    fake_modem fm;
    certrot_ctx ctx;
    uint8_t jws[CERTROT_NRF91_JWS_BUF];
    uint8_t scratch[CERTROT_SCRATCH_FOR(CERTROT_NRF91_JWS_BUF)];
} dev;

static int any_signature(void *user, const uint8_t pubkey[65], const uint8_t *msg, size_t len, const uint8_t sig[64])
{
    (void)user, (void)pubkey, (void)msg, (void)len, (void)sig;
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *path = getenv("CERTROT_FUZZ_PUBKEY");
    if (!path || host_load_pubkey_pem(path, pinned.pubkey) != 0) {
        fprintf(stderr, "fuzz_part: set CERTROT_FUZZ_PUBKEY to the seeds' public key (PEM)\n");
        exit(2);
    }
    verbose = getenv("CERTROT_FUZZ_VERBOSE") != NULL;
    identity = host_signer_new();
    if (!identity || host_factory_identity("factory", factory_cert, sizeof factory_cert, factory_key, sizeof factory_key))
        exit(2);
    return 0;
}

/* Part n of k of the bundle b (len bytes) as a message: JSON with the bytes escaped as needed, or compact CBOR. */
static size_t wrap_part(uint8_t *out, bool compact, const uint8_t *b, size_t len, unsigned n, unsigned k)
{
    size_t from = len * (n - 1) / k, to = len * n / k, o = 0;
    if (compact) {
        static const uint8_t head[] = {0x84, 0x50, 'f', 'u', 'z', 'z', 'f', 'u', 'z', 'z', 'f', 'u', 'z', 'z', 'f', 'u', 'z', 'z'};
        size_t dl = to - from;
        memcpy(out, head, sizeof head);
        o = sizeof head;
        out[o++] = (uint8_t)n;
        out[o++] = (uint8_t)k;
        if (dl < 24) out[o++] = (uint8_t)(0x40 | dl);
        else if (dl < 256) out[o++] = 0x58, out[o++] = (uint8_t)dl;
        else out[o++] = 0x59, out[o++] = (uint8_t)(dl >> 8), out[o++] = (uint8_t)dl;
        memcpy(out + o, b + from, dl);
        return o + dl;
    }
    o = (size_t)sprintf((char *)out, "{\"jti\":\"fuzz\",\"part\":%u,\"parts\":%u,\"data\":\"", n, k);
    for (size_t i = from; i < to; i++) {
        if (b[i] < 0x20 || b[i] == '"' || b[i] == '\\') o += (size_t)sprintf((char *)out + o, "\\u%04x", b[i]);
        else out[o++] = b[i];
    }
    memcpy(out + o, "\"}", 2);
    return o + 2;
}

static void check_ack(const certrot_result *r)
{
    if (r->ack == CERTROT_ACK_NONE) return;
    char a[CERTROT_ACK_MAX];
    long n = certrot_build_ack(r, a, sizeof a);
    if (n < 0 || certrot_json_check((const uint8_t *)a, (size_t)n, NULL) != 0) {
        fprintf(stderr, "ack does not fit %d bytes or is not JSON: jti %s reason %s\n", CERTROT_ACK_MAX, r->jti, r->reason);
        abort();
    }
}

static void after_part(const certrot_result *r)
{
    if (verbose) fprintf(stderr, "part: %s %s\n", certrot_status_name(r->status), r->reason);
    if (r->status == CERTROT_APPLIED || r->status == CERTROT_ALREADY_APPLIED) {
        char inv[4096];
        if (fake_modem_inventory(&dev.fm, &dev.ctx, 2048, inv, sizeof inv) < 0) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t flags = data[0];
    data++, size--;
    bool compact = flags & 1;
    fake_modem_init(&dev.fm);
    static const char old[] = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    fake_modem_provision(&dev.fm, 42, 0, old, sizeof old - 1);
    if (flags & 2) {
        dev.fm.time_known = true;
        dev.fm.now = 1767225600;
    }
    certrot_config cfg = {.device_id = "nrf-352656100123456", .keys = &pinned, .key_count = 1, .takes_compact = compact};
    cfg.cb.sha256 = host_sha256;
    cfg.cb.es256_verify = FUZZ_SIG_ANY ? any_signature : host_es256_verify;
    cfg.cb.pubkey_check = host_pubkey_check;
    fake_modem_callbacks(&cfg.cb, &dev.fm);
    cfg.active_tag = 16842753;
    if (fake_modem_identity(&dev.fm, &cfg.cb, identity, 16842753, factory_cert, factory_key) != 0) abort();
    size_t cap = compact ? CERTROT_NRF91_COSE_BUF : sizeof dev.jws;
    size_t scap = compact ? CERTROT_NRF91_COSE_SCRATCH : sizeof dev.scratch;
    if (certrot_init(&dev.ctx, &cfg, dev.jws, cap, dev.scratch, scap) != CERTROT_OK) abort();

    certrot_result r;
    int64_t now = 0;
    if (flags & 4) { /* one bundle, wrapped into k parts here */
        static uint8_t msg[6 * 70000 + 64];
        unsigned k = 1 + (flags >> 4 & 3);
        if (size > 65536) return 0;
        for (unsigned i = 0; i < k; i++) {
            unsigned n = flags & 64 ? k - i : i + 1;
            size_t m = wrap_part(msg, compact, data, size, n, k);
            certrot_on_part(&dev.ctx, msg, m, now++, &r);
            check_ack(&r);
            after_part(&r);
        }
    } else {
        const uint8_t *p = data, *end = data + size;
        while (p <= end) {
            const uint8_t *q = p;
            while (q + 5 <= end && memcmp(q, FUZZ_SEP, 5) != 0) q++;
            if (q + 5 > end) q = end;
            certrot_on_part(&dev.ctx, p, (size_t)(q - p), now++, &r);
            check_ack(&r);
            after_part(&r);
            p = q + 5;
        }
    }
    for (int i = 0; i < 5; i++) /* the stall path: incomplete acks, then giving up */
        if (certrot_poll(&dev.ctx, now + 100 * (i + 1), &r)) check_ack(&r);
    for (int i = 0; i < FAKE_SLOTS; i++)
        if (dev.fm.slots[i].used && dev.fm.slots[i].len > FAKE_MAX_CRED) abort();
    if (dev.fm.refused && dev.fm.last_cme == 518) abort(); /* the library wrote while online */
    return 0;
}
