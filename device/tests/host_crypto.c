/* OpenSSL 3 implementations of the certrot crypto callbacks, for host tests and the host fleet. */
#include "host_crypto.h"

#include "certrot_device.h"

#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int host_sha256(void *user, const uint8_t *data, size_t len, uint8_t out[32])
{
    (void)user;
    unsigned int n = 0;
    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -1;
}

static EVP_PKEY *pkey_from_point(const uint8_t pubkey[65])
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"prime256v1", 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)pubkey, 65),
        OSSL_PARAM_construct_end(),
    };
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    EVP_PKEY *pkey = NULL;
    if (!pctx || EVP_PKEY_fromdata_init(pctx) != 1 || EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
    EVP_PKEY_CTX_free(pctx);
    return pkey;
}

int host_pubkey_check(void *user, const uint8_t pubkey[65])
{
    (void)user;
    EVP_PKEY *pkey = pkey_from_point(pubkey); /* decoding the point checks that it is on the curve */
    EVP_PKEY_free(pkey);
    return pkey ? 0 : -1;
}

int host_es256_verify(void *user, const uint8_t pubkey[65], const uint8_t *msg, size_t len, const uint8_t sig[64])
{
    (void)user;
    int ok = 0;
    EVP_PKEY *pkey = pkey_from_point(pubkey);
    ECDSA_SIG *es = ECDSA_SIG_new();
    unsigned char *der = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (pkey && es && md) {
        BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
        if (r && s && ECDSA_SIG_set0(es, r, s) == 1) {
            int dlen = i2d_ECDSA_SIG(es, &der);
            ok = dlen > 0 && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) == 1 &&
                 EVP_DigestVerify(md, der, (size_t)dlen, msg, len) == 1;
        } else {
            BN_free(r);
            BN_free(s);
        }
    }
    OPENSSL_free(der);
    EVP_MD_CTX_free(md);
    ECDSA_SIG_free(es);
    EVP_PKEY_free(pkey);
    return ok ? 0 : -1;
}

struct host_signer {
    EVP_PKEY *pkey;
};

host_signer *host_signer_new(void)
{
    host_signer *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!s->pkey) {
        free(s);
        return NULL;
    }
    return s;
}

void host_signer_free(host_signer *s)
{
    if (!s) return;
    EVP_PKEY_free(s->pkey);
    free(s);
}

void host_signer_pubkey(const host_signer *s, uint8_t out[65])
{
    size_t n = 0;
    EVP_PKEY_get_octet_string_param(s->pkey, OSSL_PKEY_PARAM_PUB_KEY, out, 65, &n);
}

void host_signer_kid(const host_signer *s, char out[44])
{
    uint8_t pub[65], digest[32];
    char x[44], y[44], jwk[160];
    host_signer_pubkey(s, pub);
    certrot_b64url_encode(pub + 1, 32, x, sizeof x);
    certrot_b64url_encode(pub + 33, 32, y, sizeof y);
    int n = snprintf(jwk, sizeof jwk, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
    host_sha256(NULL, (const uint8_t *)jwk, (size_t)n, digest);
    certrot_b64url_encode(digest, 32, out, 44);
}

int host_signer_sign(const host_signer *s, const uint8_t *msg, size_t len, uint8_t sig[64])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char der[80];
    size_t dlen = sizeof der;
    int rc = -1;
    if (md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, s->pkey) == 1 &&
        EVP_DigestSign(md, der, &dlen, msg, len) == 1) {
        const unsigned char *p = der;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dlen);
        if (es) {
            BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
            BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
            ECDSA_SIG_free(es);
            rc = 0;
        }
    }
    EVP_MD_CTX_free(md);
    return rc;
}

int host_load_pubkey_pem(const char *path, uint8_t out[65])
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    EVP_PKEY *pkey = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    fclose(f);
    if (!pkey) return -1;
    size_t n = 0;
    int ok = EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, out, 65, &n) == 1 && n == 65 && out[0] == 4;
    EVP_PKEY_free(pkey);
    return ok ? 0 : -1;
}

static char next_alnum(char c)
{
    if (c == 'z') return 'a';
    if (c == 'Z') return 'A';
    if (c == '9') return '0';
    return (char)(c + 1);
}

static int is_alnum(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int host_tamper(char *jws, int segment, const char *after)
{
    char *start = jws;
    for (int i = 0; i < segment; i++) {
        start = strchr(start, '.');
        if (!start) return -1;
        start++;
    }
    char *end = strchr(start, '.');
    size_t len = end ? (size_t)(end - start) : strlen(start);
    if (segment == 2) {
        if (len < 20) return -1;
        start[len / 2] = start[len / 2] == 'A' ? 'B' : 'A';
        return 0;
    }
    static uint8_t dec[100000];
    long n = certrot_b64url_decode(start, len, dec, sizeof dec);
    if (n < 0) return -1;
    size_t from = 0;
    if (after) {
        const uint8_t *hit = NULL;
        size_t alen = strlen(after);
        for (long i = 0; i + (long)alen <= n && !hit; i++)
            if (memcmp(dec + i, after, alen) == 0) hit = dec + i + alen;
        if (!hit) return -1;
        from = (size_t)(hit - dec);
    }
    for (size_t g = (from + 2) / 3 * 3; g + 3 <= (size_t)n; g += 3) {
        if (!is_alnum(dec[g]) || !is_alnum(dec[g + 1]) || !is_alnum(dec[g + 2])) continue;
        uint8_t three[3];
        char four[8];
        for (int k = 0; k < 3; k++) three[k] = (uint8_t)next_alnum((char)dec[g + k]);
        certrot_b64url_encode(three, 3, four, sizeof four);
        memcpy(start + g / 3 * 4, four, 4);
        return 0;
    }
    return -1;
}
