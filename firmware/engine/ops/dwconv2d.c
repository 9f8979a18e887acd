/* Optimized fp32 depthwise kernels: what the device runs. Per output pixel the window of valid taps is clipped once
 * (no test per tap); per channel the taps run over that window with the channel's row read through the weight view
 * (whole tensor by arithmetic, or split rows through the ascending cursor for sparse update). */
#include <stddef.h>
#include "dwconv2d.h"

typedef struct {
    uint32_t ky0, ky1, kx0, kx1; /* valid taps [ky0, ky1) x [kx0, kx1) */
    int32_t iy0, ix0;            /* input coordinate of tap (0, 0) */
} dwin_t;

static uint32_t clip(int32_t origin, uint32_t k, uint32_t size)
{
    int32_t room = (int32_t)size - origin;
    return room <= 0 ? 0u : (uint32_t)room < k ? (uint32_t)room : k;
}

static inline __attribute__((always_inline)) void dwindow(const conv_shape_t *s, uint32_t oy, uint32_t ox, dwin_t *w)
{
    w->iy0 = (int32_t)(oy * s->stride) - (int32_t)s->pad_top;
    w->ix0 = (int32_t)(ox * s->stride) - (int32_t)s->pad_left;
    w->ky0 = w->iy0 < 0 ? (uint32_t)(-w->iy0) : 0u;
    w->ky1 = clip(w->iy0, s->k, s->in_h);
    w->kx0 = w->ix0 < 0 ? (uint32_t)(-w->ix0) : 0u;
    w->kx1 = clip(w->ix0, s->kw, s->in_w);
}

/* offset in the input of channel 0 at tap (ky, kx) */
static inline __attribute__((always_inline)) uint32_t at(const conv_shape_t *s, const dwin_t *w, uint32_t ky,
                                                         uint32_t kx)
{
    return ((uint32_t)(w->iy0 + (int32_t)ky) * s->in_w + (uint32_t)(w->ix0 + (int32_t)kx)) * s->in_c;
}

static inline __attribute__((always_inline)) const float *row_of(const wsplit_t *w, uint32_t c, uint32_t *cur)
{
    return w->idx ? wsplit_row(w, c, cur) : w->full + c * w->row;
}

void dwconv2d_forward(const conv_shape_t *s, const float *x, const wsplit_t *w, const float *b, float *y)
{
    dwin_t win;
    const uint32_t C = s->in_c, kw = s->kw;
    for (uint32_t oy = 0; oy < s->out_h; oy++)
        for (uint32_t ox = 0; ox < s->out_w; ox++, y += C) {
            uint32_t cur = 0;
            dwindow(s, oy, ox, &win);
            for (uint32_t c = 0; c < C; c++) {
                const float *r = row_of(w, c, &cur);
                float a0 = 0.0f, a1 = 0.0f;
                for (uint32_t ky = win.ky0; ky < win.ky1; ky++) {
                    const float *xp = x + at(s, &win, ky, win.kx0) + c, *rp = r + ky * kw + win.kx0;
                    uint32_t n = win.kx1 - win.kx0, j = 0;
                    for (; j + 2 <= n; j += 2) {
                        a0 += xp[j * C] * rp[j];
                        a1 += xp[(j + 1) * C] * rp[j + 1];
                    }
                    if (j < n)
                        a0 += xp[j * C] * rp[j];
                }
                y[c] = (a0 + a1) + (b ? b[c] : 0.0f);
            }
        }
}

void dwconv2d_input_grad(const conv_shape_t *s, const float *dy, const wsplit_t *w, float *dx)
{
    dwin_t win;
    const uint32_t C = s->in_c, kw = s->kw, n_in = (uint32_t)s->in_h * s->in_w * C;
    for (uint32_t i = 0; i < n_in; i++)
        dx[i] = 0.0f;
    for (uint32_t oy = 0; oy < s->out_h; oy++)
        for (uint32_t ox = 0; ox < s->out_w; ox++, dy += C) {
            uint32_t cur = 0;
            dwindow(s, oy, ox, &win);
            for (uint32_t c = 0; c < C; c++) {
                const float *r = row_of(w, c, &cur);
                float g = dy[c];
                if (g == 0.0f) /* a masked (ReLU) gradient adds nothing */
                    continue;
                for (uint32_t ky = win.ky0; ky < win.ky1; ky++) {
                    float *dp = dx + at(s, &win, ky, win.kx0) + c;
                    const float *rp = r + ky * kw + win.kx0;
                    for (uint32_t j = 0; j < win.kx1 - win.kx0; j++)
                        dp[j * C] += g * rp[j];
                }
            }
        }
}

void dwconv2d_weight_grad_channel(const conv_shape_t *s, const float *dy, const float *x, uint32_t c, float *g)
{
    dwin_t win;
    const uint32_t C = s->in_c, kw = s->kw, n = (uint32_t)s->k * kw;
    for (uint32_t j = 0; j < n; j++)
        g[j] = 0.0f;
    for (uint32_t oy = 0; oy < s->out_h; oy++)
        for (uint32_t ox = 0; ox < s->out_w; ox++) {
            float gv = dy[(oy * s->out_w + ox) * C + c];
            if (gv == 0.0f)
                continue;
            dwindow(s, oy, ox, &win);
            for (uint32_t ky = win.ky0; ky < win.ky1; ky++) {
                const float *xp = x + at(s, &win, ky, win.kx0) + c;
                float *gp = g + ky * kw + win.kx0;
                for (uint32_t j = 0; j < win.kx1 - win.kx0; j++)
                    gp[j] += gv * xp[j * C];
            }
        }
}
