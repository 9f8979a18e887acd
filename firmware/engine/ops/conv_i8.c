/* Optimized int8 CONV_2D (TFLite semantics, per-channel requantisation). The input zero point is hoisted: the host
 * folds -zp_in * sum(w) into bias_eff, so the inner loop is a plain int8 dot product over contiguous runs (one run of
 * k_w * in_c values per kernel row when the window is inside the input). Windows that cross the border add
 * zp_in * sum(w) over their padded taps (padding acts as the value zp_in, i.e. contributes 0 to sum (x - zp_in) w).
 * Four output channels share each input load. */
#include "qop.h"
#include "dot_i8.h"
#include "requant.h"

typedef struct {
    int32_t iy0, ix0;        /* input coordinate of tap (0, 0) */
    uint32_t ky0, ky1, kx0, kx1; /* in-bounds taps [ky0, ky1) x [kx0, kx1) */
} win_t;

static uint32_t lo_bound(int32_t origin)
{
    return origin < 0 ? (uint32_t)(-origin) : 0u;
}

static uint32_t hi_bound(int32_t origin, uint32_t k, uint32_t size)
{
    int32_t room = (int32_t)size - origin;
    if (room <= 0)
        return 0;
    return (uint32_t)room < k ? (uint32_t)room : k;
}

static void window(const qconv_t *p, uint32_t oy, uint32_t ox, win_t *w)
{
    w->iy0 = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
    w->ix0 = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
    w->ky0 = lo_bound(w->iy0);
    w->ky1 = hi_bound(w->iy0, p->k_h, p->in_h);
    w->kx0 = lo_bound(w->ix0);
    w->kx1 = hi_bound(w->ix0, p->k_w, p->in_w);
    if (w->ky1 < w->ky0)
        w->ky1 = w->ky0;
    if (w->kx1 < w->kx0)
        w->kx1 = w->kx0;
}

/* sum of one output channel's weights over the padded taps of a window */
static int32_t padded_wsum(const qconv_t *p, const win_t *win, const int8_t *wo)
{
    uint32_t row = (uint32_t)p->k_w * p->in_c, s = 0;
    int32_t sum = 0;
    for (uint32_t ky = 0; ky < p->k_h; ky++, s += row) {
        if (ky < win->ky0 || ky >= win->ky1) {
            sum += sum_i8(wo + s, row);
            continue;
        }
        sum += sum_i8(wo + s, win->kx0 * p->in_c);
        sum += sum_i8(wo + s + win->kx1 * p->in_c, (p->k_w - win->kx1) * p->in_c);
    }
    return sum;
}

static void requant4(const qconv_t *p, uint32_t oc, const int32_t *acc, int8_t *y)
{
    const int32_t *rq = p->rq + (p->rq_per_channel ? 2u * oc : 0u);
    uint32_t st = p->rq_per_channel ? 2u : 0u;
    y[0] = rq_out_opt(acc[0], rq[0], rq[1], p->zp_out, p->act_min, p->act_max);
    y[1] = rq_out_opt(acc[1], rq[st], rq[st + 1], p->zp_out, p->act_min, p->act_max);
    y[2] = rq_out_opt(acc[2], rq[2 * st], rq[2 * st + 1], p->zp_out, p->act_min, p->act_max);
    y[3] = rq_out_opt(acc[3], rq[3 * st], rq[3 * st + 1], p->zp_out, p->act_min, p->act_max);
}

/* a window inside the input whose taps form one contiguous run of wsz values (k_h = 1, or k_w = in_w) */
static void pixel_run(const qconv_t *p, const int8_t *xr, const int8_t *w, uint32_t wsz, int8_t *y)
{
    uint32_t oc = 0;
    int32_t acc[4];
    if (wsz < 64u) /* short rows: four channels per input load beat the loop setup that two would repeat */
        for (; oc + 4 <= p->out_c; oc += 4, w += 4 * wsz) {
            acc[0] = p->bias_eff[oc];
            acc[1] = p->bias_eff[oc + 1];
            acc[2] = p->bias_eff[oc + 2];
            acc[3] = p->bias_eff[oc + 3];
            dot4_i8(xr, w, wsz, wsz, acc);
            requant4(p, oc, acc, y + oc);
        }
    for (; oc + 2 <= p->out_c; oc += 2, w += 2 * wsz) { /* long rows: two channels per pass, no register spills */
        const int32_t *rq = p->rq + (p->rq_per_channel ? 2u * oc : 0u);
        uint32_t st = p->rq_per_channel ? 2u : 0u;
        acc[0] = p->bias_eff[oc];
        acc[1] = p->bias_eff[oc + 1];
        dot2_i8(xr, w, wsz, wsz, acc);
        y[oc] = rq_out_opt(acc[0], rq[0], rq[1], p->zp_out, p->act_min, p->act_max);
        y[oc + 1] = rq_out_opt(acc[1], rq[st], rq[st + 1], p->zp_out, p->act_min, p->act_max);
    }
    for (; oc < p->out_c; oc++, w += wsz) {
        const int32_t *rq = p->rq + (p->rq_per_channel ? 2u * oc : 0u);
        int32_t a = p->bias_eff[oc] + dot1_i8(xr, w, wsz);
        y[oc] = rq_out_opt(a, rq[0], rq[1], p->zp_out, p->act_min, p->act_max);
    }
}

/* general window: one run per kernel row, border taps corrected */
static void pixel(const qconv_t *p, const win_t *win, const int8_t *x, const int8_t *w, int8_t *y)
{
    uint32_t wsz = (uint32_t)p->k_h * p->k_w * p->in_c, row = (uint32_t)p->k_w * p->in_c, oc = 0;
    uint32_t run = (win->kx1 - win->kx0) * p->in_c, woff = win->kx0 * p->in_c;
    uint32_t xrow = (uint32_t)p->in_w * p->in_c;
    int border = win->ky0 != 0 || win->ky1 != p->k_h || win->kx0 != 0 || win->kx1 != p->k_w;
    const int8_t *x0 = x + ((win->iy0 + (int32_t)win->ky0) * (int32_t)p->in_w + win->ix0 + (int32_t)win->kx0) *
                               (int32_t)p->in_c;
    int32_t acc[4];
    if (!border && (p->k_h == 1 || xrow == run)) {
        pixel_run(p, x0, w, wsz, y);
        return;
    }
    for (; oc < p->out_c; oc += 4) {
        uint32_t n = p->out_c - oc < 4 ? p->out_c - oc : 4, k;
        const int8_t *wo = w + oc * wsz, *xr = x0;
        acc[0] = acc[1] = acc[2] = acc[3] = 0;
        if (n == 4) {
            for (uint32_t ky = win->ky0; ky < win->ky1; ky++, xr += xrow)
                dot4_i8(xr, wo + ky * row + woff, wsz, run, acc);
        } else {
            for (k = 0; k < n; k++) {
                xr = x0;
                for (uint32_t ky = win->ky0; ky < win->ky1; ky++, xr += xrow)
                    acc[k] += dot1_i8(xr, wo + k * wsz + ky * row + woff, run);
            }
        }
        for (k = 0; k < n; k++) {
            const int32_t *rq = p->rq + (p->rq_per_channel ? 2u * (oc + k) : 0u);
            acc[k] += p->bias_eff[oc + k];
            if (border && p->zp_in)
                acc[k] += p->zp_in * padded_wsum(p, win, wo + k * wsz);
            y[oc + k] = rq_out_opt(acc[k], rq[0], rq[1], p->zp_out, p->act_min, p->act_max);
        }
    }
}

/* Short kernel rows (few input channels, e.g. the first layer's 3×3×1): the window is gathered into one contiguous
 * patch of k_h·k_w·in_c bytes first, padding taps filled with zp_in (so they add zp_in·w, which bias_eff's −zp_in·Σw
 * cancels: no border correction), and every channel is one dot product over the whole patch instead of k_h runs of a
 * few bytes. */
#define CONV_PATCH_MAX 64u

/* One kernel row of the window at input row iy, columns from ix0, into row: taps outside the input are zp_in (so
 * the folded bias needs no border correction). GCC would turn the few-byte copy loops here and in gather_patch back
 * into memcpy/memset calls, each costing more than the copy. */
__attribute__((optimize("no-tree-loop-distribute-patterns"))) static void gather_row(const qconv_t *p,
                                                                                     const int8_t *x, int32_t iy,
                                                                                     int32_t ix0, int8_t *row)
{
    const uint32_t ic = p->in_c;
    for (uint32_t kx = 0; kx < p->k_w; kx++) { /* pointers formed for in-bounds taps only */
        int32_t ix = ix0 + (int32_t)kx;
        int in = iy >= 0 && iy < (int32_t)p->in_h && ix >= 0 && ix < (int32_t)p->in_w;
        const int8_t *xt = in ? x + ((uint32_t)iy * p->in_w + (uint32_t)ix) * ic : 0;
        for (uint32_t c = 0; c < ic; c++)
            row[kx * ic + c] = in ? xt[c] : (int8_t)p->zp_in;
    }
}

__attribute__((optimize("no-tree-loop-distribute-patterns"))) static void gather_patch(const qconv_t *p,
                                                                                       const int8_t *x, uint32_t oy,
                                                                                       uint32_t ox, int8_t *patch)
{
    const uint32_t ic = p->in_c, run = (uint32_t)p->k_w * ic;
    const int8_t zp = (int8_t)p->zp_in;
    int32_t iy0 = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
    int32_t ix0 = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
    int8_t *q = patch;
    for (uint32_t ky = 0; ky < p->k_h; ky++, q += run) { /* runs < 8 bytes: copied inline, no calls */
        int32_t iy = iy0 + (int32_t)ky;
        if (iy < 0 || iy >= (int32_t)p->in_h) {
            for (uint32_t j = 0; j < run; j++)
                q[j] = zp;
            continue;
        }
        if (ix0 >= 0 && ix0 + (int32_t)p->k_w <= (int32_t)p->in_w) { /* the whole row inside */
            const int8_t *xr = x + ((uint32_t)iy * p->in_w + (uint32_t)ix0) * ic;
            for (uint32_t j = 0; j < run; j++)
                q[j] = xr[j];
            continue;
        }
        gather_row(p, x, iy, ix0, q); /* a row crossing the left or right border */
    }
}

#ifdef DOT_I8_DSP
#define PATCH_BLOCK_WORDS 224u /* 896 B of stack: the widened patches of one block of pixels (digits-cnn: all 36) */

/* one row of n bytes as SXTB16 pairs, zero-padded to whole words (the last, partial word assembled byte by byte) */
static uint32_t *widen_row(const int8_t *v, uint32_t n, uint32_t *out)
{
    uint32_t g = 0;
    for (; 4u * g + 4u <= n; g++, out += 2) {
        uint32_t u = dot_ld32(v + 4 * g);
        out[0] = dot_sxtb16(u);
        out[1] = dot_sxtb16_ror8(u);
    }
    if (4u * g < n) {
        uint32_t u = 0;
        for (uint32_t j = 4u * g; j < n; j++)
            u |= (uint32_t)(uint8_t)v[j] << (8u * (j - 4u * g));
        out[0] = dot_sxtb16(u);
        out[1] = dot_sxtb16_ror8(u);
        out += 2;
    }
    return out;
}

/* n bytes as SXTB16 pairs (words 2g, 2g + 1 hold bytes 4g + {0, 2}, {1, 3}), zero words after them up to words */
static void widen_padded(const int8_t *v, uint32_t n, uint32_t words, uint32_t *out)
{
    uint32_t *end = out + words;
    for (out = widen_row(v, n, out); out < end; out++)
        *out = 0;
}

/* Kernel rows padded to whole words, when that costs at most one byte a row (k_w·in_c = 0 or 3 mod 4: 3×3×1, 10×4×1,
 * 1×7×1): a row inside the input is widened straight from it, one word load per four taps (the pad byte, the next
 * input byte, meets a zero weight); only rows that cross the border, or whose last word would read past the input,
 * are gathered first. */
static int rows_padded(const qconv_t *p)
{
    uint32_t rb = ((uint32_t)p->k_w * p->in_c) & 3u;
    return rb == 0u || rb == 3u;
}

/* one pixel's patch, row by row: rows inside the input straight from it, the others gathered with zp_in padding */
static void widen_rows(const qconv_t *p, const int8_t *x, uint32_t oy, uint32_t ox, uint32_t *out)
{
    const uint32_t ic = p->in_c, rb = (uint32_t)p->k_w * ic, groups = (rb + 3u) >> 2;
    const uint32_t xrow = (uint32_t)p->in_w * ic, xend = (uint32_t)p->in_h * xrow;
    const int32_t iy0 = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
    const int32_t ix0 = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
    const int inside_x = ix0 >= 0 && ix0 + (int32_t)p->k_w <= (int32_t)p->in_w;
    int8_t row[CONV_PATCH_MAX];
    for (uint32_t ky = 0; ky < p->k_h; ky++) {
        int32_t iy = iy0 + (int32_t)ky;
        uint32_t at = (uint32_t)iy * xrow + (uint32_t)ix0 * ic;
        if (inside_x && iy >= 0 && iy < (int32_t)p->in_h && at + 4u * groups <= xend) {
            const int8_t *xr = x + at;
            for (uint32_t g = 0; g < groups; g++, out += 2) {
                uint32_t u = dot_ld32(xr + 4 * g);
                out[0] = dot_sxtb16(u);
                out[1] = dot_sxtb16_ror8(u);
            }
            continue;
        }
        gather_row(p, x, iy, ix0, row);
        out = widen_row(row, rb, out);
    }
}

/* the row-padded patches of pixels q0 .. q0 + nb - 1: a window inside the input (and far enough from its end for the
 * last word) is k_h·groups word loads at fixed strides, the rest go through widen_rows */
static void widen_block(const qconv_t *p, const int8_t *x, uint32_t q0, uint32_t nb, uint32_t *out)
{
    const uint32_t ic = p->in_c, groups = ((uint32_t)p->k_w * ic + 3u) >> 2, kh = p->k_h;
    const uint32_t xrow = (uint32_t)p->in_w * ic, xend = (uint32_t)p->in_h * xrow, ow = p->out_w;
    const uint32_t sy = p->stride_h, sx = p->stride_w, words = kh * groups * 2u;
    const int32_t pt = p->pad_top, pl = p->pad_left, kw = p->k_w, in_w = p->in_w, in_h = p->in_h;
    uint32_t oy = q0 / ow, ox = q0 % ow;
    for (uint32_t k = 0; k < nb; k++, out += words) {
        int32_t iy0 = (int32_t)(oy * sy) - pt, ix0 = (int32_t)(ox * sx) - pl;
        uint32_t at = (uint32_t)iy0 * xrow + (uint32_t)ix0 * ic;
        if (iy0 >= 0 && iy0 + (int32_t)kh <= in_h && ix0 >= 0 && ix0 + kw <= in_w &&
            at + (kh - 1u) * xrow + 4u * groups <= xend) {
            const int8_t *xr = x + at;
            uint32_t *o = out;
            for (uint32_t ky = kh; ky; ky--, xr += xrow)
                for (uint32_t g = 0; g < groups; g++, o += 2) {
                    uint32_t u = dot_ld32(xr + 4 * g);
                    o[0] = dot_sxtb16(u);
                    o[1] = dot_sxtb16_ror8(u);
                }
        } else {
            widen_rows(p, x, oy, ox, out);
        }
        if (++ox == ow) {
            ox = 0;
            oy++;
        }
    }
}

/* one patch's six words (taps 0..11 of a 3×3×1 kernel) against the channel's six weight words */
static inline int32_t dot6(const uint32_t *pw, uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3, uint32_t w4,
                           uint32_t w5, int32_t a)
{
    a = dot_smlad(pw[0], w0, a);
    a = dot_smlad(pw[1], w1, a);
    a = dot_smlad(pw[2], w2, a);
    a = dot_smlad(pw[3], w3, a);
    a = dot_smlad(pw[4], w4, a);
    return dot_smlad(pw[5], w5, a);
}

/* one channel over a block of widened patches, its weights in registers: six words are taps 0..11 (3×3×1) */
static void channel_block6(const qconv_t *p, const uint32_t *pw, uint32_t nb, const uint32_t *ww, int32_t bias,
                           const int32_t *rq, int8_t *y)
{
    const uint32_t w0 = ww[0], w1 = ww[1], w2 = ww[2], w3 = ww[3], w4 = ww[4], w5 = ww[5], out_c = p->out_c;
    const int32_t mult = rq[0], shift = rq[1], zp = p->zp_out, lo = p->act_min, hi = p->act_max;
    if (rq_neg_ok(shift, zp)) { /* the usual multiplier: its constants folded once for the channel */
        const int32_t e = -shift, add = rq_neg_add(shift, zp);
        if (rq_acc_small(bias, 12u)) /* six words of two products */
            for (uint32_t k = 0; k < nb; k++, pw += 6, y += out_c)
                *y = rq_out_neg_small(dot6(pw, w0, w1, w2, w3, w4, w5, bias), mult, e, add, lo, hi);
        else
            for (uint32_t k = 0; k < nb; k++, pw += 6, y += out_c)
                *y = rq_out_neg(dot6(pw, w0, w1, w2, w3, w4, w5, bias), mult, e, add, zp, lo, hi);
        return;
    }
    for (uint32_t k = 0; k < nb; k++, pw += 6, y += out_c)
        *y = rq_out_opt(dot6(pw, w0, w1, w2, w3, w4, w5, bias), mult, shift, zp, lo, hi);
}

/* any patch size: the channel's widened weights from memory */
static void channel_block(const qconv_t *p, const uint32_t *pw, uint32_t nb, uint32_t words, const uint32_t *ww,
                          int32_t bias, const int32_t *rq, int8_t *y)
{
    const uint32_t out_c = p->out_c;
    const int32_t mult = rq[0], shift = rq[1], zp = p->zp_out, lo = p->act_min, hi = p->act_max;
    for (uint32_t k = 0; k < nb; k++, pw += words, y += out_c) {
        int32_t a = bias;
        for (uint32_t i = 0; i < words; i++)
            a = dot_smlad(pw[i], ww[i], a);
        *y = rq_out_opt(a, mult, shift, zp, lo, hi);
    }
}

/* the patches of pixels q0 .. q0 + nb - 1 gathered one at a time (the buffer in this frame only) and widened */
static __attribute__((noinline)) void gather_block(const qconv_t *p, const int8_t *x, uint32_t q0, uint32_t nb,
                                                   uint32_t words, uint32_t *pw)
{
    int8_t patch[CONV_PATCH_MAX];
    const uint32_t wsz = (uint32_t)p->k_h * p->k_w * p->in_c;
    for (uint32_t k = 0; k < nb; k++) {
        gather_patch(p, x, (q0 + k) / p->out_w, (q0 + k) % p->out_w, patch);
        widen_padded(patch, wsz, words, pw + k * words);
    }
}

/* Channel-major over blocks of pixels: the block's patches are gathered and widened once, then each channel widens
 * its weights once and runs down the block (weights in registers for a 3×3×1 kernel), so a pixel's channel costs a
 * load and an SMLAD per two taps plus the requantisation */
static void conv_patched(const qconv_t *p, const int8_t *x, const int8_t *w, int8_t *y)
{
    uint32_t pw[PATCH_BLOCK_WORDS], ww[42]; /* row padding: up to 21 rows of 3 taps, two words each */
    const uint32_t wsz = (uint32_t)p->k_h * p->k_w * p->in_c, rb = (uint32_t)p->k_w * p->in_c;
    const int padded = rows_padded(p);
    const uint32_t words = padded ? (uint32_t)p->k_h * ((rb + 3u) >> 2) * 2u : ((wsz + 3u) >> 2) * 2u;
    const uint32_t n = (uint32_t)p->out_h * p->out_w, block = PATCH_BLOCK_WORDS / words;
    const uint32_t st = p->rq_per_channel ? 2u : 0u;
    for (uint32_t q0 = 0; q0 < n; q0 += block) {
        uint32_t nb = n - q0 < block ? n - q0 : block;
        const int32_t *rq = p->rq;
        if (padded)
            widen_block(p, x, q0, nb, pw);
        else
            gather_block(p, x, q0, nb, words, pw);
        for (uint32_t oc = 0; oc < p->out_c; oc++, rq += st) {
            if (padded) {
                uint32_t *o = ww;
                for (uint32_t ky = 0; ky < p->k_h; ky++)
                    o = widen_row(w + oc * wsz + ky * rb, rb, o);
            } else {
                widen_padded(w + oc * wsz, wsz, words, ww);
            }
            if (words == 6u)
                channel_block6(p, pw, nb, ww, p->bias_eff[oc], rq, y + q0 * p->out_c + oc);
            else
                channel_block(p, pw, nb, words, ww, p->bias_eff[oc], rq, y + q0 * p->out_c + oc);
        }
    }
}
#else
/* per pixel: its patch, then every channel as one run over it */
static void conv_patched(const qconv_t *p, const int8_t *x, const int8_t *w, int8_t *y)
{
    int8_t patch[CONV_PATCH_MAX];
    const uint32_t wsz = (uint32_t)p->k_h * p->k_w * p->in_c;
    for (uint32_t oy = 0; oy < p->out_h; oy++)
        for (uint32_t ox = 0; ox < p->out_w; ox++, y += p->out_c) {
            gather_patch(p, x, oy, ox, patch);
            pixel_run(p, patch, w, wsz, y);
        }
}
#endif

#ifdef DOT_I8_DSP
#define PW_WORDS 256u /* 1 KB of stack: four pixels of up to 128 input channels, or two of up to 256, widened */

/* the input rows of np pixels widened to SXTB16 pairs, interleaved per four channels (pixel k's even and odd pair at
 * words 2k, 2k + 1), so one pointer with fixed offsets reaches every pixel */
static void widen_pixels(const int8_t *const *xs, uint32_t np, uint32_t groups, uint32_t *xw)
{
    for (uint32_t g = 0; g < groups; g++)
        for (uint32_t k = 0; k < np; k++, xw += 2) {
            uint32_t v = dot_ld32(xs[k] + 4 * g);
            xw[0] = dot_sxtb16(v);
            xw[1] = dot_sxtb16_ror8(v);
        }
}

/* requantise np pixels' accumulators of one channel (at y, pixel stride out_c); constants passed in as values: an
 * int8 store may alias any struct field, which would make the compiler reload them per output */
static inline void pointwise_out(const int32_t *acc, uint32_t np, int32_t mult, int32_t shift, int32_t zp, int32_t lo,
                                 int32_t hi, uint32_t out_c, int8_t *y)
{
    if (rq_neg_ok(shift, zp)) {
        const int32_t e = -shift, add = rq_neg_add(shift, zp);
        y[0] = rq_out_neg(acc[0], mult, e, add, zp, lo, hi);
        y[out_c] = rq_out_neg(acc[1], mult, e, add, zp, lo, hi);
        if (np == 4u) {
            y[2 * out_c] = rq_out_neg(acc[2], mult, e, add, zp, lo, hi);
            y[3 * out_c] = rq_out_neg(acc[3], mult, e, add, zp, lo, hi);
        }
        return;
    }
    for (uint32_t k = 0; k < np; k++)
        y[k * out_c] = rq_out_opt(acc[k], mult, shift, zp, lo, hi);
}

/* 1×1 convolution, four (or two) pixels at a time: each weight word is loaded and widened once for all of them (the
 * weights, not the inputs, are what every MAC streams: dot_xw4), and the requantisation's setup is shared too */
static inline __attribute__((always_inline)) void pointwise_block(const qconv_t *p, const int8_t *const *xs,
                                                                  uint32_t np, const uint32_t *xw, const int8_t *w,
                                                                  uint32_t in_c, int8_t *y)
{
    const uint32_t groups = in_c >> 2, st = p->rq_per_channel ? 2u : 0u, out_c = p->out_c;
    const int32_t *rq = p->rq, *bias = p->bias_eff, zp = p->zp_out, lo = p->act_min, hi = p->act_max;
    for (uint32_t oc = 0; oc < out_c; oc++, rq += st, w += in_c) {
        int32_t acc[4];
        acc[0] = acc[1] = acc[2] = acc[3] = bias[oc];
        if (groups) {
            if (np == 4u)
                dot_xw4(xw, w, groups, acc);
            else
                dot_xw2(xw, w, groups, acc);
        }
        for (uint32_t j = groups << 2; j < in_c; j++)
            for (uint32_t k = 0; k < np; k++)
                acc[k] += xs[k][j] * w[j];
        pointwise_out(acc, np, rq[0], rq[1], zp, lo, hi, out_c, y + oc);
    }
}

/* np a constant in each copy: no per-channel tests of it */
static void pointwise_quad(const qconv_t *p, const int8_t *const *xs, const uint32_t *xw, const int8_t *w,
                           uint32_t row, int8_t *y)
{
    pointwise_block(p, xs, 4u, xw, w, row, y);
}

static void pointwise_pair(const qconv_t *p, const int8_t *const *xs, const uint32_t *xw, const int8_t *w,
                           uint32_t row, int8_t *y)
{
    pointwise_block(p, xs, 2u, xw, w, row, y);
}

/* 1×1 convolutions without padding (every pointwise conv of a MobileNet): pixels in blocks of four (two when the
 * input is wide), an odd last one by pixel_run; returns 0 when the shape does not qualify */
static int conv_pointwise(const qconv_t *p, const int8_t *x, const int8_t *w, int8_t *y)
{
    uint32_t xw[PW_WORDS], n = (uint32_t)p->out_h * p->out_w, q = 0, block;
    const uint32_t ic = p->in_c, oc_n = p->out_c;
    const int8_t *xs[4];
    if (p->k_h != 1u || p->k_w != 1u || p->pad_top || p->pad_left || ic < 4u || ic > PW_WORDS)
        return 0;
    block = ic <= PW_WORDS / 2u ? 4u : 2u;
    while (q < n) {
        uint32_t np = n - q >= block ? block : n - q >= 2u ? 2u : 1u;
        for (uint32_t k = 0; k < np; k++) {
            uint32_t oy = (q + k) / p->out_w, ox = (q + k) % p->out_w;
            xs[k] = x + (oy * p->stride_h * p->in_w + ox * p->stride_w) * ic;
        }
        if (np == 1u) {
            pixel_run(p, xs[0], w, ic, y + q * oc_n);
        } else {
            widen_pixels(xs, np, ic >> 2, xw);
            (np == 4u ? pointwise_quad : pointwise_pair)(p, xs, xw, w, ic, y + q * oc_n);
        }
        q += np;
    }
    return 1;
}
#endif

#ifdef DOT_I8_DSP
/* a window inside the input whose rows are whole words, widened straight from it (word g of the patch at o[step·g]);
 * returns 0 for a window that crosses the border */
static int widen_window(const qconv_t *p, const int8_t *x, uint32_t oy, uint32_t ox, uint32_t step, uint32_t *o)
{
    const uint32_t ic = p->in_c, groups = ((uint32_t)p->k_w * ic) >> 2, xrow = (uint32_t)p->in_w * ic;
    const int32_t iy0 = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
    const int32_t ix0 = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
    const int8_t *xr;
    if (iy0 < 0 || iy0 + (int32_t)p->k_h > (int32_t)p->in_h || ix0 < 0 || ix0 + (int32_t)p->k_w > (int32_t)p->in_w)
        return 0;
    xr = x + (uint32_t)iy0 * xrow + (uint32_t)ix0 * ic;
    for (uint32_t ky = p->k_h; ky; ky--, xr += xrow)
        for (uint32_t g = 0; g < groups; g++, o += step) {
            uint32_t v = dot_ld32(xr + 4 * g);
            o[0] = dot_sxtb16(v);
            o[1] = dot_sxtb16_ror8(v);
        }
    return 1;
}

#define IM2COL_ROW 128u /* one kernel row of a window crossing the border, gathered */

/* a window crossing the border, widened row by row from a gathered row (taps outside the input are zp_in, so the
 * folded bias needs no correction); its own frame, so conv_im2col's holds only the interleaved buffer */
static __attribute__((noinline)) void widen_window_gathered(const qconv_t *p, const int8_t *x, uint32_t oy,
                                                             uint32_t ox, uint32_t step, uint32_t *o)
{
    int8_t row[IM2COL_ROW];
    const uint32_t ic = p->in_c, groups = ((uint32_t)p->k_w * ic) >> 2;
    const int32_t iy0 = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
    const int32_t ix0 = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
    for (uint32_t ky = 0; ky < p->k_h; ky++) {
        int32_t iy = iy0 + (int32_t)ky;
        gather_row(p, x, iy, ix0, row);
        for (uint32_t g = 0; g < groups; g++, o += step) {
            uint32_t v = dot_ld32(row + 4 * g);
            o[0] = dot_sxtb16(v);
            o[1] = dot_sxtb16_ror8(v);
        }
    }
}

/* Any other kernel whose rows fill whole words (k_w·in_c a multiple of 4, up to 128; k_h·k_w·in_c up to 256: a 3×3
 * conv on up to 28 channels): four patches (two when long) are widened into the interleaved layout of the 1×1
 * path, windows inside the input straight from it, the others row by row through a gathered row, and every channel
 * runs its whole weight row (OHWI: contiguous) through dot_xw4 once; an odd last pixel takes the general path. */
static int conv_im2col(const qconv_t *p, const int8_t *x, const int8_t *w, int8_t *y)
{
    uint32_t xw[PW_WORDS];
    const uint32_t wsz = (uint32_t)p->k_h * p->k_w * p->in_c, n = (uint32_t)p->out_h * p->out_w;
    const uint32_t rb = (uint32_t)p->k_w * p->in_c, block = 4u * wsz <= 2u * PW_WORDS ? 4u : 2u, oc_n = p->out_c;
    const int8_t *xs[4] = {0, 0, 0, 0}; /* no tail: nothing reads them */
    uint32_t q = 0;
    if (wsz < 8u || (rb & 3u) || rb > IM2COL_ROW || wsz > PW_WORDS || n < 2u)
        return 0;
    while (q + 2u <= n) {
        uint32_t np = n - q >= block ? block : 2u;
        for (uint32_t k = 0; k < np; k++) {
            uint32_t *o = xw + 2u * k, oy = (q + k) / p->out_w, ox = (q + k) % p->out_w;
            if (!widen_window(p, x, oy, ox, 2u * np, o))
                widen_window_gathered(p, x, oy, ox, 2u * np, o);
        }
        (np == 4u ? pointwise_quad : pointwise_pair)(p, xs, xw, w, wsz, y + q * oc_n);
        q += np;
    }
    if (q < n) {
        win_t win;
        window(p, q / p->out_w, q % p->out_w, &win);
        pixel(p, &win, x, w, y + q * oc_n);
    }
    return 1;
}
#endif

void conv_i8(const qconv_t *p, const int8_t *x, const int8_t *w, int8_t *y)
{
    win_t win;
#ifdef DOT_I8_DSP
    if (conv_pointwise(p, x, w, y))
        return;
#endif
    if ((uint32_t)p->k_w * p->in_c < 8u && (uint32_t)p->k_h * p->k_w * p->in_c <= CONV_PATCH_MAX) {
        conv_patched(p, x, w, y);
        return;
    }
#ifdef DOT_I8_DSP
    if (conv_im2col(p, x, w, y))
        return;
#endif
    for (uint32_t oy = 0; oy < p->out_h; oy++)
        for (uint32_t ox = 0; ox < p->out_w; ox++, y += p->out_c) {
            window(p, oy, ox, &win);
            pixel(p, &win, x, w, y);
        }
}
