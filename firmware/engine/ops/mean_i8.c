/* int8 MEAN over height and width: (sum - zp_in * n) scaled by s_in / (s_out * n) in one multiplier (host),
 * plus zp_out, saturated to int8. */
#include "qop.h"
#include "requant.h"

void mean_i8(const qmean_t *p, const int8_t *x, int8_t *y)
{
    uint32_t n = (uint32_t)p->h * p->w;
    for (uint32_t c = 0; c < p->c; c++) {
        int32_t sum = 0;
        const int8_t *xp = x + c;
        for (uint32_t j = 0; j < n; j++, xp += p->c)
            sum += *xp;
        y[c] = rq_out_opt(sum - p->zp_in * (int32_t)n, p->mult, p->shift, p->zp_out, -128, 127);
    }
}
