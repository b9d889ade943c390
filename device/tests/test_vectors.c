/* Cross-implementation vectors: bundles made by the Swift `certrot bundle make`, checked by the C library.
 *
 *   test_vectors PUBKEY.pem KID DEVICE_ID MANIFEST
 *
 * KID is what `certrot keys generate` printed; the program checks that its own RFC 7638 thumbprint of
 * PUBKEY.pem matches it. Each MANIFEST line is
 *
 *   name expect now applied_seq last_jti mode file digest
 *
 * expect: a certrot_status_name (applied, already_applied, invalid_bundle, ...); now: Unix time or - when the
 * device does not know it; applied_seq/last_jti: the device's stored state (- for none); mode: jws (the file
 * holds a JWS, sent as one part), parts (one part message per line), parts-reversed, tamper0/1/2 (JWS with
 * segment 0/1/2 changed); compact bundles (docs/protocol.md §12, `bundle make --format cose`, hex): cose (the
 * COSE_Sign1, sent as one compact part), cose-parts / cose-parts-reversed (one compact part a line),
 * cose-sig / cose-kid (the COSE_Sign1 with its last signature byte / first kid byte changed); a cose* vector
 * that starts a device gives it the compact profile (CERTROT_NRF91_COSE_BUF + CERTROT_NRF91_COSE_SCRATCH,
 * takes_compact), whose inventory must list "formats":["cose"]; digest: for applied vectors the SHA-256 tag 42 must hold afterwards, else -;
 * `kid:K` instead (trust_key only: no write) or `HEX,kid:K` (both): afterwards the device trusts K and its
 * inventory lists it in `keys`. A name starting with `+` continues on the previous vector's device (its
 * keys, state and modem; now/applied_seq/last_jti are then ignored), so a bundle signed by a key installed
 * by trust_key can be checked. Every device starts holding an old CA in tag 42. */
#include "certrot_device.h"
#include "fake_modem.h"
#include "host_crypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

static const char old_ca[] = "-----BEGIN CERTIFICATE-----\nQUJDREVGR0g=\n-----END CERTIFICATE-----\n";

typedef struct {
    fake_modem fm;
    certrot_ctx ctx;
    uint8_t jws[CERTROT_NRF91_JWS_BUF];
    uint8_t scratch[CERTROT_SCRATCH_FOR(CERTROT_NRF91_JWS_BUF)];
    bool compact;
} device;

/* Hex text to bytes (in place is fine); -1 when it is not hex. */
static long unhex(const char *in, size_t len, uint8_t *out)
{
    if (len % 2) return -1;
    for (size_t i = 0; i < len; i += 2) {
        unsigned v;
        if (sscanf(in + i, "%2x", &v) != 1) return -1;
        out[i / 2] = (uint8_t)v;
    }
    return (long)(len / 2);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s PUBKEY.pem KID DEVICE_ID MANIFEST\n", argv[0]);
        return 2;
    }
    int passed = 0, failed = 0;
    /* test_vectors --keygen OUT IDENTITY_PEM TAG: a fake modem's AT%KEYGEN output and its identity key, for
     * `certrot cert inspect` to verify (vectors.sh), which reports the result in $KEYGEN_CHECK. */
    if (argc == 5 && strcmp(argv[1], "--keygen") == 0) {
        host_signer *identity = host_signer_new();
        /* the UUID of Nordic's published KEYGEN sample (50363154-3931-44f0-8022-121b6401627d) */
        uint8_t uuid[16] = {0x50, 0x36, 0x31, 0x54, 0x39, 0x31, 0x44, 0xf0, 0x80, 0x22, 0x12, 0x1b, 0x64, 0x01, 0x62, 0x7d};
        char output[2100], key_pem[1024], id_pem[512];
        if (!identity || host_keygen(identity, uuid, (uint32_t)strtoul(argv[4], NULL, 10), "CN=vector", output,
                                     sizeof output, key_pem, sizeof key_pem) != 0 ||
            host_signer_pubkey_pem(identity, id_pem, sizeof id_pem) != 0)
            return 2;
        FILE *o = fopen(argv[2], "w"), *i = fopen(argv[3], "w");
        if (!o || !i) return 2;
        fputs(output, o);
        fputs(id_pem, i);
        fclose(o);
        fclose(i);
        host_signer_free(identity);
        return 0;
    }
    const char *keygen_check = getenv("KEYGEN_CHECK");
    if (keygen_check) {
        bool ok = strcmp(keygen_check, "ok") == 0;
        printf("%s the C fake modem's AT%%KEYGEN output verifies with certrot cert inspect (%s)\n",
               ok ? "ok  " : "FAIL", keygen_check);
        ok ? passed++ : failed++;
    }
    certrot_key key = {.kid = argv[2]};
    if (host_load_pubkey_pem(argv[1], key.pubkey) != 0) {
        fprintf(stderr, "cannot read public key %s\n", argv[1]);
        return 2;
    }
    /* The kid the library is configured with must be the RFC 7638 thumbprint of the exported key. */
    {
        char x[44], y[44], jwk[160], kid[44];
        uint8_t d[32];
        certrot_b64url_encode(key.pubkey + 1, 32, x, sizeof x);
        certrot_b64url_encode(key.pubkey + 33, 32, y, sizeof y);
        int n = snprintf(jwk, sizeof jwk, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
        host_sha256(NULL, (const uint8_t *)jwk, (size_t)n, d);
        certrot_b64url_encode(d, 32, kid, sizeof kid);
        bool ok = strcmp(kid, argv[2]) == 0;
        printf("%s kid thumbprint matches certrot's (%s)\n", ok ? "ok  " : "FAIL", kid);
        ok ? passed++ : failed++;
    }

    FILE *mf = fopen(argv[4], "r");
    if (!mf) {
        perror(argv[4]);
        return 2;
    }
    char line[2048];
    device *dev = malloc(sizeof *dev);
    while (fgets(line, sizeof line, mf)) {
        char name[128], expect[64], now[32], seq[32], jti[80], mode[32], file[1024], digest[160];
        if (line[0] == '#' || sscanf(line, "%127s %63s %31s %31s %79s %31s %1023s %159s", name, expect, now, seq, jti, mode,
                                     file, digest) != 8)
            continue;
        bool cont = name[0] == '+';
        int writes_before = cont ? dev->fm.writes : 0;
        bool cose = strncmp(mode, "cose", 4) == 0;
        if (!cont) {
            memset(dev, 0, sizeof *dev);
            dev->compact = cose;
            fake_modem_init(&dev->fm);
            fake_modem_provision(&dev->fm, 42, 0, old_ca, strlen(old_ca));
            if (strcmp(now, "-") != 0) {
                dev->fm.time_known = true;
                dev->fm.now = strtoll(now, NULL, 10);
            }
            if (strcmp(seq, "-") != 0) dev->fm.flash_seq = strtoll(seq, NULL, 10);
            if (strcmp(jti, "-") != 0) snprintf(dev->fm.flash_jti, sizeof dev->fm.flash_jti, "%.64s", jti);
            certrot_config cfg = {.device_id = argv[3], .keys = &key, .key_count = 1, .takes_compact = cose};
            cfg.cb.sha256 = host_sha256;
            cfg.cb.es256_verify = host_es256_verify;
            cfg.cb.pubkey_check = host_pubkey_check;
            fake_modem_callbacks(&cfg.cb, &dev->fm);
            size_t cap = cose ? CERTROT_NRF91_COSE_BUF : sizeof dev->jws;
            size_t scap = cose ? CERTROT_NRF91_COSE_SCRATCH : sizeof dev->scratch;
            if (certrot_init(&dev->ctx, &cfg, dev->jws, cap, dev->scratch, scap) != CERTROT_OK) {
                printf("FAIL %s: certrot_init\n", name);
                failed++;
                continue;
            }
        }
        /* digest column: HEX, kid:K, or HEX,kid:K */
        char *want_kid = strstr(digest, "kid:");
        if (want_kid) {
            if (want_kid > digest) want_kid[-1] = '\0';
            else strcpy(digest, "-");
            want_kid += 4;
        }

        size_t len;
        char *text = read_file(file, &len);
        certrot_result res;
        memset(&res, 0, sizeof res);
        certrot_status st = CERTROT_ERR_ARG;
        if (!text) {
            printf("FAIL %s: cannot read %s\n", name, file);
            failed++;
            continue;
        }
        while (len && (text[len - 1] == '\n' || text[len - 1] == '\r')) text[--len] = '\0';
        if (strncmp(mode, "cose-parts", 10) == 0) {
            char *lines[CERTROT_MAX_PARTS + 8];
            int count = 0;
            for (char *p = strtok(text, "\n"); p && count < CERTROT_MAX_PARTS + 8; p = strtok(NULL, "\n")) lines[count++] = p;
            bool reversed = strcmp(mode, "cose-parts-reversed") == 0;
            certrot_result r;
            st = CERTROT_WAITING;
            for (int i = 0; i < count; i++) {
                char *m = lines[reversed ? count - 1 - i : i];
                long n = unhex(m, strlen(m), (uint8_t *)m);
                if (n < 0 || m[0] != (char)0x84) {
                    st = CERTROT_ERR_ARG;
                    break;
                }
                certrot_status s2 = certrot_on_part(&dev->ctx, (const uint8_t *)m, (size_t)n, 0, &r);
                if (st == CERTROT_WAITING) {
                    st = s2;
                    res = r;
                }
            }
        } else if (cose) {
            long n = unhex(text, len, (uint8_t *)text);
            if (n < 12) {
                printf("FAIL %s: %s is not the hex of a COSE_Sign1\n", name, file);
                failed++;
                free(text);
                continue;
            }
            if (strcmp(mode, "cose-sig") == 0) text[n - 1] ^= 0x01;
            if (strcmp(mode, "cose-kid") == 0) text[10] ^= 0x01; /* D2 84 58 26 A2 01 26 04 58 20 <kid> */
            /* one compact part: [h'jti', 1, 1, h'cose'] */
            uint8_t *msg = malloc((size_t)n + 32);
            size_t o = 0;
            msg[o++] = 0x84;
            msg[o++] = 0x50;
            memcpy(msg + o, "vector-vector-16", 16);
            o += 16;
            msg[o++] = 0x01;
            msg[o++] = 0x01;
            if (n < 24) msg[o++] = (uint8_t)(0x40 | n);
            else if (n < 256) msg[o++] = 0x58, msg[o++] = (uint8_t)n;
            else msg[o++] = 0x59, msg[o++] = (uint8_t)(n >> 8), msg[o++] = (uint8_t)n;
            memcpy(msg + o, text, (size_t)n);
            st = certrot_on_part(&dev->ctx, msg, o + (size_t)n, 0, &res);
            free(msg);
        } else if (strncmp(mode, "parts", 5) == 0) {
            char *lines[CERTROT_MAX_PARTS + 8];
            int count = 0;
            for (char *p = strtok(text, "\n"); p && count < CERTROT_MAX_PARTS + 8; p = strtok(NULL, "\n")) lines[count++] = p;
            bool reversed = strcmp(mode, "parts-reversed") == 0;
            /* The outcome is the first message that produced an ack: after a too-large bundle is rejected,
             * later parts of it start a new assembly (as in the Swift reference device). */
            certrot_result r;
            st = CERTROT_WAITING;
            for (int i = 0; i < count; i++) {
                const char *m = lines[reversed ? count - 1 - i : i];
                certrot_status s = certrot_on_part(&dev->ctx, (const uint8_t *)m, strlen(m), 0, &r);
                if (st == CERTROT_WAITING) {
                    st = s;
                    res = r;
                }
            }
        } else {
            if (strncmp(mode, "tamper", 6) == 0) {
                int seg = mode[6] - '0';
                /* header: inside the kid (unknown_kid); claims: inside the pem body (bad_signature) */
                const char *after = seg == 0 ? "\"kid\":\"" : seg == 1 ? "CERTIFICATE-----\\n" : NULL;
                if (host_tamper(text, seg, after) != 0) {
                    printf("FAIL %s: cannot tamper segment %d\n", name, seg);
                    failed++;
                    free(text);
                    continue;
                }
            }
            char *msg = malloc(len + 100);
            int n = sprintf(msg, "{\"jti\":\"vector\",\"part\":1,\"parts\":1,\"data\":\"%s\"}", text);
            st = certrot_on_part(&dev->ctx, (const uint8_t *)msg, (size_t)n, 0, &res);
            free(msg);
        }
        free(text);

        bool ok = strcmp(certrot_status_name(st), expect) == 0;
        bool wrote = dev->fm.writes > writes_before;
        /* a trust_key-only bundle (kid:K without a digest) writes nothing to the modem */
        bool should_write = strcmp(expect, "applied") == 0 && !(want_kid && strcmp(digest, "-") == 0);
        if (want_kid) {
            /* trusted now, reported in the inventory, and kept in flash */
            bool found = false;
            for (size_t i = 0; i < certrot_key_count(&dev->ctx); i++)
                found |= strcmp(certrot_key_kid(&dev->ctx, i), want_kid) == 0;
            char inv[2048], q[64];
            snprintf(q, sizeof q, "\"%s\"]", want_kid);
            bool reported = fake_modem_inventory(&dev->fm, &dev->ctx, 2048, inv, sizeof inv) > 0 && strstr(inv, q) != NULL;
            bool stored = dev->fm.flash_key_count >= 2 && strcmp(dev->fm.flash_keys[dev->fm.flash_key_count - 1].kid, want_kid) == 0;
            if (!found || !reported || !stored) {
                ok = false;
                printf("     key %s: trusted %d, in inventory %d, stored %d\n", want_kid, found, reported, stored);
            }
        }
        if (wrote != should_write) ok = false;
        if (dev->compact) { /* the compact profile says so in its inventory */
            char inv[2048];
            if (fake_modem_inventory(&dev->fm, &dev->ctx, 2048, inv, sizeof inv) < 0 ||
                !strstr(inv, ",\"formats\":[\"cose\"]")) {
                ok = false;
                printf("     inventory lacks \"formats\":[\"cose\"]: %s\n", inv);
            }
        }
        if (strcmp(digest, "-") != 0) {
            const fake_slot *s = fake_modem_get(&dev->fm, 42, 0);
            uint8_t d[32];
            char hex[65];
            if (!s) ok = false;
            else {
                host_sha256(NULL, s->data, s->len, d);
                for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", d[i]);
                if (strcmp(hex, digest) != 0) ok = false;
            }
        }
        char ack[512] = "";
        if (res.ack != CERTROT_ACK_NONE) certrot_build_ack(&res, ack, sizeof ack);
        printf("%s %s: %s %s\n", ok ? "ok  " : "FAIL", name, certrot_status_name(st), ack);
        if (!ok) printf("     expected %s%s\n", expect, should_write ? " and a write" : " and no write");
        ok ? passed++ : failed++;
    }
    fclose(mf);
    free(dev);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
