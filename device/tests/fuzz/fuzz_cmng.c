/* libFuzzer target: the AT%CMNG=1 line parser. A parsed line gives a tag within range, a type 0..6 and a digest of
 * 64 lowercase hex digits, which the inventory builder accepts. */
#include "certrot_device.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = malloc(size + 1);
    memcpy(line, data, size);
    line[size] = '\0';
    certrot_cred c;
    if (certrot_parse_cmng_line(line, &c) == 0) {
        if (c.tag > (uint32_t)CERTROT_MAX_TAG || c.type > 6 || strlen(c.sha256) != 64) abort();
        for (int i = 0; i < 64; i++)
            if (!((c.sha256[i] >= '0' && c.sha256[i] <= '9') || (c.sha256[i] >= 'a' && c.sha256[i] <= 'f'))) abort();
        char inv[512];
        if (certrot_build_inventory(0, 0, &c, 1, inv, sizeof inv) < 0) abort();
    }
    free(line);
    return 0;
}
