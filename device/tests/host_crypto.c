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

/* ---- A simulated modem's AT%KEYGEN (docs/protocol.md §11) ---- */

#include <openssl/x509.h>
#include <openssl/x509v3.h>

static size_t cbor_head(uint8_t *out, uint8_t major, uint64_t n)
{
    if (n < 24) {
        out[0] = (uint8_t)(major << 5 | n);
        return 1;
    }
    if (n < 256) {
        out[0] = (uint8_t)(major << 5 | 24);
        out[1] = (uint8_t)n;
        return 2;
    }
    if (n < 65536) {
        out[0] = (uint8_t)(major << 5 | 25);
        out[1] = (uint8_t)(n >> 8);
        out[2] = (uint8_t)n;
        return 3;
    }
    out[0] = (uint8_t)(major << 5 | 26);
    for (int i = 0; i < 4; i++) out[1 + i] = (uint8_t)(n >> (24 - 8 * i));
    return 5;
}

static size_t cbor_bstr(uint8_t *out, const uint8_t *d, size_t n)
{
    size_t h = cbor_head(out, 2, n);
    memcpy(out + h, d, n);
    return h + n;
}

/* A DER length at out (the fewest bytes); returns the bytes written. */
static size_t der_len(uint8_t *out, size_t n)
{
    if (n < 0x80) {
        out[0] = (uint8_t)n;
        return 1;
    }
    size_t k = n < 0x100 ? 1 : n < 0x10000 ? 2 : 3;
    out[0] = (uint8_t)(0x80 | k);
    for (size_t i = 0; i < k; i++) out[1 + i] = (uint8_t)(n >> (8 * (k - 1 - i)));
    return 1 + k;
}

/* The TLV at p (n bytes): header length and content length. 0 when it is not one. */
static int der_tlv_at(const uint8_t *p, size_t n, size_t *hdr, size_t *len)
{
    if (n < 2) return 0;
    if (p[1] < 0x80) *hdr = 2, *len = p[1];
    else {
        size_t k = p[1] & 0x7f;
        if (k == 0 || k > 3 || n < 2 + k) return 0;
        *len = 0;
        for (size_t i = 0; i < k; i++) *len = *len << 8 | p[2 + i];
        *hdr = 2 + k;
    }
    return *len <= n - *hdr;
}

/* The CSR as the nRF91 modem writes it: OpenSSL's CertificationRequest with its outer signatureAlgorithm
 * rewritten as ecdsa-with-SHA256 WITH NULL parameters (30 0c 06 08 2a8648ce3d040302 05 00), which OpenSSL never
 * writes. The signature covers only certificationRequestInfo, so it still verifies. Returns the new length
 * (into out, cap bytes) or -1. */
static long modem_csr_der(const uint8_t *der, size_t len, uint8_t *out, size_t cap)
{
    static const uint8_t alg_null[] = {0x30, 0x0c, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02, 0x05, 0x00};
    size_t h, l, ih, il, ah, al, bh, bl;
    if (!der_tlv_at(der, len, &h, &l) || der[0] != 0x30 || h + l != len) return -1;
    const uint8_t *info = der + h, *end = der + len;
    if (info[0] != 0x30 || !der_tlv_at(info, (size_t)(end - info), &ih, &il)) return -1;
    const uint8_t *alg = info + ih + il;
    if (alg >= end || alg[0] != 0x30 || !der_tlv_at(alg, (size_t)(end - alg), &ah, &al)) return -1;
    const uint8_t *bits = alg + ah + al;
    if (bits >= end || bits[0] != 0x03 || !der_tlv_at(bits, (size_t)(end - bits), &bh, &bl) || bits + bh + bl != end)
        return -1;
    size_t body = (ih + il) + sizeof alg_null + (bh + bl), o = 0;
    if (body + 5 > cap) return -1;
    out[o++] = 0x30;
    o += der_len(out + o, body);
    memcpy(out + o, info, ih + il);
    o += ih + il;
    memcpy(out + o, alg_null, sizeof alg_null);
    o += sizeof alg_null;
    memcpy(out + o, bits, bh + bl);
    return (long)(o + bh + bl);
}

/* The answer of a real nRF9160/nRF9151 to AT%KEYGEN=<tag>,2,0 (Nordic's sample, nRFCloud/utils
 * tests/test_modem_credentials_parser.py), byte for byte in shape:
 *   base64url(CSR DER) "." base64url(COSE_Sign1)
 *   CSR: a P-256 key, subject CN=…, an extensionRequest with keyUsage (digitalSignature, nonRepudiation,
 *        keyEncipherment, keyAgreement; not critical), signatureAlgorithm ecdsa-with-SHA256 with NULL parameters.
 *   COSE_Sign1: tag 18 (d2) [ bstr {1: -7}, {4: h'21'}, payload, 64-byte r||s ]
 *        protected h'a10126'; unprotected kid h'21' (the CBOR of -2, "identity_key": Nordic's parser decodes the
 *        kid as CBOR and looks it up, so only such a value parses);
 *        payload = d9d9f7 (self-described CBOR, tag 55799) 85 [9 (CSR message v1), bstr 16-byte UUID,
 *        bstr(CBOR of the sec tag as a signed 32-bit integer), bstr SHA-256(CSR DER as output), bstr 16-byte nonce]
 *   The signature is over ["Signature1", h'a10126', h'', payload] with the payload INCLUDING the d9d9f7 prefix.
 * The subject: Nordic's sample has CN=<device UUID, 8-4-4-4-12 lowercase>; this fake keeps the subject the keygen
 * op asks for (CN=… only), which certrot ignores anyway (the daemon issues the certificate for its own subject
 * and checks only the key, the proof of possession and the attestation). */
int host_keygen(const host_signer *identity, const uint8_t uuid[16], uint32_t tag, const char *subject, char *out,
                size_t cap, char *key_pem, size_t key_cap)
{
    int rc = -1;
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509_REQ *req = X509_REQ_new();
    uint8_t *ossl_der = NULL, der[1024];
    BIO *bio = BIO_new(BIO_s_mem());
    if (!key || !req || !bio) goto done;
    const char *cn = strncmp(subject, "CN=", 3) == 0 ? subject + 3 : subject;
    X509_NAME *name = X509_REQ_get_subject_name(req);
    if (X509_REQ_set_version(req, 0) != 1 ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0) != 1 ||
        X509_REQ_set_pubkey(req, key) != 1)
        goto done;
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    X509_EXTENSION *usage = X509V3_EXT_conf_nid(NULL, NULL, NID_key_usage,
                                                "digitalSignature,nonRepudiation,keyEncipherment,keyAgreement");
    if (exts && usage) sk_X509_EXTENSION_push(exts, usage);
    int added = exts && usage && X509_REQ_add_extensions(req, exts) == 1;
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    if (!added || X509_REQ_sign(req, key, EVP_sha256()) <= 0) goto done;
    int ossl_len = i2d_X509_REQ(req, &ossl_der);
    long der_n = ossl_len > 0 ? modem_csr_der(ossl_der, (size_t)ossl_len, der, sizeof der) : -1;
    if (der_n <= 0) goto done;

    uint8_t payload[128], digest[32], nonce[16], tag_cbor[8], sig_structure[192], sig[64], cose[256];
    size_t n = 0, t = 0, s = 0, c = 0;
    host_sha256(NULL, der, (size_t)der_n, digest);
    for (int i = 0; i < 16; i++) nonce[i] = (uint8_t)rand();
    int32_t signed_tag = (int32_t)tag;
    t = signed_tag < 0 ? cbor_head(tag_cbor, 1, (uint64_t)(-1 - (int64_t)signed_tag))
                       : cbor_head(tag_cbor, 0, (uint64_t)signed_tag);
    payload[n++] = 0xD9; /* tag 55799: self-described CBOR */
    payload[n++] = 0xD9;
    payload[n++] = 0xF7;
    payload[n++] = 0x85;
    payload[n++] = 0x09; /* CSR message v1 */
    n += cbor_bstr(payload + n, uuid, 16);
    n += cbor_bstr(payload + n, tag_cbor, t);
    n += cbor_bstr(payload + n, digest, 32);
    n += cbor_bstr(payload + n, nonce, 16);
    static const uint8_t protected_hdr[] = {0xA1, 0x01, 0x26};           /* {1: -7}: ES256 */
    static const uint8_t unprotected_hdr[] = {0xA1, 0x04, 0x41, 0x21}; /* {4: h'21'}: kid -2, identity key */
    sig_structure[s++] = 0x84;
    s += cbor_head(sig_structure + s, 3, 10);
    memcpy(sig_structure + s, "Signature1", 10);
    s += 10;
    s += cbor_bstr(sig_structure + s, protected_hdr, sizeof protected_hdr);
    sig_structure[s++] = 0x40; /* external_aad: empty */
    s += cbor_bstr(sig_structure + s, payload, n);
    if (host_signer_sign(identity, sig_structure, s, sig) != 0) goto done;
    cose[c++] = 0xD2; /* tag 18: COSE_Sign1 */
    cose[c++] = 0x84;
    c += cbor_bstr(cose + c, protected_hdr, sizeof protected_hdr);
    memcpy(cose + c, unprotected_hdr, sizeof unprotected_hdr);
    c += sizeof unprotected_hdr;
    c += cbor_bstr(cose + c, payload, n);
    c += cbor_bstr(cose + c, sig, 64);

    long a = certrot_b64url_encode(der, (size_t)der_n, out, cap);
    if (a < 0 || (size_t)a + 1 >= cap) goto done;
    out[a] = '.';
    if (certrot_b64url_encode(cose, c, out + a + 1, cap - (size_t)a - 1) < 0) goto done;
    /* The key stays in the modem: here, a PEM in the slot (tag, 2), for the fake TLS check. */
    if (PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1) goto done;
    char *pem = NULL;
    long pem_len = BIO_get_mem_data(bio, &pem);
    if (pem_len <= 0 || (size_t)pem_len >= key_cap) goto done;
    memcpy(key_pem, pem, (size_t)pem_len);
    key_pem[pem_len] = '\0';
    rc = 0;
done:
    OPENSSL_free(ossl_der);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    BIO_free(bio);
    return rc;
}

int host_certificate_matches_key(const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len)
{
    BIO *cb = BIO_new_mem_buf(cert_pem, (int)cert_len), *kb = BIO_new_mem_buf(key_pem, (int)key_len);
    X509 *cert = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    int ok = cert && key && EVP_PKEY_eq(X509_get0_pubkey(cert), key) == 1;
    X509_free(cert);
    EVP_PKEY_free(key);
    BIO_free(cb);
    BIO_free(kb);
    return ok ? 0 : -1;
}

int host_signer_pubkey_pem(const host_signer *s, char *out, size_t cap)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem = NULL;
    long n = bio && PEM_write_bio_PUBKEY(bio, s->pkey) == 1 ? BIO_get_mem_data(bio, &pem) : -1;
    int rc = n > 0 && (size_t)n < cap ? 0 : -1;
    if (!rc) {
        memcpy(out, pem, (size_t)n);
        out[n] = '\0';
    }
    BIO_free(bio);
    return rc;
}

/* A certificate (PEM) for pub, named cn, signed by a throwaway issuer: what a test needs to activate a tag. */
static int issue_for(EVP_PKEY *pub, const char *cn, char *cert_pem, size_t cap)
{
    int rc = -1;
    EVP_PKEY *issuer = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *cert = X509_new();
    BIO *bio = BIO_new(BIO_s_mem());
    if (!issuer || !cert || !bio) goto done;
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), rand() & 0x7fffffff);
    X509_gmtime_adj(X509_getm_notBefore(cert), -300);
    X509_gmtime_adj(X509_getm_notAfter(cert), 86400L * 365);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(cert, name);
    if (X509_set_pubkey(cert, pub) != 1 || X509_sign(cert, issuer, EVP_sha256()) <= 0) goto done;
    if (PEM_write_bio_X509(bio, cert) != 1) goto done;
    char *pem = NULL;
    long n = BIO_get_mem_data(bio, &pem);
    if (n <= 0 || (size_t)n >= cap) goto done;
    memcpy(cert_pem, pem, (size_t)n);
    cert_pem[n] = '\0';
    rc = 0;
done:
    EVP_PKEY_free(issuer);
    X509_free(cert);
    BIO_free(bio);
    return rc;
}

int host_issue_for_keygen(const char *output, char *cert_pem, size_t cap)
{
    const char *dot = strchr(output, '.');
    size_t len = dot ? (size_t)(dot - output) : strlen(output);
    uint8_t der[1024];
    long n = certrot_b64url_decode(output, len, der, sizeof der);
    if (n <= 0) return -1;
    const uint8_t *p = der;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, n);
    EVP_PKEY *pub = req ? X509_REQ_get_pubkey(req) : NULL;
    /* proof of possession, as the daemon checks it */
    int rc = pub && X509_REQ_verify(req, pub) == 1 ? issue_for(pub, "device", cert_pem, cap) : -1;
    EVP_PKEY_free(pub);
    X509_REQ_free(req);
    return rc;
}

int host_factory_identity(const char *cn, char *cert_pem, size_t cert_cap, char *key_pem, size_t key_cap)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    BIO *bio = BIO_new(BIO_s_mem());
    int rc = -1;
    char *pem = NULL;
    long n;
    if (key && bio && issue_for(key, cn, cert_pem, cert_cap) == 0 &&
        PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) == 1 && (n = BIO_get_mem_data(bio, &pem)) > 0 &&
        (size_t)n < key_cap) {
        memcpy(key_pem, pem, (size_t)n);
        key_pem[n] = '\0';
        rc = 0;
    }
    EVP_PKEY_free(key);
    BIO_free(bio);
    return rc;
}
