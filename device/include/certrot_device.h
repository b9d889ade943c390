/*
 * certrot_device: the device side of the certrot CA-rotation protocol (docs/protocol.md, v1).
 *
 * Portable C11. No heap of its own, no OS calls, no global state: everything lives in a caller-provided
 * certrot_ctx and two caller-provided buffers. Crypto, time, persistence, MQTT and the modem's credential
 * store are reached through callbacks (certrot_callbacks), so the same code runs on the host (OpenSSL,
 * fake modem) and on an nRF91 (PSA Crypto, modem_key_mgmt, lte_lc).
 *
 * No heap at all: JSON (the part envelope, the JWS header and claims) is read by the library's own reader, which
 * does not recurse (nesting at most 16) and does not allocate, like the CBOR reader of compact bundles
 * (docs/protocol.md §12, certrot_config.takes_compact). Peak stack of certrot_on_part: README.md, "Memory".
 *
 * Typical use, one device:
 *
 *   certrot_init(&ctx, &cfg, jws_buf, sizeof jws_buf, scratch, sizeof scratch);
 *   on MQTT message on "{id}/certs":
 *       certrot_on_part(&ctx, payload, len, now_s, &res);
 *       if (res.ack != CERTROT_ACK_NONE) publish certrot_build_ack(&res) on "{id}/certs/ack" (QoS 1)
 *       if (res.republish_inventory)     publish the inventory (retained, QoS 1)
 *   periodically:
 *       if (certrot_poll(&ctx, now_s, &res)) publish the incomplete ack
 */
#ifndef CERTROT_DEVICE_H
#define CERTROT_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Limits (docs/protocol.md §10) ---------------------------------------------------------------- */

#define CERTROT_MAX_PARTS 64         /* parts per bundle */
#define CERTROT_JTI_MAX 64           /* jti bytes accepted (acks carry 1..64) */
#define CERTROT_DEVICE_ID_MAX 128    /* device ID bytes */
#define CERTROT_KID_LEN 43           /* RFC 7638 thumbprint, base64url of 32 bytes */
#define CERTROT_MAX_CREDENTIAL 4096  /* nrf91 profile maxCredential: largest pem */
#define CERTROT_MAX_OPS 8            /* ops per bundle this library handles (v1 sends one per target) */
#define CERTROT_REASON_MAX 200       /* the daemon keeps the first 200 characters of a reason */
/* An ack certrot_build_ack makes for a result of certrot_on_part/certrot_poll always fits this (with its NUL):
 * jti <= 64 bytes without control characters (JSON form <= 128), reason <= 200 bytes with nothing to escape,
 * code <= 11 characters: {"jti":"<128>","status":"incomplete","code":-2147483648,"reason":"<200>"} is 391 bytes;
 * an incomplete ack with all 64 parts missing is 355. */
#define CERTROT_ACK_MAX 512
#define CERTROT_MAX_TAG 2147483647L
#define CERTROT_IAT_SKEW 300         /* seconds of clock skew tolerated for iat */
#define CERTROT_SUBJECT_MAX 256      /* keygen subject bytes */
#define CERTROT_KEYGEN_MAX 2048      /* AT%KEYGEN output accepted from the keygen callback */
/* Trusted bundle-verification keys kept in the context: the pinned ones from certrot_config plus those
 * installed by trust_key ops (docs/protocol.md §3.3, §3.7). The inventory may list at most 8. */
#ifndef CERTROT_MAX_KEYS
#define CERTROT_MAX_KEYS 4
#endif
#if CERTROT_MAX_KEYS < 1 || CERTROT_MAX_KEYS > 8
#error "CERTROT_MAX_KEYS must be 1..8 (docs/protocol.md §2: an inventory lists at most 8 keys)"
#endif
/* Reference assembly buffer for nrf91: 3 * maxCredential + 2048. */
#define CERTROT_NRF91_JWS_BUF (3 * CERTROT_MAX_CREDENTIAL + 2048)
/* Scratch needed for a JWS buffer of n bytes: the decoded claims (3/4 of it) plus a NUL. */
#define CERTROT_SCRATCH_FOR(n) (((n) / 4) * 3 + 4)

/* Compact bundles (docs/protocol.md §12, certrot_config.takes_compact), nrf91 profile. The assembly buffer holds
 * the COSE_Sign1 (a 4096-byte PEM chain is at most 2.99 KB of DER, plus about 0.4 KB of claims and framing) and,
 * once the bundle is checked, the rollback copies of what it replaces (4096 bytes: one full 4 KB credential).
 * The scratch holds the COSE Sig_structure while the signature is checked (shorter than the bundle), then the
 * PEMs built from the DER (up to n + 2048 bytes in all, less 109 bytes per trust_key op and each keygen subject).
 * Static RAM of the compact profile: 4096 + 6144 + sizeof(certrot_ctx) (about 1.1 KB) = about 11.3 KB. */
#define CERTROT_NRF91_COSE_BUF CERTROT_MAX_CREDENTIAL
/* Scratch needed for compact bundles with an assembly buffer of n bytes (checked by certrot_init). */
#define CERTROT_COSE_SCRATCH_FOR(n) ((n) + 2048)
#define CERTROT_NRF91_COSE_SCRATCH CERTROT_COSE_SCRATCH_FOR(CERTROT_NRF91_COSE_BUF)

/* ---- Status --------------------------------------------------------------------------------------- */

typedef enum {
    CERTROT_OK = 0,
    CERTROT_WAITING,              /* part stored; more parts needed */
    CERTROT_IGNORED,              /* not a valid part message (§5 step 2), or a part of the bundle last
                                   * rejected as too large: dropped without an ack */
    CERTROT_TOO_LARGE,            /* bundle does not fit the JWS buffer: rejected, assembly discarded */
    CERTROT_INVALID_BUNDLE,       /* §5 steps 4, 7-11: invalid_bundle */
    CERTROT_UNKNOWN_KID,          /* step 5 */
    CERTROT_BAD_SIGNATURE,        /* step 6 */
    CERTROT_INVALID_PEM,          /* step 11: pem not in normal form */
    CERTROT_CREDENTIAL_TOO_LARGE, /* step 11: pem over CERTROT_MAX_CREDENTIAL */
    CERTROT_INVALID_KEY,          /* step 11: trust_key jwk is not a P-256 public key (as the reference) */
    CERTROT_KEY_TABLE_FULL,       /* trust_key: no room for another key (CERTROT_MAX_KEYS): rejected */
    CERTROT_INVALID_CBOR,         /* compact bundle: not CBOR in the core deterministic encoding, or not a
                                   * COSE_Sign1 array (invalid_cbor, as the reference) */
    CERTROT_ALREADY_APPLIED,      /* jti equals the last applied jti: acked applied again, nothing written */
    CERTROT_APPLIED,              /* every op written and the connection test passed */
    CERTROT_MODEM_FAILED,         /* write/offline/online failed; previous content restored */
    CERTROT_RECONNECT_FAILED,     /* reconnect test failed; previous content restored */
    CERTROT_STORE_FAILED,         /* store_keys failed; previous modem content restored, keys unchanged */
    CERTROT_KEYGEN_FAILED,        /* keygen: AT%KEYGEN (or the delete before it) failed; acked failed */
    CERTROT_ACTIVATE_FAILED,      /* activate: no connection with the new tag; back on the old one, acked
                                   * failed with reason "activate_failed" */
    CERTROT_ERR_ARG,              /* bad argument / misconfiguration */
    CERTROT_ERR_NOSPACE           /* an output buffer is too small */
} certrot_status;

/* Short code name, as used in ack reasons: "invalid_bundle", "bad_signature", ... */
const char *certrot_status_name(certrot_status s);

typedef enum {
    CERTROT_ACK_NONE = 0,
    CERTROT_ACK_APPLIED,
    CERTROT_ACK_REJECTED,
    CERTROT_ACK_FAILED,
    CERTROT_ACK_INCOMPLETE
} certrot_ack_status;

/* What the application must do after a message or a poll: publish an ack, republish the inventory. */
typedef struct {
    certrot_status status;
    certrot_ack_status ack;
    bool republish_inventory;
    bool has_code;
    int32_t code;                          /* modem error code for failed acks */
    char jti[CERTROT_JTI_MAX + 1];
    char reason[CERTROT_REASON_MAX + 1]; /* whole UTF-8 characters, no control characters, '"' or '\\' */
    uint8_t missing_count;                 /* for incomplete acks */
    uint8_t missing[CERTROT_MAX_PARTS];
} certrot_result;

/* ---- Configuration and callbacks ------------------------------------------------------------------ */

/* A pinned bundle-verification key, as printed by `certrot keys export --format c`. */
typedef struct {
    const char *kid;      /* CERTROT_PUBKEY_KID; checked against the thumbprint at init (NULL: computed) */
    uint8_t pubkey[65];   /* uncompressed P-256 point 0x04 || X || Y */
} certrot_key;

/* A trusted key as the context keeps it and as load_keys/store_keys exchange it with flash. */
typedef struct {
    char kid[CERTROT_KID_LEN + 1]; /* RFC 7638 thumbprint, NUL-terminated */
    uint8_t pubkey[65];            /* 0x04 || X || Y */
} certrot_trusted_key;

/* Every callback gets the `user` pointer from certrot_callbacks. Unless stated, 0 means success and a
 * negative value is an error code (modem_key_mgmt style: -EPERM, -EINVAL, ... or an AT CME code). */
typedef struct {
    void *user;

    /* Crypto. sha256: out = SHA-256(data). es256_verify: returns 0 only when sig (raw r||s, 64 bytes) is a
     * valid ES256 signature by pubkey over msg (the ASCII signing input, hashed by the callback). */
    int (*sha256)(void *user, const uint8_t *data, size_t len, uint8_t out[32]);
    int (*es256_verify)(void *user, const uint8_t pubkey[65], const uint8_t *msg, size_t len, const uint8_t sig[64]);

    /* Wall clock: 0 and *unix_s set when the device knows the time (e.g. from the network), non-zero when
     * it does not; then exp/iat are not checked (docs/protocol.md §5 step 9). May be NULL (= unknown). */
    int (*now)(void *user, int64_t *unix_s);

    /* Persistent state: the applied seq and the jti of the last applied bundle (jti "" when none). load
     * is called once from certrot_init; store after every applied bundle, before the applied ack. */
    int (*load_state)(void *user, int64_t *seq, char jti[CERTROT_JTI_MAX + 1]);
    int (*store_state)(void *user, int64_t seq, const char *jti);

    /* Trusted keys (trust_key). load_keys is called once from certrot_init: fill keys[0..*count) (at most
     * CERTROT_MAX_KEYS) with what store_keys last stored, or set *count = 0; entries whose kid is not the
     * thumbprint of their pubkey are skipped, and the pinned keys of certrot_config always come first.
     * store_keys gets the whole table (pinned + installed) whenever a bundle adds a key, after the modem
     * writes and the reconnect test and before store_state; a non-zero return rolls the bundle back
     * (ack failed). Both may be NULL: installed keys then live in RAM only and are lost on reboot (the
     * daemon sees them missing from the inventory and sends trust_key again). */
    int (*load_keys)(void *user, certrot_trusted_key keys[CERTROT_MAX_KEYS], size_t *count);
    int (*store_keys)(void *user, const certrot_trusted_key *keys, size_t count);
    /* Optional: 0 when pubkey (0x04 || X || Y) is a valid P-256 point (e.g. psa_import_key succeeds).
     * NULL: a trust_key jwk is checked for form only (EC, P-256, 32-byte x and y, thumbprint). */
    int (*pubkey_check)(void *user, const uint8_t pubkey[65]);

    /* Modem credential store, shaped like nRF Connect SDK modem_key_mgmt. */
    int (*key_exists)(void *user, uint32_t tag, uint8_t type, bool *exists);
    int (*key_cmp)(void *user, uint32_t tag, uint8_t type, const void *buf, size_t len); /* 0 equal, 1 differ */
    int (*key_read)(void *user, uint32_t tag, uint8_t type, void *buf, size_t *len);     /* *len: in cap, out size */
    int (*key_write)(void *user, uint32_t tag, uint8_t type, const void *buf, size_t len);
    int (*key_delete)(void *user, uint32_t tag, uint8_t type);

    /* Connectivity: go_offline = disconnect MQTT + AT+CFUN=4; go_online = AT+CFUN=1. test_connection
     * reconnects TLS + MQTT and returns 0 only if that succeeded within timeout_s seconds. */
    int (*go_offline)(void *user);
    int (*go_online)(void *user);
    int (*test_connection)(void *user, uint32_t timeout_s);

    /* Client-certificate renewal (docs/protocol.md §11); all NULL on a device that does not renew its identity
     * (it then reports no `active` tag, and a keygen or activate op is rejected).
     * keygen: with the modem offline, AT%KEYGEN=<tag>,2,0,"<subject>"; writes the output (NUL-terminated,
     * base64url CSR "." base64url COSE) into out[0..cap) and returns 0, or the modem's error (518, 519, ...).
     * publish_csr: publishes json on {id}/certs/csr at QoS 1, not retained; 0 when handed to the MQTT client.
     * activate: reconnect TLS + MQTT using this sec tag; 0 only if that succeeded within timeout_s.
     * store_active: persist the active tag (flash); called once a connection with it succeeded. */
    int (*keygen)(void *user, uint32_t tag, const char *subject, char *out, size_t cap);
    int (*publish_csr)(void *user, const char *json, size_t len);
    int (*activate)(void *user, uint32_t tag, uint32_t timeout_s);
    int (*store_active)(void *user, uint32_t tag);
} certrot_callbacks;

typedef struct {
    const char *device_id;            /* the topic's {id}; bundles must have sub == device_id */
    const certrot_key *keys;          /* pinned keys, selected by kid; 1..CERTROT_MAX_KEYS */
    size_t key_count;
    certrot_callbacks cb;
    uint32_t reconnect_timeout_s;     /* bound passed to test_connection; 0 -> 60 */
    uint32_t stall_s;                 /* ask for missing parts after this long without a part; 0 -> 30 */
    uint8_t max_incomplete_asks;      /* then give the assembly up; 0 -> 3 */
    /* With the keygen, publish_csr and activate callbacks set: the sec tag the connection uses now (from
     * flash), reported as the inventory's `active`. Ignored without them. */
    uint32_t active_tag;
    /* Takes compact bundles (docs/protocol.md §12): the inventory lists "formats":["cose"] and parts starting
     * with 0x84 are assembled and checked as CBOR. Needs a scratch of CERTROT_COSE_SCRATCH_FOR(jws_cap)
     * (CERTROT_NRF91_COSE_BUF / CERTROT_NRF91_COSE_SCRATCH). false: compact parts are ignored, as by the
     * reference device. */
    bool takes_compact;
} certrot_config;

/* ---- Context (opaque in spirit: read only through the functions below) ---------------------------- */

typedef struct {
    certrot_config cfg;
    uint8_t *jws;                     /* caller's assembly buffer */
    size_t jws_cap;
    uint8_t *scratch;                 /* caller's scratch: decoded claims, then the pem bytes */
    size_t scratch_cap;

    /* current assembly: parts are kept in part order as they arrive (buffer[0, asm_used) is the stored parts'
     * data concatenated in part number order; certrot_device.c, asm_add) */
    char asm_jti[CERTROT_JTI_MAX + 1];
    uint8_t asm_parts;                /* 0 = no assembly */
    uint64_t asm_have;                /* bit n-1 set when part n is stored */
    size_t asm_used;
    uint16_t asm_len[CERTROT_MAX_PARTS];
    int64_t asm_last_part_s;
    uint8_t asm_asks;

    bool asm_compact;                 /* the assembly is of compact parts (its jti: 32 lowercase hex digits) */

    char rejected_jti[CERTROT_JTI_MAX + 1]; /* last bundle rejected as too large: its parts are dropped */

    int64_t applied_seq;
    char applied_jti[CERTROT_JTI_MAX + 1];

    /* trusted keys: pinned (certrot_config) first, then loaded/installed ones; never removed */
    certrot_trusted_key keys[CERTROT_MAX_KEYS];
    size_t key_count;

    int64_t active_tag;               /* -1: no identity renewal (the callbacks are not set) */
} certrot_ctx;

/* jws_buf bounds the bundle size (CERTROT_NRF91_JWS_BUF recommended); scratch must hold at least
 * CERTROT_SCRATCH_FOR(jws_cap) bytes. Loads the persistent state and the stored trusted keys. Buffers must
 * stay valid. CERTROT_ERR_ARG also when a pinned key's kid is not the thumbprint of its pubkey, or when
 * key_count is 0 or above CERTROT_MAX_KEYS. */
certrot_status certrot_init(certrot_ctx *ctx, const certrot_config *cfg, uint8_t *jws_buf, size_t jws_cap,
                            uint8_t *scratch, size_t scratch_cap);

/* Handles one message received on {id}/certs (§5 step 1, the packet-size drop, is the transport's job).
 * now_s is any monotonic seconds counter, used only for the stall timer. Runs checks and, when a bundle
 * is complete and valid, applies it through the modem callbacks. Always fills *res. */
certrot_status certrot_on_part(certrot_ctx *ctx, const uint8_t *payload, size_t len, int64_t now_s,
                               certrot_result *res);

/* Call every few seconds. Returns true and fills *res with an incomplete ack when the current assembly
 * has stalled for stall_s; after max_incomplete_asks asks it discards the assembly (returns false). */
bool certrot_poll(certrot_ctx *ctx, int64_t now_s, certrot_result *res);

/* Lower-level steps, exposed for tests and for firmware that drives them itself. */

/* Verifies and checks a complete JWS (§5 steps 4-11 and the already-applied rule). Does not touch the
 * modem. On CERTROT_OK the ops can be read with certrot_checked_op() until the next call. */
typedef struct {
    bool is_write;        /* write (else delete, or trust_key when is_trust_key) */
    bool is_trust_key;    /* trust_key: pubkey/kid set, tag/type unused */
    bool is_keygen;       /* keygen: tag and subject set, type unused */
    bool is_activate;     /* activate: tag set, type unused */
    const char *subject;  /* keygen: NUL-terminated, into the scratch buffer */
    uint32_t tag;
    uint8_t type;
    const uint8_t *pem;   /* into the scratch buffer */
    size_t pem_len;
    const uint8_t *pubkey; /* trust_key: 0x04 || X || Y, into the scratch buffer */
    const char *kid;       /* trust_key: the checked thumbprint (NUL-terminated), into the scratch buffer */
} certrot_op;

typedef struct {
    char jti[CERTROT_JTI_MAX + 1];
    int64_t seq, iat, exp;
    size_t op_count;
    certrot_op ops[CERTROT_MAX_OPS];
} certrot_bundle;

certrot_status certrot_check_bundle(certrot_ctx *ctx, const uint8_t *jws, size_t len, certrot_bundle *out,
                                    char *reason, size_t reason_cap);

/* The same for a compact bundle (the COSE_Sign1 bytes, docs/protocol.md §12), without heap: strict
 * deterministic CBOR, tag 18, protected header {1: -7, 4: kid}, empty unprotected header, the signature over
 * the Sig_structure (built in scratch), then the checks shared with certrot_check_bundle; each write's DER is
 * checked as X.509 and turned into its PEM normal form in scratch, whose SHA-256 must be the op's sha256. The
 * ops' pem/kid/subject point into scratch; the assembly buffer is free afterwards (rollback copies). The jti
 * is the 32 lowercase hex digits of the 16 jti bytes. */
certrot_status certrot_check_compact(certrot_ctx *ctx, const uint8_t *cose, size_t len, certrot_bundle *out,
                                     char *reason, size_t reason_cap);

/* Applies a checked bundle with read-back, CFUN=4, write, CFUN=1, connection test and rollback, then adds
 * the trust_key keys (store_keys) and stores seq + jti. Only trust_key ops (or writes of content already
 * there): no offline cycle. Uses the JWS buffer for the rollback copies. Fills res (applied or failed). */
certrot_status certrot_apply_bundle(certrot_ctx *ctx, const certrot_bundle *b, certrot_result *res);

int64_t certrot_applied_seq(const certrot_ctx *ctx);

/* The sec tag the connection uses (the inventory's `active`), or -1 when the device does not renew its
 * identity. */
int64_t certrot_active_tag(const certrot_ctx *ctx);

/* The trusted keys (pinned first, then installed ones in the order they came): count, and the kid of key
 * i (NULL when i is out of range). */
size_t certrot_key_count(const certrot_ctx *ctx);
const char *certrot_key_kid(const certrot_ctx *ctx, size_t i);

/* ---- Codecs ---------------------------------------------------------------------------------------- */

/* Strict, canonical, unpadded base64url (RFC 4648 §5). Returns decoded length or -1. out may alias in. */
long certrot_b64url_decode(const char *in, size_t len, uint8_t *out, size_t out_cap);
/* Encodes without padding; NUL-terminates. Returns length or -1 if out_cap is too small. */
long certrot_b64url_encode(const uint8_t *in, size_t len, char *out, size_t out_cap);

/* True when pem is exactly in the normal form of docs/protocol.md §3.5 (CERTIFICATE blocks). */
bool certrot_pem_is_normal(const uint8_t *pem, size_t len);

/* True when der is exactly one well-formed X.509 Certificate at the ASN.1 level: SEQUENCE { tbsCertificate
 * SEQUENCE {[0] version, serial, AlgorithmIdentifier, issuer, validity (2 times), subject, SubjectPublicKeyInfo,
 * [1], [2], [3]}, AlgorithmIdentifier, BIT STRING }, DER lengths exact and minimal, nothing after. */
bool certrot_der_is_certificate(const uint8_t *der, size_t len);
/* Bytes of the CERTIFICATE block of §3.5 for a DER of der_len bytes. */
size_t certrot_pem_block_len(size_t der_len);
/* Writes that block (standard base64, 64-character lines, LF, final LF) into out. Returns its length or -1. */
long certrot_der_to_pem(const uint8_t *der, size_t len, uint8_t *out, size_t out_cap);

/* ---- JSON builders (no heap) -------------------------------------------------------------------- */

/* Ack JSON of §6. Returns the length written (NUL-terminated) or -1 when out is too small (never for a result of
 * certrot_on_part/certrot_poll and out_cap >= CERTROT_ACK_MAX). */
long certrot_build_ack(const certrot_result *res, char *out, size_t out_cap);

/* The CSR message of docs/protocol.md §11 for a keygen op: {"v":1,"jti":…,"tag":…,"keygen":…}. Returns the length
 * written (NUL-terminated) or -1 (out too small, over 4096 bytes, or an empty jti or output). certrot_apply_bundle
 * builds and publishes it itself; exposed for firmware that drives the steps. */
long certrot_build_csr(const char *jti, uint32_t tag, const char *keygen, char *out, size_t out_cap);

/* One credential of the inventory, as AT%CMNG=1 lists it (plus optional AT%CERTEXPIRY data). */
typedef struct {
    uint32_t tag;
    uint8_t type;
    char sha256[65];      /* 64 lowercase hex digits */
    bool has_not_after;
    int64_t not_after;
    const char *serial;   /* NULL when unknown; at most 64 bytes */
} certrot_cred;

/* Inventory JSON of §2 for this device: `seq` is the applied seq and `keys` the kids of every trusted key
 * (reporting `keys` is what tells the daemon the device supports trust_key), `active` with identity renewal,
 * and `"formats":["cose"]` when certrot_config.takes_compact is set. max_message 0 omits it.
 * Returns length or -1 (too small, or a rule of §2 broken: duplicate (tag,type), bad digest, more than
 * 256 creds). Use this one. */
long certrot_build_inventory_ctx(const certrot_ctx *ctx, uint32_t max_message, const certrot_cred *creds,
                                 size_t count, char *out, size_t out_cap);

/* The same without `keys` (a device without trust_key support; the daemon then never sends one). */
long certrot_build_inventory(int64_t seq, uint32_t max_message, const certrot_cred *creds, size_t count,
                             char *out, size_t out_cap);

/* Parses one AT%CMNG=1 response line, e.g. `%CMNG: 42,0,"2C43...A1"`, into *cred (digest lowercased).
 * Returns 0, or -1 when the line is not a listing line with a 64-hex-digit digest. */
int certrot_parse_cmng_line(const char *line, certrot_cred *cred);

#ifdef __cplusplus
}
#endif
#endif
