/* Plain MAX_POOL_2D backward straight from the definition (host tests only). */
#include "qgrad.h"

void maxpool_i8_input_grad_ref(const qpool_t *p, const int8_t *x, const int8_t *g, int32_t *acc)
{
    for (int32_t j = 0; j < p->in_h * p->in_w * p->c; j++)
        acc[j] = 0;
    for (int32_t oy = 0; oy < p->out_h; oy++)
        for (int32_t ox = 0; ox < p->out_w; ox++)
            for (int32_t c = 0; c < p->c; c++) {
                int32_t best = -1;
                for (int32_t ky = 0; ky < p->k_h; ky++)
                    for (int32_t kx = 0; kx < p->k_w; kx++) {
                        int32_t iy = oy * p->stride_h - p->pad_top + ky, ix = ox * p->stride_w - p->pad_left + kx;
                        int32_t j = (iy * p->in_w + ix) * p->c + c;
                        if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w)
                            continue;
                        if (best < 0 || x[j] > x[best]) /* strictly greater: the first maximum wins */
                            best = j;
                    }
                if (best >= 0)
                    acc[best] += g[(oy * p->out_w + ox) * p->c + c];
            }
}
