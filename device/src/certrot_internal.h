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

/* ---- JSON (certrot_json.c) ---- */

#define CERTROT_JSON_MAX_DEPTH 16

/* 0 when [p, p+len) is exactly one JSON value (RFC 8259, whitespace around it allowed): strict numbers, strings of
 * valid UTF-8 with valid escapes and surrogate pairs and no raw control characters, nesting at most
 * CERTROT_JSON_MAX_DEPTH, nothing else. Else -1 and *why says what is wrong. No heap, no recursion. */
int certrot_json_check(const uint8_t *p, size_t len, const char **why);

/* A cursor over checked JSON, at a value (p) within [p, end). */
typedef struct {
    const uint8_t *p, *end;
} certrot_json;

/* A cursor at the value in [p, p+len) (after leading whitespace). */
certrot_json certrot_json_at(const uint8_t *p, size_t len);
/* 'o' object, 'a' array, 's' string, 'n' number, 'b' true/false, 'z' null, 0 none. */
int certrot_json_type(const certrot_json *v);
/* Moves past the value at the cursor (and the whitespace after it). */
bool certrot_json_skip(certrot_json *c);
/* In the object at *obj: the value of the first member whose key (unescaped) is `key`. */
bool certrot_json_find(const certrot_json *obj, const char *key, certrot_json *value);
/* Iterates an array: *it starts at its '['; each call gives the next element (elem->end = where it ends). */
bool certrot_json_next(certrot_json *it, certrot_json *elem);
/* The string at v unescaped (UTF-8) into out[0, cap) (no NUL); returns its whole length (which may exceed cap:
 * then out holds the first cap bytes), or -1 when v is not a string. Reads each escape whole before writing it,
 * so out may be the string's own bytes or anything before them (unescaping in place, forwards). */
long certrot_json_string(const certrot_json *v, uint8_t *out, size_t cap);
/* The string at v unescaped equals s (at most 32 bytes). */
bool certrot_json_string_is(const certrot_json *v, const char *s);
/* A number that is an integer within +-2^53 (in any notation: 10, 1.0e1, 100e-1), exactly, without doubles. */
bool certrot_json_int(const certrot_json *v, int64_t *out);

#endif
