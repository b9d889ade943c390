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

#endif
