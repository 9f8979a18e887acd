/* Backward of int8 DEPTHWISE_CONV_2D: input and weight gradients (the bias gradient is qgrad_bias). Input gradient: per
 * output pixel the in-bounds taps are walked once; output channel oc = ic·dm + d sends h[oc]·W̄[tap][oc] to input
 * channel ic of the tap. With dm = 1 a tap is a contiguous run of out_c products, acc[j] += h[j]·w[j]. */
#include <string.h>
#include "qgrad.h"
#include "wgrad_i8.h"

void dwconv_i8_input_grad(const qconv_t *p, const int16_t *h, const int8_t *w, int32_t *acc)
{
    uint32_t ic = p->in_c, oc = p->out_c, dm = p->dm, xrow = (uint32_t)p->in_w * ic;
    memset(acc, 0, (uint32_t)p->in_h * xrow * sizeof *acc);
    for (int32_t oy = 0; oy < p->out_h; oy++)
        for (int32_t ox = 0; ox < p->out_w; ox++, h += oc) {
            int32_t iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
            for (int32_t ky = 0; ky < p->k_h; ky++) {
                int32_t iy = iy0 + ky;
                if (iy < 0 || iy >= p->in_h)
                    continue;
                for (int32_t kx = 0; kx < p->k_w; kx++) {
                    int32_t ix = ix0 + kx;
                    int32_t *ar;
                    const int8_t *wt;
                    if (ix < 0 || ix >= p->in_w)
                        continue;
                    ar = acc + (uint32_t)iy * xrow + (uint32_t)ix * ic;
                    wt = w + (uint32_t)(ky * p->k_w + kx) * oc;
                    if (dm == 1u) {
                        uint32_t j = 0;
                        for (; j + 4 <= oc; j += 4) {
                            ar[j] += h[j] * wt[j];
                            ar[j + 1] += h[j + 1] * wt[j + 1];
                            ar[j + 2] += h[j + 2] * wt[j + 2];
                            ar[j + 3] += h[j + 3] * wt[j + 3];
                        }
                        for (; j < oc; j++)
                            ar[j] += h[j] * wt[j];
                    } else {
                        for (uint32_t c = 0; c < ic; c++)
                            for (uint32_t d = 0; d < dm; d++)
                                ar[c] += h[c * dm + d] * wt[c * dm + d];
                    }
                }
            }
        }
}

/* Weight gradient of channel o: output pixels whose h is 0 (ReLU-masked, or a zero gradient) are skipped, the others
 * add h·(x − zp) to each in-bounds tap; the input channel's values sit every in_c bytes. */
void dwconv_i8_weight_grad(const qconv_t *p, const int16_t *h, const int8_t *x, uint32_t o, int32_t *a)
{
    uint32_t oc = p->out_c, ic = p->in_c, xrow = (uint32_t)p->in_w * ic, kw = p->k_w;
    const int32_t zp = p->zp_in;
    x += o / p->dm;
#ifdef DOT_I8_DSP
    if (wgrad_plane_i8(p, h + o, x, ic, a)) /* stride 1: every tap one contiguous int16 dot product */
        return;
#endif
    memset(a, 0, (uint32_t)p->k_h * kw * sizeof *a);
    for (int32_t oy = 0; oy < p->out_h; oy++)
        for (int32_t ox = 0; ox < p->out_w; ox++, h += oc) {
            int32_t hv = h[o], iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
            int32_t kx0 = ix0 < 0 ? -ix0 : 0, kx1 = p->in_w - ix0 < (int32_t)kw ? p->in_w - ix0 : (int32_t)kw;
            if (hv == 0)
                continue;
            for (int32_t ky = 0; ky < p->k_h; ky++) {
                int32_t iy = iy0 + ky;
                const int8_t *xr;
                int32_t *ar = a + (uint32_t)ky * kw;
                if (iy < 0 || iy >= p->in_h)
                    continue;
                xr = x + (uint32_t)iy * xrow;
                for (int32_t kx = kx0; kx < kx1; kx++)
                    ar[kx] += hv * (xr[(uint32_t)(ix0 + kx) * ic] - zp);
            }
        }
}
