/* Backward of int8 DEPTHWISE_CONV_2D: input and weight gradients (the bias gradient is qgrad_bias). Input gradient: per
 * output pixel the in-bounds taps are walked once; output channel oc = ic·dm + d sends h[oc]·W̄[tap][oc] to input
 * channel ic of the tap. With dm = 1 a tap is a contiguous run of out_c products, acc[j] += h[j]·w[j]. */
#include <string.h>
#include "qgrad.h"
#include "wgrad_i8.h"
#include "dot_i8.h"

#ifdef DOT_I8_DSP
#define DWG_TAPS_MAX 25u /* kernels up to 5×5 gather (200 B of widened weights); larger ones scatter */

/* four channels' h at hq (int16, any alignment) against one tap's widened weights (channels 0, 2 and 1, 3) */
static inline void dwg_tap4(const int16_t *hq, const uint32_t *wt, int32_t *a)
{
    uint32_t h01, h23;
    memcpy(&h01, hq, 4);
    memcpy(&h23, hq + 2, 4);
    a[0] = dot_smlabb(h01, wt[0], a[0]);
    a[1] = dot_smlatb(h01, wt[1], a[1]);
    a[2] = dot_smlabt(h23, wt[0], a[2]);
    a[3] = dot_smlatt(h23, wt[1], a[3]);
}

/* dm = 1 at stride 1, as a gather: input pixel (iy, ix) takes tap (ky, kx) from output pixel (iy + pt - ky,
 * ix + pl - kx), so four channels' sums stay in registers over every tap and each accumulator is stored once (the
 * scatter adds to it once per tap). The group's weights are widened once; pixels whose taps all land on outputs skip
 * the bounds tests. Returns 0 when the shape does not qualify. */
static int dw_input_grad_gather(const qconv_t *p, const int16_t *h, const int8_t *w, int32_t *acc)
{
    uint32_t ww[2u * DWG_TAPS_MAX];
    const uint32_t C = p->out_c, kh = p->k_h, kw = p->k_w, taps = kh * kw, ow = p->out_w;
    const int32_t oh = p->out_h, owi = p->out_w, pt = p->pad_top, pl = p->pad_left;
    const int32_t iy_lo = (int32_t)kh - 1 - pt, iy_hi = oh - 1 - pt, ix_lo = (int32_t)kw - 1 - pl, ix_hi = owi - 1 - pl;
    if (p->dm != 1u || p->stride_h != 1u || p->stride_w != 1u || taps > DWG_TAPS_MAX || (C & 3u))
        return 0;
    for (uint32_t c0 = 0; c0 < C; c0 += 4) {
        for (uint32_t t = 0; t < taps; t++) {
            uint32_t v = dot_ld32(w + t * C + c0);
            ww[2 * t] = dot_sxtb16(v);
            ww[2 * t + 1] = dot_sxtb16_ror8(v);
        }
        for (int32_t iy = 0; iy < (int32_t)p->in_h; iy++) {
            const int row_in = iy >= iy_lo && iy <= iy_hi;
            for (int32_t ix = 0; ix < (int32_t)p->in_w; ix++) {
                int32_t a[4] = {0, 0, 0, 0}, *ar = acc + ((uint32_t)iy * p->in_w + (uint32_t)ix) * C + c0;
                const int32_t oyc = iy + pt, oxc = ix + pl;
                if (row_in && ix >= ix_lo && ix <= ix_hi) {
                    const int16_t *hb = h + ((uint32_t)oyc * ow + (uint32_t)oxc) * C + c0;
                    for (uint32_t ky = 0, t = 0; ky < kh; ky++)
                        for (uint32_t kx = 0; kx < kw; kx++, t++)
                            dwg_tap4(hb - (ky * ow + kx) * C, ww + 2 * t, a);
                } else { /* only the taps whose output pixel oy = oyc - ky, ox = oxc - kx exists */
                    const int32_t ky0 = oyc - oh + 1 > 0 ? oyc - oh + 1 : 0;
                    const int32_t ky1 = oyc + 1 < (int32_t)kh ? oyc + 1 : (int32_t)kh;
                    const int32_t kx0 = oxc - owi + 1 > 0 ? oxc - owi + 1 : 0;
                    const int32_t kx1 = oxc + 1 < (int32_t)kw ? oxc + 1 : (int32_t)kw;
                    for (int32_t ky = ky0; ky < ky1; ky++)
                        for (int32_t kx = kx0; kx < kx1; kx++)
                            dwg_tap4(h + ((uint32_t)(oyc - ky) * ow + (uint32_t)(oxc - kx)) * C + c0,
                                     ww + 2 * ((uint32_t)ky * kw + (uint32_t)kx), a);
                }
                ar[0] = a[0];
                ar[1] = a[1];
                ar[2] = a[2];
                ar[3] = a[3];
            }
        }
    }
    return 1;
}
#endif

void dwconv_i8_input_grad(const qconv_t *p, const int16_t *h, const int8_t *w, int32_t *acc)
{
#ifdef DOT_I8_DSP
    if (dw_input_grad_gather(p, h, w, acc)) /* writes every accumulator */
        return;
#endif
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
