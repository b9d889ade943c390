/* The static RAM of one device as firmware declares it (README.md, "Using it"), per profile. `make size` reads
 * the sizes of these objects from the compiled probe (nm), so the table is measured, not computed by hand. */
#include "certrot_device.h"

certrot_ctx probe_ctx;
/* compact profile: compact bundles (and JWS bundles that fit) */
uint8_t probe_cose_buf[CERTROT_NRF91_COSE_BUF];
uint8_t probe_cose_scratch[CERTROT_NRF91_COSE_SCRATCH];
/* JWS profile */
uint8_t probe_jws_buf[CERTROT_NRF91_JWS_BUF];
uint8_t probe_jws_scratch[CERTROT_SCRATCH_FOR(CERTROT_NRF91_JWS_BUF)];
