/* libFuzzer target: base64url (canonical: what decodes re-encodes to the same text; any bytes round-trip), the PEM
 * normal-form check, the X.509-at-the-ASN.1-level check and DER to PEM (its output is in normal form, of the length
 * certrot_pem_block_len says), and the ack and CSR-message builders on fuzzed strings. */
#include "certrot_device.h"
#include "../../src/certrot_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *dec = malloc(size + 1);
    char *enc = malloc(size * 2 + 8);
    long n = certrot_b64url_decode((const char *)data, size, dec, size + 1);
    if (n >= 0) {
        long m = certrot_b64url_encode(dec, (size_t)n, enc, size * 2 + 8);
        if (m != (long)size || memcmp(enc, data, size) != 0) abort();
    }
    long m = certrot_b64url_encode(data, size, enc, size * 2 + 8);
    if (m < 0 || certrot_b64url_decode(enc, (size_t)m, dec, size + 1) != (long)size || memcmp(dec, data, size) != 0)
        abort();
    free(dec);
    free(enc);

    certrot_pem_is_normal(data, size);
    if (certrot_der_is_certificate(data, size)) {
        size_t need = certrot_pem_block_len(size);
        uint8_t *pem = malloc(need);
        if (certrot_der_to_pem(data, size, pem, need) != (long)need || !certrot_pem_is_normal(pem, need)) abort();
        free(pem);
    }

    /* builders: a result with the fuzzed bytes as jti and reason (as C strings) */
    certrot_result r;
    memset(&r, 0, sizeof r);
    size_t jl = size < CERTROT_JTI_MAX ? size : CERTROT_JTI_MAX;
    memcpy(r.jti, data, jl);
    size_t rl = size - jl < CERTROT_REASON_MAX ? size - jl : CERTROT_REASON_MAX;
    memcpy(r.reason, data + jl, rl);
    r.ack = CERTROT_ACK_REJECTED;
    char out[6 * 300];
    long a = certrot_build_ack(&r, out, sizeof out);
    if (r.jti[0] && (a < 0 || (size_t)a >= sizeof out)) abort();
    char *csr = malloc(6 * size + 200);
    char *kg = malloc(size + 1);
    memcpy(kg, data, size);
    kg[size] = '\0';
    certrot_build_csr("jti", 5, kg, csr, 6 * size + 200);
    free(kg);
    free(csr);
    return 0;
}
