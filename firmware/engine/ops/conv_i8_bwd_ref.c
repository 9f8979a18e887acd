/* Plain int8 CONV_2D backward straight from the definition (host tests only). */
#include "qgrad.h"

void conv_i8_input_grad_ref(const qconv_t *p, const int16_t *h, const qrows_t *w, int32_t *acc)
{
    for (int32_t iy = 0; iy < p->in_h; iy++)
        for (int32_t ix = 0; ix < p->in_w; ix++)
            for (int32_t ic = 0; ic < p->in_c; ic++) {
                int32_t s = 0;
                for (int32_t oy = 0; oy < p->out_h; oy++)
                    for (int32_t ox = 0; ox < p->out_w; ox++) {
                        int32_t ky = iy - (oy * p->stride_h - p->pad_top), kx = ix - (ox * p->stride_w - p->pad_left);
                        uint32_t cur = 0;
                        if (ky < 0 || kx < 0 || ky >= p->k_h || kx >= p->k_w)
                            continue;
                        for (int32_t oc = 0; oc < p->out_c; oc++)
                            s += h[(oy * p->out_w + ox) * p->out_c + oc] *
                                 qrows_get(w, (uint32_t)oc, &cur)[(ky * p->k_w + kx) * p->in_c + ic];
                    }
                acc[(iy * p->in_w + ix) * p->in_c + ic] = s;
            }
}

int32_t qgrad_tap_sum_ref(const qconv_t *p, const int16_t *h, const int8_t *x, uint32_t o, int32_t ky, int32_t kx,
                          int32_t ic)
{
    int32_t s = 0;
    for (int32_t oy = 0; oy < p->out_h; oy++)
        for (int32_t ox = 0; ox < p->out_w; ox++) {
            int32_t iy = oy * p->stride_h - p->pad_top + ky, ix = ox * p->stride_w - p->pad_left + kx;
            if (iy < 0 || ix < 0 || iy >= p->in_h || ix >= p->in_w)
                continue;
            s += h[(oy * p->out_w + ox) * p->out_c + (int32_t)o] * (x[(iy * p->in_w + ix) * p->in_c + ic] - p->zp_in);
        }
    return s;
}

void conv_i8_weight_grad_ref(const qconv_t *p, const int16_t *h, const int8_t *x, uint32_t oc, int32_t *a)
{
    for (int32_t ky = 0; ky < p->k_h; ky++)
        for (int32_t kx = 0; kx < p->k_w; kx++)
            for (int32_t ic = 0; ic < p->in_c; ic++)
                a[(ky * p->k_w + kx) * p->in_c + ic] = qgrad_tap_sum_ref(p, h, x, oc, ky, kx, ic);
}
