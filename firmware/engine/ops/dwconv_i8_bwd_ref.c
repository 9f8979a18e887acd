/* Plain int8 DEPTHWISE_CONV_2D backward straight from the definition (host tests only): per input element, the sum
 * over output pixels whose window covers it and over its dm output channels of h·W̄ at that tap; per weight, the sum
 * over output pixels of h·(x − zp_in) at that tap. */
#include "qgrad.h"

void dwconv_i8_input_grad_ref(const qconv_t *p, const int16_t *h, const int8_t *w, int32_t *acc)
{
    for (int32_t iy = 0; iy < p->in_h; iy++)
        for (int32_t ix = 0; ix < p->in_w; ix++)
            for (int32_t ic = 0; ic < p->in_c; ic++) {
                int32_t s = 0;
                for (int32_t oy = 0; oy < p->out_h; oy++)
                    for (int32_t ox = 0; ox < p->out_w; ox++) {
                        int32_t ky = iy - (oy * p->stride_h - p->pad_top), kx = ix - (ox * p->stride_w - p->pad_left);
                        if (ky < 0 || kx < 0 || ky >= p->k_h || kx >= p->k_w)
                            continue;
                        for (int32_t d = 0; d < p->dm; d++) {
                            int32_t oc = ic * p->dm + d;
                            s += h[(oy * p->out_w + ox) * p->out_c + oc] * w[(ky * p->k_w + kx) * p->out_c + oc];
                        }
                    }
                acc[(iy * p->in_w + ix) * p->in_c + ic] = s;
            }
}

void dwconv_i8_weight_grad_ref(const qconv_t *p, const int16_t *h, const int8_t *x, uint32_t o, int32_t *a)
{
    int32_t ic = (int32_t)o / p->dm;
    for (int32_t ky = 0; ky < p->k_h; ky++)
        for (int32_t kx = 0; kx < p->k_w; kx++)
            a[ky * p->k_w + kx] = qgrad_tap_sum_ref(p, h, x, o, ky, kx, ic);
}
