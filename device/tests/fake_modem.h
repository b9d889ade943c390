/* A fake nRF91 modem credential store (plus the flash and clock a device has), enforcing the rules that
 * bite on real hardware:
 *   - AT%CMNG writes/deletes only while offline (CFUN=4), else CME 518 -> -EPERM;
 *   - CR characters or lines with leading spaces rejected, CME 527 -> -EINVAL;
 *   - credentials over 4096 bytes rejected (-ENOMEM; real modems crash on 5 KB chains);
 *   - AT%CMNG=1 lists tag, type and the SHA-256 of the stored bytes (uppercase hex).
 * The "broker" accepts a TLS connection only when broker_tag holds a chain whose digest is broker_sha
 * (when require_digest is set), so tests can make a reconnect fail. */
#ifndef FAKE_MODEM_H
#define FAKE_MODEM_H
#include "certrot_device.h"

#define FAKE_SLOTS 10
#define FAKE_MAX_CRED 4096

typedef struct {
    bool used;
    uint32_t tag;
    uint8_t type;
    size_t len;
    uint8_t data[FAKE_MAX_CRED];
} fake_slot;

typedef struct {
    bool online;
    fake_slot slots[FAKE_SLOTS];
    int last_cme;           /* CME code of the last refused command, 0 if none */
    int fail_write_code;    /* when non-zero, the next write fails with it */
    bool require_digest;
    uint32_t broker_tag;
    char broker_sha[65];
    /* flash */
    int64_t flash_seq;
    char flash_jti[CERTROT_JTI_MAX + 1];
    certrot_trusted_key flash_keys[CERTROT_MAX_KEYS];
    size_t flash_key_count;
    int fail_store_keys_code; /* when non-zero, store_keys fails with it */
    int key_stores;
    /* clock */
    bool time_known;
    int64_t now;
    /* counters */
    int writes, deletes, refused, offline_calls, online_calls, conn_tests;
    /* client-certificate renewal (fake_modem_identity): the modem's identity key and UUID, the tag the
     * connection uses, the CSR messages published */
    const struct host_signer *identity;
    uint8_t uuid[16];
    uint32_t active_tag;
    bool activation_fails;   /* the connection with a new tag fails */
    int keygens, activations;
    char csr[4200];          /* the last CSR message published */
    int csrs_published;
} fake_modem;

/* Gives the modem an identity key and UUID, a factory client identity in tag `tag` (certificate and key PEM),
 * and fills the keygen/publish_csr/activate/store_active callbacks; the config's active_tag must be `tag`. */
int fake_modem_identity(fake_modem *fm, certrot_callbacks *cb, const struct host_signer *identity, uint32_t tag,
                        const char *cert_pem, const char *key_pem);

void fake_modem_init(fake_modem *fm);
/* Factory provisioning: bypasses the offline rule (the modem is offline during production). */
int fake_modem_provision(fake_modem *fm, uint32_t tag, uint8_t type, const void *data, size_t len);
const fake_slot *fake_modem_get(const fake_modem *fm, uint32_t tag, uint8_t type);
/* The AT%CMNG=1 response: one `%CMNG: tag,type,"HEX"` line per credential. Returns length or -1. */
long fake_modem_cmng_list(const fake_modem *fm, char *out, size_t cap);
/* Fills the modem, state and time callbacks with user = fm (crypto callbacks are left alone). */
void fake_modem_callbacks(certrot_callbacks *cb, fake_modem *fm);
/* Builds the inventory JSON from the AT%CMNG=1 listing plus the context's seq and keys, as firmware would.
 * Returns length or -1. */
long fake_modem_inventory(const fake_modem *fm, const certrot_ctx *ctx, uint32_t max_message, char *out, size_t cap);
#endif
