/* Reference reconstruction MSE from its definition, in double precision (host tests only). */
#include "mse.h"

float mse_recon_ref(const float *y, const float *x, uint32_t n, float *dy)
{
    double acc = 0.0;
    for (uint32_t j = 0; j < n; j++) {
        double e = (double)y[j] - (double)x[j];
        acc += e * e;
        if (dy)
            dy[j] = (float)(2.0 * e / n);
    }
    return (float)(acc / n);
}
