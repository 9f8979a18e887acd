/* Plain int8 MEAN backward straight from the definition (host tests only): every input element gets its channel's
 * output gradient times round(65536 / (h·w)). */
#include "qgrad.h"

void mean_i8_input_grad_ref(const qmean_t *p, const int8_t *g, int32_t *acc)
{
    int32_t count = (int32_t)p->h * p->w;
    for (int32_t y = 0; y < p->h; y++)
        for (int32_t x = 0; x < p->w; x++)
            for (int32_t ch = 0; ch < p->c; ch++)
                acc[(y * p->w + x) * p->c + ch] = g[ch] * ((65536 + count / 2) / count);
}
