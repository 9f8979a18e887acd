/* Optimized int8 DEPTHWISE_CONV_2D. Per output pixel the in-bounds taps are listed once (input offsets), then
 * channels are processed four at a time with the taps inner, accumulators in registers. The input zero point is
 * folded into bias_eff on the host; a padded tap adds zp_in * w (padding acts as the value zp_in). Output channel
 * oc = ic * dm + m reads input channel ic. */
#include "qop.h"
#include "requant.h"
#include "dot_i8.h"

#define DW_MAX_TAPS 64u /* qplan_load refuses larger kernels */

/* four consecutive output channels from c requantised (per-channel or per-tensor multipliers). Every parameter is
 * read before the four bytes are stored on M4/M7: an int8 store may alias anything, so the compiler would reload
 * them. */
static inline __attribute__((always_inline)) void out4(const qconv_t *p, uint32_t c, int32_t a0, int32_t a1,
                                                       int32_t a2, int32_t a3, int8_t *y)
{
    const int32_t *r = p->rq + (p->rq_per_channel ? 2u * c : 0u);
    uint32_t st = p->rq_per_channel ? 2u : 0u;
#ifdef DOT_I8_DSP
    int32_t zp = p->zp_out, lo = p->act_min, hi = p->act_max;
    int32_t m0 = r[0], s0 = r[1], m1 = r[st], s1 = r[st + 1], m2 = r[2 * st], s2 = r[2 * st + 1];
    int32_t m3 = r[3 * st], s3 = r[3 * st + 1];
    int8_t v0 = rq_out_opt(a0, m0, s0, zp, lo, hi), v1 = rq_out_opt(a1, m1, s1, zp, lo, hi);
    int8_t v2 = rq_out_opt(a2, m2, s2, zp, lo, hi), v3 = rq_out_opt(a3, m3, s3, zp, lo, hi);
    y[c] = v0;
    y[c + 1] = v1;
    y[c + 2] = v2;
    y[c + 3] = v3;
#else /* the M0+'s eight low registers: reloading is cheaper than holding them */
    y[c] = rq_out_opt(a0, r[0], r[1], p->zp_out, p->act_min, p->act_max);
    y[c + 1] = rq_out_opt(a1, r[st], r[st + 1], p->zp_out, p->act_min, p->act_max);
    y[c + 2] = rq_out_opt(a2, r[2 * st], r[2 * st + 1], p->zp_out, p->act_min, p->act_max);
    y[c + 3] = rq_out_opt(a3, r[3 * st], r[3 * st + 1], p->zp_out, p->act_min, p->act_max);
#endif
}

/* dm = 1, channels c.. one at a time (the last out_c mod 4); padded taps read as zp_in */
static void tail_dm1(const qconv_t *p, const int32_t *xoff, uint32_t taps, const int8_t *x, const int8_t *w,
                     int8_t *y, uint32_t c)
{
    for (uint32_t C = p->out_c; c < C; c++) {
        int32_t a = p->bias_eff[c];
        const int32_t *r = p->rq + (p->rq_per_channel ? 2u * c : 0u);
        for (uint32_t t = 0; t < taps; t++)
            a += (xoff[t] >= 0 ? x[xoff[t] + (int32_t)c] : p->zp_in) * w[t * C + c];
        y[c] = rq_out_opt(a, r[0], r[1], p->zp_out, p->act_min, p->act_max);
    }
}

static void channels_dm1(const qconv_t *p, const int32_t *xoff, uint32_t taps, const int8_t *x, const int8_t *w,
                         int8_t *y)
{
    uint32_t c = 0, C = p->out_c;
    const int32_t zp = p->zp_in;
    for (; c + 4 <= C; c += 4) {
        int32_t a0 = p->bias_eff[c], a1 = p->bias_eff[c + 1], a2 = p->bias_eff[c + 2], a3 = p->bias_eff[c + 3];
        const int8_t *wp = w + c;
        for (uint32_t t = 0; t < taps; t++, wp += C) {
            if (xoff[t] >= 0) {
                const int8_t *xp = x + xoff[t] + c;
                a0 += xp[0] * wp[0];
                a1 += xp[1] * wp[1];
                a2 += xp[2] * wp[2];
                a3 += xp[3] * wp[3];
            } else {
                a0 += zp * wp[0];
                a1 += zp * wp[1];
                a2 += zp * wp[2];
                a3 += zp * wp[3];
            }
        }
        out4(p, c, a0, a1, a2, a3, y);
    }
    tail_dm1(p, xoff, taps, x, w, y, c);
}

#ifdef DOT_I8_DSP
/* dm = 1 at an output pixel whose taps are all in bounds (no padding test): per tap, four channels' inputs and
 * weights in one word each, widened with SXTB16 (channels 0, 2 and, rotated, 1, 3), one SMLABB/SMLATT per MAC */
static void channels_dm1_inside(const qconv_t *p, const int32_t *xoff, uint32_t taps, const int8_t *x,
                                const int8_t *w, int8_t *y)
{
    uint32_t c = 0, C = p->out_c;
    for (; c + 4 <= C; c += 4) {
        int32_t a0 = p->bias_eff[c], a1 = p->bias_eff[c + 1], a2 = p->bias_eff[c + 2], a3 = p->bias_eff[c + 3];
        const int8_t *wp = w + c, *xc = x + c;
        const int32_t *tap = xoff, *end = xoff + taps;
        for (; tap < end; tap++, wp += C) {
            uint32_t xv = dot_ld32(xc + *tap), wv = dot_ld32(wp);
            uint32_t x02 = dot_sxtb16(xv), x13 = dot_sxtb16_ror8(xv), w02 = dot_sxtb16(wv), w13 = dot_sxtb16_ror8(wv);
            a0 = dot_smlabb(x02, w02, a0);
            a2 = dot_smlatt(x02, w02, a2);
            a1 = dot_smlabb(x13, w13, a1);
            a3 = dot_smlatt(x13, w13, a3);
        }
        out4(p, c, a0, a1, a2, a3, y);
    }
    tail_dm1(p, xoff, taps, x, w, y, c);
}
#endif

/* depth multiplier a multiple of 4: four consecutive output channels read the same input value */
static void channels_dm4(const qconv_t *p, const int32_t *xoff, uint32_t taps, const int8_t *x, const int8_t *w,
                         int8_t *y)
{
    uint32_t C = p->out_c, dm = p->dm;
    for (uint32_t c = 0; c < C; c += 4) {
        int32_t a0 = p->bias_eff[c], a1 = p->bias_eff[c + 1], a2 = p->bias_eff[c + 2], a3 = p->bias_eff[c + 3];
        int32_t ic = (int32_t)(c / dm);
        const int8_t *wp = w + c;
        for (uint32_t t = 0; t < taps; t++, wp += C) {
            int32_t xv = xoff[t] >= 0 ? x[xoff[t] + ic] : p->zp_in;
            a0 += xv * wp[0];
            a1 += xv * wp[1];
            a2 += xv * wp[2];
            a3 += xv * wp[3];
        }
        out4(p, c, a0, a1, a2, a3, y);
    }
}

/* any other depth multiplier: each input value feeds dm consecutive output channels */
static void channels_dm(const qconv_t *p, const int32_t *xoff, uint32_t taps, const int8_t *x, const int8_t *w,
                        int8_t *y)
{
    uint32_t C = p->out_c, dm = p->dm;
    for (uint32_t ic = 0; ic < p->in_c; ic++)
        for (uint32_t m = 0; m < dm; m++) {
            uint32_t c = ic * dm + m;
            int32_t a = p->bias_eff[c];
            const int32_t *r = p->rq + (p->rq_per_channel ? 2u * c : 0u);
            for (uint32_t t = 0; t < taps; t++)
                a += (xoff[t] >= 0 ? x[xoff[t] + (int32_t)ic] : p->zp_in) * w[t * C + c];
            y[c] = rq_out_opt(a, r[0], r[1], p->zp_out, p->act_min, p->act_max);
        }
}

#ifdef DOT_I8_DSP
#define DW_FAST_TAPS 25u /* kernels up to 5×5 take dw_groups: 300 B of tap tables on the stack */

/* requantise a group's accumulator with its channel's constants (folded when the multiplier allows). unchecked:
 * every accumulator of the channel stays inside ±2^30 (rq_acc_small), so no range test */
typedef struct {
    int32_t mult, shift, e, add;
    int neg, unchecked;
} dw_rq_t;

static inline int8_t dw_out(const dw_rq_t *r, int32_t a, int32_t zp, int32_t lo, int32_t hi)
{
    if (r->unchecked)
        return rq_out_neg_small(a, r->mult, r->e, r->add, lo, hi);
    return r->neg ? rq_out_neg(a, r->mult, r->e, r->add, zp, lo, hi) : rq_out_opt(a, r->mult, r->shift, zp, lo, hi);
}

/* dm = 1, channels a multiple of four: four channels at a time over every pixel, the group's weights widened once
 * (channels 0, 2 and 1, 3 per tap word) and its requantisation constants folded once; a tap is one word load of the
 * input (or, outside the input, the word of four zp_in) and four 16x16 MACs. */
static __attribute__((noinline)) int dw_groups(const qconv_t *p, const int8_t *x, const int8_t *w, int8_t *y)
{
    uint32_t ww[2u * DW_FAST_TAPS]; /* own frame: not beside dw_pixels' tap list on the stack */
    int32_t toff[DW_FAST_TAPS];
    dw_rq_t rq[4];
    const uint32_t C = p->out_c, kh = p->k_h, kw = p->k_w, taps = kh * kw, st = p->rq_per_channel ? 2u : 0u;
    const int32_t in_h = p->in_h, in_w = p->in_w, zp = p->zp_out, lo = p->act_min, hi = p->act_max;
    const uint32_t zz = ((uint32_t)p->zp_in & 0xFFFFu) | (uint32_t)p->zp_in << 16; /* zp_in in both lanes */
    int32_t base[4];
    if (p->dm != 1u || (C & 3u) || taps > DW_FAST_TAPS)
        return 0;
    for (uint32_t t = 0; t < taps; t++)
        toff[t] = (int32_t)(((t / kw) * p->in_w + t % kw) * C);
    for (uint32_t c0 = 0; c0 < C; c0 += 4) {
        for (uint32_t t = 0; t < taps; t++) {
            uint32_t v = dot_ld32(w + t * C + c0);
            ww[2 * t] = dot_sxtb16(v);
            ww[2 * t + 1] = dot_sxtb16_ror8(v);
        }
        for (uint32_t k = 0; k < 4u; k++) { /* base = bias_eff + zp_in·Σw: the accumulator with every tap at zp_in */
            uint32_t sw = 0;
            for (uint32_t t = 0; t < taps; t++)
                sw += (uint32_t)(int32_t)w[t * C + c0 + k];
            base[k] = (int32_t)((uint32_t)p->bias_eff[c0 + k] + (uint32_t)p->zp_in * sw);
        }
        for (uint32_t k = 0; k < 4u; k++) {
            const int32_t *r = p->rq + (c0 + k) * st;
            rq[k].mult = r[0];
            rq[k].shift = r[1];
            rq[k].neg = rq_neg_ok(r[1], zp);
            rq[k].e = -r[1];
            rq[k].add = rq[k].neg ? rq_neg_add(r[1], zp) : 0;
            rq[k].unchecked = rq[k].neg && rq_acc_small(p->bias_eff[c0 + k], taps);
        }
        for (uint32_t oy = 0; oy < p->out_h; oy++)
            for (uint32_t ox = 0; ox < p->out_w; ox++) {
                const int32_t iy0 = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
                const int32_t ix0 = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
                int32_t a0 = p->bias_eff[c0], a1 = p->bias_eff[c0 + 1], a2 = p->bias_eff[c0 + 2];
                int32_t a3 = p->bias_eff[c0 + 3];
                int8_t *yo = y + (oy * p->out_w + ox) * C + c0;
                if (iy0 >= 0 && ix0 >= 0 && iy0 + (int32_t)kh <= in_h && ix0 + (int32_t)kw <= in_w) {
                    const int8_t *xb = x + ((uint32_t)iy0 * p->in_w + (uint32_t)ix0) * C + c0;
                    for (uint32_t t = 0; t < taps; t++) {
                        uint32_t v = dot_ld32(xb + toff[t]), e = dot_sxtb16(v), o = dot_sxtb16_ror8(v);
                        a0 = dot_smlabb(e, ww[2 * t], a0);
                        a2 = dot_smlatt(e, ww[2 * t], a2);
                        a1 = dot_smlabb(o, ww[2 * t + 1], a1);
                        a3 = dot_smlatt(o, ww[2 * t + 1], a3);
                    }
                } else { /* only the in-bounds taps, as x - zp_in from base (a padded tap adds nothing then) */
                    const int32_t ky0 = iy0 < 0 ? -iy0 : 0, ky1 = in_h - iy0 < (int32_t)kh ? in_h - iy0 : (int32_t)kh;
                    const int32_t kx0 = ix0 < 0 ? -ix0 : 0, kx1 = in_w - ix0 < (int32_t)kw ? in_w - ix0 : (int32_t)kw;
                    a0 = base[0], a1 = base[1], a2 = base[2], a3 = base[3];
                    for (int32_t ky = ky0; ky < ky1; ky++) {
                        const uint32_t *wt = ww + 2u * ((uint32_t)ky * kw + (uint32_t)kx0);
                        const int8_t *xr = x + ((iy0 + ky) * in_w + ix0 + kx0) * (int32_t)C + (int32_t)c0;
                        for (int32_t kx = kx0; kx < kx1; kx++, wt += 2, xr += C) {
                            uint32_t v = dot_ld32(xr);
                            uint32_t e = dot_ssub16(dot_sxtb16(v), zz), o = dot_ssub16(dot_sxtb16_ror8(v), zz);
                            a0 = dot_smlabb(e, wt[0], a0);
                            a2 = dot_smlatt(e, wt[0], a2);
                            a1 = dot_smlabb(o, wt[1], a1);
                            a3 = dot_smlatt(o, wt[1], a3);
                        }
                    }
                }
                yo[0] = dw_out(&rq[0], a0, zp, lo, hi);
                yo[1] = dw_out(&rq[1], a1, zp, lo, hi);
                yo[2] = dw_out(&rq[2], a2, zp, lo, hi);
                yo[3] = dw_out(&rq[3], a3, zp, lo, hi);
            }
    }
    return 1;
}
#endif

/* every other shape: per output pixel its in-bounds taps listed once (input offsets), then the channels */
static __attribute__((noinline)) void dw_pixels(const qconv_t *p, const int8_t *x, const int8_t *w, int8_t *y)
{
    int32_t xoff[DW_MAX_TAPS];
    uint32_t taps = (uint32_t)p->k_h * p->k_w;
    for (uint32_t oy = 0; oy < p->out_h; oy++)
        for (uint32_t ox = 0; ox < p->out_w; ox++, y += p->out_c) {
            int32_t iy0 = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
            int32_t ix0 = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
            uint32_t t = 0;
            for (int32_t ky = 0; ky < p->k_h; ky++)
                for (int32_t kx = 0; kx < p->k_w; kx++, t++) {
                    int32_t iy = iy0 + ky, ix = ix0 + kx;
                    int in = iy >= 0 && ix >= 0 && iy < (int32_t)p->in_h && ix < (int32_t)p->in_w;
                    xoff[t] = in ? (iy * (int32_t)p->in_w + ix) * (int32_t)p->in_c : -1;
                }
#ifdef DOT_I8_DSP
            if (p->dm == 1 && iy0 >= 0 && ix0 >= 0 && iy0 + p->k_h <= (int32_t)p->in_h &&
                ix0 + p->k_w <= (int32_t)p->in_w) /* every tap in bounds */
                channels_dm1_inside(p, xoff, taps, x, w, y);
            else
#endif
            if (p->dm == 1)
                channels_dm1(p, xoff, taps, x, w, y);
            else if ((p->dm & 3u) == 0)
                channels_dm4(p, xoff, taps, x, w, y);
            else
                channels_dm(p, xoff, taps, x, w, y);
        }
}

void dwconv_i8(const qconv_t *p, const int8_t *x, const int8_t *w, int8_t *y)
{
#ifdef DOT_I8_DSP
    if (dw_groups(p, x, w, y))
        return;
#endif
    dw_pixels(p, x, w, y);
}
