/* Plain MAX_POOL_2D (host tests only): every tap of every window tested for bounds, the maximum of the in-bounds
 * ones clamped to the activation range. */
#include "qop.h"
#include "requant_ref.h"

void maxpool_i8_ref(const qpool_t *p, const int8_t *x, int8_t *y)
{
    for (int32_t oy = 0; oy < p->out_h; oy++)
        for (int32_t ox = 0; ox < p->out_w; ox++)
            for (int32_t c = 0; c < p->c; c++) {
                int32_t m = -128;
                for (int32_t ky = 0; ky < p->k_h; ky++)
                    for (int32_t kx = 0; kx < p->k_w; kx++) {
                        int32_t iy = oy * p->stride_h - p->pad_top + ky, ix = ox * p->stride_w - p->pad_left + kx;
                        if (iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w && x[(iy * p->in_w + ix) * p->c + c] > m)
                            m = x[(iy * p->in_w + ix) * p->c + c];
                    }
                y[(oy * p->out_w + ox) * p->c + c] = (int8_t)ref_clamp(m, p->act_min, p->act_max);
            }
}
