/* Host implementations of the crypto callbacks (OpenSSL libcrypto), plus a bundle signer for tests. */
#ifndef HOST_CRYPTO_H
#define HOST_CRYPTO_H
#include <stddef.h>
#include <stdint.h>

int host_sha256(void *user, const uint8_t *data, size_t len, uint8_t out[32]);
/* 0 when pubkey (0x04 || X || Y) is a point on P-256 (the pubkey_check callback). */
int host_pubkey_check(void *user, const uint8_t pubkey[65]);
int host_es256_verify(void *user, const uint8_t pubkey[65], const uint8_t *msg, size_t len, const uint8_t sig[64]);

/* Test signer: a fresh P-256 key. */
typedef struct host_signer host_signer;
host_signer *host_signer_new(void);
void host_signer_free(host_signer *s);
void host_signer_pubkey(const host_signer *s, uint8_t out[65]);
/* RFC 7638 kid of the key (43 chars + NUL). */
void host_signer_kid(const host_signer *s, char out[44]);
/* Signs msg, raw r||s. */
int host_signer_sign(const host_signer *s, const uint8_t *msg, size_t len, uint8_t sig[64]);

/* Reads a P-256 public key (PEM, as `certrot keys export --format pem` prints) into 0x04||X||Y. */
int host_load_pubkey_pem(const char *path, uint8_t out[65]);

/* Test helper: changes the JWS in place so that one segment decodes to different bytes while staying
 * canonical base64url and (for header/claims) valid JSON: a 3-byte group of letters/digits found after the
 * text `after` in the decoded segment is replaced by other letters/digits. segment 2 (signature) changes
 * one character in the middle. Returns 0, or -1 when no such group exists. */
int host_tamper(char *jws, int segment, const char *after);
/* A simulated modem's AT%KEYGEN=<tag>,2,0,"<subject>", in the real nRF9160/nRF9151 answer format: a new P-256 key
 * (its PEM into key_pem, to keep in the fake modem), a CSR for it signed by it (signatureAlgorithm with NULL
 * parameters, as the modem writes it), and a COSE_Sign1 (tag 18, unprotected kid h'21') by the modem's identity
 * key over the self-described (tag 55799) [9, uuid, bstr(tag), SHA-256(CSR), nonce];
 * out = base64url(CSR) "." base64url(COSE). 0 or -1. */
int host_keygen(const host_signer *identity, const uint8_t uuid[16], uint32_t tag, const char *subject, char *out,
                size_t cap, char *key_pem, size_t key_cap);
/* 0 when the first certificate of cert_pem is for the private key key_pem. */
int host_certificate_matches_key(const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len);
/* A certificate for the key of a KEYGEN output's CSR (its proof of possession checked), from a throwaway
 * issuer; and a factory identity (certificate and key PEM). 0 or -1. */
int host_issue_for_keygen(const char *output, char *cert_pem, size_t cap);
int host_factory_identity(const char *cn, char *cert_pem, size_t cert_cap, char *key_pem, size_t key_cap);
/* The signer's public key as PEM (SubjectPublicKeyInfo). 0 or -1. */
int host_signer_pubkey_pem(const host_signer *s, char *out, size_t cap);
#endif
