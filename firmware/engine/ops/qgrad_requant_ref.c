/* Plain gradient requantisation straight from the definition (host tests only). */
#include "qgrad.h"
#include "requant.h"

int32_t qgrad_requant_ref(const int32_t *acc, uint32_t n, int8_t *g)
{
    int32_t k = 0;
    for (;; k++) {
        int ok = 1;
        for (uint32_t j = 0; j < n; j++) {
            int32_t v = rq_rdbp(acc[j], k);
            if (v > 127 || v < -127)
                ok = 0;
        }
        if (ok)
            break;
    }
    for (uint32_t j = 0; j < n; j++)
        g[j] = (int8_t)rq_rdbp(acc[j], k);
    return k;
}
