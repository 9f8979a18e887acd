/* Optimized fp32 MAXPOOL2D: channels are innermost (HWC), so each window tap is one contiguous run of in_c values
 * compared against a running maximum run; the backward keeps, per channel, the first tap holding the maximum and
 * adds the output gradient there (dx is zeroed first: overlapping windows, stride < k, may hit one input twice). */
#include <string.h>
#include "maxpool.h"

void maxpool_forward(const conv_shape_t *s, const float *x, float *y)
{
    uint32_t c_n = s->in_c, xrow = (uint32_t)s->in_w * c_n;
    for (uint32_t oy = 0; oy < s->out_h; oy++)
        for (uint32_t ox = 0; ox < s->out_w; ox++, y += c_n) {
            const float *x0 = x + oy * s->stride * xrow + ox * s->stride * c_n;
            memcpy(y, x0, c_n * sizeof *y);
            for (uint32_t ky = 0; ky < s->k; ky++)
                for (uint32_t kx = ky ? 0u : 1u; kx < s->k; kx++) {
                    const float *xt = x0 + ky * xrow + kx * c_n;
                    for (uint32_t c = 0; c < c_n; c++)
                        y[c] = xt[c] > y[c] ? xt[c] : y[c];
                }
        }
}

void maxpool_input_grad(const conv_shape_t *s, const float *x, const float *dy, float *dx)
{
    const uint32_t c_n = s->in_c, xrow = (uint32_t)s->in_w * c_n, k = s->k, step = s->stride * c_n;
    memset(dx, 0, (uint32_t)s->in_h * xrow * sizeof *dx);
    if (k == 2u) { /* the common 2×2 window unrolled: three compares, in (ky, kx) order, strict as below */
        for (uint32_t oy = 0; oy < s->out_h; oy++) {
            const float *x0 = x + oy * s->stride * xrow;
            float *d0 = dx + oy * s->stride * xrow;
            for (uint32_t ox = 0; ox < s->out_w; ox++, x0 += step, d0 += step, dy += c_n)
                for (uint32_t c = 0; c < c_n; c++) {
                    float m = x0[c];
                    uint32_t off = c;
                    if (x0[c + c_n] > m) {
                        m = x0[c + c_n];
                        off = c + c_n;
                    }
                    if (x0[c + xrow] > m) {
                        m = x0[c + xrow];
                        off = c + xrow;
                    }
                    if (x0[c + xrow + c_n] > m)
                        off = c + xrow + c_n;
                    d0[off] += dy[c];
                }
        }
        return;
    }
    for (uint32_t oy = 0; oy < s->out_h; oy++) {
        const float *x0 = x + oy * s->stride * xrow;
        for (uint32_t ox = 0; ox < s->out_w; ox++, x0 += step, dy += c_n)
            for (uint32_t c = 0; c < c_n; c++) {
                const float *best = x0 + c, *r = x0 + c;
                for (uint32_t ky = 0; ky < k; ky++, r += xrow) {
                    const float *t = r;
                    for (uint32_t kx = 0; kx < k; kx++, t += c_n)
                        best = *t > *best ? t : best;
                }
                dx[best - x] += dy[c];
            }
    }
}
