/* Plain int8 DEPTHWISE_CONV_2D straight from the definition (host tests only). */
#include "qop.h"
#include "requant.h"

void dwconv_i8_ref(const qconv_t *p, const int8_t *x, const int8_t *w, int8_t *y)
{
    for (int32_t oy = 0; oy < p->out_h; oy++)
        for (int32_t ox = 0; ox < p->out_w; ox++)
            for (int32_t oc = 0; oc < p->out_c; oc++) {
                int32_t ic = oc / p->dm, acc = p->bias ? p->bias[oc] : 0;
                for (int32_t ky = 0; ky < p->k_h; ky++)
                    for (int32_t kx = 0; kx < p->k_w; kx++) {
                        int32_t iy = oy * p->stride_h - p->pad_top + ky, ix = ox * p->stride_w - p->pad_left + kx;
                        if (iy < 0 || ix < 0 || iy >= p->in_h || ix >= p->in_w)
                            continue;
                        acc += (x[(iy * p->in_w + ix) * p->in_c + ic] - p->zp_in) *
                               w[(ky * p->k_w + kx) * p->out_c + oc];
                    }
                int32_t r = p->rq_per_channel ? oc : 0;
                y[(oy * p->out_w + ox) * p->out_c + oc] =
                    rq_out(acc, p->rq[2 * r], p->rq[2 * r + 1], p->zp_out, p->act_min, p->act_max);
            }
}
