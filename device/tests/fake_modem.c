#include "fake_modem.h"

#include "host_crypto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fake_modem_init(fake_modem *fm)
{
    memset(fm, 0, sizeof *fm);
    fm->online = true;
}

static fake_slot *find(fake_modem *fm, uint32_t tag, uint8_t type)
{
    for (int i = 0; i < FAKE_SLOTS; i++)
        if (fm->slots[i].used && fm->slots[i].tag == tag && fm->slots[i].type == type) return &fm->slots[i];
    return NULL;
}

const fake_slot *fake_modem_get(const fake_modem *fm, uint32_t tag, uint8_t type)
{
    return find((fake_modem *)fm, tag, type);
}

static int refuse(fake_modem *fm, int cme, int err)
{
    fm->last_cme = cme;
    fm->refused++;
    return err;
}

/* The content rules of AT%CMNG for PEM credentials. */
static int check_content(fake_modem *fm, const uint8_t *d, size_t len)
{
    if (len > FAKE_MAX_CRED) return refuse(fm, 515, -ENOMEM);
    for (size_t i = 0; i < len; i++) {
        if (d[i] == '\r') return refuse(fm, 527, -EINVAL);
        if (d[i] == ' ' && (i == 0 || d[i - 1] == '\n')) return refuse(fm, 527, -EINVAL);
    }
    return 0;
}

static int store(fake_modem *fm, uint32_t tag, uint8_t type, const void *data, size_t len)
{
    int err = check_content(fm, data, len);
    if (err) return err;
    fake_slot *s = find(fm, tag, type);
    if (!s)
        for (int i = 0; i < FAKE_SLOTS && !s; i++)
            if (!fm->slots[i].used) s = &fm->slots[i];
    if (!s) return refuse(fm, 515, -ENOMEM);
    s->used = true;
    s->tag = tag;
    s->type = type;
    s->len = len;
    memcpy(s->data, data, len);
    return 0;
}

int fake_modem_provision(fake_modem *fm, uint32_t tag, uint8_t type, const void *data, size_t len)
{
    return store(fm, tag, type, data, len);
}

static int cb_exists(void *u, uint32_t tag, uint8_t type, bool *exists)
{
    *exists = find(u, tag, type) != NULL;
    return 0;
}

static int cb_cmp(void *u, uint32_t tag, uint8_t type, const void *buf, size_t len)
{
    fake_slot *s = find(u, tag, type);
    if (!s) return -ENOENT;
    return s->len == len && memcmp(s->data, buf, len) == 0 ? 0 : 1;
}

static int cb_read(void *u, uint32_t tag, uint8_t type, void *buf, size_t *len)
{
    fake_slot *s = find(u, tag, type);
    if (!s) return -ENOENT;
    if (s->len > *len) return -ENOMEM;
    memcpy(buf, s->data, s->len);
    *len = s->len;
    return 0;
}

static int cb_write(void *u, uint32_t tag, uint8_t type, const void *buf, size_t len)
{
    fake_modem *fm = u;
    if (fm->online) return refuse(fm, 518, -EPERM);
    if (fm->fail_write_code) {
        int code = fm->fail_write_code;
        fm->fail_write_code = 0;
        return refuse(fm, 0, code);
    }
    int err = store(fm, tag, type, buf, len);
    if (!err) fm->writes++;
    return err;
}

static int cb_delete(void *u, uint32_t tag, uint8_t type)
{
    fake_modem *fm = u;
    if (fm->online) return refuse(fm, 518, -EPERM);
    fake_slot *s = find(fm, tag, type);
    if (!s) return refuse(fm, 513, -ENOENT);
    s->used = false;
    fm->deletes++;
    return 0;
}

static int cb_offline(void *u)
{
    fake_modem *fm = u;
    fm->online = false;
    fm->offline_calls++;
    return 0;
}

static int cb_online(void *u)
{
    fake_modem *fm = u;
    fm->online = true;
    fm->online_calls++;
    return 0;
}

static void hex(const uint8_t *d, size_t n, char *out, bool upper)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

static int cb_test_connection(void *u, uint32_t timeout_s)
{
    fake_modem *fm = u;
    (void)timeout_s;
    fm->conn_tests++;
    if (!fm->online) return -ENETDOWN;
    if (!fm->require_digest) return 0;
    fake_slot *s = find(fm, fm->broker_tag, 0);
    if (!s) return -ECONNREFUSED;
    uint8_t d[32];
    char h[65];
    host_sha256(NULL, s->data, s->len, d);
    hex(d, 32, h, false);
    return strcmp(h, fm->broker_sha) == 0 ? 0 : -ECONNREFUSED; /* TLS handshake: unknown CA */
}

static int cb_load(void *u, int64_t *seq, char jti[CERTROT_JTI_MAX + 1])
{
    fake_modem *fm = u;
    *seq = fm->flash_seq;
    memcpy(jti, fm->flash_jti, CERTROT_JTI_MAX + 1);
    return 0;
}

static int cb_store(void *u, int64_t seq, const char *jti)
{
    fake_modem *fm = u;
    fm->flash_seq = seq;
    snprintf(fm->flash_jti, sizeof fm->flash_jti, "%s", jti);
    return 0;
}

static int cb_load_keys(void *u, certrot_trusted_key keys[CERTROT_MAX_KEYS], size_t *count)
{
    fake_modem *fm = u;
    memcpy(keys, fm->flash_keys, sizeof fm->flash_keys);
    *count = fm->flash_key_count;
    return 0;
}

static int cb_store_keys(void *u, const certrot_trusted_key *keys, size_t count)
{
    fake_modem *fm = u;
    if (fm->fail_store_keys_code) return fm->fail_store_keys_code;
    if (count > CERTROT_MAX_KEYS) return -ENOSPC;
    memcpy(fm->flash_keys, keys, count * sizeof *keys);
    fm->flash_key_count = count;
    fm->key_stores++;
    return 0;
}

static int cb_now(void *u, int64_t *now)
{
    fake_modem *fm = u;
    if (!fm->time_known) return -1;
    *now = fm->now;
    return 0;
}

void fake_modem_callbacks(certrot_callbacks *cb, fake_modem *fm)
{
    cb->user = fm;
    cb->key_exists = cb_exists;
    cb->key_cmp = cb_cmp;
    cb->key_read = cb_read;
    cb->key_write = cb_write;
    cb->key_delete = cb_delete;
    cb->go_offline = cb_offline;
    cb->go_online = cb_online;
    cb->test_connection = cb_test_connection;
    cb->load_state = cb_load;
    cb->store_state = cb_store;
    cb->load_keys = cb_load_keys;
    cb->store_keys = cb_store_keys;
    cb->now = cb_now;
}

long fake_modem_cmng_list(const fake_modem *fm, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < FAKE_SLOTS; i++) {
        const fake_slot *s = &fm->slots[i];
        if (!s->used) continue;
        uint8_t d[32];
        char h[65];
        host_sha256(NULL, s->data, s->len, d);
        hex(d, 32, h, true);
        int w = snprintf(out + n, cap - n, "%%CMNG: %u,%u,\"%s\"\r\n", (unsigned)s->tag, (unsigned)s->type, h);
        if (w < 0 || (size_t)w >= cap - n) return -1;
        n += (size_t)w;
    }
    /* The modem's own credentials under its reserved tags (above 2^31 - 1), listed as real modems list them (Nordic's
     * modem_key_mgmt unit-test data, Tests/CertrotCoreTests/Vectors/real-modem/transcripts.md §1.2): the
     * inventory must leave them out. */
    static const char reserved[] =
        "%CMNG: 4294967293,10,\"2C43952EE9E000FF2ACC4E2ED0897C0A72AD5FA72C3D934E81741CBD54F05BD1\"\r\n"
        "%CMNG: 4294967294,6,\"A3CC4121A62D4BB103AE92F70A77A456886AE3CD5B2D156A200A1B90D9E92E05\"\r\n"
        "%CMNG: 4294967292,11,\"2027C4699EAA90A414D33FA81B975C0FDEDEFB04A19CEA1ED43A8876CAD31E89\"\r\n";
    if (sizeof reserved > cap - n) return -1;
    memcpy(out + n, reserved, sizeof reserved);
    n += sizeof reserved - 1;
    return (long)n;
}

long fake_modem_inventory(const fake_modem *fm, const certrot_ctx *ctx, uint32_t max_message, char *out, size_t cap)
{
    char listing[(FAKE_SLOTS + 3) * 96];
    certrot_cred creds[FAKE_SLOTS];
    size_t count = 0;
    if (fake_modem_cmng_list(fm, listing, sizeof listing) < 0) return -1;
    for (char *line = strtok(listing, "\n"); line; line = strtok(NULL, "\n"))
        if (certrot_parse_cmng_line(line, &creds[count]) == 0) count++;
    return certrot_build_inventory_ctx(ctx, max_message, creds, count, out, cap);
}

/* ---- Client-certificate renewal: AT%KEYGEN, the CSR's publication, activation ---- */

static int cb_keygen(void *u, uint32_t tag, const char *subject, char *out, size_t cap)
{
    fake_modem *fm = u;
    if (fm->online) return refuse(fm, 518, 518);  /* AT%KEYGEN needs CFUN=4 */
    if (find(fm, tag, 2)) return refuse(fm, 519, 519); /* the tag holds a key */
    char key[512];
    if (host_keygen(fm->identity, fm->uuid, tag, subject, out, cap, key, sizeof key) != 0) return -EIO;
    fm->keygens++;
    return store(fm, tag, 2, key, strlen(key));
}

static int cb_publish_csr(void *u, const char *json, size_t len)
{
    fake_modem *fm = u;
    if (!fm->online) return -ENETDOWN;
    if (len >= sizeof fm->csr) return -EMSGSIZE;
    memcpy(fm->csr, json, len);
    fm->csr[len] = '\0';
    fm->csrs_published++;
    return 0;
}

/* A TLS connection with the tag: its certificate must be for its key (the broker checks the rest). */
static int cb_activate(void *u, uint32_t tag, uint32_t timeout_s)
{
    fake_modem *fm = u;
    (void)timeout_s;
    fm->activations++;
    const fake_slot *cert = find(fm, tag, 1), *key = find(fm, tag, 2);
    if (!fm->online || !cert || !key) return -ECONNREFUSED;
    if (fm->activation_fails && tag != fm->active_tag) return -ECONNREFUSED;
    if (host_certificate_matches_key((const char *)cert->data, cert->len, (const char *)key->data, key->len) != 0)
        return -ECONNREFUSED;
    fm->active_tag = tag;
    return 0;
}

static int cb_store_active(void *u, uint32_t tag)
{
    ((fake_modem *)u)->active_tag = tag;
    return 0;
}

int fake_modem_identity(fake_modem *fm, certrot_callbacks *cb, const struct host_signer *identity, uint32_t tag,
                        const char *cert_pem, const char *key_pem)
{
    fm->identity = identity;
    for (int i = 0; i < 16; i++) fm->uuid[i] = (uint8_t)rand();
    fm->uuid[6] = (uint8_t)(0x40 | (fm->uuid[6] & 0x0f)); /* a version 4 UUID, as the modem's */
    fm->uuid[8] = (uint8_t)(0x80 | (fm->uuid[8] & 0x3f));
    fm->active_tag = tag;
    int err = store(fm, tag, 1, cert_pem, strlen(cert_pem));
    if (!err) err = store(fm, tag, 2, key_pem, strlen(key_pem));
    cb->keygen = cb_keygen;
    cb->publish_csr = cb_publish_csr;
    cb->activate = cb_activate;
    cb->store_active = cb_store_active;
    return err;
}
