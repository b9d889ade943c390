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

#endif
