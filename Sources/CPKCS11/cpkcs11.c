#include "cpkcs11.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// PKCS#11 v2.40 types and constants (OASIS pkcs11t.h), only those used here.
typedef unsigned char CK_BYTE;
typedef unsigned long CK_ULONG;
typedef CK_ULONG CK_RV;
typedef CK_ULONG CK_FLAGS;
typedef CK_ULONG CK_SLOT_ID;
typedef CK_ULONG CK_SESSION_HANDLE;
typedef CK_ULONG CK_OBJECT_HANDLE;
typedef CK_ULONG CK_ATTRIBUTE_TYPE;
typedef CK_ULONG CK_MECHANISM_TYPE;
typedef CK_BYTE CK_BBOOL;
typedef void *CK_VOID_PTR;

typedef struct {
    CK_BYTE major;
    CK_BYTE minor;
} CK_VERSION;

typedef struct {
    CK_BYTE label[32];
    CK_BYTE manufacturerID[32];
    CK_BYTE model[16];
    CK_BYTE serialNumber[16];
    CK_FLAGS flags;
    CK_ULONG ulMaxSessionCount;
    CK_ULONG ulSessionCount;
    CK_ULONG ulMaxRwSessionCount;
    CK_ULONG ulRwSessionCount;
    CK_ULONG ulMaxPinLen;
    CK_ULONG ulMinPinLen;
    CK_ULONG ulTotalPublicMemory;
    CK_ULONG ulFreePublicMemory;
    CK_ULONG ulTotalPrivateMemory;
    CK_ULONG ulFreePrivateMemory;
    CK_VERSION hardwareVersion;
    CK_VERSION firmwareVersion;
    CK_BYTE utcTime[16];
} CK_TOKEN_INFO;

typedef struct {
    CK_ATTRIBUTE_TYPE type;
    CK_VOID_PTR pValue;
    CK_ULONG ulValueLen;
} CK_ATTRIBUTE;

typedef struct {
    CK_MECHANISM_TYPE mechanism;
    CK_VOID_PTR pParameter;
    CK_ULONG ulParameterLen;
} CK_MECHANISM;

typedef struct {
    CK_VOID_PTR CreateMutex;
    CK_VOID_PTR DestroyMutex;
    CK_VOID_PTR LockMutex;
    CK_VOID_PTR UnlockMutex;
    CK_FLAGS flags;
    CK_VOID_PTR pReserved;
} CK_C_INITIALIZE_ARGS;

#define CKR_OK 0x0UL
#define CKR_BUFFER_TOO_SMALL 0x150UL
#define CKR_USER_ALREADY_LOGGED_IN 0x100UL
#define CKR_CRYPTOKI_ALREADY_INITIALIZED 0x191UL
#define CKR_HOST_MEMORY 0x2UL
#define CKR_ARGUMENTS_BAD 0x7UL
#define CKF_OS_LOCKING_OK 0x2UL
#define CKF_RW_SESSION 0x2UL
#define CKF_SERIAL_SESSION 0x4UL
#define CKU_USER 1UL
#define CKA_CLASS 0x0UL
#define CKA_TOKEN 0x1UL
#define CKA_PRIVATE 0x2UL
#define CKA_LABEL 0x3UL
#define CKA_KEY_TYPE 0x100UL
#define CKA_ID 0x102UL
#define CKA_SENSITIVE 0x103UL
#define CKA_ENCRYPT 0x104UL
#define CKA_DECRYPT 0x105UL
#define CKA_WRAP 0x106UL
#define CKA_UNWRAP 0x107UL
#define CKA_SIGN 0x108UL
#define CKA_VERIFY 0x10AUL
#define CKA_DERIVE 0x10CUL
#define CKA_EXTRACTABLE 0x162UL
#define CKA_EC_PARAMS 0x180UL
#define CKA_MODULUS_BITS 0x121UL
#define CKA_PUBLIC_EXPONENT 0x122UL
#define CKK_EC 0x3UL
#define CKM_RSA_PKCS_KEY_PAIR_GEN 0x0UL
#define CKM_EC_KEY_PAIR_GEN 0x1040UL
#define CKM_ECDSA 0x1041UL

typedef CK_RV (*CK_FN)(void);

// CK_FUNCTION_LIST: the version, then the 68 v2.40 entry points in the standard's order. Only those called are
// typed; the others hold their place.
typedef struct {
    CK_VERSION version;
    CK_RV (*C_Initialize)(CK_VOID_PTR);
    CK_RV (*C_Finalize)(CK_VOID_PTR);
    CK_FN C_GetInfo;
    CK_FN C_GetFunctionList;
    CK_RV (*C_GetSlotList)(CK_BBOOL, CK_SLOT_ID *, CK_ULONG *);
    CK_FN C_GetSlotInfo;
    CK_RV (*C_GetTokenInfo)(CK_SLOT_ID, CK_TOKEN_INFO *);
    CK_FN C_GetMechanismList;
    CK_FN C_GetMechanismInfo;
    CK_FN C_InitToken;
    CK_FN C_InitPIN;
    CK_FN C_SetPIN;
    CK_RV (*C_OpenSession)(CK_SLOT_ID, CK_FLAGS, CK_VOID_PTR, CK_VOID_PTR, CK_SESSION_HANDLE *);
    CK_RV (*C_CloseSession)(CK_SESSION_HANDLE);
    CK_FN C_CloseAllSessions;
    CK_FN C_GetSessionInfo;
    CK_FN C_GetOperationState;
    CK_FN C_SetOperationState;
    CK_RV (*C_Login)(CK_SESSION_HANDLE, CK_ULONG, CK_BYTE *, CK_ULONG);
    CK_FN C_Logout;
    CK_FN C_CreateObject;
    CK_FN C_CopyObject;
    CK_FN C_DestroyObject;
    CK_FN C_GetObjectSize;
    CK_RV (*C_GetAttributeValue)(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_ATTRIBUTE *, CK_ULONG);
    CK_FN C_SetAttributeValue;
    CK_RV (*C_FindObjectsInit)(CK_SESSION_HANDLE, CK_ATTRIBUTE *, CK_ULONG);
    CK_RV (*C_FindObjects)(CK_SESSION_HANDLE, CK_OBJECT_HANDLE *, CK_ULONG, CK_ULONG *);
    CK_RV (*C_FindObjectsFinal)(CK_SESSION_HANDLE);
    CK_FN C_EncryptInit;
    CK_FN C_Encrypt;
    CK_FN C_EncryptUpdate;
    CK_FN C_EncryptFinal;
    CK_FN C_DecryptInit;
    CK_FN C_Decrypt;
    CK_FN C_DecryptUpdate;
    CK_FN C_DecryptFinal;
    CK_FN C_DigestInit;
    CK_FN C_Digest;
    CK_FN C_DigestUpdate;
    CK_FN C_DigestKey;
    CK_FN C_DigestFinal;
    CK_RV (*C_SignInit)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_OBJECT_HANDLE);
    CK_RV (*C_Sign)(CK_SESSION_HANDLE, CK_BYTE *, CK_ULONG, CK_BYTE *, CK_ULONG *);
    CK_FN C_SignUpdate;
    CK_FN C_SignFinal;
    CK_FN C_SignRecoverInit;
    CK_FN C_SignRecover;
    CK_FN C_VerifyInit;
    CK_FN C_Verify;
    CK_FN C_VerifyUpdate;
    CK_FN C_VerifyFinal;
    CK_FN C_VerifyRecoverInit;
    CK_FN C_VerifyRecover;
    CK_FN C_DigestEncryptUpdate;
    CK_FN C_DecryptDigestUpdate;
    CK_FN C_SignEncryptUpdate;
    CK_FN C_DecryptVerifyUpdate;
    CK_FN C_GenerateKey;
    CK_RV (*C_GenerateKeyPair)(
        CK_SESSION_HANDLE, CK_MECHANISM *, CK_ATTRIBUTE *, CK_ULONG, CK_ATTRIBUTE *, CK_ULONG, CK_OBJECT_HANDLE *,
        CK_OBJECT_HANDLE *);
    CK_FN C_WrapKey;
    CK_FN C_UnwrapKey;
    CK_FN C_DeriveKey;
    CK_FN C_SeedRandom;
    CK_FN C_GenerateRandom;
    CK_FN C_GetFunctionStatus;
    CK_FN C_CancelFunction;
    CK_FN C_WaitForSlotEvent;
} CK_FUNCTION_LIST;

struct certrot_p11_module {
    void *library;
    CK_FUNCTION_LIST *functions;
};

unsigned long certrot_p11_load(const char *path, certrot_p11_module **out, char *error, size_t error_len) {
    *out = NULL;
    void *library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        snprintf(error, error_len, "%s", dlerror());
        return CERTROT_P11_DLERROR;
    }
    CK_RV (*get_list)(CK_FUNCTION_LIST **) = (CK_RV(*)(CK_FUNCTION_LIST **))dlsym(library, "C_GetFunctionList");
    if (get_list == NULL) {
        snprintf(error, error_len, "%s exports no C_GetFunctionList", path);
        dlclose(library);
        return CERTROT_P11_DLERROR;
    }
    CK_FUNCTION_LIST *functions = NULL;
    CK_RV rv = get_list(&functions);
    if (rv != CKR_OK || functions == NULL) {
        dlclose(library);
        return rv == CKR_OK ? CKR_ARGUMENTS_BAD : rv;
    }
    CK_C_INITIALIZE_ARGS args = {NULL, NULL, NULL, NULL, CKF_OS_LOCKING_OK, NULL};
    rv = functions->C_Initialize(&args);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        dlclose(library);
        return rv;
    }
    certrot_p11_module *module = malloc(sizeof *module);
    if (module == NULL) {
        dlclose(library);
        return CKR_HOST_MEMORY;
    }
    module->library = library;
    module->functions = functions;
    *out = module;
    return CKR_OK;
}

unsigned long certrot_p11_reinitialize(certrot_p11_module *module) {
    module->functions->C_Finalize(NULL);
    CK_C_INITIALIZE_ARGS args = {NULL, NULL, NULL, NULL, CKF_OS_LOCKING_OK, NULL};
    CK_RV rv = module->functions->C_Initialize(&args);
    return rv == CKR_CRYPTOKI_ALREADY_INITIALIZED ? CKR_OK : rv;
}

void certrot_p11_unload(certrot_p11_module *module) {
    if (module == NULL) return;
    module->functions->C_Finalize(NULL);
    dlclose(module->library);
    free(module);
}

// A token field is padded with blanks to its width; `want` matches when it equals the field without the padding.
static int field_matches(const CK_BYTE *field, size_t width, const char *want) {
    if (want == NULL) return 1;
    size_t length = width;
    while (length > 0 && (field[length - 1] == ' ' || field[length - 1] == '\0')) length--;
    return strlen(want) == length && memcmp(field, want, length) == 0;
}

unsigned long certrot_p11_find_slot(
    certrot_p11_module *module, const char *label, const char *serial, const char *manufacturer, const char *model,
    long long slot_id, unsigned long *slot, unsigned long *matches) {
    *matches = 0;
    CK_ULONG count = 0;
    CK_RV rv = module->functions->C_GetSlotList(1, NULL, &count);
    if (rv != CKR_OK) return rv;
    if (count == 0) return CKR_OK;
    CK_SLOT_ID *slots = calloc(count, sizeof *slots);
    if (slots == NULL) return CKR_HOST_MEMORY;
    rv = module->functions->C_GetSlotList(1, slots, &count);
    for (CK_ULONG i = 0; rv == CKR_OK && i < count; i++) {
        if (slot_id >= 0 && (CK_SLOT_ID)slot_id != slots[i]) continue;
        CK_TOKEN_INFO info;
        if (module->functions->C_GetTokenInfo(slots[i], &info) != CKR_OK) continue;
        if (!field_matches(info.label, sizeof info.label, label)) continue;
        if (!field_matches(info.serialNumber, sizeof info.serialNumber, serial)) continue;
        if (!field_matches(info.manufacturerID, sizeof info.manufacturerID, manufacturer)) continue;
        if (!field_matches(info.model, sizeof info.model, model)) continue;
        if (*matches == 0) *slot = slots[i];
        (*matches)++;
    }
    free(slots);
    return rv;
}

unsigned long certrot_p11_open_session(certrot_p11_module *module, unsigned long slot, unsigned long *session) {
    return module->functions->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, session);
}

unsigned long certrot_p11_close_session(certrot_p11_module *module, unsigned long session) {
    return module->functions->C_CloseSession(session);
}

unsigned long certrot_p11_login(certrot_p11_module *module, unsigned long session, const char *pin, size_t pin_len) {
    CK_RV rv = module->functions->C_Login(session, CKU_USER, (CK_BYTE *)pin, pin_len);
    return rv == CKR_USER_ALREADY_LOGGED_IN ? CKR_OK : rv;
}

unsigned long certrot_p11_find_keys(
    certrot_p11_module *module, unsigned long session, unsigned long klass, unsigned long key_type, const char *label,
    const uint8_t *id, size_t id_len, unsigned long *handles, unsigned long capacity, unsigned long *count) {
    CK_ATTRIBUTE template[4] = {
        {CKA_CLASS, &klass, sizeof klass},
        {CKA_KEY_TYPE, &key_type, sizeof key_type},
    };
    CK_ULONG n = 2;
    if (label != NULL) template[n++] = (CK_ATTRIBUTE){CKA_LABEL, (void *)label, strlen(label)};
    if (id != NULL) template[n++] = (CK_ATTRIBUTE){CKA_ID, (void *)id, id_len};
    *count = 0;
    CK_RV rv = module->functions->C_FindObjectsInit(session, template, n);
    if (rv != CKR_OK) return rv;
    CK_ULONG found = 0;
    rv = module->functions->C_FindObjects(session, handles, capacity, &found);
    CK_RV final = module->functions->C_FindObjectsFinal(session);
    *count = found;
    return rv != CKR_OK ? rv : final;
}

unsigned long certrot_p11_attribute(
    certrot_p11_module *module, unsigned long session, unsigned long handle, unsigned long type, uint8_t *value,
    size_t *len) {
    CK_ATTRIBUTE attribute = {type, value, *len};
    CK_RV rv = module->functions->C_GetAttributeValue(session, handle, &attribute, 1);
    if (rv == CKR_OK) *len = attribute.ulValueLen;
    return rv;
}

unsigned long certrot_p11_sign(
    certrot_p11_module *module, unsigned long session, unsigned long key, unsigned long mechanism_type,
    const uint8_t *digest, size_t digest_len, uint8_t *signature, size_t *signature_len) {
    CK_MECHANISM mechanism = {mechanism_type, NULL, 0};
    CK_RV rv = module->functions->C_SignInit(session, &mechanism, key);
    if (rv != CKR_OK) return rv;
    CK_ULONG length = *signature_len;
    rv = module->functions->C_Sign(session, (CK_BYTE *)digest, digest_len, signature, &length);
    if (rv == CKR_OK) *signature_len = length;
    return rv;
}

// The attributes both halves of a generated pair share: token objects, label and id; the private half sensitive,
// never extractable, for signing only.
static CK_RV generate_pair(
    certrot_p11_module *module, unsigned long session, CK_MECHANISM *mechanism, CK_ATTRIBUTE *algorithm,
    CK_ULONG algorithm_count, const char *label, const uint8_t *id, size_t id_len, unsigned long *public_key,
    unsigned long *private_key) {
    CK_BBOOL yes = 1, no = 0;
    CK_ATTRIBUTE public_template[8] = {
        {CKA_TOKEN, &yes, 1}, {CKA_VERIFY, &yes, 1}, {CKA_ENCRYPT, &no, 1}, {CKA_WRAP, &no, 1},
        {CKA_LABEL, (void *)label, strlen(label)}, {CKA_ID, (void *)id, id_len},
    };
    CK_ULONG public_count = 6;
    for (CK_ULONG i = 0; i < algorithm_count && public_count < 8; i++) public_template[public_count++] = algorithm[i];
    CK_ATTRIBUTE private_template[] = {
        {CKA_TOKEN, &yes, 1},       {CKA_PRIVATE, &yes, 1},
        {CKA_SENSITIVE, &yes, 1},   {CKA_EXTRACTABLE, &no, 1},
        {CKA_SIGN, &yes, 1},        {CKA_DECRYPT, &no, 1},
        {CKA_DERIVE, &no, 1},       {CKA_UNWRAP, &no, 1},
        {CKA_LABEL, (void *)label, strlen(label)},
        {CKA_ID, (void *)id, id_len},
    };
    return module->functions->C_GenerateKeyPair(
        session, mechanism, public_template, public_count, private_template,
        sizeof private_template / sizeof *private_template, public_key, private_key);
}

unsigned long certrot_p11_generate_ec(
    certrot_p11_module *module, unsigned long session, const uint8_t *curve, size_t curve_len, const char *label,
    const uint8_t *id, size_t id_len, unsigned long *public_key, unsigned long *private_key) {
    CK_MECHANISM mechanism = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    CK_ATTRIBUTE algorithm[] = {{CKA_EC_PARAMS, (void *)curve, curve_len}};
    return generate_pair(module, session, &mechanism, algorithm, 1, label, id, id_len, public_key, private_key);
}

unsigned long certrot_p11_generate_rsa(
    certrot_p11_module *module, unsigned long session, unsigned long bits, const char *label, const uint8_t *id,
    size_t id_len, unsigned long *public_key, unsigned long *private_key) {
    static const CK_BYTE f4[] = {0x01, 0x00, 0x01};
    CK_ULONG modulus_bits = bits;
    CK_MECHANISM mechanism = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    CK_ATTRIBUTE algorithm[] = {
        {CKA_MODULUS_BITS, &modulus_bits, sizeof modulus_bits}, {CKA_PUBLIC_EXPONENT, (void *)f4, sizeof f4},
    };
    return generate_pair(module, session, &mechanism, algorithm, 2, label, id, id_len, public_key, private_key);
}
