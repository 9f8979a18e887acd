/* Reference global average pool: the mean from its definition, per channel (host tests only). */
#include "gavgpool.h"

void gavgpool_forward_ref(const float *x, float *y, uint32_t n, uint32_t c)
{
    for (uint32_t ch = 0; ch < c; ch++) {
        double acc = 0.0;
        for (uint32_t p = 0; p < n; p++)
            acc += x[p * c + ch];
        y[ch] = (float)(acc / n);
    }
}

void gavgpool_input_grad_ref(const float *dy, float *dx, uint32_t n, uint32_t c)
{
    for (uint32_t p = 0; p < n; p++)
        for (uint32_t ch = 0; ch < c; ch++)
            dx[p * c + ch] = (float)((double)dy[ch] / n);
}
