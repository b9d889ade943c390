/*
 * certrot_revocation: a mosquitto 2.0 plugin (plugin API v5) that enforces the CRLs certrot writes, without a
 * broker restart (docs/client-certificates.md, "Revocation the broker enforces").
 *
 * - On each connection with a client certificate (the MOSQ_EVT_BASIC_AUTH event), the certificate is refused when
 *   the CRL of its issuer lists its serial (issuer name and serial compared, not subject names); otherwise the
 *   username is set to the certificate's CN (what use_identity_as_username did, so `pattern ... %u/#` ACLs work as
 *   before) and the connection is accepted. A connection without a certificate is left to the other checks.
 * - Each CRL file is looked at every second (MOSQ_EVT_TICK); a changed file is read, its signature checked against
 *   the issuers' certificates, and it replaces the one held only when all of that succeeds. A missing, partial,
 *   unsigned or foreign file keeps the last good CRL, and the broker's log says so.
 * - After a CRL changes, every connected client whose certificate it lists is disconnected.
 *
 * Options (mosquitto.conf):
 *   plugin /usr/lib/certrot/certrot_revocation.so
 *   plugin_opt_crl_files /var/lib/certrot-crl/device-ca.crl[,/var/lib/certrot-crl/other.crl]
 *   plugin_opt_ca_file /etc/mosquitto/certrot/clients-ca.pem
 * On the TLS listener keep `require_certificate true` and do not set use_identity_as_username (mosquitto then
 * calls no plugin's basic-auth callback: see handle_connect.c).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define MAX_CRLS 16

struct crl_file {
    char *path;
    X509_CRL *crl;        /* the last good CRL, NULL before the first */
    struct stat seen;     /* the file as last looked at (changed: read again) */
    bool seen_valid;
};

/* A connected client with a certificate: what revocation needs to find it again. */
struct tracked {
    char *client_id;
    X509_NAME *issuer;
    ASN1_INTEGER *serial;
    struct tracked *next;
};

static mosquitto_plugin_id_t *plugin_id;
static struct crl_file crls[MAX_CRLS];
static int crl_count;
static STACK_OF(X509) *issuers;
static struct tracked *clients;
static time_t last_check;
static unsigned long refused, kicked, reloads, rejected_files;

static void log_at(int level, const char *fmt, const char *a, const char *b)
{
    mosquitto_log_printf(level, fmt, a ? a : "", b ? b : "");
}

/* The issuer whose name and key signed `crl`, or NULL. */
static X509 *signer_of(X509_CRL *crl)
{
    for (int i = 0; i < sk_X509_num(issuers); i++) {
        X509 *ca = sk_X509_value(issuers, i);
        if (X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(crl)) != 0) continue;
        EVP_PKEY *key = X509_get0_pubkey(ca);
        if (key && X509_CRL_verify(crl, key) == 1) return ca;
    }
    return NULL;
}

/* Reads one CRL file when it changed. Returns true when a new CRL replaced the one held. */
static bool refresh(struct crl_file *file)
{
    struct stat now;
    if (stat(file->path, &now) != 0) {
        if (file->seen_valid) {
            log_at(MOSQ_LOG_WARNING, "certrot_revocation: %s is gone (%s); enforcing the last good CRL", file->path,
                   strerror(errno));
            file->seen_valid = false;
            rejected_files++;
        }
        return false;
    }
    if (file->seen_valid && now.st_mtim.tv_sec == file->seen.st_mtim.tv_sec &&
        now.st_mtim.tv_nsec == file->seen.st_mtim.tv_nsec && now.st_size == file->seen.st_size &&
        now.st_ino == file->seen.st_ino)
        return false;
    file->seen = now;
    file->seen_valid = true;
    struct timespec started, finished;
    clock_gettime(CLOCK_MONOTONIC, &started);
    FILE *in = fopen(file->path, "r");
    X509_CRL *crl = in ? PEM_read_X509_CRL(in, NULL, NULL, NULL) : NULL;
    if (in) fclose(in);
    const char *problem = NULL;
    if (!crl) problem = "not a PEM CRL (partial or garbage)";
    else if (!signer_of(crl)) problem = "not signed by any certificate in plugin_opt_ca_file";
    else if (file->crl && X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_CRL_get_issuer(file->crl)) != 0)
        problem = "issued by another CA than the CRL it would replace";
    if (problem) {
        log_at(MOSQ_LOG_WARNING, "certrot_revocation: %s refused: %s; enforcing the last good CRL", file->path,
               problem);
        if (crl) X509_CRL_free(crl);
        rejected_files++;
        return false;
    }
    if (file->crl) X509_CRL_free(file->crl);
    file->crl = crl;
    reloads++;
    /* OpenSSL sorts a CRL's entries at its first lookup: do it now, not during a client's connection. */
    ASN1_INTEGER *probe = ASN1_INTEGER_new();
    X509_REVOKED *unused = NULL;
    if (probe) {
        X509_CRL_get0_by_serial(crl, &unused, probe);
        ASN1_INTEGER_free(probe);
    }
    clock_gettime(CLOCK_MONOTONIC, &finished);
    STACK_OF(X509_REVOKED) *revoked = X509_CRL_get_REVOKED(crl);
    char count[96];
    snprintf(count, sizeof count, "%d revoked, read and verified in %.1f ms", revoked ? sk_X509_REVOKED_num(revoked) : 0,
             (finished.tv_sec - started.tv_sec) * 1e3 + (finished.tv_nsec - started.tv_nsec) / 1e6);
    log_at(MOSQ_LOG_NOTICE, "certrot_revocation: loaded %s (%s)", file->path, count);
    return true;
}

static bool is_revoked(X509_NAME *issuer, ASN1_INTEGER *serial)
{
    for (int i = 0; i < crl_count; i++) {
        X509_CRL *crl = crls[i].crl;
        if (!crl || X509_NAME_cmp(X509_CRL_get_issuer(crl), issuer) != 0) continue;
        X509_REVOKED *entry = NULL;
        if (X509_CRL_get0_by_serial(crl, &entry, serial) == 1) return true;
    }
    return false;
}

static void untrack(const char *client_id)
{
    for (struct tracked **link = &clients; *link;) {
        struct tracked *t = *link;
        if (client_id && strcmp(t->client_id, client_id) == 0) {
            *link = t->next;
            free(t->client_id);
            X509_NAME_free(t->issuer);
            ASN1_INTEGER_free(t->serial);
            free(t);
        } else {
            link = &t->next;
        }
    }
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
    (void)event;
    (void)userdata;
    struct mosquitto_evt_basic_auth *ed = event_data;
    X509 *cert = mosquitto_client_certificate(ed->client);
    if (!cert) return MOSQ_ERR_PLUGIN_DEFER; /* not a certificate connection: the other checks decide */
    const char *id = mosquitto_client_id(ed->client);
    int result = MOSQ_ERR_SUCCESS;
    if (is_revoked(X509_get_issuer_name(cert), X509_get_serialNumber(cert))) {
        refused++;
        log_at(MOSQ_LOG_NOTICE, "certrot_revocation: refused client %s: its certificate is revoked%s", id, "");
        result = MOSQ_ERR_AUTH;
    } else {
        char cn[256];
        int length = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
        if (length <= 0) {
            log_at(MOSQ_LOG_NOTICE, "certrot_revocation: refused client %s: its certificate has no CN%s", id, "");
            result = MOSQ_ERR_AUTH;
        } else if (mosquitto_set_username(ed->client, cn) != MOSQ_ERR_SUCCESS) {
            result = MOSQ_ERR_AUTH;
        } else if (id) {
            untrack(id);
            struct tracked *t = calloc(1, sizeof *t);
            if (t) {
                t->client_id = strdup(id);
                t->issuer = X509_NAME_dup(X509_get_issuer_name(cert));
                t->serial = ASN1_INTEGER_dup(X509_get_serialNumber(cert));
                t->next = clients;
                clients = t;
            }
        }
    }
    X509_free(cert);
    return result;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
    (void)event;
    (void)userdata;
    struct mosquitto_evt_disconnect *ed = event_data;
    untrack(mosquitto_client_id(ed->client));
    return MOSQ_ERR_SUCCESS;
}

static int on_tick(int event, void *event_data, void *userdata)
{
    (void)event;
    (void)event_data;
    (void)userdata;
    time_t now = time(NULL);
    if (now == last_check) return MOSQ_ERR_SUCCESS;
    last_check = now;
    bool changed = false;
    for (int i = 0; i < crl_count; i++) changed |= refresh(&crls[i]);
    if (!changed) return MOSQ_ERR_SUCCESS;
    /* Disconnect every connected client the new CRLs list (their ids first: kicking runs the disconnect event). */
    char *doomed[4096];
    int n = 0;
    for (struct tracked *t = clients; t && n < 4096; t = t->next)
        if (is_revoked(t->issuer, t->serial)) doomed[n++] = strdup(t->client_id);
    for (int i = 0; i < n; i++) {
        if (!doomed[i]) continue;
        log_at(MOSQ_LOG_NOTICE, "certrot_revocation: disconnecting client %s: its certificate was revoked%s",
               doomed[i], "");
        mosquitto_kick_client_by_clientid(doomed[i], false);
        untrack(doomed[i]);
        kicked++;
        free(doomed[i]);
    }
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
    for (int i = 0; i < supported_version_count; i++)
        if (supported_versions[i] == 5) return 5;
    return -1;
}

static bool load_issuers(const char *path)
{
    FILE *in = fopen(path, "r");
    if (!in) return false;
    issuers = sk_X509_new_null();
    X509 *cert;
    while ((cert = PEM_read_X509(in, NULL, NULL, NULL)) != NULL) sk_X509_push(issuers, cert);
    fclose(in);
    return sk_X509_num(issuers) > 0;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *opts,
                          int opt_count)
{
    (void)userdata;
    plugin_id = identifier;
    const char *files = NULL, *ca_file = NULL;
    for (int i = 0; i < opt_count; i++) {
        if (strcmp(opts[i].key, "crl_files") == 0) files = opts[i].value;
        else if (strcmp(opts[i].key, "ca_file") == 0) ca_file = opts[i].value;
    }
    if (!files || !ca_file) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "certrot_revocation: plugin_opt_crl_files and plugin_opt_ca_file are both needed");
        return MOSQ_ERR_INVAL;
    }
    if (!load_issuers(ca_file)) {
        log_at(MOSQ_LOG_ERR, "certrot_revocation: plugin_opt_ca_file %s holds no PEM certificate%s", ca_file, "");
        return MOSQ_ERR_INVAL;
    }
    char *list = strdup(files);
    for (char *save = NULL, *path = strtok_r(list, ",", &save); path && crl_count < MAX_CRLS;
         path = strtok_r(NULL, ",", &save)) {
        while (*path == ' ') path++;
        if (!*path) continue;
        crls[crl_count].path = strdup(path);
        refresh(&crls[crl_count]);
        crl_count++;
    }
    free(list);
    if (crl_count == 0) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "certrot_revocation: plugin_opt_crl_files names no file");
        return MOSQ_ERR_INVAL;
    }
    int rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
    if (rc == MOSQ_ERR_SUCCESS) rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, NULL);
    if (rc == MOSQ_ERR_SUCCESS) rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_TICK, on_tick, NULL, NULL);
    return rc;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
    (void)userdata;
    (void)opts;
    (void)opt_count;
    mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
    mosquitto_callback_unregister(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
    mosquitto_callback_unregister(plugin_id, MOSQ_EVT_TICK, on_tick, NULL);
    while (clients) {
        struct tracked *t = clients;
        clients = t->next;
        free(t->client_id);
        X509_NAME_free(t->issuer);
        ASN1_INTEGER_free(t->serial);
        free(t);
    }
    for (int i = 0; i < crl_count; i++) {
        if (crls[i].crl) X509_CRL_free(crls[i].crl);
        free(crls[i].path);
    }
    crl_count = 0;
    if (issuers) sk_X509_pop_free(issuers, X509_free);
    issuers = NULL;
    return MOSQ_ERR_SUCCESS;
}
