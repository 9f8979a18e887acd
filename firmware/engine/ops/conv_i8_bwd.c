/* Backward of int8 CONV_2D. Input gradient: the transposed convolution, scattered per output pixel; for each kernel
 * row inside the input, the taps form one contiguous run of (kx1 - kx0)·in_c values in both the weight row and the
 * accumulator, so the inner loop is acc[j] += h·w[j]. Weight gradient of one output channel: per output pixel with
 * h != 0, a[j] += h·(x[j] - zp_in) over the same contiguous runs (padding taps contribute nothing); with fewer
 * than four input channels the runs are too short, so the loop is tap-major instead: per tap and output row, one
 * register sum over the output columns whose tap is inside the input. */
#include <string.h>
#include "qgrad.h"
#include "dot_i8.h"

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

void conv_i8_input_grad(const qconv_t *p, const int16_t *h, const qrows_t *w, int32_t *acc)
{
    uint32_t ic = p->in_c, xrow = (uint32_t)p->in_w * ic, wrow = (uint32_t)p->k_w * ic;
    memset(acc, 0, (uint32_t)p->in_h * xrow * sizeof *acc);
    for (uint32_t oy = 0; oy < p->out_h; oy++)
        for (uint32_t ox = 0; ox < p->out_w; ox++, h += p->out_c) {
            bwin_t win;
            uint32_t cur = 0, run, off;
            bwindow(p, oy, ox, &win);
            run = (win.kx1 - win.kx0) * ic;
            off = win.kx0 * ic;
            for (uint32_t oc = 0; oc < p->out_c; oc++) {
                const int8_t *row = qrows_get(w, oc, &cur);
                int32_t hv = h[oc];
                if (hv == 0)
                    continue;
                for (uint32_t ky = win.ky0; ky < win.ky1; ky++) {
                    int32_t *ar = acc + (uint32_t)(win.iy0 + (int32_t)ky) * xrow +
                                  (uint32_t)(win.ix0 + (int32_t)win.kx0) * ic;
                    const int8_t *wr = row + ky * wrow + off;
                    uint32_t j = 0;
                    for (; j + 4 <= run; j += 4) {
                        ar[j] += hv * wr[j];
                        ar[j + 1] += hv * wr[j + 1];
                        ar[j + 2] += hv * wr[j + 2];
                        ar[j + 3] += hv * wr[j + 3];
                    }
                    for (; j < run; j++)
                        ar[j] += hv * wr[j];
                }
            }
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
#define WG_PAIRS_MAX 128u /* 512 B of stack: a first layer up to 11×11 (digits-cnn: 8×8 in, 6×6 out) */

/* One input channel at stride 1 with small planes (a first layer): this channel's h and the input minus zp_in are
 * copied once into int16 planes on the stack, so along an output row both operands of a tap are contiguous int16
 * pairs and one SMLAD takes two pixels (unaligned word loads: ARMv7-M allows them). Returns 0 when the shape does
 * not qualify. */
static int weight_grad_pairs(const qconv_t *p, const int16_t *h, const int8_t *x, int32_t *a)
{
    int16_t xz[WG_PAIRS_MAX], hc[WG_PAIRS_MAX];
    const uint32_t n_in = (uint32_t)p->in_h * p->in_w, n_out = (uint32_t)p->out_h * p->out_w, out_w = p->out_w;
    if (p->in_c != 1u || p->stride_w != 1u || n_in > WG_PAIRS_MAX || n_out > WG_PAIRS_MAX)
        return 0;
    for (uint32_t j = 0; j < n_in; j++)
        xz[j] = (int16_t)(x[j] - p->zp_in);
    for (uint32_t q = 0; q < n_out; q++)
        hc[q] = h[q * p->out_c];
    for (uint32_t kx = 0; kx < p->k_w; kx++) {
        uint32_t ox0, ox1;
        tap_cols(p, kx, &ox0, &ox1);
        for (uint32_t ky = 0; ky < p->k_h; ky++) {
            int32_t s = 0;
            for (uint32_t oy = 0; oy < p->out_h && ox1 > ox0; oy++) {
                int32_t iy = (int32_t)(oy * p->stride_h) - (int32_t)p->pad_top + (int32_t)ky;
                const int16_t *hp = hc + oy * out_w + ox0, *xp;
                uint32_t n = ox1 - ox0;
                if (iy < 0 || iy >= (int32_t)p->in_h)
                    continue;
                xp = xz + (uint32_t)iy * p->in_w + ox0 + kx - p->pad_left;
                for (; n >= 2u; n -= 2u, hp += 2, xp += 2)
                    s = dot_smlad(dot_ld32((const int8_t *)(const void *)hp), dot_ld32((const int8_t *)(const void *)xp),
                                  s);
                if (n)
                    s += *hp * *xp;
            }
            a[ky * p->k_w + kx] = s;
        }
    }
    return 1;
}
#endif

void conv_i8_weight_grad(const qconv_t *p, const int16_t *h, const int8_t *x, uint32_t oc, int32_t *a)
{
    uint32_t ic = p->in_c, xrow = (uint32_t)p->in_w * ic, wrow = (uint32_t)p->k_w * ic;
    int32_t zp = p->zp_in;
    memset(a, 0, (uint32_t)p->k_h * wrow * sizeof *a);
    h += oc;
#ifdef DOT_I8_DSP
    if (weight_grad_pairs(p, h, x, a))
        return;
#endif
    if (ic < 4u) {
        weight_grad_taps(p, h, x, a);
        return;
    }
    for (uint32_t oy = 0; oy < p->out_h; oy++)
        for (uint32_t ox = 0; ox < p->out_w; ox++, h += p->out_c) {
            bwin_t win;
            int32_t hv = *h, off0;
            uint32_t run;
            if (hv == 0)
                continue;
            bwindow(p, oy, ox, &win);
            run = (win.kx1 - win.kx0) * ic;
            off0 = -hv * zp;
            for (uint32_t ky = win.ky0; ky < win.ky1; ky++) {
                const int8_t *xr = x + (uint32_t)(win.iy0 + (int32_t)ky) * xrow +
                                   (uint32_t)(win.ix0 + (int32_t)win.kx0) * ic;
                int32_t *ar = a + ky * wrow + win.kx0 * ic;
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
}

int32_t qgrad_bias(const int16_t *h, uint32_t n_pos, uint32_t out_c, uint32_t oc)
{
    int32_t s = 0;
    h += oc;
    for (uint32_t i = 0; i < n_pos; i++, h += out_c)
        s += *h;
    return s;
}
