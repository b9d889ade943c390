/*
 * certrot adapter for the nRF Connect SDK (nRF91): modem_key_mgmt, lte_lc, PSA Crypto, date_time,
 * nrf_modem_at.
 *
 * *** NOT BUILT OR TESTED in this repository: the nRF Connect SDK is not available here. ***
 * It is written against the NCS 2.x APIs as documented; expect to adjust include paths, Kconfig
 * (CONFIG_MODEM_KEY_MGMT, CONFIG_LTE_LINK_CONTROL, CONFIG_DATE_TIME, CONFIG_NRF_SECURITY with
 * CONFIG_PSA_WANT_ALG_ECDSA / CONFIG_PSA_WANT_ECC_SECP_R1_256 / CONFIG_PSA_WANT_ALG_SHA_256,
 * CONFIG_CJSON_LIB) and the hook functions to your application. See docs/firmware.md.
 *
 * The application provides six hooks (MQTT and flash are application business):
 *   int certrot_app_mqtt_disconnect(void);                  before AT+CFUN=4
 *   int certrot_app_mqtt_reconnect(uint32_t timeout_s);     TLS + MQTT connect, 0 only when CONNACK came in time
 *   int certrot_app_load_state(int64_t *seq, char *jti);    e.g. settings/NVS; jti buffer is 65 bytes
 *   int certrot_app_store_state(int64_t seq, const char *jti);
int certrot_app_load_keys(certrot_trusted_key *keys, size_t *count);
int certrot_app_store_keys(const certrot_trusted_key *keys, size_t count);
 *   int certrot_app_load_keys(certrot_trusted_key *keys, size_t *count);   trust_key table, at most
 *   int certrot_app_store_keys(const certrot_trusted_key *keys, size_t count);  CERTROT_MAX_KEYS entries
 *
 * For client-certificate renewal (docs/protocol.md §11, certrot_ncs_identity_callbacks), three more:
 *   int certrot_app_publish_csr(const char *json, size_t len);   on {id}/certs/csr, QoS 1, not retained
 *   int certrot_app_mqtt_reconnect_tag(uint32_t sec_tag, uint32_t timeout_s);  TLS with this sec tag only
 *   int certrot_app_store_active(uint32_t sec_tag);              flash: the tag to connect with at boot
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <date_time.h>
#include <modem/lte_lc.h>
#include <modem/modem_key_mgmt.h>
#include <nrf_modem_at.h>
#include <psa/crypto.h>

#include "certrot_device.h"

int certrot_app_mqtt_disconnect(void);
int certrot_app_mqtt_reconnect(uint32_t timeout_s);
int certrot_app_load_state(int64_t *seq, char *jti);
int certrot_app_store_state(int64_t seq, const char *jti);

/* ---- crypto: PSA ------------------------------------------------------------------------------------ */

static int ncs_sha256(void *user, const uint8_t *data, size_t len, uint8_t out[32])
{
    size_t olen = 0;
    (void)user;
    return psa_hash_compute(PSA_ALG_SHA_256, data, len, out, 32, &olen) == PSA_SUCCESS && olen == 32 ? 0 : -EIO;
}

/* PSA takes and returns ECDSA signatures as raw r||s, exactly the JWS ES256 form. */
static int ncs_es256_verify(void *user, const uint8_t pubkey[65], const uint8_t *msg, size_t len, const uint8_t sig[64])
{
    psa_key_attributes_t attr = PSA_KEY_ATTRIBUTES_INIT;
    psa_key_id_t id;
    (void)user;
    psa_set_key_type(&attr, PSA_KEY_TYPE_ECC_PUBLIC_KEY(PSA_ECC_FAMILY_SECP_R1));
    psa_set_key_bits(&attr, 256);
    psa_set_key_usage_flags(&attr, PSA_KEY_USAGE_VERIFY_MESSAGE);
    psa_set_key_algorithm(&attr, PSA_ALG_ECDSA(PSA_ALG_SHA_256));
    if (psa_import_key(&attr, pubkey, 65, &id) != PSA_SUCCESS) return -EINVAL;
    psa_status_t st = psa_verify_message(id, PSA_ALG_ECDSA(PSA_ALG_SHA_256), msg, len, sig, 64);
    psa_destroy_key(id);
    return st == PSA_SUCCESS ? 0 : -EBADMSG;
}

/* trust_key: a jwk is only trusted when PSA accepts it as a P-256 public key (point on the curve). */
static int ncs_pubkey_check(void *user, const uint8_t pubkey[65])
{
    psa_key_attributes_t attr = PSA_KEY_ATTRIBUTES_INIT;
    psa_key_id_t id;
    (void)user;
    psa_set_key_type(&attr, PSA_KEY_TYPE_ECC_PUBLIC_KEY(PSA_ECC_FAMILY_SECP_R1));
    psa_set_key_bits(&attr, 256);
    psa_set_key_usage_flags(&attr, PSA_KEY_USAGE_VERIFY_MESSAGE);
    psa_set_key_algorithm(&attr, PSA_ALG_ECDSA(PSA_ALG_SHA_256));
    if (psa_import_key(&attr, pubkey, 65, &id) != PSA_SUCCESS) return -EINVAL;
    psa_destroy_key(id);
    return 0;
}

/* ---- time: date_time (network time); unknown until the modem got it -------------------------------- */

static int ncs_now(void *user, int64_t *unix_s)
{
    int64_t ms;
    (void)user;
    if (!date_time_is_valid() || date_time_now(&ms) != 0) return -EAGAIN;
    *unix_s = ms / 1000;
    return 0;
}

/* ---- modem credential store: modem_key_mgmt (AT%CMNG); certrot types 0..6 are the AT%CMNG types ----- */

static int ncs_exists(void *u, uint32_t tag, uint8_t type, bool *exists)
{
    (void)u;
    return modem_key_mgmt_exists(tag, (enum modem_key_mgmt_cred_type)type, exists);
}

static int ncs_cmp(void *u, uint32_t tag, uint8_t type, const void *buf, size_t len)
{
    (void)u;
    return modem_key_mgmt_cmp(tag, (enum modem_key_mgmt_cred_type)type, buf, len);
}

static int ncs_read(void *u, uint32_t tag, uint8_t type, void *buf, size_t *len)
{
    (void)u;
    return modem_key_mgmt_read(tag, (enum modem_key_mgmt_cred_type)type, buf, len);
}

/* Must run offline: AT%CMNG answers 518 while the modem is active. */
static int ncs_write(void *u, uint32_t tag, uint8_t type, const void *buf, size_t len)
{
    (void)u;
    return modem_key_mgmt_write(tag, (enum modem_key_mgmt_cred_type)type, buf, len);
}

static int ncs_delete(void *u, uint32_t tag, uint8_t type)
{
    (void)u;
    return modem_key_mgmt_delete(tag, (enum modem_key_mgmt_cred_type)type);
}

/* ---- connectivity ----------------------------------------------------------------------------------- */

static int ncs_go_offline(void *u)
{
    (void)u;
    certrot_app_mqtt_disconnect();
    return lte_lc_func_mode_set(LTE_LC_FUNC_MODE_OFFLINE); /* AT+CFUN=4 */
}

static int ncs_go_online(void *u)
{
    (void)u;
    return lte_lc_connect(); /* AT+CFUN=1 and wait for registration */
}

static int ncs_test_connection(void *u, uint32_t timeout_s)
{
    (void)u;
    return certrot_app_mqtt_reconnect(timeout_s);
}

static int ncs_load(void *u, int64_t *seq, char jti[CERTROT_JTI_MAX + 1])
{
    (void)u;
    return certrot_app_load_state(seq, jti);
}

static int ncs_store(void *u, int64_t seq, const char *jti)
{
    (void)u;
    return certrot_app_store_state(seq, jti);
}

static int ncs_load_keys(void *u, certrot_trusted_key keys[CERTROT_MAX_KEYS], size_t *count)
{
    (void)u;
    return certrot_app_load_keys(keys, count);
}

static int ncs_store_keys(void *u, const certrot_trusted_key *keys, size_t count)
{
    (void)u;
    return certrot_app_store_keys(keys, count);
}

/* ---- client-certificate renewal: AT%KEYGEN, the CSR, the A/B switch ---------------------------------- */

int certrot_app_publish_csr(const char *json, size_t len);
int certrot_app_mqtt_reconnect_tag(uint32_t sec_tag, uint32_t timeout_s);
int certrot_app_store_active(uint32_t sec_tag);

/* AT%KEYGEN=<tag>,2,0,"<subject>" (the modem is offline: the library calls this between CFUN=4 and CFUN=1).
 * The answer is `%KEYGEN: "<base64url CSR>.<base64url COSE>"` then OK; a CME error returns its code (e.g. 519
 * when the tag holds a key, which the library avoids by deleting types 0..2 first). */
static int ncs_keygen(void *u, uint32_t tag, const char *subject, char *out, size_t cap)
{
    static char resp[CERTROT_KEYGEN_MAX + 64];
    (void)u;
    int err = nrf_modem_at_cmd(resp, sizeof resp, "AT%%KEYGEN=%u,2,0,\"%s\"", (unsigned)tag, subject);
    if (err < 0) return err;
    if (err > 0) return nrf_modem_at_err(err); /* the CME/CMS code */
    char *start = strchr(resp, '"'), *end = start ? strchr(start + 1, '"') : NULL;
    if (!start || !end || (size_t)(end - start - 1) >= cap) return -EMSGSIZE;
    memcpy(out, start + 1, (size_t)(end - start - 1));
    out[end - start - 1] = '\0';
    return 0;
}

static int ncs_publish_csr(void *u, const char *json, size_t len)
{
    (void)u;
    return certrot_app_publish_csr(json, len);
}

static int ncs_activate(void *u, uint32_t tag, uint32_t timeout_s)
{
    (void)u;
    return certrot_app_mqtt_reconnect_tag(tag, timeout_s);
}

static int ncs_store_active(void *u, uint32_t tag)
{
    (void)u;
    return certrot_app_store_active(tag);
}

/* Adds the identity-renewal callbacks to cb (after certrot_ncs_callbacks); set certrot_config.active_tag to the
 * tag the application connects with. */
void certrot_ncs_identity_callbacks(certrot_callbacks *cb)
{
    cb->keygen = ncs_keygen;
    cb->publish_csr = ncs_publish_csr;
    cb->activate = ncs_activate;
    cb->store_active = ncs_store_active;
}

void certrot_ncs_callbacks(certrot_callbacks *cb)
{
    memset(cb, 0, sizeof *cb);
    cb->sha256 = ncs_sha256;
    cb->es256_verify = ncs_es256_verify;
    cb->now = ncs_now;
    cb->load_state = ncs_load;
    cb->store_state = ncs_store;
    cb->load_keys = ncs_load_keys;
    cb->store_keys = ncs_store_keys;
    cb->pubkey_check = ncs_pubkey_check;
    cb->key_exists = ncs_exists;
    cb->key_cmp = ncs_cmp;
    cb->key_read = ncs_read;
    cb->key_write = ncs_write;
    cb->key_delete = ncs_delete;
    cb->go_offline = ncs_go_offline;
    cb->go_online = ncs_go_online;
    cb->test_connection = ncs_test_connection;
}

/* ---- inventory from AT%CMNG=1 ----------------------------------------------------------------------- */

/* Lists the modem's credentials (tag, type, SHA-256) and builds the retained inventory. Modem-internal
 * tags above 2147483647 are skipped by certrot_parse_cmng_line. seq and `keys` come from the context.
 * Returns the JSON length or < 0. */
long certrot_ncs_inventory(const certrot_ctx *ctx, uint32_t max_message, char *out, size_t cap)
{
    static char resp[4096];  /* AT%CMNG=1 answer: about 80 bytes per credential */
    static certrot_cred creds[32];
    size_t count = 0;
    int err = nrf_modem_at_cmd(resp, sizeof resp, "AT%%CMNG=1");
    if (err) return err < 0 ? err : -EIO;
    for (char *line = resp; line && *line && count < 32;) {
        char *next = strchr(line, '\n');
        if (next) *next++ = '\0';
        if (certrot_parse_cmng_line(line, &creds[count]) == 0) count++;
        line = next;
    }
    return certrot_build_inventory_ctx(ctx, max_message, creds, count, out, cap);
}
