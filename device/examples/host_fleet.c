/* host_fleet: N certrot devices on a real MQTT broker, built on the device library and libmosquitto
 * (MQTT 3.1.1, QoS 1, persistent sessions). Each device has a fake modem holding an old CA in tag 42, and
 * OpenSSL for the crypto callbacks. Several devices share one MQTT connection.
 *
 *   host_fleet --port P --devices N --pubkey PUB.pem --kid KID --old-ca OLD.pem
 *              [--host 127.0.0.1] [--prefix host-dev] [--per-conn 10] [--duration SECONDS]
 *              [--identities FILE] [--compact-every K]
 *
 * With --compact-every K (default 2), every K-th device (1, 1+K, ...; 0: none) takes compact bundles
 * (docs/protocol.md §12): it lists "formats":["cose"] and runs with the compact profile's buffers
 * (CERTROT_NRF91_COSE_BUF + CERTROT_NRF91_COSE_SCRATCH); the others take JWS with the JWS buffers. The summary
 * counts the bundles each kind applied and the parts of the other format it was sent.
 *
 * With --identities, every device also renews its client certificate (docs/protocol.md §11): its fake modem
 * has an identity key and a factory identity in sec tag 16842753 (active), generates keys with AT%KEYGEN, and
 * the fleet writes the identity keys to FILE (the daemon's `identities`) before it connects.
 *
 * Runs until SIGINT/SIGTERM (or --duration) and prints a summary line. */
#include "certrot_device.h"
#include "fake_modem.h"
#include "host_crypto.h"

#include <mosquitto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_MESSAGE 2048 /* nrf91: what we report in the inventory and enforce on receive (§5 step 1) */

typedef struct {
    char id[64];
    fake_modem fm;
    certrot_ctx ctx;
    uint8_t jws[CERTROT_NRF91_JWS_BUF];
    uint8_t scratch[CERTROT_SCRATCH_FOR(CERTROT_NRF91_JWS_BUF)];
    struct mosquitto *mosq;
    int applied, rejected, failed, dropped;
    host_signer *identity;
    int csrs_sent;
    bool compact;        /* takes compact bundles */
    bool last_compact;   /* the last part received was a compact one */
    int compact_applied, jws_applied, foreign_parts; /* applied acks by format; parts not of its format */
} device;

#define TAG_A 16842753u

typedef struct {
    struct mosquitto *mosq;
    device *first;
    int count;
} connection;

static volatile sig_atomic_t stop;
static device *devices;
static int device_count;
static certrot_key key;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static int64_t now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static int wall_clock(void *user, int64_t *out)
{
    (void)user;
    *out = (int64_t)time(NULL);
    return 0;
}

static void publish_inventory(device *d)
{
    char topic[100], inv[2048];
    long n = fake_modem_inventory(&d->fm, &d->ctx, MAX_MESSAGE, inv, sizeof inv);
    if (n < 0) return;
    snprintf(topic, sizeof topic, "%s/certs/inventory", d->id);
    mosquitto_publish(d->mosq, NULL, topic, (int)n, inv, 1, true);
}

static void publish_ack(device *d, const certrot_result *res)
{
    char topic[100], ack[1024];
    long n = certrot_build_ack(res, ack, sizeof ack);
    if (n < 0) return;
    snprintf(topic, sizeof topic, "%s/certs/ack", d->id);
    mosquitto_publish(d->mosq, NULL, topic, (int)n, ack, 1, false);
    if (res->ack == CERTROT_ACK_APPLIED) {
        d->applied++;
        if (res->status == CERTROT_APPLIED) d->last_compact ? d->compact_applied++ : d->jws_applied++;
    }
    if (res->ack == CERTROT_ACK_REJECTED) {
        d->rejected++;
        fprintf(stderr, "%s: rejected: %s\n", d->id, res->reason);
    }
    if (res->ack == CERTROT_ACK_FAILED) d->failed++;
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    connection *c = obj;
    if (rc != 0) return;
    for (int i = 0; i < c->count; i++) {
        device *d = &c->first[i];
        char topic[100];
        snprintf(topic, sizeof topic, "%s/certs", d->id);
        mosquitto_subscribe(mosq, NULL, topic, 1);
        publish_inventory(d); /* after subscribing, on every (re)connect */
    }
}

static size_t varint_len(size_t v) { return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4; }

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *m)
{
    connection *c = obj;
    (void)mosq;
    for (int i = 0; i < c->count; i++) {
        device *d = &c->first[i];
        size_t idlen = strlen(d->id);
        if (strncmp(m->topic, d->id, idlen) != 0 || strcmp(m->topic + idlen, "/certs") != 0) continue;
        /* Step 1: a packet larger than maxMessage would not reach an nRF91 at all. */
        size_t remaining = 2 + strlen(m->topic) + 2 + (size_t)m->payloadlen;
        if (1 + varint_len(remaining) + remaining > MAX_MESSAGE) {
            d->dropped++;
            return;
        }
        certrot_result res;
        d->last_compact = m->payloadlen > 0 && ((const uint8_t *)m->payload)[0] == 0x84;
        if (d->last_compact != d->compact) d->foreign_parts++;
        certrot_on_part(&d->ctx, m->payload, (size_t)m->payloadlen, now_s(), &res);
        if (d->fm.csrs_published > d->csrs_sent) { /* a keygen's CSR, before the bundle's ack */
            char topic[100];
            snprintf(topic, sizeof topic, "%s/certs/csr", d->id);
            mosquitto_publish(d->mosq, NULL, topic, (int)strlen(d->fm.csr), d->fm.csr, 1, false);
            d->csrs_sent = d->fm.csrs_published;
        }
        if (res.ack != CERTROT_ACK_NONE) publish_ack(d, &res);
        if (res.republish_inventory) publish_inventory(d);
        return;
    }
}

static char *arg(int argc, char **argv, const char *name, char *def)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return def;
}

static size_t read_all(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

int main(int argc, char **argv)
{
    const char *host = arg(argc, argv, "--host", "127.0.0.1"), *prefix = arg(argc, argv, "--prefix", "host-dev");
    int port = atoi(arg(argc, argv, "--port", "1883"));
    device_count = atoi(arg(argc, argv, "--devices", "20"));
    int per_conn = atoi(arg(argc, argv, "--per-conn", "10"));
    int duration = atoi(arg(argc, argv, "--duration", "0"));
    const char *pub = arg(argc, argv, "--pubkey", NULL), *old = arg(argc, argv, "--old-ca", NULL);
    key.kid = arg(argc, argv, "--kid", NULL);
    const char *identities = arg(argc, argv, "--identities", NULL);
    int compact_every = atoi(arg(argc, argv, "--compact-every", "2"));
    FILE *identity_file = NULL;
    if (identities && !(identity_file = fopen(identities, "w"))) {
        perror(identities);
        return 2;
    }
    static char old_pem[CERTROT_MAX_CREDENTIAL + 1];
    size_t old_len = old ? read_all(old, old_pem, sizeof old_pem) : 0;
    if (!pub || !key.kid || !old_len || device_count < 1 || per_conn < 1 || host_load_pubkey_pem(pub, key.pubkey) != 0) {
        fprintf(stderr, "usage: host_fleet --port P --devices N --pubkey PUB.pem --kid KID --old-ca OLD.pem "
                        "[--host H] [--prefix P] [--per-conn K] [--duration S]\n");
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    mosquitto_lib_init();

    devices = calloc((size_t)device_count, sizeof *devices);
    int conn_count = (device_count + per_conn - 1) / per_conn;
    connection *conns = calloc((size_t)conn_count, sizeof *conns);
    for (int i = 0; i < device_count; i++) {
        device *d = &devices[i];
        snprintf(d->id, sizeof d->id, "%s-%04d", prefix, i);
        fake_modem_init(&d->fm);
        if (fake_modem_provision(&d->fm, 42, 0, old_pem, old_len) != 0) {
            fprintf(stderr, "old CA refused by the fake modem (CRLF, spaces or > 4 KB?)\n");
            return 2;
        }
        d->compact = compact_every > 0 && i % compact_every == 1 % compact_every;
        certrot_config cfg = {.device_id = d->id, .keys = &key, .key_count = 1, .stall_s = 20, .takes_compact = d->compact};
        cfg.cb.sha256 = host_sha256;
        cfg.cb.es256_verify = host_es256_verify;
        cfg.cb.pubkey_check = host_pubkey_check;
        fake_modem_callbacks(&cfg.cb, &d->fm);
        cfg.cb.now = wall_clock; /* the host knows the time: exp/iat are checked */
        if (identity_file) {
            static char cert[4096], key_pem[1024], pub_pem[512], line[1024];
            d->identity = host_signer_new();
            cfg.active_tag = TAG_A;
            if (!d->identity || host_factory_identity(d->id, cert, sizeof cert, key_pem, sizeof key_pem) != 0 ||
                fake_modem_identity(&d->fm, &cfg.cb, d->identity, TAG_A, cert, key_pem) != 0 ||
                host_signer_pubkey_pem(d->identity, pub_pem, sizeof pub_pem) != 0) {
                fprintf(stderr, "cannot make the identity of %s\n", d->id);
                return 2;
            }
            size_t n = 0;
            for (const char *p = pub_pem; *p && n + 3 < sizeof line; p++) {
                if (*p == '\n') {
                    line[n++] = '\\';
                    line[n++] = 'n';
                } else {
                    line[n++] = *p;
                }
            }
            line[n] = '\0';
            char uuid[33];
            for (int b = 0; b < 16; b++) snprintf(uuid + 2 * b, 3, "%02x", d->fm.uuid[b]);
            fprintf(identity_file, "{\"device\":\"%s\",\"identityKey\":\"%s\",\"uuid\":\"%s\"}\n", d->id, line, uuid);
        }
        /* the compact profile: 4096 + 6144 bytes of buffers instead of 14336 + 10756 */
        size_t cap = d->compact ? CERTROT_NRF91_COSE_BUF : sizeof d->jws;
        size_t scap = d->compact ? CERTROT_NRF91_COSE_SCRATCH : sizeof d->scratch;
        if (certrot_init(&d->ctx, &cfg, d->jws, cap, d->scratch, scap) != CERTROT_OK) {
            fprintf(stderr, "certrot_init failed for %s\n", d->id);
            return 2;
        }
    }
    if (identity_file) fclose(identity_file);
    for (int c = 0; c < conn_count; c++) {
        char client_id[96];
        snprintf(client_id, sizeof client_id, "%s-conn%d", prefix, c);
        conns[c].first = &devices[c * per_conn];
        conns[c].count = device_count - c * per_conn < per_conn ? device_count - c * per_conn : per_conn;
        /* clean_session = false: a persistent session keeps QoS 1 parts published while we are away. */
        conns[c].mosq = mosquitto_new(client_id, false, &conns[c]);
        mosquitto_int_option(conns[c].mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
        mosquitto_connect_callback_set(conns[c].mosq, on_connect);
        mosquitto_message_callback_set(conns[c].mosq, on_message);
        for (int i = 0; i < conns[c].count; i++) conns[c].first[i].mosq = conns[c].mosq;
        if (mosquitto_connect(conns[c].mosq, host, port, 30) != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "cannot connect to %s:%d\n", host, port);
            return 1;
        }
    }
    int64_t start = now_s(), last_poll = start;
    while (!stop && (!duration || now_s() - start < duration)) {
        for (int c = 0; c < conn_count; c++)
            if (mosquitto_loop(conns[c].mosq, 20, 1) != MOSQ_ERR_SUCCESS) mosquitto_reconnect(conns[c].mosq);
        if (now_s() != last_poll) {
            last_poll = now_s();
            for (int i = 0; i < device_count; i++) {
                certrot_result res;
                if (certrot_poll(&devices[i].ctx, last_poll, &res)) publish_ack(&devices[i], &res);
            }
        }
    }
    int applied = 0, rejected = 0, failed = 0, dropped = 0, rotated = 0, installed = 0, renewed = 0;
    int cose_devices = 0, cose_applied = 0, jws_applied = 0, foreign = 0, cose_rotated = 0;
    for (int i = 0; i < device_count; i++) {
        applied += devices[i].applied;
        rejected += devices[i].rejected;
        failed += devices[i].failed;
        dropped += devices[i].dropped;
        const fake_slot *s = fake_modem_get(&devices[i].fm, 42, 0);
        bool moved = s && !(s->len == old_len && memcmp(s->data, old_pem, old_len) == 0);
        rotated += moved;
        cose_devices += devices[i].compact;
        cose_rotated += devices[i].compact && moved;
        cose_applied += devices[i].compact_applied;
        jws_applied += devices[i].jws_applied;
        foreign += devices[i].foreign_parts;
        installed += certrot_key_count(&devices[i].ctx) > 1; /* a key came in with trust_key */
        renewed += devices[i].identity && certrot_active_tag(&devices[i].ctx) != TAG_A;
        host_signer_free(devices[i].identity);
    }
    printf("host_fleet: %d devices, %d rotated, %d applied acks, %d rejected, %d failed, %d dropped, %d trust an "
           "installed key, %d renewed their identity\n",
           device_count, rotated, applied, rejected, failed, dropped, installed, renewed);
    printf("host_fleet: %d take cose (%d of them rotated), %d compact bundles applied, %d JWS bundles applied, %d parts "
           "of the other format\n",
           cose_devices, cose_rotated, cose_applied, jws_applied, foreign);
    for (int c = 0; c < conn_count; c++) {
        mosquitto_disconnect(conns[c].mosq);
        mosquitto_destroy(conns[c].mosq);
    }
    mosquitto_lib_cleanup();
    free(conns);
    free(devices);
    return 0;
}
