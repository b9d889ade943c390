/* Internal helpers shared by the library's source files. Not part of the API. */
#ifndef CERTROT_INTERNAL_H
#define CERTROT_INTERNAL_H

#include "certrot_device.h"

/* Writes "<status name>: <printf message>" into reason (truncated to cap). */
void certrot_reason(char *reason, size_t cap, certrot_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* RFC 7638 thumbprint of a P-256 key: base64url(SHA-256(`{"crv":"P-256","kty":"EC","x":"…","y":"…"}`))
 * through the sha256 callback. pubkey is 0x04 || X || Y. Returns 0, or -1 (callback failed / not 0x04). */
int certrot_thumbprint(const certrot_callbacks *cb, const uint8_t pubkey[65], char kid[CERTROT_KID_LEN + 1]);

/* Index of the trusted key with this kid, or -1. */
int certrot_find_key(const certrot_ctx *ctx, const char *kid);

/* ---- CBOR (certrot_cbor.c) ---- */

#define CERTROT_CBOR_MAX_DEPTH 16

/* 0 when [p, p+len) is exactly one CBOR item in the core deterministic encoding (RFC 8949 §4.2.1): definite
 * lengths, shortest heads, map keys sorted bytewise by their encodings and none twice, UTF-8 text, no floats,
 * nesting at most CERTROT_CBOR_MAX_DEPTH, no trailing bytes. Else -1 and *why says what is wrong. */
int certrot_cbor_check(const uint8_t *p, size_t len, const char **why);

/* A cursor over checked CBOR. Each reader takes the item at the cursor and moves past it, or returns false and
 * leaves the cursor where it was (another type, or out of bounds). Strings point into the input. */
typedef struct {
    const uint8_t *p, *end;
} certrot_cbor;

bool certrot_cbor_skip(certrot_cbor *c);
bool certrot_cbor_int(certrot_cbor *c, int64_t *out); /* major type 0 or 1, within int64 */
bool certrot_cbor_bytes(certrot_cbor *c, const uint8_t **s, size_t *n);
bool certrot_cbor_text(certrot_cbor *c, const char **s, size_t *n);
bool certrot_cbor_array(certrot_cbor *c, size_t *n); /* the cursor is then on the first element */
bool certrot_cbor_map(certrot_cbor *c, size_t *n);   /* n pairs; the cursor is then on the first key */
bool certrot_cbor_tag(certrot_cbor *c, uint64_t *tag);
/* In the map whose first key is at *body (pairs pairs): the value of text key `key`. */
bool certrot_cbor_find(const certrot_cbor *body, size_t pairs, const char *key, certrot_cbor *value);

#endif
