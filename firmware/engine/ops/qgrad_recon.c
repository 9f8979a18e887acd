/* The loss gradient of a reconstruction (an autoencoder's output y against its own input x, mean squared error):
 * dL/dy = 2·(y − x)/N in real terms. In output codes d = (y − zp_y) − (x − zp_x)·s_x/s_y, the input rescaled by the
 * plan's multiplier; d is quantised to int8 by the smallest power-of-two shift that fits (E = k, c = 2·s_y/N). */
#include "qgrad.h"
#include "requant.h"

static int32_t recon_diff(const qrecon_t *r, int8_t y, int8_t x)
{
    return ((int32_t)y - r->zp_y) - rq_mul((int32_t)x - r->zp_x, r->mult, r->shift);
}

int32_t qgrad_recon(const qrecon_t *r, const int8_t *y, const int8_t *x, uint32_t n, int8_t *g)
{
    int32_t m = 0, k = 0;
    for (uint32_t j = 0; j < n; j++) {
        int32_t d = recon_diff(r, y[j], x[j]);
        d = d < 0 ? -d : d;
        m = d > m ? d : m;
    }
    while (rq_rdbp(m, k) > 127)
        k++;
    for (uint32_t j = 0; j < n; j++)
        g[j] = (int8_t)rq_rdbp(recon_diff(r, y[j], x[j]), k);
    return k;
}
