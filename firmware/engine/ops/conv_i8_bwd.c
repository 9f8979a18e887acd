/* Backward of int8 CONV_2D. Input gradient: the transposed convolution, scattered per output pixel; for each kernel
 * row inside the input, the taps form one contiguous run of (kx1 - kx0)·in_c values in both the weight row and the
 * accumulator, so the inner loop is acc[j] += h·w[j]. Weight gradient of one output channel: per output pixel with
 * h != 0, a[j] += h·(x[j] - zp_in) over the same contiguous runs (padding taps contribute nothing); with fewer
 * than four input channels the runs are too short, so the loop is tap-major instead: per tap and output row, one
 * register sum over the output columns whose tap is inside the input. */
#include <string.h>
#include "qgrad.h"
#include "dot_i8.h"
#include "igrad_i8.h"
#include "wgrad_i8.h"

typedef struct {
    int32_t iy0, ix0;
    uint32_t ky0, ky1, kx0, kx1;
} bwin_t;

static void bwindow(const qconv_t *p, uint32_t oy, uint32_t ox, bwin_t *w)
{
    int32_t r;
    w->iy0 = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top;
    w->ix0 = (int32_t)(ox * p->stride_w) - (int32_t)p->pad_left;
    w->ky0 = w->iy0 < 0 ? (uint32_t)(-w->iy0) : 0u;
    w->kx0 = w->ix0 < 0 ? (uint32_t)(-w->ix0) : 0u;
    r = (int32_t)p->in_h - w->iy0;
    w->ky1 = r <= 0 ? 0u : (uint32_t)r < p->k_h ? (uint32_t)r : p->k_h;
    r = (int32_t)p->in_w - w->ix0;
    w->kx1 = r <= 0 ? 0u : (uint32_t)r < p->k_w ? (uint32_t)r : p->k_w;
    if (w->ky1 < w->ky0)
        w->ky1 = w->ky0;
    if (w->kx1 < w->kx0)
        w->kx1 = w->kx0;
}

/* the window's k listed rows (h nonzero) into the accumulators, one run per kernel row inside the input */
static void scatter_rows(const qconv_t *p, const bwin_t *win, const int8_t *const *rows, const int32_t *hv,
                         uint32_t k, int32_t *acc)
{
    const uint32_t ic = p->in_c, xrow = (uint32_t)p->in_w * ic, wrow = (uint32_t)p->k_w * ic;
    const uint32_t run = (win->kx1 - win->kx0) * ic, off = win->kx0 * ic;
    int32_t *ar = acc + (uint32_t)(win->iy0 + (int32_t)win->ky0) * xrow + (uint32_t)(win->ix0 + (int32_t)win->kx0) * ic;
    for (uint32_t ky = win->ky0; ky < win->ky1; ky++, ar += xrow)
        igrad_rows(ar, run, rows, hv, k, ky * wrow + off);
}

void conv_i8_input_grad(const qconv_t *p, const int16_t *h, const qrows_t *w, int32_t *acc)
{
    memset(acc, 0, (uint32_t)p->in_h * p->in_w * p->in_c * sizeof *acc);
    for (uint32_t oy = 0; oy < p->out_h; oy++)
        for (uint32_t ox = 0; ox < p->out_w; ox++, h += p->out_c) {
            bwin_t win;
            uint32_t oc = 0, cur = 0, k;
            const int8_t *rows[4];
            int32_t hv[4];
            bwindow(p, oy, ox, &win);
            while ((k = igrad_next4(w, h, p->out_c, &oc, &cur, rows, hv)) != 0)
                scatter_rows(p, &win, rows, hv, k, acc);
        }
}

/* the output columns [*ox0, *ox1) whose tap kx falls inside the input */
static void tap_cols(const qconv_t *p, uint32_t kx, uint32_t *ox0, uint32_t *ox1)
{
    int32_t ix0 = (int32_t)kx - (int32_t)p->pad_left, sw = p->stride_w, lo = 0, hi;
    if (ix0 < 0)
        lo = (-ix0 + sw - 1) / sw;
    hi = ((int32_t)p->in_w - ix0 + sw - 1) / sw;
    hi = hi < (int32_t)p->out_w ? hi : (int32_t)p->out_w;
    *ox0 = (uint32_t)lo;
    *ox1 = hi > lo ? (uint32_t)hi : (uint32_t)lo;
}

/* few input channels: tap-major, so each tap's sum over output pixels stays in a register (struct fields copied
 * to locals: the stores to a[] could alias them) */
static void weight_grad_taps(const qconv_t *p, const int16_t *h, const int8_t *x, int32_t *a)
{
    const uint32_t ic = p->in_c, oc_n = p->out_c, sx = (uint32_t)p->stride_w * ic, out_w = p->out_w;
    const uint32_t in_h = p->in_h, xrow = (uint32_t)p->in_w * ic, hrow = out_w * oc_n, out_h = p->out_h;
    const int32_t zp = p->zp_in, sh = p->stride_h, pt = p->pad_top, pl = p->pad_left;
    const uint32_t k_h = p->k_h, k_w = p->k_w;
    for (uint32_t kx = 0; kx < k_w; kx++) {
        uint32_t ox0, ox1, n;
        tap_cols(p, kx, &ox0, &ox1);
        n = ox1 - ox0;
        for (uint32_t ky = 0; ky < k_h; ky++)
            for (uint32_t c = 0; c < ic; c++) {
                int32_t s = 0, hs = 0;
                for (uint32_t oy = 0; oy < out_h && n; oy++) {
                    int32_t iy = (int32_t)oy * sh - pt + (int32_t)ky;
                    const int16_t *hp = h + oy * hrow + ox0 * oc_n;
                    const int8_t *xp;
                    if (iy < 0 || (uint32_t)iy >= in_h)
                        continue;
                    xp = x + (uint32_t)iy * xrow + (ox0 * p->stride_w + kx - (uint32_t)pl) * ic + c;
                    for (uint32_t q = n; q; q--, hp += oc_n, xp += sx) {
                        int32_t hv = *hp;
                        s += hv * *xp;
                        hs += hv;
                    }
                }
                a[(ky * k_w + kx) * ic + c] = s - zp * hs;
            }
    }
}

#ifdef DOT_I8_DSP
#define WG_PLANE_MAX 256u /* 1 KB of stack for the two planes: bands of output rows of any width up to 240 */

/* sum_i h[i]·x[i] over n8 / 8 blocks of eight int16 pairs: h word-aligned (LDRD), x any alignment (LDR) */
static inline int32_t dot_i16_8(const uint32_t *h, const int16_t *x, uint32_t blocks)
{
    int32_t s = 0;
    for (; blocks; blocks--, h += 4, x += 8) {
        const int8_t *xb = (const int8_t *)(const void *)x;
        s = dot_smlad(h[0], dot_ld32(xb), s);
        s = dot_smlad(h[1], dot_ld32(xb + 4), s);
        s = dot_smlad(h[2], dot_ld32(xb + 8), s);
        s = dot_smlad(h[3], dot_ld32(xb + 12), s);
    }
    return s;
}

/* One band of output rows [oy0, oy0 + ob): the input rows it reads, minus zp_in, as an int16 plane of the padded
 * window area (W = out_w + k_w - 1 columns, padding 0), and its h as a plane of the same row stride whose columns
 * past out_w are 0; then a tap's gradient over the band is ONE contiguous dot product, sum_i h[i]·x[i + ky·W + kx]
 * (the zero columns cancel the wrap into the next row), eight pixels per pass, added to a. */
static void wgrad_band(const qconv_t *p, const int16_t *h, const int8_t *x, uint32_t xs, uint32_t oy0, uint32_t ob,
                       int32_t *a)
{
    int16_t xz[WG_PLANE_MAX + 16u];
    uint32_t hw[WG_PLANE_MAX / 2u];
    int16_t *hp = (int16_t *)(void *)hw;
    const uint32_t kh = p->k_h, kw = p->k_w, ow = p->out_w, oc_n = p->out_c, W = ow + kw - 1u, H = ob + kh - 1u;
    const uint32_t n8 = (ob * W + 7u) & ~7u, pl = p->pad_left, in_w = p->in_w, c0 = pl;
    const uint32_t n = pl + in_w > W ? W - pl : in_w;
    const int32_t zp = p->zp_in;
    const int32_t top = (int32_t)oy0 - (int32_t)p->pad_top;
    if (c0 || n != W || top < 0 || top + (int32_t)H > (int32_t)p->in_h) /* padding around the rows inside */
        memset(xz, 0, H * W * sizeof *xz);
    memset(xz + H * W, 0, (kw + 8u) * sizeof *xz); /* the tail read against h's zero pad */
    for (uint32_t r = 0; r < H; r++) {
        int32_t iy = (int32_t)(oy0 + r) - (int32_t)p->pad_top;
        const int8_t *xr;
        int16_t *o = xz + r * W + c0;
        if (iy < 0 || iy >= (int32_t)p->in_h)
            continue;
        xr = x + (uint32_t)iy * in_w * xs;
        if (xs == 1u)
            for (uint32_t c = 0; c < n; c++)
                o[c] = (int16_t)(xr[c] - zp);
        else
            for (uint32_t c = 0; c < n; c++, xr += xs)
                o[c] = (int16_t)(*xr - zp);
    }
    h += oy0 * ow * oc_n;
    for (uint32_t oy = 0, j = 0; oy < ob; oy++, h += ow * oc_n) {
        for (uint32_t ox = 0; ox < ow; ox++)
            hp[j++] = h[ox * oc_n];
        for (uint32_t ox = ow; ox < W; ox++)
            hp[j++] = 0;
    }
    for (uint32_t j = ob * W; j < n8; j++)
        hp[j] = 0;
    for (uint32_t ky = 0; ky < kh; ky++)
        for (uint32_t kx = 0; kx < kw; kx++)
            a[ky * kw + kx] += dot_i16_8(hw, xz + ky * W + kx, n8 >> 3);
}

/* The weight gradient of one output channel of a stride-1 layer reading one input channel (a first layer, or one
 * depthwise channel: its values every xs bytes), in bands of as many output rows as the planes hold. Returns 0 when
 * not even one row fits, or the stride is not 1. */
int wgrad_plane_i8(const qconv_t *p, const int16_t *h, const int8_t *x, uint32_t xs, int32_t *a)
{
    const uint32_t kh = p->k_h, kw = p->k_w, oh = p->out_h, W = p->out_w + kw - 1u;
    const uint32_t fit_x = (WG_PLANE_MAX - kw - 8u) / W, fit_h = (WG_PLANE_MAX - 8u) / W;
    uint32_t ob = fit_x + 1u > kh ? fit_x + 1u - kh : 0u;
    if (p->stride_w != 1u || p->stride_h != 1u || WG_PLANE_MAX < W + kw + 8u)
        return 0;
    ob = ob < fit_h ? ob : fit_h;
    if (ob == 0u)
        return 0;
    for (uint32_t j = 0; j < kh * kw; j++)
        a[j] = 0;
    for (uint32_t oy0 = 0; oy0 < oh; oy0 += ob)
        wgrad_band(p, h, x, xs, oy0, oh - oy0 < ob ? oh - oy0 : ob, a);
    return 1;
}
#endif

/* one unmasked output pixel's contribution h·(x - zp_in) over its window's in-bounds runs */
static void wgrad_pixel(const qconv_t *p, const bwin_t *win, int32_t hv, const int8_t *x, int32_t *a)
{
    const uint32_t ic = p->in_c, xrow = (uint32_t)p->in_w * ic, wrow = (uint32_t)p->k_w * ic;
    const uint32_t run = (win->kx1 - win->kx0) * ic;
    const int32_t off0 = -hv * p->zp_in;
    for (uint32_t ky = win->ky0; ky < win->ky1; ky++) {
        const int8_t *xr = x + (uint32_t)(win->iy0 + (int32_t)ky) * xrow + (uint32_t)(win->ix0 + (int32_t)win->kx0) * ic;
        int32_t *ar = a + ky * wrow + win->kx0 * ic;
        uint32_t j = 0;
        for (; j + 4 <= run; j += 4) {
            ar[j] += hv * xr[j] + off0;
            ar[j + 1] += hv * xr[j + 1] + off0;
            ar[j + 2] += hv * xr[j + 2] + off0;
            ar[j + 3] += hv * xr[j + 3] + off0;
        }
        for (; j < run; j++)
            ar[j] += hv * xr[j] + off0;
    }
}

#ifdef DOT_I8_DSP
#define WG_PIXELS 64u /* 512 B of stack: one chunk of the channel's unmasked interior pixels */

/* a[j] += sum_i hv[i]·x[xo[i] + j] for j < n: four input channels at a time with the sums over pixels in
 * registers (the word of x widened by SXTB16, one SMLABB/SMLATB per MAC, h in the bottom half) */
static void wgrad_list(const int8_t *x, const int32_t *hv, const uint32_t *xo, uint32_t k, uint32_t n, int32_t *a)
{
    const uint32_t quads = n >> 2;
    for (uint32_t g = 0; g < quads; g++) {
        const int8_t *xg = x + 4 * g;
        int32_t a0 = a[4 * g], a1 = a[4 * g + 1], a2 = a[4 * g + 2], a3 = a[4 * g + 3];
        for (uint32_t i = 0; i < k; i++) {
            uint32_t v = dot_ld32(xg + xo[i]), e = dot_sxtb16(v), o = dot_sxtb16_ror8(v), hh = (uint32_t)hv[i];
            a0 = dot_smlabb(e, hh, a0);
            a2 = dot_smlatb(e, hh, a2);
            a1 = dot_smlabb(o, hh, a1);
            a3 = dot_smlatb(o, hh, a3);
        }
        a[4 * g] = a0;
        a[4 * g + 1] = a1;
        a[4 * g + 2] = a2;
        a[4 * g + 3] = a3;
    }
    for (uint32_t j = quads << 2; j < n; j++)
        for (uint32_t i = 0; i < k; i++)
            a[j] += hv[i] * x[xo[i] + j];
}

/* Four or more input channels: the channel's unmasked output pixels whose window lies inside the input are listed
 * with their window's input offset (chunks of WG_PIXELS), and each kernel row's run is one wgrad_list over them, so
 * the sums stay in registers across pixels; the zero point is taken out once (a_j = sum h·x - zp_in·sum h). Windows
 * that cross the border go through wgrad_pixel. Returns 0 for fewer than four input channels. */
static int weight_grad_blocked(const qconv_t *p, const int16_t *h, const int8_t *x, int32_t *a)
{
    int32_t hv[WG_PIXELS];
    uint32_t xo[WG_PIXELS];
    const uint32_t ic = p->in_c, oc_n = p->out_c, ow = p->out_w, oh = p->out_h;
    const uint32_t xrow = (uint32_t)p->in_w * ic, wrow = (uint32_t)p->k_w * ic, kh = p->k_h;
    const uint32_t sy = p->stride_h, sx = p->stride_w, pt = p->pad_top, pl = p->pad_left;
    /* the output rows and columns whose windows lie inside the input */
    const uint32_t y0 = (pt + sy - 1u) / sy, x0 = (pl + sx - 1u) / sx;
    const int32_t ry = (int32_t)p->in_h - (int32_t)kh + (int32_t)pt, rx = (int32_t)p->in_w - (int32_t)p->k_w + (int32_t)pl;
    const uint32_t y1 = ry < 0 ? 0u : (uint32_t)ry / sy + 1u, x1 = rx < 0 ? 0u : (uint32_t)rx / sx + 1u;
    uint32_t k = 0;
    int32_t hs = 0;
    if (ic < 4u)
        return 0;
    for (uint32_t j = 0; j < kh * wrow; j++)
        a[j] = 0;
    for (uint32_t oy = 0; oy < oh; oy++) {
        const int row_in = oy >= y0 && oy < y1;
        for (uint32_t ox = 0; ox < ow; ox++, h += oc_n) {
            if (*h == 0)
                continue;
            if (!row_in || ox < x0 || ox >= x1) {
                bwin_t win;
                bwindow(p, oy, ox, &win);
                wgrad_pixel(p, &win, *h, x, a);
                continue;
            }
            hv[k] = *h;
            xo[k++] = (oy * sy - pt) * xrow + (ox * sx - pl) * ic;
            hs += *h;
            if (k == WG_PIXELS) {
                for (uint32_t ky = 0; ky < kh; ky++) /* a kernel row's taps: one contiguous run of the input */
                    wgrad_list(x + ky * xrow, hv, xo, k, wrow, a + ky * wrow);
                k = 0;
            }
        }
    }
    for (uint32_t ky = 0; ky < kh; ky++)
        wgrad_list(x + ky * xrow, hv, xo, k, wrow, a + ky * wrow);
    for (uint32_t j = 0; j < kh * wrow; j++) /* wrapping: the true sum fits, its parts need not */
        a[j] = (int32_t)((uint32_t)a[j] - (uint32_t)p->zp_in * (uint32_t)hs);
    return 1;
}
#endif

void conv_i8_weight_grad(const qconv_t *p, const int16_t *h, const int8_t *x, uint32_t oc, int32_t *a)
{
    h += oc;
#ifdef DOT_I8_DSP
    if ((p->in_c == 1u && wgrad_plane_i8(p, h, x, 1u, a)) || weight_grad_blocked(p, h, x, a)) /* write every tap */
        return;
#endif
    memset(a, 0, (uint32_t)p->k_h * p->k_w * p->in_c * sizeof *a);
    if (p->in_c < 4u) {
        weight_grad_taps(p, h, x, a);
        return;
    }
    for (uint32_t oy = 0; oy < p->out_h; oy++)
        for (uint32_t ox = 0; ox < p->out_w; ox++, h += p->out_c) {
            bwin_t win;
            if (*h == 0)
                continue;
            bwindow(p, oy, ox, &win);
            wgrad_pixel(p, &win, *h, x, a);
        }
}

int32_t qgrad_bias(const int16_t *h, uint32_t n_pos, uint32_t out_c, uint32_t oc)
{
    int32_t s = 0;
    h += oc;
    for (uint32_t i = 0; i < n_pos; i++, h += out_c)
        s += *h;
    return s;
}
