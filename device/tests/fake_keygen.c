/* Prints AT%KEYGEN answers of the C fake modem (tests/host_crypto.c host_keygen), one a line as
 * `<answer> <uuid> <sec tag>` (the UUID in 8-4-4-4-12 lowercase form), so that tools made for the real modem can be
 * run on them, e.g. Nordic's parser through scripts/nordic-keygen-check:
 *   build/fake_keygen 4 | python3 ../scripts/nordic-keygen-check
 * Usage: fake_keygen [N [IDENTITY_PUBKEY_PEM_OUT]]
 *   N answers (default 3), for sec tags 17, 42, 16842753, 2147483647 in turn, from one modem identity key and UUID;
 *   with a file name, the identity public key (PEM) is written there, to verify the COSE signatures. */
#include "certrot_device.h"
#include "host_crypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 3;
    static const uint32_t tags[] = {17, 42, 16842753, 2147483647};
    host_signer *identity = host_signer_new();
    if (!identity || n < 0) return 2;
    srand((unsigned)time(NULL));
    uint8_t uuid[16];
    for (int i = 0; i < 16; i++) uuid[i] = (uint8_t)rand();
    uuid[6] = (uint8_t)(0x40 | (uuid[6] & 0x0f)); /* version 4 */
    uuid[8] = (uint8_t)(0x80 | (uuid[8] & 0x3f));
    if (argc > 2) {
        char pem[512];
        FILE *f = fopen(argv[2], "w");
        if (!f || host_signer_pubkey_pem(identity, pem, sizeof pem) != 0) return 2;
        fputs(pem, f);
        fclose(f);
    }
    for (int i = 0; i < n; i++) {
        char out[2100], key[1024];
        if (host_keygen(identity, uuid, tags[i % 4], "CN=nrf-352656100123456", out, sizeof out, key, sizeof key) != 0)
            return 1;
        printf("%s ", out);
        for (int b = 0; b < 16; b++) printf(b == 4 || b == 6 || b == 8 || b == 10 ? "-%02x" : "%02x", uuid[b]);
        printf(" %u\n", (unsigned)tags[i % 4]);
    }
    host_signer_free(identity);
    return 0;
}
