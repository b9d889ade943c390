// certrot's bridge to a PKCS#11 (Cryptoki v2.40) module: the few calls that signing with a token key needs, on a
// module loaded with dlopen. Only the types and constants used here are declared (the layouts follow the OASIS
// PKCS#11 v2.40 headers: CK_ULONG is unsigned long, structures are not packed on Unix), so the build needs no
// vendor header. Every call returns the module's CK_RV; CERTROT_P11_DLERROR stands for a module that cannot be
// loaded at all.
#ifndef CERTROT_CPKCS11_H
#define CERTROT_CPKCS11_H

#include <stddef.h>
#include <stdint.h>

#define CERTROT_P11_DLERROR 0xFFFFFFFFUL

typedef struct certrot_p11_module certrot_p11_module;

/// Loads the module at `path` and initialises it (OS locking: the module may be called from several threads, one
/// session per thread). `error` receives dlerror() text when the return is CERTROT_P11_DLERROR.
unsigned long certrot_p11_load(const char *path, certrot_p11_module **out, char *error, size_t error_len);
/// C_Finalize then C_Initialize: every session of the module is gone, and the module scans for its tokens again (a
/// token that went away and came back is seen only after this).
unsigned long certrot_p11_reinitialize(certrot_p11_module *module);
/// C_Finalize, then dlclose.
void certrot_p11_unload(certrot_p11_module *module);

/// The slot whose token matches every non-NULL field (the token's padded label, serial, manufacturer, model) and
/// `slot_id` when it is not -1. `matches` receives how many slots matched; the first is returned.
unsigned long certrot_p11_find_slot(
    certrot_p11_module *module, const char *label, const char *serial, const char *manufacturer, const char *model,
    long long slot_id, unsigned long *slot, unsigned long *matches);

/// A read-write serial session on `slot`.
unsigned long certrot_p11_open_session(certrot_p11_module *module, unsigned long slot, unsigned long *session);
unsigned long certrot_p11_close_session(certrot_p11_module *module, unsigned long session);
/// C_Login as the normal user; CKR_USER_ALREADY_LOGGED_IN is success (login is per token, not per session).
unsigned long certrot_p11_login(certrot_p11_module *module, unsigned long session, const char *pin, size_t pin_len);

#define CERTROT_P11_CLASS_PUBLIC_KEY 2UL
#define CERTROT_P11_CLASS_PRIVATE_KEY 3UL

#define CERTROT_P11_KEY_RSA 0x0UL
#define CERTROT_P11_KEY_EC 0x3UL

/// Key objects of `klass` and `key_type` (CKK_EC, CKK_RSA) matching `label` (NULL: any) and `id` (NULL: any); up to
/// `capacity` handles.
unsigned long certrot_p11_find_keys(
    certrot_p11_module *module, unsigned long session, unsigned long klass, unsigned long key_type, const char *label,
    const uint8_t *id, size_t id_len, unsigned long *handles, unsigned long capacity, unsigned long *count);

/// An attribute's value (CKA_EC_POINT 0x181, CKA_EC_PARAMS 0x180, CKA_ID 0x102, CKA_LABEL 0x3): `*len` is the
/// buffer's size on entry and the value's on return.
unsigned long certrot_p11_attribute(
    certrot_p11_module *module, unsigned long session, unsigned long handle, unsigned long type, uint8_t *value,
    size_t *len);

#define CERTROT_P11_CKM_RSA_PKCS 0x1UL
#define CERTROT_P11_CKM_ECDSA 0x1041UL

/// C_Sign with a mechanism that takes no parameters, over what the caller prepared: CKM_ECDSA over a digest
/// (`signature` receives r ‖ s: 64 bytes for P-256, 96 for P-384), CKM_RSA_PKCS over a DigestInfo (the signature is
/// the modulus's size).
unsigned long certrot_p11_sign(
    certrot_p11_module *module, unsigned long session, unsigned long key, unsigned long mechanism,
    const uint8_t *input, size_t input_len, uint8_t *signature, size_t *signature_len);

/// An EC key pair made inside the token (CKM_EC_KEY_PAIR_GEN) on the named curve `curve` (the DER of its OID):
/// private half sensitive, never extractable, for signing only; both halves token objects with `label` and `id`.
unsigned long certrot_p11_generate_ec(
    certrot_p11_module *module, unsigned long session, const uint8_t *curve, size_t curve_len, const char *label,
    const uint8_t *id, size_t id_len, unsigned long *public_key, unsigned long *private_key);

/// The same for an RSA pair of `bits` bits, public exponent 65537 (CKM_RSA_PKCS_KEY_PAIR_GEN).
unsigned long certrot_p11_generate_rsa(
    certrot_p11_module *module, unsigned long session, unsigned long bits, const char *label, const uint8_t *id,
    size_t id_len, unsigned long *public_key, unsigned long *private_key);

#endif
