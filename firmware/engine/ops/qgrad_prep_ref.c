/* Plain gradient masking and channel scaling straight from the definition (host tests only). */
#include "qgrad.h"

void qgrad_prep_ref(const int8_t *g, const int8_t *y, int32_t lo, int32_t hi, const int32_t *m, uint32_t n,
                    uint32_t out_c, int16_t *h)
{
    for (uint32_t i = 0; i < n; i++) {
        int32_t v = g[i], t;
        if (y && (y[i] <= lo || y[i] >= hi))
            v = 0;
        t = v * m[i % out_c] + 128;
        h[i] = (int16_t)(t >= 0 ? t / 256 : -((-t + 255) / 256)); /* floor(t / 256) */
    }
}
