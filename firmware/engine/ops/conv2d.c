/* Optimized conv2d kernels: what the device runs.
 *
 * For one output pixel and one kernel row the valid taps form one contiguous run of (kx1 - kx0) * in_c floats in
 * both the HWC input and the OHWI weights, so the padding test is done once per row, never per tap. Four output
 * channels are handled together: each input value is loaded once for four independent accumulators. */
#include <stddef.h>
#include "conv2d.h"

typedef struct {
    uint32_t ky0, ky1;  /* valid kernel rows [ky0, ky1) */
    uint32_t kx0, n;    /* first valid kernel column, run length in floats */
    int32_t iy0, ix0;   /* input coordinate of tap (0, 0) */
} window_t;

static uint32_t clip_hi(int32_t origin, uint32_t k, uint32_t size)
{
    int32_t room = (int32_t)size - origin;
    if (room <= 0)
        return 0;
    return (uint32_t)room < k ? (uint32_t)room : k;
}

/* always inlined: once per output pixel, where a call costs a tenth of a 3x3 in_c=1 pixel */
static inline __attribute__((always_inline)) void window(const conv_shape_t *s, uint32_t oy, uint32_t ox, window_t *w)
{
    uint32_t kx1;
    w->iy0 = (int32_t)(oy * s->stride) - (int32_t)s->pad_top;
    w->ix0 = (int32_t)(ox * s->stride) - (int32_t)s->pad_left;
    w->ky0 = w->iy0 < 0 ? (uint32_t)(-w->iy0) : 0;
    w->ky1 = clip_hi(w->iy0, s->k, s->in_h);
    w->kx0 = w->ix0 < 0 ? (uint32_t)(-w->ix0) : 0;
    kx1 = clip_hi(w->ix0, s->kw, s->in_w);
    w->n = kx1 > w->kx0 ? (kx1 - w->kx0) * s->in_c : 0;
}

/* offset of the run of kernel row ky in the input */
static uint32_t in_run(const conv_shape_t *s, const window_t *w, uint32_t ky)
{
    return ((uint32_t)(w->iy0 + (int32_t)ky) * s->in_w + (uint32_t)(w->ix0 + (int32_t)w->kx0)) * s->in_c;
}

/* offset of the run of kernel row ky in output channel oc's weights */
static uint32_t w_run(const conv_shape_t *s, const window_t *w, uint32_t oc, uint32_t ky)
{
    return ((oc * s->k + ky) * s->kw + w->kx0) * s->in_c;
}

/* always inlined: called per kernel-row run, where a call would cost as much as a short run */
static inline __attribute__((always_inline)) float dot(const float *a, const float *b, uint32_t n)
{
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    uint32_t j = 0;
    for (; j + 4 <= n; j += 4, a += 4, b += 4) {
        a0 += a[0] * b[0];
        a1 += a[1] * b[1];
        a2 += a[2] * b[2];
        a3 += a[3] * b[3];
    }
    for (; j < n; j++)
        a0 += *a++ * *b++;
    return (a0 + a1) + (a2 + a3);
}

/* y[j] += g * x[j] */
static inline __attribute__((always_inline)) void axpy(float *y, float g, const float *x, uint32_t n)
{
    uint32_t j = 0;
    for (; j + 4 <= n; j += 4, y += 4, x += 4) {
        y[0] += g * x[0];
        y[1] += g * x[1];
        y[2] += g * x[2];
        y[3] += g * x[3];
    }
    for (; j < n; j++)
        *y++ += g * *x++;
}

/* row oc of the view: split views through the ascending cursor, whole ones by arithmetic (the compiler keeps the
 * whole-tensor path as cheap as a plain pointer) */
static inline __attribute__((always_inline)) const float *row_of(const wsplit_t *w, int split, uint32_t oc,
                                                                 uint32_t *cur)
{
    return split ? wsplit_row(w, oc, cur) : w->full + oc * w->row;
}

/* a split view's rows of output channels oc..oc+3 (looked up once per group of four) */
static inline __attribute__((always_inline)) void quad_rows(const wsplit_t *w, uint32_t oc, uint32_t *cur,
                                                            const float **r0, const float **r1, const float **r2,
                                                            const float **r3)
{
    *r0 = wsplit_row(w, oc, cur);
    *r1 = wsplit_row(w, oc + 1, cur);
    *r2 = wsplit_row(w, oc + 2, cur);
    *r3 = wsplit_row(w, oc + 3, cur);
}

/* kernel row ky's run in channels oc..oc+3: from the split rows, or by arithmetic on the whole tensor (one offset
 * and three strides, as cheap as the plain pointer walk) */
static inline __attribute__((always_inline)) void quad_at(const conv_shape_t *s, const window_t *win,
                                                          const float *full, int split, uint32_t oc, uint32_t ky,
                                                          uint32_t wsz, const float *r0, const float *r1,
                                                          const float *r2, const float *r3, const float **w0,
                                                          const float **w1, const float **w2, const float **w3)
{
    if (split) {
        uint32_t o = w_run(s, win, 0, ky);
        *w0 = r0 + o;
        *w1 = r1 + o;
        *w2 = r2 + o;
        *w3 = r3 + o;
    } else {
        *w0 = full + w_run(s, win, oc, ky);
        *w1 = *w0 + wsz;
        *w2 = *w1 + wsz;
        *w3 = *w2 + wsz;
    }
}

static inline __attribute__((always_inline)) void forward_pixel(const conv_shape_t *s, const window_t *win,
                                                                const float *x, const wsplit_t *w, int split,
                                                                const float *b, float *y)
{
    uint32_t oc = 0, cur = 0, wsz = (uint32_t)s->k * s->kw * s->in_c;
    const float *full = w->full;
    for (; oc + 4 <= s->out_c; oc += 4) {
        const float *r0 = NULL, *r1 = NULL, *r2 = NULL, *r3 = NULL;
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        if (split)
            quad_rows(w, oc, &cur, &r0, &r1, &r2, &r3);
        for (uint32_t ky = win->ky0; ky < win->ky1; ky++) {
            const float *xr = x + in_run(s, win, ky);
            const float *w0, *w1, *w2, *w3;
            quad_at(s, win, full, split, oc, ky, wsz, r0, r1, r2, r3, &w0, &w1, &w2, &w3);
            for (uint32_t j = 0; j < win->n; j++) {
                float xv = xr[j];
                a0 += w0[j] * xv;
                a1 += w1[j] * xv;
                a2 += w2[j] * xv;
                a3 += w3[j] * xv;
            }
        }
        y[oc] = a0 + (b ? b[oc] : 0.0f);
        y[oc + 1] = a1 + (b ? b[oc + 1] : 0.0f);
        y[oc + 2] = a2 + (b ? b[oc + 2] : 0.0f);
        y[oc + 3] = a3 + (b ? b[oc + 3] : 0.0f);
    }
    for (; oc < s->out_c; oc++) {
        const float *r = row_of(w, split, oc, &cur);
        float a = 0.0f;
        for (uint32_t ky = win->ky0; ky < win->ky1; ky++)
            a += dot(x + in_run(s, win, ky), r + w_run(s, win, 0, ky), win->n);
        y[oc] = a + (b ? b[oc] : 0.0f);
    }
}

static inline __attribute__((always_inline)) void forward_image(const conv_shape_t *s, const float *x,
                                                                const wsplit_t *w, int split, const float *b, float *y)
{
    window_t win;
    for (uint32_t oy = 0; oy < s->out_h; oy++)
        for (uint32_t ox = 0; ox < s->out_w; ox++) {
            window(s, oy, ox, &win);
            forward_pixel(s, &win, x, w, split, b, y + (oy * s->out_w + ox) * s->out_c);
        }
}

void conv2d_forward(const conv_shape_t *s, const float *x, const wsplit_t *w, const float *b, float *y)
{
    if (w->idx)
        forward_image(s, x, w, 1, b, y);
    else
        forward_image(s, x, w, 0, b, y);
}

static inline __attribute__((always_inline)) void input_grad_pixel(const conv_shape_t *s, const window_t *win,
                                                                   const float *dy, const wsplit_t *w, int split,
                                                                   float *dx)
{
    uint32_t oc = 0, cur = 0, wsz = (uint32_t)s->k * s->kw * s->in_c;
    const float *full = w->full;
    for (; oc + 4 <= s->out_c; oc += 4) {
        const float *r0 = NULL, *r1 = NULL, *r2 = NULL, *r3 = NULL;
        float g0 = dy[oc], g1 = dy[oc + 1], g2 = dy[oc + 2], g3 = dy[oc + 3];
        if (split)
            quad_rows(w, oc, &cur, &r0, &r1, &r2, &r3);
        for (uint32_t ky = win->ky0; ky < win->ky1; ky++) {
            float *dr = dx + in_run(s, win, ky);
            const float *w0, *w1, *w2, *w3;
            quad_at(s, win, full, split, oc, ky, wsz, r0, r1, r2, r3, &w0, &w1, &w2, &w3);
            for (uint32_t j = 0; j < win->n; j++)
                dr[j] += (g0 * w0[j] + g1 * w1[j]) + (g2 * w2[j] + g3 * w3[j]);
        }
    }
    for (; oc < s->out_c; oc++) {
        const float *r = row_of(w, split, oc, &cur);
        for (uint32_t ky = win->ky0; ky < win->ky1; ky++)
            axpy(dx + in_run(s, win, ky), dy[oc], r + w_run(s, win, 0, ky), win->n);
    }
}

static inline __attribute__((always_inline)) void input_grad_image(const conv_shape_t *s, const float *dy,
                                                                   const wsplit_t *w, int split, float *dx)
{
    window_t win;
    for (uint32_t oy = 0; oy < s->out_h; oy++)
        for (uint32_t ox = 0; ox < s->out_w; ox++) {
            window(s, oy, ox, &win);
            input_grad_pixel(s, &win, dy + (oy * s->out_w + ox) * s->out_c, w, split, dx);
        }
}

void conv2d_input_grad(const conv_shape_t *s, const float *dy, const wsplit_t *w, float *dx)
{
    uint32_t n = (uint32_t)s->in_h * s->in_w * s->in_c;
    for (uint32_t i = 0; i < n; i++)
        dx[i] = 0.0f;
    if (w->idx)
        input_grad_image(s, dy, w, 1, dx);
    else
        input_grad_image(s, dy, w, 0, dx);
}

void conv2d_weight_grad_channel(const conv_shape_t *s, const float *dy, const float *x, uint32_t oc, float *g)
{
    window_t win;
    uint32_t n = (uint32_t)s->k * s->kw * s->in_c;
    for (uint32_t j = 0; j < n; j++)
        g[j] = 0.0f;
    for (uint32_t oy = 0; oy < s->out_h; oy++)
        for (uint32_t ox = 0; ox < s->out_w; ox++) {
            float gv = dy[(oy * s->out_w + ox) * s->out_c + oc];
            /* ReLU zeroes many output gradients: those pixels contribute nothing */
            if (gv == 0.0f)
                continue;
            window(s, oy, ox, &win);
            for (uint32_t ky = win.ky0; ky < win.ky1; ky++)
                axpy(g + w_run(s, &win, 0, ky), gv, x + in_run(s, &win, ky), win.n);
        }
}

float conv2d_bias_grad_channel(const conv_shape_t *s, const float *dy, uint32_t oc)
{
    float a0 = 0.0f, a1 = 0.0f;
    uint32_t n = (uint32_t)s->out_h * s->out_w, c = s->out_c, p = 0;
    dy += oc;
    for (; p + 2 <= n; p += 2, dy += 2 * c) {
        a0 += dy[0];
        a1 += dy[c];
    }
    if (p < n)
        a0 += dy[0];
    return a0 + a1;
}

void conv2d_update_channel(float *w, const float *g, float lr, uint32_t n)
{
    uint32_t j = 0;
    for (; j + 4 <= n; j += 4, w += 4, g += 4) {
        w[0] -= lr * g[0];
        w[1] -= lr * g[1];
        w[2] -= lr * g[2];
        w[3] -= lr * g[3];
    }
    for (; j < n; j++)
        *w++ -= lr * *g++;
}
