/* Backward of int8 MEAN over height and width (input gradient only: the op has no parameters). The real mean is
 * y = (1/N) Σ x over the N = h·w positions, whatever the two tensors' scales, so every input position gets its
 * channel's output gradient weighted by the Q16 reciprocal R = round(65536 / N): acc[p·c + ch] = g[ch]·R. The caller
 * requantises acc with qgrad_requant; the exponent drops by QGRAD_POOL_SHIFT, as for AVERAGE_POOL_2D. The channel
 * row g·R is computed once and copied to every position. */
#include <string.h>
#include "qgrad.h"

void mean_i8_input_grad(const qmean_t *p, const int8_t *g, int32_t *acc)
{
    uint32_t c = p->c, n = (uint32_t)p->h * p->w;
    int32_t r = (int32_t)(((1u << QGRAD_POOL_SHIFT) + n / 2u) / n);
    for (uint32_t ch = 0; ch < c; ch++)
        acc[ch] = g[ch] * r;
    for (uint32_t pos = 1; pos < n; pos++)
        memcpy(acc + pos * c, acc, c * sizeof *acc);
}
