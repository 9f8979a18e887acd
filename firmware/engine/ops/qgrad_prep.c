/* Output gradient of a weighted op, masked by its fused activation (the int8 output at a clamp bound has zero
 * derivative) and scaled per output channel into int16: h = (g·m[o] + 128) >> 8, |h| <= 16256. */
#include "qgrad.h"

void qgrad_prep(const int8_t *g, const int8_t *y, int32_t lo, int32_t hi, const int32_t *m, uint32_t n,
                uint32_t out_c, int16_t *h)
{
    for (uint32_t i = 0; i < n; i += out_c, g += out_c, h += out_c) {
        if (y) {
            const int8_t *yy = y + i;
            for (uint32_t o = 0; o < out_c; o++) {
                int32_t v = (yy[o] <= lo || yy[o] >= hi) ? 0 : g[o];
                h[o] = (int16_t)((v * m[o] + 128) >> 8);
            }
        } else {
            for (uint32_t o = 0; o < out_c; o++)
                h[o] = (int16_t)((g[o] * m[o] + 128) >> 8);
        }
    }
}
